"""Training the BertSum-style sentence scorer (`apps.extractive`) as a recipe over the one training loop.

Each training article is a JSON line: `{"text": ...}` (split into sentences by bertkit) or `{"sentences": [...]}`,
with either `"reference"` (a summary: the labels are the greedy ROUGE oracle's `label_k` sentences, as BertSum
labels CNN/DailyMail; or, with `targets="rouge"`, each sentence's own ROUGE-2 recall against the reference over the
article's highest, a soft label that ranks the summary's sentences by how much of it each one carries) or
`"labels"` (the indices of the summary sentences, e.g. marked by people). The loss is the binary cross-entropy of
each sentence's logit, summed over sentences and divided by their number in the step. A
step is `batch_size` articles, drawn from the loop's (seed, step) schedule. With an evaluation file (the same
format, with references), ROUGE-1/2/L F1 of the `k` sentences picked with trigram blocking is logged after every
epoch and the best epoch (by ROUGE-2) is what `out/` holds; without one, the last epoch is.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F

from bertkit.apps.extractive import ExtractiveConfig, ExtractiveScorer, pad_vectors, sentence_features
from bertkit.apps.summarize import pick
from bertkit.data.pretraining import Schedule
from bertkit.io import atomic_write_text, prepare_output_dir
from bertkit.train.loop import (RUN_SETTINGS, TrainConfig, refuse_changed_config, require, require_batch_split,
                               train)


@dataclass
class Article:
    sentences: list[str]
    reference: str | None
    labels: list[int]
    targets: list[float] | None = None  # soft labels, one per sentence (`rouge_targets`); None: `labels` are the 1s


@dataclass
class Cached:
    """A frozen encoder's sentence vectors of some articles, one (sentences, hidden) tensor each, and their graph
    features (None for a scorer without them)."""
    vectors: list[torch.Tensor]
    features: list[torch.Tensor] | None


def rouge_targets(sentences: list[str], reference: str, rouge_tokens: str) -> list[float]:
    """Each sentence's ROUGE-2 recall against `reference` (the share of the reference's bigrams it has) over the
    article's highest: where the reference is long and k is small, the sentences worth picking are those that carry
    most of it, which the oracle's set labels do not tell apart."""
    from bertkit.metrics import rouge

    recall = [rouge(s, reference, rouge_tokens)["rouge2"]["recall"] for s in sentences]
    top = max(recall, default=0.0)
    return [r / top if top > 0 else 0.0 for r in recall]


def read_articles(path: str, label_k: int, rouge_tokens: str, max_chars: int = 1_000_000,
                  targets: str = "oracle") -> list[Article]:
    """The articles of a JSON-lines file, labelled (see the module docstring); errors name the line."""
    from bertkit.apps.summarize import _article, oracle
    from bertkit.infer.batchio import read_json_lines

    out = []
    for lineno, item in read_json_lines(path, max_chars, "an article is read whole", skip_empty=True):
        sentences, reference = _article(item, path, lineno)
        labels = item.get("labels")
        if labels is not None:
            if not isinstance(labels, list) or not all(isinstance(i, int) and not isinstance(i, bool) and
                                                       0 <= i < len(sentences) for i in labels):
                raise ValueError(f"{path}: line {lineno}: field 'labels': expected indices of its "
                                 f"{len(sentences)} sentences")
        elif reference is not None:  # soft ROUGE targets (below) replace the oracle's set labels
            labels = [] if targets == "rouge" else oracle(sentences, reference, label_k, rouge_tokens)
        else:
            raise ValueError(f"{path}: line {lineno}: needs a field 'reference' (a summary) or 'labels' (sentence "
                             f"indices)")
        soft = (rouge_targets(sentences, reference, rouge_tokens)
                if targets == "rouge" and item.get("labels") is None else None)
        out.append(Article(sentences, reference, sorted(set(labels)), soft))
    if not out:
        raise ValueError(f"{path}: no article in it")
    return out


def rouge_of(scorer: ExtractiveScorer, articles: list[Article], k: int, rouge_tokens: str,
             cached: Cached | None = None) -> dict[str, float]:
    """Mean ROUGE-1/2/L F1 x 100 of the `k` sentences picked (trigram blocking) against each reference (`cached`:
    the articles' frozen-encoder sentence vectors and graph features, computed before)."""
    from bertkit.metrics import rouge

    scored = [i for i, a in enumerate(articles) if a.reference is not None]
    if not scored:
        return {}
    if cached is None:
        scores = scorer.scores([articles[i].sentences for i in scored])
    else:
        scores = scorer.scores_of_vectors([cached.vectors[i] for i in scored],
                                          [cached.features[i] for i in scored] if cached.features else None)
    results = []
    for a, s in zip([articles[i] for i in scored], scores):
        chosen = pick(a.sentences, s.tolist(), k)
        results.append(rouge(" ".join(a.sentences[i] for i in chosen), a.reference, rouge_tokens))
    return {m: 100 * statistics.mean(r[m]["f"] for r in results) for m in ("rouge1", "rouge2", "rougeL")}


