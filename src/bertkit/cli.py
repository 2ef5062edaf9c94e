"""`bertkit <verb>`: a dispatch table over library functions. Each verb is `run_<verb>(args)`; `main(argv)` is
what the console script and the tests call. Errors in the user's input end in one line on stderr and exit code 2.

Flags, their defaults and their choices come from where the library defines them: the config dataclasses'
fields (`FinetuneConfig`, `TrainConfig`, `QASettings`, `PredictorSettings`, `ServeSettings`, `BatcherSettings`,
`PretrainConfig`, `DistillSettings`, ...; `--max-tokens` is `max_tokens`), the parameters of the functions the
verbs call (`bertkit.infer.batchio`, `learn_vocab`), and the registries (tasks, families, sizes). Only the
verb that runs has its flags built, so `bertkit tokenize` loads neither the trainer nor the server.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path

from bertkit.data.tasks import TASKS, find_split, get_task
from bertkit.infer.batchio import MAX_CHARS, InputError, read_inputs  # noqa: F401  (read_inputs: re-exported)
from bertkit.io import atomic_path, check_not_input

DEVICE_HELP = "where training runs: auto (default: a GPU when there is one), cpu or cuda"
MAX_CHARS_HELP = ("characters of one input field read into memory (default {default:,}); a longer field is cut "
                  "when what the model sees is provably within it, else refused with its line")
OVERWRITE_HELP = "replace a non-empty --out (the new {what} is built beside it, swapped in if it succeeds)"
TOKENIZE_CHUNK = ENCODE_CHUNK = PREDICT_CHUNK = None  # None: batchio's chunk sizes (tests set them smaller)


# ---- flags from the library's own definitions --------------------------------------------------------------------
_TYPES = {"int": int, "float": float, "str": str}


def _value_type(annotation: str, default):
    """The argparse type of a field from its default, or from its annotation when the default is None."""
    if default is not None and not isinstance(default, bool):
        return type(default)
    for part in str(annotation).replace(" ", "").split("|"):
        if part in _TYPES:
            return _TYPES[part]
    return str


def _flag(parser, name: str, annotation, default, help: str | None, keep_default: bool, choices=None,
          flag: str | None = None, **extra) -> None:
    flag = flag or "--" + name.replace("_", "-")
    if isinstance(default, bool) and not default:
        parser.add_argument(flag, dest=name, action="store_true", help=help, **extra)
        return
    if not keep_default and default not in (None, "") and help is not None and "default" not in help:
        help = f"{help} (default {default})"
    parser.add_argument(flag, dest=name, type=_value_type(annotation, default), choices=choices,
                        default=default if keep_default else None, help=help, **extra)


def add_fields(parser, config, names, help: dict[str, str] | None = None, choices: dict | None = None,
               keep_default: bool = False, flags: dict[str, str] | None = None, **extra) -> None:
    """A flag for each named field of the dataclass `config` (`max_tokens` -> `--max-tokens`), typed by its
    default: the field's, or the instance's value when `config` is an instance (FinetuneConfig().train holds
    fine-tuning's TrainConfig defaults). `keep_default`: the flag's default is that value; otherwise None (the
    caller applies only the flags given, so a config file or a task's defaults still decide) and the help
    shows it."""
    fields = {f.name: f for f in dataclasses.fields(config)}
    for name in names:
        f = fields[name]
        if not isinstance(config, type):
            default = getattr(config, name)
        else:
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        _flag(parser, name, f.type, default, (help or {}).get(name), keep_default, (choices or {}).get(name),
              (flags or {}).get(name), **extra)


def add_params(parser, fn: Callable, names, help: dict[str, str] | None = None, choices: dict | None = None,
               flags: dict[str, str] | None = None, required=()) -> None:
    """A flag for each named parameter of `fn`, with the parameter's default (or required)."""
    params = inspect.signature(fn).parameters
    for name in names:
        p = params[name]
        text = (help or {}).get(name)
        if name in required:
            parser.add_argument((flags or {}).get(name) or "--" + name.replace("_", "-"), dest=name, required=True,
                                help=text)
            continue
        _flag(parser, name, p.annotation, p.default, text, True, (choices or {}).get(name), (flags or {}).get(name))


def apply(args, obj, names) -> None:
    """Set each of `names` on `obj` from the flags that were given (not None)."""
    for name in names:
        if getattr(args, name, None) is not None:
            setattr(obj, name, getattr(args, name))


# ---- verbs ------------------------------------------------------------------------------------------------------
def _chunk(value):
    return {} if value is None else {"chunk": value}


def add_tokenize(t) -> None:
    from bertkit.infer.batchio import tokenize_file

    add_params(t, tokenize_file, ("model", "input", "output", "pairs", "max_length", "max_chars"), required=(
        "model", "input", "output"), help={
        "model": "checkpoint or tokenizer directory (vocab.txt / tokenizer.json)",
        "input": "UTF-8 text file, one input per line ('-' for stdin)",
        "output": "output .jsonl, one object per input line", "pairs": "each line is text<TAB>text_pair",
        "max_length": "truncate to N tokens (pairs: longest first)",
        "max_chars": MAX_CHARS_HELP.format(default=MAX_CHARS)})


def run_tokenize(args) -> None:
    from bertkit.infer.batchio import tokenize_file

    n = tokenize_file(args.model, args.input, args.output, args.pairs, args.max_length, args.max_chars,
                      **_chunk(TOKENIZE_CHUNK))
    print(f"tokenized {n} lines -> {args.output}", file=sys.stderr)


def add_encode(e) -> None:
    from bertkit.infer.batchio import encode_file

    add_params(e, encode_file, ("model", "input", "output", "pairs", "layers", "padded", "max_length", "max_chars",
                                "batch_size", "threads"), required=("model", "input", "output"),
               choices={"layers": ["last", "all"]}, help={
        "model": "HF BERT checkpoint directory", "input": "UTF-8 text file, one input per line ('-' for stdin)",
        "output": "output .npz", "pairs": "each line is text<TAB>text_pair",
        "layers": "'all' adds hidden_states: the embeddings and every layer",
        "padded": "(lines, T, H) arrays with attention_mask instead of ragged arrays with offsets",
        "max_length": "truncate to N tokens (default: the model's limit)",
        "max_chars": MAX_CHARS_HELP.format(default=MAX_CHARS),
        "threads": "torch threads (default: torch's choice)"})


def run_encode(args) -> None:
    from bertkit.infer.batchio import encode_file

    if args.batch_size < 1:
        raise InputError(f"--batch-size {args.batch_size}: must be at least 1")
    n, shapes = encode_file(args.model, args.input, args.output, args.pairs, args.layers, args.padded,
                            args.max_length, args.max_chars, args.batch_size, args.threads, **_chunk(ENCODE_CHUNK))
    print(f"encoded {n} lines -> {args.output}: {shapes}", file=sys.stderr)


def add_vocab(v) -> None:
    from bertkit.vocab import KINDS, learn_vocab

    v.add_argument("--corpus", required=True, nargs="+", help="text files (.txt or .gz), one sentence/line")
    v.add_argument("--out", required=True, help="output directory")
    add_params(v, learn_vocab, ("size", "kind", "min_frequency", "held_out_every"), choices={"kind": KINDS}, help={
        "size": "vocabulary size, special tokens included",
        "kind": "WordPiece (BERT), byte-level BPE (RoBERTa) or SentencePiece Unigram",
        "held_out_every": "every N-th line is held out for the report"})
    case = v.add_mutually_exclusive_group()
    lowercase = inspect.signature(learn_vocab).parameters["lowercase"].default
    case.add_argument("--lowercase", dest="lowercase", action="store_true", default=lowercase,
                      help="(default: the kind's convention)" if lowercase is None else "(default)")
    case.add_argument("--cased", dest="lowercase", action="store_false", help="keep letter case")
    v.add_argument("--strip-accents", choices=["auto", "yes", "no"], default="auto",
                   help="auto: strip when lower-casing, as the reference")
    v.add_argument("--reference-hangul", action="store_true",
                   help="decompose Hangul into jamo when stripping accents, as the reference BERT does")
    v.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP.format(what="vocabulary"))


def run_vocab(args) -> None:
    from bertkit.io import prepare_output_dir
    from bertkit.vocab import learn_vocab, save_vocab

    target = prepare_output_dir(args.out, verb="vocab", inputs=args.corpus, overwrite=args.overwrite,
                                resumable=False)  # refused before the corpus is read, written once it is learned
    tok, report = learn_vocab(args.corpus, size=args.size, kind=args.kind, lowercase=args.lowercase,
                              strip_accents={"auto": None, "yes": True, "no": False}[args.strip_accents],
                              keep_hangul=not args.reference_hangul, min_frequency=args.min_frequency,
                              held_out_every=args.held_out_every, show_progress=sys.stderr.isatty())
    with target as work:
        save_vocab(tok, report, work)
    print(report)
    print(f"wrote {', '.join(sorted(f.name for f in Path(args.out).iterdir()))} in {args.out}")


TRAIN_HELP = {"steps": "optimizer steps", "batch_size": "global batch (all processes, all accumulation steps)",
              "grad_accum": "micro-batches per step: the same batch in less memory (long QA windows on a small GPU)",
              "warmup": "fraction of steps (< 1) or number of steps", "device": DEVICE_HELP,
              "save_every": "checkpoint every N steps, for --resume (0: only at the end)",
              "lr": "peak learning rate", "seed": "random seed", "threads": "torch threads (0: torch's choice)",
              "bf16": "bfloat16 autocast on a GPU", "log_every": "log every N steps",
              "eval_every": "evaluate every N steps (0: only at the end)"}
TRAIN_CHOICES = {"bf16": ["auto", "on", "off"], "device": ["auto", "cpu", "cuda"]}
PRETRAIN_TRAIN = ("steps", "lr", "warmup", "grad_accum", "seed", "bf16", "log_every", "eval_every", "save_every",
                  "threads", "device")
PRETRAIN_TOP = ("corpus", "vocab", "out", "size", "arch", "objective", "format", "max_seq_length", "batch_size",
                "eval_fraction", "init", "embedding_init", "freeze_body_steps")


def add_pretrain(r) -> None:
    from bertkit.config import SIZES
    from bertkit.data.corpus import FORMATS
    from bertkit.data.pretraining import MaskingConfig
    from bertkit.train.pretrain import ARCHS, OBJECTIVES, PretrainConfig

    r.add_argument("--corpus", nargs="+", help="text files (.txt or .gz), blank line between documents")
    r.add_argument("--config", help="JSON file with PretrainConfig fields; flags given here override it")
    from bertkit.train.transfer import EMBEDDING_INITS

    add_fields(r, PretrainConfig, PRETRAIN_TOP[1:], choices={
        "size": list(SIZES), "arch": list(ARCHS), "objective": list(OBJECTIVES), "format": list(FORMATS),
        "embedding_init": list(EMBEDDING_INITS)}, help={
        "init": "transfer: start from the body of this BERT directory (e.g. all-MiniLM-L6-v2) on the vocabulary "
                "of --vocab; its size and shape replace --size",
        "embedding_init": "--init: new embedding rows from the old ones: shared pieces copied, the others the mean "
                          "of the old pieces of their text (mean), shared only (overlap), or none (random)",
        "freeze_body_steps": "--init: the first N steps train only the word embeddings and the MLM head",
        "vocab": "tokenizer directory, e.g. from `bertkit vocab`",
        "out": "output directory: checkpoints/, metrics.jsonl/.png, the final model",
        "size": "model size", "max_seq_length": "tokens per sequence",
        "arch": "the family written (HF BertForPreTraining, RobertaForMaskedLM, ElectraForPreTraining + "
                "generator/, AlbertForPreTraining)",
        "objective": "MLM + NSP, MLM on packed sentences, ELECTRA's replaced-token detection, or MLM + "
                     "sentence-order prediction (default: the arch's own; bert for --arch bert)",
        "format": "one sentence per line or one paragraph per line (split into sentences)",
        "batch_size": TRAIN_HELP["batch_size"], "eval_fraction": "fraction of documents held out"})
    add_fields(r, PretrainConfig().train, PRETRAIN_TRAIN, help=TRAIN_HELP, choices=TRAIN_CHOICES)
    add_fields(r, MaskingConfig, ("whole_word", "duplication"), help={
        "whole_word": "mask whole words", "duplication": "static masking with N copies (0: dynamic)"})
    r.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --out")
    r.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP.format(what="run"))


