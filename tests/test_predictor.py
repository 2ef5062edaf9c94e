"""The Predictor: input order kept across length batching, long texts in windows, errors for the wrong family."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from bertkit import BertConfig, BertForSequenceClassification, BertModel, Tokenizer
from bertkit.infer.predictor import Predictor, PredictorSettings


@pytest.fixture(scope="module")
def tok(minilm_dir):
    return Tokenizer.from_pretrained(minilm_dir)


def tiny(cls, num_labels: int = 2):
    torch.manual_seed(0)
    cfg = BertConfig.named("tiny", max_position_embeddings=64)
    cfg.num_labels = num_labels
    return cls(cfg).eval()


def test_classify_keeps_order_and_matches_one_at_a_time(tok):
    model = tiny(BertForSequenceClassification, num_labels=3)
    texts = ["a", "a much longer sentence about films and music", "", "mid length text here", "좋은 영화"]
    together = Predictor(model, tok, PredictorSettings(batch_size=2)).classify(texts)
    alone = [Predictor(model, tok).classify([t])[0] for t in texts]
    for a, b in zip(together, alone):
        assert a["label"] == b["label"]
        assert np.allclose(list(a["probs"].values()), list(b["probs"].values()), atol=1e-5)
        assert sum(a["probs"].values()) == pytest.approx(1.0)
    assert set(together[0]["probs"]) == {"LABEL_0", "LABEL_1", "LABEL_2"}


def test_long_texts_are_read_in_windows_and_pairs_truncated(tok):
    model = tiny(BertForSequenceClassification, num_labels=2)
    p = Predictor(model, tok)
    long_text = " ".join(f"word{i}" for i in range(300))  # far beyond 64 positions
    (r,) = p.classify([long_text])
    assert r["windows"] > 2 and "truncated" not in r
    (short,) = p.classify(["short"])
    assert "windows" not in short and "truncated" not in short
    (pair,) = p.classify([long_text], ["a second text"])
    assert pair["truncated"] is True


def test_regression_and_family_errors(tok):
    reg = Predictor(tiny(BertForSequenceClassification, num_labels=1), tok)
    assert reg.family == "regression" and set(reg.classify(["x"])[0]) == {"score"}
    with pytest.raises(ValueError, match="this model does regression, not question answering"):
        reg.answer(["q"], ["c"])
    enc = Predictor(tiny(BertModel), tok)
    v = enc.embed(["one", "two words", ""], normalize=True)
    assert v.shape == (3, 128) and np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    with pytest.raises(ValueError, match="not classification"):
        enc.classify(["x"])


def test_two_hundred_line_vocab_for_a_30522_row_embedding_is_refused(tmp_path, tok):
    """The issue's reproduction: a 200-line vocab.txt for a 30,522-row embedding (0.951 -> 0.867, no word)."""
    from bertkit.tokenizer import TokenizerError, VocabularyWarning

    src = tmp_path / "m"
    tiny(BertForSequenceClassification).save_pretrained(src, tokenizer=tok)
    Predictor.from_pretrained(src)  # the pair as saved loads
    (src / "tokenizer.json").unlink()
    lines = (src / "vocab.txt").read_text(encoding="utf-8").splitlines()
    (src / "vocab.txt").write_text("\n".join(lines[:200]) + "\n", encoding="utf-8")
    with pytest.raises(TokenizerError, match=r"m: the tokenizer has 200 tokens for the model's 30522 embedding rows "
                                             r"\(under 90 %\)"):
        Predictor.from_pretrained(src)
    # a table padded beyond the vocabulary (common, transformers accepts it) loads with a named warning
    (src / "vocab.txt").write_text("\n".join(lines[:30500]) + "\n", encoding="utf-8")
    with pytest.warns(VocabularyWarning, match="the last 22 rows are never used"):
        Predictor.from_pretrained(src)
    # ids beyond the embedding rows are an error
    (src / "vocab.txt").write_text("\n".join(lines + ["extra1", "extra2"]) + "\n", encoding="utf-8")
    with pytest.raises(TokenizerError, match=r"ids up to 30523 but the model's embedding has 30522 rows"):
        Predictor.from_pretrained(src)


