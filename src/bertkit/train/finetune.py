"""Fine-tuning recipes for the four task families of the paper, over the one training loop.

| family | tasks | head | official metric |
|---|---|---|---|
| sentence (pair) classification | SST-2, CoLA, MRPC, RTE, WNLI, QNLI, MNLI, QQP, NSMC, KLUE-NLI, custom | BertForSequenceClassification | accuracy; F1 (MRPC, QQP); MCC (CoLA) |
| sentence pair regression | STS-B, KLUE-STS | BertForSequenceClassification, num_labels=1 | Pearson, Spearman |
| token tagging | CoNLL-2003, KLUE-NER | BertForTokenClassification | entity F1 (conlleval) |
| span QA | SQuAD 1.1 / 2.0, KorQuAD 1.0 | BertForQuestionAnswering | EM / F1 (SQuAD's or KorQuAD's normalisation) |

Defaults are the paper's: lr 3e-5 (2e-5..5e-5), batch 32, 3 epochs, 10 % warm-up then linear decay, dropout 0.1.
Evaluation runs after every epoch and the best epoch's weights (by the task's main metric) are what `out/` holds;
the label map is saved in config.json (`id2label`). `init="random"` trains the same architecture from random
weights: the baseline that shows what pre-training buys.

Where a dataset has no training split here (SQuAD, KorQuAD, KLUE), `split_eval` trains on a part of the evaluation
file and evaluates on the rest, split by group (article for QA, premise for NLI, first sentence for STS, source for
NER) so that no text is on both sides.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from bertkit import metrics as M
from bertkit.io import OutputDir, atomic_write_text, prepare_output_dir
from bertkit.config import BertConfig
from bertkit.data.features import IGNORE, QASettings, qa_features, tag_features
from bertkit.data.pretraining import Schedule
from bertkit.data.tasks import (TASKS, Example, QAExample, TagExample, align_labels, read_conll, read_klue_ner,
                                read_squad, read_task)
from bertkit.infer.predictor import Predictor, PredictorSettings
from bertkit.heads import BertForQuestionAnswering, BertForSequenceClassification, BertForTokenClassification
from bertkit.tokenizer import Tokenizer, check_vocab
from bertkit.train.loop import TrainConfig, refuse_changed_config, require, train


# ---- the task registry -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TaskInfo:
    family: str  # classification | regression | tagging | qa
    metric: str  # the main metric, the one the best epoch is chosen by
    splits: tuple[str, str]  # file stems of (training, evaluation) splits
    group: Callable | None = None  # example -> the key that keeps related examples on one side of a split


def _sentence_info(name: str) -> TaskInfo:
    spec = TASKS[name]
    metric = {"cola": "mcc", "mrpc": "f1", "qqp": "f1", "stsb": "spearman", "klue-sts": "pearson"}.get(
        name, "spearman" if spec.regression else "accuracy")
    group = {"klue-nli": lambda e: e.text, "klue-sts": lambda e: e.text}.get(name)
    return TaskInfo("regression" if spec.regression else "classification", metric, spec.splits, group)


TASK_INFO: dict[str, TaskInfo] = {name: _sentence_info(name) for name in TASKS}
TASK_INFO.update({
    "conll2003": TaskInfo("tagging", "f1", ("eng.train", "eng.testb")),
    "klue-ner": TaskInfo("tagging", "f1", ("klue-ner-v1.1_dev", "klue-ner-v1.1_dev"), group=lambda e: e.id),
    "squad": TaskInfo("qa", "f1", ("train-v1.1", "dev-v1.1"), group=lambda e: e.title),
    "squad2": TaskInfo("qa", "f1", ("train-v2.0", "dev-v2.0"), group=lambda e: e.title),
    "korquad": TaskInfo("qa", "f1", ("KorQuAD_v1.0_train", "KorQuAD_v1.0_dev"), group=lambda e: e.title),
})


def read_examples(path: str | Path, task: str) -> tuple[list, list[str] | None]:
    """(examples, label names or None) for any task in TASK_INFO."""
    info = TASK_INFO[task]
    if info.family == "qa":
        return read_squad(path), None
    if info.family == "tagging":
        examples = read_klue_ner(path) if task == "klue-ner" else read_conll(path)
        return examples, sorted({t for e in examples for t in e.tags})
    return read_task(path, task)


def split_by_group(examples: list, key: Callable, eval_fraction: float, seed: int) -> tuple[list, list]:
    """A deterministic split in which every group (article, premise, ...) lies wholly on one side."""
    train_part, eval_part = [], []
    for e in examples:
        h = int(hashlib.sha1(f"{seed}:{key(e)}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
        (eval_part if h < eval_fraction else train_part).append(e)
    return train_part, eval_part


# ---- config ------------------------------------------------------------------------------------------------------
@dataclass
class FinetuneConfig:
    task: str = "sst2"
    model: str = ""  # a checkpoint directory (weights, config, tokenizer)
    train_file: str = ""
    eval_file: str = ""
    out: str = "runs/finetune"
    init: str = "pretrained"  # pretrained | random
    max_length: int = 128  # QA: 384 is the paper's
    batch_size: int = 32
    epochs: float = 3.0
    max_train_examples: int = 0  # 0: all
    max_eval_examples: int = 0
    split_eval: float = 0.0  # > 0: train on part of eval_file, evaluate on this fraction of it (by group)
    # The paper's fine-tuning dropout, whatever the checkpoint was pre-trained with (short pre-training runs turn
    # it off, and config.json carries that); None keeps the checkpoint's values.
    dropout: float | None = 0.1
    # Batches of similar lengths (Schedule's length grouping): off by default, so the table's recipes reproduce
    # their published numbers; it pays where lengths vary most (QA windows: most of attention's work is padding).
    group_by_length: bool = False
    qa: QASettings = field(default_factory=QASettings)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(lr=3e-5, warmup=0.1, log_every=50,
                                                                   save_every=0, keep_checkpoints=1))

    def validate(self) -> None:
        """Every number in its range (a one-line error naming the flag), before anything is read or written."""
        require("epochs", self.epochs, 0, above=True)
        require("batch_size", self.batch_size, 1)
        require("max_length", self.max_length, 8)  # [CLS] a [SEP] b [SEP] and a few pieces
        require("max_train_examples", self.max_train_examples, 0)
        require("max_eval_examples", self.max_eval_examples, 0)
        require("split_eval", self.split_eval, 0, maximum=1, below=True)
        if self.dropout is not None:
            require("dropout", self.dropout, 0, maximum=1, below=True)
        require("doc_stride", self.qa.doc_stride, 1)
        require("max_query_length", self.qa.max_query_length, 1)
        require("max_answer_length", self.qa.max_answer_length, 1)
        require("null_threshold", self.qa.null_threshold, -math.inf)
        self.train.validate()
        if self.batch_size % self.train.grad_accum:
            raise ValueError(f"--batch-size {self.batch_size} is not a multiple of --grad-accum "
                             f"{self.train.grad_accum}")


# ---- tasks for the loop ------------------------------------------------------------------------------------------
class RowTask:
    """A task over encoded rows (dicts of lists), batched by the loop's (seed, step) schedule."""

    names = ("examples",)

    def __init__(self, tokenizer: Tokenizer, train_rows: list[dict], batch_size: int, seed: int):
        self.tok, self.train_rows, self.batch_size = tokenizer, train_rows, batch_size
        self.schedule = Schedule(len(train_rows), batch_size, seed) if train_rows else None  # None: evaluation only

    def group_by_length(self) -> None:
        """Batches of rows of similar lengths from now on (see Schedule); the same rows each epoch."""
        if self.schedule is not None:
            self.schedule = Schedule(len(self.train_rows), self.batch_size, self.schedule.seed,
                                     lengths=[len(r["input_ids"]) for r in self.train_rows])

    def collate(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        batch = self.tok.collate([r["input_ids"] for r in rows], [r["token_type_ids"] for r in rows])
        T = batch["input_ids"].shape[1]
        for key in rows[0]:
            if key in ("input_ids", "token_type_ids"):
                continue
            values = [r[key] for r in rows]
            if isinstance(values[0], list):  # per-token labels, padded with IGNORE
                values = [v + [IGNORE] * (T - len(v)) for v in values]
            batch[key] = torch.tensor(values)
        return batch

    def micro_batches(self, step, rank, world, accum):
        rows, _ = self.schedule.step(step)
        per = self.batch_size // (world * accum)
        mine = rows[rank * per * accum:(rank + 1) * per * accum]
        return [self.collate([self.train_rows[i] for i in mine[j:j + per]]) for j in range(0, len(mine), per)]

    def counts(self, batch) -> list[float]:
        return [float(len(batch["input_ids"]))]

    def summarize(self, stats, totals):
        return {"loss": stats["loss"] / max(totals[0], 1.0)}


class SentenceTask(RowTask):
    """Classification and regression of single sentences and pairs."""

    def __init__(self, tokenizer, train_set: list[Example], eval_set: list[Example], labels: list[str] | None,
                 max_length: int, batch_size: int, seed: int):
        self.labels, self.regression = labels, labels is None
        self.eval_set, self.max_length = eval_set, max_length
        super().__init__(tokenizer, self.encode(tokenizer, train_set, max_length), batch_size, seed)

    def encode(self, tok, examples, max_length) -> list[dict]:
        pairs = [e.text_pair or "" for e in examples] if any(e.text_pair is not None for e in examples) else None
        encs = tok.encode_batch([e.text for e in examples], pairs, max_length=max_length)
        index = {name: i for i, name in enumerate(self.labels or [])}
        return [{"input_ids": enc.ids, "token_type_ids": enc.type_ids,
                 "labels": float(e.label) if self.regression else index[e.label]} for e, enc in zip(examples, encs)]

    def loss(self, model, batch, totals):
        logits = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]).logits
        if self.regression:
            loss = F.mse_loss(logits.squeeze(-1), batch["labels"].float(), reduction="sum")
        else:
            loss = F.cross_entropy(logits, batch["labels"], reduction="sum")
        return loss / totals[0], {"loss": float(loss.detach())}

    def evaluate(self, model) -> dict[str, float]:
        predictor = Predictor(model, self.tok, PredictorSettings(batch_size=64, max_length=self.max_length))
        pairs = [e.text_pair or "" for e in self.eval_set] if any(e.text_pair is not None for e in self.eval_set) \
            else None
        out = predictor.classify([e.text for e in self.eval_set], pairs)
        if self.regression:
            pred, gold = [o["score"] for o in out], [float(e.label) for e in self.eval_set]
            return {"pearson": M.pearson(pred, gold), "spearman": M.spearman(pred, gold)}
        index = {name: i for i, name in enumerate(self.labels)}
        pred, gold = [index[o["label"]] for o in out], [index[e.label] for e in self.eval_set]
        result = {"accuracy": M.accuracy(pred, gold)}
        if len(self.labels) == 2:
            result["f1"] = M.f1_binary(pred, gold)
            result["mcc"] = M.matthews_corrcoef(pred, gold)
        return result