def run_pretrain(args) -> None:
    from bertkit.train.pretrain import PretrainConfig, run_pretrain

    base: dict = {}
    if args.config:
        from bertkit.io import read_json

        base = read_json(args.config, "JSON")
        if not isinstance(base, dict):
            raise InputError(f"{args.config}: expected a JSON object of PretrainConfig fields")
    base.update({k: getattr(args, k) for k in PRETRAIN_TOP if getattr(args, k) is not None})
    base.setdefault("train", {}).update({k: getattr(args, k) for k in PRETRAIN_TRAIN if getattr(args, k) is not None})
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
    check_not_input(cfg.out, [args.config], "pretrain")
    result = run_pretrain(cfg, resume=args.resume, overwrite=args.overwrite, show_progress=sys.stderr.isatty())
    print(json.dumps({"out": cfg.out, **result}))


TASK_HELP = ("a registered task (its reader, family, metric and splits: bertkit.data.tasks); custom: your own "
             "DIR/train and DIR/dev (.tsv, .csv or .jsonl) with 'text' (, 'text_pair') and 'label'")
FINETUNE_TOP = ("max_length", "batch_size", "epochs", "max_train_examples", "max_eval_examples", "dropout",
                "validation")
FINETUNE_TRAIN = ("lr", "seed", "threads", "warmup", "device", "save_every", "grad_accum")
FINETUNE_QA = ("doc_stride", "max_query_length", "max_answer_length", "null_threshold")
FINETUNE_HELP = {"max_length": "tokens per example (default: the task's, 128; QA 384)",
                 "batch_size": "examples per step", "epochs": "passes over the training set",
                 "max_train_examples": "a seeded sample of the training set (0: all)",
                 "max_eval_examples": "the first N evaluation examples (0: all)",
                 "dropout": "hidden and attention dropout (the paper's)",
                 "init": "random: the same architecture from random weights (the no-pre-training baseline)",
                 "group_by_length": "batches of similar lengths (less padding for attention to compute; QA windows "
                                    "vary most)",
                 "validation": "score on FRACTION of the training examples held out (by group or text), not on the "
                               "evaluation split: for choosing settings such as --lr",
                 "split_eval": "no training split: train on the evaluation file minus FRACTION of it, held out by "
                               "article / premise / sentence, and evaluate on that",
                 "doc_stride": "QA: step between windows, in tokens", "max_query_length": "QA: question tokens kept",
                 "max_answer_length": "QA: longest answer, in tokens",
                 "null_threshold": "SQuAD 2.0: answer '' when null - best > this"}


def task_choices() -> list[str]:
    """The registered tasks whose family is fine-tuned (read when a parser is built)."""
    from bertkit.task_families import get_family

    return [name for name, task in TASKS.items() if get_family(task.family).trainable]