def test_auto_backend_runs_onnx_where_the_head_exports_and_says_why(tmp_path, tok, monkeypatch):
    """The default (`backend="auto"`) is the fastest engine installed: ONNX Runtime for a head with an ONNX graph,
    PyTorch for fill-mask, an int8 directory, or without onnxruntime; `describe()` says which and why, and the
    answers are those of the PyTorch model."""
    import importlib.util

    from bertkit import BertForMaskedLM
    from bertkit.infer.quantize import quantize_int8, save_int8

    pytest.importorskip("onnxruntime")
    tiny(BertForSequenceClassification, num_labels=3).save_pretrained(tmp_path / "clf", tokenizer=tok)
    texts = ["a fine film", "좋은 영화", "a much longer sentence about films and music"]
    auto = Predictor.from_pretrained(tmp_path / "clf")
    torch_ = Predictor.from_pretrained(tmp_path / "clf", PredictorSettings(backend="torch"))
    assert auto.settings.backend == "onnx" and not isinstance(auto.model, torch.nn.Module)
    assert auto.describe().startswith("onnx (ONNX Runtime") and "fp32; auto:" in auto.describe()
    assert torch_.describe().startswith("torch (PyTorch") and "asked for" in torch_.describe()
    for a, b in zip(auto.classify(texts), torch_.classify(texts)):
        assert a["label"] == b["label"]
        np.testing.assert_allclose(list(a["probs"].values()), list(b["probs"].values()), atol=1e-5)
    tiny(BertForMaskedLM).save_pretrained(tmp_path / "mlm", tokenizer=tok)
    mlm = Predictor.from_pretrained(tmp_path / "mlm")
    assert mlm.settings.backend == "torch" and "fill-mask has no ONNX graph" in mlm.describe()
    save_int8(quantize_int8(tiny(BertForSequenceClassification)), tmp_path / "q", tokenizer=tok)
    q = Predictor.from_pretrained(tmp_path / "q")
    assert q.settings.backend == "torch" and "int8" in q.describe() and "quantize" in q.describe()
    # no writable cache for the export: the default falls back to PyTorch and says why; by name it is an error
    cache = os.environ.get("BERTKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("BERTKIT_CACHE", str(tmp_path / "clf" / "config.json" / "cache"))
    fallback = Predictor.from_pretrained(tmp_path / "clf")
    assert fallback.settings.backend == "torch" and "no ONNX export" in fallback.describe()
    with pytest.raises(ValueError, match="cannot write the ONNX cache"):
        Predictor.from_pretrained(tmp_path / "clf", PredictorSettings(backend="onnx"))
    monkeypatch.setenv("BERTKIT_CACHE", cache)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name, *a))
    without = Predictor.from_pretrained(tmp_path / "clf")
    assert without.settings.backend == "torch" and "onnxruntime not installed" in without.describe()
    with pytest.raises(ValueError, match="backend 'tpu': choose one of auto, torch, onnx"):
        Predictor.from_pretrained(tmp_path / "clf", PredictorSettings(backend="tpu"))


def test_explain_and_task_model_embeddings_on_the_onnx_default(tmp_path, tok):
    """Explanations (gradients) and a task model's sentence vectors (its encoder alone) cannot come from the ONNX
    graph: the float PyTorch model of the same directory is read on first use, so the default backend loses
    neither. An int8 directory has no float model to read: a clear error."""
    from bertkit.infer.quantize import quantize_int8, save_int8

    pytest.importorskip("onnxruntime")
    tiny(BertForSequenceClassification, num_labels=2).save_pretrained(tmp_path / "clf", tokenizer=tok)
    auto = Predictor.from_pretrained(tmp_path / "clf")
    torch_ = Predictor.from_pretrained(tmp_path / "clf", PredictorSettings(backend="torch"))
    assert auto.settings.backend == "onnx" and auto.has_float_model()
    text = "A gorgeous film. The plot drags."
    got, want = auto.explain(text), torch_.explain(text)
    assert got["label"] == want["label"] and [w["text"] for w in got["words"]] == [w["text"] for w in want["words"]]
    np.testing.assert_allclose([w["score"] for w in got["words"]], [w["score"] for w in want["words"]], atol=1e-5)
    np.testing.assert_allclose(auto.embed(["one", "two words"]), torch_.embed(["one", "two words"]), atol=1e-6)
    save_int8(quantize_int8(tiny(BertForSequenceClassification)), tmp_path / "q", tokenizer=tok)
    q = Predictor.from_pretrained(tmp_path / "q")
    assert not q.has_float_model()
    with pytest.raises(ValueError, match="needs the float PyTorch model"):
        q.explain(text)


