"""Whether an explanation is faithful: ERASER's comprehensiveness and sufficiency (DeYoung et al. 2020).

An explanation ranks the words of a text (`Predictor.explain`: gradient x input, integrated gradients; or the
baselines here: `random_scores`, `leave_one_out_scores`). For each fraction f of the words (1, 5, 10, 20, 50 %:
ERASER's bins), the top f of them by score are
- removed: comprehensiveness = p(label | text) - p(label | text without them): high when the words the
  explanation names were what the model needed;
- kept alone: sufficiency = p(label | text) - p(label | only them): low when they suffice.
Each is averaged over the bins (AOPC, the area over the perturbation curve). A word is removed with the spaces
around it collapsed; at least one word is always taken. The label is the model's own prediction on the full text
(what the explanation explains), unless one is given.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

BINS = (0.01, 0.05, 0.10, 0.20, 0.50)


def _top(words: Sequence[dict], fraction: float) -> set[int]:
    k = max(1, round(fraction * len(words)))
    order = sorted(range(len(words)), key=lambda i: -words[i]["score"])
    return set(order[:k])


def _without(text: str, words: Sequence[dict], drop: set[int]) -> str:
    out, cursor = [], 0
    for i, w in enumerate(words):
        if i in drop:
            out.append(text[cursor:w["start"]])
            cursor = w["end"]
    out.append(text[cursor:])
    return " ".join("".join(out).split())


def _only(text: str, words: Sequence[dict], keep: set[int]) -> str:
    return " ".join(text[w["start"]:w["end"]] for i, w in enumerate(words) if i in keep)


def faithfulness(predictor, text: str, words: Sequence[dict], label: str | None = None,
                 bins: Sequence[float] = BINS) -> dict[str, float]:
    """Comprehensiveness and sufficiency (AOPC over `bins`) of a word ranking (`words`: dicts with `start`, `end`,
    `score`, as `Predictor.explain` gives them) for `predictor`'s classification of `text`."""
    if not words:
        raise ValueError("faithfulness: no words to rank (an empty text?)")
    full = predictor.classify([text])[0]
    label = label or full["label"]
    p = full["probs"][label]
    removed = [_without(text, words, _top(words, f)) for f in bins]
    alone = [_only(text, words, _top(words, f)) for f in bins]
    out = predictor.classify(removed + alone)
    comp = [p - r["probs"][label] for r in out[:len(bins)]]
    suff = [p - r["probs"][label] for r in out[len(bins):]]
    return {"comprehensiveness": sum(comp) / len(bins), "sufficiency": sum(suff) / len(bins), "label": label,
            "p": p}


def random_scores(words: Sequence[dict], seed: int = 0) -> list[dict]:
    """The words with uniformly random scores: the floor a faithful explanation must beat."""
    rng = random.Random(seed)
    return [{**w, "score": rng.random()} for w in words]


def leave_one_out_scores(predictor, text: str, words: Sequence[dict], label: str | None = None) -> list[dict]:
    """Each word scored by how much the label's probability drops without it (one model call per word, batched)."""
    full = predictor.classify([text])[0]
    label = label or full["label"]
    out = predictor.classify([_without(text, words, {i}) for i in range(len(words))])
    return [{**w, "score": full["probs"][label] - r["probs"][label]} for w, r in zip(words, out)]