class ExtractiveTask:
    names = ("sentences",)

    def __init__(self, scorer: ExtractiveScorer, articles: list[Article], batch_size: int, seed: int,
                 eval_articles: list[Article] | None, k: int, rouge_tokens: str, cache_bytes: int = 0,
                 show_progress: bool = False):
        self.scorer, self.articles, self.batch_size = scorer, articles, batch_size
        self.eval_articles, self.k, self.rouge_tokens = eval_articles, k, rouge_tokens
        self.schedule = Schedule(len(articles), batch_size, seed)
        self.cached = self.eval_cached = None
        if scorer.encoder_frozen:
            self.cached = self.encode_once(articles, cache_bytes, show_progress)
            if eval_articles and self.cached is not None:
                self.eval_cached = self.encode_once(eval_articles, cache_bytes, show_progress)

    def encode_once(self, articles: list[Article], cache_bytes: int, show_progress: bool) -> Cached | None:
        """A frozen encoder's sentence vectors of `articles` (and their graph features), computed once (the encoder
        is then out of the training step and of each evaluation), when they fit in `cache_bytes`; else None and
        the articles are read again each time."""
        from tqdm.auto import tqdm

        width = self.scorer.config.hidden_size
        if sum(len(a.sentences) for a in articles) * width * 4 > cache_bytes:
            return None
        features = ([torch.from_numpy(sentence_features(a.sentences)) for a in articles]
                    if self.scorer.settings.graph_features else None)
        out = []
        with torch.inference_mode():
            for i in tqdm(range(0, len(articles), 8), desc="sentence vectors", disable=not show_progress):
                part = [a.sentences for a in articles[i:i + 8]]
                batch = self.scorer.batch(part)
                vectors = self.scorer.sentence_vectors(*(batch[k] for k in ("input_ids", "attention_mask",
                                                                             "token_type_ids", "sentence_index")))
                out += [vectors[a, :len(s)].clone() for a, s in enumerate(part)]
        return Cached(out, features)

    def collate(self, indices: list[int]) -> dict[str, torch.Tensor]:
        if self.cached is not None:
            vectors, mask = pad_vectors([self.cached.vectors[i] for i in indices])
            batch = {"sentence_vectors": vectors, "sentence_mask": mask}
            if self.cached.features is not None:
                batch["sentence_features"] = pad_vectors([self.cached.features[i] for i in indices])[0]
        else:
            batch = self.scorer.batch([self.articles[i].sentences for i in indices])
        labels = torch.zeros(batch["sentence_mask"].shape)
        for row, i in enumerate(indices):
            a = self.articles[i]
            if a.targets is not None:
                labels[row, :len(a.targets)] = torch.tensor(a.targets)
            else:
                labels[row, a.labels] = 1.0
        return {**batch, "labels": labels}

    def micro_batches(self, step, rank, world, accum):
        rows, _ = self.schedule.step(step)
        per = self.batch_size // (world * accum)
        mine = rows[rank * per * accum:(rank + 1) * per * accum]
        return [self.collate(mine[j:j + per]) for j in range(0, len(mine), per)]

    def counts(self, batch) -> list[float]:
        return [float(batch["sentence_mask"].sum())]

    def loss(self, model, batch, totals):
        logits = model(**{k: v for k, v in batch.items() if k != "labels"})
        mask = batch["sentence_mask"]
        summed = F.binary_cross_entropy_with_logits(logits[mask], batch["labels"][mask].to(logits.dtype),
                                                    reduction="sum")
        return summed / totals[0], {"loss": float(summed.detach())}

    def summarize(self, stats, totals):
        return {"loss": stats["loss"] / max(totals[0], 1.0)}

    def evaluate(self, model) -> dict[str, float]:
        if not self.eval_articles:
            return {}
        module = model.module if hasattr(model, "module") else model
        return rouge_of(module, self.eval_articles, self.k, self.rouge_tokens, self.eval_cached)


