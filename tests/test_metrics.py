"""Metrics against hand-checked cases from their official definitions."""

from __future__ import annotations

import pytest

from bertkit import metrics as M


def test_classification_and_correlation():
    assert M.accuracy([1, 0, 1, 1], [1, 1, 1, 0]) == 0.5
    assert M.f1_binary([1, 1, 0, 0], [1, 0, 1, 0]) == pytest.approx(0.5)  # tp 1, fp 1, fn 1
    assert M.matthews_corrcoef([1, 1, 0, 0], [1, 0, 0, 0]) == pytest.approx(2 / 12 ** 0.5)
    assert M.matthews_corrcoef([1, 1, 1], [1, 1, 1]) == 0.0  # undefined -> 0, as sklearn and GLUE
    assert M.pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert M.spearman([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(4.5 / 22.5 ** 0.5)  # ties: mean ranks
    assert M.spearman([1, 2, 3, 4], [10, 20, 30, 1000]) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="differ in length"):
        M.accuracy([1], [1, 0])


def test_squad_official_normalisation():
    assert M.squad_normalize("The  Denver Broncos!") == "denver broncos"
    assert M.squad_em("the Denver Broncos", ["Denver Broncos", "Broncos"]) == 1.0
    assert M.squad_f1("Broncos won", ["Denver Broncos"]) == pytest.approx(0.5)
    assert M.squad_f1("an apple", ["the pear", "apple"]) == 1.0  # best over gold answers
    assert M.squad_f1("", [""]) == 1.0 and M.squad_f1("x", [""]) == 0.0  # SQuAD 2.0 no-answer


def test_korquad_character_f1():
    assert M.korquad_em("세종대왕", ["세종 대왕"]) == 0.0
    assert M.korquad_f1("세종대왕", ["세종 대왕"]) == 1.0  # characters, not words
    assert M.korquad_f1("1443년", ["1443년(세종 25년)"]) == pytest.approx(2 * 1 * 0.5 / 1.5)
    assert M.korquad_em("《훈민정음》", ["훈민정음"]) == 1.0  # brackets and quotes are dropped
    assert M.korquad_f1("한글", ["영어"]) == 0.0


def test_entity_f1_like_conlleval():
    gold = [["I-PER", "I-PER", "O", "I-LOC"]]  # IOB1, as CoNLL-2003 ships it
    pred = [["I-PER", "O", "O", "I-LOC"]]
    s = M.entity_scores(pred, gold)
    assert (s["precision"], s["recall"], s["f1"]) == (0.5, 0.5, 0.5)
    assert s["f1_LOC"] == 1.0 and s["f1_PER"] == 0.0
    assert M.chunks(["I-PER", "I-PER", "B-PER", "O"]) == {("PER", 0, 1), ("PER", 2, 2)}  # IOB1 B splits
    assert M.chunks(["B-ORG", "I-ORG", "I-LOC", "O", "I-MISC"]) == {("ORG", 0, 1), ("LOC", 2, 2), ("MISC", 4, 4)}
    iob2 = [["B-PS", "I-PS", "O", "B-LC"]]
    assert M.entity_scores(iob2, iob2)["f1"] == 1.0
    assert M.entity_scores([["O", "O"]], [["O", "O"]])["f1"] == 0.0


def test_rouge_equals_rouge_score_on_bbc_summaries():
    """ROUGE-1/2/L/Lsum as Google's rouge-score computes them (no stemming), to 1e-6, on the BBC articles'
    reference summaries scored against their lead sentences (real text: repeats, punctuation, numbers)."""
    import csv
    import gzip
    import random

    rouge_scorer = pytest.importorskip("rouge_score.rouge_scorer")
    from conftest import need_data

    with gzip.open(need_data("summarization", "bbc_news_summary_valid.csv.gz"), "rt", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))[:60]
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL", "rougeLsum"], use_stemmer=False)
    rng = random.Random(0)
    for row in rows:
        sentences = [s for s in row["document"].replace("\n", " ").split(". ") if s]
        lead = "\n".join(sentences[:3])  # newline-split sentences for ROUGE-Lsum
        summary = "\n".join(s for s in row["summary"].split(". ") if s)
        shuffled = "\n".join(rng.sample(sentences, min(4, len(sentences))))
        for prediction in (lead, shuffled, ""):
            want, got = scorer.score(summary, prediction), M.rouge(prediction, summary)
            for name, score in want.items():
                for field in ("precision", "recall"):
                    assert got[name][field] == pytest.approx(getattr(score, field), abs=1e-6), (name, field)
                assert got[name]["f"] == pytest.approx(score.fmeasure, abs=1e-6), name


def test_rouge_scores_korean_with_unicode_words():
    """rouge-score's tokenizer keeps a-z0-9 only, so every Korean summary scores 0 there; `tokens="unicode"` keeps
    Hangul words."""
    reference, prediction = "지카바이러스가 남성 생식능력을 저하시킨다", "지카바이러스가 생식능력을 저하시킨다는 연구"
    assert M.rouge(prediction, reference)["rouge1"]["f"] == 0.0  # what rouge-score's tokenization gives
    got = M.rouge(prediction, reference, tokens="unicode")
    assert got["rouge1"]["precision"] == pytest.approx(2 / 4) and got["rouge1"]["recall"] == pytest.approx(2 / 4)
    assert got["rouge2"]["f"] == 0.0 and got["rougeL"]["f"] == pytest.approx(0.5)
    assert M.rouge_tokens("Apple의 iPhone 15, 출시!", "unicode") == ["apple의", "iphone", "15", "출시"]
    with pytest.raises(ValueError, match="choose one of rouge-score, unicode"):
        M.rouge("a", "b", tokens="mecab")


def test_sentence_precision_recall_f1():
    assert M.sentence_prf([0, 2, 5], [0, 1, 2, 3]) == pytest.approx({"precision": 2 / 3, "recall": 0.5,
                                                                     "f": 2 * (2 / 3) * 0.5 / (2 / 3 + 0.5)})
    assert M.sentence_prf([], [1]) == {"precision": 0.0, "recall": 0.0, "f": 0.0}
