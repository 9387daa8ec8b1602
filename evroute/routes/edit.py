"""Edit a routes file the way a careful person would: touch only the lines that change.

``subscribe add`` appends one route to the ``routes:`` list of the first evroute document
(creating the list, or an evroute document, when there is none), ``subscribe remove`` takes
those lines out again, ``pause``/``resume`` set or drop one key. Everything else — comments,
key order, quoting, odd indentation, Knative documents — stays byte for byte as it was, so
``add`` followed by ``remove`` gives back the original file exactly.

How: PyYAML's nodes say where every value starts and ends; edits are made on the text at those
places. ruamel.yaml renders the new route, in block style with small mappings in flow style,
at the indentation the existing items use. A layout this cannot edit safely (a comment between
``-`` and its route, a flow-style document) is refused with a message, never mangled.

Pausing a Knative Trigger sets the annotation ``evroute.dev/paused: "true"`` (Knative has no
paused field, and annotations are where Kubernetes tools keep such marks); resuming removes it.
Removing a Trigger removes its whole document.

Every edit validates the complete resulting file with the loader *before* writing, then writes
a temporary file in the same folder, fsyncs it and renames it over the original: a reader (the
running worker) sees the old file or the new one, never half of one. Two evroute processes
editing the same folder take turns (an advisory lock on the folder).
"""

from __future__ import annotations

import contextlib
import io
import os
import stat
import tempfile
from collections.abc import Iterator, Mapping
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.scalarstring import DoubleQuotedScalarString
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from evroute.errors import InvalidInput, NotFound, RoutesInvalid
from evroute.routes import knative
from evroute.routes.load import load_routes_text
from evroute.routes.model import RouteSet
from evroute.routes.yamltree import MalformedYaml, compose, document_starts

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None  # type: ignore[assignment]


class Unsupported(InvalidInput):
    """A layout the editor will not touch."""


# --------------------------------------------------------------------------- public API


def add_route(path: str, entry: Mapping[str, Any]) -> RouteSet:
    """Append ``entry`` (a route as routes.yaml writes it) and return the new routes (structure only:
    a variable or program only the worker has does not stop an edit)."""
    name = entry["name"]
    with _locked(path):
        text = _read(path, missing_ok=True)
        current = load_routes_text(text, path, resolve=False) if text.strip() else None
        if current is not None:
            existing = current.get(name)
            if existing is not None:
                raise InvalidInput(
                    f"route '{name}' already exists in {path} (line {existing.line}); "
                    f"choose another name, or `evroute subscribe remove {name}` first"
                )
        new = _Editor(text, path).add(entry)
        return _commit(path, new, f"after adding route '{name}'")


def remove_route(path: str, name: str) -> RouteSet:
    """Take route ``name`` (its list item, or its Trigger document) out of the file."""
    with _locked(path):
        text = _read(path)
        new = _Editor(text, path).remove(name)
        return _commit(path, new, f"after removing route '{name}'")


def set_paused(path: str, name: str, paused: bool) -> bool:
    """Pause or resume route ``name``; False when it already was in that state."""
    with _locked(path):
        text = _read(path)
        routes = load_routes_text(text, path, resolve=False)
        route = routes.get(name)
        if route is None:
            raise NotFound(f"route '{name}' is not in {path} (see `evroute subscribe list`)")
        if route.paused == paused:
            return False
        new = _Editor(text, path).set_paused(name, paused)
        _commit(path, new, f"after {'pausing' if paused else 'resuming'} route '{name}'")
        return True


def write_atomic(path: str, text: str) -> None:
    """Replace the file at ``path`` with ``text``: temp file in the same folder, fsync, rename."""
    target = os.path.realpath(path)
    folder = os.path.dirname(target)
    try:
        mode = stat.S_IMODE(os.stat(target).st_mode)
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(target)}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(text.encode("utf-8"))
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable
        dirfd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dirfd)
        finally:
            os.close(dirfd)


