"""Sentence embeddings (SBERT): mean of the token states over real tokens, then L2-normalised.

This is how all-MiniLM-L6-v2 was trained (sentence-transformers' Pooling(mean) + Normalize), so cosine similarity
of these vectors is the model's own similarity score.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from bertkit.model import BertModel
from bertkit.tokenizer import Tokenizer


def mean_pool(last_hidden_state: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, T, H), (B, T) -> (B, H): the mean over real tokens only."""
    mask = attention_mask.unsqueeze(-1).to(last_hidden_state.dtype)
    return (last_hidden_state * mask).sum(1) / mask.sum(1).clamp(min=1e-9)


@torch.inference_mode()
def embed(model: BertModel, tokenizer: Tokenizer, texts: Sequence[str], batch_size: int = 32,
          max_length: int | None = None, normalize: bool = True) -> torch.Tensor:
    """(len(texts), H) sentence vectors, batched by length so that little padding is computed."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out = torch.empty(len(texts), model.config.hidden_size)
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        batch = tokenizer.batch([texts[i] for i in idx], max_length=max_length)
        vec = mean_pool(model(**batch).last_hidden_state, batch["attention_mask"])
        out[idx] = F.normalize(vec, dim=-1) if normalize else vec
    return out