def add_finetune(f) -> None:
    from bertkit.data.features import QASettings
    from bertkit.train.feature_based import MODES, FeatureConfig
    from bertkit.train.finetune import FinetuneConfig

    f.add_argument("--task", required=True, choices=task_choices(), help=TASK_HELP)
    f.add_argument("--model", required=True, help="checkpoint directory (e.g. from `bertkit pretrain`)")
    f.add_argument("--data", required=True, help="directory with the task's split files (or the one file, with "
                                                 "--split-eval)")
    f.add_argument("--out", required=True)
    f.add_argument("--eval-split", help="split to evaluate on (default: the task's evaluation split)")
    add_fields(f, FinetuneConfig, ("split_eval",), help=FINETUNE_HELP, metavar="FRACTION")
    add_fields(f, FinetuneConfig, ("init",), help=FINETUNE_HELP, keep_default=True,
               choices={"init": ["pretrained", "random"]})
    add_fields(f, FinetuneConfig, FINETUNE_TOP, help=FINETUNE_HELP)
    add_fields(f, FinetuneConfig().train, FINETUNE_TRAIN, help=TRAIN_HELP, choices=TRAIN_CHOICES)
    f.add_argument("--features", choices=list(MODES),
                   help="tagging, feature-based: freeze the encoder, train a BiLSTM on this combination of layers")
    add_fields(f, FeatureConfig, ("lstm_hidden",), help={
        "lstm_hidden": "feature-based: BiLSTM width per direction (0: the encoder's hidden size)"})
    f.add_argument("--resume", action="store_true",
                   help="continue from the last checkpoint in --out (same flags; the best evaluation so far and "
                        "the training time carry over)")
    f.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP.format(what="run"))
    add_fields(f, FinetuneConfig, ("group_by_length",), help=FINETUNE_HELP)
    add_fields(f, QASettings, FINETUNE_QA, help=FINETUNE_HELP)


def _splits(args, task_name: str) -> dict:
    """train_file / eval_file (or split_eval) of a task from --data, --eval-split and --split-eval."""
    train_split, eval_split = get_task(task_name).splits
    files = {"eval_file": str(find_split(args.data, getattr(args, "eval_split", None) or eval_split))}
    if args.split_eval is None:
        files["train_file"] = str(find_split(args.data, train_split))
    else:
        files["split_eval"] = args.split_eval
    return files


def run_finetune(args) -> None:
    from bertkit.train.finetune import FinetuneConfig, run_finetune

    check_not_input(args.out, [args.data, args.model], "finetune")
    if args.features:
        if args.group_by_length:  # the BiLSTM trains on cached features; its batches are not grouped
            raise InputError("--group-by-length is for fine-tuning the encoder, not with --features")
        if args.validation:
            raise InputError("--validation is for fine-tuning the encoder, not with --features")
        return run_feature_finetune(args)
    cfg = FinetuneConfig(task=args.task, model=args.model, out=args.out, init=args.init, **_splits(args, args.task))
    cfg.max_length = get_task(args.task).max_length
    apply(args, cfg, FINETUNE_TOP)
    cfg.qa.max_length = cfg.max_length
    apply(args, cfg.qa, FINETUNE_QA)
    apply(args, cfg.train, FINETUNE_TRAIN)
    cfg.group_by_length = args.group_by_length
    summary = run_finetune(cfg, resume=args.resume, overwrite=args.overwrite, show_progress=sys.stderr.isatty())
    print(json.dumps({k: v for k, v in summary.items() if k != "config"}))


def run_feature_finetune(args) -> None:
    from bertkit.train.feature_based import FeatureConfig, run_feature_based

    cfg = FeatureConfig(task=args.task, model=args.model, out=args.out, features=args.features,
                        **_splits(args, args.task))
    apply(args, cfg, ("max_length", "batch_size", "epochs", "max_train_examples", "max_eval_examples",
                      "lstm_hidden"))
    apply(args, cfg.train, ("lr", "seed", "threads", "warmup", "device"))
    summary = run_feature_based(cfg, resume=args.resume, overwrite=args.overwrite, show_progress=sys.stderr.isatty())
    print(json.dumps({k: v for k, v in summary.items() if k != "config"}))


def add_evaluate(v) -> None:
    from bertkit.train.finetune import evaluate_model

    v.add_argument("--model", required=True, help="fine-tuned checkpoint directory")
    v.add_argument("--task", required=True, choices=task_choices(), help=TASK_HELP)
    v.add_argument("--data", required=True, help="the task's directory (its evaluation split is used) or a file")
    v.add_argument("--split", help="file stem to evaluate on (default: the task's evaluation split)")
    add_params(v, evaluate_model, ("split_eval", "seed"), help={
        "split_eval": "evaluate on the part held out by `finetune --split-eval FRACTION` (same --seed)"})
    v.add_argument("--output", help="also write the metrics here as JSON")
    v.add_argument("--threads", type=int, default=0)


def run_evaluate(args) -> None:
    from bertkit.train.finetune import evaluate_model

    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    path = find_split(args.data, args.split or get_task(args.task).splits[1])
    result = evaluate_model(args.model, args.task, path, split_eval=args.split_eval or 0.0, seed=args.seed)
    text = json.dumps({**result, "model": args.model, "data": str(path)}, indent=2)
    if args.output:
        from bertkit.io import atomic_write_text
        atomic_write_text(args.output, text + "\n")
    print(text)


BACKEND_HELP = ("auto (default): ONNX Runtime where the model has an ONNX graph, exported once into the cache "
                "($BERTKIT_CACHE, else ~/.cache/bertkit), else PyTorch; OpenVINO for --bf16; or torch / onnx / "
                "openvino by name. The choice is printed when the model loads")
CALIBRATION_HELP = ("int8 only if it agrees with fp32 on the first 500 inputs of FILE (the --input format; "
                    "labels, entities or answers equal, scores or vectors correlated: see infer/calibrate.py); "
                    "the agreement and the choice are printed")
BF16_HELP = ("bfloat16 on OpenVINO (pip install 'bertkit[openvino]'), on a CPU with bf16 instructions: 1.5-2x "
             "fp32's throughput here, outputs a little off fp32 (benchmarks/RESULTS.md)")
PREDICT_FIELDS = ("batch_size", "max_tokens", "max_length", "threads", "backend", "int8", "bf16")


def add_predict(d) -> None:
    from bertkit.infer.batchio import predict_file
    from bertkit.infer.predictor import BACKENDS, PredictorSettings

    d.add_argument("--model", required=True, help="fine-tuned checkpoint directory")
    d.add_argument("--input", required=True, help="UTF-8 text, one input per line ('-' for stdin); QA: JSON lines "
                                                  "with 'question' and 'context'")
    d.add_argument("--output", required=True, help="output .jsonl, one object per input line")
    add_params(d, predict_file, ("pairs", "max_chars"), help={
        "pairs": "each line is text<TAB>text_pair (pair tasks)", "max_chars": MAX_CHARS_HELP.format(default=MAX_CHARS)})
    add_fields(d, PredictorSettings, PREDICT_FIELDS, keep_default=True, choices={"backend": list(BACKENDS)}, help={
        "backend": BACKEND_HELP,
        "int8": "dynamic int8 Linear layers (torch or ONNX Runtime)", "bf16": BF16_HELP,
        "max_length": "tokens per window (default: the model's limit)",
        "batch_size": "inputs per model call at most (default %(default)s)",
        "max_tokens": "tokens per model call at most, padding included (default %(default)s: off)"})
    d.add_argument("--int8-calibration", metavar="FILE", help=CALIBRATION_HELP)


def run_predict(args) -> None:
    from bertkit.infer.batchio import predict_file
    from bertkit.infer.predictor import PredictorSettings

    if args.int8_calibration and (args.int8 or args.bf16):
        raise InputError(f"--int8-calibration: decides int8 itself; drop --{'int8' if args.int8 else 'bf16'}")
    settings = PredictorSettings(**{k: getattr(args, k) for k in PREDICT_FIELDS})
    n, family = predict_file(args.model, args.input, args.output, settings, args.pairs, args.max_chars,
                             calibration=args.int8_calibration, **_chunk(PREDICT_CHUNK))
    print(f"predicted {n} lines ({family}) -> {args.output}", file=sys.stderr)


