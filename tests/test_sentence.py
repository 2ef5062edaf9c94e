"""sentence-transformers directories (bertkit.apps.sentence): read unchanged and written so that
`SentenceTransformer(dir)` reads them, vectors equal to sentence-transformers' own (<= 1e-5) in both directions: the
real all-MiniLM-L6-v2, every pooling mode with a Tanh Dense layer on a tiny random BERT, a RoBERTa-family encoder;
and bad directories named."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

st = pytest.importorskip("sentence_transformers")

from bertkit import BertConfig, BertModel, Tokenizer
from bertkit.apps.sentence import SentenceFormatError, SentenceModel
from bertkit.infer.predictor import Predictor, PredictorSettings

TOL = 1e-5
TEXTS = [
    "A man is playing a guitar.",
    "The new movie is awesome, but the popcorn was stale.",
    "오늘 서울은 맑고 기온이 크게 올라 한낮에는 초여름 날씨를 보이겠습니다.",
    "한국어 문장 임베딩 모델은 뉴스 제목의 중복을 찾는 데 쓰인다.",
    "ok",
    # longer than all-MiniLM-L6-v2's 256-token window: truncated, by both
    " ".join(["The committee reviewed the quarterly budget, the hiring plan and the new office lease in detail."]
             * 30),
]


def st_model(path):
    return st.SentenceTransformer(str(path), device="cpu")


def st_modules(hf_dir, modes, dense: bool = True, normalize: bool = True, max_seq_length: int = 64):
    """sentence-transformers' own modules over an HF encoder directory."""
    from sentence_transformers.models import Dense, Normalize, Pooling, Transformer

    transformer = Transformer(str(hf_dir), max_seq_length=max_seq_length)
    dim = transformer.get_embedding_dimension()
    modules = [transformer, Pooling(dim, pooling_mode=modes[0] if len(modes) == 1 else tuple(modes))]
    if dense:
        modules.append(Dense(dim * len(modes), 16, activation_function=torch.nn.Tanh()))
    if normalize:
        modules.append(Normalize())
    return st.SentenceTransformer(modules=modules, device="cpu")


def test_minilm_reads_unchanged_and_saves_back(minilm_dir, tmp_path):
    ours = SentenceModel.from_pretrained(minilm_dir)
    theirs = st_model(minilm_dir)
    assert ours.max_seq_length == theirs.max_seq_length == 256
    assert len(ours.tokenizer.encode(TEXTS[-1])) > 256  # the long text really is cut
    assert ours.head.modes == ("mean",) and ours.head.normalizes and ours.dimension == 384
    expected = theirs.encode(TEXTS, batch_size=4)
    got = ours.encode(TEXTS, batch_size=4)
    assert got.shape == (len(TEXTS), 384) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=TOL)
    # batch size and order do not change a vector (the Predictor sorts by length and pads per batch)
    np.testing.assert_allclose(ours.encode(TEXTS[::-1], batch_size=1)[::-1], expected, atol=TOL)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-6)

    ours.save(tmp_path / "out")
    back = st_model(tmp_path / "out")
    assert back.max_seq_length == 256
    assert [type(m).__name__ for m in back] == ["Transformer", "Pooling", "Normalize"]
    np.testing.assert_allclose(back.encode(TEXTS, batch_size=4), expected, atol=TOL)
    # and bertkit reads its own output again
    np.testing.assert_allclose(SentenceModel.from_pretrained(tmp_path / "out").encode(TEXTS), expected, atol=TOL)


def test_predictor_of_a_sentence_model(minilm_dir, tiny_dir, tmp_path):
    """SentenceModel.predictor(): a Predictor whose embed() is the directory's Pooling / Dense / Normalize in its
    max_seq_length window."""
    expected = st_model(minilm_dir).encode(TEXTS)
    predictor = SentenceModel.from_pretrained(minilm_dir).predictor()
    assert predictor.max_length == 256
    np.testing.assert_allclose(predictor.embed(TEXTS), expected, atol=TOL)
    theirs = st_modules(tiny_dir, ["max"], normalize=False)
    theirs.save(str(tmp_path / "st"))
    predictor = SentenceModel.from_pretrained(tmp_path / "st").predictor(batch_size=2)
    np.testing.assert_allclose(predictor.embed(TEXTS), theirs.encode(TEXTS), atol=TOL)
    assert predictor.embed([]).shape == (0, 16)


