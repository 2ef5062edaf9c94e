"""`bertkit embed`: a corpus of any size to a vectors directory (`bertkit.apps.vectors`), streamed and resumable.

    from bertkit.apps.embed import embed_corpus
    vectors = embed_corpus("all-MiniLM-L6-v2/", ["news.jsonl"], "news.vectors", dtype="int8")
    vectors.array.shape, vectors.ids[:3]

Inputs: `.txt` (one text per line; the id of line n of `a.txt` is "a.txt:n", the path as given), `.jsonl` (one
object per line: the text in `text_field`, the id in `id_field`, else "file:line"), `.csv` (a header row naming the
columns; the same two fields). Every text must be non-empty; a bad line is an `InputError` naming the file and line.

How it runs:
1. A first pass reads every input through the same reader the job uses: it validates every line (so a bad line
   900,000 is reported in seconds, before any vector is computed), counts the rows, hashes the files, and notes
   where each chunk of `chunk_size` rows starts (file, byte offset, line). Memory holds one line at a time.
2. The model is the directory's own: `Predictor.from_pretrained` takes a sentence-transformers directory's
   Pooling, Dense, Normalize, window and lower-casing, on the torch or ONNX Runtime backend, fp32 or int8.
3. Chunk by chunk: the chunk's texts are read (seeking to its start), embedded (the Predictor sorts them by length
   and pads each batch only to its longest text), appended to the directory and committed (`VectorsWriter`).
   A crash loses at most the chunk in flight; `resume=True` checks that the model (its fingerprint), the inputs
   (their sha256), the fields, the dtype, the normalisation, the backend and the chunk size are those of the
   interrupted run, refusing with what changed, and goes on from the first chunk not committed. The chunks are
   the same whoever computes them, so a resumed run, or one on Ray (`ray_address`, `bertkit.apps.embed_ray`),
   gives the same vectors as one uninterrupted run.
"""

from __future__ import annotations

import csv
import hashlib
import json
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bertkit.apps.vectors import DTYPES, Vectors, VectorsWriter, model_fingerprint, open_vectors, read_meta
from bertkit.infer.batchio import (MAX_CHARS, READ_BYTES, InputError, InputLine, _read_long_line, bulk_job,
                                  check_batching, fit)
from bertkit.io import OutputError, prepare_output_dir

KINDS = {".txt": "txt", ".jsonl": "jsonl", ".csv": "csv"}
BATCH_SIZE, MAX_TOKENS = 256, 8192  # rows per batch at most; tokens per batch (`PredictorSettings.max_tokens`)
CHUNK_SIZE = 4096  # rows embedded and committed at a time: the most a crash can lose, and the span sorted by length


@dataclass
class Source:
    """One input file: its kind, rows and sha256 (after the first pass) and, for csv, its header."""
    path: str
    kind: str
    rows: int = 0
    sha256: str = ""
    header: list[str] | None = None


@dataclass
class Job:
    """What a run computes, recorded in meta.json (`job`) so that a resume can check it is the same work.
    `chunks[k]` is where chunk k's rows are: segments (source index, byte offset, lines before it, rows)."""
    sources: list[Source]
    text_field: str = "text"
    id_field: str | None = None
    chunk_size: int = CHUNK_SIZE
    max_tokens: int = 0  # the token budget per batch it ran with (`PredictorSettings.max_tokens`)
    chunks: list[list[tuple[int, int, int, int]]] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return sum(s.rows for s in self.sources)

    def record(self) -> dict:
        return {"inputs": [{"path": s.path, "rows": s.rows, "sha256": s.sha256} for s in self.sources],
                "text_field": self.text_field, "id_field": self.id_field, "chunk_size": self.chunk_size,
                "max_tokens": self.max_tokens}


# ---- reading -------------------------------------------------------------------------------------------------------
def source_of(path: str | Path) -> Source:
    path = str(path)
    kind = KINDS.get(Path(path).suffix.lower())
    if kind is None:
        raise InputError(f"{path}: unknown extension '{Path(path).suffix}': give .txt (one text per line), .jsonl "
                         f"(a text field per line) or .csv (a header row and a text column)")
    if not Path(path).is_file():
        raise InputError(f"{path}: file not found")
    return Source(path, kind)


