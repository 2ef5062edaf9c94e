"""A vectors directory: the sentence vectors of a corpus on disk, written by `bertkit embed` and read by whatever
searches, clusters or deduplicates them (they read through `open_vectors`, never the files directly).

    meta.json    {"format": "bertkit-vectors", "version": 1, "count": N, "dimension": D,
                  "dtype": "float32" | "float16" | "int8", "normalized": bool,
                  "model": {"path", "name", "fingerprint"}, "complete": bool, ...the writer's own fields}
    vectors.npy  (N, D) in NumPy's .npy format: np.load(..., mmap_mode="r") works
    scales.npy   (N,) float32, int8 only: row i is vectors[i] * scales[i]
    ids.jsonl    one JSON value per line: the id of row i

int8 is symmetric and per row: scale = max|x| / 127, q = round(x / scale). Each component is then off by at most
scale / 2, so for a unit vector of D components the relative error is at most sqrt(D) / 254 and in practice about
sqrt(D / 12) / 127 times the largest component (a cosine above 0.999 with the float32 vector for MiniLM's 384-d
vectors on real text: `tests/test_embed.py`).

Writing is append-only and crash-safe (`VectorsWriter`): rows are appended to vectors.npy (and scales.npy) and
ids to ids.jsonl; `commit()` flushes them to disk, then rewrites the .npy headers with the rows so far and
meta.json (atomically) with `count`. A crash loses at most the rows since the last commit; reopening with
`resume=True` cuts the files back to the last committed `count` and goes on from there. Until the writer finishes,
meta.json says `"complete": false` and `open_vectors` refuses the directory unless asked for the partial rows.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from bertkit.io import atomic_write_text, read_json

FORMAT, VERSION = "bertkit-vectors", 1
DTYPES = ("float32", "float16", "int8")
META, VECTORS, SCALES, IDS = "meta.json", "vectors.npy", "scales.npy", "ids.jsonl"
# an .npy header with room for any row count: rewritten in place as rows are added (numpy reads the padding)
HEADER_BYTES = 128


class VectorsError(ValueError):
    """A vectors directory that cannot be read (or continued); the message names the file and what is wrong."""


# ---- the model -----------------------------------------------------------------------------------------------------
def model_fingerprint(model_dir: str | Path) -> str:
    """sha256 over every file of a model directory (relative path, size, content), hidden files and folders left
    out: two directories give the same fingerprint exactly when they hold the same files."""
    root = Path(model_dir)
    if not root.is_dir():
        raise VectorsError(f"{root}: not a model directory")
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root)
        if any(part.startswith(".") for part in rel.parts):
            continue
        digest.update(f"{rel.as_posix()}\0{path.stat().st_size}\0".encode())
        with open(path, "rb") as f:
            while block := f.read(1 << 22):
                digest.update(block)
    return digest.hexdigest()


# ---- int8 ------------------------------------------------------------------------------------------------------------
def quantize_rows(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n, D) float -> (n, D) int8 and (n,) float32 scales, symmetric per row: rows ~= q * scales[:, None]. A zero
    row gets scale 0 (and zeros)."""
    rows = np.asarray(rows, dtype=np.float32)
    scales = np.abs(rows).max(axis=1) / 127.0 if rows.size else np.zeros(len(rows), np.float32)
    safe = np.where(scales > 0, scales, 1.0)[:, None]
    q = np.clip(np.rint(rows / safe), -127, 127).astype(np.int8)
    return q, scales.astype(np.float32)


# ---- .npy headers --------------------------------------------------------------------------------------------------
def _header(shape: tuple[int, ...], dtype: str) -> bytes:
    """A version 1.0 .npy header of exactly HEADER_BYTES bytes (numpy pads its own to a multiple of 64 too)."""
    body = repr({"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False,
                 "shape": shape}).encode("latin1")
    room = HEADER_BYTES - 10 - 1  # magic (6) + version (2) + length (2); the text ends with "\n"
    if len(body) > room:
        raise VectorsError(f"shape {shape}: too large for the .npy header")
    text = body + b" " * (room - len(body)) + b"\n"
    return b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text


