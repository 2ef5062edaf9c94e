"""Exact top-k search over sentence vectors: `semantic_search` (sentence-transformers' function and result shape) and
`exact_top_k` (the same scan on row numbers, which `bertkit.apps.index.Index` uses for its exact path and for re-scoring).

The corpus is read chunk by chunk (`corpus_chunk_size` rows at a time), so a memory-mapped 1 M x 384 float32 array is
scanned without a second copy: a float32 chunk is a view of the map, a float16 or int8 one is dequantised to float32
for the time of its chunk only. Any object with `len()` and `dequantize(start, stop) -> float32 rows` is a corpus
too (`bertkit.apps.vectors.Vectors`, an index segment).

Ordering, documented because sentence-transformers leaves it to `torch.topk`: results go by decreasing score, and
equal scores by increasing corpus row (float32 rounding may differ in the last place with a row's position in its
chunk, so rows with scores equal to ~1e-7 can swap places when the chunk size changes). `semantic_search` clamps a
`top_k` above the corpus size to the corpus size, as sentence-transformers does; `top_k` below 1 is an error.
Scores are float32 dot products (of unit vectors for "cosine"; a zero vector scores 0, as with
`torch.nn.functional.normalize`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, Protocol

import numpy as np

Score = Literal["cosine", "dot"]
SCORES = ("cosine", "dot")
EPS = 1e-12  # torch.nn.functional.normalize's floor on the norm


class SearchError(ValueError):
    """A bad search request (top_k, shapes, scores); the message names the argument."""


class Rows(Protocol):
    def __len__(self) -> int: ...

    def dequantize(self, start: int, stop: int) -> np.ndarray: ...


def as_matrix(x, what: str) -> np.ndarray:
    """A float32 (n, d) array from a NumPy array, a torch tensor or nested lists; a 1-D input is one row."""
    if hasattr(x, "detach"):  # a torch tensor, on any device
        x = x.detach().float().cpu().numpy()
    a = np.asarray(x)
    if a.ndim == 1:
        a = a[None, :]
    if a.ndim != 2:
        raise SearchError(f"{what}: expected a 2-D array (rows, dimension), got shape {a.shape}")
    if a.dtype.kind not in "fiu":
        raise SearchError(f"{what}: expected numbers, got dtype {a.dtype}")
    return a.astype(np.float32, copy=False)


def normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (a zero row stays zero)."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, EPS)


def row_reader(corpus) -> tuple[int, Callable[[int, int], np.ndarray]]:
    """(rows, read(start, stop) -> float32 rows) of a matrix, a torch tensor or a vectors directory (dequantised
    a slice at a time, so a memory-mapped corpus is never copied whole)."""
    if hasattr(corpus, "detach"):  # a torch tensor (whose own `dequantize` is something else)
        corpus = as_matrix(corpus, "corpus_embeddings")
    if hasattr(corpus, "dequantize"):
        return len(corpus), corpus.dequantize
    if not hasattr(corpus, "shape") or len(corpus.shape) != 2:
        corpus = as_matrix(corpus, "corpus_embeddings")
    if corpus.dtype == np.int8:
        raise SearchError("corpus_embeddings: int8 rows need their scales; pass the Vectors object (open_vectors)")
    return corpus.shape[0], lambda start, stop: np.asarray(corpus[start:stop], dtype=np.float32)


def check_top_k(top_k, size: int | None = None, what: str = "top_k") -> int:
    """`top_k` as an int >= 1 (and <= `size` when given); a SearchError naming it otherwise."""
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)):
        raise SearchError(f"{what}: must be a whole number, got {top_k!r}")
    if top_k < 1:
        raise SearchError(f"{what}: must be at least 1, got {top_k}")
    if size is not None and top_k > size:
        raise SearchError(f"{what}: {top_k} is more than the {size:,} vectors searched")
    return int(top_k)


def merge_best(rows: np.ndarray, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per query (row of the (queries, candidates) arrays), the k best candidates: by decreasing score, then
    increasing row."""
    order = np.lexsort((rows, -scores), axis=-1)[:, :k]
    return np.take_along_axis(rows, order, 1), np.take_along_axis(scores, order, 1)


