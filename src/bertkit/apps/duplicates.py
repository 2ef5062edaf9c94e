"""Near-duplicates: exact repeats (after a normalisation) and paraphrase mining over sentence vectors.

Python API:
- `normalize_text(text)`: the key two texts must share to count as exact repeats (below).
- `exact_duplicates(texts, normalize=normalize_text) -> list[list[int]]`: groups (two members or more) of indices
  whose normalised texts are equal, each group ascending, groups by their first index. One pass over any iterable;
  memory is a 16-byte digest (BLAKE2b-128) per distinct text (about 100 bytes with the dict's), never the texts.
- `paraphrase_mining(model_or_vectors, texts=None, *, top_k=100, threshold=None, max_pairs=500_000, ...)
  -> list[(score, i, j)]`: sentence-transformers' `util.paraphrase_mining` shape: cosine scores, i < j, best
  first. Each row keeps its `top_k` most similar other rows (a pair is kept when it is in either row's top-k, as in
  sentence-transformers); `threshold` drops pairs below it; `top_k=None` with a threshold keeps every pair at or
  above it. `model_or_vectors`: an (N, D) array (NumPy, torch; scipy sparse by threshold only), a
  `bertkit.apps.vectors.Vectors` (memory-mapped, dequantised chunk by chunk), or a model (a directory, a
  `Predictor`, a `SentenceModel` or anything with `encode(texts, batch_size=...)`) together with `texts`.
- `iter_pairs(vectors, *, threshold=None, top_k=None, ...)`: the same pairs as they are found, unsorted, each pair
  once: what to use when there are too many pairs to hold (`paraphrase_mining` keeps at most `max_pairs`).
- `find_duplicates(model, texts, *, threshold=DEFAULT_THRESHOLD, top_k=None, ...) -> Iterator[Duplicate]`: both
  kinds in one stream, what `bertkit duplicates` writes: first every exact repeat paired with the first occurrence
  of its text (score 1.0, `exact=True`), then the near pairs among the distinct texts (`exact=False`). Only the
  first occurrence of a repeated text is embedded and mined, so a near pair names first occurrences; the repeats
  of either side are linked to them by the exact pairs (the connected components are the duplicate groups).
  `vectors=` gives the texts' vectors computed already instead of a model: an array, or the directory `bertkit
  embed` wrote for the same file (`bertkit duplicates --vectors DIR`, which checks the file's sha256 against it).

Memory stays bounded whatever N: the N x N score matrix is never built. The threshold scan reads `chunk_size`
rows against `column_chunk` columns at a time (the upper triangle only: each pair is met once); a float32 block
of chunk_size x column_chunk scores (16 MB by default) and its mask are the working set, plus the pairs of one
block. The top-k scan is `bertkit.apps.search.exact_top_k` over row chunks (its per-row order: decreasing score,
then increasing row); a pair met from both sides is emitted once, which costs 8 bytes per pair whose second row is
still ahead (at most N x top_k). `paraphrase_mining` then holds at most `max_pairs` pairs in a heap.

Exact repeats: `normalize_text` applies NFKC (full-width forms, ligatures, compatibility characters; Hangul stays
composed syllables: NFKC composes a decomposed syllable and never splits one), case folding, punctuation
(Unicode category P*) read as a space except between two digits ("3.5", "1,000" keep theirs), and collapses
whitespace. So "Seoul, 'Rain'..." and "seoul rain" are one text, "3.5%" and "35%" are not; symbols ($, +, ~, and
the % # @ & that Unicode files under punctuation) are kept because they change the meaning. An empty text (after
normalising) is never a duplicate of anything.

A threshold belongs to a model and a language: all-MiniLM-L6-v2 puts English paraphrases (MRPC) above 0.9 with 86 %
precision, but scores Korean titles, which it reads one jamo at a time, so high that 0.97 is needed (82 % of the
pairs above it are the same event, against 92 % for a character n-gram TF-IDF above 0.7: `iter_pairs` takes its
sparse matrix too, by threshold). Measure a threshold on your own data (benchmarks/duplicates.py shows how).
"""

from __future__ import annotations