DISTILL_FT = ("max_length", "batch_size", "epochs", "max_train_examples", "max_eval_examples")
DISTILL_TRAIN = ("lr", "seed", "threads", "warmup", "device", "save_every")


def add_distill(k) -> None:
    from bertkit.data.corpus import FORMATS
    from bertkit.data.pretraining import OBJECTIVES
    from bertkit.train.distill import DistillSettings
    from bertkit.train.finetune import FinetuneConfig

    k.add_argument("--teacher", required=True, help="fine-tuned model (task-specific) or pre-trained BERT (general)")
    k.add_argument("--out", required=True)
    k.add_argument("--layers", help="teacher layers the student keeps, e.g. 0,2,4 (default: every other one)")
    add_fields(k, DistillSettings, ("temperature", "alpha", "cosine"), keep_default=True, help={
        "alpha": "weight of the soft targets (1 - alpha: gold labels)", "cosine": "weight of the hidden-state "
                                                                                 "cosine term"})
    k.add_argument("--task", choices=task_choices(), help=TASK_HELP)
    k.add_argument("--data", help="the task's directory or file")
    add_fields(k, FinetuneConfig, ("split_eval",), help=FINETUNE_HELP, metavar="FRACTION")
    k.add_argument("--corpus", nargs="+", help="general distillation: pre-training text files")
    k.add_argument("--vocab", help="general: tokenizer directory (default: the teacher's)")
    # general distillation's own defaults: RoBERTa's objective (no NSP pairs to build), 1000 steps
    k.add_argument("--objective", choices=list(OBJECTIVES), default="roberta")
    k.add_argument("--format", choices=list(FORMATS), default="sentences")
    k.add_argument("--steps", type=int, default=1000, help="general: training steps")
    add_fields(k, FinetuneConfig, DISTILL_FT, help=FINETUNE_HELP)
    add_fields(k, FinetuneConfig().train, DISTILL_TRAIN, help=TRAIN_HELP, choices=TRAIN_CHOICES)
    add_fields(k, FinetuneConfig, ("group_by_length",), help={"group_by_length": "task-specific: batches of "
                                                                                "similar lengths"})
    k.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --out (same flags)")
    k.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP.format(what="run"))


def run_distill(args) -> None:
    from bertkit.train.distill import DistillConfig, DistillSettings, run_distill

    cfg = DistillConfig(teacher=args.teacher, out=args.out,
                        layers=[int(x) for x in args.layers.split(",")] if args.layers else [],
                        settings=DistillSettings(temperature=args.temperature, alpha=args.alpha, cosine=args.cosine))
    train = {k: getattr(args, k) for k in DISTILL_TRAIN if getattr(args, k) is not None}
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
        ft = {"task": args.task, **_splits(args, args.task), "train": train}
        ft.update({key: getattr(args, key) for key in DISTILL_FT if getattr(args, key) is not None})
        if args.group_by_length:
            ft["group_by_length"] = True
        cfg.finetune = ft
    check_not_input(args.out, [args.data], "distill")
    summary = run_distill(cfg, resume=args.resume, overwrite=args.overwrite, show_progress=sys.stderr.isatty())
    print(json.dumps(summary, default=str))


def add_quantize(q) -> None:
    q.add_argument("--model", required=True)
    q.add_argument("--out", required=True)
    q.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP.format(what="model"))


def run_quantize(args) -> None:
    from bertkit.heads import load_model
    from bertkit.infer.quantize import quantize_int8, save_int8
    from bertkit.infer.sentence_head import copy_sentence_modules
    from bertkit.io import prepare_output_dir
    from bertkit.tokenizer import Tokenizer

    target = prepare_output_dir(args.out, verb="quantize", inputs=[args.model], overwrite=args.overwrite,
                                resumable=False)
    model = quantize_int8(load_model(args.model), inplace=True)
    tokenizer = Tokenizer.from_pretrained(args.model)
    with target as work:
        save_int8(model, work, tokenizer=tokenizer)
        copy_sentence_modules(args.model, work)  # a sentence-transformers directory keeps its pooling and window
    print(f"int8 model -> {args.out}", file=sys.stderr)


def add_export(x) -> None:
    x.add_argument("--model", required=True)
    x.add_argument("--onnx", action="store_true", help="ONNX with dynamic batch and sequence axes")
    x.add_argument("--int8", action="store_true", help="ONNX Runtime dynamic int8 quantisation of the export")
    x.add_argument("--output", help="file to write (default: the cache entry that --backend onnx uses; its path "
                                    "is printed)")


def run_export(args) -> None:
    from bertkit.heads import load_model
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
    from bertkit.heads import head_class

    head = head_class(BertConfig.from_json_file(Path(args.model) / "config.json"))
    path = onnx_file(args.model, head, int8=args.int8)
    print(f"ONNX -> {path} (the cache entry that --backend onnx uses)", file=sys.stderr)
    print(path)


SERVE_HELP = {"max_batch": "items per model call", "max_wait_ms": "how long a request waits for company",
              "max_queue": "items waiting before 503", "max_items": "texts per request",
              "max_chars": "characters per text",
              "max_tokens": "tokens per request the model reads, windows included (beyond: 413)",
              "max_cluster_items": "texts per /v1/cluster request",
              "max_cluster_tokens": "tokens per /v1/cluster request",
              "max_batch_tokens": "tokens per model call", "request_timeout_s": "answer or 504 within this",
              "stall_after_s": "a model call running longer makes /healthz answer 503 stalled",
              "header_timeout_s": "a request's headers are due within this",
              "body_timeout_s": "a request's body is due within this",
              "max_connections": "connections at once (beyond: 503)",
              "api_key": "require this key on everything but /healthz and the page (Authorization: Bearer KEY, "
                         "or X-API-Key); or BERTKIT_API_KEY",
              "threads": "threads per process (PyTorch or ONNX Runtime)", "backend": BACKEND_HELP,
              "bf16": BF16_HELP,
              "cache_size": "LRU cache entries per model (0: none)"}
SERVE_FIELDS = ("api_key", "max_items", "max_chars", "on_long_text", "max_tokens", "max_cluster_items",
                "max_cluster_tokens", "request_timeout_s",
                "stall_after_s", "header_timeout_s", "body_timeout_s", "max_connections")
BATCHER_FIELDS = ("max_batch", "max_wait_ms", "max_queue", "max_batch_tokens")


def add_serve(s) -> None:
    from bertkit.infer.predictor import BACKENDS
    from bertkit.serve.app import BatcherSettings, ServeSettings, load_predictors

    s.add_argument("--model", action="append", required=True, metavar="[NAME=]DIR",
                   help="a model directory, optionally named (repeat to serve several)")
    s.add_argument("--index", action="append", default=[], metavar="[NAME=]DIR",
                   help="an index (bertkit index build) to search at /v1/search, optionally named (repeat for "
                        "several); the model that made its vectors must be served")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--workers", type=int, default=1, help="processes (one thread per core is the CPU rule)")
    add_params(s, load_predictors, ("threads", "backend", "int8", "bf16", "cache_size"), help=SERVE_HELP,
               choices={"backend": list(BACKENDS)}, flags={"cache_size": "--cache"})
    s.add_argument("--int8-calibration", action="append", default=[], metavar="[NAME=]FILE",
                   help=CALIBRATION_HELP + "; NAME: the model it is for (repeat for several)")
    add_fields(s, ServeSettings, SERVE_FIELDS, help=SERVE_HELP, keep_default=True,
               choices={"on_long_text": ["truncate", "reject"]})
    add_fields(s, BatcherSettings, BATCHER_FIELDS, help=SERVE_HELP, keep_default=True)


