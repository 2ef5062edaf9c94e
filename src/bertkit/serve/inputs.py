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


def read_int(body: dict, key: str, default: int, low: int, high: int, why_high: str) -> int:
    """An optional integer field in [low, high]; BadRequest(400) naming `key` otherwise."""
    value = body.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest(400, f"{key}: expected an integer, got {type(value).__name__}")
    if value < low:
        raise BadRequest(400, f"{key}: {value}, must be at least {low}")
    if value > high:
        raise BadRequest(400, f"{key}: {value}, {why_high}")
    return value


# ---- the OpenAI-compatible /v1/embeddings ---------------------------------------------------------------------------
ENCODINGS = ("float", "base64")


def read_embeddings(body: dict, settings) -> tuple[list[str], list[str], str, int | None]:
    """(texts, their names for errors, encoding_format, dimensions) of an OpenAI embeddings request.

    `input` is a string or a list of strings. Token-id arrays (which OpenAI also takes) are refused: a client sends
    ids of OpenAI's tokenizer (tiktoken), which mean nothing to a BERT vocabulary."""
    if "input" not in body:
        raise BadRequest(400, "input: missing (a string or a list of strings)")
    value = body["input"]
    if isinstance(value, str):
        texts, names = [value], ["input"]
    elif isinstance(value, list):
        if not value:
            raise BadRequest(400, "input: empty list")
        if all(isinstance(x, int) and not isinstance(x, bool) for x in value) or \
                any(isinstance(x, list) and x and all(isinstance(t, int) for t in x) for x in value):
            raise BadRequest(400, "input: token-id arrays are not supported (ids of another tokenizer mean nothing "
                                  "to this model): send the text")
        if len(value) > settings.max_items:
            raise BadRequest(413, f"input: {len(value)} items, limit {settings.max_items} per request")
        texts, names = value, [f"input[{i}]" for i in range(len(value))]
    else:
        raise BadRequest(400, f"input: expected a string or a list of strings, got {type(value).__name__}")
    # a text cut at max_chars (20,000 by default) gives the same vector: the model reads its first window only
    checked = [check_text(t, n, settings) for t, n in zip(texts, names)]
    encoding = body.get("encoding_format", "float")
    encoding = "float" if encoding is None else encoding
    if encoding not in ENCODINGS:
        raise BadRequest(400, f"encoding_format: {show(str(encoding))!r}, choose float or base64")
    dimensions = body.get("dimensions")
    if dimensions is not None and (isinstance(dimensions, bool) or not isinstance(dimensions, int)):
        raise BadRequest(400, f"dimensions: expected an integer, got {type(dimensions).__name__}")
    return [t for t, _ in checked], names, encoding, dimensions


def openai_error(status: int, message: str) -> dict:
    """OpenAI's error body: {"error": {"message", "type", "param", "code"}}; `param` is the request field a 4xx
    message names first (`input[2]: empty text` -> `input`), None for the body as a whole or no field."""
    field = message.split(":", 1)[0].split("[", 1)[0]
    param = field if status in (400, 404, 413) and ":" in message and field.isidentifier() and field != "body" \
        else None
    kind = ("invalid_request_error" if status < 500 and status not in (401, 429)
            else {401: "authentication_error", 429: "rate_limit_error"}.get(status, "server_error"))
    code = {401: "invalid_api_key", 413: "request_too_large", 415: "unsupported_media_type",
            503: "overloaded", 504: "timeout"}.get(status)
    if status == 404 and param == "model":
        code = "model_not_found"
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


# ---- /v1/search and /v1/cluster --------------------------------------------------------------------------------------
def read_queries(body: dict, settings) -> tuple[list[str], list[str]]:
    """`query` (one string) or `queries` (a list), not both: (texts, their names for errors)."""
    if ("query" in body) == ("queries" in body):
        raise BadRequest(400, "query: give `query` (a string) or `queries` (a list of strings)"
                              + (", not both" if "query" in body else ""))
    if "query" in body:
        text, _ = check_text(body["query"], "query", settings)
        return [text], ["query"]
    texts, _ = read_texts(body, "queries", settings)
    return texts, [f"queries[{i}]" for i in range(len(texts))]
