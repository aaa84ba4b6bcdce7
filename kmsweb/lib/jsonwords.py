"""JSON parse errors in words, for people editing a policy in the dashboard.

Python's parser says ``Expecting ',' delimiter: line 1 column 153 (char 152)``;
a reader wants to know what is wrong, where, and to see the line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

# The parser's messages (json.JSONDecodeError.msg), most specific first.
_WORDS = (
    ("Expecting ',' delimiter", "a comma is missing between two items"),
    ("Expecting ':' delimiter", "a colon is missing between a name and its value"),
    (
        "Expecting property name enclosed in double quotes",
        "a name is expected here, in double quotes (is there a comma before a closing brace?)",
    ),
    ("Expecting value", "a value is expected here (is there a comma before a closing bracket, or a missing quote?)"),
    ("Unterminated string", "a string is not closed: a double quote is missing"),
    ("Invalid control character", "a string contains a line break or a tab; write \\n or \\t instead"),
    ("Invalid \\escape", "a backslash starts an escape JSON does not know; write \\\\ for a backslash"),
    # Python says "Invalid \\u" followed by four placeholder letters and "escape".
    ("Invalid \\u", "a \\u escape needs four hexadecimal digits"),
    ("Extra data", "there is more text after the end of the document"),
)


@dataclass(frozen=True)
class JsonProblem:
    """Where a JSON document stops parsing (1-based line and column) and why, in words."""

    line: int
    column: int
    words: str
    excerpt: str

    def __str__(self) -> str:
        return f"Line {self.line}, column {self.column}: {self.words}."


def json_problem(text: str) -> JsonProblem | None:
    """The first problem in ``text`` as JSON, or None when it parses."""
    try:
        json.loads(text)
    except json.JSONDecodeError as exc:
        words = next((w for prefix, w in _WORDS if exc.msg.startswith(prefix)), exc.msg[:1].lower() + exc.msg[1:])
        lines = text.splitlines() or [""]
        excerpt = lines[exc.lineno - 1] if exc.lineno <= len(lines) else ""
        return JsonProblem(line=exc.lineno, column=exc.colno, words=words, excerpt=excerpt.strip()[:160])
    return None
