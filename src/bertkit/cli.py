"""`bertkit <verb>`: a dispatch table over library functions. Each verb is `run_<verb>(args)`; `main(argv)` is
what the console script and the tests call. Errors in the user's input end in one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np

from bertkit.checkpoint import atomic_path
from bertkit.data.tasks import find_split
from bertkit.train.finetune import TASK_INFO


class InputError(ValueError):
    """A malformed input file; the message names the file and line."""


FINETUNE_TASKS = list(TASK_INFO)


def read_inputs(path: str, pairs: bool) -> Iterator[tuple[int, str, str | None]]:
    """(line number, text, text_pair) for each line of an input file; `-` reads standard input.
    With `pairs`, each line is `text<TAB>text_pair`. Empty lines are kept (an empty text is valid input)."""
    stream = sys.stdin.buffer if path == "-" else None
    if stream is None and not Path(path).is_file():
        raise InputError(f"{path}: file not found")
    with (open(path, "rb") if stream is None else stream) as f:
        for lineno, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as e:
                raise InputError(f"{path}: line {lineno}: not valid UTF-8 (byte {e.start})") from None
            if not pairs:
                yield lineno, line, None
                continue
            parts = line.split("\t")
            if len(parts) != 2:
                raise InputError(f"{path}: line {lineno}: expected 'text<TAB>text_pair', found {len(parts)} "
                                 f"tab-separated field(s)")
            yield lineno, parts[0], parts[1]


def _batches(items: Iterable, size: int) -> Iterator[list]:
    it = iter(items)
    while chunk := list(itertools.islice(it, size)):
        yield chunk


# ---- verbs ------------------------------------------------------------------------------------------------------
def run_tokenize(args) -> None:
    from bertkit.tokenizer import Tokenizer

    tok = Tokenizer.from_pretrained(args.model)
    n = 0
    with atomic_path(args.output) as tmp, open(tmp, "w", encoding="utf-8") as out:  # streamed, in chunks
        for chunk in _batches(read_inputs(args.input, args.pairs), 4096):
            texts = [t for _, t, _ in chunk]
            pairs = [p for _, _, p in chunk] if args.pairs else None
            for enc in tok.encode_batch(texts, pairs, max_length=args.max_length):
                out.write(json.dumps({"input_ids": enc.ids, "token_type_ids": enc.type_ids,
                                      "offsets": [list(o) for o in enc.offsets]}) + "\n")
            n += len(chunk)
    print(f"tokenized {n} lines -> {args.output}", file=sys.stderr)


def run_encode(args) -> None:
    import torch
    from tqdm import tqdm

    from bertkit.checkpoint import load_pretrained
    from bertkit.model import BertModel
    from bertkit.tokenizer import Tokenizer

    if args.threads:
        torch.set_num_threads(args.threads)
    tok = Tokenizer.from_pretrained(args.model)
    model = load_pretrained(BertModel, args.model)
    max_length = min(args.max_length or model.config.max_position_embeddings, model.config.max_position_embeddings)
    rows = list(read_inputs(args.input, args.pairs))
    if not rows:
        raise InputError(f"{args.input}: no lines to encode")
    want_all = args.layers == "all"
    # Sort by length so each batch pads little; results go back to input order.
    encs = tok.encode_batch([t for _, t, _ in rows], [p for _, _, p in rows] if args.pairs else None, max_length)
    order = sorted(range(len(encs)), key=lambda i: len(encs[i]))
    last: list = [None] * len(encs)
    pooled: list = [None] * len(encs)
    layers: list = [None] * len(encs)
    with torch.inference_mode(), tqdm(total=len(encs), desc="encoding", unit="line",
                                      disable=not sys.stderr.isatty()) as bar:
        for idx in _batches(order, args.batch_size):
            batch = tok.collate([encs[i].ids for i in idx], [encs[i].type_ids for i in idx])
            out = model(**batch, output_hidden_states=want_all)
            for j, i in enumerate(idx):
                n = len(encs[i])
                last[i] = out.last_hidden_state[j, :n].numpy()
                if out.pooler_output is not None:
                    pooled[i] = out.pooler_output[j].numpy()
                if want_all:
                    layers[i] = torch.stack([h[j, :n] for h in out.hidden_states]).numpy()
            bar.update(len(idx))

    lengths = np.array([len(e) for e in encs], dtype=np.int64)
    arrays: dict[str, np.ndarray] = {"lengths": lengths}
    if args.padded:
        T = int(lengths.max())
        mask = (np.arange(T)[None, :] < lengths[:, None]).astype(np.int64)
        arrays["attention_mask"] = mask
        arrays["last_hidden_state"] = _pad([x for x in last], T)
        if want_all:
            arrays["hidden_states"] = np.stack([_pad([x[k] for x in layers], T) for k in range(layers[0].shape[0])])
    else:  # ragged: all tokens of all lines concatenated; line i is rows offsets[i]:offsets[i+1]
        arrays["offsets"] = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        arrays["last_hidden_state"] = np.concatenate(last)
        if want_all:
            arrays["hidden_states"] = np.concatenate(layers, axis=1)
    if pooled[0] is not None:
        arrays["pooler_output"] = np.stack(pooled)
    _atomic_savez(Path(args.output), arrays)
    shapes = ", ".join(f"{k} {v.shape}" for k, v in arrays.items())
    print(f"encoded {len(rows)} lines -> {args.output}: {shapes}", file=sys.stderr)


def _pad(rows: list[np.ndarray], T: int) -> np.ndarray:
    out = np.zeros((len(rows), T, rows[0].shape[-1]), dtype=np.float32)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out


def _atomic_savez(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)


def run_vocab(args) -> None:
    from bertkit.vocab import learn_vocab, save_vocab

    tok, report = learn_vocab(args.corpus, size=args.size, lowercase=args.lowercase,
                              strip_accents={"auto": None, "yes": True, "no": False}[args.strip_accents],
                              keep_hangul=not args.reference_hangul, min_frequency=args.min_frequency,
                              held_out_every=args.held_out_every, show_progress=sys.stderr.isatty())
    save_vocab(tok, report, args.out)
    print(report)
    print(f"wrote {args.out}/vocab.txt, tokenizer.json, tokenizer_config.json, vocab_report.json")


def run_pretrain(args) -> None:
    from bertkit.train.pretrain import PretrainConfig, run_pretrain

    base: dict = {}
    if args.config:
        path = Path(args.config)
        if not path.is_file():
            raise InputError(f"{path}: file not found")
        try:
            base = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise InputError(f"{path}: malformed JSON ({e})") from None
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
    result = run_pretrain(cfg, resume=args.resume, show_progress=sys.stderr.isatty())
    print(json.dumps({"out": cfg.out, **result}))


def run_finetune(args) -> None:
    from bertkit.train.finetune import TASK_INFO, FinetuneConfig, run_finetune

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
    if cfg.train.grad_accum < 1 or cfg.batch_size < 1:
        raise InputError(f"--batch-size {cfg.batch_size} and --grad-accum {cfg.train.grad_accum} must be at least 1")
    if cfg.batch_size % cfg.train.grad_accum:
        raise InputError(f"--batch-size {cfg.batch_size} is not a multiple of --grad-accum {cfg.train.grad_accum}")
    summary = run_finetune(cfg, resume=args.resume, show_progress=sys.stderr.isatty())
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
    summary = run_feature_based(cfg, show_progress=sys.stderr.isatty())
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
        from bertkit.checkpoint import atomic_write_text
        atomic_write_text(args.output, text + "\n")
    print(text)


def read_qa_inputs(path: str) -> Iterator[tuple[int, str, str]]:
    """(line number, question, context) from JSON lines with 'question' and 'context'."""
    for lineno, line, _ in read_inputs(path, pairs=False):
        try:
            item = json.loads(line)
        except json.JSONDecodeError as e:
            raise InputError(f"{path}: line {lineno}: not a JSON object ({e.msg})") from None
        if not isinstance(item, dict) or not isinstance(item.get("question"), str) \
                or not isinstance(item.get("context"), str):
            raise InputError(f"{path}: line {lineno}: expected {{\"question\": \"...\", \"context\": \"...\"}}")
        yield lineno, item["question"], item["context"]


def run_predict(args) -> None:
    from tqdm import tqdm

    from bertkit.infer.predictor import Predictor, PredictorSettings

    settings = PredictorSettings(batch_size=args.batch_size, max_length=args.max_length, threads=args.threads,
                                 backend=args.backend, int8=args.int8)
    predictor = Predictor.from_pretrained(args.model, settings)
    family = predictor.family
    if family == "qa":
        rows = list(read_qa_inputs(args.input))
    else:
        rows = list(read_inputs(args.input, args.pairs))
    n = 0
    with atomic_path(args.output) as tmp, open(tmp, "w", encoding="utf-8") as out, \
            tqdm(total=len(rows), desc="predicting", unit="line", disable=not sys.stderr.isatty()) as bar:
        for chunk in _batches(rows, 1024):
            if family == "qa":
                results = predictor.answer([q for _, q, _ in chunk], [c for _, _, c in chunk])
            elif family == "tagging":
                results = predictor.tag([t for _, t, _ in chunk])
            elif family == "embedding":
                results = [{"vector": v.tolist()} for v in predictor.embed([t for _, t, _ in chunk])]
            else:
                results = predictor.classify([t for _, t, _ in chunk], [p for _, _, p in chunk] if args.pairs else None)
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
    summary = run_distill(cfg, resume=args.resume, show_progress=sys.stderr.isatty())
    print(json.dumps(summary, default=str))


def run_quantize(args) -> None:
    from bertkit.checkpoint import load_model
    from bertkit.infer.quantize import quantize_int8, save_int8
    from bertkit.tokenizer import Tokenizer

    if Path(args.out).resolve() == Path(args.model).resolve():
        raise InputError(f"{args.out}: write the int8 model to another directory than its float source")
    model = quantize_int8(load_model(args.model), inplace=True)
    save_int8(model, args.out, tokenizer=Tokenizer.from_pretrained(args.model))
    print(f"int8 model -> {args.out}", file=sys.stderr)


def run_export(args) -> None:
    from bertkit.checkpoint import load_model
    from bertkit.infer.onnxrt import export_onnx, onnx_file, quantize_onnx

    if not args.onnx:
        raise InputError("export: choose a format (--onnx)")
    if args.output:
        model = load_model(args.model)
        path = export_onnx(model, args.output if not args.int8 else str(args.output) + ".fp32")
        if args.int8:
            quantize_onnx(path, args.output)
            path.unlink()
        print(f"ONNX -> {args.output}", file=sys.stderr)
        return
    from bertkit.config import BertConfig
    from bertkit.heads import HEADS

    config = BertConfig.from_json_file(Path(args.model) / "config.json")
    head = HEADS.get((config.architectures or ["BertModel"])[0], HEADS["BertModel"])
    print(f"ONNX -> {onnx_file(args.model, head, int8=args.int8)}", file=sys.stderr)


def run_serve(args) -> None:
    import dataclasses
    import os

    import uvicorn

    from bertkit.serve.app import CONFIG_ENV, BatcherSettings, ServeSettings, app_from_env

    models = {}
    for spec in args.model:
        name, _, path = spec.rpartition("=")
        name = name or Path(path.rstrip("/")).name
        if name in models:
            raise InputError(f"--model {spec}: the name '{name}' is used twice (give NAME=DIR)")
        if not (Path(path) / "config.json").is_file():
            raise InputError(f"--model {spec}: {path}/config.json not found")
        models[name] = path
    settings = ServeSettings(api_key=args.api_key or os.environ.get("BERTKIT_API_KEY"), max_items=args.max_items,
                             max_chars=args.max_chars, on_long_text=args.on_long_text,
                             batcher=BatcherSettings(max_batch=args.max_batch, max_wait_ms=args.max_wait_ms,
                                                     max_queue=args.max_queue))
    os.environ[CONFIG_ENV] = json.dumps({"models": models, "threads": args.threads, "backend": args.backend,
                                         "int8": args.int8, "cache_size": args.cache,
                                         "settings": dataclasses.asdict(settings)})
    app = app_from_env() if args.workers == 1 else None  # load here: a bad model fails before the port opens
    print(f"bertkit serve: http://{args.host}:{args.port}/ (page), /docs (API), {args.workers} worker(s); models: "
          + ", ".join(f"{n} = {p} ({app.state.predictors[n].family})" if app else f"{n} = {p}"
                      for n, p in models.items()), file=sys.stderr, flush=True)
    if app is not None:
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    else:
        uvicorn.run("bertkit.serve.app:app_from_env", factory=True, host=args.host, port=args.port,
                    workers=args.workers, log_level="warning")


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
    d.add_argument("--threads", type=int, default=0)
    d.add_argument("--backend", choices=["torch", "onnx"], default="torch",
                   help="onnx: ONNX Runtime (exports to MODEL/onnx/ the first time)")
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

    q = sub.add_parser("quantize", help="dynamic int8 quantisation of a model's encoder -> a new directory")
    q.add_argument("--model", required=True)
    q.add_argument("--out", required=True)

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
    s.add_argument("--api-key", help="require this key (X-API-Key or Authorization: Bearer); or BERTKIT_API_KEY")
    s.add_argument("--max-batch", type=int, default=32, help="items per model call")
    s.add_argument("--max-wait-ms", type=float, default=5.0, help="how long a request waits for company")
    s.add_argument("--max-queue", type=int, default=1024, help="items waiting before 503")
    s.add_argument("--max-items", type=int, default=256, help="texts per request")
    s.add_argument("--max-chars", type=int, default=20000, help="characters per text")
    s.add_argument("--on-long-text", choices=["truncate", "reject"], default="truncate")

    x = sub.add_parser("export", help="export a model for other runtimes")
    x.add_argument("--model", required=True)
    x.add_argument("--onnx", action="store_true", help="ONNX with dynamic batch and sequence axes")
    x.add_argument("--int8", action="store_true", help="ONNX Runtime dynamic int8 quantisation of the export")
    x.add_argument("--output", help="file to write (default: MODEL/onnx/model[.int8].onnx, what --backend onnx uses)")
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
