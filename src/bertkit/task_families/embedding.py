"""Sentence embeddings: a bare encoder (or ELECTRA's discriminator, read as its encoder), mean-pooled."""

from __future__ import annotations

from bertkit.task_families.base import Family


class Embedding(Family):
    name = "embedding"
    heads = ("BertModel",)
    # checkpoints whose head has no inference path of its own: their encoder is loaded and embeds
    encoder_of = ("BertForReplacedTokenDetection",)
    operation = "embed"
    onnx_outputs = ("last_hidden_state",)
    endpoints = Family.SHARED


FAMILY = Embedding()
