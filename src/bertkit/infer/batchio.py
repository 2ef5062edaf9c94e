"""Files in, files out for the CLI's streaming verbs (`tokenize`, `encode`, `predict`, `summarize`, `suggest`): input
lines read with bounded memory (a line in pieces, each field kept to `max_chars` characters), a field cut to a
prefix that provably gives the tokens the model sees, batches by count and characters, and the `.npz` of `encode`
assembled from spool files. `bertkit.cli` is a thin layer over these.
"""

from __future__ import annotations

import codecs
import contextlib
import itertools
import json
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np

from bertkit.io import atomic_path


class InputError(ValueError):
    """A malformed input file; the message names the file and line."""



MAX_CHARS = 1_000_000  # default --max-chars: characters of one input field read into memory
READ_BYTES = 1 << 20  # a line is read in pieces of at most this many bytes, so no line sits in memory whole


class InputLine(NamedTuple):
    lineno: int
    text: str
    pair: str | None
    cut: tuple[bool, bool]  # (text, pair) longer than max_chars: only the first max_chars characters are here


def read_inputs(path: str, pairs: bool, max_chars: int = MAX_CHARS) -> Iterator[InputLine]:
    """An `InputLine` for each line of an input file; `-` reads standard input. With `pairs`, each line is
    `text<TAB>text_pair`. Empty lines are kept (an empty text is valid input). Memory is bounded whatever the
    file: a line is read in pieces, and each field keeps at most `max_chars` characters (`cut` says which were
    longer; the rest is still checked for UTF-8 and, with pairs, for tabs). What a verb may do with a cut field is
    `fit`'s business."""
    if max_chars < 1:
        raise InputError(f"--max-chars {max_chars}: must be at least 1")
    stream = sys.stdin.buffer if path == "-" else None
    if stream is None and not Path(path).is_file():
        raise InputError(f"{path}: file not found")
    with (open(path, "rb") if stream is None else stream) as f:
        lineno = 0
        while raw := f.readline(READ_BYTES):
            lineno += 1
            if raw.endswith(b"\n") or len(raw) < READ_BYTES:  # the whole line in one piece
                try:
                    line = raw.decode("utf-8").rstrip("\r\n")
                except UnicodeDecodeError as e:
                    raise InputError(f"{path}: line {lineno}: not valid UTF-8 (byte {e.start})") from None
                fields = line.split("\t") if pairs else [line]
                sizes = [len(x) for x in fields]
                fields = [x[:max_chars] for x in fields]
            else:
                fields, sizes = _read_long_line(f, raw, pairs, max_chars, f"{path}: line {lineno}")
            if pairs and len(sizes) != 2:
                raise InputError(f"{path}: line {lineno}: expected 'text<TAB>text_pair', found {len(sizes)} "
                                 f"tab-separated field(s)")
            cut = (sizes[0] > max_chars, pairs and sizes[1] > max_chars)
            yield InputLine(lineno, fields[0], fields[1] if pairs else None, cut)