def run_serve(args) -> None:
    import dataclasses
    import ipaddress
    import os

    import uvicorn

    from bertkit.serve.app import CONFIG_ENV, BatcherSettings, ServeSettings, app_from_env, server_options

    # every limit is checked before a model loads or the port opens: one line naming the flag, exit 2
    for flag, value, low in (("--port", args.port, 1), ("--workers", args.workers, 1), ("--threads", args.threads, 1),
                             ("--cache", args.cache_size, 0)):
        if value < low or (flag == "--port" and value > 65535):
            raise InputError(f"{flag} {value}: must be " + ("between 1 and 65535" if flag == "--port"
                                                               else f"at least {low}"))
    settings = ServeSettings(**{k: getattr(args, k) for k in SERVE_FIELDS},
                             batcher=BatcherSettings(**{k: getattr(args, k) for k in BATCHER_FIELDS}))
    settings.api_key = args.api_key or os.environ.get("BERTKIT_API_KEY")
    if problems := settings.problems():
        name, value, why = problems[0]
        raise InputError(f"--{name.replace('_', '-')} {value}: {why}")
    def named(flag: str, specs: list[str], check) -> dict[str, str]:
        """NAME=DIR (or DIR, named by its last part) -> {name: dir}; a repeated name or a bad DIR is refused."""
        out = {}
        for spec in specs:
            name, _, path = spec.rpartition("=")
            name = name or Path(path.rstrip("/")).name
            if name in out:
                raise InputError(f"{flag} {spec}: the name '{name}' is used twice (give NAME=DIR)")
            if problem := check(Path(path)):
                raise InputError(f"{flag} {spec}: {problem}")
            out[name] = path
        return out

    models = named("--model", args.model,
                   lambda p: None if (p / "config.json").is_file() else f"{p}/config.json not found")
    indexes = named("--index", args.index, lambda p: None if p.is_dir() else f"{p}: no such directory")
    calibration = named("--int8-calibration", [s if "=" in s or len(models) != 1 else f"{next(iter(models))}={s}"
                                               for s in args.int8_calibration],
                        lambda p: None if p.is_file() else f"{p}: no such file")
    if unknown := set(calibration) - set(models):
        raise InputError(f"--int8-calibration: no model named {sorted(unknown)[0]!r} (served: {', '.join(models)})")
    if calibration and (args.int8 or args.bf16):
        raise InputError(f"--int8-calibration: decides int8 itself; drop --{'int8' if args.int8 else 'bf16'}")
    try:
        loopback = args.host == "localhost" or ipaddress.ip_address(args.host).is_loopback
    except ValueError:  # a host name: it may resolve beyond this machine
        loopback = False
    if not loopback and settings.api_key is None:
        print(f"bertkit serve: warning: listening on {args.host}, beyond this machine, without --api-key: anyone "
              f"who reaches the port can use the models", file=sys.stderr, flush=True)
    os.environ[CONFIG_ENV] = json.dumps({"models": models, "indexes": indexes, "threads": args.threads,
                                         "backend": args.backend, "int8": args.int8, "bf16": args.bf16,
                                         "cache_size": args.cache_size,
                                         "calibration": calibration,
                                         "settings": dataclasses.asdict(settings)})
    app = app_from_env() if args.workers == 1 else None  # load here: a bad model fails before the port opens
    print(f"bertkit serve: http://{args.host}:{args.port}/ (page), /docs (API), {args.workers} worker(s); models: "
          + ", ".join(f"{n} = {p} ({app.state.predictors[n].family}, {app.state.predictors[n].describe()})"
                      if app else f"{n} = {p}"
                      for n, p in models.items())
          + "".join(f"; index {n} = {p}" for n, p in indexes.items()), file=sys.stderr, flush=True)
    if app is not None:
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning", **server_options(settings))
    else:
        uvicorn.run("bertkit.serve.app:app_from_env", factory=True, host=args.host, port=args.port,
                    workers=args.workers, log_level="warning", **server_options(settings, in_process=False))


SBERT_TOP = ("loss", "epochs", "batch_size", "max_length", "scale", "max_train_rows", "group_by_length")
SBERT_TRAIN = ("lr", "warmup", "seed", "threads", "device", "save_every", "grad_accum")
SBERT_HELP = {"loss": "softmax (NLI labels), cosine / cosent (STS scores), mnrl / mnrl-symmetric (pairs, triplets; NLI "
                      "becomes triplets), mse (distil --teacher's vectors)",
              "epochs": "passes over the training rows", "batch_size": "rows (pairs, triplets) per step",
              "max_length": "tokens per text (0: the model's max_seq_length)",
              "scale": "cosent / mnrl: inverse temperature", "max_train_rows": "a seeded sample (0: all)",
              "group_by_length": "batches of rows of similar lengths (less padding for attention)"}


def add_sbert(s) -> None:
    from bertkit.data.pairs import DATASETS
    from bertkit.train.sentence import LOSSES, SbertConfig

    names = ", ".join(DATASETS)
    s.add_argument("--model", required=True, help="sentence-transformers directory (or a plain encoder)")
    s.add_argument("--train", required=True, dest="train_data",
                   help=f"a dataset ({names}; its train split under --data), NAME:FILE, or a .jsonl of "
                        f"anchor/positive[/negative], sentence1/sentence2/score|label, text or source/translation")
    s.add_argument("--eval", dest="eval_data", help="an STS set (NAME: its dev split, NAME:FILE, or .jsonl "
                                                    "sentence1/sentence2/score): Spearman x 100 after every epoch, "
                                                    "the best epoch kept (default: none, the last epoch)")
    s.add_argument("--teacher", help="--loss mse: the sentence-transformers directory whose vectors are learned")
    s.add_argument("--data", dest="data_dir", help="where dataset NAMEs are found (default $BERTKIT_DATA or "
                                                   "../shared/data)")
    s.add_argument("--output", "--out", dest="out", required=True, help="the trained sentence-transformers "
                                                                          "directory (+ metrics.jsonl)")
    add_fields(s, SbertConfig, SBERT_TOP, help=SBERT_HELP, choices={"loss": list(LOSSES)})
    add_fields(s, SbertConfig().train, SBERT_TRAIN, help=TRAIN_HELP, choices=TRAIN_CHOICES)
    s.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --output (same flags)")
    s.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP.format(what="run"))


def run_sbert(args) -> None:
    from bertkit.train.sentence import SbertConfig, run_sbert

    cfg = SbertConfig(model=args.model, train_data=args.train_data, eval_data=args.eval_data or "",
                      teacher=args.teacher or "", data_dir=args.data_dir or "", out=args.out)
    apply(args, cfg, SBERT_TOP)
    cfg.group_by_length = bool(args.group_by_length)
    apply(args, cfg.train, SBERT_TRAIN)
    summary = run_sbert(cfg, resume=args.resume, overwrite=args.overwrite, show_progress=sys.stderr.isatty())
    print(json.dumps({k: v for k, v in summary.items() if k != "config"}))


BATCH_HELP = "texts per model call at most (default %(default)s)"
MAX_TOKENS_HELP = ("tokens per model call at most: texts x the longest, padding included; short texts go in bigger "
                   "batches (default %(default)s; 0: --batch-size texts per call)")
CLUSTER_PARAMS = ("text_field", "by", "labels", "min_cluster_size", "min_samples", "reduce", "assign_noise",
                  "keywords", "batch_size", "max_tokens", "backend", "int8", "bf16", "seed")


