"""CESQL parser: a recursive-descent parser from tokens to an immutable syntax tree.

Operator precedence follows CESQL v1 section 3.6, tightest first:

1. function invocations, sub-expressions ``( ... )``, literals, attributes, ``EXISTS x``
2. unary ``NOT`` and ``-``
3. ``LIKE`` / ``NOT LIKE`` and ``IN`` / ``NOT IN`` (postfix, applied left to right)
4. ``*`` ``/`` ``%``
5. ``+`` ``-``
6. ``=`` ``!=`` ``<>`` ``<`` ``<=`` ``>`` ``>=``
7. ``AND`` ``OR`` ``XOR`` -- one level, so ``a OR b AND c`` is ``(a OR b) AND c``

Binary operators of equal precedence associate to the left ("evaluated left to right when
the precedence is equal"). Because unary operators bind tighter than every binary
operator, ``NOT a = b`` means ``(NOT a) = b``; write ``NOT (a = b)`` or ``a != b``.

Checks the spec asks to make at parse time are made here: integer literals must fit in 32
bits, a LIKE pattern must be a string literal, an IN set must not be empty. Nesting is
bounded so that hostile input cannot exhaust the Python stack while parsing, compiling or
evaluating.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from evroute.filters.cesql.lexer import (
    COMMA,
    EOF,
    INT,
    LPAREN,
    OP,
    RPAREN,
    STRING,
    WORD,
    Token,
    parse_error,
    tokenize,
)

INT_MIN: Final = -(2**31)
INT_MAX: Final = 2**31 - 1

# Limits well below Python's default recursion limit of 1000 frames: one level of
# parentheses costs about eight parser frames, one tree level one frame when compiling
# and one or two when evaluating.
MAX_NESTING: Final = 32
MAX_HEIGHT: Final = 128

KEYWORDS: Final = frozenset({"AND", "OR", "XOR", "NOT", "LIKE", "IN", "EXISTS", "TRUE", "FALSE"})
LOGIC_OPS: Final = frozenset({"AND", "OR", "XOR"})
COMPARISON_OPS: Final = frozenset({"=", "!=", "<>", "<", "<=", ">", ">="})
ADDITIVE_OPS: Final = frozenset({"+", "-"})
MULTIPLICATIVE_OPS: Final = frozenset({"*", "/", "%"})

_ATTRIBUTE_NAME: Final = re.compile(r"[A-Za-z0-9]+")
_FUNCTION_NAME: Final = re.compile(r"[A-Za-z][A-Za-z_]*")


@dataclass(frozen=True, slots=True)
class Literal:
    value: bool | int | str
    pos: int


@dataclass(frozen=True, slots=True)
class Attribute:
    name: str  # lower-cased: CloudEvents attribute names are lower-case
    pos: int


@dataclass(frozen=True, slots=True)
class Exists:
    name: str
    pos: int


@dataclass(frozen=True, slots=True)
class Unary:
    op: str  # "NOT" or "-"
    operand: Node
    pos: int


@dataclass(frozen=True, slots=True)
class Binary:
    op: str  # upper-case keyword or operator symbol
    left: Node
    right: Node
    pos: int


@dataclass(frozen=True, slots=True)
class Like:
    operand: Node
    pattern: str
    negated: bool
    pos: int


@dataclass(frozen=True, slots=True)
class In:
    operand: Node
    items: tuple[Node, ...]
    negated: bool
    pos: int


@dataclass(frozen=True, slots=True)
class Call:
    name: str  # upper-cased: function names are case-insensitive
    args: tuple[Node, ...]
    pos: int


Node = Literal | Attribute | Exists | Unary | Binary | Like | In | Call


def parse_tree(text: str) -> Node:
    """The syntax tree of ``text``; raises CesqlParseError naming the column."""
    return _Parser(tokenize(text)).parse()


class _Parser:
    def __init__(self, tokens: list[Token]) -> None:
        self._tokens = tokens
        self._i = 0
        self._nesting = 0
        # Height of every subtree built so far, by id: the nodes stay referenced by the
        # tree under construction, so their ids cannot be reused while parsing.
        self._height: dict[int, int] = {}

    # -- token helpers -------------------------------------------------------------

    def _peek(self, ahead: int = 0) -> Token:
        return self._tokens[min(self._i + ahead, len(self._tokens) - 1)]

    def _next(self) -> Token:
        token = self._tokens[self._i]
        if token.kind != EOF:
            self._i += 1
        return token

    def _keyword(self, ahead: int = 0) -> str | None:
        """The upper-cased keyword at ``ahead``, or None when that token is no keyword."""
        token = self._peek(ahead)
        if token.kind == WORD:
            upper = token.text.upper()
            if upper in KEYWORDS:
                return upper
        return None

    def _expect(self, kind: str, what: str) -> Token:
        token = self._peek()
        if token.kind != kind:
            raise parse_error(f"expected {what} but found {token.describe()}", token.pos)
        return self._next()

    def _node(self, node: Node, *children: Node) -> Node:
        """Register ``node`` (built over ``children``) and enforce the height bound."""
        height = 1 + max((self._height[id(c)] for c in children), default=0)
        if height > MAX_HEIGHT:
            raise parse_error(f"expression too deeply nested (limit {MAX_HEIGHT} levels)", node.pos)
        self._height[id(node)] = height
        return node

    # -- grammar -------------------------------------------------------------------

    def parse(self) -> Node:
        if self._peek().kind == EOF:
            raise parse_error("empty expression", self._peek().pos)
        node = self._expression()
        token = self._peek()
        if token.kind != EOF:
            raise parse_error(f"unexpected {token.describe()}", token.pos)
        return node

    def _expression(self) -> Node:
        self._nesting += 1
        if self._nesting > MAX_NESTING:
            raise parse_error(f"expression too deeply nested (limit {MAX_NESTING} levels)", self._peek().pos)
        node = self._logic()
        self._nesting -= 1
        return node

    def _logic(self) -> Node:
        left = self._comparison()
        while (op := self._keyword()) in LOGIC_OPS:
            assert op is not None
            pos = self._next().pos
            right = self._comparison()
            left = self._node(Binary(op, left, right, pos), left, right)
        return left

    def _comparison(self) -> Node:
        return self._binary_level(COMPARISON_OPS, self._additive)

    def _additive(self) -> Node:
        return self._binary_level(ADDITIVE_OPS, self._multiplicative)

    def _multiplicative(self) -> Node:
        return self._binary_level(MULTIPLICATIVE_OPS, self._postfix)

    def _binary_level(self, ops: frozenset[str], operand: Callable[[], Node]) -> Node:
        left = operand()
        while self._peek().kind == OP and self._peek().text in ops:
            token = self._next()
            right = operand()
            left = self._node(Binary(token.text, left, right, token.pos), left, right)
        return left

    def _postfix(self) -> Node:
        node = self._unary()
        while True:
            keyword = self._keyword()
            negated = keyword == "NOT" and self._keyword(1) in ("LIKE", "IN")
            if negated:
                self._next()
                keyword = self._keyword()
            if keyword == "LIKE":
                pos = self._next().pos
                pattern = self._peek()
                if pattern.kind != STRING:
                    raise parse_error(
                        f"the LIKE pattern must be a string literal, found {pattern.describe()}",
                        pattern.pos,
                    )
                self._next()
                assert isinstance(pattern.value, str)
                node = self._node(Like(node, pattern.value, negated, pos), node)
            elif keyword == "IN":
                pos = self._next().pos
                items = self._set()
                node = self._node(In(node, items, negated, pos), node, *items)
            else:
                return node

    def _set(self) -> tuple[Node, ...]:
        self._expect(LPAREN, "'(' opening the IN set")
        if self._peek().kind == RPAREN:
            raise parse_error("an IN set needs at least one value", self._peek().pos)
        items = [self._expression()]
        while self._peek().kind == COMMA:
            self._next()
            items.append(self._expression())
        self._expect(RPAREN, "',' or ')' in the IN set")
        return tuple(items)

    def _unary(self) -> Node:
        token = self._peek()
        if self._keyword() == "NOT":
            self._next()
            operand = self._unary()
            return self._node(Unary("NOT", operand, token.pos), operand)
        if token.kind == OP and token.text in ("-", "+"):
            self._next()
            if self._peek().kind == INT:
                # A signed integer literal (spec 2.2): fold the sign so -2147483648 fits.
                digits = self._next()
                assert isinstance(digits.value, int)
                value = -digits.value if token.text == "-" else digits.value
                return self._node(self._int_literal(value, token.pos))
            if token.text == "+":
                raise parse_error("'+' must be followed by an integer literal", token.pos)
            operand = self._unary()
            return self._node(Unary("-", operand, token.pos), operand)
        return self._primary()

    def _int_literal(self, value: int, pos: int) -> Literal:
        if not INT_MIN <= value <= INT_MAX:
            raise parse_error(f"integer literal {value} does not fit in 32 bits", pos)
        return Literal(value, pos)

    def _primary(self) -> Node:
        token = self._peek()
        if token.kind == INT:
            self._next()
            assert isinstance(token.value, int)
            return self._node(self._int_literal(token.value, token.pos))
        if token.kind == STRING:
            self._next()
            return self._node(Literal(token.value, token.pos))
        if token.kind == LPAREN:
            self._next()
            node = self._expression()
            self._expect(RPAREN, "')'")
            return node
        if token.kind == WORD:
            return self._word()
        raise parse_error(f"expected an expression but found {token.describe()}", token.pos)

    def _word(self) -> Node:
        keyword = self._keyword()
        token = self._next()
        if keyword in ("TRUE", "FALSE"):
            return self._node(Literal(keyword == "TRUE", token.pos))
        if keyword == "EXISTS":
            name = self._peek()
            if name.kind != WORD or self._keyword() or not _ATTRIBUTE_NAME.fullmatch(name.text):
                raise parse_error(
                    f"EXISTS must be followed by an attribute name, found {name.describe()}",
                    name.pos,
                )
            self._next()
            return self._node(Exists(name.text.lower(), token.pos))
        if keyword is not None:
            raise parse_error(f"unexpected keyword {keyword}", token.pos)
        if self._peek().kind == LPAREN:
            return self._call(token)
        if not _ATTRIBUTE_NAME.fullmatch(token.text):
            raise parse_error(f"'{token.text}' is not an attribute name (letters and digits only)", token.pos)
        return self._node(Attribute(token.text.lower(), token.pos))

    def _call(self, name: Token) -> Node:
        if not _FUNCTION_NAME.fullmatch(name.text):
            raise parse_error(
                f"'{name.text}' is not a function name (a letter, then letters or '_')", name.pos
            )
        self._next()  # the '('
        args: list[Node] = []
        if self._peek().kind != RPAREN:
            args.append(self._expression())
            while self._peek().kind == COMMA:
                self._next()
                args.append(self._expression())
        self._expect(RPAREN, "',' or ')' closing the function arguments")
        return self._node(Call(name.text.upper(), tuple(args), name.pos), *args)