class _Reader:
    """The records (id, text) of one input from a byte offset, with `lineno` (lines read so far) and `offset()`
    (where the next record starts) between records. A line is read in pieces, and a field kept to MAX_CHARS
    characters, so no line sits in memory whole."""

    def __init__(self, source: Source, job: Job, f, lineno: int = 0):
        self.source, self.job, self.f, self.lineno = source, job, f, lineno

    def offset(self) -> int:
        return self.f.tell()

    def _lines(self) -> Iterator[InputLine]:
        path = self.source.path
        while raw := self.f.readline(READ_BYTES):
            self.lineno += 1
            if raw.endswith(b"\n") or len(raw) < READ_BYTES:
                try:
                    line = raw.decode("utf-8").rstrip("\r\n")
                except UnicodeDecodeError as e:
                    raise InputError(f"{path}: line {self.lineno}: not valid UTF-8 (byte {e.start})") from None
                text, size = line[:MAX_CHARS], len(line)
            else:
                fields, sizes = _read_long_line(self.f, raw, False, MAX_CHARS, f"{path}: line {self.lineno}")
                text, size = fields[0], sizes[0]
            yield InputLine(self.lineno, text, None, (size > MAX_CHARS, False))

    def _whole(self, line: InputLine) -> str:
        if line.cut[0]:
            raise InputError(f"{self.source.path}: line {line.lineno}: longer than {MAX_CHARS:,} characters; a "
                             f"{self.source.kind} line is read whole: split it or shorten its text")
        return line.text

    def _check(self, lineno: int, text: object, where: str) -> str:
        if not isinstance(text, str):
            raise InputError(f"{self.source.path}: line {lineno}: {where} is {type(text).__name__}, not a string")
        if not text.strip():
            raise InputError(f"{self.source.path}: line {lineno}: empty text{' in ' + where if where else ''}; "
                             f"remove the line or give it a text")
        return text

    def records(self) -> Iterator[tuple[object, str, InputLine]]:
        """(id, text, the line it came from); the text may be cut at MAX_CHARS (`line.cut`) for .txt only."""
        path, job = self.source.path, self.job
        if self.source.kind == "txt":
            for line in self._lines():
                yield f"{path}:{line.lineno}", self._check(line.lineno, line.text, ""), line
        elif self.source.kind == "jsonl":
            for line in self._lines():
                try:
                    item = json.loads(self._whole(line))
                except json.JSONDecodeError as e:
                    raise InputError(f"{path}: line {line.lineno}: not JSON ({e.msg})") from None
                if not isinstance(item, dict):
                    raise InputError(f"{path}: line {line.lineno}: expected a JSON object with a "
                                     f"'{job.text_field}' field, found {type(item).__name__}")
                yield self._fields(item, line), self._check(line.lineno, item.get(job.text_field),
                                                             f"field '{job.text_field}'"), line
        else:
            yield from self._csv()

    def _fields(self, item: dict, line: InputLine):
        """The id of a JSON object or csv row (a dict); checks that the text field is there."""
        path, job = self.source.path, self.job
        if job.text_field not in item:
            raise InputError(f"{path}: line {line.lineno}: no field '{job.text_field}' (the text; --text-field "
                             f"names another)")
        if job.id_field is None:
            return f"{path}:{line.lineno}"
        if job.id_field not in item:
            raise InputError(f"{path}: line {line.lineno}: no field '{job.id_field}' (the id; --id-field)")
        return item[job.id_field]

    def _csv(self) -> Iterator[tuple[object, str, InputLine]]:
        path, job = self.source.path, self.job
        lines = self._lines()
        # csv reads one physical line at a time and no further than the row it returns, so offset() stays exact
        rows = csv.reader(self._whole(line) + "\n" for line in lines)
        if self.offset() == 0:  # the file's start: the header row first
            header = next(rows, None)
            if header is None:
                return
            for name in (job.text_field, job.id_field):
                if name is not None and name not in header:
                    raise InputError(f"{path}: line 1: the header has no column '{name}' (columns: "
                                     f"{', '.join(header)})")
            self.source.header = header
        header = self.source.header
        while True:
            first = self.lineno + 1
            try:
                row = next(rows, None)
            except csv.Error as e:
                raise InputError(f"{path}: line {self.lineno}: malformed csv ({e})") from None
            if row is None:
                return
            line = InputLine(first, "", None, (False, False))
            if len(row) != len(header):
                raise InputError(f"{path}: line {first}: {len(row)} fields, the header has {len(header)}")
            item = dict(zip(header, row))
            yield self._fields(item, line), self._check(first, item[job.text_field], f"column '{job.text_field}'"), \
                line