@dataclass
class ExtractiveTrainConfig:
    model: str = ""  # an encoder checkpoint (plain or sentence-transformers)
    train_file: str = ""
    eval_file: str = ""  # "": no evaluation, the last epoch is kept
    out: str = "runs/extractive"
    label_k: int = 3  # the oracle's sentences per article (the labels of articles given with a reference)
    targets: str = "oracle"  # or "rouge": soft labels, each sentence's ROUGE-2 recall over the article's best
    k: int = 3  # sentences picked when evaluating
    rouge_tokens: str = "rouge-score"  # or "unicode" (Korean: rouge-score's tokenisation deletes Hangul)
    epochs: float = 3.0
    batch_size: int = 4  # articles per step
    head_lr: float = 0.0  # the new layers' peak learning rate; 0: the encoder's (train.lr)
    # the encoder fixed, only the new layers train: its sentence vectors are computed once (held in memory up to
    # cache_mb, beyond that re-read each step), so an epoch costs the small layers alone
    freeze_encoder: bool = False
    cache_mb: int = 4096
    scorer: ExtractiveConfig = field(default_factory=ExtractiveConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(lr=5e-5, warmup=0.1, log_every=10,
                                                                   save_every=0, keep_checkpoints=1))

    def validate(self) -> None:
        require("label_k", self.label_k, 1)
        require("k", self.k, 1)
        require("epochs", self.epochs, 0, above=True)
        require("batch_size", self.batch_size, 1)
        require("head_lr", self.head_lr, 0)
        require("cache_mb", self.cache_mb, 0)
        require("layers", self.scorer.layers, 0)
        require("max_length", self.scorer.max_length, 8)
        require("max_sentence_pieces", self.scorer.max_sentence_pieces, 1)
        if self.scorer.max_sentence_pieces + 2 > self.scorer.max_length:
            raise ValueError(f"--max-sentence-pieces {self.scorer.max_sentence_pieces}: a sentence and its [CLS] "
                             f"and [SEP] must fit --max-length {self.scorer.max_length}")
        if self.targets not in ("oracle", "rouge"):
            raise ValueError(f"--targets {self.targets}: choose oracle or rouge")
        if self.rouge_tokens not in ("rouge-score", "unicode"):
            raise ValueError(f"--rouge-tokens {self.rouge_tokens}: choose rouge-score or unicode")
        self.train.validate()
        require_batch_split(self.batch_size, self.train.grad_accum)


def run_extractive(cfg: ExtractiveTrainConfig, resume: bool = False, overwrite: bool = False,
                   show_progress: bool = True) -> dict:
    """Train a scorer from `cfg.model` on `cfg.train_file`; the model, metrics.jsonl and eval_results.json to
    `cfg.out`."""
    cfg.validate()
    articles = read_articles(cfg.train_file, cfg.label_k, cfg.rouge_tokens, targets=cfg.targets)  # bad input first
    eval_articles = read_articles(cfg.eval_file, cfg.label_k, cfg.rouge_tokens) if cfg.eval_file else None
    if eval_articles is not None and not any(a.reference is not None for a in eval_articles):
        raise ValueError(f"{cfg.eval_file}: evaluation needs articles with a 'reference'")
    target = prepare_output_dir(cfg.out, verb="summarize-train", inputs=[cfg.model, cfg.train_file, cfg.eval_file],
                                resume=resume, overwrite=overwrite)
    cfg.train.run_id = target.run_id
    if target.resuming:
        refuse_changed_config(target.path / "extractive_train_config.json", asdict(cfg),
                              RUN_SETTINGS | {"cache_mb"})
    config_text = json.dumps(asdict(cfg), indent=2) + "\n"
    torch.manual_seed(cfg.train.seed)
    scorer = ExtractiveScorer.from_pretrained(cfg.model, cfg.scorer)
    scorer.head_lr_scale = cfg.head_lr / cfg.train.lr if cfg.head_lr else 1.0
    if cfg.freeze_encoder:
        scorer.freeze_encoder()
    task = ExtractiveTask(scorer, articles, cfg.batch_size, cfg.train.seed, eval_articles, cfg.k, cfg.rouge_tokens,
                          cfg.cache_mb << 20, show_progress)
    steps_per_epoch = math.ceil(len(articles) / cfg.batch_size)
    cfg.train.steps = math.ceil(cfg.epochs * steps_per_epoch)
    cfg.train.eval_every = steps_per_epoch if eval_articles else 0
    cfg.train.best_metric = "rouge2" if eval_articles else ""
    cfg.train.validate()
    with target as work:
        atomic_write_text(work / "extractive_train_config.json", config_text)
        result = train(scorer, task, cfg.train, work, tokenizer=scorer.tokenizer, resume=target.resuming,
                       show_progress=show_progress)
        summary = {"train_articles": len(articles), "labelled_sentences": sum(len(a.labels) for a in articles),
                   "rouge_target_articles": sum(a.targets is not None for a in articles),
                   "eval_articles": len(eval_articles or []), **result, "config": asdict(cfg)}
        atomic_write_text(work / "eval_results.json", json.dumps(summary, indent=2) + "\n")
    return summary
