"""The BERT encoder (Devlin et al. 2019), read leaves to root; the one encoder of every family.

Module and parameter names are those of Hugging Face `BertModel` (the checkpoint contract): `embeddings.LayerNorm`
keeps its capital letters and `attention.self` its odd name because every released BERT checkpoint uses them.
Other families (`bertkit.families`) are the same modules under a few switches read from the config: embeddings of
width `embedding_size` projected to hidden_size (ELECTRA, ALBERT), positions counted from pad_token_id + 1
(RoBERTa), no token types and optional fixed sinusoidal positions (DistilBERT), layers shared across depth
(ALBERT), no pooler (ELECTRA, DistilBERT). Their checkpoints' own names are mapped in `bertkit.checkpoint`.

Deviations from the reference, all behind the same interface:
- Unpadding. When a batch has padding, hidden states travel between layers as (N, H) over the N real tokens only,
  so the feed-forward, projections and LayerNorms (~95 % of the FLOPs) never touch padding. They are padded
  to (B, T, ...) for the attention product alone and once more on exit (`Padding`, the one boundary).
  A batch without padding takes the same path with views, at no cost.
- Consequently the outputs at padded positions are zeros, where the reference returns values computed from
  padding that mean nothing. Outputs at real tokens equal the reference to fp32 tolerance.
- Attention is `torch.nn.functional.scaled_dot_product_attention` with a boolean key mask, and no mask at all
  when the batch has no padding (which lets PyTorch pick its fused kernel).
- An ONNX export traces the padded layout instead (`BertModel.unpad = False`, every position computed, keys
  masked), with attention spelled out as the reference writes it (scores / sqrt(d) + additive mask, softmax,
  times values): SDPA's export wraps every layer in shape arithmetic and NaN guards (750 nodes for MiniLM against
  388), which cost ONNX Runtime 8-16 % at batch 1 (benchmarks/RESULTS.md, "The export's graph").
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bertkit.checkpoint import load_pretrained, save_pretrained
from bertkit.config import BertConfig, ConfigError

_ACT = {
    "gelu": F.gelu,  # exact erf form, as in the original BERT
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
    "silu": F.silu,
    "swish": F.silu,
    "tanh": torch.tanh,
}


@dataclass
class Padding:
    """Where the real tokens of a (B, T) batch are: the single boundary between padded and unpadded layouts."""

    batch: int
    seq: int
    index: Tensor | None  # (N,) flat positions of the real tokens; None when nothing is padding
    key_mask: Tensor | None  # (B, 1, 1, T) True where a key may be attended to; None when nothing is padding
    # the padded layout of an export (see BertModel.unpad): attention spelled out, and `bias` (B, 1, 1, T), 0 for
    # real keys and the dtype's minimum for padding, added to its scores
    export: bool = False
    bias: Tensor | None = None

    @classmethod
    def from_mask(cls, attention_mask: Tensor | None, batch: int, seq: int, unpad: bool = True) -> Padding:
        if not unpad:
            bias = None if attention_mask is None else \
                (1.0 - attention_mask[:, None, None, :].float()) * torch.finfo(torch.float32).min
            return cls(batch, seq, None, None, export=True, bias=bias)
        if attention_mask is None or bool(attention_mask.all()):
            return cls(batch, seq, None, None)
        mask = attention_mask.bool()
        if not bool(mask.any(dim=1).all()):
            raise ValueError("attention_mask: a sequence has no real token (every position is padding)")
        return cls(batch, seq, mask.flatten().nonzero().squeeze(1), mask[:, None, None, :])

    def unpad(self, x: Tensor) -> Tensor:  # (B, T, ...) -> (N, ...)
        x = x.reshape(self.batch * self.seq, *x.shape[2:])
        return x if self.index is None else x.index_select(0, self.index)

    def pad(self, x: Tensor) -> Tensor:  # (N, ...) -> (B, T, ...)
        if self.index is not None:
            x = x.new_zeros(self.batch * self.seq, *x.shape[1:]).index_copy(0, self.index, x)
        return x.view(self.batch, self.seq, *x.shape[1:])


def sinusoidal_positions(rows: int, dim: int) -> Tensor:
    """Fixed positions of Vaswani et al. 2017 as DistilBERT lays them out: sin in even columns, cos in odd ones."""
    pos = torch.arange(rows, dtype=torch.float64)[:, None]
    j = torch.arange(dim, dtype=torch.float64)[None, :]
    angle = pos / torch.pow(10000.0, 2 * torch.div(j, 2, rounding_mode="floor") / dim)
    out = torch.empty(rows, dim, dtype=torch.float64)
    out[:, 0::2], out[:, 1::2] = torch.sin(angle[:, 0::2]), torch.cos(angle[:, 1::2])
    return out.float()


class BertEmbeddings(nn.Module):
    """word + position (+ token type) -> LayerNorm -> dropout, of width embedding_size (hidden_size by default)."""

    def __init__(self, config: BertConfig):
        super().__init__()
        e = config.embedding_dim
        self.word_embeddings = nn.Embedding(config.vocab_size, e, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, e)
        # DistilBERT has no token types: no module, and token_type_ids are not used
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, e) if config.type_vocab_size else None
        self.LayerNorm = nn.LayerNorm(e, eps=config.layer_norm_eps)  # HF name, capitalised
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.position_offset = config.position_offset  # RoBERTa: positions start at pad_token_id + 1
        self.sinusoidal = config.family.sinusoidal(config)
        if self.sinusoidal:  # fixed, not trained (DistilBERT's option); still saved, as HF does
            self.position_embeddings.weight.requires_grad_(False)
            self.reset_fixed()

    def reset_fixed(self) -> None:
        if self.sinusoidal:
            w = self.position_embeddings.weight
            with torch.no_grad():
                w.copy_(sinusoidal_positions(*w.shape))

    def forward(self, input_ids: Tensor, token_type_ids: Tensor | None) -> Tensor:
        T = input_ids.shape[1]
        positions = torch.arange(self.position_offset, self.position_offset + T, device=input_ids.device)
        x = self.word_embeddings(input_ids)  # (B, T, E)
        if self.token_type_embeddings is not None:
            x = x + (self.token_type_embeddings(token_type_ids) if token_type_ids is not None
                     else self.token_type_embeddings.weight[0])
        x = x + self.position_embeddings(positions)
        return self.dropout(self.LayerNorm(x))


class BertSelfAttention(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.head_dim = config.head_dim
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.value = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout_p = config.attention_probs_dropout_prob

    def project(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:  # (N, H) -> q, k, v, each (N, H)
        return self.query(x), self.key(x), self.value(x)

    def forward(self, x: Tensor, padding: Padding) -> Tensor:  # (N, H) -> (N, H)
        B, T, nh, hd = padding.batch, padding.seq, self.num_heads, self.head_dim
        if padding.export:  # the reference's arithmetic, which graph optimisers recognise (the module's docstring)
            q, k, v = (t.view(B, T, nh, hd).transpose(1, 2) for t in self.project(x))
            scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(hd)
            if padding.bias is not None:
                scores = scores + padding.bias
            out = torch.matmul(scores.softmax(-1), v)  # no dropout: an export is for inference
            return out.transpose(1, 2).reshape(B * T, nh * hd)

        def heads(t: Tensor) -> Tensor:  # (N, H) -> (B, nh, T, hd)
            return padding.pad(t).view(B, T, nh, hd).transpose(1, 2)

        q, k, v = (heads(t) for t in self.project(x))
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=padding.key_mask, dropout_p=self.dropout_p if self.training else 0.0
        )  # (B, nh, T, hd)
        return padding.unpad(out.transpose(1, 2)).reshape(-1, nh * hd)


class BertOutput(nn.Module):
    """dense -> dropout -> add the residual -> LayerNorm. After attention (`attention.output`, in = hidden) and
    after the feed-forward (`output`, in = intermediate): the same block with two input widths."""

    def __init__(self, config: BertConfig, in_features: int):
        super().__init__()
        self.dense = nn.Linear(in_features, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, x: Tensor, residual: Tensor) -> Tensor:
        return self.LayerNorm(self.dropout(self.dense(x)) + residual)


class BertAttention(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.self = BertSelfAttention(config)  # `attention.self.query` is the checkpoint name
        self.output = BertOutput(config, config.hidden_size)

    def forward(self, x: Tensor, padding: Padding) -> Tensor:
        return self.output(self.self(x, padding), x)


class BertIntermediate(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.act = _ACT[config.hidden_act]

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.dense(x))


class BertLayer(nn.Module):
    """Post-LN transformer block: x = LN(x + Attn(x)); x = LN(x + FFN(x))."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.attention = BertAttention(config)
        self.intermediate = BertIntermediate(config)
        self.output = BertOutput(config, config.intermediate_size)

    def forward(self, x: Tensor, padding: Padding) -> Tensor:  # (N, H) -> (N, H)
        x = self.attention(x, padding)
        return self.output(self.intermediate(x), x)


