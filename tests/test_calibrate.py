"""The int8 preset: int8 only where it agrees with fp32 on a calibration sample, and a report either way."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from bertkit import (BertConfig, BertForMaskedLM, BertForQuestionAnswering, BertForSequenceClassification,
                     BertForTokenClassification, BertModel, Tokenizer)
from bertkit.infer.batchio import int8_if_it_agrees_on_file
from bertkit.infer.calibrate import int8_if_it_agrees
from bertkit.infer.predictor import Predictor, PredictorSettings
from bertkit.task_families import classification, embedding, qa, regression, tagging

TEXTS = ["a gorgeous film", "the plot drags on and on", "", "mid length text about music and films here",
         "좋은 영화", "not bad at all", "terrible", "one more sentence, with a comma"]


@pytest.fixture(scope="module")
def tok(minilm_dir):
    return Tokenizer.from_pretrained(minilm_dir)


def save_tiny(cls, path, tok, num_labels: int = 2, **config):
    torch.manual_seed(0)
    cfg = BertConfig.named("tiny", max_position_embeddings=64)
    cfg.num_labels = num_labels
    for k, v in config.items():
        setattr(cfg, k, v)
    cls(cfg).eval().save_pretrained(path, tokenizer=tok)
    return path


@pytest.mark.parametrize("backend", ["torch", "auto"])
def test_int8_kept_only_at_the_threshold_and_the_agreement_is_what_both_answer(tmp_path, tok, backend):
    if backend == "auto":
        pytest.importorskip("onnxruntime")
    path = save_tiny(BertForSequenceClassification, tmp_path / "clf", tok, num_labels=3)
    settings = PredictorSettings(backend=backend)
    fp32 = Predictor.from_pretrained(path, settings).classify(TEXTS)
    int8 = Predictor.from_pretrained(path, PredictorSettings(backend=backend, int8=True)).classify(TEXTS)
    share = np.mean([a["label"] == b["label"] for a, b in zip(fp32, int8)])

    kept, report = int8_if_it_agrees(path, TEXTS, settings=settings, threshold=0.0)
    assert report.accepted and kept.settings.int8 and report.n == len(TEXTS)
    assert report.measure == "share of equal labels" and report.value == pytest.approx(share)
    assert report.fp32_s > 0 and report.int8_s > 0 and "int8 used" in report.line() and "int8 used" in kept.describe()
    assert [r["label"] for r in kept.classify(TEXTS)] == [r["label"] for r in int8]

    refused, report = int8_if_it_agrees(path, TEXTS, settings=settings, threshold=1.01)
    assert not report.accepted and not refused.settings.int8 and "fp32 kept" in refused.describe()
    assert [r["label"] for r in refused.classify(TEXTS)] == [r["label"] for r in fp32]
    assert report.accepted is False and report.threshold == 1.01
    default = int8_if_it_agrees(path, TEXTS, settings=settings)[1]
    assert default.threshold == classification.FAMILY.agreement_threshold == 0.99


def test_each_family_measures_agreement_its_own_way():
    same = [{"label": "pos"}, {"label": "neg"}, {"label": "pos"}, {"label": "neg"}]
    other = [{"label": "pos"}, {"label": "pos"}, {"label": "pos"}, {"label": "neg"}]
    assert classification.FAMILY.agreement(same, other) == ("share of equal labels", 0.75)
    x, y = [0.1, 0.5, 0.9, 0.3], [0.2, 0.6, 1.0, 0.4]
    measure, r = regression.FAMILY.agreement([{"score": v} for v in x], [{"score": v} for v in y])
    assert measure == "Pearson correlation of the scores" and r == pytest.approx(1.0)
    assert regression.FAMILY.agreement([{"score": v} for v in x], [{"score": -v} for v in x])[1] == pytest.approx(-1)
    e = {"type": "PER", "start": 0, "end": 4}
    a = [{"entities": [e, {"type": "LOC", "start": 9, "end": 14}]}, {"entities": []}]
    b = [{"entities": [e]}, {"entities": [{"type": "ORG", "start": 0, "end": 2}]}]
    assert tagging.FAMILY.agreement(a, b) == ("F1 of the entities", pytest.approx(2 * 1 / (2 + 2)))
    assert tagging.FAMILY.agreement([{"entities": []}], [{"entities": []}])[1] == 1.0  # nothing found by either
    assert qa.FAMILY.agreement([{"answer": "Paris"}, {"answer": "1901"}],
                               [{"answer": "Paris"}, {"answer": "in 1901"}]) == ("share of equal answers", 0.5)
    u, v = [1.0, 0.0], [np.sqrt(0.5), np.sqrt(0.5)]
    measure, cos = embedding.FAMILY.agreement([{"vector": u}, {"vector": u}], [{"vector": u}, {"vector": v}])
    assert measure == "mean cosine of the vectors" and cos == pytest.approx((1 + np.sqrt(0.5)) / 2)


def test_a_calibration_file_in_the_predict_format_for_pairs_tags_qa_and_vectors(tmp_path, tok):
    lines = tmp_path / "pairs.txt"
    lines.write_text("".join(f"{t}\t{u}\n" for t, u in zip(TEXTS, reversed(TEXTS))))
    path = save_tiny(BertForSequenceClassification, tmp_path / "clf", tok)
    p, report = int8_if_it_agrees_on_file(path, lines, PredictorSettings(backend="torch"), pairs=True, threshold=0)
    assert report.n == len(TEXTS) and p.settings.int8
    questions = tmp_path / "qa.jsonl"
    questions.write_text("".join(json.dumps({"question": "which film?", "context": t + " and more words"}) + "\n"
                                 for t in TEXTS))
    p, report = int8_if_it_agrees_on_file(save_tiny(BertForQuestionAnswering, tmp_path / "qa", tok), questions,
                                          PredictorSettings(backend="torch"))
    assert report.measure == "share of equal answers" and report.n == len(TEXTS)
    texts = tmp_path / "texts.txt"
    texts.write_text("".join(t + "\n" for t in TEXTS if t))
    tagger = save_tiny(BertForTokenClassification, tmp_path / "tag", tok, num_labels=3,
                       id2label={0: "O", 1: "B-PER", 2: "I-PER"})
    _, report = int8_if_it_agrees_on_file(tagger, texts, PredictorSettings(backend="torch"))
    assert report.measure == "F1 of the entities" and report.threshold == 0.98
    _, report = int8_if_it_agrees_on_file(save_tiny(BertModel, tmp_path / "enc", tok), texts,
                                          PredictorSettings(backend="torch"))
    assert report.measure == "mean cosine of the vectors" and 0.5 < report.value <= 1.0 + 1e-6


def test_calibration_refuses_what_it_cannot_measure(tmp_path, tok):
    path = save_tiny(BertForSequenceClassification, tmp_path / "clf", tok)
    with pytest.raises(ValueError, match="no inputs"):
        int8_if_it_agrees(path, [])
    with pytest.raises(ValueError, match="8 texts but 2 pairs"):
        int8_if_it_agrees(path, TEXTS, ["x", "y"])
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(ValueError, match="empty.txt: no calibration inputs"):
        int8_if_it_agrees_on_file(path, empty)
    from bertkit.infer.quantize import quantize_int8, save_int8

    save_int8(quantize_int8(Predictor.from_pretrained(path, PredictorSettings(backend="torch")).float_model()),
              tmp_path / "q", tokenizer=tok)
    with pytest.raises(ValueError, match="already int8"):
        int8_if_it_agrees(tmp_path / "q", TEXTS)
    with pytest.raises(ValueError, match="no int8 calibration for fill-mask models"):
        int8_if_it_agrees(save_tiny(BertForMaskedLM, tmp_path / "mlm", tok), ["a [MASK] film"])


def test_predict_and_serve_take_a_calibration_file(tmp_path, tok, monkeypatch, capsys, caplog):
    """`bertkit predict --int8-calibration FILE` and `bertkit serve --int8-calibration [NAME=]FILE`: the preset
    decides, says what it measured (predict: on stderr; serve: in the model's line), and refuses --int8 beside it,
    a missing file, or a name that is not served."""
    import uvicorn

    from bertkit.cli import main
    from bertkit.serve.app import CONFIG_ENV

    path = save_tiny(BertForSequenceClassification, tmp_path / "clf", tok)
    lines = tmp_path / "in.txt"
    lines.write_text("".join(t + "\n" for t in TEXTS))
    out = tmp_path / "out.jsonl"
    assert main(["predict", "--model", str(path), "--input", str(lines), "--output", str(out), "--backend", "torch",
                 "--int8-calibration", str(lines)]) == 0
    assert f"int8 against fp32 on {len(TEXTS)} calibration inputs: share of equal labels" in caplog.text
    assert len(out.read_text().splitlines()) == len(TEXTS)
    assert main(["predict", "--model", str(path), "--input", str(lines), "--output", str(out), "--int8",
                 "--int8-calibration", str(lines)]) == 2
    assert "decides int8 itself" in capsys.readouterr().err

    ran = []
    monkeypatch.setattr(uvicorn, "run", lambda *a, **kw: ran.append(kw))
    monkeypatch.setenv(CONFIG_ENV, "{}")
    assert main(["serve", "--model", f"m={path}", "--backend", "torch", "--int8-calibration", str(lines)]) == 0
    assert "int8 against fp32 on 8 calibration inputs" in capsys.readouterr().err and ran
    for spec, needle in ((f"x={lines}", "no model named 'x' (served: m)"), (str(tmp_path / "none.txt"), "no such file")):
        assert main(["serve", "--model", f"m={path}", "--int8-calibration", spec]) == 2
        assert needle in capsys.readouterr().err
