"""A pre-trained encoder on a new vocabulary: the transfer recipe of `bertkit pretrain --init DIR`.

Artetxe, Ruder & Yogatama (2020) moved a monolingual English BERT to other languages by giving it a new
vocabulary and learning only the new token embeddings by MLM, the transformer body frozen; the body's knowledge
of how to compose tokens carries over. This module builds the starting point: the init model's body (every weight
but the word embeddings and the vocabulary-sized MLM bias) under a new vocabulary whose embedding rows come from
the old ones (`init_embeddings`):

- `overlap`: a new piece that is also an old piece (the same string with the same word mark: digits, Latin words,
  punctuation, the specials by role) takes its old row; the others start random (normal, the old rows' spread);
- `mean` (the default): as `overlap`, and every other new piece takes the mean of the old rows of the old
  tokenizer's pieces for its text (the subword-mean idea of Gee et al. 2022's fast vocabulary transfer and of
  FOCUS / WECHSEL's initialisations, without their auxiliary embeddings; `old_pieces`); pieces the old tokenizer
  reads only as unknown, even character by character, stay random;
- `random`: every row random but the specials (the ablation: what the transfer owes to the initialisation).

The MLM head's transform is the init's when it has one (a BertForPreTraining directory) and new otherwise (a
sentence-transformers encoder has none); the decoder is tied to the new embeddings as always, and its bias starts
from the old bias on overlapping pieces. `frozen_body` names what `--freeze-body-steps` freezes: everything but the
word embeddings and the MLM head (position and segment embeddings and their LayerNorm belong to the body).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from bertkit.checkpoint import CheckpointError
from bertkit.config import BertConfig
from bertkit.tokenizer import Tokenizer

log = logging.getLogger("bertkit.transfer")

EMBEDDING_INITS = ("mean", "overlap", "random")


@dataclass
class EmbeddingInit:
    """How many rows of the new embedding matrix each rule filled."""

    special: int = 0
    overlap: int = 0
    mean: int = 0
    random: int = 0

    def line(self) -> str:
        total = self.special + self.overlap + self.mean + self.random
        return (f"{total} new embedding rows: {self.special} specials, {self.overlap} shared pieces, {self.mean} "
                f"means of old pieces, {self.random} random")


def init_embeddings(old: torch.Tensor, old_tok: Tokenizer, new_tok: Tokenizer, method: str = "mean",
                    seed: int = 0) -> tuple[torch.Tensor, EmbeddingInit]:
    """The (new vocab, E) embedding matrix for `new_tok`, from `old` (old vocab, E) of `old_tok`; see the module
    docstring for the rules."""
    if method not in EMBEDDING_INITS:
        raise ValueError(f"--embedding-init {method!r}: choose one of {', '.join(EMBEDDING_INITS)}")
    if old.shape[0] < old_tok.vocab_size:
        raise CheckpointError(f"the init model's embedding has {old.shape[0]} rows but its tokenizer "
                              f"{old_tok.vocab_size} ids")
    old = old.detach().float()
    generator = torch.Generator().manual_seed(seed)
    new = torch.randn(new_tok.vocab_size, old.shape[1], generator=generator) * old.std() + old.mean(0)
    report = EmbeddingInit()
    done = torch.zeros(new_tok.vocab_size, dtype=torch.bool)
    for role in ("pad", "unk", "cls", "sep", "mask"):  # by role: [CLS] and <s> are one token
        a, b = getattr(new_tok, f"{role}_id"), getattr(old_tok, f"{role}_id")
        if a is not None and b is not None and not done[a]:
            new[a], done[a] = old[b], True
            report.special += 1
    if method != "random":
        old_vocab = old_tok.vocab
        for piece, i in new_tok.vocab.items():
            j = old_vocab.get(piece)
            if not done[i] and j is not None:
                new[i], done[i] = old[j], True
                report.overlap += 1
    if method == "mean":
        for piece, i in new_tok.vocab.items():
            if done[i]:
                continue
            ids = old_pieces(old_tok, new_tok.piece_text(piece))
            if ids:
                new[i], done[i] = old[ids].mean(0), True
                report.mean += 1
    report.random = int((~done).sum())
    return new, report


def old_pieces(old_tok: Tokenizer, text: str) -> list[int]:
    """The old vocabulary's ids for `text`, unknown pieces left out. WordPiece reads a whole word as [UNK] when one
    of its characters is missing (all-MiniLM-L6-v2 splits each Hangul syllable into jamo, and a syllable with a
    jamo it lacks, 꼭, is one [UNK]); then each character of the normalised text is read alone."""
    if not text:
        return []
    engine, unk = old_tok._engine, old_tok.unk_id
    ids = [t for t in engine.encode(text, add_special_tokens=False).ids if t != unk]
    if ids:
        return ids
    normalised = engine.normalizer.normalize_str(text) if engine.normalizer is not None else text
    return [t for ch in normalised for t in engine.encode(ch, add_special_tokens=False).ids if t != unk]


def frozen_body(model: nn.Module) -> list[nn.Parameter]:
    """The parameters `--freeze-body-steps` holds still: all but the word embeddings and the MLM head (`cls.`)."""
    words = model.bert.embeddings.word_embeddings.weight
    return [p for name, p in model.named_parameters() if p is not words and not name.startswith("cls.")]


def transferred_model(init: str | Path, tokenizer: Tokenizer, head: type, method: str = "mean", seed: int = 0,
                      **overrides) -> tuple[nn.Module, EmbeddingInit]:
    """A `head` model (BertForPreTraining, BertForMaskedLM) with the body of the model in `init` and `tokenizer`'s
    vocabulary, its embeddings initialised by `method`. `overrides`: BertConfig fields (dropout, ...)."""
    init = Path(init)
    if not (init / "config.json").is_file():
        raise CheckpointError(f"--init {init}: no config.json (give a model directory)")
    old_tok = Tokenizer.from_pretrained(init)
    old_model = head.from_pretrained(init, strict=False)  # a missing MLM head is made new, with a warning
    old_cfg = old_model.config
    if old_cfg.model_type != "bert":
        raise CheckpointError(f"--init {init}: a {old_cfg.family.name} model; the transfer recipe takes BERT "
                              f"encoders (model_type bert)")
    fields = {**old_cfg.to_dict(), "vocab_size": tokenizer.vocab_size, "pad_token_id": tokenizer.pad_id, **overrides}
    fields.pop("architectures", None)  # the head written decides it
    cfg = BertConfig.from_dict(fields, f"--init {init}/config.json with the new vocabulary")
    torch.manual_seed(seed)
    model = head(cfg)
    own = model.state_dict()
    vocab_sized = {"bert.embeddings.word_embeddings.weight", "cls.predictions.bias",  # and their tied aliases:
                   "cls.predictions.decoder.weight", "cls.predictions.decoder.bias"}
    keep = {k: v for k, v in old_model.state_dict().items() if k in own and k not in vocab_sized}
    model.load_state_dict(keep, strict=False)
    words, report = init_embeddings(old_model.bert.embeddings.word_embeddings.weight, old_tok, tokenizer, method, seed)
    with torch.no_grad():
        model.bert.embeddings.word_embeddings.weight.copy_(words)
        old_bias, bias = old_model.cls.predictions.bias.detach(), model.cls.predictions.bias
        bias.zero_()
        for piece, i in tokenizer.vocab.items():
            j = old_tok.vocab.get(piece)
            if j is not None and method != "random":
                bias[i] = old_bias[j]
    log.info("--init %s: %s", init, report.line())
    return model, report