def add_cluster(c) -> None:
    from bertkit.apps.cluster import REDUCTIONS, cluster_file
    from bertkit.infer.predictor import BACKENDS

    c.add_argument("--model", help="sentence-transformers (or plain encoder) directory to encode the texts with")
    c.add_argument("--vectors", help="instead of --model: the vectors directory `bertkit embed` wrote for this same "
                                     "input (row i = object i)")
    c.add_argument("--input", required=True, help="JSON lines (.gz too), one object per text")
    c.add_argument("--output", required=True, help="JSON lines: each input object with 'cluster' (-1: noise) and "
                                                   "'keywords' added")
    add_params(c, cluster_file, CLUSTER_PARAMS, choices={"reduce": list(REDUCTIONS), "backend": list(BACKENDS)}, help={
        "text_field": "the field holding the text (default %(default)s)",
        "by": "cluster within each group of this field (e.g. a category); labels stay unique",
        "labels": "print ARI / NMI / V-measure against this field (noise as its own cluster, and after assigning it)",
        "min_cluster_size": "HDBSCAN's smallest cluster (default %(default)s)",
        "min_samples": "HDBSCAN's min_samples (default %(default)s)",
        "reduce": "before HDBSCAN: PCA or UMAP (pip install 'bertkit[umap]') to 5 dimensions, or none "
                  "(default %(default)s)",
        "assign_noise": "put each noise point in the cluster with the nearest centroid (cosine)",
        "keywords": "c-TF-IDF keywords per cluster (default %(default)s)",
        "batch_size": BATCH_HELP, "max_tokens": MAX_TOKENS_HELP,
        "backend": BACKEND_HELP,
        "int8": "dynamic int8 encoder (faster on CPU; the vectors drift a little, see RESULTS)", "bf16": BF16_HELP,
        "seed": "PCA/UMAP random state"})
    c.add_argument("--plot", help="a PNG of the 2-D projection, coloured by cluster")
    c.add_argument("--html", help="a standalone HTML page: the projection (text on hover) and the clusters' keywords")


def run_cluster(args) -> None:
    from bertkit.apps.cluster import cluster_file

    summary = cluster_file(args.model, args.input, args.output, plot=args.plot, html_path=args.html,
                           vectors=args.vectors, **{k: getattr(args, k) for k in CLUSTER_PARAMS})
    for group, rows in summary["too_small_groups"].items():
        what = f"group {group!r}: {rows} rows" if args.by else f"{rows} texts"
        print(f"bertkit cluster: {what}, fewer than --min-cluster-size: left as noise", file=sys.stderr)
    print(f"{summary['texts']} texts -> {summary['clusters']} clusters, {summary['noise_share']:.1%} noise "
          f"-> {args.output}", file=sys.stderr)
    print(json.dumps(summary, ensure_ascii=False))


DUPLICATES_PARAMS = ("text_field", "threshold", "top_k", "batch_size", "max_tokens", "backend", "int8", "bf16",
                     "threads")


def add_duplicates(d) -> None:
    from bertkit.apps.duplicates import DEFAULT_THRESHOLD, duplicates_file
    from bertkit.infer.predictor import BACKENDS

    d.add_argument("--model", help="sentence-transformers (or plain encoder) directory that embeds the texts")
    d.add_argument("--vectors", help="instead of --model: the vectors directory bertkit embed wrote for --input")
    d.add_argument("--input", required=True, help=".txt (one text a line), .jsonl or .csv (a header row)")
    d.add_argument("--output", required=True, help="JSON lines {i, j, score, exact}: i < j, 0-based positions of "
                                                   "the input's texts; exact repeats (score 1.0) first")
    add_params(d, duplicates_file, DUPLICATES_PARAMS, choices={"backend": list(BACKENDS)}, help={
        "text_field": "the text's field (.jsonl) or column (.csv) (default %(default)s)",
        "threshold": f"keep near pairs with cosine >= this, in [-1, 1] (default {DEFAULT_THRESHOLD} when "
                     f"--top-k is not given either)",
        "top_k": "keep each text's K most similar texts (with --threshold: those of them above it)",
        "batch_size": BATCH_HELP, "max_tokens": MAX_TOKENS_HELP,
        "backend": BACKEND_HELP, "int8": "dynamic int8 Linear layers", "bf16": BF16_HELP,
        "threads": "torch / ONNX Runtime threads (0: the library's choice)"})


def run_duplicates(args) -> None:
    from bertkit.apps.duplicates import duplicates_file

    n, exact, near = duplicates_file(args.model, args.input, args.output, vectors=args.vectors,
                                     **{k: getattr(args, k) for k in DUPLICATES_PARAMS})
    print(f"{n} texts: {exact} exact repeats, {near} near pairs -> {args.output}", file=sys.stderr)


def add_index(x) -> None:
    from bertkit.apps import index

    actions = x.add_subparsers(dest="action", required=True, metavar="ACTION")
    b = actions.add_parser("build", help="a new index from one or more vectors directories (bertkit embed)")
    b.add_argument("--vectors", action="append", required=True, metavar="DIR", help="repeat for several segments")
    b.add_argument("--out", required=True, metavar="INDEX")
    b.add_argument("--hnsw", action="store_true", help="also build an HNSW graph (pip install bertkit[ann])")
    b.add_argument("--score", choices=["cosine", "dot"], default="cosine")
    b.add_argument("--connectivity", type=int, default=index.CONNECTIVITY, help="HNSW M (default %(default)s)")
    b.add_argument("--ef-construction", type=int, default=index.EXPANSION_ADD, help="default %(default)s")
    b.add_argument("--ef-search", type=int, default=index.EXPANSION_SEARCH, help="default %(default)s")
    b.add_argument("--hnsw-dtype", choices=list(index.HNSW_DTYPES), default="f32",
                   help="how the graph stores vectors (scores are re-computed from the index's own)")
    b.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP.format(what="index"))
    a = actions.add_parser("add", help="append a vectors directory (same model) as a new segment")
    a.add_argument("--index", required=True)
    a.add_argument("--vectors", required=True, metavar="DIR")
    d = actions.add_parser("delete", help="delete rows by id")
    d.add_argument("--index", required=True)
    d.add_argument("--ids", nargs="+", required=True, help="ids as in ids.jsonl (a number also matches its text)")
    s = actions.add_parser("search", help="texts -> JSON lines: query, rank, id, score")
    s.add_argument("--index", required=True)
    s.add_argument("--model", required=True, help="the model the vectors came from (checked by fingerprint)")
    s.add_argument("--query", action="append", required=True, help="repeat for several queries")
    s.add_argument("--top-k", type=int, default=10)
    s.add_argument("--exact", action="store_true", help="scan every vector even when there is a graph")
    i = actions.add_parser("info", help="the manifest: model, rows, segments, graph")
    i.add_argument("--index", required=True)


def run_index(args) -> None:
    from bertkit.apps.index import Index, read_manifest, search_texts

    if args.action == "build":
        idx = Index.build(args.vectors, args.out, hnsw=args.hnsw, score=args.score, connectivity=args.connectivity,
                          expansion_add=args.ef_construction, expansion_search=args.ef_search,
                          hnsw_dtype=args.hnsw_dtype, overwrite=args.overwrite)
        print(f"index of {len(idx):,} vectors -> {args.out}" + (" (HNSW)" if idx.has_hnsw else ""), file=sys.stderr)
    elif args.action == "add":
        idx = Index.load(args.index)
        print(f"{idx.add(args.vectors):,} vectors added; {len(idx):,} in {args.index}", file=sys.stderr)
    elif args.action == "delete":
        idx = Index.load(args.index)
        numbers = {v: int(v) for v in args.ids if v.lstrip("-").isdigit()}  # ids.jsonl may hold numbers
        deleted, missing = idx.delete([*args.ids, *numbers.values()])
        missing = [v for v in args.ids if v in missing and (v not in numbers or numbers[v] in missing)]
        print(f"{deleted:,} rows deleted; {len(idx):,} left" + (f"; not found: {', '.join(missing)}" if missing
                                                                else ""), file=sys.stderr)
    elif args.action == "search":
        results = search_texts(Index.load(args.index), args.model, args.query, args.top_k,
                               exact=True if args.exact else None)
        for query, hits in zip(args.query, results):
            for hit in hits:
                print(json.dumps({"query": query, **hit}, ensure_ascii=False))
    else:
        print(json.dumps(read_manifest(args.index), indent=1, ensure_ascii=False))


