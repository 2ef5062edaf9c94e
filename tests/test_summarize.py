"""Extractive summaries (apps/summarize.py): sentence splitting of cased, lower-cased and Korean text; each
method's choice on texts whose answer is known; bad input named."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bertkit.apps.summarize import (METHODS, centrality_scores, frequency_scores, mmr_pick, oracle, split_text,
                                    summarize, textrank_scores)
from bertkit.metrics import rouge


def test_split_text_cuts_lower_case_and_korean_articles():
    assert split_text("uk economy at risk\n\nthe bcc said growth will slow. dr. smith agreed. it is 3.5% now.") == [
        "uk economy at risk", "the bcc said growth will slow.", "dr. smith agreed.", "it is 3.5% now."]
    # cased text keeps the lower-case continuation rule ("e.g. this" is one sentence)
    assert split_text("He said e.g. this works. Then he left.") == ["He said e.g. this works.", "Then he left."]
    assert split_text("지카바이러스가 확인됐다. 연구진은 쥐를 실험했다.\n결과는 네이처에 실렸다.") == [
        "지카바이러스가 확인됐다.", "연구진은 쥐를 실험했다.", "결과는 네이처에 실렸다."]
    assert split_text("") == [] and split_text("   \n\n ") == []


SENTENCES = ["the central bank raised interest rates again on tuesday.",
             "the bank said inflation was still too high.",
             "markets fell after the central bank raised rates.",
             "the weather was sunny in the capital.",
             "economists expect the bank to raise rates again."]


def test_lead_textrank_and_oracle_pick_what_they_should():
    assert summarize(SENTENCES, 2, "lead") == [0, 1]
    tr = summarize(SENTENCES, 2, "textrank")
    assert 3 not in tr and len(tr) == 2  # the off-topic sentence is the least central
    reference = SENTENCES[2] + " " + SENTENCES[4]
    assert oracle(SENTENCES, reference, 3) == [2, 4]  # stops when no sentence adds ROUGE
    picked = summarize(SENTENCES, 3, "oracle", reference=reference)
    r = rouge(" ".join(SENTENCES[i] for i in picked), reference)
    assert r["rouge2"]["f"] == pytest.approx(1.0)
    assert summarize(SENTENCES[:2], 3, "centrality") == [0, 1]  # fewer sentences than k: all of them, no vectors
    # Luhn: "bank" 4, "rates" 3, "central" and "raised" 2 ("raise" is another word; "interest", "again", "too" are
    # stop words), over the top count (4): the first sentence 2+4+2+3+1 = 12, the third 1+1+2+4+2+3 = 13
    freq = frequency_scores(SENTENCES)
    np.testing.assert_allclose(freq * 4, [12, 7, 13, 3, 10])
    assert summarize(SENTENCES, 2, "frequency") == [0, 2]


def test_centroid_centrality_and_mmr_on_known_vectors():
    fan = np.array([[1.0, 0.0], [0.8, 0.6], [0.6, 0.8], [0.0, 1.0]])  # the mean points between the middle two
    assert summarize(SENTENCES[:4], 2, "centroid", vectors=fan) == [1, 2]
    v = np.array([[1.0, 0.0, 0.0], [0.9, 0.1, 0.0], [0.9, 0.1, 0.0], [0.0, 0.0, 1.0], [0.8, 0.2, 0.1]])
    by_meaning = centrality_scores(SENTENCES, v, lexical=0.0)  # LexRank over the vectors
    assert by_meaning.argmin() == 3  # the outlier vector
    by_words = centrality_scores(SENTENCES, v, lexical=1.0)
    np.testing.assert_allclose(by_words, textrank_scores(SENTENCES))  # TextRank
    assert by_words.argmin() == 3  # the weather sentence shares no word with the others' topic
    assert np.isclose(centrality_scores(SENTENCES, v, 0.5).sum(), 1.0)  # PageRank: a distribution
    # two identical sentences: the top two by score are the twins; with MMR the second pick is another sentence
    s = np.array([0.5, 1.0, 1.0, 0.0, 0.4])
    assert mmr_pick(s, v, 2, mmr=1.0) == [1, 2]
    assert mmr_pick(s, v, 2, mmr=0.4) == [1, 3]  # the twin costs 0.6 x 1.0 of redundancy, the outlier nothing


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="method 'abstractive': choose one of " + ", ".join(METHODS)):
        summarize(SENTENCES, 3, "abstractive")
    with pytest.raises(ValueError, match="k 0: at least one sentence"):
        summarize(SENTENCES, 0)
    with pytest.raises(ValueError, match=r"centrality: needs one sentence vector per sentence \(5\), got none"):
        summarize(SENTENCES, 3)
    with pytest.raises(ValueError, match=r"got 2"):
        summarize(SENTENCES, 3, "centroid", vectors=np.ones((2, 3)))
    with pytest.raises(ValueError, match="oracle: needs the reference summary"):
        summarize(SENTENCES, 3, "oracle")
    assert summarize([], 3, "lead") == []


ARTICLE = ("The central bank raised interest rates again on Tuesday. The bank said inflation was still too high. "
           "Markets fell after the central bank raised rates. The weather was sunny in the capital. "
           "Economists expect the bank to raise rates again.")


def test_summarize_cli_end_to_end(minilm_dir, tmp_path, capsys, monkeypatch):
    import json

    from bertkit.cli import main

    monkeypatch.setenv("BERTKIT_CACHE", str(tmp_path / "cache"))
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"id": 1, "text": ARTICLE}) + "\n\n"
                   + json.dumps({"id": 2, "sentences": SENTENCES, "reference": SENTENCES[2]}) + "\n"
                   + json.dumps({"id": 3, "text": "한 문장뿐인 기사다."}, ensure_ascii=False) + "\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    assert main(["summarize", "--model", str(minilm_dir), "--input", str(src), "--output", str(out), "--k", "2"]) == 0
    assert "summarized 3 articles (centrality, k 2)" in capsys.readouterr().err
    rows = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    assert [r["id"] for r in rows] == [1, 2, 3]
    for r in rows:
        assert r["summary_sentences"] == sorted(r["summary_sentences"]) and len(r["summary_sentences"]) <= 2
        assert r["summary"] == " ".join(r["sentences"][i] for i in r["summary_sentences"])
    assert len(rows[0]["sentences"]) == 5 and rows[2]["summary_sentences"] == [0]
    assert 3 not in rows[0]["summary_sentences"]  # not the weather
    for method in ("lead", "textrank", "frequency"):  # no model needed
        assert main(["summarize", "--input", str(src), "--output", str(out), "--method", method]) == 0
    (tmp_path / "bad.jsonl").write_text(json.dumps({"id": 1, "text": ARTICLE}) + "\n", encoding="utf-8")
    assert main(["summarize", "--input", str(tmp_path / "bad.jsonl"), "--output", str(out), "--method",
                 "oracle"]) == 2
    assert "line 1: --method oracle needs a field 'reference'" in capsys.readouterr().err
    assert main(["summarize", "--input", str(src), "--output", str(tmp_path / "o2"), "--method", "centrality"]) == 2
    assert "give --model" in capsys.readouterr().err


def test_summarize_refuses_an_enormous_line(tmp_path, capsys):
    from bertkit.cli import main

    (tmp_path / "in.jsonl").write_text('{"text": "' + "word. " * 200_000 + '"}\n', encoding="utf-8")
    assert main(["summarize", "--input", str(tmp_path / "in.jsonl"), "--output", str(tmp_path / "o"),
                 "--method", "lead"]) == 2
    assert "line 1: longer than --max-chars (1000000 characters): an article is summarized whole" in \
        capsys.readouterr().err


@pytest.mark.parametrize("line,message", [
    ("{not json", "line 1: not a JSON object"),
    ('{"title": "x"}', "line 1: expected a field 'text' (a string) or 'sentences' (a list of strings)"),
    ('{"text": "   "}', "line 1: no sentence in it"),
    ('{"sentences": "one string"}', "line 1: field 'sentences': expected a list of strings"),
    ('["text"]', "line 1: expected a JSON object"),
    ('{"text": "a.", "reference": 3}', "line 1: field 'reference': expected a string"),
])
def test_summarize_bad_lines_are_named_and_nothing_is_written(tmp_path, capsys, line, message):
    from bertkit.cli import main

    (tmp_path / "in.jsonl").write_text(line + "\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    assert main(["summarize", "--input", str(tmp_path / "in.jsonl"), "--output", str(out), "--method", "lead"]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_articles_embedded_together_pick_what_each_alone_picks(minilm_dir, tmp_path, monkeypatch):
    """The file job embeds the sentences of many articles in one call (chunks of CHUNK_SENTENCES): each article's
    summary is still the one its own vectors give."""
    import bertkit.apps.summarize as S
    from bertkit.infer.predictor import Predictor

    texts = [ARTICLE, "Short one. It has two sentences.", "Markets fell. Banks rose. Oil was flat. Gold gained. "
             "Traders waited for the bank. The bank said nothing."]
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts * 3), encoding="utf-8")
    from bertkit.infer.batchio import summarize_file

    monkeypatch.setattr(S, "CHUNK_SENTENCES", 7)  # chunks end inside the file, not only at its end
    p = Predictor.from_pretrained(minilm_dir)
    assert summarize_file(str(src), str(tmp_path / "out.jsonl"), k=2, predictor=p) == 9
    for line, text in zip((tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines(), texts * 3):
        sentences = S.split_text(text)
        assert json.loads(line)["summary_sentences"] == S.summarize(sentences, 2, vectors=p.embed(sentences))
