"""A vector index on disk: the vectors of one model, searched exactly or through an HNSW graph, grown by segments
and shrunk by tombstones.

    INDEX/
      index.json          the manifest (below); replaced atomically, and always last
      seg-<tag>/          one segment per `build`/`add` input: a copy of that vectors directory (meta.json,
                          vectors.npy, scales.npy for int8, ids.jsonl) + ids.offsets.npy (byte offset of each id)
      deleted-<tag>.npy   rows deleted so far (sorted int64), or none
      hnsw-<tag>.usearch  the HNSW graph over every live row (usearch; keys = row numbers), or none

    index.json  {"format": "bertkit-index", "version": 1, "model": {"path", "name", "fingerprint"},
                 "dimension": D, "normalized": bool, "score": "cosine" | "dot",
                 "segments": [{"dir", "count", "dtype", "normalized", "source"}], "count": rows, "live": rows,
                 "deleted": file | null, "hnsw": {"file", "connectivity", "expansion_add", "expansion_search",
                 "dtype"} | null}

Rows are numbered across segments in order; a search answers ids (the vectors directory's ids) and scores. Ids
need not be unique (the same file embedded twice, added twice): `delete(ids)` removes every row carrying one.
Crash safety: `build`, `add` and `delete` write every new file under a fresh name, then replace index.json, then
delete the files the new manifest no longer names. An interruption before the manifest is replaced leaves the old
index whole (its files are untouched), and the strays go at the next write. Writers take a lock (INDEX/.lock);
readers need none. A loaded Index memory-maps its files, so a writer replacing them does not disturb it (it keeps
answering from the old generation until loaded again).

Exact search scans the segments chunk by chunk (`bertkit.apps.search.exact_top_k`). The HNSW graph
(`pip install bertkit[ann]`: usearch, chosen because it is maintained, ships wheels, supports removal and a
memory-mapped `view`) holds unit vectors for "cosine" (inner product on them), raw ones for "dot"; its candidates
are re-scored from the stored vectors, so HNSW and exact give the same score for the same row. `add` and `delete`
with a graph load it into memory, change it and write a new one (a viewed graph cannot be changed).

Errors: `IndexFormatError` (a missing or damaged index, a vectors directory that does not fit it: other model,
other dimension, empty), `bertkit.apps.search.SearchError` (a bad query: top_k below 1 or above the live rows,
wrong dimension, a model that is not the index's). Both are ValueErrors naming the file or field.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import shutil
import sys
import uuid
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

from bertkit.apps.search import (EPS, SCORES, SearchError, as_matrix, check_top_k, exact_top_k, merge_best,
                                 normalize)
from bertkit.apps.vectors import IDS, META, SCALES, VECTORS, Vectors, VectorsError, open_vectors
from bertkit.io import OutputError, atomic_write_text, prepare_output_dir, read_json

FORMAT, VERSION = "bertkit-index", 1
MANIFEST, LOCK, OFFSETS = "index.json", ".lock", "ids.offsets.npy"
# HNSW defaults (benchmarks/index.py, recall@10 against exact search): 0.992 on 20 k real MiniLM vectors of held-out
# queries at ef_search 128 (0.978 at 64); on the 1 M set built from them by noisy copies, groups of ~50 near-ties,
# 0.889 at 128 and 0.975 at 512; with connectivity 32, ef_construction 256 it reaches 0.989 at ef_search 512 (p50
# 6.5 ms, exact 98 ms; a 2.6x longer build): the recipe for large sets of near-ties
CONNECTIVITY, EXPANSION_ADD, EXPANSION_SEARCH = 16, 128, 128
HNSW_DTYPES = ("f32", "f16", "i8")
BLOCK = 65_536  # rows per step when copying or adding to the graph


class IndexFormatError(ValueError):
    """An index that cannot be read or changed as asked; the message names the file or field."""


def _tag() -> str:
    return uuid.uuid4().hex[:10]


def _usearch():
    try:
        import usearch.index
    except ImportError:
        raise ImportError("the HNSW graph needs usearch: pip install 'bertkit[ann]' (or search with exact=True)") \
            from None
    return usearch.index


def _progress(total: int, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="vec", unit_scale=True, disable=not sys.stderr.isatty())


# ---- segments ------------------------------------------------------------------------------------------------------
class Segment:
    """One segment: its vectors (a `Vectors`, memory-mapped) and its ids, read one at a time through byte offsets
    (so loading a million-row index reads no ids)."""

    def __init__(self, directory: Path, entry: dict):
        self.directory, self.entry = directory, entry
        try:
            self.vectors: Vectors = open_vectors(directory)
            self.offsets = np.load(directory / OFFSETS, mmap_mode="r")
            self._ids = np.memmap(directory / IDS, dtype=np.uint8, mode="r")
        except (VectorsError, OSError, ValueError) as e:
            raise IndexFormatError(f"{directory}: segment unreadable ({e})") from None
        if len(self.vectors) != entry["count"] or len(self.offsets) != entry["count"] + 1:
            raise IndexFormatError(f"{directory}: {len(self.vectors)} rows and {len(self.offsets) - 1} ids; "
                                   f"{MANIFEST} says {entry['count']}")

    def __len__(self) -> int:
        return len(self.vectors)

    def id(self, row: int):
        return json.loads(bytes(self._ids[self.offsets[row]:self.offsets[row + 1]]))

    def iter_ids(self) -> Iterator:
        return self.vectors.iter_ids()


def _copy_segment(source: Vectors, target: Path) -> None:
    """A vectors directory copied as a segment, with the byte offset of every id line."""
    target.mkdir()
    for name in (META, VECTORS, SCALES, IDS):
        if (source.directory / name).exists():
            shutil.copyfile(source.directory / name, target / name)
    data = np.memmap(target / IDS, dtype=np.uint8, mode="r") if (target / IDS).stat().st_size else np.zeros(0)
    ends = np.flatnonzero(data == ord("\n"))[: len(source)] + 1
    if len(ends) < len(source):
        raise IndexFormatError(f"{source.directory / IDS}: {len(ends)} ids for {len(source)} rows")
    np.save(target / OFFSETS, np.concatenate([[0], ends]).astype(np.int64))


def _open_source(directory: str | Path) -> Vectors:
    try:
        vectors = open_vectors(directory)
    except VectorsError as e:
        raise IndexFormatError(str(e)) from None
    if len(vectors) == 0:
        raise IndexFormatError(f"{directory}: no vectors (count 0); nothing to index")
    return vectors


# ---- the index -----------------------------------------------------------------------------------------------------
class Index:
    """A loaded index (see the module docstring). `Index.load(dir)` is cheap: everything is memory-mapped."""

    def __init__(self, directory: Path, manifest: dict):
        self.directory, self.manifest = directory, manifest
        self.segments = [Segment(directory / s["dir"], s) for s in manifest["segments"]]
        self.starts = np.cumsum([0] + [len(s) for s in self.segments])  # first row of each segment, then the end
        self.deleted = np.zeros(0, dtype=np.int64)
        if manifest["deleted"]:
            try:
                self.deleted = np.load(directory / manifest["deleted"])
            except (OSError, ValueError) as e:
                raise IndexFormatError(f"{directory / manifest['deleted']}: unreadable ({e})") from None
        self.graph = None
        if manifest["hnsw"]:
            path = directory / manifest["hnsw"]["file"]
            if not path.is_file():
                raise IndexFormatError(f"{path}: missing ({MANIFEST} names it)")
            self.graph = _usearch().Index.restore(str(path), view=True)
            if self.graph is None:
                raise IndexFormatError(f"{path}: not a usearch index")
            self.graph.expansion_search = manifest["hnsw"]["expansion_search"]

    # ---- reading -------------------------------------------------------------------------------------------
    @classmethod
    def load(cls, directory: str | Path) -> Index:
        directory = Path(directory)
        return cls(directory, read_manifest(directory))

    def __len__(self) -> int:
        """Live rows (deleted ones left out)."""
        return self.manifest["live"]

    @property
    def model(self) -> dict:
        """The identity of the model whose vectors these are: path, name, fingerprint (and dimension)."""
        return {**self.manifest["model"], "dimension": self.dimension}

    @property
    def dimension(self) -> int:
        return self.manifest["dimension"]

    @property
    def score(self) -> str:
        return self.manifest["score"]

    @property
    def unit_rows(self) -> bool:
        """Every stored row is a float32 unit vector (cosine needs no norms; int8/float16 rows are near-unit)."""
        return all(_unit(s.vectors) for s in self.segments)

    @property
    def has_hnsw(self) -> bool:
        return self.graph is not None

    def check_model(self, model_dir: str | Path) -> None:
        """A SearchError unless `model_dir` is the model this index was built with (same fingerprint)."""
        from bertkit.apps.vectors import model_fingerprint

        fingerprint = model_fingerprint(model_dir)
        if fingerprint != self.manifest["model"].get("fingerprint"):
            raise SearchError(f"model {model_dir}: not the model of index {self.directory} (built with "
                              f"{self.manifest['model'].get('path')!r}, fingerprint "
                              f"{str(self.manifest['model'].get('fingerprint'))[:12]}; this one {fingerprint[:12]})")

    def _locate(self, rows: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.starts, rows, side="right") - 1

    def ids(self, rows: Iterable[int]) -> list:
        """The ids of these rows."""
        rows = np.asarray(list(rows), dtype=np.int64)
        return [self.segments[s].id(int(r - self.starts[s])) for s, r in zip(self._locate(rows), rows)]

    def rows(self, rows: np.ndarray) -> np.ndarray:
        """Float32 vectors of these rows (any order)."""
        out = np.empty((len(rows), self.dimension), dtype=np.float32)
        for i, (s, r) in enumerate(zip(self._locate(rows), rows)):
            local = int(r - self.starts[s])
            out[i] = self.segments[s].vectors.dequantize(local, local + 1)[0]
        return out

    def _queries(self, queries) -> np.ndarray:
        q = as_matrix(queries, "queries")
        if q.shape[1] != self.dimension:
            raise SearchError(f"queries: dimension {q.shape[1]}, the index holds {self.dimension}-d vectors")
        if not np.isfinite(q).all():
            raise SearchError("queries: not finite (NaN or infinity)")
        # a normalised corpus was made by a model + normalisation: its queries get the same (matters for "dot")
        return normalize(q) if self.manifest["normalized"] or self.score == "cosine" else q

    def search_rows(self, queries, top_k: int = 10, exact: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(rows, scores), each (queries, top_k), best first; ties by lower row. `exact`: None uses the HNSW graph
        when there is one, True scans every vector, False requires the graph."""
        k = check_top_k(top_k, len(self))
        q = self._queries(queries)
        if exact is False and self.graph is None:
            raise SearchError(f"{self.directory}: no HNSW graph (build the index with --hnsw); search exactly")
        if self.graph is None or exact:
            return self._exact(q, k)
        return self._hnsw(q, k)

    def _exact(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        rows, scores = np.zeros((len(q), 0), np.int64), np.zeros((len(q), 0), np.float32)
        for seg, start, stop in zip(self.segments, self.starts[:-1], self.starts[1:]):
            lo, hi = np.searchsorted(self.deleted, [start, stop])
            r, s = exact_top_k(q, seg.vectors, min(k, len(seg)), score=self.score,
                               corpus_normalized=_unit(seg.vectors), skip=self.deleted[lo:hi] - start,
                               offset=int(start))
            rows, scores = merge_best(np.concatenate([rows, r], 1), np.concatenate([scores, s], 1), k)
        return rows, scores

    def _hnsw(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        self.graph.expansion_search = max(self.manifest["hnsw"]["expansion_search"], k)
        found = self.graph.search(q, k)
        keys = np.asarray(found.keys).reshape(len(q), -1)  # one query gives usearch's Matches, several BatchMatches
        counts = np.asarray(found.counts).reshape(-1) if hasattr(found, "counts") else [len(found.keys)]
        rows, scores = np.empty((len(q), k), np.int64), np.empty((len(q), k), np.float32)
        for i in range(len(q)):
            cand = keys[i, :counts[i]].astype(np.int64)
            cand = cand[~np.isin(cand, self.deleted)]  # removed from the graph already; a second guard
            if len(cand) < k:  # a graph can come back short (few rows left, many deleted): scan instead
                rows[i], scores[i] = (a[0] for a in self._exact(q[i:i + 1], k))
                continue
            vectors = self.rows(cand)
            s = vectors @ q[i]  # re-scored from the stored vectors: the same scores as the exact path
            if self.score == "cosine" and not self.unit_rows:
                s /= np.maximum(np.linalg.norm(vectors, axis=1), EPS)
            order = np.lexsort((cand, -s))[:k]
            rows[i], scores[i] = cand[order], s[order]
        return rows, scores

    def search(self, queries, top_k: int = 10, exact: bool | None = None) -> list[list[dict]]:
        """One list per query of `{"id", "score", "rank"}` (rank from 1), best first. See `search_rows`."""
        rows, scores = self.search_rows(queries, top_k, exact)
        return [[{"id": i, "score": float(s), "rank": n} for n, (i, s) in enumerate(zip(self.ids(rr), ss), 1)]
                for rr, ss in zip(rows, scores)]

    # ---- writing -------------------------------------------------------------------------------------------
    @classmethod
    def build(cls, vectors: str | Path | Sequence[str | Path], out: str | Path, *, hnsw: bool = False,
              score: str = "cosine", connectivity: int = CONNECTIVITY, expansion_add: int = EXPANSION_ADD,
              expansion_search: int = EXPANSION_SEARCH, hnsw_dtype: str = "f32", overwrite: bool = False) -> Index:
        """A new index at `out` from one or more vectors directories (one segment each). A non-empty `out` is
        replaced only with `overwrite` (built beside it and swapped in when complete)."""
        sources = [vectors] if isinstance(vectors, (str, Path)) else list(vectors)
        if not sources:
            raise IndexFormatError("build: no vectors directory given")
        if score not in SCORES:
            raise IndexFormatError(f"score: must be one of {', '.join(SCORES)}, got {score!r}")
        if hnsw_dtype not in HNSW_DTYPES:
            raise IndexFormatError(f"hnsw_dtype: must be one of {', '.join(HNSW_DTYPES)}, got {hnsw_dtype!r}")
        for name, value in (("connectivity", connectivity), ("expansion_add", expansion_add),
                            ("expansion_search", expansion_search)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 2:
                raise IndexFormatError(f"{name}: must be a whole number >= 2, got {value!r}")
        opened = [_open_source(s) for s in sources]
        first = opened[0]
        for v in opened[1:]:
            _check_fits(first.meta["model"], first.dimension, v, f"build: {first.directory}")
        if hnsw:
            _usearch()  # missing usearch is said before any work
        target = prepare_output_dir(out, verb="index", inputs=sources, overwrite=overwrite, resumable=False)
        manifest = {"format": FORMAT, "version": VERSION, "model": dict(first.meta["model"]),
                    "dimension": first.dimension, "normalized": all(v.normalized for v in opened), "score": score,
                    "segments": [], "count": 0, "live": 0, "deleted": None, "hnsw": None}
        with target as work:
            work = Path(work)
            for v in opened:
                manifest["segments"].append(_new_segment(v, work))
            manifest["count"] = manifest["live"] = sum(len(v) for v in opened)
            if hnsw:
                graph = _usearch().Index(ndim=manifest["dimension"], metric="ip", dtype=hnsw_dtype,
                                         connectivity=connectivity, expansion_add=expansion_add,
                                         expansion_search=expansion_search)
                index = cls(work, manifest)
                _add_to_graph(graph, index, 0)
                manifest["hnsw"] = {"file": _save_graph(graph, work), "connectivity": connectivity,
                                    "expansion_add": expansion_add, "expansion_search": expansion_search,
                                    "dtype": hnsw_dtype}
            _write_manifest(work, manifest)
        return cls.load(out)

    def add(self, vectors: str | Path) -> int:
        """Append a vectors directory as a new segment (and to the graph); returns the rows added. The same
        model (fingerprint) and dimension as the index, else an IndexFormatError naming both."""
        source = _open_source(vectors)
        _check_fits(self.manifest["model"], self.dimension, source, f"index {self.directory}")
        with self._writing() as manifest:
            entry = _new_segment(source, self.directory)
            start = manifest["count"]
            manifest["segments"].append(entry)
            manifest["count"] += len(source)
            manifest["live"] += len(source)
            manifest["normalized"] = manifest["normalized"] and source.normalized
            if manifest["hnsw"]:
                grown = Index(self.directory, {**manifest, "hnsw": None})
                graph = _usearch().Index.restore(str(self.directory / manifest["hnsw"]["file"]))
                _add_to_graph(graph, grown, start)
                manifest["hnsw"] = {**manifest["hnsw"], "file": _save_graph(graph, self.directory)}
        return len(source)

    def delete(self, ids: Iterable) -> tuple[int, list]:
        """Tombstone every row whose id is one of `ids`; returns (rows deleted now, ids not found among the live
        rows). Deleting the last live row is refused (an index of nothing cannot answer a query)."""
        wanted = {json.dumps(i, sort_keys=True): i for i in ids}
        rows = []
        for seg, start in zip(self.segments, self.starts):
            rows += [int(start) + local for local, i in enumerate(seg.iter_ids())
                     if json.dumps(i, sort_keys=True) in wanted]
        rows = np.setdiff1d(np.asarray(rows, dtype=np.int64), self.deleted)
        seen = {json.dumps(i, sort_keys=True) for i in self.ids(rows)}
        missing = [v for k, v in wanted.items() if k not in seen]
        if len(rows) == 0:
            return 0, missing
        if len(rows) >= len(self):
            raise IndexFormatError(f"{self.directory}: deleting these ids would leave the index empty")
        with self._writing() as manifest:
            deleted = np.union1d(self.deleted, rows)
            name = f"deleted-{_tag()}.npy"
            np.save(self.directory / name, deleted)
            manifest["deleted"], manifest["live"] = name, manifest["count"] - len(deleted)
            if manifest["hnsw"]:
                graph = _usearch().Index.restore(str(self.directory / manifest["hnsw"]["file"]))
                graph.remove(rows.astype(np.uint64))
                manifest["hnsw"] = {**manifest["hnsw"], "file": _save_graph(graph, self.directory)}
        return len(rows), missing

    @contextlib.contextmanager
    def _writing(self) -> Iterator[dict]:
        """Lock the index, give a copy of the current manifest to change; write it (last) when the block succeeds,
        then reload this object and drop the files no manifest names."""
        with open(self.directory / LOCK, "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            current = read_manifest(self.directory)
            if current != self.manifest:
                raise IndexFormatError(f"{self.directory}: changed since it was loaded; load it again")
            manifest = json.loads(json.dumps(current))
            yield manifest
            _write_manifest(self.directory, manifest)
            self.__init__(self.directory, manifest)
            _collect(self.directory, manifest)


def search_texts(index: Index, model_dir: str | Path, texts: Sequence[str], top_k: int = 10,
                 exact: bool | None = None) -> list[list[dict]]:
    """Encode `texts` with the index's own model (checked by fingerprint first) and search: one list per text."""
    from bertkit.apps.sentence import SentenceModel

    if not texts:
        raise SearchError("queries: none given")
    check_top_k(top_k, len(index))  # before the model loads
    index.check_model(model_dir)
    return index.search(SentenceModel.from_pretrained(model_dir).encode(list(texts)), top_k, exact)


# ---- helpers -------------------------------------------------------------------------------------------------------
def _unit(v: Vectors) -> bool:
    return v.normalized and v.meta["dtype"] == "float32"


def _check_fits(model: dict, dimension: int, v: Vectors, against: str) -> None:
    if v.dimension != dimension:
        raise IndexFormatError(f"{v.directory}: {v.dimension}-d vectors; {against} holds {dimension}-d ones")
    theirs = v.meta["model"].get("fingerprint")
    if theirs != model.get("fingerprint"):
        raise IndexFormatError(f"{v.directory}: vectors of model {v.meta['model'].get('path')!r} (fingerprint "
                               f"{str(theirs)[:12]}); {against} holds vectors of {model.get('path')!r} "
                               f"(fingerprint {str(model.get('fingerprint'))[:12]})")


def _new_segment(source: Vectors, directory: Path) -> dict:
    name = f"seg-{_tag()}"
    _copy_segment(source, directory / name)
    return {"dir": name, "count": len(source), "dtype": source.meta["dtype"], "normalized": source.normalized,
            "source": str(source.directory)}


def _add_to_graph(graph, index: Index, start: int) -> None:
    """Rows `start:` of `index` into the graph (unit vectors for "cosine"), a block at a time."""
    total = int(index.starts[-1])
    with _progress(total - start, "hnsw") as bar:
        for row in range(start, total, BLOCK):
            stop = min(row + BLOCK, total)
            block = np.concatenate([seg.vectors.dequantize(int(np.clip(row - s0, 0, len(seg))),
                                                           int(np.clip(stop - s0, 0, len(seg))))
                                    for seg, s0 in zip(index.segments, index.starts[:-1])])
            if index.manifest["score"] == "cosine":
                block = normalize(block)
            graph.add(np.arange(row, stop, dtype=np.uint64), block)
            bar.update(stop - row)


def _save_graph(graph, directory: Path) -> str:
    name = f"hnsw-{_tag()}.usearch"
    graph.save(str(directory / name))
    return name


def _write_manifest(directory: Path, manifest: dict) -> None:
    atomic_write_text(directory / MANIFEST, json.dumps(manifest, indent=1, ensure_ascii=False) + "\n")


def _collect(directory: Path, manifest: dict) -> None:
    """Delete what the manifest does not name: the previous generation's files and the strays of a write that
    was interrupted."""
    keep = {MANIFEST, LOCK, *(s["dir"] for s in manifest["segments"]), manifest["deleted"],
            (manifest["hnsw"] or {}).get("file")}
    for entry in directory.iterdir():
        if entry.name in keep or not (entry.name.startswith(("seg-", "deleted-", "hnsw-", f".{MANIFEST}."))):
            continue
        if entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


def read_manifest(directory: str | Path) -> dict:
    """index.json, checked; an IndexFormatError naming the file and field otherwise."""
    directory = Path(directory)
    path = directory / MANIFEST
    if not directory.is_dir():
        raise IndexFormatError(f"{directory}: no such index directory")
    if not path.is_file():
        raise IndexFormatError(f"{directory}: not an index ({MANIFEST} missing); make one with bertkit index build")
    try:
        manifest = read_json(path, MANIFEST)
    except ValueError as e:
        raise IndexFormatError(str(e)) from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise IndexFormatError(f"{path}: not a bertkit index (format "
                               f"{manifest.get('format') if isinstance(manifest, dict) else None!r})")
    if manifest.get("version") != VERSION:
        raise IndexFormatError(f"{path}: version {manifest.get('version')!r}; this bertkit reads version {VERSION}")
    for key, kind in (("model", dict), ("dimension", int), ("normalized", bool), ("score", str), ("segments", list),
                      ("count", int), ("live", int)):
        if not isinstance(manifest.get(key), kind):
            raise IndexFormatError(f"{path}: field '{key}' missing or not {kind.__name__}")
    if manifest["score"] not in SCORES:
        raise IndexFormatError(f"{path}: score {manifest['score']!r}: expected one of {', '.join(SCORES)}")
    for n, seg in enumerate(manifest["segments"]):
        if not isinstance(seg, dict) or not isinstance(seg.get("dir"), str) or not isinstance(seg.get("count"), int):
            raise IndexFormatError(f"{path}: segments[{n}]: needs 'dir' and 'count'")
    if sum(s["count"] for s in manifest["segments"]) != manifest["count"]:
        raise IndexFormatError(f"{path}: count {manifest['count']} is not the sum of the segments' counts")
    if not isinstance(manifest.get("deleted"), (str, type(None))):
        raise IndexFormatError(f"{path}: field 'deleted' must be a file name or null")
    hnsw = manifest.get("hnsw")
    if hnsw is not None and not (isinstance(hnsw, dict) and isinstance(hnsw.get("file"), str)
                                 and isinstance(hnsw.get("expansion_search"), int)):
        raise IndexFormatError(f"{path}: field 'hnsw' must be null or name its 'file' and 'expansion_search'")
    return manifest


__all__ = ["CONNECTIVITY", "EXPANSION_ADD", "EXPANSION_SEARCH", "Index", "IndexFormatError", "OutputError",
           "SearchError", "read_manifest", "search_texts"]