def test_embedding_a_task_model_on_the_onnx_default_stays_off_onednn(tmp_path, tok, monkeypatch):
    """A task model's sentence vectors come from the float PyTorch model even on the ONNX default; the bulk job
    kept oneDNN on there (its switch looked at the backend only), and oneDNN keeps state per input shape: the
    teacher's embeddings grew with every new batch shape (benchmarks/memory.py --shapes). Now off, same vectors."""
    import json

    from bertkit.apps.embed import embed_corpus

    pytest.importorskip("onnxruntime")
    tiny(BertForSequenceClassification, num_labels=2).save_pretrained(tmp_path / "clf", tokenizer=tok)
    texts = ["one", "two words", "a sentence of several more words"] * 3
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    seen, forward = [], BertModel.forward

    def record(self, *args, **kwargs):
        seen.append(torch.backends.mkldnn.enabled)
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(BertModel, "forward", record)
    vectors = embed_corpus(tmp_path / "clf", [corpus], tmp_path / "vectors", progress=False)
    assert seen and not any(seen) and torch.backends.mkldnn.enabled
    want = Predictor.from_pretrained(tmp_path / "clf", PredictorSettings(backend="torch")).embed(texts)
    np.testing.assert_allclose(vectors.dequantize(0, len(texts)), want, atol=1e-5)


def test_onnx_batches_end_before_mostly_padding(tok):
    """ONNX Runtime computes every padded position (PyTorch skips them), so on that backend a batch of rows sorted
    by length ends before the row that would make more than a third of it padding (beyond four rows): a server's
    micro-batch of mixed lengths ran 1.2x faster so (benchmarks/RESULTS.md, issue 16). PyTorch keeps one batch."""
    from dataclasses import replace

    p = Predictor(tiny(BertModel), tok, PredictorSettings(batch_size=32))
    rows = [([1] * n, [0] * n) for n in (5, 5, 5, 5, 5, 5, 20, 20, 21)]
    order = list(range(len(rows)))
    assert [len(b) for b in p._batches(order, rows)] == [9]
    p.settings = replace(p.settings, backend="onnx")
    assert [len(b) for b in p._batches(order, rows)] == [6, 3]
    assert [len(b) for b in p._batches(order[:3] + order[6:], rows)] == [4, 2]  # four rows always go together
    p.settings = replace(p.settings, max_tokens=40)  # and the token budget still holds
    assert all(len(b) * len(rows[b[-1]][0]) <= 40 or len(b) == 1 for b in p._batches(order, rows))


def test_integrated_gradients_are_complete_on_real_weights(minilm_dir, tok):
    """IG's attributions sum to F(input) - F(baseline) (Sundararajan et al.'s completeness) within 1 % on
    all-MiniLM-L6-v2's body under a seeded classifier head; the difference is the model's own, computed apart."""
    torch.manual_seed(0)
    model = BertForSequenceClassification.from_pretrained(minilm_dir, num_labels=2).eval()
    p = Predictor(model, tok)
    text = "A gorgeous, moving film. The plot drags in the middle, sadly."
    for baseline, fill in (("mask", tok.mask_id), ("pad", tok.pad_id)):
        r = p.explain(text, label="LABEL_1", method="integrated gradients", steps=64, baseline=baseline)
        assert r["method"] == "integrated gradients" and r["label"] == "LABEL_1"
        enc = tok.encode(text)
        ids = torch.tensor([enc.ids])
        base = torch.where((ids == tok.cls_id) | (ids == tok.sep_id), ids, torch.full_like(ids, fill))
        with torch.inference_mode():
            f = model(ids).logits[0, 1] - model(base).logits[0, 1]
        assert r["difference"] == pytest.approx(float(f), abs=1e-4)
        assert abs(r["delta"]) <= 0.01 * abs(r["difference"]) and r["delta_share"] <= 0.01
        assert max(abs(w["score"]) for w in r["words"]) == pytest.approx(1.0)
        assert any(w["score"] < 0 for w in r["words"])  # signed, unlike gradient x input
    assert all(w["score"] >= 0 for w in p.explain(text)["words"])
    with pytest.raises(ValueError, match="method 'lime': choose one of gradient x input, integrated gradients"):
        p.explain(text, method="lime")
    with pytest.raises(ValueError, match="baseline 'blur'"):
        p.explain(text, method="integrated gradients", baseline="blur")
    with pytest.raises(ValueError, match="label 'positive': the model's labels are LABEL_0, LABEL_1"):
        p.explain(text, label="positive")