EMBED_PARAMS = ("text_field", "id_field", "dtype", "batch_size", "max_tokens", "chunk_size", "backend", "int8", "bf16",
                "threads",
                "normalize", "resume", "overwrite")


def add_embed(m) -> None:
    from bertkit.apps.embed import CHUNK_SIZE, embed_corpus
    from bertkit.apps.vectors import DTYPES
    from bertkit.infer.predictor import BACKENDS

    m.add_argument("--model", required=True, help="sentence-transformers (or plain encoder) directory")
    m.add_argument("--input", required=True, nargs="+", help=".txt (a text per line, id 'file:line'), .jsonl or "
                                                              ".csv (a header row) files, embedded in this order")
    m.add_argument("--output", required=True, help="the vectors directory (meta.json, vectors.npy, ids.jsonl)")
    add_params(m, embed_corpus, EMBED_PARAMS, choices={"dtype": list(DTYPES), "backend": list(BACKENDS)}, help={
        "text_field": "the text's field or column in .jsonl / .csv (default %(default)s)",
        "id_field": "the id's field or column (default: 'file:line')",
        "dtype": "stored vectors: float32, float16, or int8 with a float32 scale per row (default %(default)s)",
        "batch_size": BATCH_HELP, "max_tokens": MAX_TOKENS_HELP,
        "chunk_size": f"texts read, embedded and committed at a time: a crash loses at most one chunk (default "
                      f"{CHUNK_SIZE}, or the interrupted run's with --resume)",
        "backend": BACKEND_HELP,
        "int8": "dynamic int8 Linear layers (torch or ONNX Runtime)", "bf16": BF16_HELP,
        "threads": "torch / ONNX Runtime threads",
        "normalize": "L2-normalise the vectors (a model ending in Normalize is normalised anyway)",
        "resume": "continue an interrupted run in --output (same model, inputs and settings)",
        "overwrite": OVERWRITE_HELP.format(what="vectors")})
    m.add_argument("--ray", nargs="?", const="auto", default=None, metavar="ADDRESS", dest="ray_address",
                   help="run on Ray Data (pip install 'bertkit[ray]'): 'auto' (RAY_ADDRESS or a cluster started on "
                        "this machine, else a local one), 'local', or ray://head:10001; the model directory and the "
                        "inputs must be readable at the same paths on every worker")


def run_embed(args) -> None:
    options = {k: getattr(args, k) for k in EMBED_PARAMS}
    if args.ray_address is not None:
        from bertkit.apps.embed_ray import embed_corpus_ray

        vectors = embed_corpus_ray(args.model, args.input, args.output, args.ray_address, **options)
    else:
        from bertkit.apps.embed import embed_corpus

        vectors = embed_corpus(args.model, args.input, args.output, **options)
    speed = vectors.meta.get("last_run", {}).get("sentences_per_s")
    print(f"embedded {len(vectors)} texts -> {args.output}: {vectors.dimension}-d {vectors.meta['dtype']}"
          + (f", {speed} sentences/s" if speed else ""), file=sys.stderr)


# verb -> (help, add its flags, run it)
def add_summarize(s) -> None:
    from bertkit.apps.summarize import METHODS
    from bertkit.infer.batchio import summarize_file
    from bertkit.infer.predictor import BACKENDS

    s.add_argument("--model", help="the sentence-vector model (--method centrality or centroid), or the scorer "
                                   "`bertkit summarize-train` wrote (--method trained)")
    s.add_argument("--input", required=True, help="JSON lines, each {\"text\": ...} (split into sentences here) or "
                                                  "{\"sentences\": [...]}; \"reference\" for --method oracle")
    s.add_argument("--output", required=True, help="the input lines with summary_sentences, sentences and summary")
    add_params(s, summarize_file, ("k", "method", "lexical", "mmr", "max_chars"), choices={"method": list(METHODS)},
               help={"k": "sentences per summary (default %(default)s)",
                     "method": "centrality (PageRank over TF-IDF and sentence-vector cosines), lead, textrank, "
                               "frequency (Luhn's word frequencies), centroid, oracle (greedy ROUGE against "
                               "'reference'), or trained (a BertSum-style "
                               "scorer, bertkit summarize-train) (default %(default)s)",
                     "lexical": "centrality: the TF-IDF share of the graph's edges (default %(default)s)",
                     "mmr": "centrality: 1 ranks by score; lower trades score for novelty (MMR) (default "
                            "%(default)s)",
                     "max_chars": "characters of one input line at most (default %(default)s)"})
    s.add_argument("--threads", type=int, default=0, help="threads for the model")
    s.add_argument("--backend", choices=list(BACKENDS), default="auto", help=BACKEND_HELP)


def run_summarize(args) -> None:
    from bertkit.apps.summarize import _check
    from bertkit.infer.batchio import summarize_file

    check_not_input(args.output, [args.input] + ([args.model] if args.model else []), "summarize")
    _check(args.method, args.k)  # before a model loads
    predictor = scorer = None
    if args.method == "trained":
        from bertkit.apps.extractive import CONFIG_FILE, ExtractiveScorer

        if args.model is None or not (Path(args.model) / CONFIG_FILE).exists():
            raise ValueError(f"--method trained: give --model, a scorer that `bertkit summarize-train` wrote "
                             f"({args.model or 'none given'} has no {CONFIG_FILE})")
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        scorer = ExtractiveScorer.from_pretrained(args.model)
    elif args.method in ("centrality", "centroid"):
        if args.model is None:
            raise ValueError(f"--method {args.method}: give --model (the sentence vectors' model)")
        from bertkit.infer.predictor import Predictor, PredictorSettings

        predictor = Predictor.from_pretrained(args.model, PredictorSettings(threads=args.threads,
                                                                            backend=args.backend))
    n = summarize_file(args.input, args.output, args.k, args.method, args.lexical, args.mmr, args.max_chars,
                       predictor=predictor, scorer=scorer)
    print(f"summarized {n} articles ({args.method}, k {args.k}) -> {args.output}", file=sys.stderr)


