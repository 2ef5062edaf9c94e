"""Checkpoint loading and saving: name mapping, reports, strictness, atomic writes, and clear errors."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch.testing import assert_close

from bertkit import (BertConfig, BertForPreTraining, BertForQuestionAnswering, BertForSequenceClassification,
                     BertModel, CheckpointError, ConfigError, load_model)

TINY = dict(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=24,
            max_position_embeddings=32)


def saved(model, path):
    model.save_pretrained(path)
    return path


def ids():
    return torch.tensor([[2, 7, 9, 11, 3]])


def test_round_trip_keeps_every_tensor(tmp_path):
    model = BertForPreTraining(BertConfig(**TINY)).eval()
    again = BertForPreTraining.from_pretrained(saved(model, tmp_path))
    for (k, a), (k2, b) in zip(model.state_dict().items(), again.state_dict().items()):
        assert k == k2
        assert torch.equal(a, b), k
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["config.json", "model.safetensors"]  # no temporary files left behind
    stored = load_file(tmp_path / "model.safetensors")
    assert "cls.predictions.decoder.weight" not in stored and "cls.predictions.bias" in stored  # tied: once
    assert json.loads((tmp_path / "config.json").read_text())["architectures"] == ["BertForPreTraining"]


def test_legacy_names_prefix_and_pytorch_bin(tmp_path):
    model = BertModel(BertConfig(**TINY)).eval()
    legacy = {}
    for k, v in model.state_dict().items():
        k = k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta")
        legacy["bert." + k] = v.clone()
    legacy["bert.embeddings.position_ids"] = torch.arange(32)[None]  # an old buffer
    torch.save(legacy, tmp_path / "pytorch_model.bin")
    BertConfig(**TINY).save(tmp_path / "config.json")
    loaded = BertModel.from_pretrained(tmp_path)
    assert loaded.load_report.renamed > 0
    with torch.no_grad():
        assert_close(loaded(ids()).last_hidden_state, model(ids()).last_hidden_state)


def test_encoder_into_head_reports_new_head(tmp_path):
    BertModel(BertConfig(**TINY)).save_pretrained(tmp_path)  # bare keys, no `bert.` prefix
    clf = BertForSequenceClassification.from_pretrained(tmp_path, num_labels=3)
    assert clf.load_report.newly_initialized == ["classifier.weight", "classifier.bias"]
    assert clf.classifier.weight.shape == (3, 16)
    qa = BertForQuestionAnswering.from_pretrained(tmp_path)
    assert sorted(qa.load_report.unused) == ["bert.pooler.dense.bias", "bert.pooler.dense.weight"]
    assert qa.load_report.newly_initialized == ["qa_outputs.weight", "qa_outputs.bias"]


def test_pretraining_into_classifier_reports_unused_heads(tmp_path, caplog):
    BertForPreTraining(BertConfig(**TINY)).save_pretrained(tmp_path)
    with caplog.at_level("WARNING"):
        clf = BertForSequenceClassification.from_pretrained(tmp_path)
    assert set(clf.load_report.unused) == {"cls.predictions.bias", "cls.predictions.transform.dense.weight",
                                           "cls.predictions.transform.dense.bias",
                                           "cls.predictions.transform.LayerNorm.weight",
                                           "cls.predictions.transform.LayerNorm.bias",
                                           "cls.seq_relationship.weight", "cls.seq_relationship.bias"}
    assert "newly initialised" in caplog.text and "classifier.weight" in caplog.text
    encoder = BertModel.from_pretrained(tmp_path)  # the head model's file into a bare encoder
    assert "cls.seq_relationship.weight" in encoder.load_report.unused


def test_load_model_picks_the_architecture(tmp_path):
    BertForQuestionAnswering(BertConfig(**TINY)).save_pretrained(tmp_path)
    assert type(load_model(tmp_path)).__name__ == "BertForQuestionAnswering"


def test_real_minilm_has_no_surprises(minilm_dir):
    model = BertModel.from_pretrained(minilm_dir)
    assert model.load_report.newly_initialized == [] and model.load_report.unused == []


# ---- errors -------------------------------------------------------------------------------------------------------
def test_missing_directory_and_files(tmp_path):
    with pytest.raises(CheckpointError, match="no such directory"):
        BertModel.from_pretrained(tmp_path / "nope")
    with pytest.raises(ConfigError, match=r"config.json: file not found"):
        BertModel.from_pretrained(tmp_path)
    BertConfig(**TINY).save(tmp_path / "config.json")
    with pytest.raises(CheckpointError, match=r"no weights found \(looked for model.safetensors"):
        BertModel.from_pretrained(tmp_path)


def test_malformed_config_names_file_line_and_field(tmp_path):
    (tmp_path / "config.json").write_text('{\n  "hidden_size": 16,\n  "num_attention_heads": 3\n  oops\n}')
    with pytest.raises(ConfigError, match=r"config.json: malformed JSON at line 4"):
        BertModel.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({**TINY, "num_attention_heads": 3}))
    with pytest.raises(ConfigError, match=r"config.json: field 'hidden_size' = 16: must be divisible"):
        BertModel.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({**TINY, "hidden_act": "tanh"}))
    with pytest.raises(ConfigError, match=r"config.json: field 'hidden_act'"):
        BertModel.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({**TINY, "model_type": "gpt2"}))
    with pytest.raises(ConfigError, match=r"field 'model_type'"):
        BertModel.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text("[1, 2]")
    with pytest.raises(ConfigError, match=r"config.json: expected a JSON object"):
        BertModel.from_pretrained(tmp_path)


def test_wrong_shape_names_file_and_key(tmp_path):
    saved(BertModel(BertConfig(**TINY)), tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    state["encoder.layer.1.intermediate.dense.weight"] = torch.zeros(25, 16)
    save_file(state, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"model.safetensors: key 'encoder.layer.1.intermediate.dense.weight' "
                                              r"has shape \(25, 16\) in the file but \(24, 16\) in the model"):
        BertModel.from_pretrained(tmp_path)


def test_unknown_and_missing_keys_are_listed(tmp_path):
    saved(BertModel(BertConfig(**TINY)), tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    state["encoder.layer.0.adapter.weight"] = torch.zeros(2)
    del state["encoder.layer.1.output.dense.bias"]
    save_file(state, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError) as err:
        BertModel.from_pretrained(tmp_path)
    msg = str(err.value)
    assert "model.safetensors" in msg and "missing encoder weights: encoder.layer.1.output.dense.bias" in msg
    assert "unknown keys (not part of any BERT class): encoder.layer.0.adapter.weight" in msg
    lenient = BertModel.from_pretrained(tmp_path, strict=False)
    assert "encoder.layer.1.output.dense.bias" in lenient.load_report.newly_initialized
    assert "encoder.layer.0.adapter.weight" in lenient.load_report.unused


def test_corrupt_weights_file(tmp_path):
    saved(BertModel(BertConfig(**TINY)), tmp_path)
    data = (tmp_path / "model.safetensors").read_bytes()
    (tmp_path / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="model.safetensors: not a readable safetensors file"):
        BertModel.from_pretrained(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    (tmp_path / "pytorch_model.bin").write_bytes(b"not a pickle at all")
    with pytest.raises(CheckpointError, match="pytorch_model.bin: not a readable PyTorch weights file"):
        BertModel.from_pretrained(tmp_path)


def test_pickled_code_is_refused(tmp_path):
    """weights_only=True: a .bin that carries arbitrary objects is refused, never executed."""
    BertConfig(**TINY).save(tmp_path / "config.json")
    torch.save({"x": shutil.rmtree}, tmp_path / "pytorch_model.bin")  # a function, pickled by reference
    with pytest.raises(CheckpointError, match="pytorch_model.bin: not a readable PyTorch weights file"):
        BertModel.from_pretrained(tmp_path)


def test_failed_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    model = BertModel(BertConfig(**TINY))
    saved(model, tmp_path)
    before = (tmp_path / "model.safetensors").read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr("bertkit.checkpoint.save_file", boom)
    with pytest.raises(OSError, match="disk full"):
        BertModel(BertConfig(**TINY)).save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]
