"""Fine-tuning recipe for sentence and sentence-pair classification over the one training loop (the paper's defaults: lr 2e-5..5e-5,
batch 32, a few epochs, 10 % warm-up, dropout 0.1). Pairs, spans and tags come with the fine-tuning issue.

`init="random"` trains the same architecture from random weights: the baseline that shows what pre-training buys.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from bertkit.checkpoint import atomic_write_text
from bertkit.config import BertConfig
from bertkit.data.pretraining import Schedule
from bertkit.data.tasks import Example, read_classification
from bertkit.heads import BertForSequenceClassification
from bertkit.tokenizer import Tokenizer
from bertkit.train.loop import TrainConfig, train


@dataclass
class FinetuneConfig:
    task: str = "sst2"
    model: str = ""  # a checkpoint directory (weights, config, tokenizer)
    train_file: str = ""
    eval_file: str = ""
    out: str = "runs/finetune"
    init: str = "pretrained"  # pretrained | random
    max_length: int = 128
    batch_size: int = 32
    epochs: float = 3.0
    max_train_examples: int = 0  # 0: all
    max_eval_examples: int = 0
    # The paper's fine-tuning dropout, whatever the checkpoint was pre-trained with (short pre-training runs turn
    # it off, and config.json carries that); None keeps the checkpoint's values.
    dropout: float | None = 0.1
    train: TrainConfig = field(default_factory=lambda: TrainConfig(lr=3e-5, warmup=0.1, log_every=50,
                                                                   save_every=0, keep_checkpoints=1))


class ClassificationTask:
    names = ("examples",)

    def __init__(self, tokenizer: Tokenizer, train_set: list[Example], eval_set: list[Example], labels: list[str],
                 max_length: int, batch_size: int, seed: int):
        self.tok, self.labels, self.batch_size = tokenizer, labels, batch_size
        index = {name: i for i, name in enumerate(labels)}
        self.train = self._encode(train_set, index, max_length)
        self.eval = self._encode(eval_set, index, max_length)
        self.schedule = Schedule(len(self.train[0]), batch_size, seed)

    def _encode(self, examples: list[Example], index: dict[str, int], max_length: int):
        pairs = [e.text_pair or "" for e in examples] if any(e.text_pair is not None for e in examples) else None
        encs = self.tok.encode_batch([e.text for e in examples], pairs, max_length=max_length)
        return [e.ids for e in encs], [e.type_ids for e in encs], [index[e.label] for e in examples]

    def _batch(self, split, rows: list[int]) -> dict[str, torch.Tensor]:
        ids, types, labels = split
        batch = self.tok.collate([ids[i] for i in rows], [types[i] for i in rows])
        batch["labels"] = torch.tensor([labels[i] for i in rows])
        return batch

    def micro_batches(self, step, rank, world, accum):
        rows, _ = self.schedule.step(step)
        per = self.batch_size // (world * accum)
        mine = rows[rank * per * accum:(rank + 1) * per * accum]
        return [self._batch(self.train, mine[i:i + per]) for i in range(0, len(mine), per)]

    def counts(self, batch) -> list[float]:
        return [float(len(batch["labels"]))]

    def loss(self, model, batch, totals):
        out = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
        loss = F.cross_entropy(out.logits, batch["labels"], reduction="sum")
        correct = float((out.logits.argmax(-1) == batch["labels"]).sum())
        return loss / totals[0], {"loss": float(loss.detach()), "correct": correct}

    def summarize(self, stats, totals):
        n = max(totals[0], 1.0)
        return {"loss": stats["loss"] / n, "accuracy": stats["correct"] / n}

    def evaluate(self, model) -> dict[str, float]:
        ids = self.eval[0]
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))  # little padding
        device = next(model.parameters()).device
        stats, n = {"loss": 0.0, "correct": 0.0}, 0
        for start in range(0, len(order), 128):
            batch = {k: v.to(device) for k, v in self._batch(self.eval, order[start:start + 128]).items()}
            _, s = self.loss(model, batch, torch.ones(1, device=device))
            stats = {k: stats[k] + s[k] for k in stats}
            n += len(batch["labels"])
        return self.summarize(stats, [n])


def run_finetune(cfg: FinetuneConfig, show_progress: bool = True) -> dict:
    tokenizer = Tokenizer.from_pretrained(cfg.model)
    train_set, labels = read_classification(cfg.train_file, cfg.task)
    eval_set, _ = read_classification(cfg.eval_file, cfg.task)
    if cfg.max_train_examples:
        g = torch.Generator().manual_seed(cfg.train.seed)
        keep = torch.randperm(len(train_set), generator=g)[: cfg.max_train_examples].tolist()
        train_set = [train_set[i] for i in sorted(keep)]
    if cfg.max_eval_examples:
        eval_set = eval_set[: cfg.max_eval_examples]
    config = BertConfig.from_json_file(Path(cfg.model) / "config.json")
    config.id2label = dict(enumerate(labels))
    config.label2id = {name: i for i, name in enumerate(labels)}
    config.problem_type = "single_label_classification"
    if cfg.dropout is not None:
        config.hidden_dropout_prob = config.attention_probs_dropout_prob = cfg.dropout
    torch.manual_seed(cfg.train.seed)
    if cfg.init == "pretrained":
        model = BertForSequenceClassification.from_pretrained(cfg.model, config=config)
    else:
        model = BertForSequenceClassification(config)
    task = ClassificationTask(tokenizer, train_set, eval_set, labels, cfg.max_length, cfg.batch_size,
                              cfg.train.seed)
    cfg.train.steps = math.ceil(cfg.epochs * len(train_set) / cfg.batch_size)
    cfg.train.eval_every = math.ceil(len(train_set) / cfg.batch_size)  # each epoch
    result = train(model, task, cfg.train, cfg.out, tokenizer=tokenizer, show_progress=show_progress)
    summary = {"task": cfg.task, "init": cfg.init, "train_examples": len(train_set), "eval_examples": len(eval_set),
               **result, "config": asdict(cfg)}
    atomic_write_text(Path(cfg.out) / "eval_results.json", json.dumps(summary, indent=2) + "\n")
    return summary