class BertEncoder(nn.Module):
    """The distinct layers, and the order they are applied in: each once, in turn, or, for ALBERT, group
    int(i / (num_hidden_layers / num_hidden_groups)) for i in range(num_hidden_layers), all its inner layers each
    time (Hugging Face's schedule)."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.layer = nn.ModuleList(BertLayer(config) for _ in range(config.num_layer_modules))
        self.schedule = list(range(config.num_hidden_layers))
        if config.family.shared_layers:
            n, groups, inner = config.num_hidden_layers, config.num_hidden_groups, config.inner_group_num
            self.schedule = [int(i / (n / groups)) * inner + k for i in range(n) for k in range(inner)]


class BertPooler(nn.Module):
    """tanh(W h_[CLS] + b): the sentence vector the NSP head was trained on."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, cls_state: Tensor) -> Tensor:  # (B, H) -> (B, H)
        return torch.tanh(self.dense(cls_state))


@dataclass
class EncoderOutput:
    last_hidden_state: Tensor  # (B, T, H), zeros at padded positions
    pooler_output: Tensor | None  # (B, H), None for a model without a pooler
    hidden_states: tuple[Tensor, ...] | None = None  # embeddings + each layer, each (B, T, H), on request


class BertPreTrainedModel(nn.Module):
    """Shared by the encoder and every head: the config, weight init, and HF-directory load/save."""

    base_model_prefix = "bert"  # where the encoder lives inside a head model, as in HF

    def __init__(self, config: BertConfig):
        super().__init__()
        family = config.family
        # a head the family has no model for (NSP pre-training on ELECTRA) is refused here, not at save time
        if not any(c.__name__ in family.architectures for c in type(self).__mro__):
            raise ConfigError(f"{type(self).__name__}: the {family.name} family has no such model (it has "
                              f"{', '.join(family.architectures)})")
        self.config = config

    def init_weights(self) -> None:
        """Initialisation of the reference: N(0, initializer_range) for matrices, zero biases, unit LayerNorms."""
        std = self.config.initializer_range
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=std)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Embedding):
                nn.init.normal_(m.weight, std=std)
                if m.padding_idx is not None:
                    with torch.no_grad():
                        m.weight[m.padding_idx].zero_()
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for name, p in self.named_parameters():
            if name.endswith("predictions.bias"):
                nn.init.zeros_(p)

        for m in self.modules():
            if isinstance(m, BertEmbeddings):
                m.reset_fixed()

    @classmethod
    def from_pretrained(cls, path, strict: bool = True, **config_overrides):
        """Load a Hugging Face directory of any family; see `bertkit.checkpoint.load_pretrained`."""
        return load_pretrained(cls, path, strict=strict, **config_overrides)

    def save_pretrained(self, path, tokenizer=None) -> None:
        save_pretrained(self, path, tokenizer=tokenizer)


