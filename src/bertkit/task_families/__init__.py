"""The registry of task families: one object per family (one file each), asked by the trainer, the Predictor,
the ONNX export, the HTTP service and the CLI for everything that differs between families.

Adding a family: a file here with a `Family` subclass and `FAMILY = ...`, and one line in `FAMILIES` below.
"""

from __future__ import annotations

from bertkit.task_families.base import Call, Family
from bertkit.task_families.classification import FAMILY as CLASSIFICATION
from bertkit.task_families.embedding import FAMILY as EMBEDDING
from bertkit.task_families.fill_mask import FAMILY as FILL_MASK
from bertkit.task_families.qa import FAMILY as QA
from bertkit.task_families.regression import FAMILY as REGRESSION
from bertkit.task_families.tagging import FAMILY as TAGGING

FAMILIES: dict[str, Family] = {f.name: f for f in (CLASSIFICATION, REGRESSION, TAGGING, QA, EMBEDDING, FILL_MASK)}

# Every HTTP endpoint, in the order the service lists them, and the family that defines its schema.
ENDPOINTS: dict[str, Family] = {}
for _f in FAMILIES.values():
    for _e in _f.endpoints:
        ENDPOINTS.setdefault(_e, _f)


def get_family(name: str) -> Family:
    if name not in FAMILIES:
        raise ValueError(f"task family '{name}': choose one of {', '.join(FAMILIES)}")
    return FAMILIES[name]


def family_of(head: type, config) -> Family | None:
    """The family of a model of class `head` (or a subclass) with `config`; None if no family serves it."""
    names = [c.__name__ for c in head.__mro__]
    for name in names:
        for f in FAMILIES.values():
            if name in f.heads and f.accepts(config):
                return f
    return None


def inference_head(name: str) -> str | None:
    """The head class (a name in HEADS) to load for a checkpoint whose config.json names `name`: itself when a
    family serves it, the bare encoder for heads that only embed, else None."""
    if any(name in f.heads for f in FAMILIES.values()):
        return name
    if name in EMBEDDING.encoder_of:
        return EMBEDDING.heads[0]
    return None


def endpoints_of(family: Family) -> set[str]:
    """What a model of `family` answers over HTTP: its own endpoints and the embedding ones."""
    return set(family.endpoints) | set(EMBEDDING.endpoints)


__all__ = ["Call", "ENDPOINTS", "FAMILIES", "Family", "endpoints_of", "family_of", "get_family", "inference_head"]
