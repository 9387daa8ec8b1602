"""CESQL lexer: turns an expression's text into a list of :class:`Token`.

The token set follows the CESQL v1 grammar (cloudevents/spec ``cesql/spec.md`` section 2 and
its ANTLR lexer ``CESQLLexer.g4``):

* words: runs of ASCII letters, digits and ``_``. A word of digits only is an integer
  literal; any other word is a keyword, an attribute name or a function name, which the
  parser tells apart (keywords and function names are case-insensitive);
* string literals delimited by ``'`` or ``"``;
* the punctuation ``( ) ,`` and the operators ``+ - * / % = != <> < <= > >=``.

Blanks (space, tab, CR, LF) separate tokens and are otherwise ignored. The sign of a
signed integer literal such as ``-5`` is *not* lexed here: ``-`` is always an operator
token and the parser folds ``-`` followed by an integer literal into a negative literal.
Lexing the sign greedily (as the ANTLR grammar does) would make ``4 -1`` two adjacent
literals; folding in the parser accepts it as a subtraction and still admits
``-2147483648``, whose magnitude alone is not a valid 32-bit integer.

Every token records its 0-based offset so that parse errors can name a 1-based column.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from evroute.errors import CesqlParseError

# Token kinds. Plain strings keep the parser's comparisons cheap and readable.
WORD: Final = "word"
INT: Final = "int"
STRING: Final = "string"
OP: Final = "op"
LPAREN: Final = "("
RPAREN: Final = ")"
COMMA: Final = ","
EOF: Final = "end of expression"

_BLANKS: Final = frozenset(" \t\r\n")
_WORD_CHARS: Final = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")
_DIGITS: Final = frozenset("0123456789")
# Two-character operators are tried before one-character ones (maximal munch).
_OPS2: Final = frozenset({"!=", "<>", "<=", ">="})
_OPS1: Final = frozenset("+-*/%=<>")
_PUNCT: Final = {"(": LPAREN, ")": RPAREN, ",": COMMA}


@dataclass(frozen=True, slots=True)
class Token:
    """One lexical token.

    ``text`` is the token as written; for a string literal ``value`` is its unescaped
    content, for an integer literal its (unsigned) int value, otherwise ``text`` again.
    """

    kind: str
    text: str
    value: str | int
    pos: int

    @property
    def column(self) -> int:
        """1-based column of the token's first character."""
        return self.pos + 1

    def describe(self) -> str:
        """How error messages name this token."""
        if self.kind == EOF:
            return "end of expression"
        if self.kind == STRING:
            return f"string {self.text}"
        return f"'{self.text}'"


def parse_error(what: str, pos: int) -> CesqlParseError:
    """The one-line parse error evroute reports for CESQL: what went wrong, and where."""
    return CesqlParseError(f"CESQL: {what} at column {pos + 1}")


def tokenize(text: str) -> list[Token]:
    """All tokens of ``text``, ending with an EOF token; raises CesqlParseError."""
    tokens: list[Token] = []
    append = tokens.append
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if ch in _BLANKS:
            i += 1
            continue
        if ch in _WORD_CHARS:
            start = i
            while i < n and text[i] in _WORD_CHARS:
                i += 1
            word = text[start:i]
            if all(c in _DIGITS for c in word):
                append(Token(INT, word, int(word), start))
            else:
                append(Token(WORD, word, word, start))
            continue
        if ch == "'" or ch == '"':
            token, i = _string(text, i)
            append(token)
            continue
        pair = text[i : i + 2]
        if pair in _OPS2:
            append(Token(OP, pair, pair, i))
            i += 2
            continue
        if ch in _OPS1:
            append(Token(OP, ch, ch, i))
            i += 1
            continue
        if ch in _PUNCT:
            append(Token(_PUNCT[ch], ch, ch, i))
            i += 1
            continue
        if ch == "!":
            raise parse_error("'!' must be followed by '=' (use NOT for negation)", i)
        raise parse_error(f"unexpected character {ch!r}", i)
    append(Token(EOF, "", "", n))
    return tokens


def _string(text: str, start: int) -> tuple[Token, int]:
    """The string literal opening at ``start`` and the offset just after it.

    Inside a literal delimited by ``q``, ``\\q`` stands for ``q`` (spec 2.2) and, as in SQL
    and the reference ANTLR lexer, a doubled ``qq`` does too. A backslash before any other
    character is kept as written, together with that character: the LIKE operator gives
    ``\\%``, ``\\_`` and ``\\\\`` their meaning, so they must reach it unchanged.
    """
    quote = text[start]
    parts: list[str] = []
    i = start + 1
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == "\\" and i + 1 < n:
            nxt = text[i + 1]
            parts.append(nxt if nxt == quote else ch + nxt)
            i += 2
            continue
        if ch == quote:
            if i + 1 < n and text[i + 1] == quote:
                parts.append(quote)
                i += 2
                continue
            return Token(STRING, text[start : i + 1], "".join(parts), start), i + 1
        parts.append(ch)
        i += 1
    raise parse_error(f"unterminated string literal (opened with {quote})", start)
