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


@pytest.mark.parametrize("field,value,why", [
    ("max_position_embeddings", 10 ** 12, "must be at most 1,048,576"),
    ("vocab_size", 10 ** 12, "must be at most 16,777,216"),
    ("hidden_size", 0, "must be a positive integer"),
    ("num_attention_heads", -4, "must be a positive integer"),
    ("hidden_size", 129, "must be divisible by num_attention_heads"),
    ("intermediate_size", 2.5, "must be a positive integer"),
])
def test_absurd_sizes_in_config_json_are_named_before_allocation(tmp_path, field, value, why):
    """The issue's reproduction: max_position_embeddings 10^12 reached the allocator (a traceback)."""
    from bertkit import BertModel
    from bertkit.cli import main

    BertModel(BertConfig.named("tiny", vocab_size=50, max_position_embeddings=16)).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, field: value}))
    with pytest.raises(ConfigError, match=rf"config.json: field '{field}' = .*{why}"):
        BertModel.from_pretrained(tmp_path)
    (tmp_path / "in.txt").write_text("a line\n")
    assert main(["encode", "--model", str(tmp_path), "--input", str(tmp_path / "in.txt"), "--output",
                 str(tmp_path / "o.npz")]) == 2


def test_sizes_each_possible_but_together_absurd_are_refused():
    with pytest.raises(ConfigError, match=r"make [\d,]+ parameters \(\d[\d,]* GB in float32\)"):
        BertConfig(vocab_size=1 << 24, hidden_size=1 << 16, num_attention_heads=64)
