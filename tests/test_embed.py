"""`bertkit embed` and the vectors directory: the model's own vectors (sentence-transformers as the reference),
int8 / float16 error on real text, resume after a failure and after SIGKILL to the same bytes as one run, refusal of
a changed resume, named errors on bad input, bounded memory over a million lines, and the same job on Ray."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from conftest import nsmc, sst2

from bertkit.apps.embed import _write, embed_corpus, local_chunks, scan
from bertkit.apps.vectors import VectorsError, VectorsWriter, model_fingerprint, open_vectors, quantize_rows, read_meta
from bertkit.cli import main
from bertkit.infer.batchio import InputError
from bertkit.infer.predictor import Predictor, PredictorSettings
from bertkit.io import OutputError


# ---- the vectors directory -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["float32", "float16", "int8"])
def test_writer_commits_and_a_resume_cuts_what_was_not(tmp_path, dtype):
    x = np.random.default_rng(0).standard_normal((9, 6)).astype(np.float32)
    w = VectorsWriter(tmp_path / "v", 6, dtype, model={"path": "m"})
    w.append(x[:4], ["a", 2, None, {"k": [1]}])
    w.commit()
    w.append(x[4:7], ["lost"] * 3)  # appended, never committed: a crash here
    w.close()
    with pytest.raises(VectorsError, match="incomplete"):
        open_vectors(tmp_path / "v")
    partial = open_vectors(tmp_path / "v", allow_incomplete=True)
    assert partial.array.shape == (4, 6) and partial.ids == ["a", 2, None, {"k": [1]}]
    w = VectorsWriter(tmp_path / "v", 6, dtype, resume=True)
    assert w.count == 4
    w.append(x[4:], list("efghi"))
    w.finish()
    v = open_vectors(tmp_path / "v")
    assert v.ids == ["a", 2, None, {"k": [1]}, *"efghi"] and v.meta["complete"] and v.meta["count"] == 9
    plain = np.load(tmp_path / "v" / "vectors.npy", mmap_mode="r")  # the .npy alone reads in numpy
    assert plain.shape == (9, 6) and plain.dtype == np.dtype(dtype)
    tol = {"float32": 0, "float16": 2e-3, "int8": 0.02}[dtype]
    np.testing.assert_allclose(v.dequantize(), x, atol=tol * np.abs(x).max(), rtol=0)
    np.testing.assert_array_equal(v.dequantize(3, 5), v.dequantize()[3:5])


def test_int8_is_symmetric_per_row_and_within_half_a_step():
    rows = np.random.default_rng(1).standard_normal((50, 384)).astype(np.float32) * np.arange(1, 51)[:, None]
    rows[7] = 0
    q, scales = quantize_rows(rows)
    assert q.dtype == np.int8 and scales.dtype == np.float32 and scales[7] == 0
    np.testing.assert_allclose(scales, np.abs(rows).max(1) / 127, rtol=1e-6)
    assert (np.abs(q).max(1)[np.arange(50) != 7] == 127).all()
    err = np.abs(q * scales[:, None] - rows)
    assert (err <= scales[:, None] / 2 + 1e-6).all()


def test_fingerprint_sees_every_file(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "a.json").write_text("{}")
    first = model_fingerprint(tmp_path / "m")
    (tmp_path / "m" / ".cache").mkdir()
    (tmp_path / "m" / ".cache" / "x").write_text("ignored")
    assert model_fingerprint(tmp_path / "m") == first
    (tmp_path / "m" / "a.json").write_text("{ }")
    assert model_fingerprint(tmp_path / "m") != first


# ---- the model's own vectors -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def real_texts() -> list[str]:
    return sst2("dev")[:32] + nsmc("test")[:32]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, real_texts) -> list[Path]:
    """The same 96 texts split over the three formats (English SST-2, Korean NSMC)."""
    d = tmp_path_factory.mktemp("corpus")
    a, b, c = real_texts[:24], real_texts[24:44], real_texts[44:]
    (d / "a.txt").write_text("".join(t + "\n" for t in a), encoding="utf-8")
    (d / "b.jsonl").write_text("".join(json.dumps({"key": f"b{i}", "text": t}, ensure_ascii=False) + "\n"
                                       for i, t in enumerate(b)), encoding="utf-8")
    import csv

    with open(d / "c.csv", "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "key"])
        w.writerows([t, f"c{i}"] for i, t in enumerate(c))
    return [d / "a.txt", d / "b.jsonl", d / "c.csv"]


@pytest.fixture(scope="module")
def minilm_run(tmp_path_factory, minilm_dir, corpus) -> Path:
    out = tmp_path_factory.mktemp("run") / "v"
    embed_corpus(minilm_dir, corpus, out, id_field="key", chunk_size=16, batch_size=8)
    return out


def test_embed_gives_sentence_transformers_vectors(minilm_dir, corpus, minilm_run, real_texts):
    st = pytest.importorskip("sentence_transformers")
    v = open_vectors(minilm_run)
    reference = st.SentenceTransformer(str(minilm_dir), device="cpu").encode(real_texts, batch_size=16)
    np.testing.assert_allclose(v.dequantize(), reference, atol=1e-5, rtol=0)
    assert v.ids == [f"{corpus[0]}:{n}" for n in range(1, 25)] + [f"b{i}" for i in range(20)] + \
        [f"c{i}" for i in range(20)]
    meta = v.meta
    assert (meta["count"], meta["dimension"], meta["dtype"], meta["normalized"]) == (64, 384, "float32", True)
    assert meta["model"]["fingerprint"] == model_fingerprint(minilm_dir) and meta["complete"]
    assert [i["rows"] for i in meta["job"]["inputs"]] == [24, 20, 20]


def test_int8_and_float16_error_on_real_text(minilm_run, tmp_path):
    """MiniLM's vectors of real text stored as int8: cosine with float32 above 0.999; float16: above 0.99999.
    (The model is out of it: embed_corpus converts its float32 vectors in the writer, as here.)"""
    exact = open_vectors(minilm_run).dequantize()
    for dtype, floor in (("int8", 0.999), ("float16", 0.99999)):
        writer = VectorsWriter(tmp_path / dtype, exact.shape[1], dtype)
        writer.append(exact, list(range(len(exact))))
        writer.finish()
        v = open_vectors(tmp_path / dtype)
        got = v.dequantize()
        cos = (got * exact).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(exact, axis=1)
        assert cos.min() > floor, (dtype, cos.min())
        assert v.array.dtype == np.dtype(dtype)


def test_token_budget_batches_give_the_same_vectors(tiny_dir, real_texts):
    from bertkit.apps.embed import load_predictor, predictor_settings

    plain = load_predictor(tiny_dir, predictor_settings(64, 0, "torch", False, 0)).embed(real_texts)
    predictor = load_predictor(tiny_dir, predictor_settings(64, 300, "torch", False, 0))
    shapes = []
    predictor.model.register_forward_hook(lambda module, inputs, output: shapes.append(tuple(inputs[0].shape)))
    got = predictor.embed(real_texts)
    np.testing.assert_allclose(got, plain, atol=1e-5, rtol=0)
    assert sum(rows for rows, _ in shapes) == len(real_texts) and len(shapes) > 2
    for rows, longest in shapes:  # within the budget (a single row may exceed it), within the cap
        assert rows == 1 or rows * longest <= 300
        assert rows <= 64
    assert shapes[0][0] > 2 * shapes[-1][0]  # short texts share bigger batches than long ones
    with pytest.raises(ValueError, match="max_tokens -1"):
        Predictor(predictor.model, predictor.tok, PredictorSettings(max_tokens=-1))


# ---- resume --------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def lines(tmp_path_factory, real_texts) -> Path:
    path = tmp_path_factory.mktemp("lines") / "t.txt"
    path.write_text("".join(t + "\n" for t in real_texts), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def whole_run(tmp_path_factory, tiny_dir, lines) -> Path:
    out = tmp_path_factory.mktemp("whole") / "v"
    embed_corpus(tiny_dir, [lines], out, chunk_size=20, dtype="int8")
    return out


def same_files(a: Path, b: Path) -> None:
    for name in ("vectors.npy", "scales.npy", "ids.jsonl"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_resume_after_a_failure_gives_the_uninterrupted_result(tiny_dir, lines, whole_run, tmp_path, monkeypatch):
    calls = {"n": 0}
    commit = VectorsWriter.commit

    def failing(self, **kw):
        calls["n"] += 1
        if calls["n"] == 4:  # the writer's first commit, then chunks 1, 2 committed, chunk 3 fails
            raise RuntimeError("injected")
        commit(self, **kw)

    monkeypatch.setattr(VectorsWriter, "commit", failing)
    with pytest.raises(RuntimeError, match="injected"):
        embed_corpus(tiny_dir, [lines], tmp_path / "v", chunk_size=20, dtype="int8")
    monkeypatch.setattr(VectorsWriter, "commit", commit)
    assert read_meta(tmp_path / "v")["count"] == 40 and not read_meta(tmp_path / "v")["complete"]
    with pytest.raises(OutputError, match="--resume"):
        embed_corpus(tiny_dir, [lines], tmp_path / "v", dtype="int8")
    v = embed_corpus(tiny_dir, [lines], tmp_path / "v", dtype="int8", resume=True)  # chunk size: the run's
    assert v.meta["last_run"]["rows"] == 24
    same_files(tmp_path / "v", whole_run)


def test_resume_after_sigkill_mid_chunk(tiny_dir, lines, whole_run, tmp_path):
    """A process killed while appending chunk 3 (vectors written, ids not, nothing committed) resumes to the same
    bytes."""
    script = textwrap.dedent(f"""
        import os, signal
        from bertkit.apps import vectors
        from bertkit.apps.embed import embed_corpus
        append, seen = vectors.VectorsWriter.append, []
        def dying(self, v, ids):
            seen.append(1)
            if len(seen) == 3:
                self._files[0].write(b"half a chunk")
                self._files[0].flush()
                os.kill(os.getpid(), signal.SIGKILL)
            append(self, v, ids)
        vectors.VectorsWriter.append = dying
        embed_corpus({str(tiny_dir)!r}, [{str(lines)!r}], {str(tmp_path / "v")!r}, chunk_size=20, dtype="int8")
    """)
    done = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=120)
    assert done.returncode == -9, done.stderr
    assert read_meta(tmp_path / "v")["count"] == 40
    assert main(["embed", "--model", str(tiny_dir), "--input", str(lines), "--output", str(tmp_path / "v"),
                 "--dtype", "int8", "--resume"]) == 0
    same_files(tmp_path / "v", whole_run)


def test_resume_refuses_what_changed(tiny_dir, lines, whole_run, tmp_path, monkeypatch, capsys):
    import shutil

    out = tmp_path / "v"
    shutil.copytree(whole_run, out)
    with pytest.raises(OutputError, match="already complete"):
        embed_corpus(tiny_dir, [lines], out, dtype="int8", resume=True)
    meta = read_meta(out)
    meta.update(complete=False, count=20)
    (out / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(OutputError, match=r"dtype \('int8' -> 'float16'\)"):
        embed_corpus(tiny_dir, [lines], out, dtype="float16", resume=True)
    with pytest.raises(OutputError, match=r"normalize \(False -> True\)"):
        embed_corpus(tiny_dir, [lines], out, dtype="int8", normalize=True, resume=True)
    with pytest.raises(OutputError, match=r"chunk_size \(20 -> 10\)"):
        embed_corpus(tiny_dir, [lines], out, dtype="int8", chunk_size=10, resume=True)
    changed = tmp_path / "t.txt"
    changed.write_text(lines.read_text(encoding="utf-8").replace("the", "a", 1), encoding="utf-8")
    with pytest.raises(OutputError, match="the inputs"):
        embed_corpus(tiny_dir, [changed], out, dtype="int8", resume=True)
    other = tmp_path / "model"
    shutil.copytree(tiny_dir, other)
    (other / "config.json").write_text((other / "config.json").read_text() + "\n")
    with pytest.raises(OutputError, match="the model"):
        embed_corpus(other, [lines], out, dtype="int8", resume=True)
    assert main(["embed", "--model", str(tiny_dir), "--input", str(lines), "--output", str(out)]) == 2
    assert "not empty" in capsys.readouterr().err
    v = embed_corpus(tiny_dir, [lines], out, dtype="int8", overwrite=True, chunk_size=64)
    assert v.meta["complete"] and len(v) == 64


# ---- bad input -----------------------------------------------------------------------------------------------------
BAD = [
    ("a.jsonl", b'{"text": "fine"}\n{"text": oops}\n', r"a\.jsonl: line 2: not JSON"),
    ("a.jsonl", b'{"text": "fine"}\n{"body": "x"}\n', r"a\.jsonl: line 2: no field 'text'"),
    ("a.jsonl", b'{"text": "fine"}\n{"text": 3}\n', r"line 2: field 'text' is int, not a string"),
    ("a.jsonl", b'{"text": "fine"}\n{"text": " "}\n', r"line 2: empty text in field 'text'"),
    ("a.jsonl", b'["text"]\n', r"line 1: expected a JSON object"),
    ("a.txt", b"one\n\nthree\n", r"a\.txt: line 2: empty text"),
    ("a.txt", b"one\n   \n", r"a\.txt: line 2: empty text"),
    ("a.txt", b"", r"no texts to embed"),
    ("a.txt", b"one\ntw\xff\n", r"a\.txt: line 2: not valid UTF-8"),
    ("a.csv", b"title,body\nx,y\n", r"a\.csv: line 1: the header has no column 'text'"),
    ("a.csv", b"text,x\n\"a\nb\",1\nc\n", r"a\.csv: line 4: 1 fields, the header has 2"),
    ("a.csv", b"text\n", r"no texts to embed"),
    ("a.docx", b"x\n", r"a\.docx: unknown extension '\.docx'"),
]


@pytest.mark.parametrize("name,content,message", BAD, ids=[f"{n}-{m[:20]}" for n, _, m in BAD])
def test_bad_input_is_named(tmp_path, name, content, message):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(InputError, match=message):
        scan([tmp_path / name])


def test_bad_input_through_the_cli(tiny_dir, tmp_path, capsys):
    (tmp_path / "a.jsonl").write_text('{"text": "x", "id": 1}\n{"text": "y"}\n')
    assert main(["embed", "--model", str(tiny_dir), "--input", str(tmp_path / "a.jsonl"), "--id-field", "id",
                 "--output", str(tmp_path / "v")]) == 2
    assert "a.jsonl: line 2: no field 'id'" in capsys.readouterr().err
    assert not (tmp_path / "v").exists()  # refused before anything was written


def test_cli_embeds_and_says_so(tiny_dir, lines, tmp_path, capsys):
    assert main(["embed", "--model", str(tiny_dir), "--input", str(lines), "--output", str(tmp_path / "v"),
                 "--dtype", "float16", "--normalize", "--batch-size", "7"]) == 0
    assert "embedded 64 texts" in capsys.readouterr().err
    v = open_vectors(tmp_path / "v")
    assert v.normalized and v.array.dtype == np.float16
    np.testing.assert_allclose(np.linalg.norm(v.dequantize(), axis=1), 1, atol=2e-3)


def test_embed_cli_in_bf16_says_so_in_meta_and_stays_near_fp32(tiny_dir, lines, tmp_path, monkeypatch):
    openvino = pytest.importorskip("openvino")
    monkeypatch.setenv("BERTKIT_CACHE", str(tmp_path / "cache"))
    args = ["embed", "--model", str(tiny_dir), "--input", str(lines)]
    if "BF16" not in openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        assert main(args + ["--output", str(tmp_path / "b"), "--bf16"]) == 2  # no bf16 instructions: an error
        return
    assert main(args + ["--output", str(tmp_path / "f")]) == 0
    assert main(args + ["--output", str(tmp_path / "b"), "--bf16"]) == 0
    fp32, bf16 = open_vectors(tmp_path / "f"), open_vectors(tmp_path / "b")
    run = json.loads((tmp_path / "b" / "meta.json").read_text())["run"]
    assert run["backend"] == "openvino" and run["bf16"] is True
    assert "bf16" not in json.loads((tmp_path / "f" / "meta.json").read_text())["run"]
    a, b = fp32.dequantize(), bf16.dequantize()
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cos.min() > 0.999 and np.abs(a - b).max() > 0  # near fp32, and not fp32


# ---- memory --------------------------------------------------------------------------------------------------------
class _Fake:
    """A stand-in Predictor (no model): the memory test is about reading and writing."""
    tok = max_length = None

    class settings:
        backend, int8 = "torch", False

    def embed(self, texts, normalize=False):
        return np.full((len(texts), 8), len(texts[0]), dtype=np.float32)


@pytest.mark.parametrize("lines", [200_000, pytest.param(1_000_000, marks=pytest.mark.slow)])
def test_a_corpus_in_bounded_memory(tmp_path, lines):
    path = tmp_path / "big.txt"
    with open(path, "w") as f:
        f.writelines("".join(f"line {b * 10_000 + i} of the corpus\n" for i in range(10_000))
                     for b in range(lines // 10_000))
    tracemalloc.start()
    try:
        job = scan([path], chunk_size=20_000)
        writer = VectorsWriter(tmp_path / "v", 8)
        _write(writer, local_chunks(_Fake(), path, job, 0, False), job, progress=False)
        writer.finish()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    v = open_vectors(tmp_path / "v")
    assert len(v) == lines and v.ids[-1] == f"{path}:{lines}"
    assert v.array[-1, 0] == len(f"line {lines - 20_000} of the corpus")
    # one chunk of 20,000 texts and ids (~4 MB), whatever the corpus (200,000 lines: ~20 MB of str; 1 M: ~100 MB)
    assert peak < 12 * 2**20, peak / 2**20


# ---- Ray -----------------------------------------------------------------------------------------------------------
def test_ray_gives_the_same_vectors(tiny_dir, corpus, tmp_path, monkeypatch):
    """A run stopped after two chunks here and resumed on a local Ray cluster (two actors) gives the bytes of one
    uninterrupted run in this process."""
    ray = pytest.importorskip("ray")
    local = embed_corpus(tiny_dir, corpus, tmp_path / "local", id_field="key", chunk_size=16, threads=1)
    commit, calls = VectorsWriter.commit, []

    def failing(self, **kw):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        commit(self, **kw)

    monkeypatch.setattr(VectorsWriter, "commit", failing)
    with pytest.raises(KeyboardInterrupt):
        embed_corpus(tiny_dir, corpus, tmp_path / "ray", id_field="key", chunk_size=16, threads=1)
    monkeypatch.setattr(VectorsWriter, "commit", commit)
    assert read_meta(tmp_path / "ray")["count"] == 32
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        from bertkit.apps.embed_ray import embed_corpus_ray

        on_ray = embed_corpus_ray(tiny_dir, corpus, tmp_path / "ray", "auto", id_field="key", resume=True)
    finally:
        ray.shutdown()
    assert on_ray.meta["last_run"]["rows"] == 32
    assert on_ray.ids == local.ids
    np.testing.assert_array_equal(on_ray.array, local.array)