def _chunk_best(s: np.ndarray, k: int) -> np.ndarray:
    """(queries, k) positions of the k best scores of each row of a chunk, ties at the boundary going to the lowest
    positions (argpartition alone picks among equal scores arbitrarily: such rows, rare, are redone exactly)."""
    if k >= s.shape[1]:
        return np.broadcast_to(np.arange(s.shape[1]), s.shape).copy()
    part = np.argpartition(-s, k - 1, axis=1)[:, :k]
    picked = np.take_along_axis(s, part, 1)
    kth = picked.min(axis=1, keepdims=True)
    for r in np.flatnonzero((s == kth).sum(axis=1) > (picked == kth).sum(axis=1)):  # a tie cut at the boundary
        above = np.flatnonzero(s[r] > kth[r])
        part[r] = np.concatenate([above, np.flatnonzero(s[r] == kth[r])[: k - len(above)]])
    return part


def exact_top_k(queries: np.ndarray, corpus, k: int, *, score: Score = "cosine", corpus_normalized: bool = False,
          corpus_chunk_size: int = 50_000, query_chunk_size: int = 100, skip: np.ndarray | None = None,
          offset: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k: `(rows, scores)`, each (queries, min(k, candidates)), rows as int64 (+ `offset`) and scores
    float32, best first. `skip`: sorted row numbers (without the offset) that never match (deleted rows).
    `corpus_normalized`: the rows are unit vectors already, so "cosine" needs no per-chunk norms."""
    if score not in SCORES:
        raise SearchError(f"score: must be one of {', '.join(SCORES)}, got {score!r}")
    queries = as_matrix(queries, "query_embeddings")
    n, read = row_reader(corpus)
    k = check_top_k(k)
    if score == "cosine":
        queries = normalize(queries)
    rows = np.zeros((len(queries), 0), dtype=np.int64)
    scores = np.zeros((len(queries), 0), dtype=np.float32)
    for start in range(0, n, corpus_chunk_size):
        stop = min(start + corpus_chunk_size, n)
        chunk = read(start, stop)
        if chunk.shape[1] != queries.shape[1]:
            raise SearchError(f"query_embeddings: dimension {queries.shape[1]} does not match the corpus's "
                              f"{chunk.shape[1]}")
        inv_norm = None
        if score == "cosine" and not corpus_normalized:
            inv_norm = 1.0 / np.maximum(np.sqrt(np.einsum("ij,ij->i", chunk, chunk)), EPS)
        dead = None
        if skip is not None and len(skip):
            lo, hi = np.searchsorted(skip, [start, stop])
            dead = skip[lo:hi] - start
        chunk_rows, chunk_scores = [], []
        for q0 in range(0, len(queries), query_chunk_size):
            s = queries[q0:q0 + query_chunk_size] @ chunk.T  # (q, chunk)
            if inv_norm is not None:
                s *= inv_norm
            np.nan_to_num(s, copy=False, nan=-np.inf)
            if dead is not None and len(dead):
                s[:, dead] = -np.inf
            pos = _chunk_best(s, k)
            chunk_rows.append(pos + start)
            chunk_scores.append(np.take_along_axis(s, pos, 1))
        rows, scores = merge_best(np.concatenate([rows, np.concatenate(chunk_rows)], 1),
                                  np.concatenate([scores, np.concatenate(chunk_scores)], 1), k)
    live = (scores > -np.inf).sum(axis=1)  # skipped rows fill the lists only when fewer than k live rows exist
    m = int(live.min()) if len(live) else 0
    rows, scores = rows[:, :m], scores[:, :m]
    return rows + offset, scores


def semantic_search(query_embeddings, corpus_embeddings, top_k: int = 10, corpus_chunk_size: int = 50_000,
                    query_chunk_size: int = 100, score: Score = "cosine") -> list[list[dict]]:
    """sentence-transformers' `util.semantic_search`, exact, on NumPy (or torch) arrays or a memory-mapped
    `Vectors`: one list per query of `{"corpus_id": int, "score": float}`, best first (ties: lower corpus_id
    first). `top_k` above the corpus size gives the whole corpus, ranked; an empty corpus gives empty lists."""
    k = check_top_k(top_k)
    rows, scores = exact_top_k(query_embeddings, corpus_embeddings, k, score=score,
                               corpus_chunk_size=corpus_chunk_size, query_chunk_size=query_chunk_size)
    return [[{"corpus_id": int(r), "score": float(s)} for r, s in zip(rr, ss)] for rr, ss in zip(rows, scores)]
