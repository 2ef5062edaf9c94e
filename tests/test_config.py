"""BertConfig: HF field names, JSON round trip that keeps unknown keys, and clear errors."""

from __future__ import annotations

import json

import pytest

from bertkit import BertConfig, ConfigError


def test_round_trip_keeps_unknown_keys(tmp_path, minilm_dir):
    original = json.loads((minilm_dir / "config.json").read_text())
    cfg = BertConfig.from_json_file(minilm_dir / "config.json")
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads) == (384, 6, 12)
    cfg.save(tmp_path / "config.json")
    again = json.loads((tmp_path / "config.json").read_text())
    assert again == original  # every key and value, `transformers_version` and `use_cache` included


def test_labels_and_num_labels():
    cfg = BertConfig(id2label={"0": "neg", "1": "pos"})
    assert cfg.num_labels == 2 and cfg.label2id == {"neg": 0, "pos": 1}
    cfg.num_labels = 3
    assert cfg.id2label == {0: "LABEL_0", 1: "LABEL_1", 2: "LABEL_2"}
    d = BertConfig.from_dict({"num_labels": 5}).to_dict()
    assert len(d["id2label"]) == 5 and "num_labels" not in d


def test_transformers_reads_our_config_and_back(tmp_path):
    transformers = pytest.importorskip("transformers")
    cfg = BertConfig.named("mini", vocab_size=1234, id2label={0: "a", 1: "b", 2: "c"})
    cfg.save(tmp_path / "config.json")
    hf = transformers.BertConfig.from_pretrained(str(tmp_path))
    assert (hf.hidden_size, hf.num_hidden_layers, hf.intermediate_size, hf.vocab_size, hf.num_labels) == \
        (256, 4, 1024, 1234, 3)
    hf.save_pretrained(str(tmp_path / "hf"))
    back = BertConfig.from_json_file(tmp_path / "hf" / "config.json")
    assert (back.hidden_size, back.num_labels, back.id2label[2]) == (256, 3, "c")


def test_errors_name_the_field(tmp_path):
    with pytest.raises(ConfigError, match="unknown size 'huge'"):
        BertConfig.named("huge")
    with pytest.raises(ConfigError, match="field 'hidden_dropout_prob'"):
        BertConfig(hidden_dropout_prob=1.5)
    with pytest.raises(ConfigError, match="field 'vocab_size'"):
        BertConfig.from_dict({"vocab_size": "many"})
    with pytest.raises(ConfigError, match="field 'position_embedding_type'"):
        BertConfig(position_embedding_type="relative_key")
    (tmp_path / "config.json").write_bytes(b'{"hidden_size": 7\xff}')
    with pytest.raises(ConfigError, match="not valid UTF-8"):
        BertConfig.from_json_file(tmp_path)