class TaggingTask(RowTask):
    def __init__(self, tokenizer, train_set: list[TagExample], eval_set: list[TagExample], labels: list[str],
                 max_length: int, batch_size: int, seed: int):
        self.labels, self.eval_set, self.max_length = labels, eval_set, max_length
        label_ids = {t: i for i, t in enumerate(labels)}
        rows = [{"input_ids": f.input_ids, "token_type_ids": f.token_type_ids, "labels": f.labels}
                for f in tag_features(tokenizer, train_set, label_ids, max_length)]
        super().__init__(tokenizer, rows, batch_size, seed)

    def counts(self, batch) -> list[float]:
        return [float((batch["labels"] != IGNORE).sum())]  # the loss is a mean over labelled words

    def loss(self, model, batch, totals):
        logits = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]).logits
        loss = F.cross_entropy(logits.flatten(0, 1), batch["labels"].flatten(), ignore_index=IGNORE, reduction="sum")
        return loss / totals[0], {"loss": float(loss.detach())}

    def evaluate(self, model) -> dict[str, float]:
        predictor = Predictor(model, self.tok, PredictorSettings(batch_size=64, max_length=self.max_length))
        predicted = [r["tags"] for r in predictor.tag(self.eval_set)]
        scores = M.entity_scores(predicted, [e.tags for e in self.eval_set])
        return {"f1": scores["f1"], "precision": scores["precision"], "recall": scores["recall"]}