def test_predictor_from_pretrained_reads_modules_json(minilm_dir, tiny_dir, tmp_path):
    """Predictor.from_pretrained (hence `predict`, `serve`'s /v1/embed) on a sentence-transformers directory gives
    the model's own vectors: its pooling, Dense, Normalize and window, on both backends. (It used to mean-pool over
    512 tokens without normalising.)"""
    expected = st_model(minilm_dir).encode(TEXTS)
    predictor = Predictor.from_pretrained(minilm_dir, PredictorSettings(backend="torch"))
    assert predictor.max_length == 256
    np.testing.assert_allclose(predictor.embed(TEXTS), expected, atol=TOL)
    onnx = Predictor.from_pretrained(minilm_dir, PredictorSettings(backend="onnx"))
    np.testing.assert_allclose(onnx.embed(TEXTS), expected, atol=1e-4)
    # an explicit window wins over max_seq_length
    assert Predictor.from_pretrained(minilm_dir, PredictorSettings(max_length=64)).max_length == 64
    theirs = st_modules(tiny_dir, ["cls", "max"], normalize=False)
    theirs.save(str(tmp_path / "st"))
    got = Predictor.from_pretrained(tmp_path / "st", PredictorSettings(batch_size=2)).embed(TEXTS)
    assert got.shape == (len(TEXTS), 16)
    np.testing.assert_allclose(got, theirs.encode(TEXTS), atol=TOL)


def test_predictor_reads_an_encoder_in_a_subfolder(minilm_dir, tmp_path):
    """sentence-transformers 2's layout keeps the encoder in 0_Transformer/: the Predictor loads it from there."""
    d = tmp_path / "sub"
    SentenceModel.from_pretrained(minilm_dir).save(d)
    (d / "0_Transformer").mkdir()
    for f in d.iterdir():
        if f.is_file() and f.name not in ("modules.json", "config_sentence_transformers.json"):
            f.rename(d / "0_Transformer" / f.name)
    entries = json.loads((d / "modules.json").read_text())
    entries[0]["path"] = "0_Transformer"
    (d / "modules.json").write_text(json.dumps(entries))
    expected = st_model(minilm_dir).encode(TEXTS[:3])
    np.testing.assert_allclose(Predictor.from_pretrained(d).embed(TEXTS[:3]), expected, atol=TOL)
    np.testing.assert_allclose(st_model(d).encode(TEXTS[:3]), expected, atol=TOL)


def test_save_never_clobbers(minilm_dir, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    model = SentenceModel.from_pretrained(minilm_dir)
    with pytest.raises(ValueError, match="not empty"):
        model.save(out)
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    model.save(out, overwrite=True)
    assert not (out / "notes.txt").exists() and (out / "modules.json").exists()


@pytest.mark.parametrize("modes", [["mean"], ["cls"], ["max"], ["mean_sqrt_len_tokens"], ["weightedmean"],
                                   ["lasttoken"], ["cls", "mean"], ["max", "cls"]])
def test_each_pooling_mode_with_dense(tiny_dir, tmp_path, modes):
    """sentence-transformers' Transformer + Pooling(mode) + Dense(Tanh) + Normalize on a tiny random BERT that
    bertkit built: saved by sentence-transformers, read by bertkit; saved by bertkit, read by sentence-transformers."""
    theirs = st_modules(tiny_dir, modes)
    theirs.save(str(tmp_path / "st"))
    expected = theirs.encode(TEXTS, batch_size=3)
    assert expected.shape == (len(TEXTS), 16)

    ours = SentenceModel.from_pretrained(tmp_path / "st")
    assert ours.head.modes == tuple(modes) and ours.max_seq_length == 64 and ours.dimension == 16
    assert isinstance(ours.head.steps[0].activation, torch.nn.Tanh) and ours.head.steps[1] == "normalize"
    np.testing.assert_allclose(ours.encode(TEXTS, batch_size=2), expected, atol=TOL)

    ours.save(tmp_path / "ours")
    np.testing.assert_allclose(st_model(tmp_path / "ours").encode(TEXTS), expected, atol=TOL)


def test_dense_without_normalize_and_the_flag(tiny_dir, tmp_path):
    """No Normalize module: the vectors are not unit length, and normalize_embeddings=True normalises them as
    sentence-transformers does."""
    theirs = st_modules(tiny_dir, ["mean"], normalize=False)
    theirs.save(str(tmp_path / "st"))
    ours = SentenceModel.from_pretrained(tmp_path / "st")
    raw = ours.encode(TEXTS)
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1.0, atol=1e-3)
    np.testing.assert_allclose(raw, theirs.encode(TEXTS), atol=TOL)
    np.testing.assert_allclose(ours.encode(TEXTS, normalize_embeddings=True),
                               theirs.encode(TEXTS, normalize_embeddings=True), atol=TOL)


