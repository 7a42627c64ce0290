"""SQL text: the one lexer for comments, quoted parts and statement ends.

Every reader of SQL text in the package (the migration files' statement
splitter, the lint, the schema comparison) sees a ``;``, a ``--`` or a quote
the way SQLite does, because all of them read it through :func:`sql_pieces`.
SQLite itself, through ``sqlite3.complete_statement``, decides where a
statement containing ``BEGIN ... END`` (a trigger body) ends. Imports nothing
from the package.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator

# Opening quote -> closing quote; a doubled closing quote inside stands for one.
_QUOTES = {"'": "'", '"': '"', "`": "`", "[": "]"}


def sql_pieces(sql: str) -> Iterator[tuple[str, str]]:
    """``(kind, text)`` pieces of ``sql``, in order; their texts join back to ``sql``.

    kind is ``"string"`` ('...'), ``"name"`` ("...", `...`, [...]), ``"comment"``
    (``--`` up to the end of its line, the newline not included; ``/* ... */``)
    or ``"code"`` (everything else, a piece ending at each ``;``). An
    unterminated quote or comment runs to the end of the text.
    """
    i, n, code_start = 0, len(sql), 0
    while i < n:
        char = sql[i]
        if char in _QUOTES:
            kind, end = ("string" if char == "'" else "name"), _quote_end(sql, i)
        elif sql.startswith("--", i):
            kind, end = "comment", sql.find("\n", i)
            end = n if end == -1 else end
        elif sql.startswith("/*", i):
            kind, end = "comment", sql.find("*/", i + 2)
            end = n if end == -1 else end + 2
        else:
            i += 1
            if char == ";":
                yield "code", sql[code_start:i]
                code_start = i
            continue
        if code_start < i:
            yield "code", sql[code_start:i]
        yield kind, sql[i:end]
        i = code_start = end
    if code_start < n:
        yield "code", sql[code_start:]


def _quote_end(sql: str, start: int) -> int:
    """The index just past the quote that closes the one at ``start``."""
    close = _QUOTES[sql[start]]
    end = sql.find(close, start + 1)
    while end != -1 and close != "]" and sql.startswith(close * 2, end):
        end = sql.find(close, end + 2)
    return len(sql) if end == -1 else end + 1


def strip_comments(sql: str) -> str:
    """``sql`` with each comment replaced by one space (quoted parts kept intact)."""
    return "".join(" " if kind == "comment" else text for kind, text in sql_pieces(sql))


def has_code(text: str) -> bool:
    """True when ``text`` holds anything besides whitespace, semicolons and comments."""
    return any(_code_offset(kind, piece) != -1 for kind, piece in sql_pieces(text))


def _code_offset(kind: str, piece: str) -> int:
    """Where a piece's code starts: 0 for a quoted part, -1 for a comment or a
    code piece of nothing but whitespace and ``;``."""
    if kind == "comment":
        return -1
    if kind != "code":
        return 0
    return next((i for i, char in enumerate(piece) if not (char.isspace() or char == ";")), -1)


def split_statements(sql: str) -> list[str]:
    """Split SQL into single statements at the semicolons SQLite itself would end them at.

    Only a ``;`` outside quotes and comments can end one, and
    ``sqlite3.complete_statement`` decides whether it does, so a
    ``CREATE TRIGGER ... BEGIN ...; END`` body does not split. Leading comments
    belong to no statement; a chunk of nothing but comments is none.
    """
    statements: list[str] = []
    chunk: list[tuple[str, str]] = []
    text = ""
    for kind, piece in sql_pieces(sql):
        chunk.append((kind, piece))
        text += piece
        if kind == "code" and piece.endswith(";") and sqlite3.complete_statement(text):
            _add_statement(statements, chunk)
            chunk, text = [], ""
    _add_statement(statements, chunk)
    return statements


def _add_statement(statements: list[str], chunk: list[tuple[str, str]]) -> None:
    """Append the statement ``chunk`` holds, from its first code on, if it holds one."""
    for index, (kind, piece) in enumerate(chunk):
        offset = _code_offset(kind, piece)
        if offset != -1:
            rest = piece[offset:] + "".join(text for _, text in chunk[index + 1:])
            statements.append(rest.strip())
            return