class QATask(RowTask):
    def __init__(self, tokenizer, train_set: list[QAExample], eval_set: list[QAExample], settings: QASettings,
                 korean: bool, batch_size: int, seed: int):
        self.settings, self.eval_set, self.korean = settings, eval_set, korean
        self.v2 = any(e.is_impossible for e in train_set + eval_set)
        rows = [{"input_ids": f.input_ids, "token_type_ids": f.token_type_ids, "start_positions": f.start_position,
                 "end_positions": f.end_position} for f in qa_features(tokenizer, train_set, settings, train=True)]
        super().__init__(tokenizer, rows, batch_size, seed)

    def loss(self, model, batch, totals):
        out = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"],
                    start_positions=batch["start_positions"], end_positions=batch["end_positions"])
        n = len(batch["input_ids"])
        return out.loss * n / totals[0], {"loss": float(out.loss.detach()) * n}

    def evaluate(self, model) -> dict[str, float]:
        predictor = Predictor(model, self.tok, PredictorSettings(batch_size=64, qa=self.settings))
        answers = predictor.answer(self.eval_set, allow_empty=self.v2)
        em_fn, f1_fn = (M.korquad_em, M.korquad_f1) if self.korean else (M.squad_em, M.squad_f1)
        gold = [[t for t, _ in e.answers] or [""] for e in self.eval_set]
        return {"em": float(np.mean([em_fn(a["answer"], g) for a, g in zip(answers, gold)])),
                "f1": float(np.mean([f1_fn(a["answer"], g) for a, g in zip(answers, gold)]))}


