"""Span, tag and user-file readers: real files (counts from the datasets' own READMEs) and malformed input."""

from __future__ import annotations

import gzip
import json
from collections import Counter

import pytest

from bertkit.data.corpus import CorpusError
from bertkit.data.tasks import find_split, read_conll, read_klue_ner, read_squad, read_task
from conftest import need_data


def test_squad_and_korquad_on_the_real_files():
    squad = read_squad(need_data("squad", "dev-v1.1.json.gz"))
    assert len(squad) == 10570 and sum(len(e.answers) for e in squad) == 34726
    first = squad[0]
    assert first.title == "Super_Bowl_50" and first.answers[0] == ("Denver Broncos", 177)
    assert first.context[177:177 + len("Denver Broncos")] == "Denver Broncos"
    korquad = read_squad(need_data("korquad", "KorQuAD_v1.0_dev.json.gz"))
    assert len(korquad) == 5774 and all(e.answers and not e.is_impossible for e in korquad)
    assert korquad[0].answers[0] == ("1989년 2월 15일", 0)


def _squad(tmp_path, qas, context="Seoul is the capital of Korea."):
    path = tmp_path / "qa.json"
    path.write_text(json.dumps({"version": "v2.0", "data": [{"title": "t", "paragraphs": [
        {"context": context, "qas": qas}]}]}), encoding="utf-8")
    return path


def test_squad_v2_impossible_and_errors(tmp_path):
    ok = _squad(tmp_path, [{"id": "a", "question": "What is the capital?", "answers": [{"text": "Seoul",
                                                                                        "answer_start": 0}]},
                           {"id": "b", "question": "Who?", "answers": [], "is_impossible": True,
                            "plausible_answers": [{"text": "Korea", "answer_start": 24}]}])
    a, b = read_squad(ok)
    assert a.answers == [("Seoul", 0)] and not a.is_impossible
    assert b.is_impossible and b.answers == []
    bad = _squad(tmp_path, [{"id": "c", "question": "Where?", "answers": [{"text": "Korea", "answer_start": 3}]}])
    with pytest.raises(CorpusError, match=r"data\[0\]\.paragraphs\[0\]\.qas\[0\] \(id c\): answer 'Korea' is not at"):
        read_squad(bad)
    bad = _squad(tmp_path, [{"id": "d", "question": "Where?", "answers": []}])
    with pytest.raises(CorpusError, match=r"\(id d\): no answers and not marked is_impossible"):
        read_squad(bad)
    bad = _squad(tmp_path, [{"id": "e", "answers": [{"text": "Seoul", "answer_start": 0}]}])
    with pytest.raises(CorpusError, match=r"paragraphs\[0\]: missing or malformed field \(KeyError: 'question'\)"):
        read_squad(bad)
    broken = tmp_path / "broken.json"
    broken.write_text('{"data": [', encoding="utf-8")
    with pytest.raises(CorpusError, match=r"broken.json: malformed JSON at line 1"):
        read_squad(broken)


def test_conll_on_the_real_files_with_and_without_docstart(tmp_path):
    test = read_conll(need_data("conll2003", "eng.testb.gz"))
    assert len(test) == 3453 and sum(len(e.words) for e in test) == 46435
    assert Counter(t[2:] for e in test for t in e.tags if t.startswith("B-")) == {
        "LOC": 1668, "ORG": 1661, "PER": 1617, "MISC": 702}
    assert test[0].words[:3] == ["SOCCER", "-", "JAPAN"] and test[0].tags[2] == "B-LOC"
    with_docstart = tmp_path / "doc.txt"
    with_docstart.write_text("-DOCSTART- -X- -X- O\n\nEU NNP B-NP I-ORG\nrejects VBZ B-VP O\n\n"
                             "-DOCSTART- -X- -X- O\n\nPeter B-PER\n", encoding="utf-8")
    a, b = read_conll(with_docstart)
    assert a.words == ["EU", "rejects"] and a.tags == ["I-ORG", "O"] and b.tags == ["B-PER"]
    bad = tmp_path / "bad.txt"
    bad.write_text("EU B-ORG\nrejects\n", encoding="utf-8")
    with pytest.raises(CorpusError, match=r"bad.txt: line 2: expected 'word \.\.\. tag'"):
        read_conll(bad)
    bad.write_text("EU ORG\n", encoding="utf-8")
    with pytest.raises(CorpusError, match=r"bad.txt: line 1: tag 'ORG' is not O, B-X"):
        read_conll(bad)


def test_klue_ner_on_the_real_file(tmp_path):
    dev = read_klue_ner(need_data("klue", "klue-ner-v1.1_dev.tsv.gz"))
    assert len(dev) == 5000
    first = dev[0]
    assert first.id == "klue-ner-v1_dev_00000-wikitree"
    assert first.text.startswith("경찰은 또 성매매") and len(first.words) == len(first.text) == len(first.tags)
    assert first.tags[:3] == ["B-OG", "I-OG", "O"] and first.tags[first.text.index("박")] == "B-PS"
    bad = tmp_path / "ner.tsv"
    bad.write_text("## id-1\t<경:OG>\n경\tB-OG\n찰 B-OG\n", encoding="utf-8")
    with pytest.raises(CorpusError, match=r"ner.tsv: line 3: expected 'character<TAB>tag'"):
        read_klue_ner(bad)


def test_custom_jsonl_csv_tsv(tmp_path):
    rows = [{"text": "좋은 영화", "label": "pos"}, {"text": "a dull one", "text_pair": "why", "label": "neg"}]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                                          encoding="utf-8")
    examples, labels = read_task(find_split(tmp_path, "train"), "custom")
    assert [(e.text, e.text_pair, e.label) for e in examples] == [("좋은 영화", None, "pos"),
                                                                    ("a dull one", "why", "neg")]
    assert labels == ["neg", "pos"]
    with gzip.open(tmp_path / "dev.csv.gz", "wt", encoding="utf-8") as f:
        f.write('text,label\n"commas, inside",pos\n')
    examples, _ = read_task(find_split(tmp_path, "dev"), "custom")
    assert examples[0].text == "commas, inside"
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok", "label": 1}\n{"text": "no label"}\n', encoding="utf-8")
    with pytest.raises(CorpusError, match=r"bad.jsonl: line 2: missing field 'label'"):
        read_task(bad, "custom")
    bad.write_text('{"text": "ok", "label": 1}\n{"text": \n', encoding="utf-8")
    with pytest.raises(CorpusError, match=r"bad.jsonl: line 2: malformed JSON"):
        read_task(bad, "custom")
    bad.write_text('{"text": 5, "label": 1}\n', encoding="utf-8")
    with pytest.raises(CorpusError, match=r"bad.jsonl: line 1: 'text' and 'text_pair' must be strings"):
        read_task(bad, "custom")