def test_pair_explanations_name_the_words_of_each_side(minilm_dir, tok):
    """A pair's integrated gradients are complete like a single text's, and every word says its side, with offsets
    into that side's own text."""
    torch.manual_seed(0)
    model = BertForSequenceClassification.from_pretrained(minilm_dir, num_labels=3).eval()
    p = Predictor(model, tok)
    a, b = "A man is playing a guitar on stage.", "Someone performs music for a crowd."
    r = p.explain(a, label="LABEL_2", method="integrated gradients", steps=64, pair=b)
    enc = tok.encode(a, b)
    ids, types = torch.tensor([enc.ids]), torch.tensor([enc.type_ids])
    base = torch.where((ids == tok.cls_id) | (ids == tok.sep_id), ids, torch.full_like(ids, tok.pad_id))
    with torch.inference_mode():
        f = model(ids, token_type_ids=types).logits[0, 2] - model(base, token_type_ids=types).logits[0, 2]
    assert r["difference"] == pytest.approx(float(f), abs=1e-4) and r["delta_share"] <= 0.01
    assert "sentences" not in r
    for side, text in ((0, a), (1, b)):
        words = [w for w in r["words"] if w["side"] == side]
        assert [w["text"] for w in words] == [text[w["start"]:w["end"]] for w in words]
        assert [w["text"] for w in words] == text.replace(".", " .").split()
    grad = p.explain(a, pair=b)
    assert [(w["side"], w["text"]) for w in grad["words"]] == [(w["side"], w["text"]) for w in r["words"]]


def test_an_answer_is_explained_by_words_of_the_passage_and_the_question(minilm_dir, tok):
    """explain_answer attributes the answer's start + end logit (the model's own answer, in the window that holds
    it): IG complete against that sum computed apart; question words are side 0, passage words side 1."""
    from bertkit.heads import BertForQuestionAnswering

    torch.manual_seed(0)
    model = BertForQuestionAnswering.from_pretrained(minilm_dir).eval()
    p = Predictor(model, tok)
    question, context = "Where was the film shot?", "The film was shot in Busan. It opened in Seoul in May."
    r = p.explain_answer(question, context, method="integrated gradients", steps=64)
    answer = p.answer([question], [context])[0]
    assert {k: r[k] for k in ("answer", "start", "end")} == {k: answer[k] for k in ("answer", "start", "end")}
    enc = tok.encode(question, context)
    inside = [i for i, (o, s) in enumerate(zip(enc.offsets, enc.sequence_ids)) if s == 1 and
              answer["start"] <= o[0] and o[1] <= answer["end"] and o[1] > o[0]]
    ids, types = torch.tensor([enc.ids]), torch.tensor([enc.type_ids])
    base = torch.where((ids == tok.cls_id) | (ids == tok.sep_id), ids, torch.full_like(ids, tok.pad_id))
    with torch.inference_mode():
        out, out0 = model(ids, token_type_ids=types), model(base, token_type_ids=types)
        f = (out.start_logits[0, inside[0]] + out.end_logits[0, inside[-1]]
             - out0.start_logits[0, inside[0]] - out0.end_logits[0, inside[-1]])
    assert r["difference"] == pytest.approx(float(f), abs=1e-4) and r["delta_share"] <= 0.01
    assert [w["text"] for w in r["words"] if w["side"] == 0] == ["Where", "was", "the", "film", "shot", "?"]
    passage = [w for w in r["words"] if w["side"] == 1]
    assert [w["text"] for w in passage] == context.replace(".", " .").split()
    assert all(context[w["start"]:w["end"]] == w["text"] for w in passage)
    with pytest.raises(ValueError, match="this model does classification, not question answering"):
        Predictor(BertForSequenceClassification.from_pretrained(minilm_dir, num_labels=2).eval(), tok
                  ).explain_answer(question, context)