# ---- the recipe --------------------------------------------------------------------------------------------------
HEAD_FOR = {"classification": BertForSequenceClassification, "regression": BertForSequenceClassification,
            "tagging": BertForTokenClassification, "qa": BertForQuestionAnswering}


def load_task_data(cfg: FinetuneConfig) -> tuple[Tokenizer, list, list, list[str] | None]:
    """(tokenizer, training examples, evaluation examples, label names or None) as the config asks."""
    if cfg.task not in TASK_INFO:
        raise ValueError(f"task '{cfg.task}': choose one of {', '.join(TASK_INFO)}")
    info = TASK_INFO[cfg.task]
    tokenizer = Tokenizer.from_pretrained(cfg.model)
    if cfg.split_eval:
        if info.group is None and info.family != "tagging":
            raise ValueError(f"task '{cfg.task}' has a training split; split_eval is for dev-only datasets")
        examples, labels = read_examples(cfg.eval_file, cfg.task)
        key = info.group or (lambda e: e.id)
        train_set, eval_set = split_by_group(examples, key, cfg.split_eval, cfg.train.seed)
    else:
        train_set, labels = read_examples(cfg.train_file, cfg.task)
        eval_set, eval_labels = read_examples(cfg.eval_file, cfg.task)
        if info.family == "tagging":  # a tag seen only in evaluation still needs an output
            labels = sorted(set(labels) | set(eval_labels))
    if cfg.max_train_examples and len(train_set) > cfg.max_train_examples:
        g = torch.Generator().manual_seed(cfg.train.seed)
        keep = torch.randperm(len(train_set), generator=g)[: cfg.max_train_examples].tolist()
        train_set = [train_set[i] for i in sorted(keep)]
    if cfg.max_eval_examples:
        eval_set = eval_set[: cfg.max_eval_examples]
    for name, part in (("training", train_set), ("evaluation", eval_set)):
        if not part:
            raise ValueError(f"task '{cfg.task}': no {name} examples (check the files, --split-eval and the limits)")
    return tokenizer, train_set, eval_set, labels


def make_task(cfg: FinetuneConfig, tokenizer: Tokenizer, train_set: list, eval_set: list, labels: list[str] | None,
              max_position_embeddings: int) -> RowTask:
    """The loop's task for the config's family (the loss, batches and evaluation of fine-tuning)."""
    info = TASK_INFO[cfg.task]
    max_length = min(cfg.max_length, max_position_embeddings)
    if info.family == "qa":
        cfg.qa.max_length = min(cfg.qa.max_length, max_position_embeddings)
        task = QATask(tokenizer, train_set, eval_set, cfg.qa, korean=cfg.task == "korquad",
                      batch_size=cfg.batch_size, seed=cfg.train.seed)
    elif info.family == "tagging":
        task = TaggingTask(tokenizer, train_set, eval_set, labels, max_length, cfg.batch_size, cfg.train.seed)
    else:
        task = SentenceTask(tokenizer, train_set, eval_set, labels, max_length, cfg.batch_size, cfg.train.seed)
    if cfg.group_by_length:
        task.group_by_length()
    return task


def schedule_epochs(cfg: FinetuneConfig, task: RowTask) -> None:
    """Steps from epochs, an evaluation after every epoch, the best one kept by the task's metric."""
    steps_per_epoch = math.ceil(len(task.train_rows) / cfg.batch_size)
    cfg.train.steps = math.ceil(cfg.epochs * steps_per_epoch)
    cfg.train.eval_every = steps_per_epoch
    cfg.train.best_metric = TASK_INFO[cfg.task].metric


# How a run is carried out, not what it computes: these may change between the parts of a resumed run.
RESUME_MAY_CHANGE = {"out", "max_eval_examples", "train.threads", "train.device", "train.save_every",
                     "train.log_every", "train.keep_checkpoints"}


def check_resumable(cfg: FinetuneConfig, target: OutputDir) -> None:
    """When resuming, refuse a config that would compute a different run than the one in `finetune_config.json`
    (another learning rate, data, epochs or seed would silently continue a schedule it did not start)."""
    if target.resuming:
        qa = TASK_INFO.get(cfg.task) is not None and TASK_INFO[cfg.task].family == "qa"
        refuse_changed_config(target.path / "finetune_config.json", asdict(cfg),
                              RESUME_MAY_CHANGE | (set() if qa else {"qa."}))