# --------------------------------------------------------------------------- file handling


def _read(path: str, missing_ok: bool = False) -> str:
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
    except FileNotFoundError:
        if missing_ok:
            return ""
        raise InvalidInput(
            f"routes file {path} not found (add a route with `evroute subscribe add`)"
        ) from None
    try:
        return raw.decode("utf-8")  # no newline translation: the bytes must survive an edit
    except UnicodeDecodeError:
        raise InvalidInput(f"routes file {path} is not UTF-8 text (save it as UTF-8)") from None


def _commit(path: str, new: str, when: str) -> RouteSet:
    try:
        routes = load_routes_text(new, path, resolve=False)
    except RoutesInvalid as exc:
        raise RoutesInvalid([f"{p} ({when}; nothing was written)" for p in exc.problems]) from None
    try:
        write_atomic(path, new)
    except OSError as exc:
        from evroute.errors import RuntimeFault

        raise RuntimeFault(f"cannot write {path}: {exc.strerror or exc} (the file is unchanged)") from None
    return routes


@contextlib.contextmanager
def _locked(path: str) -> Iterator[None]:
    folder = os.path.dirname(os.path.abspath(path)) or "."
    if fcntl is None or not os.path.isdir(folder):
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


# --------------------------------------------------------------------------- rendering


def render(entry: Mapping[str, Any]) -> list[str]:
    """``entry`` as YAML lines (no indentation): block style, small mappings and lists in flow."""
    yaml = YAML()
    yaml.width = 4096
    yaml.indent(mapping=2, sequence=4, offset=2)
    buf = io.StringIO()
    yaml.dump(_styled(entry, 0), buf)
    return buf.getvalue().splitlines()


def render_flow(entry: Mapping[str, Any]) -> str:
    yaml = YAML()
    yaml.width = 4096
    data = _styled(entry, 0)
    data.fa.set_flow_style()
    buf = io.StringIO()
    yaml.dump(data, buf)
    return buf.getvalue().strip()


def _styled(value: Any, depth: int, key: str | None = "") -> Any:
    """``key`` is the key holding ``value``; None for a list item (list items stay block)."""
    if isinstance(value, Mapping):
        out = CommentedMap((k, _styled(v, depth + 1, k)) for k, v in value.items())
        small = all(not isinstance(v, Mapping | list) for v in value.values())
        if depth >= 1 and key not in ("delivery", None) and small:
            out.fa.set_flow_style()
        return out
    if isinstance(value, list):
        seq = CommentedSeq(_styled(v, depth + 1, None) for v in value)
        if all(not isinstance(v, Mapping | list) for v in value):
            seq.fa.set_flow_style()
        return seq
    if key in ("cesql", "cel") and isinstance(value, str):
        return DoubleQuotedScalarString(value)
    return value


# --------------------------------------------------------------------------- text surgery


def _get(mapping: Node, key: str) -> tuple[ScalarNode, Node] | None:
    if isinstance(mapping, MappingNode):
        for k, v in mapping.value:
            if isinstance(k, ScalarNode) and k.value == key:
                return k, v
    return None


def _end(node: Node) -> int:
    """Where the text of ``node`` ends (block collections end at their last value, not after
    the comments and blank lines that follow, which is where PyYAML puts their end mark)."""
    if isinstance(node, MappingNode) and not node.flow_style and node.value:
        key, value = node.value[-1]
        return max(_end(key), _end(value))
    if isinstance(node, SequenceNode) and not node.flow_style and node.value:
        return _end(node.value[-1])
    return int(node.end_mark.index)


