"""BertConfig: the hyper-parameters of a BERT-family encoder, field for field those of Hugging Face `config.json`.

The field names are the checkpoint contract: a `config.json` written here loads in `transformers.BertConfig`
and the reverse. Other families (`model_type` roberta, xlm-roberta, electra, albert, distilbert) are read and
written through their family's adapter (`bertkit.families`), which maps their own keys (DistilBERT's `dim`, ...)
to these fields and back. Keys bertkit does not use (`transformers_version`, `use_cache`, ...) are kept in
`extra` and written back unchanged, so a round trip loses nothing.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bertkit.families import FAMILIES, Family, family
from bertkit.families.base import ConfigError
from bertkit.io import atomic_write_text

# Named sizes: (layers, hidden, heads). The feed-forward is 4 x hidden as in the paper and the small-BERT release
# (Turc et al. 2019, "Well-Read Students Learn Better").
SIZES: dict[str, tuple[int, int, int]] = {
    "tiny": (2, 128, 2),
    "mini": (4, 256, 4),
    "small": (4, 512, 8),
    "medium": (8, 512, 8),
    "base": (12, 768, 12),
    "large": (24, 1024, 16),
}

ACTIVATIONS = ("gelu", "gelu_new", "gelu_pytorch_tanh", "relu", "silu", "swish")


# Upper bounds, checked before anything is allocated: far above any BERT (BERT-large: 24 layers of 1024, 30,522
# pieces, 512 positions; the largest multilingual vocabularies have ~250k), far below what a typo or a hostile file
# asks for (max_position_embeddings 10^12 used to reach the allocator).
LIMITS = {"vocab_size": 1 << 24, "hidden_size": 1 << 16, "num_hidden_layers": 1 << 10, "num_attention_heads": 1 << 12,
          "intermediate_size": 1 << 18, "max_position_embeddings": 1 << 20, "type_vocab_size": 1 << 16,
          "embedding_size": 1 << 16, "num_hidden_groups": 1 << 10, "inner_group_num": 1 << 10}
MAX_PARAMETERS = 10 ** 11  # 400 GB in float32


@dataclass
class BertConfig:
    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    position_embedding_type: str = "absolute"
    classifier_dropout: float | None = None
    # Task heads. HF derives num_labels from id2label; so do we (see `num_labels`).
    id2label: dict[int, str] | None = None
    label2id: dict[str, int] | None = None
    problem_type: str | None = None  # "regression" | "single_label_classification" | "multi_label_classification"
    architectures: list[str] | None = None
    model_type: str = "bert"  # selects the family (`config.family`)
    embedding_size: int | None = None  # width of the embeddings; None: hidden_size (ELECTRA and ALBERT differ)
    num_hidden_groups: int = 1  # ALBERT: groups of layers shared across depth
    inner_group_num: int = 1  # ALBERT: distinct layers in a group
    # Every other key of config.json, written back untouched.
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.id2label is not None:
            self.id2label = {int(k): str(v) for k, v in self.id2label.items()}
            if self.label2id is None:
                self.label2id = {v: k for k, v in self.id2label.items()}
        if self.label2id is not None:
            self.label2id = {str(k): int(v) for k, v in self.label2id.items()}
        self.validate()

    # ---- derived values -------------------------------------------------------------------------------------
    @property
    def family(self) -> Family:
        return family(self.model_type)

    @property
    def embedding_dim(self) -> int:
        return self.hidden_size if self.embedding_size is None else self.embedding_size

    @property
    def projects_embeddings(self) -> bool:
        """An `embeddings_project` Linear(embedding_dim, hidden_size) sits between embeddings and layers."""
        return self.family.always_project or self.embedding_dim != self.hidden_size

    @property
    def num_layer_modules(self) -> int:
        """Distinct layers: num_hidden_layers, or ALBERT's groups x inner layers shared across depth."""
        return self.num_hidden_groups * self.inner_group_num if self.family.shared_layers else self.num_hidden_layers

    @property
    def position_offset(self) -> int:
        return self.family.position_offset(self)

    @property
    def max_length(self) -> int:
        """Longest input in tokens: max_position_embeddings less the rows before the first position (RoBERTa)."""
        return self.max_position_embeddings - self.position_offset

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def num_labels(self) -> int:
        return len(self.id2label) if self.id2label else 2

    @num_labels.setter
    def num_labels(self, n: int) -> None:
        self.id2label = {i: f"LABEL_{i}" for i in range(int(n))}
        self.label2id = {v: k for k, v in self.id2label.items()}

    def validate(self, source: str = "BertConfig") -> None:
        def bad(name: str, why: str) -> ConfigError:
            return ConfigError(f"{source}: field '{name}' = {getattr(self, name)!r}: {why}")

        fam = family(self.model_type, source)
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                     "max_position_embeddings", "type_vocab_size", "embedding_size", "num_hidden_groups",
                     "inner_group_num"):
            v = getattr(self, name)
            if v is None and name == "embedding_size":
                continue
            if name == "type_vocab_size" and not fam.token_types:
                if v != 0:
                    raise bad(name, f"must be 0: {fam.name} has no token types")
                continue
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise bad(name, "must be a positive integer")
            if v > LIMITS[name]:
                raise bad(name, f"must be at most {LIMITS[name]:,} (no BERT comes near it)")
        if not fam.shared_layers:
            for name in ("num_hidden_groups", "inner_group_num"):
                if getattr(self, name) != 1:
                    raise bad(name, f"must be 1: {fam.name} does not share layers (only "
                                    f"{', '.join(m for m, f in FAMILIES.items() if f.shared_layers)} do)")
        elif self.num_hidden_groups > self.num_hidden_layers:
            raise bad("num_hidden_groups", f"must be at most num_hidden_layers ({self.num_hidden_layers})")
        if self.embedding_dim != self.hidden_size and not fam.factorised:
            raise bad("embedding_size", f"must equal hidden_size ({self.hidden_size}): {fam.name} has no embedding "
                                        f"projection (only {', '.join(m for m, f in FAMILIES.items() if f.factorised)} "
                                        f"have)")
        if self.max_length <= 0:
            raise bad("max_position_embeddings", f"must exceed the position offset {self.position_offset} "
                                                 f"(pad_token_id + 1)")
        if self.hidden_size % self.num_attention_heads:
            raise bad("hidden_size", f"must be divisible by num_attention_heads ({self.num_attention_heads})")
        if (n := self.num_parameters()) > MAX_PARAMETERS:
            raise ConfigError(f"{source}: fields vocab_size, hidden_size, intermediate_size, num_hidden_layers and "
                              f"max_position_embeddings make {n:,} parameters ({4 * n / 1e9:,.0f} GB in float32), "
                              f"over the {MAX_PARAMETERS:,} bertkit accepts")
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not 0.0 <= v < 1.0:
                raise bad(name, "must be a number in [0, 1)")
        if self.classifier_dropout is not None and not 0.0 <= self.classifier_dropout < 1.0:
            raise bad("classifier_dropout", "must be null or a number in [0, 1)")
        if not isinstance(self.layer_norm_eps, (int, float)) or not (0 < self.layer_norm_eps < 1):
            raise bad("layer_norm_eps", "must be a small positive number")
        if self.hidden_act not in ACTIVATIONS:
            raise bad("hidden_act", f"must be one of {', '.join(ACTIVATIONS)}")
        if self.position_embedding_type != "absolute":
            raise bad("position_embedding_type", "only 'absolute' (the BERT paper's learned positions) is supported")
        if self.problem_type not in (None, "regression", "single_label_classification", "multi_label_classification"):
            raise bad("problem_type", "must be null, regression, single_label_classification or "
                                      "multi_label_classification")
        if not isinstance(self.pad_token_id, int) or not 0 <= self.pad_token_id < self.vocab_size:
            raise bad("pad_token_id", f"must be an id in [0, vocab_size={self.vocab_size})")

    # ---- named sizes ----------------------------------------------------------------------------------------
    @classmethod
    def named(cls, size: str, **overrides: Any) -> BertConfig:
        """`BertConfig.named("mini", vocab_size=32000)`: one of tiny, mini, small, medium, base, large."""
        if size not in SIZES:
            raise ConfigError(f"unknown size '{size}': choose one of {', '.join(SIZES)}")
        layers, hidden, heads = SIZES[size]
        fields = dict(num_hidden_layers=layers, hidden_size=hidden, num_attention_heads=heads,
                      intermediate_size=4 * hidden)
        fields.update(overrides)
        return cls(**fields)

    # ---- JSON ---------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        if out["id2label"] is not None:
            out["id2label"] = {str(k): v for k, v in out["id2label"].items()}
        for key in ("id2label", "label2id", "problem_type", "architectures", "classifier_dropout", "embedding_size"):
            if out[key] is None:
                del out[key]
        if not self.family.shared_layers:
            del out["num_hidden_groups"], out["inner_group_num"]
        out = self.family.config_to_hf(out)
        out.update({k: v for k, v in self.extra.items() if k not in out})
        return dict(sorted(out.items()))

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "config") -> BertConfig:
        if not isinstance(d, dict):
            raise ConfigError(f"{source}: expected a JSON object, got {type(d).__name__}")
        fam = family(d.get("model_type", "bert"), source)
        d = fam.config_from_hf(dict(d))
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        kwargs = {k: v for k, v in d.items() if k in known}
        extra = {k: v for k, v in d.items() if k not in known}
        if "num_labels" in extra and "id2label" not in kwargs:
            n = extra.pop("num_labels")
            kwargs["id2label"] = {i: f"LABEL_{i}" for i in range(int(n))}
        else:
            extra.pop("num_labels", None)
        for name in ("id2label", "label2id"):
            if name in kwargs and kwargs[name] is not None and not isinstance(kwargs[name], dict):
                raise ConfigError(f"{source}: field '{name}' must be a JSON object")
        try:
            cfg = cls(**{**kwargs, "extra": extra})
        except ConfigError as e:
            raise ConfigError(str(e).replace("BertConfig:", f"{source}:", 1)) from None
        except (TypeError, ValueError) as e:
            raise ConfigError(f"{source}: {e}") from None
        cfg.validate(source)
        return cfg

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False, allow_nan=False) + "\n"

    @classmethod
    def from_json_file(cls, path: str | Path) -> BertConfig:
        path = Path(path)
        if path.is_dir():
            path = path / "config.json"
        if not path.is_file():
            raise ConfigError(f"{path}: file not found (a BERT checkpoint directory needs a config.json)")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise ConfigError(f"{path}: not valid UTF-8 ({e.reason} at byte {e.start})") from None
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}: malformed JSON at line {e.lineno}, column {e.colno}: {e.msg}") from None
        return cls.from_dict(d, source=str(path))

    def save(self, path: str | Path) -> None:
        atomic_write_text(Path(path), self.to_json())

    def num_parameters(self, with_pooler: bool = True) -> int:
        """Parameter count of the encoder, from the config alone (shared layers counted once)."""
        h, i, e = self.hidden_size, self.intermediate_size, self.embedding_dim
        emb = (self.vocab_size + self.max_position_embeddings + self.type_vocab_size) * e + 2 * e
        project = e * h + h if self.projects_embeddings else 0
        layer = 4 * (h * h + h) + 2 * h * i + i + h + 4 * h
        pooler = h * h + h if with_pooler and self.family.has_pooler else 0
        return emb + project + self.num_layer_modules * layer + pooler

    def flops_per_token(self, seq_len: int) -> float:
        """Forward multiply-adds x 2 per token of the encoder at a sequence length (no embeddings, no pooler)."""
        h, i = self.hidden_size, self.intermediate_size
        per_layer = 2 * (4 * h * h + 2 * h * i) + 2 * 2 * seq_len * h
        applied = self.num_hidden_layers * (self.inner_group_num if self.family.shared_layers else 1)
        project = 2 * self.embedding_dim * h if self.projects_embeddings else 0
        return float(applied * per_layer + project)

