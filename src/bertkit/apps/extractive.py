"""A trained sentence scorer for extractive summaries, BertSum-style (Liu & Lapata 2019, "Text Summarization with
Pretrained Encoders", BertSumExt).

An article is read as `[CLS] s1 [SEP] [CLS] s2 [SEP] ...` with segment ids alternating by sentence (the interval
segment embeddings of the paper); the vector of each sentence is the mean of the encoder's outputs over its tokens
(`pooling="mean"`, the default) or its `[CLS]` output (`"cls"`, the paper's). A long
article is read in windows of whole sentences (each at most `max_sentence_pieces` pieces), and the vectors of all
its windows go, in article order and with learned sentence-position embeddings, through a small inter-sentence
transformer (`layers` pre-LN layers) and a linear scorer: one logit per sentence, trained against greedy-oracle
labels (`train.extractive`). At selection, the best sentences are taken in score order, skipping one that shares
a word trigram with those already chosen (the paper's trigram blocking: `apps.summarize.pick`).

Two departures, both optional: `graph_features` adds to each sentence's vector what the unsupervised methods read
(TextRank and word-frequency scores, their ranks, the position: `sentence_features`), and `freeze_encoder()` keeps
the encoder fixed so that training reads its sentence vectors once (`sentence_vectors`, then `head`); on a few
hundred articles that trains in minutes where fine-tuning the encoder stayed near lead (benchmarks/RESULTS.md).

Saved as a directory: the encoder as a Hugging Face checkpoint (config.json, model.safetensors, the tokenizer's
files) and `extractive_head.safetensors` + `extractive_config.json` for the rest.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

HEAD_FILE, CONFIG_FILE = "extractive_head.safetensors", "extractive_config.json"
POOLINGS = ("mean", "cls")


@dataclass
class ExtractiveConfig:
    layers: int = 2  # inter-sentence transformer layers
    heads: int = 0  # 0: hidden_size // 64
    ff: int = 0  # feed-forward width; 0: 4 x hidden_size
    dropout: float = 0.1
    max_sentences: int = 512  # sentence positions learned; later sentences share the last one
    max_length: int = 512  # tokens per window
    max_sentence_pieces: int = 64  # a sentence's pieces kept (the rest of a long sentence is not read)
    # a sentence's vector: "cls", the output at its [CLS] (BertSum's), or "mean", the mean of the outputs over its
    # tokens ([CLS] and [SEP] included): the vector a sentence-transformers encoder was trained to give, where its
    # [CLS] outputs barely differ between sentences (all-MiniLM-L6-v2: a scorer on them learned only the base rate)
    pooling: str = "mean"
    # what the unsupervised methods read (`sentence_features`: TextRank's graph, word frequencies, position)
    # beside each sentence's vector, for the scorer to weigh against the encoder's meaning
    graph_features: bool = False


GRAPH_FEATURES = 5


def sentence_features(sentences: Sequence[str]) -> np.ndarray:
    """(sentences, 5) per sentence: its TextRank score and its Luhn word-frequency score (`apps.summarize`), each
    over the article's mean, the fraction of the article's sentences ranked above it by each, and its relative
    position."""
    from bertkit.apps.summarize import frequency_scores, textrank_scores

    n = len(sentences)
    columns = []
    for score in (textrank_scores(sentences), frequency_scores(sentences)):
        mean = score.mean()
        score = score / mean if mean > 0 else np.ones(n)
        rank = np.empty(n)
        rank[np.argsort(-score, kind="stable")] = np.arange(n)
        columns += [score, rank / n]
    return np.stack([*columns, np.arange(n) / n], axis=1).astype(np.float32)


def pad_vectors(vectors: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Articles' per-sentence rows, each (sentences, width), as one zero-padded (articles, sentences, width) batch
    and its sentence mask."""
    mask = torch.zeros(len(vectors), max(len(v) for v in vectors), dtype=torch.bool)
    for row, v in enumerate(vectors):
        mask[row, :len(v)] = True
    return torch.nn.utils.rnn.pad_sequence(list(vectors), batch_first=True), mask


