"""Near-duplicates (`bertkit.apps.duplicates`, `bertkit duplicates`): exact repeats after normalisation, paraphrase
mining against sentence-transformers and brute force, bounded memory, the CLI and its errors, the news titles."""

from __future__ import annotations

import gzip
import json
import re
import tracemalloc
import unicodedata

import numpy as np
import pytest

from bertkit.apps.duplicates import (DuplicatesError, exact_duplicates, find_duplicates, iter_pairs, normalize_text,
                                     paraphrase_mining)
from bertkit.cli import main
from conftest import need_data


def brute_force(x: np.ndarray, threshold: float) -> dict[tuple[int, int], float]:
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    s = u @ u.T
    i, j = np.nonzero(np.triu(s >= threshold, 1))
    return {(a, b): float(s[a, b]) for a, b in zip(i.tolist(), j.tolist())}


def clustered(n: int, d: int, seed: int = 0) -> np.ndarray:
    """Random vectors with near copies and exact copies (so thresholds and ties are exercised)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)).astype(np.float32)
    x[1::7] = x[0::7][: len(x[1::7])] + 0.1 * rng.standard_normal((len(x[1::7]), d)).astype(np.float32)
    x[5::11] = x[4::11][: len(x[5::11])]
    return x


# ---- exact repeats -----------------------------------------------------------------------------------------------
def test_normalize_text():
    assert normalize_text("  Seoul,  'Rain'...\tTODAY ") == "seoul rain today"
    assert normalize_text("ＡＢＣ ﬁ") == "abc fi"  # NFKC: full-width forms and ligatures
    assert normalize_text("Straße") == normalize_text("STRASSE")  # case folding, not lower()
    assert normalize_text("3.5% of 1,000") == "3.5% of 1,000"  # punctuation between digits and % stay
    assert normalize_text("3.5%") != normalize_text("35%")
    assert normalize_text("e-mail") == "e mail"
    assert normalize_text("$5 + 3") == "$5 + 3"  # symbols are not punctuation
    hangul = "한국어 뉴스: “속보” [인사]"
    assert normalize_text(hangul) == "한국어 뉴스 속보 인사"
    assert normalize_text(unicodedata.normalize("NFD", hangul)) == "한국어 뉴스 속보 인사"  # composed again
    assert normalize_text("...!") == ""


def test_exact_duplicates():
    texts = ["Hello, world!", "b", "hello world", "B.", "c", "HELLO WORLD", "", "", "b"]
    assert exact_duplicates(texts) == [[0, 2, 5], [1, 3, 8]]  # empty texts repeat nothing
    assert exact_duplicates(texts, normalize=None) == [[1, 8]]
    assert exact_duplicates(iter(texts)) == [[0, 2, 5], [1, 3, 8]]  # one pass over any iterable
    assert exact_duplicates([]) == []
    with pytest.raises(DuplicatesError, match=r"texts\[1\]"):
        exact_duplicates(["a", 3])


def test_news_titles_every_exact_repeat_found():
    with gzip.open(need_data("news", "kpf_newstrust_titles.json.gz"), "rt", encoding="utf-8") as f:
        titles = [r["title"] for r in json.load(f)]
    raw, norm = exact_duplicates(titles, normalize=None), exact_duplicates(titles)
    assert sum(len(g) - 1 for g in raw) == 262 and len(raw) == 237  # the data README's counts
    group_of = {i: k for k, g in enumerate(norm) for i in g}
    for g in raw:  # each raw repeat sits in its original's normalised group
        assert len({group_of[i] for i in g}) == 1, [titles[i] for i in g]
    assert sum(len(g) - 1 for g in norm) > 262  # plus repeats that differ in quotes, spaces, punctuation
    for g in norm:
        assert len({normalize_text(titles[i]) for i in g}) == 1


# ---- paraphrase mining over vectors ------------------------------------------------------------------------------
@pytest.mark.parametrize("top_k", [1, 4])
def test_paraphrase_mining_matches_sentence_transformers(top_k):
    torch = pytest.importorskip("torch")
    util = pytest.importorskip("sentence_transformers.util")
    x = np.random.default_rng(1).standard_normal((900, 24)).astype(np.float32)
    ours = paraphrase_mining(x, top_k=top_k, max_pairs=None, chunk_size=128, column_chunk=300)
    ref = util.paraphrase_mining_embeddings(torch.from_numpy(x), top_k=top_k, max_pairs=10**9,
                                            query_chunk_size=200, corpus_chunk_size=250)
    want = {(i, j): s for s, i, j in ref}
    assert {(i, j) for _, i, j in ours} == want.keys() and len(ours) == len(want)  # the same pairs, each once
    assert max(abs(s - want[(i, j)]) for s, i, j in ours) < 1e-5
    np.testing.assert_allclose([s for s, _, _ in ours], [s for s, _, _ in ref], atol=1e-5)  # best first
    assert all(i < j for _, i, j in ours) and len(ours) >= len(x) * top_k / 2
    # max_pairs keeps the best, as sentence-transformers' heap does
    capped = paraphrase_mining(x, top_k=top_k, max_pairs=50, chunk_size=128)
    ref50 = util.paraphrase_mining_embeddings(torch.from_numpy(x), top_k=top_k, max_pairs=50)
    np.testing.assert_allclose([s for s, _, _ in capped], [s for s, _, _ in ref50], atol=1e-5)
    assert len({(i, j) for _, i, j in capped} ^ {(i, j) for _, i, j in ref50}) <= 2  # a tie at the cut aside


@pytest.mark.parametrize("chunks", [(64, 100), (1000, 5000), (37, 1)])
def test_threshold_pairs_are_every_pair_above_it(chunks):
    x = clustered(700, 16)
    want = brute_force(x, 0.8)
    got = list(iter_pairs(x, threshold=0.8, chunk_size=chunks[0], column_chunk=chunks[1]))
    assert len(got) == len(want) > 100  # each pair once
    assert {(i, j) for _, i, j in got} == set(want)
    assert max(abs(s - want[(i, j)]) for s, i, j in got) < 1e-5
    assert all(s >= 0.8 for s, _, _ in got)


def test_top_k_with_threshold_and_chunking():
    x = clustered(500, 12, seed=3)
    full = brute_force(x, -1.0)
    top = paraphrase_mining(x, top_k=3, max_pairs=None, chunk_size=1000, column_chunk=1000)
    for chunks in ((50, 64), (7, 500)):  # pairs met from both rows in different chunks: each kept once
        assert paraphrase_mining(x, top_k=3, max_pairs=None, chunk_size=chunks[0], column_chunk=chunks[1]) == top
    both = paraphrase_mining(x, top_k=3, threshold=0.9, max_pairs=None, chunk_size=50)
    assert both == [p for p in top if p[0] >= 0.9] and 0 < len(both) < len(top)
    # each row's 3 best others (exact copies included) are among the pairs
    pairs = {(i, j) for _, i, j in top}
    for i in (0, 4, 5, 123, 499):
        s = np.array([full.get((min(i, j), max(i, j)), -2.0) if i != j else -3.0 for j in range(len(x))])
        best = np.argsort(-s)[:3]
        assert all((min(i, j), max(i, j)) in pairs for j in best if s[j] > s[best[-1]] + 1e-6)
    assert [p[0] for p in top] == sorted((p[0] for p in top), reverse=True)


def test_vectors_directory_and_sparse_rows(tmp_path):
    from scipy import sparse

    from bertkit.apps.vectors import VectorsWriter, open_vectors

    x = clustered(300, 32, seed=5)
    w = VectorsWriter(tmp_path / "v16", 32, dtype="float16")
    w.append(x, list(range(len(x))))
    w.finish()
    v = open_vectors(tmp_path / "v16")
    want = paraphrase_mining(v.dequantize(0, len(v)), top_k=2, max_pairs=None)
    assert paraphrase_mining(v, top_k=2, max_pairs=None, chunk_size=64, column_chunk=100) == want
    assert list(iter_pairs(v, threshold=0.9, chunk_size=64)) == list(iter_pairs(v.dequantize(0, len(v)),
                                                                            threshold=0.9, chunk_size=64))
    # scipy sparse rows (a TF-IDF matrix): the same pairs as the dense matrix
    got = {(i, j): s for s, i, j in iter_pairs(sparse.csr_matrix(x), threshold=0.85, chunk_size=64)}
    want = brute_force(x, 0.85)
    assert got.keys() == want.keys() and max(abs(got[p] - want[p]) for p in got) < 1e-5


def test_memory_stays_bounded_by_a_block():
    """20,000 vectors: the score matrix would be 1.6 GB; the scan holds one block of scores (and its mask)."""
    n, rows, cols = 20_000, 512, 4096
    x = np.random.default_rng(0).standard_normal((n, 32)).astype(np.float32)
    x[1] = x[0]
    block = rows * cols * 4  # 8 MB of float32 scores
    tracemalloc.start()
    try:
        got = list(iter_pairs(x, threshold=0.6, chunk_size=rows, column_chunk=cols))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (0.99 < got[0][0]) and got[0][1:] == (0, 1)
    assert peak < 4 * block, f"peak {peak / 2**20:.1f} MB for a {block / 2**20:.0f} MB block"
    assert peak < n * n * 4 / 40  # far below the 1.6 GB of N^2 scores


def test_memory_top_k_bounded():
    n, rows, cols = 3000, 128, 2048
    x = np.random.default_rng(0).standard_normal((n, 32)).astype(np.float32)
    tracemalloc.start()
    try:
        pairs = paraphrase_mining(x, top_k=2, max_pairs=100, chunk_size=rows, column_chunk=cols)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(pairs) == 100
    assert peak < 4 * rows * cols * 4 + 2_000_000, f"peak {peak / 2**20:.1f} MB"


@pytest.mark.parametrize("kwargs, match", [
    ({"threshold": 1.5}, "between -1 and 1"), ({"threshold": float("nan")}, "between -1 and 1"),
    ({"top_k": 0}, "at least 1"), ({"top_k": None}, "give a threshold"), ({"max_pairs": 0}, "max_pairs")])
def test_bad_arguments(kwargs, match):
    with pytest.raises(DuplicatesError, match=match):
        paraphrase_mining(np.eye(3, dtype=np.float32), **kwargs)


# ---- with the real model -----------------------------------------------------------------------------------------
TEXTS = ["A man is playing a guitar.", "The cat sits on the mat.", "A man plays the guitar.",
         "the cat sits on the mat", "Stock markets fell sharply on Monday.", "A man is playing a guitar!",
         "Stocks fell sharply on Monday.", "I like green tea."]


def test_find_duplicates_with_minilm(minilm_dir):
    from bertkit.apps.sentence import SentenceModel

    model = SentenceModel.from_pretrained(minilm_dir)
    found = list(find_duplicates(model, TEXTS, threshold=0.8))
    exact = [(d.i, d.j) for d in found if d.exact]
    assert exact == [(1, 3), (0, 5)]  # each repeat paired with the first occurrence; score 1.0
    assert all(d.score == 1.0 for d in found if d.exact)
    near = {(d.i, d.j): d.score for d in found if not d.exact}
    assert (0, 2) in near and (4, 6) in near  # paraphrases
    assert not {3, 5} & {i for p in near for i in p}  # repeats are not mined again
    v = model.encode(TEXTS, normalize_embeddings=True)
    for (i, j), s in near.items():
        assert s == pytest.approx(float(v[i] @ v[j]), abs=1e-5) and s >= 0.8
    # the same pairs from texts and a model, from the vectors, and from a model directory
    mined = paraphrase_mining(model, TEXTS, top_k=1)
    from_vectors = paraphrase_mining(v, top_k=1)  # the model's path encodes in its own batches: float noise apart
    assert [p[1:] for p in mined] == [p[1:] for p in from_vectors]
    np.testing.assert_allclose([p[0] for p in mined], [p[0] for p in from_vectors], atol=1e-6)
    by_dir = paraphrase_mining(str(minilm_dir), TEXTS, top_k=1)
    assert [p[1:] for p in by_dir] == [p[1:] for p in mined]


# ---- the CLI -----------------------------------------------------------------------------------------------------
def write_inputs(tmp_path) -> dict[str, str]:
    import csv

    paths = {"txt": tmp_path / "in.txt", "jsonl": tmp_path / "in.jsonl", "csv": tmp_path / "in.csv"}
    paths["txt"].write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    paths["jsonl"].write_text("".join(json.dumps({"id": k, "body": t, "alt": t.upper()}) + "\n"
                                      for k, t in enumerate(TEXTS)), encoding="utf-8")
    with open(paths["csv"], "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "body"])
        w.writerows([k, t] for k, t in enumerate(TEXTS))
    return {k: str(v) for k, v in paths.items()}


def test_cli_writes_pairs_for_every_input_kind(tmp_path, minilm_dir, capsys):
    paths = write_inputs(tmp_path)
    outputs = []
    for kind, path in paths.items():
        out = tmp_path / f"{kind}.jsonl"
        field = [] if kind == "txt" else ["--text-field", "body"]
        assert main(["duplicates", "--model", str(minilm_dir), "--input", path, "--output", str(out), *field]) == 0
        outputs.append(out.read_text(encoding="utf-8"))
    assert outputs[0] == outputs[1] == outputs[2]
    rows = [json.loads(line) for line in outputs[0].splitlines()]
    assert rows[:2] == [{"i": 1, "j": 3, "score": 1.0, "exact": True}, {"i": 0, "j": 5, "score": 1.0, "exact": True}]
    near = {(r["i"], r["j"]) for r in rows if not r["exact"]}
    assert (0, 2) in near and all(r["score"] >= 0.9 for r in rows)  # the default threshold
    assert "2 exact repeats" in capsys.readouterr().err
    # --top-k 1 without a threshold: every distinct text's nearest
    out = tmp_path / "top.jsonl"
    assert main(["duplicates", "--model", str(minilm_dir), "--input", paths["txt"], "--output", str(out),
                 "--top-k", "1"]) == 0
    near = [json.loads(line) for line in out.read_text().splitlines() if '"exact": false' in line]
    assert {r["i"] for r in near} | {r["j"] for r in near} == {0, 1, 2, 4, 6, 7}


@pytest.mark.parametrize("case, match", [
    ("missing", "file not found"), ("badjson", r"bad\.jsonl: line 2: not JSON"),
    ("nofield", r"nofield\.jsonl: line 1: no field 'text'"), ("empty", r"empty\.txt: no texts"),
    ("blank", r"blank\.txt: line 2: empty text"), ("nocolumn", r"nocolumn\.csv: line 1: the header has no column"),
    ("ext", "unknown extension"), ("threshold", "threshold 1.5: must be a cosine between -1 and 1"),
    ("same", "is the input file")])
def test_cli_bad_input(tmp_path, minilm_dir, capsys, case, match):
    files = {"badjson": ("bad.jsonl", '{"text": "a"}\nnot json\n'), "nofield": ("nofield.jsonl", '{"body": "a"}\n'),
             "empty": ("empty.txt", ""), "blank": ("blank.txt", "a\n  \nb\n"), "nocolumn": ("nocolumn.csv", "x\na\n"),
             "ext": ("in.tsv", "a\n"), "threshold": ("ok.txt", "a\nb\n"), "same": ("same.txt", "a\nb\n")}
    name, text = files.get(case, ("absent.txt", None))
    path = tmp_path / name
    if text is not None:
        path.write_text(text, encoding="utf-8")
    out = path if case == "same" else tmp_path / "out.jsonl"
    extra = ["--threshold", "1.5"] if case == "threshold" else []
    assert main(["duplicates", "--model", str(minilm_dir), "--input", str(path), "--output", str(out), *extra]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and re.search(match, err), err  # one line naming the file, line or flag
    assert not (tmp_path / "out.jsonl").exists()


def test_cli_reads_the_vectors_bertkit_embed_wrote(tmp_path, minilm_dir, capsys):
    from bertkit.apps.embed import embed_corpus

    paths = write_inputs(tmp_path)
    embed_corpus(minilm_dir, [paths["jsonl"]], tmp_path / "vec", text_field="body", dtype="float16", progress=False)
    by_model, by_vectors = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    common = ["--input", paths["jsonl"], "--text-field", "body", "--threshold", "0.8"]
    assert main(["duplicates", "--model", str(minilm_dir), *common, "--output", str(by_model)]) == 0
    assert main(["duplicates", "--vectors", str(tmp_path / "vec"), *common, "--output", str(by_vectors)]) == 0
    a, b = ([json.loads(line) for line in p.read_text().splitlines()] for p in (by_model, by_vectors))
    assert [(r["i"], r["j"], r["exact"]) for r in a] == [(r["i"], r["j"], r["exact"]) for r in b]
    assert max(abs(x["score"] - y["score"]) for x, y in zip(a, b)) < 2e-3  # float16 rows
    capsys.readouterr()
    # vectors of another file (or field), or neither / both of --model and --vectors: one line, exit 2
    other = tmp_path / "other.jsonl"
    other.write_text('{"body": "x"}\n{"body": "y"}\n', encoding="utf-8")
    for argv, match in (
            (["--vectors", str(tmp_path / "vec"), "--input", str(other), "--text-field", "body"], "contents differ"),
            (["--vectors", str(tmp_path / "vec"), "--input", paths["jsonl"], "--text-field", "alt"],
             "embedded the field 'body'"),
            (["--input", paths["txt"]], "give --model .* or --vectors"),
            (["--model", str(minilm_dir), "--vectors", str(tmp_path / "vec"), "--input", paths["txt"]], "one of")):
        assert main(["duplicates", *argv, "--output", str(tmp_path / "c.jsonl")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and re.search(match, err), err


def test_find_duplicates_on_given_vectors_reads_first_occurrences_only():
    order = np.random.default_rng(0).permutation(100)
    texts = [f"text {k % 40}" for k in order]  # 60 repeats, first occurrences scattered
    first = np.array(sorted({t: i for i, t in reversed(list(enumerate(texts)))}.values()))
    x = clustered(100, 8, seed=7)
    found = list(find_duplicates(None, texts, vectors=x, threshold=0.5, chunk_size=7, column_chunk=9))
    assert sum(d.exact for d in found) == 60 and len(first) == 40 and first[-1] > 40
    want = {(int(first[a]), int(first[b])) for a, b in brute_force(x[first], 0.5)}
    assert {(d.i, d.j) for d in found if not d.exact} == want and len(want) > 5
    with pytest.raises(DuplicatesError, match="99 rows for 100 texts"):
        list(find_duplicates(None, texts, vectors=x[:99]))


def test_arguments_are_checked_before_any_work():
    with pytest.raises(DuplicatesError, match="between -1 and 1"):
        iter_pairs(np.eye(3, dtype=np.float32), threshold=2.0)  # at the call, not at the first pair
    with pytest.raises(DuplicatesError, match="at least 1"):
        find_duplicates(None, ["a", "b"], vectors=np.eye(2, dtype=np.float32), top_k=0)


def test_cli_in_bf16_finds_the_fp32_pairs(tmp_path, minilm_dir, monkeypatch):
    """--bf16 (OpenVINO): the same exact repeats and near pairs as fp32 on these texts; an error naming bf16 where
    the CPU has no bf16 instructions."""
    openvino = pytest.importorskip("openvino")
    monkeypatch.setenv("BERTKIT_CACHE", str(tmp_path / "cache"))
    paths = write_inputs(tmp_path)
    args = ["duplicates", "--model", str(minilm_dir), "--input", paths["txt"]]
    if "BF16" not in openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        assert main(args + ["--output", str(tmp_path / "b.jsonl"), "--bf16"]) == 2
        return
    assert main(args + ["--output", str(tmp_path / "f.jsonl")]) == 0
    assert main(args + ["--output", str(tmp_path / "b.jsonl"), "--bf16"]) == 0
    pairs = [{(r["i"], r["j"]) for r in map(json.loads, (tmp_path / f"{x}.jsonl").read_text().splitlines())}
             for x in ("f", "b")]
    assert pairs[0] == pairs[1] and len(pairs[0]) >= 3
