"""Fine-tuning recipes for the four task families of the paper, over the one training loop. Which family a task
is, its reader, metric, splits and defaults are the task registry's (`bertkit.data.tasks.TASKS`); what a family
trains (head, rows, loss, evaluation) is its `bertkit.task_families` object: `FamilyTask` runs any of them.

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
NER) so that no text is on both sides. `validation` holds a fraction of the training examples out the same way (by
text where the task has no groups) and scores that instead: how a learning rate is chosen without the evaluation
split (`benchmarks/finetune.py --select-lr`).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from collections.abc import Callable

import torch

from bertkit.io import OutputDir, atomic_write_text, prepare_output_dir
from bertkit.config import BertConfig
from bertkit.data.features import IGNORE, QASettings
from bertkit.data.pretraining import Schedule
from bertkit.data.tasks import TASKS, Example, QAExample, TagExample, Task, align_labels, get_task, read_task
from bertkit.infer.predictor import Predictor, PredictorSettings
from bertkit.heads import HEADS
from bertkit.task_families import Family, get_family
from bertkit.tokenizer import Tokenizer, check_vocab
from bertkit.train.loop import TrainConfig, refuse_changed_config, require, train

# The one task registry is bertkit.data.tasks.TASKS; these names stay importable from here.
TASK_INFO: dict[str, Task] = TASKS
TaskInfo = Task
read_examples = read_task


def split_by_group(examples: list, key: Callable, eval_fraction: float, seed: int | str) -> tuple[list, list]:
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
    # > 0: hold this fraction of the training examples out (by group, or by text) and evaluate on it instead of the
    # evaluation set: a score for choosing settings (the learning rate) that never reads the evaluation split
    validation: float = 0.0
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
        require("validation", self.validation, 0, maximum=1, below=True)
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


class FamilyTask(RowTask):
    """Fine-tuning of any trainable family: its rows, the loss its head computes, its evaluation."""

    def __init__(self, family: Family, tokenizer: Tokenizer, train_set: list, eval_set: list,
                 labels: list[str] | None, max_length: int, batch_size: int, seed: int,
                 qa: QASettings | None = None, korean: bool = False):
        self.family, self.labels, self.eval_set, self.max_length = family, labels, eval_set, max_length
        self.settings = qa or QASettings()
        self.regression = family.num_labels(labels) == 1
        self.eval_options = family.eval_options(train_set, eval_set, korean)
        rows = family.rows(tokenizer, train_set, labels, max_length, self.settings) if train_set else []
        super().__init__(tokenizer, rows, batch_size, seed)

    def counts(self, batch) -> list[float]:
        return [self.family.count(batch)]

    def loss(self, model, batch, totals):
        loss = self.family.loss(model, batch)  # summed over the batch's units
        return loss / totals[0], {"loss": float(loss.detach())}

    def evaluate(self, model) -> dict[str, float]:
        predictor = Predictor(model, self.tok, PredictorSettings(batch_size=64, max_length=self.max_length,
                                                                 qa=self.settings))
        return self.family.evaluate(predictor, self.eval_set, self.labels, **self.eval_options)


class SentenceTask(FamilyTask):
    """Classification (`labels`) and regression (`labels` None) of single sentences and pairs."""

    def __init__(self, tokenizer, train_set: list[Example], eval_set: list[Example], labels: list[str] | None,
                 max_length: int, batch_size: int, seed: int):
        family = get_family("regression" if labels is None else "classification")
        super().__init__(family, tokenizer, train_set, eval_set, labels, max_length, batch_size, seed)


class TaggingTask(FamilyTask):
    def __init__(self, tokenizer, train_set: list[TagExample], eval_set: list[TagExample], labels: list[str],
                 max_length: int, batch_size: int, seed: int):
        super().__init__(get_family("tagging"), tokenizer, train_set, eval_set, labels, max_length, batch_size, seed)


class QATask(FamilyTask):
    def __init__(self, tokenizer, train_set: list[QAExample], eval_set: list[QAExample], settings: QASettings,
                 korean: bool, batch_size: int, seed: int):
        super().__init__(get_family("qa"), tokenizer, train_set, eval_set, None, settings.max_length, batch_size,
                         seed, qa=settings, korean=korean)


# ---- the recipe --------------------------------------------------------------------------------------------------
def task_family(task: Task, name: str) -> Family:
    """The family of a registered task, refused when it cannot be fine-tuned."""
    family = get_family(task.family)
    if not family.trainable:
        raise ValueError(f"task '{name}': its family '{family.name}' is not fine-tuned")
    return family


def load_task_data(cfg: FinetuneConfig) -> tuple[Tokenizer, list, list, list[str] | None]:
    """(tokenizer, training examples, evaluation examples, label names or None) as the config asks."""
    task = get_task(cfg.task)
    family = task_family(task, cfg.task)
    tokenizer = Tokenizer.from_pretrained(cfg.model)
    if cfg.split_eval:
        if task.group is None:
            raise ValueError(f"task '{cfg.task}' has a training split; split_eval is for dev-only datasets")
        examples, labels = read_task(cfg.eval_file, cfg.task)
        train_set, eval_set = split_by_group(examples, task.group, cfg.split_eval, cfg.train.seed)
    else:
        train_set, labels = read_task(cfg.train_file, cfg.task)
        eval_set, eval_labels = read_task(cfg.eval_file, cfg.task)
        if family.union_labels:
            labels = sorted(set(labels) | set(eval_labels))
    if cfg.max_train_examples and len(train_set) > cfg.max_train_examples:
        g = torch.Generator().manual_seed(cfg.train.seed)
        keep = torch.randperm(len(train_set), generator=g)[: cfg.max_train_examples].tolist()
        train_set = [train_set[i] for i in sorted(keep)]
    if cfg.validation:  # salted apart from split_eval's hash, so it cuts across the groups left for training
        train_set, eval_set = split_by_group(train_set, task.group or repr, cfg.validation,
                                             f"{cfg.train.seed}-validation")
    if cfg.max_eval_examples:
        eval_set = eval_set[: cfg.max_eval_examples]
    for name, part in (("training", train_set), ("evaluation", eval_set)):
        if not part:
            raise ValueError(f"task '{cfg.task}': no {name} examples (check the files, --split-eval and the limits)")
    return tokenizer, train_set, eval_set, labels


def make_task(cfg: FinetuneConfig, tokenizer: Tokenizer, train_set: list, eval_set: list, labels: list[str] | None,
              model_max_length: int) -> FamilyTask:
    """The loop's task for the config's family (the loss, batches and evaluation of fine-tuning), its inputs at
    most `model_max_length` tokens (the model's `config.max_length`)."""
    task = get_task(cfg.task)
    family = task_family(task, cfg.task)
    if family.rows_use_qa_settings:
        cfg.qa.max_length = min(cfg.qa.max_length, model_max_length)
    loop_task = FamilyTask(family, tokenizer, train_set, eval_set, labels,
                           min(cfg.max_length, model_max_length), cfg.batch_size, cfg.train.seed, qa=cfg.qa,
                           korean=task.korean)
    if cfg.group_by_length:
        loop_task.group_by_length()
    return loop_task


def schedule_epochs(cfg: FinetuneConfig, task: RowTask) -> None:
    """Steps from epochs, an evaluation after every epoch, the best one kept by the task's metric."""
    steps_per_epoch = math.ceil(len(task.train_rows) / cfg.batch_size)
    cfg.train.steps = math.ceil(cfg.epochs * steps_per_epoch)
    cfg.train.eval_every = steps_per_epoch
    cfg.train.best_metric = get_task(cfg.task).metric


# How a run is carried out, not what it computes: these may change between the parts of a resumed run.
RESUME_MAY_CHANGE = {"out", "max_eval_examples", "train.threads", "train.device", "train.save_every",
                     "train.log_every", "train.keep_checkpoints"}


def check_resumable(cfg: FinetuneConfig, target: OutputDir) -> None:
    """When resuming, refuse a config that would compute a different run than the one in `finetune_config.json`
    (another learning rate, data, epochs or seed would silently continue a schedule it did not start). The QA
    settings count only for a family that reads them (its rows are QA windows)."""
    if target.resuming:
        reads_qa = cfg.task in TASKS and get_family(TASKS[cfg.task].family).rows_use_qa_settings
        refuse_changed_config(target.path / "finetune_config.json", asdict(cfg),
                              RESUME_MAY_CHANGE | (set() if reads_qa else {"qa."}))


def configure_head(config: BertConfig, family: Family, labels: list[str] | None, task: str) -> None:
    """config.json's head fields for a model of `family` fine-tuned on `labels`."""
    config.num_labels = family.num_labels(labels)
    if labels is not None:  # after num_labels, which resets the names to LABEL_i
        config.id2label = dict(enumerate(labels))
        config.label2id = {name: i for i, name in enumerate(labels)}
    config.problem_type = family.problem_type
    config.extra["finetuning_task"] = task  # an HF config field bertkit does not use itself


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
    task = get_task(cfg.task)
    family = task_family(task, cfg.task)
    config = BertConfig.from_json_file(Path(cfg.model) / "config.json")
    check_vocab(tokenizer, config, cfg.model)  # a wrong vocab.txt would train on shifted embedding rows
    configure_head(config, family, labels, cfg.task)
    if cfg.dropout is not None:
        config.hidden_dropout_prob = config.attention_probs_dropout_prob = cfg.dropout
    torch.manual_seed(cfg.train.seed)
    head = HEADS[family.heads[0]]
    model = head.from_pretrained(cfg.model, config=config) if cfg.init == "pretrained" else head(config)

    loop_task = make_task(cfg, tokenizer, train_set, eval_set, labels, config.max_length)
    schedule_epochs(cfg, loop_task)
    cfg.train.validate()
    with target as work:
        atomic_write_text(work / "finetune_config.json", config_text)
        result = train(model, loop_task, cfg.train, work, tokenizer=tokenizer, resume=target.resuming,
                       show_progress=show_progress)
        summary = {"task": cfg.task, "init": cfg.init, "metric": task.metric, "train_examples": len(train_set),
                   "eval_examples": len(eval_set), **result, "config": asdict(cfg)}
        atomic_write_text(work / "eval_results.json", json.dumps(summary, indent=2) + "\n")
    return summary


def evaluate_model(model_dir: str | Path, task: str, eval_file: str | Path, split_eval: float = 0.0, seed: int = 12345,
                   max_length: int = 512, qa: QASettings | None = None) -> dict:
    """The task's official metrics for a fine-tuned model directory on `eval_file` (or on the held-out part of it,
    with the same `split_eval` and seed as fine-tuning used)."""
    info = get_task(task)
    family = task_family(info, task)
    examples, labels = read_task(eval_file, task)
    if split_eval:
        if info.group is None:
            raise ValueError(f"task '{task}' has a training split; split_eval is for dev-only datasets")
        _, examples = split_by_group(examples, info.group, split_eval, seed)
    # PyTorch by name: the model as trained, and one pass does not repay an export into the cache
    predictor = Predictor.from_pretrained(model_dir, PredictorSettings(batch_size=64, max_length=max_length,
                                                                       qa=qa or QASettings(), backend="torch"))
    if predictor.task_family is not family:
        raise ValueError(f"{model_dir}: a {predictor.family} model cannot be evaluated on {task} ({family.name})")
    config = predictor.config
    if family.class_labels:  # named as the model names its classes
        labels = [config.id2label[i] for i in range(config.num_labels)]
        examples = align_labels(examples, task, labels, source=eval_file, model=model_dir)
    options = family.eval_options([], examples, info.korean)
    return {"task": task, "metric": info.metric, "eval_examples": len(examples),
            **family.evaluate(predictor, examples, labels, **options)}