def run_finetune(cfg: FinetuneConfig, resume: bool = False, show_progress: bool = True,
                 overwrite: bool = False) -> dict:
    """Fine-tune as `cfg` says; `resume` continues from the last checkpoint in `cfg.out` (written every
    `cfg.train.save_every` steps), which must be this run's and come from the same config (checked:
    `finetune_config.json`). A non-empty `cfg.out` is refused unless resuming, or `overwrite` (see
    `bertkit.io.prepare_output_dir`); nothing is written until the data, config and model have loaded."""
    cfg.validate()
    target = prepare_output_dir(cfg.out, verb="finetune", inputs=[cfg.model, cfg.train_file, cfg.eval_file],
                                resume=resume, overwrite=overwrite)
    cfg.train.run_id = target.run_id
    check_resumable(cfg, target)
    config_text = json.dumps(asdict(cfg), indent=2, default=str) + "\n"  # before the steps are derived below
    tokenizer, train_set, eval_set, labels = load_task_data(cfg)
    info = TASK_INFO[cfg.task]
    config = BertConfig.from_json_file(Path(cfg.model) / "config.json")
    check_vocab(tokenizer, config, cfg.model)  # a wrong vocab.txt would train on shifted embedding rows
    config.num_labels = 1 if info.family == "regression" else len(labels) if labels else 2
    if labels is not None:  # after num_labels, which resets the names to LABEL_i
        config.id2label = dict(enumerate(labels))
        config.label2id = {name: i for i, name in enumerate(labels)}
    config.problem_type = {"regression": "regression", "classification": "single_label_classification"}.get(
        info.family)
    config.extra["finetuning_task"] = cfg.task  # an HF config field bertkit does not use itself
    if cfg.dropout is not None:
        config.hidden_dropout_prob = config.attention_probs_dropout_prob = cfg.dropout
    torch.manual_seed(cfg.train.seed)
    head = HEAD_FOR[info.family]
    model = head.from_pretrained(cfg.model, config=config) if cfg.init == "pretrained" else head(config)

    task = make_task(cfg, tokenizer, train_set, eval_set, labels, config.max_position_embeddings)
    schedule_epochs(cfg, task)
    cfg.train.validate()
    with target as work:
        atomic_write_text(work / "finetune_config.json", config_text)
        result = train(model, task, cfg.train, work, tokenizer=tokenizer, resume=target.resuming,
                       show_progress=show_progress)
        summary = {"task": cfg.task, "init": cfg.init, "metric": info.metric, "train_examples": len(train_set),
                   "eval_examples": len(eval_set), **result, "config": asdict(cfg)}
        atomic_write_text(work / "eval_results.json", json.dumps(summary, indent=2) + "\n")
    return summary


def evaluate_model(model_dir: str | Path, task: str, eval_file: str | Path, split_eval: float = 0.0, seed: int = 12345,
                   max_length: int = 512, qa: QASettings | None = None) -> dict:
    """The task's official metrics for a fine-tuned model directory on `eval_file` (or on the held-out part of it,
    with the same `split_eval` and seed as fine-tuning used)."""
    if task not in TASK_INFO:
        raise ValueError(f"task '{task}': choose one of {', '.join(TASK_INFO)}")
    info = TASK_INFO[task]
    examples, labels = read_examples(eval_file, task)
    if split_eval:
        _, examples = split_by_group(examples, info.group or (lambda e: e.id), split_eval, seed)
    predictor = Predictor.from_pretrained(model_dir, PredictorSettings(batch_size=64, max_length=max_length,
                                                                       qa=qa or QASettings()))
    expected = {"classification": "classification", "regression": "regression", "tagging": "tagging",
                "qa": "qa"}[info.family]
    if predictor.family != expected:
        raise ValueError(f"{model_dir}: a {predictor.family} model cannot be evaluated on {task} ({expected})")
    model, tok = predictor.model, predictor.tok
    if info.family == "qa":
        t = QATask(tok, [], examples, predictor.settings.qa, korean=task == "korquad", batch_size=1, seed=seed)
    elif info.family == "tagging":
        t = TaggingTask(tok, [], examples, labels, predictor.max_length, 1, seed)
    else:
        names = [model.config.id2label[i] for i in range(model.config.num_labels)] if labels else None
        if names:
            examples = align_labels(examples, task, names, source=eval_file, model=model_dir)
        t = SentenceTask(tok, [], examples, names, predictor.max_length, 1, seed)
    return {"task": task, "metric": info.metric, "eval_examples": len(examples), **t.evaluate(model)}
