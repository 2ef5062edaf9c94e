"""The CLI verbs, called through `main(argv)` as the console script calls them."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from bertkit import BertModel, Tokenizer
from bertkit.cli import main

LINES = ["The first line.", "", "한국어 리뷰 문장입니다", "a somewhat longer line with more words in it than the rest"]


@pytest.fixture()
def text_file(tmp_path):
    path = tmp_path / "in.txt"
    path.write_text("\n".join(LINES) + "\n", encoding="utf-8")
    return path


def test_help_for_every_verb(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    for verb in ("tokenize", "encode", "vocab"):
        with pytest.raises(SystemExit) as e:
            main([verb, "--help"])
        assert e.value.code == 0
    assert "--max-length" in capsys.readouterr().out


def test_flags_and_defaults_come_from_the_config_dataclasses():
    """One source for every default: a flag given nowhere else keeps its dataclass field's (or function
    parameter's) default, and the overriding flags show the value they override."""
    import dataclasses

    from bertkit.cli import build_parser
    from bertkit.infer.batchio import encode_file
    from bertkit.infer.predictor import BACKENDS, PredictorSettings
    from bertkit.train.finetune import FinetuneConfig

    def parse(*argv):
        return vars(build_parser([argv[0]]).parse_args(list(argv)))

    def actions(verb):
        sub = next(a for a in build_parser([verb])._actions if a.dest == "verb").choices[verb]
        return {a.dest: a for a in sub._actions}

    args = parse("predict", "--model", "m", "--input", "i", "--output", "o")
    settings = PredictorSettings()
    for f in ("batch_size", "max_length", "threads", "backend", "int8"):
        assert args[f] == getattr(settings, f), f
    assert tuple(actions("predict")["backend"].choices) == BACKENDS
    args = parse("encode", "--model", "m", "--input", "i", "--output", "o")
    import inspect

    for name in ("batch_size", "threads", "layers", "max_length"):
        assert args[name] == inspect.signature(encode_file).parameters[name].default, name
    # finetune: flags left out leave the config's (and the task's) values; help shows fine-tuning's defaults
    finetune = actions("finetune")
    cfg = FinetuneConfig()
    for name in ("epochs", "batch_size", "dropout", "lr", "warmup", "doc_stride", "null_threshold"):
        assert finetune[name].default is None, name
    for name, value in (("epochs", cfg.epochs), ("lr", cfg.train.lr), ("warmup", cfg.train.warmup),
                        ("doc_stride", cfg.qa.doc_stride)):
        assert f"(default {value})" in finetune[name].help, name
    assert finetune["init"].default == cfg.init and finetune["lr"].type is float
    assert {f.name for f in dataclasses.fields(cfg.qa)} >= {"doc_stride", "max_query_length", "max_answer_length"}