def add_summarize_train(s) -> None:
    from bertkit.apps.extractive import ExtractiveConfig
    from bertkit.train.extractive import ExtractiveTrainConfig

    s.add_argument("--model", required=True, help="the encoder to start from (a plain or sentence-transformers "
                                                  "directory)")
    s.add_argument("--train", dest="train_file", required=True,
                   help="JSON lines: {\"text\" | \"sentences\", \"reference\" (a summary) | \"labels\" (indices)}")
    s.add_argument("--eval", dest="eval_file", default="", help="the same, with references: ROUGE after every epoch, "
                                                                "the best epoch kept")
    s.add_argument("--out", required=True)
    add_params(s, ExtractiveTrainConfig, ("label_k", "targets", "k", "rouge_tokens", "epochs", "batch_size",
                                          "head_lr", "freeze_encoder", "cache_mb"),
               choices={"rouge_tokens": ["rouge-score", "unicode"], "targets": ["oracle", "rouge"]}, help={
                   "freeze_encoder": "train the new layers alone on the encoder's fixed sentence vectors, "
                                     "computed once: an epoch costs seconds (small data: fewer weights to fit)",
                   "cache_mb": "--freeze-encoder: the sentence vectors kept in memory up to this size, beyond it "
                               "re-read each step (default %(default)s)",
                   "label_k": "oracle sentences labelled per article (default %(default)s)",
                   "targets": "articles with a reference: oracle (its label_k sentences are 1s) or rouge (each "
                              "sentence's ROUGE-2 recall over the article's best, a soft label) (default "
                              "%(default)s)",
                   "k": "sentences picked when evaluating (default %(default)s)",
                   "rouge_tokens": "unicode for Korean (default %(default)s)",
                   "epochs": "(default %(default)s)", "batch_size": "articles per step (default %(default)s)",
                   "head_lr": "the new layers' peak learning rate (default: --lr's)"})
    add_params(s, ExtractiveConfig, ("layers", "max_length", "max_sentence_pieces", "graph_features"), help={
        "layers": "inter-sentence transformer layers (default %(default)s)",
        "graph_features": "each sentence's TextRank and word-frequency scores, their ranks and its position "
                          "beside its vector",
        "max_length": "tokens per window (default %(default)s)",
        "max_sentence_pieces": "pieces of a sentence read (default %(default)s)"})
    add_fields(s, ExtractiveTrainConfig().train, SBERT_TRAIN, help=TRAIN_HELP, choices=TRAIN_CHOICES)
    s.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --out (same flags)")
    s.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP.format(what="run"))


def run_summarize_train(args) -> None:
    from bertkit.apps.extractive import ExtractiveConfig
    from bertkit.train.extractive import ExtractiveTrainConfig, run_extractive

    cfg = ExtractiveTrainConfig(model=args.model, train_file=args.train_file, eval_file=args.eval_file,
                                out=args.out, label_k=args.label_k, targets=args.targets, k=args.k,
                                rouge_tokens=args.rouge_tokens,
                                epochs=args.epochs, batch_size=args.batch_size, head_lr=args.head_lr,
                                freeze_encoder=args.freeze_encoder, cache_mb=args.cache_mb,
                                scorer=ExtractiveConfig(layers=args.layers, max_length=args.max_length,
                                                        max_sentence_pieces=args.max_sentence_pieces,
                                                        graph_features=args.graph_features))
    apply(args, cfg.train, SBERT_TRAIN)
    result = run_extractive(cfg, resume=args.resume, overwrite=args.overwrite)
    shown = {k: round(v, 2) for k, v in result.items() if k in ("rouge1", "rouge2", "rougeL", "loss")}
    print(f"trained on {result['train_articles']} articles -> {args.out} {shown}", file=sys.stderr)


def add_suggest(s) -> None:
    from bertkit.apps.suggest import SuggestSettings
    from bertkit.infer.batchio import suggest_file

    s.add_argument("--model", required=True, help="a masked-LM model directory (fill-mask)")
    s.add_argument("--input", required=True, help="JSON lines: {\"text\": \"... [MASK] ...\", \"targets\"?: [words]} "
                                                  "for suggestions, or {\"text\", \"start\", \"end\"} to check the "
                                                  "word at those character offsets")
    s.add_argument("--output", required=True, help="the input lines with the answers' fields added")
    add_fields(s, SuggestSettings, ("top_k", "max_pieces", "beam"), keep_default=True, help={
        "top_k": "suggestions per line (default %(default)s)",
        "max_pieces": "the longest word generated, in pieces (default %(default)s)",
        "beam": "partial words and joint fillings kept (default %(default)s)"})
    s.add_argument("--pieces", action="store_true", help="a mask stands for one piece (the classic fill-mask), not "
                                                         "a whole word")
    s.add_argument("--threads", type=int, default=0, help="PyTorch threads")
    add_params(s, suggest_file, ("max_chars",), help={"max_chars": "characters of one input line at most (default "
                                                                    "%(default)s)"})


def run_suggest(args) -> None:
    from bertkit.apps.suggest import SuggestSettings, Suggester
    from bertkit.infer.batchio import suggest_file
    from bertkit.infer.predictor import Predictor, PredictorSettings

    check_not_input(args.output, [args.input, args.model], "suggest")
    settings = SuggestSettings(top_k=args.top_k, whole_words=not args.pieces, max_pieces=args.max_pieces,
                               beam=args.beam)
    settings.check()  # before a model loads
    suggester = Suggester(Predictor.from_pretrained(args.model, PredictorSettings(threads=args.threads)), settings)
    n = suggest_file(suggester, args.input, args.output, args.max_chars)
    print(f"answered {n} lines -> {args.output}", file=sys.stderr)


VERBS: dict[str, tuple[str, Callable, Callable]] = {
    "tokenize": ("text lines -> JSON lines of input_ids, token_type_ids, offsets", add_tokenize, run_tokenize),
    "encode": ("text lines -> hidden states (.npz) for feature extraction", add_encode, run_encode),
    "vocab": ("learn a vocabulary (WordPiece, byte-level BPE or Unigram) from text files", add_vocab, run_vocab),
    "pretrain": ("pre-train a BERT, RoBERTa, ELECTRA or ALBERT from raw text (--arch)", add_pretrain,
                 run_pretrain),
    "finetune": ("fine-tune a checkpoint: classification, regression, tagging or span QA", add_finetune,
                 run_finetune),
    "evaluate": ("a fine-tuned model's official metrics on a task's evaluation file", add_evaluate, run_evaluate),
    "predict": ("run a fine-tuned model over an input file, one JSON object per line", add_predict, run_predict),
    "distill": ("a smaller student from a teacher: task-specific (--task) or general (--corpus)", add_distill,
                run_distill),
    "sbert": ("train sentence embeddings (SBERT losses) -> a sentence-transformers directory", add_sbert, run_sbert),
    "quantize": ("dynamic int8 quantisation of a model's encoder -> a new directory", add_quantize, run_quantize),
    "serve": ("the HTTP service (and the demo page) over one or more models", add_serve, run_serve),
    "export": ("export a model for other runtimes", add_export, run_export),
    "index": ("a vector index over vectors directories: build, add, delete, search (exact or HNSW)", add_index,
              run_index),
    "duplicates": ("exact repeats and near-duplicate pairs of texts (cosine of sentence vectors)", add_duplicates,
                   run_duplicates),
    "cluster": ("cluster texts (HDBSCAN over sentence vectors) with keywords, a PNG and an HTML view", add_cluster,
                run_cluster),
    "embed": ("a corpus (.txt, .jsonl, .csv) -> a vectors directory, streamed and resumable (--ray)", add_embed,
              run_embed),
    "summarize": ("extractive summaries: the k sentences of each article that stand for it", add_summarize,
                  run_summarize),
    "summarize-train": ("train a BertSum-style sentence scorer for --method trained", add_summarize_train,
                        run_summarize_train),
    "suggest": ("word suggestions for [MASK]s (whole words, jointly) and checks of a chosen word", add_suggest,
                run_suggest),
}


def build_parser(verbs: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser; only `verbs` (default: all) get their flags, so a run builds (and imports) what it uses."""
    p = argparse.ArgumentParser(prog="bertkit", description="BERT, whole: tokenizer, encoder, training, serving.")
    p.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = p.add_subparsers(dest="verb", required=True, metavar="VERB")
    for verb, (text, add, _) in VERBS.items():
        parser = sub.add_parser(verb, help=text)
        if verbs is None or verb in verbs:
            add(parser)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    verb = next((a for a in argv if not a.startswith("-")), None)
    args = build_parser([verb] if verb in VERBS else []).parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("bertkit.predictor").setLevel(logging.INFO)  # which backend each model runs on, and why
    logging.getLogger("bertkit.calibrate").setLevel(logging.INFO)  # what the int8 preset measured and chose
    try:
        VERBS[args.verb][2](args)
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
