"""`bertkit <verb>`: a dispatch table over library functions. Each verb is `run_<verb>(args)`; `main(argv)` is
what the console script and the tests call. Errors in the user's input end in one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import codecs
import contextlib
import itertools
import json
import logging
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np

from bertkit.checkpoint import atomic_path
from bertkit.data.tasks import find_split
from bertkit.train.finetune import TASK_INFO


class InputError(ValueError):
    """A malformed input file; the message names the file and line."""


FINETUNE_TASKS = list(TASK_INFO)


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
    `_fit`'s business."""
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


def _fit(line: InputLine, path: str, tok, max_length: int | None, whole: str = "") -> tuple[str, str | None]:
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


def _batches(items: Iterable, size: int, max_chars: int | None = None) -> Iterator[list]:
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


def run_tokenize(args) -> None:
    from bertkit.tokenizer import Tokenizer

    tok = Tokenizer.from_pretrained(args.model)
    n = 0
    with atomic_path(args.output) as tmp, open(tmp, "w", encoding="utf-8") as out:  # streamed, in chunks
        for chunk in _batches(read_inputs(args.input, args.pairs, args.max_chars), TOKENIZE_CHUNK, CHUNK_CHARS):
            fitted = [_fit(line, args.input, tok, args.max_length, "tokenize keeps every token without --max-length")
                      for line in chunk]
            texts = [t for t, _ in fitted]
            pairs = [p for _, p in fitted] if args.pairs else None
            for enc in tok.encode_batch(texts, pairs, max_length=args.max_length):
                out.write(json.dumps({"input_ids": enc.ids, "token_type_ids": enc.type_ids,
                                      "offsets": [list(o) for o in enc.offsets]}) + "\n")
            n += len(chunk)
    print(f"tokenized {n} lines -> {args.output}", file=sys.stderr)


ENCODE_CHUNK = 1024  # lines tokenised and sorted by length at a time (padding is only saved within a chunk)


@contextlib.contextmanager
def _without_onednn(use: bool = True) -> Iterator[None]:
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