import functools
import hashlib
import heapq
import math
import re
import sys
import unicodedata
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from bertkit.apps.embed import BATCH_SIZE, MAX_TOKENS
from bertkit.apps.search import row_reader, exact_top_k, normalize

# cosine. all-MiniLM-L6-v2 on MRPC dev: pairs >= 0.9 are paraphrases 86 % of the time (a third of them found), the
# best F1 threshold for "paraphrase" is 0.57: 0.9 asks for near-duplicates, not paraphrases (benchmarks/duplicates.py)
DEFAULT_THRESHOLD = 0.9


class DuplicatesError(ValueError):
    """A bad argument to the duplicate finders; the message names it."""


class Duplicate(NamedTuple):
    i: int  # i < j, indices of the input texts (0-based)
    j: int
    score: float  # cosine; 1.0 for an exact repeat
    exact: bool  # equal after normalize_text


# ---- exact repeats -----------------------------------------------------------------------------------------------
KEPT_PUNCTUATION = "%‰#@&"  # Unicode calls them punctuation, but "3%" is not "3"
_PUNCT_BETWEEN_DIGITS = re.compile(r"(?<=\d)([^\w\s])(?=\d)")


@functools.cache
def _punctuation_to_space() -> dict[int, str]:
    """A str.translate table: every Unicode punctuation character (category P*) but KEPT_PUNCTUATION -> space."""
    return {cp: " " for cp in range(sys.maxunicode + 1)
            if unicodedata.category(chr(cp)).startswith("P") and chr(cp) not in KEPT_PUNCTUATION}


def normalize_text(text: str) -> str:
    """The text two exact repeats share: NFKC, case-folded, punctuation as space (kept between digits), single
    spaces, no leading or trailing space."""
    text = unicodedata.normalize("NFKC", text).casefold()
    # split keeps the punctuation between digits at the odd positions, untranslated ("3.5" is not "3 5")
    parts = _PUNCT_BETWEEN_DIGITS.split(text)
    table = _punctuation_to_space()
    text = "".join(p if k % 2 else p.translate(table) for k, p in enumerate(parts))
    return " ".join(text.split())


def _representatives(texts: Iterable[str], normalize_fn=normalize_text) -> np.ndarray:
    """For each text, the index of the first text with the same normalised form (itself if it is the first)."""
    first: dict[bytes, int] = {}
    rep = []
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise DuplicatesError(f"texts[{i}]: expected a string, got {type(text).__name__}")
        key = normalize_fn(text) if normalize_fn is not None else text
        if not key:
            rep.append(i)  # empty: unique by definition
            continue
        digest = hashlib.blake2b(key.encode("utf-8"), digest_size=16).digest()
        rep.append(first.setdefault(digest, i))
    return np.asarray(rep, dtype=np.int64)


def exact_duplicates(texts: Iterable[str], normalize=normalize_text) -> list[list[int]]:
    """Groups of indices of texts equal after `normalize` (None: equal as given), each sorted, groups ordered by
    their first member; texts that occur once are left out."""
    rep = _representatives(texts, normalize)
    groups: dict[int, list[int]] = {}
    for i in np.flatnonzero(rep != np.arange(len(rep))):
        groups.setdefault(int(rep[i]), [int(rep[i])]).append(int(i))
    return [groups[k] for k in sorted(groups)]


# ---- pairs over vectors ------------------------------------------------------------------------------------------
def _check(threshold: float | None, top_k: int | None) -> None:
    if threshold is not None and (not isinstance(threshold, (int, float)) or math.isnan(threshold)
                                  or not -1.0 <= threshold <= 1.0):
        raise DuplicatesError(f"threshold {threshold}: must be a cosine between -1 and 1")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1):
        raise DuplicatesError(f"top_k {top_k}: must be a whole number of at least 1")
    if threshold is None and top_k is None:
        raise DuplicatesError("give a threshold, a top_k or both (every pair of N texts is N^2/2 pairs)")


def _reader(vectors):
    """(N, read(start, stop) -> unit rows): dense float32 rows, or scipy sparse rows (a TF-IDF matrix)."""
    if hasattr(vectors, "tocsr"):  # scipy sparse: rows stay sparse, a block of scores is made dense
        from sklearn.preprocessing import normalize as sparse_normalize

        m = vectors.tocsr().astype(np.float32)
        return m.shape[0], lambda a, b: sparse_normalize(m[a:b])
    n, read = row_reader(vectors)
    return n, lambda a, b: normalize(read(a, b))