def _read_long_line(f, raw: bytes, pairs: bool, max_chars: int, where: str) -> tuple[list[str], list[int]]:
    """The rest of a line that did not fit in one read: its fields (the first `max_chars` characters of the first
    two) and every field's length in characters."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    kept: list[list[str]] = [[], []]
    sizes = [0]
    held = 0  # '\r's ending the last piece: dropped if the line ends right after them, as rstrip("\r\n") does
    offset = 0  # bytes of the line before `raw`

    def add(text: str) -> None:
        i = len(sizes) - 1
        if i < 2 and sizes[i] < max_chars:
            kept[i].append(text[:max_chars - sizes[i]])
        sizes[i] += len(text)

    while True:
        end = raw.endswith(b"\n") or len(raw) < READ_BYTES
        try:
            text = decoder.decode(raw, final=end)
        except UnicodeDecodeError as e:
            raise InputError(f"{where}: not valid UTF-8 (byte {max(0, offset + e.start)})") from None
        offset += len(raw)
        body = text.rstrip("\r\n") if end else text.rstrip("\r")
        if body and held:
            add("\r" * min(held, max_chars + 1))
            sizes[-1] += held - min(held, max_chars + 1)
            held = 0
        for k, part in enumerate(body.split("\t") if pairs else [body]):
            if k:
                sizes.append(0)
            add(part)
        if end:
            return ["".join(k) for k in kept[:len(sizes)]], sizes
        held += len(text) - len(body)
        raw = f.readline(READ_BYTES)


def fit(line: InputLine, path: str, tok, max_length: int | None, whole: str = "") -> tuple[str, str | None]:
    """The text (and pair) to tokenise for a verb whose model sees the first `max_length` tokens (None: every
    token; `whole` then says why). A field longer than the model will see is shortened to a prefix that provably
    gives those tokens (`Tokenizer.covering_prefix`), which bounds the work on a long line. A field cut at
    --max-chars is refused, naming the file and line, when the verb reads every token or when its kept
    characters do not provably hold the tokens the model sees (what follows could change the result)."""
    fields = [line.text, line.pair]
    limit = "longer than --max-chars"
    if max_length is None:
        if any(line.cut):
            raise InputError(f"{path}: line {line.lineno}: {limit} ({len(fields[line.cut.index(True)])} "
                             f"characters): {whole}; raise --max-chars or split the line")
        return line.text, line.pair
    budget = max_length - (2 if line.pair is None else 3)  # [CLS] A [SEP] (B [SEP])
    for i, (text, cut) in enumerate(zip(fields, line.cut)):
        if text is None or (not cut and len(text) <= 16 * budget):  # short: tokenised whole, nothing to prove
            continue
        prefix = tok.covering_prefix(text, budget)
        if prefix is not None:
            fields[i] = prefix
        elif cut:
            side = "" if line.pair is None else ("the text " if i == 0 else "the pair ")
            raise InputError(f"{path}: line {line.lineno}: {side}is {limit} ({len(text)} characters), and those "
                             f"do not hold the {budget} tokens the model sees (spaces, control characters or one "
                             f"long word), so the rest could change the result; raise --max-chars")
    return fields[0], fields[1]


def batches(items: Iterable, size: int, max_chars: int | None = None) -> Iterator[list]:
    """Lists of at most `size` items; with `max_chars`, a list also ends once its texts (items' fields 1 and 2:
    text and pair, or question and context) reach that many characters, so a chunk of long lines stays small."""
    it = iter(items)
    if max_chars is None:
        while chunk := list(itertools.islice(it, size)):
            yield chunk
        return
    chunk, chars = [], 0
    for item in it:
        chunk.append(item)
        chars += len(item[1]) + len(item[2] or "")
        if len(chunk) == size or chars >= max_chars:
            yield chunk
            chunk, chars = [], 0
    if chunk:
        yield chunk


# ---- verbs ------------------------------------------------------------------------------------------------------



TOKENIZE_CHUNK, CHUNK_CHARS = 4096, 4_000_000  # lines, characters tokenised at a time


def tokenize_file(model: str, input: str, output: str, pairs: bool = False, max_length: int | None = None,
                  max_chars: int = MAX_CHARS, chunk: int = TOKENIZE_CHUNK) -> int:
    """JSON lines of input_ids, token_type_ids and offsets for each line of `input` (streamed, in chunks);
    the number of lines."""
    from bertkit.tokenizer import Tokenizer

    tok = Tokenizer.from_pretrained(model)
    n = 0
    with atomic_path(output) as tmp, open(tmp, "w", encoding="utf-8") as out:
        for lines in batches(read_inputs(input, pairs, max_chars), chunk, CHUNK_CHARS):
            fitted = [fit(line, input, tok, max_length, "tokenize keeps every token without --max-length")
                      for line in lines]
            texts = [t for t, _ in fitted]
            seconds = [p for _, p in fitted] if pairs else None
            for enc in tok.encode_batch(texts, seconds, max_length=max_length):
                out.write(json.dumps({"input_ids": enc.ids, "token_type_ids": enc.type_ids,
                                      "offsets": [list(o) for o in enc.offsets]}) + "\n")
            n += len(lines)
    return n


ENCODE_CHUNK = 1024  # lines tokenised and sorted by length at a time (padding is only saved within a chunk)


@contextlib.contextmanager
def without_onednn(use: bool = True) -> Iterator[None]:
    """Float inference over a stream of batches of every length, without oneDNN: it keeps state per input shape,
    and resident memory grew with the number of shapes seen (MiniLM, batch 32, lengths 4-120: 919 MB after 200
    batches, 467 MB without it, at the same speed here), so a long input file would not stay within 1 GB."""
    import torch

    was = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = was and not use
    try:
        yield
    finally:
        torch.backends.mkldnn.enabled = was


def bulk_job(predictor) -> contextlib.AbstractContextManager[None]:
    """What a job over a stream of batches runs inside: `without_onednn` wherever float PyTorch computes, which is
    every backend but PyTorch int8 (ONNX Runtime's task models embed and explain through the float model of their
    directory)."""
    return without_onednn(not (predictor.settings.backend == "torch" and predictor.settings.int8))


def encode_file(model: str, input: str, output: str, pairs: bool = False, layers: str = "last",
                padded: bool = False, max_length: int | None = None, max_chars: int = MAX_CHARS, batch_size: int = 32,
                threads: int = 0, chunk: int = ENCODE_CHUNK) -> tuple[int, str]:
    """Streams: lines are read, tokenised and encoded a chunk at a time, and each line's rows go to spool files
    beside the output as soon as they are computed; the .npz is then assembled from them in input order, array by
    array, so memory holds one batch whatever the input's size."""
    import os
    import tempfile
    from array import array

    import torch
    from tqdm import tqdm

    from bertkit.io import _alive
    from bertkit.model import BertModel
    from bertkit.tokenizer import Tokenizer, check_vocab

    if batch_size < 1:
        raise InputError(f"--batch-size {batch_size}: must be at least 1")
    if threads:
        torch.set_num_threads(threads)
    tok = Tokenizer.from_pretrained(model)
    encoder = BertModel.from_pretrained(model)
    check_vocab(tok, encoder.config, model)
    max_length = min(max_length or encoder.config.max_length, encoder.config.max_length)
    want_all = layers == "all"
    output = Path(output)
    with atomic_path(output) as tmp:
        for old in output.parent.glob(f".{output.name}.parts-*"):  # spools of runs that were killed
            pid = old.name.rsplit("-", 2)[-2]
            if pid.isdigit() and not _alive(int(pid)):
                import shutil
                shutil.rmtree(old, ignore_errors=True)
        with tempfile.TemporaryDirectory(prefix=f".{output.name}.parts-{os.getpid()}-", dir=output.parent) as work, \
                contextlib.ExitStack() as opened:
            lengths, token_at, pooled_at = array("q"), array("q"), array("q")  # per line, in input order
            files = None  # one spool per hidden state kept (the last, or all), and one for the pooler
            tokens = pooled = 0  # rows written to the spools so far
            with torch.inference_mode(), without_onednn(), \
                    tqdm(desc="encoding", unit="line", disable=not sys.stderr.isatty()) as bar:
                for lines in batches(read_inputs(input, pairs, max_chars), chunk):
                    fitted = [fit(line, input, tok, max_length) for line in lines]
                    encs = tok.encode_batch([t for t, _ in fitted], [p for _, p in fitted] if pairs else None,
                                            max_length)
                    base = len(lengths)
                    lengths.extend(len(e) for e in encs)
                    token_at.extend([0] * len(encs))
                    pooled_at.extend([-1] * len(encs))
                    order = sorted(range(len(encs)), key=lambda i: len(encs[i]))
                    for idx in batches(order, batch_size):
                        batch = tok.collate([encs[i].ids for i in idx], [encs[i].type_ids for i in idx])
                        out = encoder(**batch, output_hidden_states=want_all)
                        states = out.hidden_states if want_all else (out.last_hidden_state,)
                        if files is None:
                            files = [opened.enter_context(open(Path(work) / name, "wb")) for name in
                                     [f"state{k}.f32" for k in range(len(states))] + ["pooled.f32"]]
                        for j, i in enumerate(idx):
                            n = len(encs[i])
                            token_at[base + i] = tokens
                            for f, h in zip(files, states):
                                f.write(np.ascontiguousarray(h[j, :n].numpy(), dtype=np.float32).data)
                            tokens += n
                            if out.pooler_output is not None:
                                files[-1].write(np.ascontiguousarray(out.pooler_output[j].numpy(),
                                                                     dtype=np.float32).data)
                                pooled_at[base + i] = pooled
                                pooled += 1
                    bar.update(len(lines))
            if not lengths:
                raise InputError(f"{input}: no lines to encode")
            for f in files:
                f.close()
            shapes = assemble_npz(tmp, Path(work), np.frombuffer(lengths, dtype=np.int64),
                                   np.frombuffer(token_at, dtype=np.int64), np.frombuffer(pooled_at, dtype=np.int64),
                                   len(files) - 1, encoder.config.hidden_size, padded, want_all)
    return len(lengths), shapes


