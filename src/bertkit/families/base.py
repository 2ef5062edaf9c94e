"""What tells one BERT family's checkpoints apart from BERT's: a config adapter, a key map and a few switches.

The encoder and heads keep BERT's module names internally (the BERT checkpoint contract); a family translates its
Hugging Face `config.json` and state-dict keys to and from them, and says which embedding, position, pooler and
classifier variant its checkpoints were trained with. This module imports nothing of bertkit's (config imports it).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

# HF's non-persistent buffers, present in files written by older transformers: ignored by name wherever they appear.
BUFFERS = ("embeddings.position_ids", "embeddings.token_type_ids")

# The internal heads with a sequence classifier: a rename rule may be limited to them (see `Rename.heads`).
SEQ_CLS = frozenset({"BertForSequenceClassification"})


class ConfigError(ValueError):
    """A config.json that is missing, not JSON, or holds an impossible value; the message names file and field.
    Defined here, where the family registry raises it; `bertkit.config.ConfigError` is the same class."""


def same(d: dict[str, Any]) -> dict[str, Any]:
    return d


@dataclass(frozen=True)
class Rename:
    """`internal` <-> `hf`, each a dotted key prefix ending at a dot or at the end of the key; `{L}` matches a layer
    number. `heads`: only for these internal head classes (None: all)."""

    internal: str
    hf: str
    heads: frozenset[str] | None = None

    def apply(self, key: str, forward: bool, head: str) -> str | None:
        if self.heads is not None and head not in self.heads:
            return None
        src, dst = (self.internal, self.hf) if forward else (self.hf, self.internal)
        pattern = re.escape(src).replace(re.escape("{L}"), r"(\d+)")
        m = re.match(pattern + r"(?=\.|$)", key)
        if m is None:
            return None
        out = dst.replace("{L}", m.group(1)) if "{L}" in src else dst
        return out + key[m.end():]


def renamer(rules: tuple[Rename, ...]) -> tuple[Callable[..., str], Callable[..., str]]:
    """(to_internal, to_hf) from rename rules; the first rule that matches wins, a key no rule matches is kept."""

    def run(key: str, forward: bool, head: str) -> str:
        for rule in rules:
            out = rule.apply(key, forward, head)
            if out is not None:
                return out
        return key

    def to_internal(key: str, config: Any = None, head: str = "") -> str:
        return run(key, False, head)

    def to_hf(key: str, config: Any = None, head: str = "") -> str:
        return run(key, True, head)

    return to_internal, to_hf


def _identity(key: str, config: Any = None, head: str = "") -> str:
    return key


@dataclass(frozen=True)
class Family:
    model_type: str
    prefix: str  # HF base-model attribute: `roberta.embeddings...` in a head model's file
    # internal head class name -> the HF class of this family (a head the family lacks is absent)
    architectures: Mapping[str, str]
    # config.json of this family <-> the common fields of BertConfig (plain dicts; unknown keys pass through)
    config_from_hf: Callable[[dict[str, Any]], dict[str, Any]] = same
    config_to_hf: Callable[[dict[str, Any]], dict[str, Any]] = same
    # state-dict keys without the base prefix: (key, config, head=internal class name) -> key
    to_internal: Callable[..., str] = _identity
    to_hf: Callable[..., str] = _identity
    # HF keys (no base prefix) that alias another tensor: the key map sends them onto the internal aliases
    # (`checkpoint.TIED`), which loading drops (keeping an MLM bias found only under its alias) and saving never writes
    tied: tuple[str, ...] = ()
    buffers: tuple[str, ...] = BUFFERS
    positions_after_pad: bool = False  # RoBERTa/XLM-R: positions start at pad_token_id + 1
    shared_layers: bool = False  # ALBERT: num_hidden_groups x inner_group_num layers applied num_hidden_layers times
    token_types: bool = True  # False: no token_type_embeddings, token_type_ids ignored (DistilBERT)
    sinusoidal_key: str | None = None  # config.json key that asks for fixed sinusoidal positions (DistilBERT)
    factorised: bool = False  # embedding_size may differ from hidden_size (ELECTRA, ALBERT): a projection then
    always_project: bool = False  # an embedding -> hidden Linear even when embedding_size == hidden_size (ALBERT)
    has_pooler: bool = True  # the base model has a pooler (and sequence classification may use it)
    classifier_style: str = "pooler"  # "pooler": pooled -> dropout -> classifier; "first_token_mlp": see heads
    classifier_act: str = "tanh"  # activation between pre_classifier and classifier ("first_token_mlp")
    classifier_input_dropout: bool = True  # dropout on h[:, 0] before pre_classifier (not DistilBERT)
    mlm_act: str | None = None  # activation of the MLM transform; None: config.hidden_act
    tokenizer_files: tuple[tuple[str, ...], ...] = (("vocab.txt",),)  # legacy files, when no tokenizer.json
    title: str = ""  # the family's name in messages ("RoBERTa"); model_type when empty

    @property
    def name(self) -> str:
        return self.title or self.model_type

    def position_offset(self, config: Any) -> int:
        """Position id of the first token: pad_token_id + 1 for RoBERTa (so 514 rows hold 512 tokens), else 0."""
        return config.pad_token_id + 1 if self.positions_after_pad else 0

    def sinusoidal(self, config: Any) -> bool:
        return bool(self.sinusoidal_key and config.extra.get(self.sinusoidal_key))

    def hf_class(self, internal: str) -> str | None:
        return self.architectures.get(internal)

    def internal_class(self, hf: str) -> str | None:
        """The internal head for an `architectures` entry (an HF name of this family, or an internal name)."""
        for internal, name in self.architectures.items():
            if name == hf:
                return internal
        return hf if hf in self.architectures else None