def test_no_modules_json_is_mean_pooling_without_normalize(tiny_dir):
    """A plain encoder directory: sentence-transformers' fallback (Transformer + mean Pooling, nothing else)."""
    ours = SentenceModel.from_pretrained(tiny_dir)
    assert ours.head.modes == ("mean",) and ours.head.steps == []
    theirs = st_model(tiny_dir)
    assert [type(m).__name__ for m in theirs] == ["Transformer", "Pooling"]
    np.testing.assert_allclose(ours.encode(TEXTS[:5]), theirs.encode(TEXTS[:5]), atol=TOL)
    # the same as the Predictor's own embeddings
    np.testing.assert_allclose(ours.encode(TEXTS[:5]), Predictor.from_pretrained(tiny_dir).embed(TEXTS[:5]),
                               atol=1e-6)


def test_roberta_family_encoder(minilm_dir, tmp_path):
    """A RoBERTa encoder (positions counted from the pad id) in a sentence-transformers directory, both ways."""
    config = BertConfig.from_dict({"model_type": "roberta", "architectures": ["RobertaModel"], "vocab_size": 30522,
                                   "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
                                   "intermediate_size": 37, "max_position_embeddings": 66, "type_vocab_size": 1,
                                   "pad_token_id": 0})
    assert config.family.model_type == "roberta"
    BertModel(config).save_pretrained(tmp_path / "hf", tokenizer=Tokenizer.from_pretrained(minilm_dir))
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["model_type"] == "roberta"
    theirs = st_modules(tmp_path / "hf", ["cls", "mean"], max_seq_length=64)
    assert type(theirs[0].auto_model).__name__ == "RobertaModel"
    theirs.save(str(tmp_path / "st"))
    expected = theirs.encode(TEXTS)
    ours = SentenceModel.from_pretrained(tmp_path / "st")
    assert ours.encoder.config.family.model_type == "roberta"
    np.testing.assert_allclose(ours.encode(TEXTS, batch_size=4), expected, atol=TOL)
    ours.save(tmp_path / "ours")
    back = st_model(tmp_path / "ours")
    assert type(back[0].auto_model).__name__ == "RobertaModel"
    np.testing.assert_allclose(back.encode(TEXTS), expected, atol=TOL)


def test_old_layout_with_do_lower_case(minilm_dir, tmp_path):
    """A directory in sentence-transformers 2's layout (boolean pooling keys, do_lower_case in
    sentence_bert_config.json) over a cased tokenizer: texts are lower-cased first, by both."""
    d = tmp_path / "old"
    BertModel(BertConfig.named("tiny", max_position_embeddings=512)).save_pretrained(
        d, tokenizer=Tokenizer.from_vocab(minilm_dir / "vocab.txt", lowercase=False))
    (d / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]))
    (d / "1_Pooling").mkdir()
    (d / "1_Pooling" / "config.json").write_text(json.dumps({
        "word_embedding_dimension": 128, "pooling_mode_cls_token": False, "pooling_mode_mean_tokens": False,
        "pooling_mode_max_tokens": True, "pooling_mode_mean_sqrt_len_tokens": False}))
    (d / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 48, "do_lower_case": True}))
    texts = ["Hello World, THE END", "hello world, the end", "Seoul 서울 KOREA"]
    ours = SentenceModel.from_pretrained(d)
    assert ours.do_lower_case and ours.max_seq_length == 48 and ours.head.modes == ("max",)
    got = ours.encode(texts)
    np.testing.assert_allclose(got[0], got[1], atol=1e-6)
    assert not np.allclose(SentenceModel(ours.encoder, ours.tokenizer).encode(texts[:2])[0],
                           SentenceModel(ours.encoder, ours.tokenizer).encode(texts[:2])[1], atol=1e-3)
    np.testing.assert_allclose(got, st_model(d).encode(texts), atol=TOL)
    np.testing.assert_allclose(Predictor.from_pretrained(d).embed(texts), got, atol=TOL)
    ours.save(tmp_path / "ours")
    assert json.loads((tmp_path / "ours" / "sentence_bert_config.json").read_text()) == {
        "max_seq_length": 48, "do_lower_case": True}
    np.testing.assert_allclose(st_model(tmp_path / "ours").encode(texts), got, atol=TOL)


# ---- bad directories ---------------------------------------------------------------------------------------------
@pytest.fixture
def st_dir(tiny_dir, tmp_path):
    st_modules(tiny_dir, ["mean"]).save(str(tmp_path / "st"))
    return tmp_path / "st"


def _edit_modules(d, fn):
    entries = json.loads((d / "modules.json").read_text())
    (d / "modules.json").write_text(json.dumps(fn(entries)))


