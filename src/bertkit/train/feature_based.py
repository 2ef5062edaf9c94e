"""Feature-based tagging (BERT paper, section 5.3): the encoder is frozen, a combination of its layers is fed to a
two-layer BiLSTM and a linear layer, and only those are trained. Since the encoder never changes, its features are
computed once for every window and the head trains on them for all epochs (over the one loop).

Layer combinations, named as in the paper's table: `embeddings` (the input layer), `second_to_last`, `last`,
`sum_last_four`, `concat_last_four`, `sum_all` (every encoder layer, embeddings excluded).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from bertkit import metrics as M
from bertkit.io import atomic_path, atomic_write_text, prepare_output_dir
from bertkit.data.features import IGNORE, group_by_example, tag_decode, tag_features
from bertkit.heads import HeadOutput
from bertkit.model import BertModel
from bertkit.tokenizer import Tokenizer, check_vocab
from bertkit.data.tasks import get_task, read_task
from bertkit.task_families import get_family
from bertkit.train.finetune import RowTask, split_by_group
from bertkit.train.loop import TrainConfig, require, setup_env, train

MODES = ("embeddings", "second_to_last", "last", "sum_last_four", "concat_last_four", "sum_all")


def combine(hidden_states: tuple[torch.Tensor, ...], mode: str) -> torch.Tensor:
    """(L + 1) x (B, T, H) -> (B, T, H) or (B, T, 4H) for `concat_last_four`."""
    hs = hidden_states
    if mode in ("sum_last_four", "concat_last_four") and len(hs) - 1 < 4:
        raise ValueError(f"features '{mode}': the encoder has {len(hs) - 1} layers, fewer than four")
    if mode == "embeddings":
        return hs[0]
    if mode == "second_to_last":
        return hs[-2]
    if mode == "last":
        return hs[-1]
    if mode == "sum_last_four":
        return torch.stack(hs[-4:]).sum(0)
    if mode == "concat_last_four":
        return torch.cat(hs[-4:], dim=-1)
    if mode == "sum_all":
        return torch.stack(hs[1:]).sum(0)
    raise ValueError(f"features '{mode}': choose one of {', '.join(MODES)}")


class FeatureTagger(nn.Module):
    """BiLSTM (two layers) + linear over precomputed token features."""

    def __init__(self, in_dim: int, hidden: int, num_labels: int, id2label: dict[int, str]):
        super().__init__()
        self.lstm = nn.LSTM(in_dim, hidden, num_layers=2, bidirectional=True, batch_first=True)
        self.classifier = nn.Linear(2 * hidden, num_labels)
        self.spec = {"in_dim": in_dim, "hidden": hidden, "num_labels": num_labels,
                     "id2label": {str(k): v for k, v in id2label.items()}}

    def forward(self, features: torch.Tensor, lengths: torch.Tensor, labels: torch.Tensor | None = None,
                reduction: str = "mean") -> HeadOutput:
        """(B, T, D) features -> (B, T, labels) logits; with `labels`, the cross-entropy over the labelled
        positions (IGNORE elsewhere)."""
        packed = nn.utils.rnn.pack_padded_sequence(features, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, _ = self.lstm(packed)
        out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=features.shape[1])
        logits = self.classifier(out)
        loss = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE, reduction=reduction) \
            if labels is not None else None
        return HeadOutput(loss=loss, logits=logits)

    def save_pretrained(self, path, tokenizer=None) -> None:
        d = Path(path)
        d.mkdir(parents=True, exist_ok=True)
        with atomic_path(d / "feature_head.safetensors") as tmp:
            save_file({k: v.contiguous() for k, v in self.state_dict().items()}, str(tmp))
        atomic_write_text(d / "feature_head.json", json.dumps(self.spec, indent=2) + "\n")


@dataclass
class FeatureConfig:
    task: str = "conll2003"
    model: str = ""  # the frozen encoder
    features: str = "last"
    train_file: str = ""
    eval_file: str = ""
    split_eval: float = 0.0
    out: str = "runs/features"
    max_length: int = 128
    batch_size: int = 32
    epochs: float = 4.0
    lstm_hidden: int = 0  # 0: the encoder's hidden size
    max_train_examples: int = 0
    max_eval_examples: int = 0
    train: TrainConfig = field(default_factory=lambda: TrainConfig(lr=1e-3, warmup=0.05, log_every=50,
                                                                   save_every=0, keep_checkpoints=1))


@torch.inference_mode()
def encode_features(encoder: BertModel, rows: list[dict], mode: str, tok: Tokenizer, batch_size: int = 64
                    ) -> list[torch.Tensor]:
    """The combined layers of every row, (T, D) each, computed once."""
    encoder.eval()
    device = next(encoder.parameters()).device
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]["input_ids"]))
    out: list = [None] * len(rows)
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        batch = tok.collate([rows[i]["input_ids"] for i in idx], [rows[i]["token_type_ids"] for i in idx])
        batch = {k: v.to(device) for k, v in batch.items()}
        enc = encoder(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"], output_hidden_states=True)
        feats = combine(enc.hidden_states, mode).float().cpu()  # every row's features stay in host memory
        for j, i in enumerate(idx):
            out[i] = feats[j, :len(rows[i]["input_ids"])].clone()
    return out


class FeatureTagTask(RowTask):
    def __init__(self, tok, train_rows, eval_rows, eval_features, eval_set, labels, batch_size, seed):
        super().__init__(tok, train_rows, batch_size, seed)
        self.eval_rows, self.eval_features, self.eval_set, self.labels = eval_rows, eval_features, eval_set, labels

    def collate(self, rows):
        lengths = torch.tensor([len(r["labels"]) for r in rows])
        T = int(lengths.max())
        feats = torch.zeros(len(rows), T, rows[0]["features"].shape[-1])
        labels = torch.full((len(rows), T), IGNORE)
        for i, r in enumerate(rows):
            feats[i, :len(r["labels"])] = r["features"]
            labels[i, :len(r["labels"])] = torch.tensor(r["labels"])
        # the loop counts tokens by the attention mask
        return {"features": feats, "lengths": lengths, "labels": labels,
                "attention_mask": (torch.arange(T)[None] < lengths[:, None]).long()}

    def counts(self, batch):
        return [float((batch["labels"] != IGNORE).sum())]

    def loss(self, model, batch, totals):
        loss = model(batch["features"], batch["lengths"], batch["labels"], reduction="sum").loss
        return loss / totals[0], {"loss": float(loss.detach())}

    def evaluate(self, model) -> dict[str, float]:
        preds, device = [], next(model.parameters()).device
        for start in range(0, len(self.eval_rows), 64):
            batch = self.collate(self.eval_rows[start:start + 64])
            logits = model(batch["features"].to(device), batch["lengths"]).logits
            preds += [p[:n] for p, n in zip(logits.argmax(-1).tolist(), batch["lengths"].tolist())]
        grouped = group_by_example(self.eval_features)
        id2label = dict(enumerate(self.labels))
        predicted = [tag_decode(self.eval_set[n], [self.eval_features[i] for i in idx], [preds[i] for i in idx],
                                id2label) for n, idx in sorted(grouped.items())]
        scores = M.entity_scores(predicted, [e.tags for e in self.eval_set])
        return {"f1": scores["f1"], "precision": scores["precision"], "recall": scores["recall"]}


def run_feature_based(cfg: FeatureConfig, show_progress: bool = True, resume: bool = False,
                      overwrite: bool = False) -> dict:
    """Train the feature-based tagger into `cfg.out` (refused if not empty, unless `overwrite`; see
    `bertkit.io.prepare_output_dir`)."""
    info = get_task(cfg.task)
    if not get_family(info.family).feature_based:
        raise ValueError(f"task '{cfg.task}': the feature-based recipe is for tagging tasks (conll2003, klue-ner)")
    require("epochs", cfg.epochs, 0, above=True)
    require("batch_size", cfg.batch_size, 1)
    require("max_length", cfg.max_length, 8)
    require("lstm_hidden", cfg.lstm_hidden, 0)
    require("max_train_examples", cfg.max_train_examples, 0)
    require("max_eval_examples", cfg.max_eval_examples, 0)
    require("split_eval", cfg.split_eval, 0, maximum=1, below=True)
    cfg.train.validate()
    target = prepare_output_dir(cfg.out, verb="finetune-features", inputs=[cfg.model, cfg.train_file, cfg.eval_file],
                                resume=resume, overwrite=overwrite)
    cfg.train.run_id = target.run_id
    tok = Tokenizer.from_pretrained(cfg.model)
    encoder = BertModel.from_pretrained(cfg.model).to(setup_env(cfg.train.device).device)
    check_vocab(tok, encoder.config, cfg.model)
    layers = encoder.config.num_hidden_layers  # a wrong mode fails here, before any work
    combine(tuple(torch.zeros(1, 1, 1) for _ in range(layers + 1)), cfg.features)
    if cfg.split_eval:
        examples, labels = read_task(cfg.eval_file, cfg.task)
        train_set, eval_set = split_by_group(examples, info.group, cfg.split_eval, cfg.train.seed)
    else:
        train_set, labels = read_task(cfg.train_file, cfg.task)
        eval_set, eval_labels = read_task(cfg.eval_file, cfg.task)
        labels = sorted(set(labels) | set(eval_labels))
    if cfg.max_train_examples:
        train_set = train_set[: cfg.max_train_examples]
    if cfg.max_eval_examples:
        eval_set = eval_set[: cfg.max_eval_examples]
    label_ids = {t: i for i, t in enumerate(labels)}
    max_length = min(cfg.max_length, encoder.config.max_length)
    rows = []
    for split, examples, is_train in (("train", train_set, True), ("eval", eval_set, False)):
        feats = tag_features(tok, examples, label_ids, max_length, train=is_train)
        base = [{"input_ids": f.input_ids, "token_type_ids": f.token_type_ids, "labels": f.labels} for f in feats]
        for r, x in zip(base, encode_features(encoder, base, cfg.features, tok)):
            r["features"] = x
        rows.append((base, feats))
    (train_rows, _), (eval_rows, eval_feats) = rows
    torch.manual_seed(cfg.train.seed)
    dim = train_rows[0]["features"].shape[-1]
    head = FeatureTagger(dim, cfg.lstm_hidden or encoder.config.hidden_size, len(labels), dict(enumerate(labels)))
    task = FeatureTagTask(tok, train_rows, eval_rows, eval_feats, eval_set, labels, cfg.batch_size, cfg.train.seed)
    steps_per_epoch = math.ceil(len(train_rows) / cfg.batch_size)
    cfg.train.steps = math.ceil(cfg.epochs * steps_per_epoch)
    cfg.train.eval_every = steps_per_epoch
    cfg.train.best_metric = "f1"
    cfg.train.validate()
    with target as work:
        result = train(head, task, cfg.train, work, resume=target.resuming, show_progress=show_progress)
        summary = {"task": cfg.task, "metric": "f1", "features": cfg.features, "train_examples": len(train_set),
                   "eval_examples": len(eval_set), **result, "config": asdict(cfg)}
        atomic_write_text(work / "eval_results.json", json.dumps(summary, indent=2, default=str) + "\n")
    return summary