class ExtractiveScorer(nn.Module):
    def __init__(self, encoder, tokenizer, config: ExtractiveConfig = ExtractiveConfig()):
        super().__init__()
        hidden = encoder.config.hidden_size
        self.encoder, self.tokenizer, self.settings = encoder, tokenizer, config
        self.config = encoder.config  # what the loop reads (dropout, the family)
        self.position = nn.Embedding(config.max_sentences, hidden)
        self.features = nn.Linear(GRAPH_FEATURES, hidden) if config.graph_features else None
        layer = nn.TransformerEncoderLayer(hidden, config.heads or max(1, hidden // 64), config.ff or 4 * hidden,
                                           config.dropout, activation="gelu", batch_first=True, norm_first=True)
        # layers 0: the [CLS] vectors scored as they are (with their positions)
        self.inter = nn.TransformerEncoder(layer, config.layers, enable_nested_tensor=False) if config.layers else None
        self.norm = nn.LayerNorm(hidden)
        self.scorer = nn.Linear(hidden, 1)
        nn.init.normal_(self.position.weight, std=0.02)

    head_lr_scale = 1.0  # training: the new layers' learning rate over the encoder's (`lr_multiplier`)
    encoder_frozen = False

    def freeze_encoder(self) -> None:
        """Train the inter-sentence layers and the scorer alone: the encoder's weights fixed and the encoder always
        in eval mode (no dropout), so its sentence vectors are the same in training and use, and can be computed
        once (`train.extractive`)."""
        self.encoder_frozen = True
        self.encoder.requires_grad_(False)
        self.encoder.eval()

    def train(self, mode: bool = True):
        super().train(mode)
        if self.encoder_frozen:
            self.encoder.eval()
        return self

    def lr_multiplier(self, name: str) -> float:
        """The optimiser's rate for a parameter, relative to the run's (`train.optim.param_groups`): the new
        inter-sentence layers and scorer learn from nothing, the encoder only adjusts."""
        return 1.0 if name.startswith("encoder.") else self.head_lr_scale

    # ---- inputs --------------------------------------------------------------------------------------------------
    def check(self) -> None:
        if self.settings.pooling not in POOLINGS:
            raise ValueError(f"pooling {self.settings.pooling!r}: choose one of {', '.join(POOLINGS)}")

    def windows(self, sentences: Sequence[str]) -> list[tuple[list[int], list[int], list[int]]]:
        """(ids, segment ids, the position of each sentence's [CLS]) of each window of the article: whole
        sentences, in order, as many as fit `max_length`."""
        tok, s = self.tokenizer, self.settings
        cls, sep = tok.cls_id, tok.sep_id
        segments = self.encoder.config.type_vocab_size > 1  # RoBERTa-style encoders have one segment: all 0
        pieces = [e.ids[:s.max_sentence_pieces] for e in tok.encode_batch(list(sentences), add_special_tokens=False)]
        out, ids, types, starts = [], [], [], []
        for i, p in enumerate(pieces):
            unit = [cls, *p, sep]
            if ids and len(ids) + len(unit) > s.max_length:
                out.append((ids, types, starts))
                ids, types, starts = [], [], []
            starts.append(len(ids))
            ids += unit
            types += [i % 2 if segments else 0] * len(unit)
        out.append((ids, types, starts))
        return out

    def batch(self, articles: Sequence[Sequence[str]]) -> dict[str, torch.Tensor]:
        """The encoder's rows (every window of every article) and where each article's sentences are in them."""
        rows, where = [], []  # where: per article, (row, first token, one past the last) of each sentence
        for sentences in articles:
            if not sentences:
                raise ValueError("an article with no sentence")
            mine = []
            for ids, types, starts in self.windows(sentences):
                mine += [(len(rows), p, q) for p, q in zip(starts, starts[1:] + [len(ids)])]
                rows.append((ids, types))
            where.append(mine)
        batch = self.tokenizer.collate([r[0] for r in rows], [r[1] for r in rows])
        longest = max(len(w) for w in where)
        index = torch.zeros(len(where), longest, 3, dtype=torch.long)
        index[..., 2] = 1  # padding sentences: a one-token span (masked out later)
        mask = torch.zeros(len(where), longest, dtype=torch.bool)
        for a, mine in enumerate(where):
            index[a, :len(mine)] = torch.tensor(mine)
            mask[a, :len(mine)] = True
        batch = {**batch, "sentence_index": index, "sentence_mask": mask}
        if self.settings.graph_features:
            batch["sentence_features"] = pad_vectors([torch.from_numpy(sentence_features(a)) for a in articles])[0]
        return batch

    # ---- the network -----------------------------------------------------------------------------------------------
    def sentence_vectors(self, input_ids, attention_mask, token_type_ids, sentence_index) -> torch.Tensor:
        """(articles, sentences, hidden): the encoder's vector of each sentence, read in its window."""
        hidden = self.encoder(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).last_hidden_state
        row, first, end = sentence_index.unbind(-1)
        if self.settings.pooling == "cls":
            return hidden[row, first]
        # the mean over [first, end) by differences of running sums
        sums = torch.cat([hidden.new_zeros(hidden.shape[0], 1, hidden.shape[2]), hidden.cumsum(1)], dim=1)
        return (sums[row, end] - sums[row, first]) / (end - first).clamp(min=1)[..., None].to(hidden.dtype)

    def head(self, vectors: torch.Tensor, sentence_mask: torch.Tensor, sentence_features: torch.Tensor | None = None
             ) -> torch.Tensor:
        """(articles, sentences) logits from the sentence vectors (and graph features); padding sentences are
        -inf."""
        positions = torch.arange(vectors.shape[1], device=vectors.device).clamp(max=self.settings.max_sentences - 1)
        x = vectors + self.position(positions)[None].to(vectors.dtype)
        if self.features is not None:
            if sentence_features is None:
                raise ValueError("this scorer reads graph features: pass sentence_features (`batch` makes them)")
            x = x + self.features(sentence_features.to(x.dtype))
        if self.inter is not None:
            x = self.inter(x, src_key_padding_mask=~sentence_mask)
        x = self.norm(x)
        logits = self.scorer(x).squeeze(-1).float()
        return logits.masked_fill(~sentence_mask, float("-inf"))

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, sentence_index=None,
                sentence_mask=None, sentence_vectors=None, sentence_features=None) -> torch.Tensor:
        """(articles, sentences) logits; `sentence_vectors` given (a frozen encoder's, computed once) skips the
        encoder."""
        if sentence_vectors is None:
            sentence_vectors = self.sentence_vectors(input_ids, attention_mask, token_type_ids, sentence_index)
        return self.head(sentence_vectors, sentence_mask, sentence_features)

    @torch.inference_mode()
    def scores(self, articles: Sequence[Sequence[str]], batch_size: int = 8) -> list[np.ndarray]:
        """One score (a logit) per sentence of each article."""
        was = self.training
        self.eval()
        out = []
        try:
            for i in range(0, len(articles), batch_size):
                part = articles[i:i + batch_size]
                logits = self(**self.batch(part))
                out += [logits[a, :len(s)].numpy() for a, s in enumerate(part)]
        finally:
            self.train(was)
        return out

    @torch.inference_mode()
    def scores_of_vectors(self, vectors: Sequence[torch.Tensor], features: Sequence[torch.Tensor] | None = None
                          ) -> list[np.ndarray]:
        """`scores` from each article's sentence vectors (`sentence_vectors`, computed before) and, for a scorer
        of graph features, its `sentence_features`."""
        was = self.training
        self.eval()
        try:
            logits = self.head(*pad_vectors(vectors), pad_vectors(features)[0] if features is not None else None)
            return [logits[a, :len(v)].numpy() for a, v in enumerate(vectors)]
        finally:
            self.train(was)

    # ---- saving ------------------------------------------------------------------------------------------------------
    def save_pretrained(self, path, tokenizer=None) -> None:
        from safetensors.torch import save_file

        from bertkit.io import atomic_write_text

        path = Path(path)
        self.encoder.save_pretrained(path, tokenizer=tokenizer or self.tokenizer)
        head = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items() if not k.startswith("encoder.")}
        save_file(head, str(path / HEAD_FILE))
        atomic_write_text(path / CONFIG_FILE, json.dumps(asdict(self.settings), indent=2) + "\n")

    def load_weights(self, path) -> None:
        """Restore what `save_pretrained` wrote (the loop's resume)."""
        from safetensors.torch import load_file

        from bertkit.checkpoint import load_state_into, read_state_dict

        load_state_into(self.encoder, read_state_dict(Path(path)), str(path))
        missing, unexpected = self.load_state_dict(load_file(str(Path(path) / HEAD_FILE)), strict=False)
        if unexpected or any(not k.startswith("encoder.") for k in missing):
            raise ValueError(f"{path / HEAD_FILE}: does not fit this scorer (missing {missing[:3]}, unexpected "
                             f"{unexpected[:3]})")

    @classmethod
    def from_pretrained(cls, path, config: ExtractiveConfig | None = None) -> ExtractiveScorer:
        """A trained scorer directory (its own config); or any encoder checkpoint (a plain or sentence-transformers
        directory) with a new, untrained inter-sentence transformer and scorer of `config` (what training starts
        from; its window is capped at the encoder's positions)."""
        from bertkit.apps.sentence import SentenceModel
        from bertkit.io import read_json

        path = Path(path)
        sentence = SentenceModel.from_pretrained(path)
        trained = (path / CONFIG_FILE).exists()
        if trained:
            config = ExtractiveConfig(**read_json(path / CONFIG_FILE, "extractive config"))
        else:
            config = config or ExtractiveConfig()
            config = ExtractiveConfig(**{**asdict(config), "max_length": min(config.max_length,
                                                                              sentence.encoder.config.max_length)})
        model = cls(sentence.encoder, sentence.tokenizer, config)
        model.check()
        if trained:
            model.load_weights(path)
        return model