def _threshold_blocks(vectors, threshold: float, chunk_size: int, column_chunk: int,
                      progress: bool) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(scores, i, j) of every pair i < j with cosine >= threshold, block by block of the upper triangle."""
    from tqdm import tqdm

    n, read = _reader(vectors)
    for r0 in tqdm(range(0, n, chunk_size), desc="mining pairs", unit="chunk", disable=not progress):
        r1 = min(r0 + chunk_size, n)
        q = read(r0, r1)
        for c0 in range(r0, n, column_chunk):
            c1 = min(c0 + column_chunk, n)
            s = q @ read(c0, c1).T  # (rows, columns)
            if hasattr(s, "toarray"):
                s = s.toarray()
            hit = s >= threshold
            if c0 < r1:  # the block crosses the diagonal: only j > i
                hit &= np.arange(c0, c1)[None, :] > np.arange(r0, r1)[:, None]
            ii, jj = np.nonzero(hit)
            if len(ii):
                yield s[ii, jj].astype(np.float32), ii + r0, jj + c0


def _top_k_blocks(vectors, top_k: int, threshold: float | None, chunk_size: int, column_chunk: int,
                  progress: bool) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(scores, i, j), i < j, of every pair in either row's top_k (above `threshold`, if given), each once."""
    from tqdm import tqdm

    n, read = row_reader(vectors)
    pending = np.zeros(0, dtype=np.int64)  # keys i*n+j (i < j) emitted from row i whose row j is still ahead
    for r0 in tqdm(range(0, n, chunk_size), desc="mining pairs", unit="chunk", disable=not progress):
        r1 = min(r0 + chunk_size, n)
        rows, scores = exact_top_k(read(r0, r1), vectors, top_k + 1, corpus_chunk_size=column_chunk,
                                   query_chunk_size=chunk_size)
        # each row's top_k other rows: drop the row itself (absent only among > top_k equal vectors)
        me = np.arange(r0, r1)[:, None]
        keep = rows != me
        keep &= np.cumsum(keep, axis=1) <= top_k
        if threshold is not None:
            keep &= scores >= threshold
        i = np.broadcast_to(me, rows.shape)[keep]
        j, s = rows[keep], scores[keep]
        lo, hi = np.minimum(i, j), np.maximum(i, j)
        key = lo * n + hi
        ahead = j > i
        # a pair reached back from its later row was already emitted if the earlier row had it in its top-k
        seen = np.concatenate([pending, key[ahead]])
        new = ahead | ~np.isin(key, seen)
        if new.any():
            yield s[new], lo[new], hi[new]
        pending = np.unique(seen)
        pending = pending[pending % n >= r1]  # pairs whose later row is past are settled


def iter_pairs(vectors, *, threshold: float | None = None, top_k: int | None = None, chunk_size: int = 256,
               column_chunk: int = 16384, show_progress: bool = False) -> Iterator[tuple[float, int, int]]:
    """(score, i, j), i < j, each pair once, unsorted, as found: with only `threshold`, every pair with cosine >=
    threshold; with `top_k`, the pairs in either row's top_k (and >= threshold when both are given)."""
    _check(threshold, top_k)
    if chunk_size < 1 or column_chunk < 1:
        raise DuplicatesError(f"chunk_size {chunk_size} / column_chunk {column_chunk}: must be at least 1")
    if top_k is not None and hasattr(vectors, "tocsr"):
        raise DuplicatesError("top_k: sparse rows are mined by threshold only; give a threshold, or dense vectors")
    blocks = (_threshold_blocks(vectors, threshold, chunk_size, column_chunk, show_progress) if top_k is None else
              _top_k_blocks(vectors, int(top_k), threshold, chunk_size, column_chunk, show_progress))
    # a plain function returning a generator: bad arguments fail here, not at the first next()
    return (pair for s, i, j in blocks for pair in zip(s.tolist(), i.tolist(), j.tolist()))