class BertModel(BertPreTrainedModel):
    """Embeddings -> (projection) -> N x BertLayer -> (pooler). Checkpoint keys have no prefix (`embeddings.…`,
    `encoder.…`). The pooler exists only where the family has one (not ELECTRA, not DistilBERT)."""

    def __init__(self, config: BertConfig, add_pooling_layer: bool = True):
        super().__init__(config)
        self.embeddings = BertEmbeddings(config)
        self.embeddings_project = nn.Linear(config.embedding_dim, config.hidden_size) \
            if config.projects_embeddings else None
        self.encoder = BertEncoder(config)
        self.pooler = BertPooler(config) if add_pooling_layer and config.family.has_pooler else None
        # False: compute padding like the reference, keys masked (no data-dependent shapes). An ONNX export traces
        # this way, where ONNX Runtime's shape inference and fusions need static shapes; eager runs keep True.
        self.unpad = True
        self.init_weights()

    def forward(
        self,
        input_ids: Tensor,  # (B, T) token ids
        attention_mask: Tensor | None = None,  # (B, T) 1 for real tokens, 0 for padding
        token_type_ids: Tensor | None = None,  # (B, T) segment ids, 0 for A and 1 for B; unused without types
        output_hidden_states: bool = False,
    ) -> EncoderOutput:
        self._check_inputs(input_ids, attention_mask, token_type_ids)
        B, T = input_ids.shape
        padding = Padding.from_mask(attention_mask, B, T, self.unpad)

        x = padding.unpad(self.embeddings(input_ids, token_type_ids))  # (N, E)
        if self.embeddings_project is not None:  # after unpadding: padding is never projected
            x = self.embeddings_project(x)  # (N, H)
        states = [x] if output_hidden_states else None
        layers = self.encoder.layer
        for i in self.encoder.schedule:
            x = layers[i](x, padding)
            if states is not None:
                states.append(x)

        last = padding.pad(x)  # (B, T, H)
        pooled = self.pooler(last[:, 0]) if self.pooler is not None else None
        hidden = tuple(padding.pad(s) for s in states) if states is not None else None
        return EncoderOutput(last, pooled, hidden)

    def _check_inputs(self, input_ids: Tensor, attention_mask: Tensor | None, token_type_ids: Tensor | None) -> None:
        """Clear errors for what would otherwise fail deep inside an embedding lookup or a matmul."""
        cfg = self.config
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids: expected shape (batch, seq), got {tuple(input_ids.shape)}")
        B, T = input_ids.shape
        if T == 0 or B == 0:
            raise ValueError(f"input_ids: empty batch of shape {tuple(input_ids.shape)}")
        if T > cfg.max_length:
            offset = f" less the position offset {cfg.position_offset}" if cfg.position_offset else ""
            raise ValueError(f"input_ids: sequence length {T} exceeds max_position_embeddings "
                             f"{cfg.max_position_embeddings}{offset}; truncate or split the input")
        if int(input_ids.min()) < 0 or int(input_ids.max()) >= cfg.vocab_size:
            raise ValueError(f"input_ids: ids must lie in [0, vocab_size={cfg.vocab_size}); got "
                             f"[{int(input_ids.min())}, {int(input_ids.max())}] (tokenizer and model disagree?)")
        for name, t in (("attention_mask", attention_mask), ("token_type_ids", token_type_ids)):
            if t is not None and t.shape != input_ids.shape:
                raise ValueError(f"{name}: shape {tuple(t.shape)} differs from input_ids {tuple(input_ids.shape)}")
        if token_type_ids is not None and cfg.type_vocab_size and int(token_type_ids.max()) >= cfg.type_vocab_size:
            raise ValueError(f"token_type_ids: ids must lie in [0, type_vocab_size={cfg.type_vocab_size})")
