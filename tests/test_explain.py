"""Faithfulness of explanations (apps/explain.py): ERASER's comprehensiveness and sufficiency on a model whose
answer is known, and the baselines."""

from __future__ import annotations

import pytest

from bertkit.apps.explain import _only, _without, faithfulness, leave_one_out_scores, random_scores


class KeywordModel:
    """A stand-in classifier that is positive exactly as often as the text says 'great': its faithful explanation
    is known (a mock: the ranking logic is under test here, the real models in benchmarks/explain.py)."""

    def classify(self, texts):
        out = []
        for t in texts:
            p = min(1.0, 0.2 + 0.4 * t.split().count("great"))
            out.append({"label": "pos" if p >= 0.5 else "neg", "probs": {"pos": p, "neg": 1 - p}})
        return out


TEXT = "a great film with great actors and a dull plot"


def words_of(text, scores):
    out, cursor = [], 0
    for w, s in zip(text.split(), scores):
        a = text.index(w, cursor)
        cursor = a + len(w)
        out.append({"start": a, "end": cursor, "score": s, "text": w})
    return out


def test_removing_and_keeping_words():
    words = words_of(TEXT, range(10))
    assert _without(TEXT, words, {1, 4}) == "a film with actors and a dull plot"
    assert _only(TEXT, words, {1, 4}) == "great great"


def test_the_faithful_ranking_beats_random_and_the_reverse():
    m = KeywordModel()
    good = words_of(TEXT, [0, 1, 0, 0, 1, 0, 0, 0, 0, 0])  # the two 'great's first
    bad = words_of(TEXT, [1, 0, 1, 1, 0, 1, 1, 1, 1, 1])
    f_good, f_bad = faithfulness(m, TEXT, good), faithfulness(m, TEXT, bad)
    assert f_good["label"] == "pos" and f_good["p"] == pytest.approx(1.0)
    # bins 1/5/10 % take one word, 20 % two, 50 % five: removing the 'great's drops p to 0.6 then 0.2
    assert f_good["comprehensiveness"] == pytest.approx((0.4 * 3 + 0.8 + 0.8) / 5)
    assert f_good["sufficiency"] == pytest.approx((0.4 * 3 + 0 + 0) / 5)
    assert f_bad["comprehensiveness"] < f_good["comprehensiveness"]
    assert f_bad["sufficiency"] > f_good["sufficiency"]
    loo = leave_one_out_scores(m, TEXT, words_of(TEXT, [0] * 10))
    assert [round(w["score"], 6) for w in loo] == [0, 0.4, 0, 0, 0.4, 0, 0, 0, 0, 0]
    assert faithfulness(m, TEXT, loo)["comprehensiveness"] == pytest.approx(f_good["comprehensiveness"])
    r = random_scores(good, seed=1)
    assert [w["text"] for w in r] == TEXT.split() and r == random_scores(good, seed=1)
    with pytest.raises(ValueError, match="no words to rank"):
        faithfulness(m, "", [])