def assemble_npz(target: Path, work: Path, lengths: np.ndarray, token_at: np.ndarray, pooled_at: np.ndarray,
                  states: int, H: int, padded: bool, want_all: bool) -> str:
    """Write the .npz (what `np.savez` writes: an uncompressed zip of .npy files) from the spools, one array at a
    time and one line at a time. Arrays: `lengths`; ragged: `offsets` and (tokens, H) / (layers, tokens, H) rows,
    line i at offsets[i]:offsets[i+1]; padded: `attention_mask` and (lines, T, H) / (layers, lines, T, H);
    `pooler_output` (lines, H) when the model has a pooler."""
    import os
    import zipfile

    from numpy.lib import format as npy

    lines, T = len(lengths), int(lengths.max())
    shapes = []

    def entry(zf, name: str, shape: tuple, dtype, parts: Iterator) -> None:
        with zf.open(f"{name}.npy", "w", force_zip64=True) as f:
            npy.write_array_header_1_0(f, {"descr": npy.dtype_to_descr(np.dtype(dtype)), "fortran_order": False,
                                           "shape": shape})
            for part in parts:
                f.write(part)
        shapes.append(f"{name} {shape}")

    def rows(k: int) -> Iterator[bytes]:  # hidden state k of every line, in input order
        fd = os.open(work / f"state{k}.f32", os.O_RDONLY)
        try:
            pad = bytes(4 * H * T)
            for start, n in zip(token_at.tolist(), lengths.tolist()):
                yield os.pread(fd, 4 * H * n, 4 * H * start)
                if padded:
                    yield pad[:4 * H * (T - n)]
        finally:
            os.close(fd)

    layers = range(states) if want_all else ()
    with zipfile.ZipFile(target, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        entry(zf, "lengths", (lines,), np.int64, iter([lengths.tobytes()]))
        if padded:
            entry(zf, "attention_mask", (lines, T), np.int64,
                  ((np.arange(T) < n).astype(np.int64).tobytes() for n in lengths.tolist()))
            entry(zf, "last_hidden_state", (lines, T, H), np.float32, rows(states - 1))
            if want_all:
                entry(zf, "hidden_states", (states, lines, T, H), np.float32, (b for k in layers for b in rows(k)))
        else:
            entry(zf, "offsets", (lines + 1,), np.int64, iter([np.concatenate([[0], np.cumsum(lengths)]).tobytes()]))
            total = int(lengths.sum())
            entry(zf, "last_hidden_state", (total, H), np.float32, rows(states - 1))
            if want_all:
                entry(zf, "hidden_states", (states, total, H), np.float32, (b for k in layers for b in rows(k)))
        if pooled_at[0] >= 0:
            with open(work / "pooled.f32", "rb") as f:
                entry(zf, "pooler_output", (lines, H), np.float32,
                      (os.pread(f.fileno(), 4 * H, 4 * H * int(r)) for r in pooled_at))
    return ", ".join(shapes)



def read_json_lines(path: str, max_chars: int = MAX_CHARS, why: str = "",
                    skip_empty: bool = False) -> Iterator[tuple[int, object]]:
    """(line number, parsed value) for each line of a JSON-lines file (`skip_empty`: blank lines left out). A line
    is read whole (`why`), so one longer than `max_chars` characters is refused, never cut; bad JSON is named."""
    for line in read_inputs(path, False, max_chars):
        if skip_empty and not line.text.strip():
            continue
        if line.cut[0]:
            raise InputError(f"{path}: line {line.lineno}: longer than --max-chars ({max_chars} characters): "
                             f"{why}; raise --max-chars or split the line")
        try:
            yield line.lineno, json.loads(line.text)
        except json.JSONDecodeError as e:
            raise InputError(f"{path}: line {line.lineno}: not a JSON object ({e.msg})") from None


def read_json_inputs(path: str, fields: tuple[str, str], max_chars: int = MAX_CHARS,
                     why: str = "") -> Iterator[InputLine]:
    """An `InputLine` (text, pair: the two `fields`, e.g. question and context) for each JSON line. The model reads
    them whole (`why`), so a line longer than `max_chars` characters is refused (never cut)."""
    a, b = fields
    for lineno, item in read_json_lines(path, max_chars, why):
        if not isinstance(item, dict) or not isinstance(item.get(a), str) or not isinstance(item.get(b), str):
            raise InputError(f"{path}: line {lineno}: expected {{\"{a}\": \"...\", \"{b}\": \"...\"}}")
        yield InputLine(lineno, item[a], item[b], (False, False))


PREDICT_CHUNK = 1024  # lines per call of the Predictor (it sorts them by length; output is written per chunk)


def check_batching(batch_size: int, max_tokens: int) -> None:
    if batch_size < 1:
        raise InputError(f"--batch-size {batch_size}: must be at least 1")
    if max_tokens < 0:
        raise InputError(f"--max-tokens {max_tokens}: must be 0 (off) or more")


CALIBRATION_SAMPLE = 500  # inputs of a calibration file read at most (the first ones)


def int8_if_it_agrees_on_file(path: str | Path, sample: str | Path, settings=None, pairs: bool = False,
                              threshold: float | None = None, max_chars: int | None = None):
    """(Predictor, `calibrate.Agreement`): `calibrate.int8_if_it_agrees` on the first `CALIBRATION_SAMPLE` inputs
    of the file `sample`, in the format `bertkit predict` reads for this model (lines of text, `pairs`:
    text<TAB>text_pair, or JSON lines of the family's `input_fields`)."""
    from dataclasses import replace

    from bertkit.infer.calibrate import int8_if_it_agrees
    from bertkit.infer.predictor import Predictor, PredictorSettings

    settings = settings or PredictorSettings()
    fp32 = Predictor.from_pretrained(path, replace(settings, int8=False))
    family = fp32.task_family
    max_chars = max_chars or MAX_CHARS
    lines = read_json_inputs(str(sample), family.input_fields, max_chars, family.whole_text_reason) \
        if family.input_fields else read_inputs(str(sample), pairs, max_chars)
    rows = list(itertools.islice(lines, CALIBRATION_SAMPLE))
    texts = [r.text for r in rows]
    second = [r.pair for r in rows] if family.input_fields or pairs else None
    if not texts:
        raise ValueError(f"{sample}: no calibration inputs in it")
    return int8_if_it_agrees(path, texts, second, settings, threshold, fp32=fp32)


def predict_file(model: str, input: str, output: str, settings, pairs: bool = False, max_chars: int = MAX_CHARS,
                 chunk: int = PREDICT_CHUNK, calibration: str | None = None) -> tuple[int, str]:
    """One JSON object per line of `input`, as the model's task family answers it (`Family.predict`): lines of
    text (`pairs`: text<TAB>text_pair), or JSON lines of the family's `input_fields`; (lines, family).
    `calibration`: a file of inputs in the same format; int8 only where it agrees with fp32 on them."""
    from tqdm import tqdm

    from bertkit.infer.predictor import Predictor

    check_batching(settings.batch_size, settings.max_tokens)
    if calibration:
        predictor = int8_if_it_agrees_on_file(model, calibration, settings, pairs, max_chars=max_chars)[0]
    else:
        predictor = Predictor.from_pretrained(model, settings)
    family = predictor.task_family
    # A family that reads every token (windows) refuses a line cut at --max-chars; the others see max_length.
    whole = family.reads_whole(pairs)
    n = 0
    with atomic_path(output) as tmp, open(tmp, "w", encoding="utf-8") as out, \
            bulk_job(predictor), \
            tqdm(desc="predicting", unit="line", disable=not sys.stderr.isatty()) as bar:
        source = read_json_inputs(input, family.input_fields, max_chars, family.whole_text_reason) \
            if family.input_fields else read_inputs(input, pairs, max_chars)
        for lines in batches(source, chunk, CHUNK_CHARS):
            fitted = [fit(line, input, predictor.tok, None if whole else predictor.max_length,
                          family.whole_text_reason) for line in lines]
            texts = [t for t, _ in fitted]
            seconds = None if all(p is None for _, p in fitted) else [p for _, p in fitted]
            for r in family.predict(predictor, texts, seconds):
                out.write(json.dumps(r, ensure_ascii=False) + "\n")
            n += len(lines)
            bar.update(len(lines))
    return n, family.name


# ---- the reading tools' file jobs (`bertkit summarize`, `bertkit suggest`) -------------------------------------
def summarize_file(input: str, output: str, k: int = 3, method: str = "centrality", lexical: float = 0.7,
                   mmr: float = 1.0, max_chars: int = 1_000_000, predictor=None, scorer=None) -> int:
    """`bertkit summarize`: each JSON line of `input` with `summary_sentences` (indices into `sentences`,
    ascending), `sentences` and `summary` (the chosen sentences joined by a space) added, to `output` (written
    whole or not at all); the number of lines. `predictor`: the sentence vectors' (`centrality`, `centroid`); `scorer`: the trained scorer
    (`apps.extractive.ExtractiveScorer`, for `trained`). The CLI loads them from `--model`."""
    from tqdm import tqdm

    from bertkit.apps.summarize import CHUNK_SENTENCES, _article, _check, summarize

    _check(method, k)
    if not 0 <= lexical <= 1 or not 0 <= mmr <= 1:
        raise ValueError(f"--lexical {lexical} / --mmr {mmr}: each between 0 and 1")
    if method == "trained" and scorer is None:
        raise ValueError("--method trained: give the trained scorer (`bertkit summarize-train` writes one)")
    if method in ("centrality", "centroid") and predictor is None:
        raise ValueError(f"--method {method}: give --model (the sentence vectors' model)")
    if method not in ("centrality", "centroid"):
        predictor = None

    def flush(chunk: list, out) -> None:
        """One model call for the sentences of every article of the chunk (the Predictor batches them by length)."""
        every = [s for _, sentences, _ in chunk for s in sentences]
        vectors = predictor.embed(every) if predictor is not None else None
        scores = scorer.scores([sentences for _, sentences, _ in chunk]) if scorer is not None else None
        at = 0
        for j, (item, sentences, reference) in enumerate(chunk):
            mine = vectors[at:at + len(sentences)] if vectors is not None else None
            at += len(sentences)
            chosen = summarize(sentences, k, method, vectors=mine, reference=reference, lexical=lexical, mmr=mmr,
                               scores=scores[j] if scores is not None else None)
            item.update(summary_sentences=chosen, sentences=sentences,
                        summary=" ".join(sentences[i] for i in chosen))
            out.write(json.dumps(item, ensure_ascii=False) + "\n")

    n, chunk = 0, []
    with atomic_path(output) as tmp, open(tmp, "w", encoding="utf-8") as out, \
            tqdm(desc="summarizing", unit="article", disable=not sys.stderr.isatty()) as bar:
        for lineno, item in read_json_lines(input, max_chars, "an article is summarized whole", skip_empty=True):
            sentences, reference = _article(item, input, lineno)
            if method == "oracle" and reference is None:
                raise ValueError(f"{input}: line {lineno}: --method oracle needs a field 'reference'")
            chunk.append((item, sentences, reference))
            if sum(len(c[1]) for c in chunk) >= CHUNK_SENTENCES:
                flush(chunk, out)
                bar.update(len(chunk))
                n, chunk = n + len(chunk), []
        if chunk:
            flush(chunk, out)
            bar.update(len(chunk))
            n += len(chunk)
    return n


def suggest_file(suggester, input: str, output: str, max_chars: int = 100_000) -> int:
    """`bertkit suggest`: each JSON line of `input` (an `apps.suggest.Suggester.answer` request) with its answer's
    fields added, to `output` (written whole or not at all); the number of lines."""
    from tqdm import tqdm

    n = 0
    with atomic_path(output) as tmp, open(tmp, "w", encoding="utf-8") as out, \
            tqdm(desc="suggesting", unit="line", disable=not sys.stderr.isatty()) as bar:
        for lineno, item in read_json_lines(input, max_chars, "a text is read around its masks", skip_empty=True):
            item = item if isinstance(item, dict) else None
            answer = suggester.answer(item, f"{input}: line {lineno}: ")
            out.write(json.dumps({**item, **answer}, ensure_ascii=False) + "\n")
            n += 1
            bar.update(1)
    return n