def _vectors_of(model_or_vectors, texts, batch_size: int, show_progress: bool):
    if texts is None:
        return model_or_vectors
    if isinstance(texts, str):
        raise DuplicatesError("texts: expected a list of texts, not one string")
    from bertkit.apps.sentence import encode_texts

    return encode_texts(model_or_vectors, list(texts), batch_size, show_progress)


def paraphrase_mining(model_or_vectors, texts: Sequence[str] | None = None, *, top_k: int | None = 100,
                      threshold: float | None = None, max_pairs: int | None = 500_000, chunk_size: int = 256,
                      column_chunk: int = 16384, batch_size: int = 32,
                      show_progress: bool = False) -> list[tuple[float, int, int]]:
    """[(score, i, j)], i < j, best first (equal scores: by i, then j); at most `max_pairs` (None: all). Without
    `texts`, `model_or_vectors` is the vectors; with them, the model that embeds them (see
    `bertkit.apps.sentence.encode_texts`)."""
    if max_pairs is not None and max_pairs < 1:
        raise DuplicatesError(f"max_pairs {max_pairs}: must be at least 1 (or None for all)")
    vectors = _vectors_of(model_or_vectors, texts, batch_size, show_progress)
    pairs = iter_pairs(vectors, threshold=threshold, top_k=top_k, chunk_size=chunk_size, column_chunk=column_chunk,
                       show_progress=show_progress)
    order = (lambda p: (-p[0], p[1], p[2]))
    if max_pairs is None:
        return sorted(pairs, key=order)
    return heapq.nsmallest(max_pairs, pairs, key=order)  # a heap of max_pairs, fed as pairs are found


class _Rows:
    """Some rows of a matrix or `Vectors` (sorted indices), read chunk by chunk: a span of the source at a time."""

    def __init__(self, source, rows: np.ndarray):
        self.n, self.read = row_reader(source)
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def dequantize(self, start: int, stop: int) -> np.ndarray:
        wanted = self.rows[start:stop]
        if not len(wanted):
            return self.read(0, 0)
        return self.read(int(wanted[0]), int(wanted[-1]) + 1)[wanted - wanted[0]]


def find_duplicates(model, texts: Sequence[str], *, threshold: float | None = DEFAULT_THRESHOLD,
                    top_k: int | None = None, normalize=normalize_text, batch_size: int = 32,
                    chunk_size: int = 256, column_chunk: int = 16384, vectors=None,
                    show_progress: bool = False) -> Iterator[Duplicate]:
    """Exact repeats (each paired with the first occurrence of its text, score 1.0), then near pairs among the
    first occurrences (cosine >= threshold, or in a row's top_k); see the module docstring. `vectors`: the texts'
    vectors computed already (row i of an array or of a `Vectors` directory for text i), instead of `model`."""
    _check(threshold, top_k)
    if isinstance(texts, str):
        raise DuplicatesError("texts: expected a list of texts, not one string")
    rep = _representatives(texts, normalize)
    if vectors is not None and len(vectors) != len(rep):
        raise DuplicatesError(f"vectors: {len(vectors)} rows for {len(rep)} texts")
    return _duplicates(model, texts, rep, vectors, threshold, top_k, batch_size, chunk_size, column_chunk,
                       show_progress)


def _duplicates(model, texts, rep: np.ndarray, vectors, threshold, top_k, batch_size, chunk_size, column_chunk,
                show_progress) -> Iterator[Duplicate]:
    first = np.flatnonzero(rep == np.arange(len(rep)))
    for i in np.flatnonzero(rep != np.arange(len(rep))):
        yield Duplicate(int(rep[i]), int(i), 1.0, True)
    if len(first) < 2:
        return
    if vectors is None:
        from bertkit.apps.sentence import encode_texts

        rows = encode_texts(model, [texts[i] for i in first], batch_size, show_progress)
    else:  # the rows of first occurrences, read as they are mined
        rows = vectors if len(first) == len(rep) else _Rows(vectors, first)
    for s, a, b in iter_pairs(rows, threshold=threshold, top_k=top_k, chunk_size=chunk_size,
                              column_chunk=column_chunk, show_progress=show_progress):
        yield Duplicate(int(first[a]), int(first[b]), s, False)


