"""Sentence-embedding training (SBERT, Reimers & Gurevych 2019) as a recipe over the one training loop.

The trained module is a `SentenceModel`'s encoder + `SentenceHead` (`SentenceTrainee`); a batch is every text of
its rows (pairs, triplets or single texts) tokenised into one padded batch and run in ONE forward pass (columns
stacked: all first texts, then all second texts, ...), where sentence-transformers runs one pass per column. The
encoder unpads on entry, so padding costs only the attention product; `group_by_length` (off by default: the
SBERT recipe draws batches at random) cuts that too.

Losses (each as sentence-transformers defines it; a batch's loss is its mean, as there):

| loss | rows | definition |
|---|---|---|
| softmax | (a, b), class | cross-entropy of W [u; v; abs(u - v)] (SBERT's NLI objective; W is trained and not saved) |
| cosine | (a, b), score in [0, 1] | mean (cos(u, v) - score)^2 |
| cosent | (a, b), score | log(1 + sum over pairs i, j with score_i > score_j of exp(scale (cos_j - cos_i))) |
| mnrl | (anchor, positive[, negative]) | cross-entropy of scale * cos(anchor_i, [positives; negatives]) with target i |
| mnrl-symmetric | (anchor, positive[, negative]) | mnrl, averaged with cross-entropy of scale * cos(positive_i, anchors) |
| mse | (text,) or (source, translation) | mean squared error between the student's vectors and the teacher's vector of the first column |

The batch-wise losses (cosent, mnrl) compare rows within a micro-batch: with `--grad-accum` or several processes
each micro-batch is its own set of negatives. After every epoch the evaluator (Spearman x 100 of the cosine of the
two sentences' vectors against the gold score, on an STS set) is logged to metrics.jsonl; the best epoch's weights
are what `out/` holds, written as a sentence-transformers directory (`SentenceModel.save`'s layout, which
`SentenceTransformer(out)` reads with the same vectors).
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bertkit.apps.sentence import SentenceModel
from bertkit.data.pairs import PairSet, for_loss, read_pairs
from bertkit.data.pretraining import Schedule
from bertkit.io import atomic_write_text, prepare_output_dir
from bertkit.metrics import pearson, spearman
from bertkit.train.loop import (RUN_SETTINGS, TrainConfig, refuse_changed_config, require, require_batch_split,
                               train)

LOSSES = ("softmax", "cosine", "cosent", "mnrl", "mnrl-symmetric", "mse")
CLASSIFIER_FILE = "softmax_classifier.safetensors"


# ---- losses, on sentence vectors ---------------------------------------------------------------------------------
def _wide(t: torch.Tensor) -> torch.Tensor:
    """At least float32 (bf16 autocast gives half-precision vectors; exp and log want more)."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


def softmax_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """SBERT's classification objective: cross-entropy of the logits W [u; v; |u - v|] (`SentenceTrainee.classify`)."""
    return F.cross_entropy(_wide(logits), labels.long())