class _Editor:
    def __init__(self, text: str, path: str) -> None:
        self.text = text
        self.path = path
        self.nl = "\r\n" if "\r\n" in text else "\n"
        try:
            self.docs = compose(text)
        except MalformedYaml as exc:
            raise RoutesInvalid([f"{path}:{exc.pos[0]}:{exc.pos[1]}: {exc.message}"]) from None

    # ---------------------------------------------------------- positions

    def bol(self, i: int) -> int:
        return self.text.rfind("\n", 0, i) + 1

    def after_line(self, i: int) -> int:
        """Index just past the line holding the character before ``i``."""
        if i > 0 and self.text[i - 1] == "\n":
            return i
        j = self.text.find("\n", i)
        return len(self.text) if j < 0 else j + 1

    def blank(self, start: int, end: int) -> bool:
        return self.text[start:end].strip(" \t") == ""

    def dash(self, item: Node) -> int:
        j = item.start_mark.index - 1
        while j >= 0 and self.text[j] in " \t\r\n":
            j -= 1
        if j < 0 or self.text[j] != "-" or not self.blank(self.bol(j), j):
            raise Unsupported(
                f"{self.path}:{item.start_mark.line + 1}: this list item's layout cannot be edited safely; edit it by hand"
            )
        return j

    def cut(self, start: int, end: int) -> str:
        """The text without [start, end); a cut reaching the end of a file that has no final
        newline takes the newline before it too, so an append is undone exactly."""
        if end == len(self.text) and not self.text.endswith("\n") and start > 0:
            start -= 1
        return self.text[:start] + self.text[end:]

    def insert_lines(self, at: int, lines: list[str]) -> str:
        body = self.nl.join(lines)
        if at == len(self.text) and self.text and not self.text.endswith("\n"):
            return self.text + self.nl + body
        return self.text[:at] + body + self.nl + self.text[at:]

    # ---------------------------------------------------------- finding things

    def evroute_docs(self) -> list[MappingNode]:
        return [
            d
            for d in self.docs
            if isinstance(d, MappingNode) and not any(_get(d, k) for k in ("apiVersion", "kind"))
        ]

    def find(self, name: str) -> tuple[str, Any]:
        for doc in self.evroute_docs():
            found = _get(doc, "routes")
            if found and isinstance(found[1], SequenceNode):
                for i, item in enumerate(found[1].value):
                    named = _get(item, "name")
                    if named and isinstance(named[1], ScalarNode) and named[1].value == name:
                        return "item", (doc, found, i)
        for index, node in enumerate(self.docs):
            if not isinstance(node, MappingNode):
                continue
            kind, api = _get(node, "kind"), _get(node, "apiVersion")
            meta = _get(node, "metadata")
            if kind and api and meta and kind[1].value == "Trigger" and api[1].value == knative.API_VERSION:
                named = _get(meta[1], "name")
                if named and isinstance(named[1], ScalarNode) and named[1].value == name:
                    return "trigger", (index, node, meta[1])
        self.refuse_dapr(name)
        raise NotFound(f"route '{name}' is not in {self.path} (see `evroute subscribe list`)")

    def refuse_dapr(self, name: str) -> None:
        """A route read from a Dapr Subscription is edited in that document, not here."""
        for node in self.docs:
            if not isinstance(node, MappingNode):
                continue
            kind, api, meta = _get(node, "kind"), _get(node, "apiVersion"), _get(node, "metadata")
            if not (kind and api and meta) or kind[1].value != "Subscription":
                continue
            named = _get(meta[1], "name")
            sub = named[1].value if named and isinstance(named[1], ScalarNode) else None
            if (
                str(api[1].value).startswith("dapr.io/")
                and sub
                and (name == sub or name.startswith(f"{sub}-"))
            ):
                raise Unsupported(
                    f"route '{name}' comes from the Dapr Subscription '{sub}' in {self.path}: edit that "
                    "document (remove it, or the app id from its scopes); a Subscription has no paused field"
                )

    # ---------------------------------------------------------- add

    def add(self, entry: Mapping[str, Any]) -> str:
        docs = self.evroute_docs()
        target = next((d for d in docs if _get(d, "routes")), docs[0] if docs else None)
        if target is None:
            lines = ["routes:", *self.item_lines(render(entry), 2, 4)]
            if any(d is not None for d in self.docs):
                lines.insert(0, "---")
            return self.insert_lines(len(self.text), lines)
        if target.flow_style:
            raise Unsupported(
                f"{self.path}: the evroute document is written in flow style; add the route by hand"
            )
        found = _get(target, "routes")
        if found is None:
            col = target.value[0][0].start_mark.column if target.value else 0
            at = self.after_line(_end(target))
            return self.insert_lines(
                at, [" " * col + "routes:", *self.item_lines(render(entry), col + 2, col + 4)]
            )
        key, seq = found
        if isinstance(seq, SequenceNode) and not seq.flow_style and seq.value:
            first = seq.value[0]
            dash = self.dash(first)
            dcol = dash - self.bol(dash)
            kcol = (
                first.start_mark.column
                if first.start_mark.line == self.text.count("\n", 0, dash)
                else dcol + 2
            )
            at = self.after_line(_end(seq.value[-1]))
            return self.insert_lines(at, self.item_lines(render(entry), dcol, max(kcol, dcol + 2)))
        if isinstance(seq, SequenceNode) and seq.value:  # routes: [{…}, {…}]
            at = _end(seq.value[-1])
            return self.text[:at] + ", " + render_flow(entry) + self.text[at:]
        if (isinstance(seq, SequenceNode) and seq.flow_style) or (
            isinstance(seq, ScalarNode) and seq.tag.endswith(":null")
        ):
            # routes: [] / routes: ~ / routes: (nothing): becomes a block list under the key.
            colon = self.text.index(":", key.end_mark.index) + 1
            rest = self.text[seq.end_mark.index : self.after_line(seq.end_mark.index)].rstrip("\r\n")
            col = key.start_mark.column
            head = self.text[:colon] + rest
            tail = self.text[self.after_line(max(seq.end_mark.index, colon)) :]
            body = self.nl.join(self.item_lines(render(entry), col + 2, col + 4))
            return head + self.nl + body + self.nl + tail
        raise Unsupported(f"{self.path}:{key.start_mark.line + 1}: routes must be a list; fix it by hand")

    @staticmethod
    def item_lines(lines: list[str], dcol: int, kcol: int) -> list[str]:
        first = " " * dcol + "-" + " " * (kcol - dcol - 1) + lines[0]
        return [first, *(" " * kcol + line if line else line for line in lines[1:])]

    # ---------------------------------------------------------- remove

    def remove(self, name: str) -> str:
        kind, found = self.find(name)
        if kind == "trigger":
            return self.remove_document(found[0])
        doc, (key, seq), i = found
        item = seq.value[i]
        if seq.flow_style:
            if i > 0:
                return self.cut(_end(seq.value[i - 1]), _end(item))
            if len(seq.value) > 1:
                return self.cut(item.start_mark.index, seq.value[1].start_mark.index)
            return self.cut(item.start_mark.index, _end(item))
        dash = self.dash(item)
        start, end = self.bol(dash), self.after_line(_end(item))
        if len(seq.value) == 1:
            # The list becomes empty: drop a bare `routes:` line right above it too (and a `---`
            # opening a document that held nothing else), which is what `add` wrote.
            key_line = self.bol(key.start_mark.index)
            colon = self.text.index(":", key.end_mark.index)
            bare = self.blank(key_line, key.start_mark.index) and self.after_line(colon + 1) == start
            if bare and self.text[colon + 1 : start].strip() == "":
                start = key_line
                if len(doc.value) == 1 and key_line > 0:
                    previous = self.bol(key_line - 1)
                    if self.text[previous:key_line].strip() == "---":
                        start = previous
        return self.cut(start, end)

    def remove_document(self, index: int) -> str:
        starts = [
            0 if i == 0 and not explicit else self.bol(at)
            for i, (at, explicit) in enumerate(document_starts(self.text))
        ]
        end = starts[index + 1] if index + 1 < len(starts) else len(self.text)
        return self.cut(starts[index], end)

    # ---------------------------------------------------------- pause / resume

    def set_paused(self, name: str, paused: bool) -> str:
        kind, found = self.find(name)
        if kind == "item":
            _doc, (_key, seq), i = found
            return self.set_key(seq.value[i], "paused", "true" if paused else None, "false")
        meta = found[2]
        annotations = _get(meta, "annotations")
        value = '"true"' if paused else None
        if annotations is None or (
            isinstance(annotations[1], ScalarNode) and annotations[1].tag.endswith(":null")
        ):
            if not paused:
                return self.text
            if annotations is not None:
                raise Unsupported(
                    f"{self.path}:{annotations[0].start_mark.line + 1}: empty annotations; write {{}} or remove the key"
                )
            return self.set_key(
                meta,
                "annotations",
                None,
                None,
                block=("annotations:", f'  {knative.PAUSED_ANNOTATION}: "true"'),
                flow=f'{{{knative.PAUSED_ANNOTATION}: "true"}}',
            )
        return self.set_key(
            annotations[1], knative.PAUSED_ANNOTATION, value, '"false"', parent=(meta, annotations)
        )

    def set_key(
        self,
        mapping: Node,
        key: str,
        value: str | None,
        off: str | None,
        block: tuple[str, ...] | None = None,
        flow: str | None = None,
        parent: tuple[Node, tuple[ScalarNode, Node]] | None = None,
    ) -> str:
        """Set ``key`` to ``value`` in ``mapping`` (appending it), or with ``value`` None drop it
        (falling back to writing ``off`` where the line cannot simply go)."""
        if not isinstance(mapping, MappingNode):
            raise Unsupported(
                f"{self.path}:{mapping.start_mark.line + 1}: expected a mapping here; edit it by hand"
            )
        found = _get(mapping, key)
        if value is not None or block is not None:
            if found is not None:
                k, v = found
                return self.text[: v.start_mark.index] + (value or "") + self.text[_end(v) :]
            if mapping.flow_style:
                entry = f"{key}: {flow if flow is not None else value}"
                if not mapping.value:
                    inner = self.text.index("{", mapping.start_mark.index) + 1
                    return self.text[:inner] + entry + self.text[inner:]
                at = _end(mapping.value[-1][1])
                return self.text[:at] + ", " + entry + self.text[at:]
            col = mapping.value[0][0].start_mark.column
            lines = list(block) if block is not None else [f"{key}: {value}"]
            return self.insert_lines(self.after_line(_end(mapping)), [" " * col + line for line in lines])
        if found is None:
            return self.text
        k, v = found
        index = [pair[0] for pair in mapping.value].index(k)
        if mapping.flow_style:
            if index > 0:
                return self.cut(_end(mapping.value[index - 1][1]), _end(v))
            if parent is not None and len(mapping.value) == 1 and getattr(parent[0], "flow_style", False):
                # `{name: x, annotations: {evroute.dev/paused: "true"}}`, as pause writes it.
                pairs = parent[0].value
                at = [pair[0] for pair in pairs].index(parent[1][0])
                if at > 0:
                    return self.cut(_end(pairs[at - 1][1]), _end(parent[1][1]))
        else:
            line = self.bol(k.start_mark.index)
            end = self.after_line(_end(v))
            if self.blank(line, k.start_mark.index):
                if parent is not None and len(mapping.value) == 1 and not mapping.flow_style:
                    # The annotation was the only one: drop a bare `annotations:` line as well.
                    pkey = parent[1][0]
                    pline = self.bol(pkey.start_mark.index)
                    colon = self.text.index(":", pkey.end_mark.index)
                    if self.blank(pline, pkey.start_mark.index) and self.after_line(colon + 1) == line:
                        return self.cut(pline, end)
                return self.cut(line, end)
        return self.text[: v.start_mark.index] + (off or "") + self.text[_end(v) :]