def test_modules_json_fields_named(st_dir):
    _edit_modules(st_dir, lambda e: [{k: v for k, v in x.items() if k != "path"} if x["idx"] == 1 else x for x in e])
    with pytest.raises(SentenceFormatError, match=r"modules\.json: entry 1: missing field 'path'"):
        SentenceModel.from_pretrained(st_dir)
    _edit_modules(st_dir, lambda e: [{k: v for k, v in x.items() if k != "type"} for x in e])
    with pytest.raises(SentenceFormatError, match=r"modules\.json: entry 0: missing field 'type'"):
        SentenceModel.from_pretrained(st_dir)
    (st_dir / "modules.json").write_text('[{"type": ')
    with pytest.raises(ValueError, match=r"modules\.json: malformed"):
        SentenceModel.from_pretrained(st_dir)
    (st_dir / "modules.json").write_text('{"type": "x"}')
    with pytest.raises(SentenceFormatError, match=r"modules\.json: expected a non-empty list"):
        SentenceModel.from_pretrained(st_dir)


def test_unknown_module_type_named(st_dir):
    _edit_modules(st_dir, lambda e: e + [{"idx": 4, "name": "4", "path": "4_X",
                                          "type": "sentence_transformers.models.WordWeights"}])
    with pytest.raises(SentenceFormatError, match=r"entry 4: unknown module type "
                                                  r"'sentence_transformers\.models\.WordWeights'"):
        SentenceModel.from_pretrained(st_dir)
    _edit_modules(st_dir, lambda e: [e[0], e[2], e[1], e[3]])  # Dense before Pooling
    with pytest.raises(SentenceFormatError, match="Pooling module must follow the Transformer"):
        SentenceModel.from_pretrained(st_dir)


def test_bad_dense_and_encoder_named(st_dir):
    from safetensors.torch import load_file, save_file

    weights = st_dir / "2_Dense" / "model.safetensors"
    state = load_file(str(weights))
    save_file({**state, "linear.weight": torch.zeros(16, 7)}, str(weights))
    with pytest.raises(SentenceFormatError, match=r"2_Dense/model\.safetensors: linear\.weight has shape \(16, 7\)"):
        SentenceModel.from_pretrained(st_dir)
    save_file({"linear.weight": state["linear.weight"]}, str(weights))
    with pytest.raises(SentenceFormatError, match=r"keys missing \['linear\.bias'\]"):
        SentenceModel.from_pretrained(st_dir)
    save_file(state, str(weights))
    config = json.loads((st_dir / "2_Dense" / "config.json").read_text())
    (st_dir / "2_Dense" / "config.json").write_text(json.dumps({**config, "activation_function": "os.system"}))
    with pytest.raises(SentenceFormatError, match="activation_function 'os.system'"):
        SentenceModel.from_pretrained(st_dir)
    (st_dir / "2_Dense" / "config.json").write_text(json.dumps({**config, "out_features": "16"}))
    with pytest.raises(SentenceFormatError, match=r"2_Dense/config\.json: field 'out_features'"):
        SentenceModel.from_pretrained(st_dir)
    (st_dir / "2_Dense" / "config.json").write_text(json.dumps(config))
    from bertkit.checkpoint import CheckpointError

    encoder = load_file(str(st_dir / "model.safetensors"))
    save_file({k: v for k, v in encoder.items() if "layer.1." not in k}, str(st_dir / "model.safetensors"))
    with pytest.raises(CheckpointError, match="missing encoder weights: encoder.layer.1"):
        SentenceModel.from_pretrained(st_dir)
    save_file(encoder, str(st_dir / "model.safetensors"))
    SentenceModel.from_pretrained(st_dir)  # whole again
    shutil.rmtree(st_dir / "1_Pooling")
    with pytest.raises(ValueError, match=r"1_Pooling/config\.json: file not found"):
        SentenceModel.from_pretrained(st_dir)


def test_quantize_keeps_the_sentence_modules(minilm_dir, tmp_path):
    """`bertkit quantize` of a sentence-transformers directory used to drop modules.json: the int8 model then
    mean-pooled 512 tokens without normalising. Its output keeps the layout, so its vectors stay the model's."""
    from bertkit.cli import main

    assert main(["quantize", "--model", str(minilm_dir), "--out", str(tmp_path / "q")]) == 0
    assert (tmp_path / "q" / "modules.json").exists() and (tmp_path / "q" / "1_Pooling" / "config.json").exists()
    predictor = Predictor.from_pretrained(tmp_path / "q")
    assert predictor.max_length == 256
    got, expected = predictor.embed(TEXTS), st_model(minilm_dir).encode(TEXTS)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    assert float((got * expected).sum(1).min()) > 0.97  # int8 weights: close, not equal
