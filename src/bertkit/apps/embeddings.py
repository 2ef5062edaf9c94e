"""Sentence embeddings (SBERT): mean of the token states over real tokens, then L2-normalised.

This is how all-MiniLM-L6-v2 was trained (sentence-transformers' Pooling(mean) + Normalize), so cosine similarity
of these vectors is the model's own similarity score. The pooling itself is the Predictor's (`mean_pool`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from bertkit.infer.predictor import Predictor, PredictorSettings, mean_pool  # noqa: F401  (mean_pool: re-exported)
from bertkit.model import BertModel
from bertkit.tokenizer import Tokenizer


def embed(model: BertModel, tokenizer: Tokenizer, texts: Sequence[str], batch_size: int = 32,
          max_length: int | None = None, normalize: bool = True) -> torch.Tensor:
    """(len(texts), H) sentence vectors, through the Predictor (batched by length: little padding computed)."""
    settings = PredictorSettings(batch_size=batch_size, max_length=max_length)
    return torch.from_numpy(Predictor(model, tokenizer, settings).embed(texts, normalize=normalize))
