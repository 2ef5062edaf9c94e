"""Request checks of the HTTP service, shared by the task families' request parsers (no web framework here, so
that the families stay importable without the server)."""

from __future__ import annotations

import unicodedata
from typing import Any


class BadRequest(ValueError):
    def __init__(self, status: int, message: str, **headers: str):
        super().__init__(message)
        self.status, self.headers = status, headers or None


def show(value: str, limit: int = 80) -> str:
    """A client's string for an error message: shortened, and printable whatever it holds."""
    value = value if len(value) <= limit else value[:limit] + "..."
    return value.encode("utf-8", "backslashreplace").decode("utf-8")


def check_text(value: Any, where: str, settings) -> tuple[str, bool]:
    """(text, truncated) or BadRequest naming `where`."""
    if not isinstance(value, str):
        raise BadRequest(400, f"{where}: expected a string, got {type(value).__name__}")
    if not value.strip():
        raise BadRequest(400, f"{where}: empty text (no visible character)")
    for i, ch in enumerate(value):
        kind = unicodedata.category(ch)
        if kind == "Cc" and ch not in "\t\n\r":
            raise BadRequest(400, f"{where}: control character U+{ord(ch):04X} at position {i}")
        if kind == "Cs":  # JSON can spell a lone surrogate (\ud800); it is not text
            raise BadRequest(400, f"{where}: lone surrogate U+{ord(ch):04X} at position {i} (not valid Unicode)")
    if len(value) > settings.max_chars:
        if settings.on_long_text == "reject":
            raise BadRequest(413, f"{where}: {len(value)} characters, limit {settings.max_chars}")
        return value[: settings.max_chars], True
    return value, False


def read_texts(body: dict, key: str, settings) -> tuple[list[str], list[bool]]:
    items = body.get(key)
    if not isinstance(items, list):
        raise BadRequest(400, f"{key}: expected a list of strings" + ("" if key in body else " (missing)"))
    if not items:
        raise BadRequest(400, f"{key}: empty list")
    if len(items) > settings.max_items:
        raise BadRequest(413, f"{key}: {len(items)} items, limit {settings.max_items} per request")
    checked = [check_text(t, f"{key}[{i}]", settings) for i, t in enumerate(items)]
    return [t for t, _ in checked], [c for _, c in checked]


def read_pairs(body: dict, settings) -> tuple[list[str], list[str], list[bool]]:
    items = body.get("pairs")
    if not isinstance(items, list) or not items:
        raise BadRequest(400, "pairs: expected a non-empty list of [text, text_pair]")
    if len(items) > settings.max_items:
        raise BadRequest(413, f"pairs: {len(items)} items, limit {settings.max_items} per request")
    a, b, cut = [], [], []
    for i, p in enumerate(items):
        if not isinstance(p, list) or len(p) != 2:
            raise BadRequest(400, f"pairs[{i}]: expected [text, text_pair]")
        (x, c1), (y, c2) = check_text(p[0], f"pairs[{i}][0]", settings), check_text(p[1], f"pairs[{i}][1]", settings)
        a.append(x), b.append(y), cut.append(c1 or c2)
    return a, b, cut
