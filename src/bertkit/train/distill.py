"""Knowledge distillation (Hinton et al. 2015; DistilBERT, Sanh et al. 2019) over the one training loop.

The student is the teacher with fewer layers: its embeddings, the chosen encoder layers (by default every other one,
DistilBERT's choice) and its head are copied, so it starts close to the teacher (`student_from_teacher`).

The loss, per batch of the task being distilled (the same batches, counts and evaluation as training it directly):

    alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T))     soft targets; T^2 keeps the gradient scale
  + (1 - alpha) * the task's own loss on the gold labels                hard targets
  + cosine * (1 - cos(student, teacher last hidden state))              optional, per real token (DistilBERT)

Soft targets are taken from every output the two models share (`logits`; QA's `start_logits` and `end_logits`,
averaged), counted in the task's own unit (examples; labelled tokens for tagging; masked tokens for MLM).
- task-specific distillation: the teacher is a fine-tuned model (classification, regression, tagging, QA) and the
  data are the task's (`DistillConfig.task`); for regression the soft term is the squared difference of scores.
- general distillation: the teacher is a pre-trained MLM (BertForPreTraining / BertForMaskedLM) and the data are
  pre-training shards of a corpus, masked as in pre-training (`DistillConfig.corpus`).
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F

from bertkit.config import BertConfig
from bertkit.heads import IGNORE, BertForMaskedLM, BertForPreTraining, BertForSequenceClassification, load_model
from bertkit.io import OutputDir, atomic_write_text, prepare_output_dir
from bertkit.tokenizer import Tokenizer
from bertkit.train.loop import TrainConfig, require, train

log = logging.getLogger("bertkit.distill")

_LAYER = re.compile(r"^(.*encoder\.layer\.)(\d+)(\..*)$")


# ---- the student ---------------------------------------------------------------------------------------------------
def every_other(num_layers: int, keep: int | None = None) -> list[int]:
    """`keep` layers spread evenly from the first (default: half, rounded up): 12 -> 0,2,4,6,8,10; 6 -> 0,2,4."""
    keep = keep or (num_layers + 1) // 2
    if not 1 <= keep <= num_layers:
        raise ValueError(f"student layers: {keep} is not between 1 and the teacher's {num_layers}")
    return [round(i * num_layers / keep) for i in range(keep)]


def layer_map(state: dict[str, torch.Tensor], layers: list[int]) -> dict[str, torch.Tensor]:
    """The teacher's state dict with encoder layer `layers[j]` renamed to layer `j` and the other layers dropped;
    every other tensor (embeddings, pooler, head) is kept as it is."""
    position = {teacher: student for student, teacher in enumerate(layers)}
    out = {}
    for key, value in state.items():
        m = _LAYER.match(key)
        if m is None:
            out[key] = value
        elif int(m.group(2)) in position:
            out[f"{m.group(1)}{position[int(m.group(2))]}{m.group(3)}"] = value
    return out


def student_from_teacher(teacher: torch.nn.Module, layers: list[int], **config_overrides) -> torch.nn.Module:
    """A model of the teacher's class, family and width with `layers` of its encoder (and everything else) copied.
    ALBERT's layers are shared across depth: its student keeps them all and applies them fewer times
    (num_hidden_layers = len(layers), on ALBERT's own schedule)."""
    n = teacher.config.num_hidden_layers
    if not layers or len(set(layers)) != len(layers) or not all(0 <= i < n for i in layers):
        raise ValueError(f"student layers {layers}: distinct indices of the teacher's {n} layers are needed")
    config = BertConfig.from_dict(teacher.config.to_dict())  # a copy, in the family's own terms
    for key, value in {**config_overrides, "num_hidden_layers": len(layers)}.items():
        setattr(config, key, value)
    config.validate("student config")
    student = type(teacher)(config)
    state = teacher.state_dict()
    student.load_state_dict(state if config.family.shared_layers else layer_map(state, layers))
    return student


# ---- the loss -----------------------------------------------------------------------------------------------------
@dataclass
class DistillSettings:
    temperature: float = 2.0
    alpha: float = 0.5  # weight of the soft targets; 1 - alpha goes to the gold labels
    cosine: float = 0.0  # weight of the hidden-state cosine term (needs equal widths)


class DistillTask:
    """Wraps a task of the loop: its batches, counts, evaluation and hard loss, plus the teacher's soft targets.

    The student's outputs are read with forward hooks while the wrapped task computes its own loss, and the
    teacher is called with exactly the arguments the student received, so any task's batches work unchanged."""

    def __init__(self, inner, student: torch.nn.Module, teacher: torch.nn.Module, settings: DistillSettings):
        self.inner, self.teacher, self.settings = inner, teacher.eval(), settings
        for p in teacher.parameters():
            p.requires_grad_(False)
        self.names = (*inner.names, "distilled tokens")
        self._seen: dict = {}
        student.register_forward_pre_hook(self._remember_inputs, with_kwargs=True)
        student.register_forward_hook(self._remember_output)
        student.bert.register_forward_hook(lambda m, a, out: self._seen.__setitem__("hidden", out.last_hidden_state))
        self.regression = isinstance(student, BertForSequenceClassification) and student.config.num_labels == 1

    def _remember_inputs(self, module, args, kwargs):
        self._seen.update(args=args, kwargs=kwargs)

    def _remember_output(self, module, args, output):
        self._seen["output"] = output

    def micro_batches(self, step, rank, world, accum):
        return self.inner.micro_batches(step, rank, world, accum)

    def counts(self, batch) -> list[float]:
        return [*self.inner.counts(batch), float(batch["attention_mask"].sum())]

    def loss(self, model, batch, totals):
        s = self.settings
        hard, stats = self.inner.loss(model, batch, totals[:-1])
        student = self._seen.pop("output")
        if next(self.teacher.parameters()).device != batch["input_ids"].device:
            self.teacher.to(batch["input_ids"].device)
        with torch.no_grad():
            teacher_hidden = {}
            handle = self.teacher.bert.register_forward_hook(
                lambda m, a, out: teacher_hidden.__setitem__("h", out.last_hidden_state))
            try:
                teacher = self.teacher(*self._seen["args"], **self._seen["kwargs"])
            finally:
                handle.remove()
        soft = self.soft_loss(student, teacher, batch) / totals[0]
        loss = s.alpha * soft + (1 - s.alpha) * hard
        stats = {**stats, "soft_loss": float(soft.detach()) * float(totals[0])}
        if s.cosine:
            real = batch["attention_mask"].bool()
            cos = F.cosine_similarity(self._seen["hidden"][real], teacher_hidden["h"][real], dim=-1)
            term = (1 - cos).sum()
            loss = loss + s.cosine * term / totals[-1]
            stats["cosine_loss"] = float(term.detach())
        return loss, stats

    def soft_loss(self, student, teacher, batch) -> torch.Tensor:
        """Summed over the task's units (what the first count counts)."""
        T = self.settings.temperature
        if self.regression:
            return F.mse_loss(student.logits.float(), teacher.logits.float(), reduction="sum")
        pairs = [(getattr(student, k), getattr(teacher, k)) for k in ("logits", "start_logits", "end_logits")
                 if getattr(student, k) is not None and getattr(teacher, k) is not None]
        total = 0.0
        for st, te in pairs:
            st, te = st.float(), te.float()
            if st.dim() == 3:  # tagging (B, T, C): the labelled positions, the unit the task counts
                keep = batch["labels"] != IGNORE
                st, te = st[keep], te[keep]
            kl = F.kl_div(F.log_softmax(st / T, -1), F.log_softmax(te / T, -1), log_target=True, reduction="sum")
            total = total + kl * T * T
        return total / len(pairs)

    def summarize(self, stats, totals):
        """The task's own statistics (its `loss` becomes `hard_loss`), the soft and cosine terms, and their sum."""
        s = self.settings
        row = self.inner.summarize({k: v for k, v in stats.items() if k not in ("soft_loss", "cosine_loss")},
                                   totals[:-1])
        row["hard_loss"] = row.pop("loss")
        row["soft_loss"] = stats.get("soft_loss", 0.0) / max(totals[0], 1.0)
        row["loss"] = s.alpha * row["soft_loss"] + (1 - s.alpha) * row["hard_loss"]
        if "cosine_loss" in stats:
            row["cosine_loss"] = stats["cosine_loss"] / max(totals[-1], 1.0)
            row["loss"] += s.cosine * row["cosine_loss"]
        return row

    def evaluate(self, model) -> dict[str, float]:
        return self.inner.evaluate(model)


# ---- the recipe ---------------------------------------------------------------------------------------------------
@dataclass
class DistillConfig:
    teacher: str = ""  # a fine-tuned model directory (task-specific) or a pre-trained MLM (general)
    out: str = "runs/distill"
    layers: list[int] = field(default_factory=list)  # teacher layers the student keeps; [] = every other one
    settings: DistillSettings = field(default_factory=DistillSettings)
    # task-specific: the fine-tuning settings (task, files, lengths, epochs, lr, ...); `model` is set to the teacher
    finetune: dict = field(default_factory=dict)
    # general: pre-training settings (corpus, objective roberta/bert/albert, batch size, steps, ...)
    pretrain: dict = field(default_factory=dict)


def run_distill(cfg: DistillConfig, resume: bool = False, show_progress: bool = True,
                overwrite: bool = False) -> dict:
    """Distil as `cfg` says; `resume` continues from the last checkpoint in `cfg.out` (this run's, same config). A
    non-empty `cfg.out` is refused unless resuming, or `overwrite` (see `bertkit.io.prepare_output_dir`)."""
    require("temperature", cfg.settings.temperature, 0, above=True)
    require("alpha", cfg.settings.alpha, 0, maximum=1)
    require("cosine", cfg.settings.cosine, 0)
    files = [cfg.finetune.get("train_file"), cfg.finetune.get("eval_file"), *cfg.pretrain.get("corpus", []),
             cfg.pretrain.get("vocab")]
    target = prepare_output_dir(cfg.out, verb="distill", inputs=[cfg.teacher, *files], resume=resume,
                                overwrite=overwrite)
    teacher = load_model(cfg.teacher).eval()
    layers = cfg.layers or every_other(teacher.config.num_hidden_layers)
    general = isinstance(teacher, (BertForPreTraining, BertForMaskedLM))
    dropout = cfg.finetune.get("dropout", 0.1) if not general else None  # the fine-tuning default, as in finetune
    overrides = {} if dropout is None else {"hidden_dropout_prob": dropout, "attention_probs_dropout_prob": dropout}
    student = student_from_teacher(teacher, layers, **overrides)
    log.info("student: teacher layers %s of %d (%.1f M of %.1f M parameters)", layers,
             teacher.config.num_hidden_layers, sum(p.numel() for p in student.parameters()) / 1e6,
             sum(p.numel() for p in teacher.parameters()) / 1e6)
    run = _general if general else _task_specific
    return run(cfg, teacher, student, layers, target, show_progress)


def _finish(cfg: DistillConfig, target: OutputDir, summary: dict, layers: list[int]) -> dict:
    summary.update(teacher=cfg.teacher, layers=layers)
    atomic_write_text(target.path / "eval_results.json", json.dumps({**summary, "config": asdict(cfg)},
                                                                    indent=2, default=str) + "\n")
    return summary


def _task_specific(cfg: DistillConfig, teacher, student, layers: list[int], target: OutputDir,
                   show_progress: bool) -> dict:
    from bertkit.data.tasks import align_labels
    from bertkit.train.finetune import FinetuneConfig, TASK_INFO, load_task_data, make_task, schedule_epochs

    options = dict(cfg.finetune)
    train_options = options.pop("train", {})
    fcfg = FinetuneConfig(**{**options, "model": cfg.teacher, "out": cfg.out})
    fcfg.train = TrainConfig(**{**asdict(fcfg.train), **train_options})
    fcfg.validate()
    if fcfg.task not in TASK_INFO:
        raise ValueError(f"task '{fcfg.task}': choose one of {', '.join(TASK_INFO)}")
    tokenizer, train_set, eval_set, labels = load_task_data(fcfg)
    names = [teacher.config.id2label[i] for i in range(teacher.config.num_labels)]
    if TASK_INFO[fcfg.task].family == "classification":  # labelled as the teacher names its classes, all known
        train_set = align_labels(train_set, fcfg.task, names, source=fcfg.train_file or fcfg.eval_file,
                                 model=cfg.teacher)
        eval_set = align_labels(eval_set, fcfg.task, names, source=fcfg.eval_file, model=cfg.teacher)
    elif labels is not None and set(labels) - set(names):
        raise ValueError(f"{cfg.teacher}: the teacher's labels {names} do not cover the task's {labels}")
    task_labels = names if labels is not None else None
    inner = make_task(fcfg, tokenizer, train_set, eval_set, task_labels, student.config.max_length)
    schedule_epochs(fcfg, inner)
    fcfg.train.run_id = target.run_id
    fcfg.train.validate()
    task = DistillTask(inner, student, teacher, cfg.settings)
    with target as work:
        result = train(student, task, fcfg.train, work, tokenizer=tokenizer, resume=target.resuming,
                       show_progress=show_progress)
        return _finish(cfg, target, {"task": fcfg.task, "metric": TASK_INFO[fcfg.task].metric,
                                     "train_examples": len(train_set), "eval_examples": len(eval_set), **result},
                       layers)


def _general(cfg: DistillConfig, teacher, student, layers: list[int], target: OutputDir, show_progress: bool) -> dict:
    from bertkit.data.pretraining import Masker, ShardSet
    from bertkit.train.pretrain import PAIR_HEAD, PretrainConfig, PretrainTask, data_objective, prepare_data

    # with the bert objective NSP stays a hard-label loss; the soft targets are the MLM distributions
    pcfg = PretrainConfig.from_dict({**cfg.pretrain, "out": cfg.out, "vocab": cfg.pretrain.get("vocab", cfg.teacher)})
    pcfg.validate()
    if pcfg.objective not in ("bert", "roberta", "albert"):  # ELECTRA's pair of networks has no one MLM to distil
        raise ValueError(f"general distillation: objective '{pcfg.objective}': bert, roberta or albert")
    if isinstance(teacher, BertForMaskedLM) and pcfg.objective in PAIR_HEAD:
        raise ValueError(f"{cfg.teacher}: a masked-LM teacher ({teacher.config.family.hf_class('BertForMaskedLM')}) "
                         f"has no {PAIR_HEAD[pcfg.objective].upper()} head: use objective roberta")
    if not pcfg.corpus:
        raise ValueError("general distillation: no corpus (pretrain.corpus)")
    tokenizer = Tokenizer.from_pretrained(pcfg.vocab)
    if tokenizer.vocab_size != teacher.config.vocab_size:
        raise ValueError(f"{pcfg.vocab}: vocabulary of {tokenizer.vocab_size} pieces, the teacher has "
                         f"{teacher.config.vocab_size}")
    pcfg.train.run_id = target.run_id
    with target as work:  # the shards are built inside the run's directory (a failure there leaves none)
        data = prepare_data(pcfg, tokenizer, work, show_progress)
        shards, eval_shards = ShardSet(data / "train"), ShardSet(data / "eval")
        if shards.config.objective != data_objective(pcfg.objective):
            raise ValueError(f"{data}: built for objective '{shards.config.objective}', not '{pcfg.objective}'")
        inner = PretrainTask(shards, Masker(tokenizer, pcfg.masking), pcfg.batch_size, pcfg.objective,
                             pcfg.train.seed, eval_shards, pcfg.eval_instances)
        task = DistillTask(inner, student, teacher, cfg.settings)
        result = train(student, task, pcfg.train, work, tokenizer=tokenizer, resume=target.resuming,
                       show_progress=show_progress)
        return _finish(cfg, target, dict(result), layers)
