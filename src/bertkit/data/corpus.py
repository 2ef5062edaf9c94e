"""Raw text -> documents -> sentences, streamed from plain or .gz files.

Two layouts, both with a blank line between documents:
- `sentences`: one sentence per line (the BERT format; NSMC's review corpus, one review per line, fits it too);
- `paragraphs`: one paragraph per line (WikiExtractor output), split here into sentences.

The sentence splitter is rule-based and works for English and Korean alike: a sentence ends at `.`, `!`, `?`, `…`
(or their full-width forms), possibly followed by closing quotes or brackets, when whitespace and then something
that can start a sentence follows. Common English abbreviations, initials ("J. R. R."), decimal numbers and
ellipses inside a sentence do not end it. Korean sentences end with the same marks ("했다. 그러나 …"), so the
same rule covers both; Korean text without punctuation stays one sentence, which is what the reviews need.
"""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from tqdm import tqdm

FORMATS = ("sentences", "paragraphs")


class CorpusError(ValueError):
    """A corpus file that is missing, unreadable, or holds no usable text; the message names the file (and line)."""


def open_binary(path: str | Path):
    """A file or a .gz of one, as bytes (lines are decoded one by one so that errors can name their line)."""
    path = Path(path)
    if not path.is_file():
        raise CorpusError(f"{path}: file not found")
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def read_lines_numbered(paths: Sequence[str | Path], keep_blank: bool = False, progress: tqdm | None = None
                        ) -> Iterator[tuple[Path, int, str]]:
    """(file, line number, stripped line) for every line of every file in turn. Invalid UTF-8 or a damaged .gz is
    a CorpusError naming the file and line. `progress`, a tqdm over the files' total size in bytes, advances
    with the bytes read from disk."""
    done = 0
    for path in map(Path, paths):
        with open_binary(path) as f:
            lineno = 0
            while True:
                try:
                    raw = f.readline()
                except (OSError, EOFError) as e:  # e.g. a truncated .gz
                    raise CorpusError(f"{path}: line {lineno + 1}: cannot be read ({e})") from None
                if not raw:
                    break
                lineno += 1
                try:
                    line = raw.decode("utf-8").strip()
                except UnicodeDecodeError as e:
                    raise CorpusError(f"{path}: line {lineno}: not valid UTF-8 ({e.reason})") from None
                if progress is not None and lineno % 4096 == 0:
                    progress.update(done + _position(f) - progress.n)
                if line or keep_blank:
                    yield path, lineno, line
        done += path.stat().st_size
        if progress is not None:
            progress.update(done - progress.n)


def json_objects(path: str | Path, lines: Iterable[str], error: type[Exception] = CorpusError
                 ) -> Iterator[tuple[str, dict]]:
    """("PATH: line N", object) for each non-blank line of a JSON-lines file; a line that is not JSON or not a
    JSON object is an `error` naming the file and line."""
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}: line {lineno}"
        try:
            item = json.loads(line)
        except json.JSONDecodeError as e:
            raise error(f"{where}: malformed JSON at column {e.colno}: {e.msg}") from None
        if not isinstance(item, dict):
            raise error(f"{where}: expected a JSON object, got {type(item).__name__}")
        yield where, item


def read_lines(paths: Sequence[str | Path], progress: tqdm | None = None) -> Iterator[str]:
    """The non-empty stripped lines of every file in turn."""
    return (line for _, _, line in read_lines_numbered(paths, progress=progress))


def _position(raw) -> int:
    """Bytes of the file on disk consumed so far (compressed bytes for .gz)."""
    inner = getattr(raw, "fileobj", None)
    try:
        return (inner or raw).tell()
    except (OSError, ValueError):
        return 0

ABBREVIATIONS = {
    "mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "mt", "vs", "etc", "e.g", "i.e", "cf", "al", "fig", "no",
    "vol", "inc", "ltd", "co", "corp", "dept", "univ", "gen", "col", "lt", "sgt", "capt", "gov", "sen", "rep",
    "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec", "approx", "ca", "op",
    "u.s", "u.k", "u.n", "a.m", "p.m", "d.c", "ph.d", "b.c", "a.d",
}
# A candidate boundary: end punctuation, optional closing quotes/brackets, whitespace.
_BOUNDARY = re.compile(r"([.!?…。！？]+[\"'”’)\]」』]*)\s+")


def split_sentences(paragraph: str, lowercase_continues: bool = True) -> list[str]:
    """Sentences of one paragraph, in order, stripped; nothing is dropped or changed but the spaces between.
    `lowercase_continues` off: a full stop before a lower-case word ends a sentence too (all-lower-case text)."""
    out, start = [], 0
    for m in _BOUNDARY.finditer(paragraph):
        end = m.end(1)
        if _is_boundary(paragraph, start, end, m.end(), lowercase_continues):
            sentence = paragraph[start:end].strip()
            if sentence:
                out.append(sentence)
            start = m.end()
    tail = paragraph[start:].strip()
    if tail:
        out.append(tail)
    return out


def _is_boundary(text: str, start: int, end: int, next_start: int, lowercase_continues: bool = True) -> bool:
    punct = text[start:end].rstrip("\"'”’)]」』")
    if next_start >= len(text):
        return True
    nxt = text[next_start]
    if not punct.endswith("."):
        return True  # ! ? … and full-width marks always end a sentence
    if (lowercase_continues and nxt.islower()) or nxt in ",;:":
        return False  # "e.g. the", "approx. three": a lower-case continuation
    word = re.search(r"(\S+)\.$", punct)
    if word:
        w = word.group(1).lower().lstrip("(\"'“‘")
        if w in ABBREVIATIONS or (len(w) == 1 and w.isalpha() and w.isascii()):
            return False  # "Dr. Smith", initials "J. Smith"
    return True


def read_documents(paths: Sequence[str | Path], fmt: str = "sentences", min_sentences: int = 1,
                   progress: tqdm | None = None) -> Iterator[list[str]]:
    """Each document as a list of sentences. Blank lines separate documents; with fmt='paragraphs' each line is
    split into sentences. Invalid UTF-8 is a CorpusError naming the file and line."""
    if fmt not in FORMATS:
        raise ValueError(f"format '{fmt}': choose one of {', '.join(FORMATS)}")
    doc: list[str] = []
    for path, lineno, line in read_lines_numbered(paths, keep_blank=True, progress=progress):
        if lineno == 1 and doc:  # a new file always starts a new document
            if len(doc) >= min_sentences:
                yield doc
            doc = []
        if not line:
            if len(doc) >= min_sentences:
                yield doc
            doc = []
        elif fmt == "sentences":
            doc.append(line)
        else:
            doc.extend(split_sentences(line))
    if len(doc) >= min_sentences:
        yield doc