@dataclass
class _Column:
    """One appended .npy file: `row_shape` and dtype; rows are raw bytes after the fixed header."""
    path: Path
    row_shape: tuple[int, ...]
    dtype: str

    @property
    def row_bytes(self) -> int:
        return int(np.prod(self.row_shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize

    def open(self, rows: int, fresh: bool):
        """The file opened for appending after `rows` rows (anything beyond them is cut off)."""
        f = open(self.path, "w+b" if fresh else "r+b")  # noqa: SIM115 (held by the writer until close)
        if fresh:
            f.write(_header((0, *self.row_shape), self.dtype))
        f.truncate(HEADER_BYTES + rows * self.row_bytes)
        f.seek(0, os.SEEK_END)
        return f


# ---- writing -------------------------------------------------------------------------------------------------------
class VectorsWriter:
    """Appends rows to a vectors directory; see the module docstring for the crash-safety contract.

    `extra` is merged into meta.json (the job's own record, e.g. its inputs and settings, for a later resume to
    compare). `resume=True` continues a directory left incomplete: `count` says how many rows it already holds;
    `meta` is what it recorded (compare before appending)."""

    def __init__(self, directory: str | Path, dimension: int, dtype: str = "float32", normalized: bool = False,
                 model: dict | None = None, extra: dict | None = None, resume: bool = False):
        if dtype not in DTYPES:
            raise ValueError(f"dtype '{dtype}': choose one of {', '.join(DTYPES)}")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.dtype = dtype
        self.columns = [_Column(self.directory / VECTORS, (dimension,), dtype)]
        if dtype == "int8":
            self.columns.append(_Column(self.directory / SCALES, (), "float32"))
        self.meta = {"format": FORMAT, "version": VERSION, "count": 0, "dimension": int(dimension), "dtype": dtype,
                     "normalized": bool(normalized), "model": model or {}, "complete": False, **(extra or {})}
        self.count = 0
        ids_path = self.directory / IDS
        if resume:
            before = read_meta(self.directory)
            if before.get("complete"):
                raise VectorsError(f"{self.directory / META}: already complete; nothing to resume")
            for key in ("dimension", "dtype"):
                if before.get(key) != self.meta[key]:
                    raise VectorsError(f"{self.directory / META}: {key} {before.get(key)!r}, this run "
                                       f"{self.meta[key]!r}")
            self.count = int(before["count"])
            self.meta = {**self.meta, "count": self.count}
            self.resumed_meta = before
            self._ids = open(ids_path, "r+b")  # noqa: SIM115 (held by the writer until close)
            self._cut_ids(self.count)
        else:
            self.resumed_meta = None
            self._ids = open(ids_path, "w+b")  # noqa: SIM115
        self._files = [c.open(self.count, fresh=not resume) for c in self.columns]
        self.commit()

    def _cut_ids(self, rows: int) -> None:
        """Keep the first `rows` lines of ids.jsonl (a crash may have left more, or half a line)."""
        self._ids.seek(0)
        for n in range(rows):
            line = self._ids.readline()
            if not line.endswith(b"\n"):
                raise VectorsError(f"{self.directory / IDS}: {n} ids for {rows} committed rows; the directory is "
                                   f"damaged, start again with --overwrite")
        self._ids.truncate(self._ids.tell())

    def append(self, vectors: np.ndarray, ids: Sequence) -> None:
        """Add rows (float vectors, converted to this directory's dtype) and their ids (JSON values)."""
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.meta["dimension"] or len(vectors) != len(ids):
            raise ValueError(f"append: {vectors.shape} vectors and {len(ids)} ids for dimension "
                             f"{self.meta['dimension']}")
        if self.dtype == "int8":
            q, scales = quantize_rows(vectors)
            parts = [q, scales]
        else:
            parts = [vectors.astype(self.dtype)]
        for f, part in zip(self._files, parts):
            f.write(np.ascontiguousarray(part).tobytes())
        self._ids.write("".join(json.dumps(i, ensure_ascii=False) + "\n" for i in ids).encode("utf-8"))
        self.count += len(vectors)

    def commit(self, **fields) -> None:
        """Make the rows so far durable: data first, then the headers and meta.json that point at it."""
        for f in [*self._files, self._ids]:
            f.flush()
            os.fsync(f.fileno())
        for f, column in zip(self._files, self.columns):
            f.seek(0)
            f.write(_header((self.count, *column.row_shape), column.dtype))
            f.seek(0, os.SEEK_END)
            f.flush()
            os.fsync(f.fileno())
        self.meta.update(fields, count=self.count)
        atomic_write_text(self.directory / META, json.dumps(self.meta, indent=1, ensure_ascii=False) + "\n")

    def finish(self, **fields) -> None:
        """Commit and mark the directory complete."""
        self.commit(complete=True, **fields)
        self.close()

    def close(self) -> None:
        for f in [*self._files, self._ids]:
            f.close()


# ---- reading -------------------------------------------------------------------------------------------------------
def read_meta(directory: str | Path) -> dict:
    path = Path(directory) / META
    if not path.exists():
        raise VectorsError(f"{directory}: not a vectors directory ({META} missing); write one with bertkit embed")
    try:
        meta = read_json(path, "meta.json")
    except ValueError as e:
        raise VectorsError(str(e)) from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise VectorsError(f"{path}: not a bertkit vectors directory (format {meta.get('format') if isinstance(meta, dict) else None!r})")
    if meta.get("version") != VERSION:
        raise VectorsError(f"{path}: version {meta.get('version')!r}; this bertkit reads version {VERSION}")
    for key, kind in (("count", int), ("dimension", int), ("dtype", str), ("normalized", bool)):
        if not isinstance(meta.get(key), kind):
            raise VectorsError(f"{path}: field '{key}' missing or not {kind.__name__}")
    if meta["dtype"] not in DTYPES:
        raise VectorsError(f"{path}: dtype '{meta['dtype']}': expected one of {', '.join(DTYPES)}")
    return meta


class Vectors:
    """A vectors directory opened for reading: `array` (a read-only memmap of the stored dtype), `scales` (int8
    only), `ids` (a list, read on first use), `meta`; `dequantize(start, stop)` gives float32 rows of any dtype."""

    def __init__(self, directory: Path, meta: dict, array: np.ndarray, scales: np.ndarray | None):
        self.directory, self.meta, self.array, self.scales = directory, meta, array, scales

    def __len__(self) -> int:
        return self.meta["count"]

    @property
    def dimension(self) -> int:
        return self.meta["dimension"]

    @property
    def normalized(self) -> bool:
        return self.meta["normalized"]

    def dequantize(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Rows start:stop as float32 (int8 rows times their scales)."""
        rows = np.asarray(self.array[start:stop], dtype=np.float32)
        if self.scales is not None:
            rows *= np.asarray(self.scales[start:stop], dtype=np.float32)[:, None]
        return rows

    def blocks(self, size: int = 65536) -> Iterator[tuple[int, np.ndarray]]:
        """(start, float32 rows) over the whole array, `size` rows at a time (bounded memory)."""
        for start in range(0, len(self), size):
            yield start, self.dequantize(start, start + size)

    def iter_ids(self) -> Iterator:
        path = self.directory / IDS
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if n > len(self):
                    return
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as e:
                    raise VectorsError(f"{path}: line {n}: not JSON ({e.msg})") from None

    @cached_property
    def ids(self) -> list:
        ids = list(self.iter_ids())
        if len(ids) != len(self):
            raise VectorsError(f"{self.directory / IDS}: {len(ids)} ids for {len(self)} rows")
        return ids


def open_vectors(directory: str | Path, allow_incomplete: bool = False) -> Vectors:
    """Open a vectors directory. An incomplete one (a job still running, or stopped before the end: resume it with
    `bertkit embed --resume`) is refused unless `allow_incomplete`, which gives the rows committed so far."""
    directory = Path(directory)
    meta = read_meta(directory)
    if not meta.get("complete") and not allow_incomplete:
        raise VectorsError(f"{directory}: incomplete ({meta['count']} rows so far); finish it with bertkit embed "
                           f"--resume")
    n, d = meta["count"], meta["dimension"]

    def load(name: str, shape: tuple[int, ...], dtype: str) -> np.ndarray:
        path = directory / name
        try:
            array = np.load(path, mmap_mode="r")
        except (OSError, ValueError) as e:
            raise VectorsError(f"{path}: cannot read ({e})") from None
        if array.shape[0] < n or array.shape[1:] != shape[1:] or array.dtype != np.dtype(dtype):
            raise VectorsError(f"{path}: {array.shape} {array.dtype}; {META} says {shape} {dtype}")
        return array[:n]

    array = load(VECTORS, (n, d), meta["dtype"])
    scales = load(SCALES, (n,), "float32") if meta["dtype"] == "int8" else None
    return Vectors(directory, meta, array, scales)


__all__ = ["DTYPES", "FORMAT", "VERSION", "Vectors", "VectorsError", "VectorsWriter", "model_fingerprint",
           "open_vectors", "quantize_rows", "read_meta"]
