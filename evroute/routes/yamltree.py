"""Line-aware YAML for routes files: plain Python values plus where each one is written.

PyYAML composes the stream into nodes that carry their position; :func:`parse_stream` turns
each document into ordinary dicts, lists and scalars, and records the line and column of
every value and every mapping key under its *path* (``("routes", 2, "delivery", "retry")``),
so the loader can validate plain data and still name the exact place of each problem.

Duplicate keys, which YAML loaders usually resolve silently by keeping the last one, are
reported here, because in a routes file a second ``delivery:`` is always a mistake.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

try:  # libyaml is much faster; positions (character indexes, lines, columns) are the same
    from yaml import CSafeLoader as _Loader
except ImportError:  # pragma: no cover - depends on how PyYAML was built
    from yaml import SafeLoader as _Loader  # type: ignore[assignment]

Path = tuple[str | int, ...]
Pos = tuple[int, int]  # 1-based line and column

MERGE_TAG = "tag:yaml.org,2002:merge"
# Values an alias may add by repeating its anchor's content. Anchors shared by a few routes
# (a common delivery block) stay far below; nested aliases that multiply ("billion laughs")
# would otherwise expand into billions of values and hang every command that reads the file.
ALIAS_BUDGET = 10_000


class MalformedYaml(Exception):
    """The text is not YAML at all; ``pos`` is where the parser gave up."""

    def __init__(self, pos: Pos, message: str) -> None:
        super().__init__(message)
        self.pos = pos
        self.message = message


@dataclass(eq=False)
class Doc:
    """One document of the stream as plain data, with the position of every value and key."""

    data: Any
    node: Node | None
    values: dict[Path, Pos] = field(default_factory=dict)
    keys: dict[Path, Pos] = field(default_factory=dict)
    problems: list[tuple[Pos, str]] = field(default_factory=list)

    @property
    def start(self) -> Pos:
        return self.values.get((), (1, 1))

    def pos(self, path: Path, key: bool = False) -> Pos:
        """Where ``path`` is written: its key (``key=True``) or value, else its nearest parent."""
        table = self.keys if key else self.values
        probe = path
        while probe:
            if probe in table:
                return table[probe]
            if probe in self.values:
                return self.values[probe]
            probe = probe[:-1]
        return self.start


def compose(text: str) -> list[Node | None]:
    """The documents of ``text`` as PyYAML nodes (None for an empty document)."""
    try:
        return list(yaml.compose_all(text, Loader=_Loader))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        pos = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
        what = exc.problem or exc.context or "not valid YAML"
        raise MalformedYaml(pos, f"malformed YAML: {what}") from None
    except yaml.YAMLError as exc:
        raise MalformedYaml((1, 1), f"malformed YAML: {exc}") from None


def document_starts(text: str) -> list[tuple[int, bool]]:
    """(character index, explicit ``---``) where each document of ``text`` starts."""
    starts = []
    for event in yaml.parse(text, Loader=_Loader):
        if isinstance(event, yaml.DocumentStartEvent) and event.start_mark is not None:
            starts.append((int(event.start_mark.index), bool(event.explicit)))
    return starts


def parse_stream(text: str) -> list[Doc]:
    """Every document of ``text``; raises MalformedYaml if the text does not parse."""
    return [_Builder(node).doc for node in compose(text)]


def pos_of(node: Node) -> Pos:
    return (node.start_mark.line + 1, node.start_mark.column + 1)


class _Builder:
    def __init__(self, node: Node | None) -> None:
        self.constructor = SafeConstructor()
        self.doc = Doc(data=None, node=node)
        self.stack: list[int] = []
        self.built: set[int] = set()  # nodes built once already: meeting one again is an alias
        self.repeated = 0
        if node is not None:
            self.doc.data = self.build(node, ())

    def build(self, node: Node, path: Path) -> Any:
        if id(node) in self.built:
            self.repeated += 1
            if self.repeated > ALIAS_BUDGET:
                if self.repeated == ALIAS_BUDGET + 1:
                    self.doc.problems.append(
                        (
                            pos_of(node),
                            f"YAML aliases expand to more than {ALIAS_BUDGET} values "
                            "(nested aliases that multiply; write the values out instead)",
                        )
                    )
                return None
        else:
            self.built.add(id(node))
        self.doc.values.setdefault(path, pos_of(node))
        if isinstance(node, ScalarNode):
            try:
                return self.constructor.construct_object(node, deep=True)
            except yaml.YAMLError as exc:
                self.doc.problems.append((pos_of(node), f"bad value: {getattr(exc, 'problem', exc)}"))
                return node.value
        if id(node) in self.stack:
            self.doc.problems.append((pos_of(node), "an alias refers to itself (recursive YAML)"))
            return None
        self.stack.append(id(node))
        try:
            if isinstance(node, SequenceNode):
                return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
            if isinstance(node, MappingNode):
                return self.mapping(node, path)
            return None
        finally:
            self.stack.pop()

    def mapping(self, node: MappingNode, path: Path) -> dict[str, Any]:
        out: dict[str, Any] = {}
        merged: list[MappingNode] = []
        for key_node, value_node in node.value:
            if key_node.tag == MERGE_TAG:
                sources = value_node.value if isinstance(value_node, SequenceNode) else [value_node]
                merged.extend(s for s in sources if isinstance(s, MappingNode))
                continue
            if not isinstance(key_node, ScalarNode):
                self.doc.problems.append((pos_of(key_node), "a mapping key must be plain text"))
                continue
            key = str(key_node.value)
            if key in out:
                first = self.doc.keys.get((*path, key), (0, 0))[0]
                self.doc.problems.append(
                    (pos_of(key_node), f"duplicate key '{key}' (first written at line {first}; keep one)")
                )
                continue
            self.doc.keys[(*path, key)] = pos_of(key_node)
            out[key] = self.build(value_node, (*path, key))
        # YAML merge keys (<<: *anchor): explicit keys win over merged ones.
        for source in merged:
            for key_node, value_node in source.value:
                key = str(key_node.value)
                if isinstance(key_node, ScalarNode) and key not in out and key_node.tag != MERGE_TAG:
                    self.doc.keys[(*path, key)] = pos_of(key_node)
                    out[key] = self.build(value_node, (*path, key))
        return out