# ---- files (`bertkit duplicates`) --------------------------------------------------------------------------------
def read_texts(path: str | Path, text_field: str = "text") -> list[str]:
    """The texts of an input file, in order, read as `bertkit embed` reads it (`bertkit.apps.embed.scan`): .txt
    (one a line), .jsonl (`text_field` of each object), .csv (a header row, then `text_field`'s column). Pair
    indices are positions in this list (0-based: the line of a .txt or .jsonl, the data row of a .csv). A missing
    file, a line that is not JSON, a missing field, an empty text or no text at all is an InputError naming the
    file and line."""
    from bertkit.apps.embed import read_chunk, scan

    job = scan([path], text_field)
    return [text for k in range(len(job.chunks)) for text in read_chunk(job, k)[1]]


def open_vectors_of(directory: str | Path, input: str | Path, text_field: str):
    """The vectors directory that `bertkit embed` wrote for `input` (and `text_field`): its one input must be this
    file, unchanged (same sha256), else an InputError saying what differs."""
    from bertkit.apps.vectors import open_vectors
    from bertkit.infer.batchio import InputError

    vectors = open_vectors(directory)
    job = vectors.meta.get("job") or {}
    inputs = job.get("inputs") or []
    if len(inputs) != 1:
        raise InputError(f"{directory}: made from {len(inputs)} input files; give the vectors of --input {input} "
                         f"alone (bertkit embed --input {input})")
    with open(input, "rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()
    if inputs[0].get("sha256") != digest:
        raise InputError(f"{directory}: made from {inputs[0].get('path')}, not from this --input {input} (the "
                         f"contents differ); embed this file, or give the file the vectors were made from")
    if job.get("text_field", "text") != text_field:
        raise InputError(f"{directory}: embedded the field '{job.get('text_field')}', not --text-field "
                         f"'{text_field}'")
    return vectors


def duplicates_file(model: str | Path | None, input: str | Path, output: str | Path, *, text_field: str = "text",
                    threshold: float | None = None, top_k: int | None = None, batch_size: int = BATCH_SIZE,
                    max_tokens: int = MAX_TOKENS, backend: str = "auto", int8: bool = False, threads: int = 0,
                    bf16: bool = False, vectors: str | Path | None = None) -> tuple[int, int, int]:
    """`bertkit duplicates`: the pairs of `find_duplicates` over `input`'s texts, one JSON object a line
    `{"i", "j", "score", "exact"}` (i < j, 0-based positions in the input), exact repeats first, then near pairs
    as found; written beside `output` and renamed over it when complete. Neither `threshold` nor `top_k`:
    DEFAULT_THRESHOLD. `vectors`: the directory `bertkit embed` wrote for this input, read memory-mapped instead
    of running `model`. Returns (texts, exact pairs, near pairs)."""
    import json

    from bertkit.infer.batchio import InputError
    from bertkit.io import atomic_path

    if threshold is None and top_k is None:
        threshold = DEFAULT_THRESHOLD
    _check(threshold, top_k)
    if (model is None) == (vectors is None):
        raise InputError("give --model (to embed the texts) or --vectors (what bertkit embed wrote), one of them")
    from bertkit.apps.embed import predictor_settings

    settings = predictor_settings(batch_size, max_tokens, backend, int8, threads, bf16)
    if Path(output).resolve() == Path(input).resolve():
        raise InputError(f"--output {output} is the input file; write the pairs elsewhere")
    texts = read_texts(input, text_field)
    if vectors is not None:
        vectors = open_vectors_of(vectors, input, text_field)
    else:
        from bertkit.infer.predictor import Predictor

        model = Predictor.from_pretrained(model, settings)
    counts = [0, 0]
    with atomic_path(output) as tmp, open(tmp, "w", encoding="utf-8") as out:
        for d in find_duplicates(model, texts, threshold=threshold, top_k=top_k, batch_size=batch_size,
                                 vectors=vectors, show_progress=sys.stderr.isatty()):
            out.write(json.dumps({"i": d.i, "j": d.j, "score": round(d.score, 6), "exact": d.exact}) + "\n")
            counts[not d.exact] += 1
    return len(texts), counts[0], counts[1]
