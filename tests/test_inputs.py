"""Bounded memory on any input (issue 13, item 4): the CLI readers stream with a per-field character limit, a line
longer than what the model sees is cut to a prefix that provably gives the same tokens, or refused with its file
and line; encode and predict stream chunk by chunk. The 50 MB measurements are in benchmarks/RESULTS.md; here the
same behaviour on lines of a few MB."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from bertkit import BertConfig, BertForSequenceClassification, BertModel, Tokenizer
from bertkit import cli
from bertkit.cli import main, read_inputs
from bertkit.infer import batchio
from bertkit.infer.predictor import Predictor


@pytest.fixture(scope="module")
def tok(minilm_dir):
    return Tokenizer.from_pretrained(minilm_dir)


@pytest.fixture(scope="module")
def long_line():
    """A 2 MB line of real-looking words (the issue's 50 MB line, scaled down)."""
    words = ("the film was a quiet and gorgeous mess of ideas , and nobody in the theater cared " * 30000).split()
    return " ".join(words)[:2_000_000]


def write_lines(path, *lines):
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def test_reading_a_line_in_pieces_gives_the_same_fields(tmp_path, monkeypatch):
    raw = "좋은 영화\tgood film\r\r\nsecond\t\r\n\tlast\t line\r\nno end\twithout newline".encode("utf-8")
    (tmp_path / "in.txt").write_bytes(raw)
    whole = list(read_inputs(str(tmp_path / "in.txt"), pairs=False))
    monkeypatch.setattr(batchio, "READ_BYTES", 3)  # every line crosses pieces, some in the middle of a character
    pieces = list(read_inputs(str(tmp_path / "in.txt"), pairs=False))
    assert pieces == whole
    assert [x.text for x in whole] == ["좋은 영화\tgood film", "second\t", "\tlast\t line", "no end\twithout newline"]
    cut = list(read_inputs(str(tmp_path / "in.txt"), pairs=False, max_chars=4))
    assert [(x.text, x.cut) for x in cut][:2] == [("좋은 영", (True, False)), ("seco", (True, False))]
    (tmp_path / "pairs.txt").write_bytes("a long first side\tb\nx\ty\tz\n".encode())
    first = next(read_inputs(str(tmp_path / "pairs.txt"), pairs=True, max_chars=6))
    assert (first.text, first.pair, first.cut) == ("a long", "b", (True, False))
    with pytest.raises(cli.InputError, match=r"pairs.txt: line 2: expected 'text<TAB>text_pair', found 3"):
        list(read_inputs(str(tmp_path / "pairs.txt"), pairs=True))
    (tmp_path / "bad.txt").write_bytes(b"fine\n" + b"x" * 10 + b"\xff tail\n")
    with pytest.raises(cli.InputError, match=r"bad.txt: line 2: not valid UTF-8 \(byte 10\)"):
        list(read_inputs(str(tmp_path / "bad.txt"), pairs=False))


def test_fifty_mb_line_tokenize_is_cut_to_what_max_length_keeps(tmp_path, tok, long_line, capsys):
    src = write_lines(tmp_path / "in.txt", "short one", long_line, "after it")
    out = tmp_path / "out.jsonl"
    line = next(x for x in read_inputs(str(src), pairs=False, max_chars=100_000) if x.lineno == 2)
    assert len(line.text) == 100_000 and line.cut == (True, False)  # never more than the limit in memory
    assert main(["tokenize", "--model", str(tok_dir(tok, tmp_path)), "--input", str(src), "--output", str(out),
                 "--max-length", "16", "--max-chars", "100000"]) == 0
    capsys.readouterr()
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    for row, text in zip(rows, ["short one", long_line, "after it"]):
        enc = tok.encode(text, max_length=16)  # the whole line, as the model would see it
        assert row == {"input_ids": enc.ids, "token_type_ids": enc.type_ids, "offsets": [list(o) for o in enc.offsets]}
    # every token of the line is asked for: cutting would lose them, so the line is refused, naming it
    assert main(["tokenize", "--model", str(tok_dir(tok, tmp_path)), "--input", str(src), "--output", str(out),
                 "--max-chars", "100000"]) == 2
    err = capsys.readouterr().err
    assert "in.txt: line 2: longer than --max-chars (100000 characters): tokenize keeps every token without " \
           "--max-length" in err and err.count("\n") == 1


def tok_dir(tok, tmp_path):
    d = tmp_path / "tok"
    if not d.exists():
        tok.save(d)
    return d


@pytest.mark.parametrize("kind,line", [("spaces", " " * 300_000 + "hello world"),
                                       ("zero-width", "\u200b" * 300_000 + "hello world"),
                                       ("one long word", "a" * 300_000)])
def test_fifty_mb_line_whose_cut_would_change_the_answer_is_refused(tmp_path, tok, kind, line, capsys):
    src = write_lines(tmp_path / "in.txt", "fine", line)
    out = tmp_path / "out.jsonl"
    argv = ["tokenize", "--model", str(tok_dir(tok, tmp_path)), "--input", str(src), "--output", str(out),
            "--max-length", "16"]
    assert main(argv + ["--max-chars", "100000"]) == 2
    assert "in.txt: line 2: is longer than --max-chars (100000 characters), and those do not hold the 14 tokens" \
           in capsys.readouterr().err
    assert not out.exists()
    assert main(argv) == 0  # within the default limit the line is read whole: the right answer
    assert json.loads(out.read_text().splitlines()[1])["input_ids"] == tok.encode(line, max_length=16).ids


def test_fifty_mb_pair_line_keeps_both_sides(tmp_path, tok, long_line):
    src = write_lines(tmp_path / "in.txt", long_line + "\tthe second side", "a\tb")
    out = tmp_path / "out.jsonl"
    assert main(["tokenize", "--model", str(tok_dir(tok, tmp_path)), "--input", str(src), "--output", str(out),
                 "--pairs", "--max-length", "24", "--max-chars", "50000"]) == 0
    first = json.loads(out.read_text().splitlines()[0])
    assert first["input_ids"] == tok.encode(long_line, "the second side", max_length=24).ids


def test_fifty_mb_line_encode_keeps_the_512_tokens_the_model_sees(tmp_path, minilm_dir, tok, long_line):
    src = write_lines(tmp_path / "in.txt", long_line, "a short line")
    out = tmp_path / "out.npz"
    assert main(["encode", "--model", str(minilm_dir), "--input", str(src), "--output", str(out), "--threads", "1",
                 "--max-chars", "100000"]) == 0
    r = np.load(out)
    assert r["lengths"].tolist() == [512, len(tok.encode("a short line"))]
    model = BertModel.from_pretrained(minilm_dir)
    with torch.inference_mode():
        want = model(**tok.batch([long_line], max_length=512)).last_hidden_state[0].numpy()
    np.testing.assert_allclose(r["last_hidden_state"][:512], want, atol=1e-4)


def test_fifty_mb_line_predict_classification_is_refused_embedding_is_cut(tmp_path, tok, minilm_dir, long_line,
                                                                         capsys):
    torch.manual_seed(0)
    clf = tmp_path / "clf"
    BertForSequenceClassification(BertConfig.named("tiny", max_position_embeddings=64)).save_pretrained(clf,
                                                                                                        tokenizer=tok)
    src = write_lines(tmp_path / "in.txt", "good", long_line)
    out = tmp_path / "out.jsonl"
    assert main(["predict", "--model", str(clf), "--input", str(src), "--output", str(out),
                 "--max-chars", "100000"]) == 2
    assert "in.txt: line 2: longer than --max-chars (100000 characters): classification reads the whole text in " \
           "windows" in capsys.readouterr().err
    assert main(["predict", "--model", str(minilm_dir), "--input", str(src), "--output", str(out), "--threads", "1",
                 "--max-chars", "100000"]) == 0
    got = [json.loads(x)["vector"] for x in out.read_text().splitlines()]
    want = Predictor.from_pretrained(minilm_dir).embed(["good", long_line])
    np.testing.assert_allclose(np.array(got), want, atol=1e-4)


def test_encode_streams_chunk_by_chunk_in_input_order(tmp_path, minilm_dir, monkeypatch):
    lines = ["one", "a much longer line with many more words than the others", "", "mid size line", "x y"]
    src = write_lines(tmp_path / "in.txt", *lines)
    results = {}
    for chunk in (1024, 2):
        monkeypatch.setattr(cli, "ENCODE_CHUNK", chunk)
        for padded in (False, True):
            out = tmp_path / f"{chunk}-{padded}.npz"
            assert main(["encode", "--model", str(minilm_dir), "--input", str(src), "--output", str(out),
                         "--batch-size", "2", "--layers", "all", "--threads", "1"] + ["--padded"] * padded) == 0
            results[chunk, padded] = dict(np.load(out))
    for padded in (False, True):
        a, b = results[1024, padded], results[2, padded]
        assert a.keys() == b.keys()
        for k in a:
            np.testing.assert_allclose(a[k], b[k], atol=1e-5)
    ragged, padded = results[2, False], results[2, True]
    assert padded["hidden_states"].shape[:2] == (7, 5)
    for i in range(5):  # the ragged rows of line i are the padded rows of line i
        n = ragged["lengths"][i]
        np.testing.assert_array_equal(ragged["hidden_states"][:, ragged["offsets"][i]:ragged["offsets"][i + 1]],
                                      padded["hidden_states"][:, i, :n])
        assert not padded["last_hidden_state"][i, n:].any()


def test_predict_streams_chunk_by_chunk_in_input_order(tmp_path, tok, monkeypatch):
    torch.manual_seed(0)
    clf = tmp_path / "clf"
    model = BertForSequenceClassification(BertConfig.named("tiny", max_position_embeddings=64))
    model.save_pretrained(clf, tokenizer=tok)
    lines = ["good", "bad film " * 40, "", "an ordinary line", "좋은 영화"]
    src = write_lines(tmp_path / "in.txt", *lines)
    monkeypatch.setattr(cli, "PREDICT_CHUNK", 2)
    assert main(["predict", "--model", str(clf), "--input", str(src), "--output", str(tmp_path / "o.jsonl")]) == 0
    got = [json.loads(x) for x in (tmp_path / "o.jsonl").read_text().splitlines()]
    want = Predictor.from_pretrained(clf).classify(lines)
    assert [g["label"] for g in got] == [w["label"] for w in want] and got[1]["windows"] == want[1]["windows"]
    for g, w in zip(got, want):
        assert g["probs"] == pytest.approx(w["probs"], abs=1e-5)


@pytest.mark.parametrize("verb", ["tokenize", "encode", "predict"])
def test_output_that_is_a_directory_or_unwritable_is_one_line_naming_it(tmp_path, minilm_dir, verb, capsys):
    src = write_lines(tmp_path / "in.txt", "a line")
    (tmp_path / "file").write_text("x")
    for output, why in ((tmp_path, "is a directory"), (tmp_path / "file" / "out", "cannot write here")):
        assert main([verb, "--model", str(minilm_dir), "--input", str(src), "--output", str(output)]) == 2
        err = capsys.readouterr().err
        assert f"{output}: {why}" in err and err.count("\n") == 1