def run_encode(args) -> None:
    """Streams: lines are read, tokenised and encoded a chunk at a time, and each line's rows go to spool files
    beside the output as soon as they are computed; the .npz is then assembled from them in input order, array by
    array, so memory holds one batch whatever the input's size."""
    import os
    import tempfile
    from array import array

    import torch
    from tqdm import tqdm

    from bertkit.checkpoint import load_pretrained
    from bertkit.io import _alive
    from bertkit.model import BertModel
    from bertkit.tokenizer import Tokenizer, check_vocab

    if args.batch_size < 1:
        raise InputError(f"--batch-size {args.batch_size}: must be at least 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    tok = Tokenizer.from_pretrained(args.model)
    model = load_pretrained(BertModel, args.model)
    check_vocab(tok, model.config, args.model)
    max_length = min(args.max_length or model.config.max_position_embeddings, model.config.max_position_embeddings)
    want_all = args.layers == "all"
    output = Path(args.output)
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
            with torch.inference_mode(), _without_onednn(), \
                    tqdm(desc="encoding", unit="line", disable=not sys.stderr.isatty()) as bar:
                for chunk in _batches(read_inputs(args.input, args.pairs, args.max_chars), ENCODE_CHUNK):
                    fitted = [_fit(line, args.input, tok, max_length) for line in chunk]
                    encs = tok.encode_batch([t for t, _ in fitted], [p for _, p in fitted] if args.pairs else None,
                                            max_length)
                    base = len(lengths)
                    lengths.extend(len(e) for e in encs)
                    token_at.extend([0] * len(encs))
                    pooled_at.extend([-1] * len(encs))
                    order = sorted(range(len(encs)), key=lambda i: len(encs[i]))
                    for idx in _batches(order, args.batch_size):
                        batch = tok.collate([encs[i].ids for i in idx], [encs[i].type_ids for i in idx])
                        out = model(**batch, output_hidden_states=want_all)
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
                    bar.update(len(chunk))
            if not lengths:
                raise InputError(f"{args.input}: no lines to encode")
            for f in files:
                f.close()
            shapes = _assemble_npz(tmp, Path(work), np.frombuffer(lengths, dtype=np.int64),
                                   np.frombuffer(token_at, dtype=np.int64), np.frombuffer(pooled_at, dtype=np.int64),
                                   len(files) - 1, model.config.hidden_size, args.padded, want_all)
    print(f"encoded {len(lengths)} lines -> {args.output}: {shapes}", file=sys.stderr)


def _assemble_npz(target: Path, work: Path, lengths: np.ndarray, token_at: np.ndarray, pooled_at: np.ndarray,
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


def run_vocab(args) -> None:
    from bertkit.io import prepare_output_dir
    from bertkit.vocab import learn_vocab, save_vocab

    target = prepare_output_dir(args.out, verb="vocab", inputs=args.corpus, overwrite=args.overwrite,
                                resumable=False)  # refused before the corpus is read, written once it is learned
    tok, report = learn_vocab(args.corpus, size=args.size, lowercase=args.lowercase,
                              strip_accents={"auto": None, "yes": True, "no": False}[args.strip_accents],
                              keep_hangul=not args.reference_hangul, min_frequency=args.min_frequency,
                              held_out_every=args.held_out_every, show_progress=sys.stderr.isatty())
    with target as work:
        save_vocab(tok, report, work)
    print(report)
    print(f"wrote {args.out}/vocab.txt, tokenizer.json, tokenizer_config.json, vocab_report.json")


def run_pretrain(args) -> None:
    from bertkit.train.pretrain import PretrainConfig, run_pretrain

    base: dict = {}
    if args.config:
        from bertkit.io import read_json

        base = read_json(args.config, "JSON")
        if not isinstance(base, dict):
            raise InputError(f"{args.config}: expected a JSON object of PretrainConfig fields")
    for key in ("corpus", "vocab", "out", "size", "objective", "format", "max_seq_length", "batch_size",
                "eval_fraction"):
        if getattr(args, key) is not None:
            base[key] = getattr(args, key)
    train_keys = ("steps", "lr", "warmup", "grad_accum", "seed", "bf16", "log_every", "eval_every", "save_every",
                  "threads", "device")
    base.setdefault("train", {}).update({k: getattr(args, k) for k in train_keys if getattr(args, k) is not None})
    masking = base.setdefault("masking", {})
    if args.whole_word:
        masking["whole_word"] = True
    if args.duplication is not None:
        masking["duplication"] = args.duplication
    for key in ("corpus", "vocab"):
        if not base.get(key):
            raise InputError(f"--{key} is required (on the command line or in the config file)")
    try:
        cfg = PretrainConfig.from_dict(base)
    except TypeError as e:
        raise InputError(f"{args.config or 'config'}: {e}") from None
    from bertkit.io import check_not_input

    check_not_input(cfg.out, [args.config], "pretrain")
    result = run_pretrain(cfg, resume=args.resume, overwrite=args.overwrite, show_progress=sys.stderr.isatty())
    print(json.dumps({"out": cfg.out, **result}))


def run_finetune(args) -> None:
    from bertkit.train.finetune import TASK_INFO, FinetuneConfig, run_finetune

    from bertkit.io import check_not_input

    check_not_input(args.out, [args.data, args.model], "finetune")
    info = TASK_INFO[args.task]
    train_split, eval_split = info.splits
    if args.features:
        if args.group_by_length:  # the BiLSTM trains on cached features; its batches are not grouped
            raise InputError("--group-by-length is for fine-tuning the encoder, not with --features")
        return run_feature_finetune(args, info)
    cfg = FinetuneConfig(task=args.task, model=args.model, out=args.out, init=args.init,
                         eval_file=str(find_split(args.data, args.eval_split or eval_split)))
    if args.split_eval is None:
        cfg.train_file = str(find_split(args.data, train_split))
    else:
        cfg.split_eval = args.split_eval
    if info.family == "qa":
        cfg.max_length = 384
    for key in ("max_length", "batch_size", "epochs", "max_train_examples", "max_eval_examples", "dropout"):
        if getattr(args, key) is not None:
            setattr(cfg, key, getattr(args, key))
    cfg.qa.max_length = cfg.max_length
    for key in ("doc_stride", "max_query_length", "max_answer_length", "null_threshold"):
        if getattr(args, key) is not None:
            setattr(cfg.qa, key, getattr(args, key))
    for key in ("lr", "seed", "threads", "warmup", "device", "save_every", "grad_accum"):
        if getattr(args, key) is not None:
            setattr(cfg.train, key, getattr(args, key))
    cfg.group_by_length = args.group_by_length
    summary = run_finetune(cfg, resume=args.resume, overwrite=args.overwrite, show_progress=sys.stderr.isatty())
    print(json.dumps({k: v for k, v in summary.items() if k != "config"}))


def run_feature_finetune(args, info) -> None:
    from bertkit.train.feature_based import FeatureConfig, run_feature_based

    cfg = FeatureConfig(task=args.task, model=args.model, out=args.out, features=args.features,
                        eval_file=str(find_split(args.data, args.eval_split or info.splits[1])))
    if args.split_eval is None:
        cfg.train_file = str(find_split(args.data, info.splits[0]))
    else:
        cfg.split_eval = args.split_eval
    for key in ("max_length", "batch_size", "epochs", "max_train_examples", "max_eval_examples", "lstm_hidden"):
        if getattr(args, key) is not None:
            setattr(cfg, key, getattr(args, key))
    for key in ("lr", "seed", "threads", "warmup", "device"):
        if getattr(args, key) is not None:
            setattr(cfg.train, key, getattr(args, key))
    summary = run_feature_based(cfg, resume=args.resume, overwrite=args.overwrite, show_progress=sys.stderr.isatty())
    print(json.dumps({k: v for k, v in summary.items() if k != "config"}))


def run_evaluate(args) -> None:
    from bertkit.train.finetune import TASK_INFO, evaluate_model

    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    path = find_split(args.data, args.split or TASK_INFO[args.task].splits[1])
    result = evaluate_model(args.model, args.task, path, split_eval=args.split_eval or 0.0, seed=args.seed)
    text = json.dumps({**result, "model": args.model, "data": str(path)}, indent=2)
    if args.output:
        from bertkit.io import atomic_write_text
        atomic_write_text(args.output, text + "\n")
    print(text)


def read_qa_inputs(path: str, max_chars: int = MAX_CHARS) -> Iterator[tuple[int, str, str]]:
    """(line number, question, context) from JSON lines with 'question' and 'context'. The windows cover the whole
    context, so a line longer than `max_chars` characters is refused (never cut)."""
    for line in read_inputs(path, False, max_chars):
        if line.cut[0]:
            raise InputError(f"{path}: line {line.lineno}: longer than --max-chars ({max_chars} characters): "
                             f"question answering reads the whole context; raise --max-chars or split the context")
        try:
            item = json.loads(line.text)
        except json.JSONDecodeError as e:
            raise InputError(f"{path}: line {line.lineno}: not a JSON object ({e.msg})") from None
        if not isinstance(item, dict) or not isinstance(item.get("question"), str) \
                or not isinstance(item.get("context"), str):
            raise InputError(f"{path}: line {line.lineno}: expected {{\"question\": \"...\", \"context\": \"...\"}}")
        yield line.lineno, item["question"], item["context"]


PREDICT_CHUNK = 1024  # lines per call of the Predictor (it sorts them by length; output is written per chunk)


def run_predict(args) -> None:
    from tqdm import tqdm

    from bertkit.infer.predictor import Predictor, PredictorSettings

    if args.batch_size < 1:
        raise InputError(f"--batch-size {args.batch_size}: must be at least 1")
    settings = PredictorSettings(batch_size=args.batch_size, max_length=args.max_length, threads=args.threads,
                                 backend=args.backend, int8=args.int8)
    predictor = Predictor.from_pretrained(args.model, settings)
    family = predictor.family
    # Classification reads a long text in windows and tagging tags all of it: they see every token (a pair is
    # truncated longest-first, so it sees max_length). Embeddings see max_length tokens.
    whole = family == "tagging" or (family in ("classification", "regression") and not args.pairs)
    why = {"tagging": "tagging reads the whole text in windows"}.get(family, "classification reads the whole text "
                                                                             "in windows")
    n = 0
    with atomic_path(args.output) as tmp, open(tmp, "w", encoding="utf-8") as out, \
            _without_onednn(args.backend == "torch" and not args.int8), \
            tqdm(desc="predicting", unit="line", disable=not sys.stderr.isatty()) as bar:
        lines = read_qa_inputs(args.input, args.max_chars) if family == "qa" else \
            read_inputs(args.input, args.pairs, args.max_chars)
        for chunk in _batches(lines, PREDICT_CHUNK, CHUNK_CHARS):
            if family == "qa":
                results = predictor.answer([q for _, q, _ in chunk], [c for _, _, c in chunk])
            else:
                fitted = [_fit(line, args.input, predictor.tok, None if whole else predictor.max_length, why)
                          for line in chunk]
                texts = [t for t, _ in fitted]
                if family == "tagging":
                    results = predictor.tag(texts)
                elif family == "embedding":
                    results = [{"vector": v.tolist()} for v in predictor.embed(texts)]
                else:
                    results = predictor.classify(texts, [p for _, p in fitted] if args.pairs else None)
            for r in results:
                out.write(json.dumps(r, ensure_ascii=False) + "\n")
            n += len(chunk)
            bar.update(len(chunk))
    print(f"predicted {n} lines ({family}) -> {args.output}", file=sys.stderr)


def run_distill(args) -> None:
    from bertkit.train.distill import DistillConfig, DistillSettings, run_distill

    cfg = DistillConfig(teacher=args.teacher, out=args.out,
                        layers=[int(x) for x in args.layers.split(",")] if args.layers else [],
                        settings=DistillSettings(temperature=args.temperature, alpha=args.alpha, cosine=args.cosine))
    train = {k: getattr(args, k) for k in ("lr", "seed", "threads", "warmup", "device", "save_every")
             if getattr(args, k) is not None}
    if args.corpus:  # general distillation on the pre-training objective
        if args.task:
            raise InputError("distill: give --task (task-specific) or --corpus (general), not both")
        cfg.pretrain = {"corpus": args.corpus, "objective": args.objective, "format": args.format,
                        "train": {"steps": args.steps, **train}}
        if args.vocab:
            cfg.pretrain["vocab"] = args.vocab
        if args.batch_size:
            cfg.pretrain["batch_size"] = args.batch_size
    else:
        if not (args.task and args.data):
            raise InputError("distill: task-specific distillation needs --task and --data (or --corpus for general)")
        info = TASK_INFO[args.task]
        ft = {"task": args.task, "eval_file": str(find_split(args.data, info.splits[1])), "train": train}
        if args.split_eval is None:
            ft["train_file"] = str(find_split(args.data, info.splits[0]))
        else:
            ft["split_eval"] = args.split_eval
        for key in ("max_length", "batch_size", "epochs", "max_train_examples", "max_eval_examples"):
            if getattr(args, key) is not None:
                ft[key] = getattr(args, key)
        if args.group_by_length:
            ft["group_by_length"] = True
        cfg.finetune = ft
    from bertkit.io import check_not_input

    check_not_input(args.out, [args.data], "distill")
    summary = run_distill(cfg, resume=args.resume, overwrite=args.overwrite, show_progress=sys.stderr.isatty())
    print(json.dumps(summary, default=str))


def run_quantize(args) -> None:
    from bertkit.checkpoint import load_model
    from bertkit.infer.quantize import quantize_int8, save_int8
    from bertkit.tokenizer import Tokenizer

    from bertkit.io import prepare_output_dir

    target = prepare_output_dir(args.out, verb="quantize", inputs=[args.model], overwrite=args.overwrite,
                                resumable=False)
    model = quantize_int8(load_model(args.model), inplace=True)
    tokenizer = Tokenizer.from_pretrained(args.model)
    with target as work:
        save_int8(model, work, tokenizer=tokenizer)
    print(f"int8 model -> {args.out}", file=sys.stderr)


def run_export(args) -> None:
    from bertkit.checkpoint import load_model
    from bertkit.infer.onnxrt import export_onnx, onnx_file, quantize_onnx

    if not args.onnx:
        raise InputError("export: choose a format (--onnx)")
    if args.output:
        import tempfile

        model = load_model(args.model)
        with atomic_path(args.output) as tmp:  # checks the output before the export's work
            if args.int8:  # the float graph is only a step: it lives in a temporary directory
                with tempfile.TemporaryDirectory(prefix="bertkit-export-") as work:
                    quantize_onnx(export_onnx(model, Path(work) / "model.onnx"), tmp)
            else:
                export_onnx(model, tmp)
        print(f"ONNX -> {args.output}", file=sys.stderr)
        return
    from bertkit.config import BertConfig
    from bertkit.heads import HEADS

    config = BertConfig.from_json_file(Path(args.model) / "config.json")
    head = HEADS.get((config.architectures or ["BertModel"])[0], HEADS["BertModel"])
    path = onnx_file(args.model, head, int8=args.int8)
    print(f"ONNX -> {path} (the cache entry that --backend onnx uses)", file=sys.stderr)
    print(path)


def run_serve(args) -> None:
    import dataclasses
    import ipaddress
    import os

    import uvicorn

    from bertkit.serve.app import CONFIG_ENV, BatcherSettings, ServeSettings, app_from_env, server_options

    # every limit is checked before a model loads or the port opens: one line naming the flag, exit 2
    for flag, value, low in (("--port", args.port, 1), ("--workers", args.workers, 1), ("--threads", args.threads, 1),
                             ("--cache", args.cache, 0)):
        if value < low or (flag == "--port" and value > 65535):
            raise InputError(f"{flag} {value}: must be " + ("between 1 and 65535" if flag == "--port"
                                                               else f"at least {low}"))
    settings = ServeSettings(api_key=args.api_key or os.environ.get("BERTKIT_API_KEY"), max_items=args.max_items,
                             max_chars=args.max_chars, on_long_text=args.on_long_text, max_tokens=args.max_tokens,
                             request_timeout_s=args.request_timeout_s, stall_after_s=args.stall_after_s,
                             header_timeout_s=args.header_timeout_s, body_timeout_s=args.body_timeout_s,
                             max_connections=args.max_connections,
                             batcher=BatcherSettings(max_batch=args.max_batch, max_wait_ms=args.max_wait_ms,
                                                     max_queue=args.max_queue, max_batch_tokens=args.max_batch_tokens))
    if problems := settings.problems():
        name, value, why = problems[0]
        raise InputError(f"--{name.replace('_', '-')} {value}: {why}")
    models = {}
    for spec in args.model:
        name, _, path = spec.rpartition("=")
        name = name or Path(path.rstrip("/")).name
        if name in models:
            raise InputError(f"--model {spec}: the name '{name}' is used twice (give NAME=DIR)")
        if not (Path(path) / "config.json").is_file():
            raise InputError(f"--model {spec}: {path}/config.json not found")
        models[name] = path
    try:
        loopback = args.host == "localhost" or ipaddress.ip_address(args.host).is_loopback
    except ValueError:  # a host name: it may resolve beyond this machine
        loopback = False
    if not loopback and settings.api_key is None:
        print(f"bertkit serve: warning: listening on {args.host}, beyond this machine, without --api-key: anyone "
              f"who reaches the port can use the models", file=sys.stderr, flush=True)
    os.environ[CONFIG_ENV] = json.dumps({"models": models, "threads": args.threads, "backend": args.backend,
                                         "int8": args.int8, "cache_size": args.cache,
                                         "settings": dataclasses.asdict(settings)})
    app = app_from_env() if args.workers == 1 else None  # load here: a bad model fails before the port opens
    print(f"bertkit serve: http://{args.host}:{args.port}/ (page), /docs (API), {args.workers} worker(s); models: "
          + ", ".join(f"{n} = {p} ({app.state.predictors[n].family})" if app else f"{n} = {p}"
                      for n, p in models.items()), file=sys.stderr, flush=True)
    if app is not None:
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning", **server_options(settings))
    else:
        uvicorn.run("bertkit.serve.app:app_from_env", factory=True, host=args.host, port=args.port,
                    workers=args.workers, log_level="warning", **server_options(settings, in_process=False))


DEVICE_HELP = "where training runs: auto (default: a GPU when there is one), cpu or cuda"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bertkit", description="BERT, whole: tokenizer, encoder, training, serving.")
    p.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = p.add_subparsers(dest="verb", required=True, metavar="VERB")

    t = sub.add_parser("tokenize", help="text lines -> JSON lines of input_ids, token_type_ids, offsets")
    t.add_argument("--model", required=True, help="checkpoint or tokenizer directory (vocab.txt / tokenizer.json)")
    t.add_argument("--input", required=True, help="UTF-8 text file, one input per line ('-' for stdin)")
    t.add_argument("--output", required=True, help="output .jsonl, one object per input line")
    t.add_argument("--pairs", action="store_true", help="each line is text<TAB>text_pair")
    t.add_argument("--max-length", type=int, default=None, help="truncate to N tokens (pairs: longest first)")
    t.add_argument("--max-chars", type=int, default=MAX_CHARS,
                   help="characters of one input field read into memory (default 1,000,000); a longer field is "
                        "cut when what the model sees is provably within it, else refused with its line")

    e = sub.add_parser("encode", help="text lines -> hidden states (.npz) for feature extraction")
    e.add_argument("--model", required=True, help="HF BERT checkpoint directory")
    e.add_argument("--input", required=True, help="UTF-8 text file, one input per line ('-' for stdin)")
    e.add_argument("--output", required=True, help="output .npz")
    e.add_argument("--pairs", action="store_true", help="each line is text<TAB>text_pair")
    e.add_argument("--layers", choices=["last", "all"], default="last",
                   help="'all' adds hidden_states: the embeddings and every layer")
    e.add_argument("--padded", action="store_true",
                   help="(lines, T, H) arrays with attention_mask instead of ragged arrays with offsets")
    e.add_argument("--max-length", type=int, default=None, help="truncate to N tokens (default: the model's limit)")
    e.add_argument("--max-chars", type=int, default=MAX_CHARS,
                   help="characters of one input field read into memory (default 1,000,000); a longer field is "
                        "cut when what the model sees is provably within it, else refused with its line")
    e.add_argument("--batch-size", type=int, default=32)
    e.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")

    v = sub.add_parser("vocab", help="learn a WordPiece vocabulary from text files")
    v.add_argument("--corpus", required=True, nargs="+", help="text files (.txt or .gz), one sentence/line")
    v.add_argument("--size", type=int, default=32000, help="vocabulary size, special tokens included")
    v.add_argument("--out", required=True, help="output directory")
    case = v.add_mutually_exclusive_group()
    case.add_argument("--lowercase", dest="lowercase", action="store_true", default=True, help="(default)")
    case.add_argument("--cased", dest="lowercase", action="store_false", help="keep letter case")
    v.add_argument("--strip-accents", choices=["auto", "yes", "no"], default="auto",
                   help="auto: strip when lower-casing, as the reference")
    v.add_argument("--reference-hangul", action="store_true",
                   help="decompose Hangul into jamo when stripping accents, as the reference BERT does")
    v.add_argument("--min-frequency", type=int, default=2)
    v.add_argument("--held-out-every", type=int, default=100, help="every N-th line is held out for the report")
    v.add_argument("--overwrite", action="store_true",
                   help="replace a non-empty --out (the new vocabulary is built beside it, swapped in if it succeeds)")
    r = sub.add_parser("pretrain", help="pre-train a BERT from raw text (MLM + NSP, or the RoBERTa recipe)")
    r.add_argument("--corpus", nargs="+", help="text files (.txt or .gz), blank line between documents")
    r.add_argument("--vocab", help="tokenizer directory, e.g. from `bertkit vocab`")
    r.add_argument("--out", help="output directory: checkpoints/, metrics.jsonl/.png, the final model")
    r.add_argument("--config", help="JSON file with PretrainConfig fields; flags given here override it")
    r.add_argument("--size", choices=["tiny", "mini", "small", "medium", "base", "large"])
    r.add_argument("--objective", choices=["bert", "roberta", "electra"],
                   help="MLM + NSP (default), MLM on packed sentences, or ELECTRA's replaced-token detection")
    r.add_argument("--format", choices=["sentences", "paragraphs"],
                   help="one sentence per line (default) or one paragraph per line (split into sentences)")
    r.add_argument("--steps", type=int)
    r.add_argument("--batch-size", type=int, help="global batch (all processes, all accumulation steps)")
    r.add_argument("--grad-accum", type=int)
    r.add_argument("--max-seq-length", type=int)
    r.add_argument("--lr", type=float)
    r.add_argument("--warmup", type=float, help="fraction of steps (< 1) or number of steps")
    r.add_argument("--eval-fraction", type=float, help="fraction of documents held out (default 0.01)")
    r.add_argument("--whole-word", action="store_true", help="mask whole words")
    r.add_argument("--duplication", type=int, help="static masking with N copies (default 0: dynamic)")
    r.add_argument("--seed", type=int)
    r.add_argument("--bf16", choices=["auto", "on", "off"])
    r.add_argument("--device", choices=["auto", "cpu", "cuda"], help=DEVICE_HELP)
    r.add_argument("--log-every", type=int)
    r.add_argument("--eval-every", type=int)
    r.add_argument("--save-every", type=int)
    r.add_argument("--threads", type=int)
    r.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --out")
    r.add_argument("--overwrite", action="store_true",
                   help="replace a non-empty --out (the new run is built beside it, swapped in if it succeeds)")
    f = sub.add_parser("finetune", help="fine-tune a checkpoint: classification, regression, tagging or span QA")
    f.add_argument("--task", required=True, choices=FINETUNE_TASKS,
                   help="custom: your own DIR/train and DIR/dev (.tsv, .csv or .jsonl) with 'text' (, 'text_pair') "
                        "and 'label'")
    f.add_argument("--model", required=True, help="checkpoint directory (e.g. from `bertkit pretrain`)")
    f.add_argument("--data", required=True, help="directory with the task's split files (or the one file, with "
                                                 "--split-eval)")
    f.add_argument("--split-eval", type=float, metavar="FRACTION",
                   help="no training split: train on the evaluation file minus FRACTION of it, held out by "
                        "article / premise / sentence, and evaluate on that")
    f.add_argument("--out", required=True)
    f.add_argument("--init", choices=["pretrained", "random"], default="pretrained",
                   help="random: the same architecture from random weights (the no-pre-training baseline)")
    f.add_argument("--eval-split", help="split to evaluate on (default: dev; test for nsmc)")
    f.add_argument("--epochs", type=float)
    f.add_argument("--batch-size", type=int)
    f.add_argument("--max-length", type=int)
    f.add_argument("--max-train-examples", type=int)
    f.add_argument("--max-eval-examples", type=int)
    f.add_argument("--lr", type=float)
    f.add_argument("--dropout", type=float, help="hidden and attention dropout (default 0.1, the paper's)")
    f.add_argument("--warmup", type=float, help="fraction of steps (< 1) or number of steps (default 0.1)")
    f.add_argument("--features", choices=["embeddings", "second_to_last", "last", "sum_last_four",
                                          "concat_last_four", "sum_all"],
                   help="tagging, feature-based: freeze the encoder, train a BiLSTM on this combination of layers")
    f.add_argument("--lstm-hidden", type=int, help="feature-based: BiLSTM width per direction (default: the "
                                                  "encoder's hidden size)")
    f.add_argument("--seed", type=int)
    f.add_argument("--threads", type=int)
    f.add_argument("--device", choices=["auto", "cpu", "cuda"], help=DEVICE_HELP)
    f.add_argument("--grad-accum", type=int, help="micro-batches per step: the same batch in less memory (long QA "
                                                  "windows on a small GPU)")
    f.add_argument("--save-every", type=int, help="checkpoint every N steps, for --resume (default 0: none)")
    f.add_argument("--resume", action="store_true",
                   help="continue from the last checkpoint in --out (same flags; the best evaluation so far and "
                        "the training time carry over)")
    f.add_argument("--overwrite", action="store_true",
                   help="replace a non-empty --out (the new run is built beside it, swapped in if it succeeds)")
    f.add_argument("--group-by-length", action="store_true",
                   help="batches of similar lengths (less padding for attention to compute; QA windows vary most)")
    f.add_argument("--doc-stride", type=int, help="QA: step between windows, in tokens (default 128)")
    f.add_argument("--max-query-length", type=int, help="QA: question tokens kept (default 64)")
    f.add_argument("--max-answer-length", type=int, help="QA: longest answer, in tokens (default 30)")
    f.add_argument("--null-threshold", type=float, help="SQuAD 2.0: answer '' when null - best > this (default 0)")

    v = sub.add_parser("evaluate", help="a fine-tuned model's official metrics on a task's evaluation file")
    v.add_argument("--model", required=True, help="fine-tuned checkpoint directory")
    v.add_argument("--task", required=True, choices=FINETUNE_TASKS)
    v.add_argument("--data", required=True, help="the task's directory (its evaluation split is used) or a file")
    v.add_argument("--split", help="file stem to evaluate on (default: the task's evaluation split)")
    v.add_argument("--split-eval", type=float, metavar="FRACTION",
                   help="evaluate on the part held out by `finetune --split-eval FRACTION` (same --seed)")
    v.add_argument("--seed", type=int, default=12345)
    v.add_argument("--output", help="also write the metrics here as JSON")
    v.add_argument("--threads", type=int, default=0)

    d = sub.add_parser("predict", help="run a fine-tuned model over an input file, one JSON object per line")
    d.add_argument("--model", required=True, help="fine-tuned checkpoint directory")
    d.add_argument("--input", required=True, help="UTF-8 text, one input per line ('-' for stdin); QA: JSON lines "
                                                  "with 'question' and 'context'")
    d.add_argument("--output", required=True, help="output .jsonl, one object per input line")
    d.add_argument("--pairs", action="store_true", help="each line is text<TAB>text_pair (pair tasks)")
    d.add_argument("--batch-size", type=int, default=32)
    d.add_argument("--max-length", type=int)
    d.add_argument("--max-chars", type=int, default=MAX_CHARS,
                   help="characters of one input field read into memory (default 1,000,000); a longer field is "
                        "cut when what the model sees is provably within it, else refused with its line")
    d.add_argument("--threads", type=int, default=0)
    d.add_argument("--backend", choices=["torch", "onnx"], default="torch",
                   help="onnx: ONNX Runtime (exported once into the cache: $BERTKIT_CACHE, else ~/.cache/bertkit)")
    d.add_argument("--int8", action="store_true", help="dynamic int8 Linear layers (torch or ONNX Runtime)")

    k = sub.add_parser("distill", help="a smaller student from a teacher: task-specific (--task) or general "
                                       "(--corpus)")
    k.add_argument("--teacher", required=True, help="fine-tuned model (task-specific) or pre-trained BERT (general)")
    k.add_argument("--out", required=True)
    k.add_argument("--layers", help="teacher layers the student keeps, e.g. 0,2,4 (default: every other one)")
    k.add_argument("--temperature", type=float, default=2.0)
    k.add_argument("--alpha", type=float, default=0.5, help="weight of the soft targets (1 - alpha: gold labels)")
    k.add_argument("--cosine", type=float, default=0.0, help="weight of the hidden-state cosine term")
    k.add_argument("--task", choices=FINETUNE_TASKS)
    k.add_argument("--data", help="the task's directory or file")
    k.add_argument("--split-eval", type=float, metavar="FRACTION")
    k.add_argument("--corpus", nargs="+", help="general distillation: pre-training text files")
    k.add_argument("--vocab", help="general: tokenizer directory (default: the teacher's)")
    k.add_argument("--objective", choices=["bert", "roberta"], default="roberta")
    k.add_argument("--format", choices=["sentences", "paragraphs"], default="sentences")
    k.add_argument("--steps", type=int, default=1000, help="general: training steps")
    for name, kind in (("--epochs", float), ("--batch-size", int), ("--max-length", int),
                       ("--max-train-examples", int), ("--max-eval-examples", int), ("--lr", float),
                       ("--warmup", float), ("--seed", int), ("--threads", int)):
        k.add_argument(name, type=kind)
    k.add_argument("--device", choices=["auto", "cpu", "cuda"], help=DEVICE_HELP)
    k.add_argument("--group-by-length", action="store_true", help="task-specific: batches of similar lengths")
    k.add_argument("--save-every", type=int, help="checkpoint every N steps, for --resume")
    k.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --out (same flags)")
    k.add_argument("--overwrite", action="store_true",
                   help="replace a non-empty --out (the new run is built beside it, swapped in if it succeeds)")

    q = sub.add_parser("quantize", help="dynamic int8 quantisation of a model's encoder -> a new directory")
    q.add_argument("--model", required=True)
    q.add_argument("--out", required=True)
    q.add_argument("--overwrite", action="store_true",
                   help="replace a non-empty --out (the new model is built beside it, swapped in if it succeeds)")

    s = sub.add_parser("serve", help="the HTTP service (and the demo page) over one or more models")
    s.add_argument("--model", action="append", required=True, metavar="[NAME=]DIR",
                   help="a model directory, optionally named (repeat to serve several)")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--workers", type=int, default=1, help="processes (one thread per core is the CPU rule)")
    s.add_argument("--threads", type=int, default=1, help="torch threads per process")
    s.add_argument("--backend", choices=["torch", "onnx"], default="torch")
    s.add_argument("--int8", action="store_true")
    s.add_argument("--cache", type=int, default=0, help="LRU cache entries per model (0: none)")
    s.add_argument("--api-key", help="require this key on everything but /healthz and the page "
                                     "(Authorization: Bearer KEY, or X-API-Key); or BERTKIT_API_KEY")
    s.add_argument("--max-batch", type=int, default=32, help="items per model call")
    s.add_argument("--max-wait-ms", type=float, default=5.0, help="how long a request waits for company")
    s.add_argument("--max-queue", type=int, default=1024, help="items waiting before 503")
    s.add_argument("--max-items", type=int, default=256, help="texts per request")
    s.add_argument("--max-chars", type=int, default=20000, help="characters per text")
    s.add_argument("--on-long-text", choices=["truncate", "reject"], default="truncate")
    s.add_argument("--max-tokens", type=int, default=4096,
                   help="tokens per request the model reads, windows included (beyond: 413)")
    s.add_argument("--max-batch-tokens", type=int, default=2048, help="tokens per model call")
    s.add_argument("--request-timeout-s", type=float, default=30.0, help="answer or 504 within this")
    s.add_argument("--stall-after-s", type=float, default=10.0,
                   help="a model call running longer makes /healthz answer 503 stalled")
    s.add_argument("--header-timeout-s", type=float, default=10.0, help="a request's headers are due within this")
    s.add_argument("--body-timeout-s", type=float, default=15.0, help="a request's body is due within this")
    s.add_argument("--max-connections", type=int, default=128, help="connections at once (beyond: 503)")

    x = sub.add_parser("export", help="export a model for other runtimes")
    x.add_argument("--model", required=True)
    x.add_argument("--onnx", action="store_true", help="ONNX with dynamic batch and sequence axes")
    x.add_argument("--int8", action="store_true", help="ONNX Runtime dynamic int8 quantisation of the export")
    x.add_argument("--output", help="file to write (default: the cache entry that --backend onnx uses; its path "
                                    "is printed)")
    return p


VERBS: dict[str, Callable] = {"tokenize": run_tokenize, "encode": run_encode, "vocab": run_vocab,
                              "pretrain": run_pretrain, "finetune": run_finetune, "evaluate": run_evaluate,
                              "predict": run_predict, "distill": run_distill, "quantize": run_quantize,
                              "export": run_export, "serve": run_serve}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        VERBS[args.verb](args)
    except (ValueError, TypeError, ImportError) as e:
        # bertkit's own errors (ConfigError, CheckpointError, TokenizerError, CorpusError, ShardError, InputError)
        # are ValueErrors whose message names the file and line or field; so are the library's input checks.
        if args.verbose:
            raise
        print(f"bertkit {args.verb}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