def cosine_loss(u: torch.Tensor, v: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """Mean squared error between cos(u, v) and the gold score (in [0, 1])."""
    cos = _wide(F.cosine_similarity(u, v, dim=-1))
    return F.mse_loss(cos, scores.to(cos.dtype))


def cosent_loss(u: torch.Tensor, v: torch.Tensor, scores: torch.Tensor, scale: float = 20.0) -> torch.Tensor:
    """CoSENT (Su 2022): log(1 + sum_{score_i > score_j} exp(scale * (cos_j - cos_i))), a ranking loss on the
    pairs' cosines that asks only for the gold order."""
    cos = _wide(F.cosine_similarity(u, v, dim=-1)) * scale
    diff = cos[None, :] - cos[:, None]  # [i, j] = cos_j - cos_i
    higher = scores[:, None] > scores[None, :]  # pair i should be ranked above pair j
    diff = diff.masked_fill(~higher, float("-inf"))
    return torch.logsumexp(torch.cat([diff.new_zeros(1), diff.flatten()]), dim=0)


def mnrl_loss(anchors: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor | None = None,
              scale: float = 20.0, symmetric: bool = False) -> torch.Tensor:
    """Multiple negatives ranking (in-batch negatives, Henderson et al. 2017): each anchor must pick its own
    positive among every positive (and hard negative) of the batch. `symmetric` adds each positive picking its
    anchor among the anchors, and averages the two."""
    docs = positives if negatives is None else torch.cat([positives, negatives])
    scores = scale * F.normalize(anchors, dim=-1) @ F.normalize(docs, dim=-1).T  # (B, B or 2B)
    target = torch.arange(len(anchors), device=anchors.device)
    scores = _wide(scores)
    loss = F.cross_entropy(scores, target)
    if symmetric:
        loss = (loss + F.cross_entropy(scores[:, :len(anchors)].T, target)) / 2
    return loss


def mse_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Mean squared error over every component (multilingual distillation, Reimers & Gurevych 2020)."""
    student = _wide(student)
    return F.mse_loss(student, teacher.to(student.dtype))


# ---- the trained module ------------------------------------------------------------------------------------------
class SentenceTrainee(nn.Module):
    """A SentenceModel's encoder and head as one module (what the loop trains and checkpoints), plus the softmax
    loss's classifier. `save_pretrained` writes the sentence-transformers directory."""

    def __init__(self, sentence: SentenceModel, num_labels: int = 0):
        super().__init__()
        self.encoder, self.head = sentence.encoder, sentence.head
        self.sentence = sentence  # not a Module: its parameters are the two above
        self.config = sentence.encoder.config
        self.classifier = nn.Linear(3 * sentence.dimension, num_labels) if num_labels else None

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:  # (N, T) -> (N, D)
        out = self.encoder(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
        return self.head(out.last_hidden_state, attention_mask)

    def classify(self, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """The softmax loss's logits of pairs (u, v): classifier([u; v; |u - v|]) (SBERT's choice of features)."""
        features = torch.cat([u, v, (u - v).abs()], dim=-1)
        return self.classifier(features.to(self.classifier.weight.dtype))

    def save_pretrained(self, path, tokenizer=None) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        for old in path.glob("[0-9]*_*"):  # an earlier save's module folders (the loop's final save into out/)
            if old.is_dir():
                shutil.rmtree(old)
        self.sentence._write(path)
        if self.classifier is not None:  # only a resumed run needs it: sentence-transformers does not save it
            from safetensors.torch import save_file

            save_file({k: v.detach().cpu().contiguous() for k, v in self.classifier.state_dict().items()},
                      str(path / CLASSIFIER_FILE))

    def load_weights(self, path) -> None:
        """Restore what `save_pretrained` wrote (the loop's resume)."""
        saved = SentenceModel.from_pretrained(path)
        self.encoder.load_state_dict(saved.encoder.state_dict())
        self.head.load_state_dict(saved.head.state_dict())
        if self.classifier is not None:
            from safetensors.torch import load_file

            self.classifier.load_state_dict(load_file(str(Path(path) / CLASSIFIER_FILE)))


# ---- the evaluator -----------------------------------------------------------------------------------------------
def sts_scores(sentence: SentenceModel, pairs: PairSet, batch_size: int = 64) -> dict[str, float]:
    """Spearman and Pearson x 100 of cos(a, b) against the gold scores (sentence-transformers'
    EmbeddingSimilarityEvaluator's `spearman_cosine`, x 100 as papers print it)."""
    texts = pairs.texts()
    vectors = sentence.encode(texts, batch_size=batch_size, normalize_embeddings=True)
    row = {t: i for i, t in enumerate(texts)}
    a = vectors[[row[c[0]] for c in pairs.columns]]
    b = vectors[[row[c[1]] for c in pairs.columns]]
    cos = (a * b).sum(axis=1).tolist()
    return {"cosine_spearman": 100 * spearman(cos, pairs.labels), "cosine_pearson": 100 * pearson(cos, pairs.labels)}


# ---- the loop's task ---------------------------------------------------------------------------------------------
class SentenceTask:
    """Rows of texts -> one padded batch of every text (columns stacked) + labels; the chosen loss; the STS
    evaluator. Batches come from the loop's (seed, step) schedule, so a resumed run sees the same batches."""

    names = ("rows",)

    def __init__(self, sentence: SentenceModel, rows: PairSet, loss: str, batch_size: int, seed: int,
                 max_length: int, eval_pairs: PairSet | None = None, scale: float = 20.0,
                 targets: np.ndarray | None = None, group_by_length: bool = False):
        if loss not in LOSSES:
            raise ValueError(f"loss '{loss}': choose one of {', '.join(LOSSES)}")
        self.sentence, self.loss_name, self.scale = sentence, loss, scale
        self.rows, self.batch_size, self.eval_pairs, self.targets = rows, batch_size, eval_pairs, targets
        tok = sentence.tokenizer
        texts = rows.texts()
        encoded = tok.encode_batch([t.lower() for t in texts] if sentence.do_lower_case else texts,
                                   max_length=max_length)
        by_text = dict(zip(texts, ((e.ids, e.type_ids) for e in encoded)))
        self.encoded = [[by_text[t] for t in row] for row in rows.columns]
        lengths = [sum(len(e[0]) for e in row) for row in self.encoded] if group_by_length else None
        self.schedule = Schedule(len(rows), batch_size, seed, lengths=lengths)

    def collate(self, indices: list[int]) -> dict[str, torch.Tensor]:
        width = self.rows.width
        items = [self.encoded[i][c] for c in range(width) for i in indices]  # column-major: all a, then all b
        batch = self.sentence.tokenizer.collate([ids for ids, _ in items], [types for _, types in items])
        if self.rows.labels:
            dtype = torch.long if self.rows.kind == "label" else torch.float32
            batch["labels"] = torch.tensor([self.rows.labels[i] for i in indices], dtype=dtype)
        if self.targets is not None:
            batch["targets"] = torch.from_numpy(self.targets[indices])
        return batch

    def micro_batches(self, step: int, rank: int, world: int, accum: int) -> list[dict[str, torch.Tensor]]:
        rows, _ = self.schedule.step(step)
        per = self.batch_size // (world * accum)
        mine = rows[rank * per * accum:(rank + 1) * per * accum]
        return [self.collate(mine[j:j + per]) for j in range(0, len(mine), per)]

    def counts(self, batch) -> list[float]:
        return [float(len(batch["input_ids"]) // self.rows.width)]

    def batch_loss(self, model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The loss of one micro-batch (its mean, as sentence-transformers computes it). `model`: the
        SentenceTrainee, or DDP's wrapper of it (called, so that its gradients are reduced)."""
        vectors = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
        cols = vectors.chunk(self.rows.width)
        name = self.loss_name
        if name == "softmax":
            module = model.module if hasattr(model, "module") else model
            return softmax_loss(module.classify(cols[0], cols[1]), batch["labels"])
        if name == "cosine":
            return cosine_loss(cols[0], cols[1], batch["labels"])
        if name == "cosent":
            return cosent_loss(cols[0], cols[1], batch["labels"], self.scale)
        if name in ("mnrl", "mnrl-symmetric"):
            return mnrl_loss(cols[0], cols[1], cols[2] if len(cols) > 2 else None, self.scale,
                             symmetric=name == "mnrl-symmetric")
        return mse_loss(torch.cat(cols), batch["targets"].repeat(len(cols), 1))

    def loss(self, model, batch, totals):
        rows = self.counts(batch)[0]
        loss = self.batch_loss(model, batch)
        # the loop divides sums by the global count: a mean weighted by its rows is that
        return loss * (rows / totals[0]), {"loss": float(loss.detach()) * rows}

    def summarize(self, stats, totals):
        return {"loss": stats["loss"] / max(totals[0], 1.0)}

    def evaluate(self, model) -> dict[str, float]:
        if self.eval_pairs is None:
            return {}
        module = model.module if hasattr(model, "module") else model
        s = self.sentence
        return sts_scores(SentenceModel(module.encoder, s.tokenizer, module.head, s.max_seq_length, s.do_lower_case),
                          self.eval_pairs)


# ---- the recipe --------------------------------------------------------------------------------------------------
@dataclass
class SbertConfig:
    model: str = ""  # a sentence-transformers directory (or a plain encoder: mean pooling)
    train_data: str = ""  # NAME, NAME:FILE or FILE.jsonl (bertkit.data.pairs.read_pairs)
    eval_data: str = ""  # an STS set read the same way (its dev split); "": no evaluation, the last epoch is kept
    data_dir: str = ""  # where NAMEs are found; "": $BERTKIT_DATA or ../shared/data
    loss: str = "cosent"
    teacher: str = ""  # mse: the sentence-transformers directory whose vectors the student learns
    out: str = "runs/sbert"
    epochs: float = 4.0
    batch_size: int = 16
    max_length: int = 0  # tokens per text; 0: the model's window (sentence_bert_config.json max_seq_length)
    scale: float = 20.0  # cosent, mnrl: the inverse temperature
    mnrl_threshold: float = 0.8  # mnrl on scored pairs: pairs at or above this score are positives
    max_train_rows: int = 0  # 0: all
    group_by_length: bool = False
    train: TrainConfig = field(default_factory=lambda: TrainConfig(lr=2e-5, warmup=0.1, log_every=50,
                                                                   save_every=0, keep_checkpoints=1))

    def validate(self) -> None:
        if self.loss not in LOSSES:
            raise ValueError(f"--loss {self.loss}: choose one of {', '.join(LOSSES)}")
        if (self.loss == "mse") != bool(self.teacher):
            raise ValueError("--teacher DIR goes with --loss mse (and mse needs it)")
        require("epochs", self.epochs, 0, above=True)
        require("batch_size", self.batch_size, 2 if self.loss in ("cosent", "mnrl", "mnrl-symmetric") else 1)
        require("max_length", self.max_length, 0)
        require("scale", self.scale, 0, above=True)
        require("max_train_rows", self.max_train_rows, 0)
        self.train.validate()
        require_batch_split(self.batch_size, self.train.grad_accum)


def teacher_targets(teacher_dir: str, rows: PairSet, student_dim: int, batch_size: int = 64) -> np.ndarray:
    """(rows, D) float32: the teacher's vector of each row's first text (the source of a translation pair)."""
    teacher = SentenceModel.from_pretrained(teacher_dir)
    if teacher.dimension != student_dim:
        raise ValueError(f"--teacher {teacher_dir}: vectors of {teacher.dimension} dimensions, the student's have "
                         f"{student_dim}")
    return teacher.encode([row[0] for row in rows.columns], batch_size=batch_size).astype(np.float32)


def run_sbert(cfg: SbertConfig, resume: bool = False, overwrite: bool = False, show_progress: bool = True) -> dict:
    """Train `cfg.model` on `cfg.train_data` with `cfg.loss`; the best epoch by the evaluator (or the last) is
    written to `cfg.out` as a sentence-transformers directory, with metrics.jsonl and eval_results.json."""
    cfg.validate()
    target = prepare_output_dir(cfg.out, verb="sbert", inputs=[cfg.model, cfg.teacher], resume=resume,
                                overwrite=overwrite)
    cfg.train.run_id = target.run_id
    if target.resuming:
        refuse_changed_config(target.path / "sbert_config.json", asdict(cfg), RUN_SETTINGS)
    config_text = json.dumps(asdict(cfg), indent=2) + "\n"
    data_dir = cfg.data_dir or None
    rows = for_loss(read_pairs(cfg.train_data, "train", data_dir), cfg.loss, cfg.mnrl_threshold)
    if cfg.max_train_rows and len(rows) > cfg.max_train_rows:
        keep = sorted(np.random.default_rng(cfg.train.seed).permutation(len(rows))[:cfg.max_train_rows].tolist())
        rows = PairSet(rows.kind, [rows.columns[i] for i in keep], [rows.labels[i] for i in keep] if rows.labels
                       else [], rows.label_names, rows.source, rows.positive)
    eval_pairs = read_pairs(cfg.eval_data, "dev", data_dir) if cfg.eval_data else None
    if eval_pairs is not None and eval_pairs.kind != "score":
        raise ValueError(f"--eval {cfg.eval_data}: the evaluator needs scored pairs (an STS set), not "
                         f"{eval_pairs.kind} rows")
    sentence = SentenceModel.from_pretrained(cfg.model)
    window = sentence.max_seq_length or sentence.encoder.config.max_length
    max_length = min(cfg.max_length or window, sentence.encoder.config.max_length)
    targets = teacher_targets(cfg.teacher, rows, sentence.dimension) if cfg.loss == "mse" else None
    torch.manual_seed(cfg.train.seed)
    model = SentenceTrainee(sentence, len(rows.label_names) if cfg.loss == "softmax" else 0)
    task = SentenceTask(sentence, rows, cfg.loss, cfg.batch_size, cfg.train.seed, max_length, eval_pairs,
                        cfg.scale, targets, cfg.group_by_length)
    steps_per_epoch = math.ceil(len(rows) / cfg.batch_size)
    cfg.train.steps = math.ceil(cfg.epochs * steps_per_epoch)
    cfg.train.eval_every = steps_per_epoch
    cfg.train.best_metric = "cosine_spearman" if eval_pairs is not None else ""
    cfg.train.validate()
    before = sts_scores(sentence, eval_pairs) if eval_pairs is not None and not target.resuming else {}
    with target as work:
        atomic_write_text(work / "sbert_config.json", config_text)
        result = train(model, task, cfg.train, work, tokenizer=sentence.tokenizer, resume=target.resuming,
                       show_progress=show_progress)
        summary = {"loss": cfg.loss, "train_rows": len(rows), "train_kind": rows.kind,
                   "eval_pairs": len(eval_pairs) if eval_pairs is not None else 0,
                   **({"before": before} if before else {}), **result, "config": asdict(cfg)}
        atomic_write_text(work / "eval_results.json", json.dumps(summary, indent=2) + "\n")
    return summary