def _digest(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


def scan(inputs: Sequence[str | Path], text_field: str = "text", id_field: str | None = None,
         chunk_size: int = CHUNK_SIZE) -> Job:
    """The first pass: every input validated, counted and hashed, and where each chunk starts. An empty corpus is
    an InputError."""
    if chunk_size < 1:
        raise InputError(f"--chunk-size {chunk_size}: must be at least 1")
    if not inputs:
        raise InputError("no input files")
    job = Job([source_of(p) for p in inputs], text_field, id_field, chunk_size)
    filled = chunk_size  # rows in the last chunk
    for n, source in enumerate(job.sources):
        with open(source.path, "rb") as f:
            reader = _Reader(source, job, f)
            start = (reader.offset(), reader.lineno)
            for _ in reader.records():
                if filled == chunk_size:
                    job.chunks.append([])
                    filled = 0
                chunk = job.chunks[-1]
                if not chunk or chunk[-1][0] != n:
                    chunk.append((n, *start, 0))
                chunk[-1] = (*chunk[-1][:3], chunk[-1][3] + 1)
                filled += 1
                source.rows += 1
                start = (reader.offset(), reader.lineno)
        source.sha256 = _digest(source.path)
    if not job.rows:
        raise InputError(f"{', '.join(s.path for s in job.sources)}: no texts to embed (empty input)")
    return job


def read_chunk(job: Job, k: int, tok=None, max_length: int | None = None) -> tuple[list, list[str]]:
    """Chunk k's ids and texts. With a tokenizer, a text longer than the model reads is cut to a prefix that
    provably gives the tokens it sees (`batchio.fit`), and a .txt line cut at MAX_CHARS is refused unless that
    prefix lies within it."""
    ids, texts = [], []
    for n, offset, lineno, rows in job.chunks[k]:
        source = job.sources[n]
        with open(source.path, "rb") as f:
            f.seek(offset)
            reader = _Reader(source, job, f, lineno)
            for _, (id_, text, line) in zip(range(rows), reader.records()):
                if tok is not None:
                    text, _ = fit(line._replace(text=text), source.path, tok, max_length,
                                  "embed reads every token")
                ids.append(id_)
                texts.append(text)
    return ids, texts


# ---- the job -------------------------------------------------------------------------------------------------------
def predictor_settings(batch_size: int, max_tokens: int, backend: str, int8: bool, threads: int, bf16: bool = False):
    from bertkit.infer.predictor import BACKENDS, PredictorSettings

    check_batching(batch_size, max_tokens)
    if backend not in BACKENDS:
        raise InputError(f"--backend {backend}: choose one of {', '.join(BACKENDS)}")
    return PredictorSettings(batch_size=batch_size, max_tokens=max_tokens, backend=backend, int8=int8,
                             threads=threads, bf16=bf16)


def load_predictor(model_dir: str | Path, settings):
    from bertkit.infer.predictor import Predictor

    return Predictor.from_pretrained(model_dir, settings)


def embed_chunk(predictor, job: Job, k: int, normalize: bool) -> tuple[list, np.ndarray]:
    """Chunk k's ids and float32 vectors: what every way of running the job computes for it."""
    ids, texts = read_chunk(job, k, predictor.tok, predictor.max_length)
    return ids, predictor.embed(texts, normalize=normalize)


def _changed(before: dict, now: dict) -> list[str]:
    """What differs between the recorded run and this one, in words."""
    out = []
    if before.get("model", {}).get("fingerprint") != now["model"]["fingerprint"]:
        out.append(f"the model ({before.get('model', {}).get('path')} -> {now['model']['path']}: its files differ)")
    old_job, new_job = before.get("job", {}), now["job"]
    old_inputs, new_inputs = old_job.get("inputs", []), new_job["inputs"]
    if [i.get("path") for i in old_inputs] != [i["path"] for i in new_inputs]:
        out.append(f"the inputs ({', '.join(i.get('path', '?') for i in old_inputs)} -> "
                   f"{', '.join(i['path'] for i in new_inputs)})")
    else:
        out += [f"the content of {a['path']}" for a, b in zip(old_inputs, new_inputs) if a.get("sha256") != b["sha256"]]
    for key in ("text_field", "id_field", "chunk_size"):
        if old_job.get(key) != new_job[key]:
            out.append(f"{key} ({old_job.get(key)!r} -> {new_job[key]!r})")
    def settings(meta: dict) -> dict:
        return {"dtype": meta.get("dtype"), "normalize": meta.get("normalize"), **meta.get("run", {})}

    old, new = settings(before), settings(now)
    out += [f"{key} ({old.get(key)!r} -> {value!r})" for key, value in new.items() if old.get(key) != value]
    return out


def embed_corpus(model_dir: str | Path, inputs: Sequence[str | Path], output: str | Path, *,
                 text_field: str = "text", id_field: str | None = None, dtype: str = "float32",
                 batch_size: int = BATCH_SIZE, max_tokens: int = MAX_TOKENS, chunk_size: int | None = None,
                 backend: str = "auto", int8: bool = False, bf16: bool = False, threads: int = 0,
                 normalize: bool = False, resume: bool = False, overwrite: bool = False, runner=None, progress: bool | None = None) -> Vectors:
    """Embed every text of `inputs` with the model in `model_dir` into the vectors directory `output`, and open it.

    dtype: float32, float16 or int8 (per-row symmetric scale); normalize: L2-normalise (a model that ends in
    Normalize is normalised anyway; meta.json `normalized` says which). max_tokens: tokens per batch (rows x the
    longest, padding included; 0: batches of batch_size rows), batch_size: rows per batch at most. threads /
    backend / int8 / bf16: the Predictor's. chunk_size (default CHUNK_SIZE, or the interrupted run's on resume): rows per
    commit. resume: continue an interrupted run in `output`; overwrite: replace an existing `output` (built aside,
    swapped in at the end). runner: what computes the chunks, `runner(predictor, model_dir, job, first, normalize)`
    -> (ids, vectors) of chunks first.. in order (default `local_chunks`; Ray Data: `bertkit.apps.embed_ray`).
    progress: a progress bar (default: when stderr is a terminal)."""
    if dtype not in DTYPES:
        raise InputError(f"--dtype {dtype}: choose one of {', '.join(DTYPES)}")
    settings = predictor_settings(batch_size, max_tokens, backend, int8, threads, bf16)
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise InputError(f"{model_dir}: model directory not found")
    out = prepare_output_dir(output, verb="embed", inputs=[model_dir, *inputs], resume=resume, overwrite=overwrite)
    before = None
    if out.resuming:
        try:
            before = read_meta(out.path)
        except ValueError:
            before = None  # stopped before its first commit: start again in place
        if before is not None and before.get("complete"):
            raise OutputError(f"{output}: --resume: already complete ({before['count']} rows); give --overwrite to "
                              f"compute it again")
        if chunk_size is None and before is not None:
            chunk_size = before.get("job", {}).get("chunk_size")
    job = scan(inputs, text_field, id_field, chunk_size or CHUNK_SIZE)
    job.max_tokens = max_tokens
    predictor = load_predictor(model_dir, settings)
    pooling = predictor.pooling
    dimension = getattr(pooling, "output_dim", None) or predictor.config.hidden_size
    normalized = bool(normalize or getattr(pooling, "normalizes", False))
    meta = {"model": {"path": str(model_dir), "name": "/".join(model_dir.resolve().parts[-2:]),
                      "fingerprint": model_fingerprint(model_dir)},
            "dtype": dtype, "normalize": normalize,
            "run": {"backend": predictor.settings.backend, "int8": int8, "max_length": predictor.max_length,
                    **({"bf16": True} if bf16 else {})},  # (absent when off: older runs still resume)
            "job": job.record()}
    if before is not None:
        changed = _changed(before, meta)
        if changed:
            raise OutputError(f"{output}: --resume: this run differs from the interrupted one in "
                              f"{'; '.join(changed)}; give --overwrite to start again")
    out.create()
    writer = VectorsWriter(out.path, dimension, dtype, normalized, model=meta["model"],
                           extra={k: meta[k] for k in ("normalize", "run", "job")}, resume=before is not None)
    try:
        if writer.count % job.chunk_size and writer.count != job.rows:
            raise OutputError(f"{output}: --resume: {writer.count} rows is not a whole number of chunks of "
                              f"{job.chunk_size}; give --overwrite to start again")
        first = len(job.chunks) if writer.count == job.rows else writer.count // job.chunk_size
        results = (runner or local_chunks)(predictor, model_dir, job, first, normalize)
        _write(writer, results, job, progress)
        writer.finish()
    except BaseException:
        writer.close()
        if out.replace:
            out.abandon()
        raise
    out.commit()
    return open_vectors(output)


def local_chunks(predictor, model_dir: Path, job: Job, first: int,
                 normalize: bool) -> Iterator[tuple[list, np.ndarray]]:
    """(ids, vectors) of chunks first.. in this process."""
    with bulk_job(predictor):
        for k in range(first, len(job.chunks)):
            yield embed_chunk(predictor, job, k, normalize)


def _write(writer: VectorsWriter, results: Iterator[tuple[list, np.ndarray]], job: Job,
           progress: bool | None) -> None:
    from tqdm import tqdm

    show = sys.stderr.isatty() if progress is None else progress
    start, done = time.perf_counter(), writer.count
    with tqdm(total=job.rows, initial=writer.count, desc="embedding", unit=" sentences", disable=not show,
              smoothing=0.1) as bar:
        for ids, vectors in results:
            writer.append(vectors, ids)
            writer.commit()
            bar.update(len(ids))
    seconds = time.perf_counter() - start
    writer.meta["last_run"] = {"rows": writer.count - done, "seconds": round(seconds, 3),
                               "sentences_per_s": round((writer.count - done) / seconds, 1) if seconds else None}