def test_tokenize(tmp_path, text_file, minilm_dir):
    out = tmp_path / "out.jsonl"
    assert main(["tokenize", "--model", str(minilm_dir), "--input", str(text_file), "--output", str(out),
                 "--max-length", "8"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    tok = Tokenizer.from_pretrained(minilm_dir)
    assert len(rows) == len(LINES)
    for row, line in zip(rows, LINES):
        enc = tok.encode(line, max_length=8)
        assert row == {"input_ids": enc.ids, "token_type_ids": enc.type_ids, "offsets": [list(o) for o in enc.offsets]}
    assert rows[1]["input_ids"] == [101, 102]  # an empty line is a valid, empty text


def test_tokenize_pairs_and_bad_lines(tmp_path, minilm_dir, capsys):
    src, out = tmp_path / "pairs.txt", tmp_path / "out.jsonl"
    src.write_text("a question\tsome context\nsecond\tpair\n", encoding="utf-8")
    assert main(["tokenize", "--model", str(minilm_dir), "--input", str(src), "--output", str(out), "--pairs"]) == 0
    first = json.loads(out.read_text().splitlines()[0])
    assert first["token_type_ids"] == [0, 0, 0, 0, 1, 1, 1]
    before = out.read_bytes()
    src.write_text("fine\tpair\nno tab on this line\n", encoding="utf-8")
    assert main(["tokenize", "--model", str(minilm_dir), "--input", str(src), "--output", str(out), "--pairs"]) == 2
    assert "pairs.txt: line 2: expected 'text<TAB>text_pair', found 1" in capsys.readouterr().err
    assert out.read_bytes() == before  # a failed run leaves the previous output untouched
    src.write_bytes(b"good line\n\xff\xfe broken\n")
    assert main(["tokenize", "--model", str(minilm_dir), "--input", str(src), "--output", str(out)]) == 2
    assert "pairs.txt: line 2: not valid UTF-8" in capsys.readouterr().err
    assert main(["tokenize", "--model", str(tmp_path / "nowhere"), "--input", str(src), "--output", str(out)]) == 2
    assert "nowhere: no such directory" in capsys.readouterr().err


def test_encode_ragged_and_padded(tmp_path, text_file, minilm_dir):
    ragged, padded = tmp_path / "r.npz", tmp_path / "p.npz"
    assert main(["encode", "--model", str(minilm_dir), "--input", str(text_file), "--output", str(ragged),
                 "--batch-size", "2"]) == 0
    assert main(["encode", "--model", str(minilm_dir), "--input", str(text_file), "--output", str(padded),
                 "--padded", "--layers", "all"]) == 0
    r, p = np.load(ragged), np.load(padded)
    tok, model = Tokenizer.from_pretrained(minilm_dir), BertModel.from_pretrained(minilm_dir)
    lengths = [len(tok.encode(line)) for line in LINES]
    assert r["lengths"].tolist() == p["lengths"].tolist() == lengths
    assert r["last_hidden_state"].shape == (sum(lengths), 384) and r["offsets"][-1] == sum(lengths)
    assert p["last_hidden_state"].shape == (4, max(lengths), 384)
    assert p["hidden_states"].shape == (7, 4, max(lengths), 384)
    assert p["attention_mask"].sum(1).tolist() == lengths
    assert r["pooler_output"].shape == (4, 384)
    with torch.inference_mode():
        for i, line in enumerate(LINES):  # each line alone, no padding: the batched file must agree
            one = model(**tok.batch([line]))
            rows = r["last_hidden_state"][r["offsets"][i]: r["offsets"][i + 1]]
            np.testing.assert_allclose(rows, one.last_hidden_state[0].numpy(), atol=1e-5)
            np.testing.assert_allclose(p["last_hidden_state"][i, : lengths[i]], rows, atol=1e-5)
            np.testing.assert_allclose(r["pooler_output"][i], one.pooler_output[0].numpy(), atol=1e-5)
    np.testing.assert_allclose(p["hidden_states"][-1], p["last_hidden_state"], atol=1e-6)


def test_vocab_verb(tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(["영화가 정말 재미있었다", "the movie was great fun"] * 100) + "\n", encoding="utf-8")
    out = tmp_path / "vocab"
    assert main(["vocab", "--corpus", str(corpus), "--size", "120", "--out", str(out), "--min-frequency", "1"]) == 0
    printed = capsys.readouterr().out
    assert "[UNK] rate" in printed and "tokens/line" in printed
    report = json.loads((out / "vocab_report.json").read_text())
    assert report["vocab_size"] == len((out / "vocab.txt").read_text().splitlines()) <= 120
    assert Tokenizer.from_pretrained(out).tokenize("영화") == ["영화"]
    corpus.write_bytes(b"fine\n\xc3\x28 broken\n")
    assert main(["vocab", "--corpus", str(corpus), "--size", "50", "--out", str(tmp_path / "v2")]) == 2
    assert "corpus.txt: line 2: not valid UTF-8" in capsys.readouterr().err
    corpus.write_text("\n\n")
    assert main(["vocab", "--corpus", str(corpus), "--size", "50", "--out", str(tmp_path / "v3")]) == 2
    assert "no text to learn from" in capsys.readouterr().err


def test_vocab_verb_truncated_gzip(tmp_path, capsys):
    import gzip

    corpus = tmp_path / "corpus.txt.gz"
    data = gzip.compress(("the movie was great fun\n" * 20000).encode())
    corpus.write_bytes(data[: len(data) // 2])
    assert main(["vocab", "--corpus", str(corpus), "--size", "50", "--out", str(tmp_path / "v")]) == 2
    err = capsys.readouterr().err
    assert "corpus.txt.gz: line" in err and "cannot be read" in err
    assert not (tmp_path / "v").exists()
