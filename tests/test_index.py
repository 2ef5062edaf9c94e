"""Semantic search and the vector index: exact top-k against sentence-transformers, HNSW against exact, segments,
deletions, crash safety, the CLI and its errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from bertkit import cli
from bertkit.apps import index as index_module
from bertkit.apps.index import Index, IndexFormatError
from bertkit.apps.search import SearchError, exact_top_k, semantic_search
from bertkit.apps.vectors import VectorsWriter, model_fingerprint, open_vectors

from conftest import gz_lines

MODEL = {"path": "models/m", "name": "m", "fingerprint": "f" * 64}


def write_vectors(path: Path, rows: np.ndarray, ids: list | None = None, dtype: str = "float32",
                  normalized: bool = False, model: dict = MODEL) -> Path:
    writer = VectorsWriter(path, rows.shape[1], dtype, normalized=normalized, model=model)
    writer.append(rows, ids if ids is not None else [f"{path.name}:{i}" for i in range(len(rows))])
    writer.finish()
    return path


def clustered(n: int, d: int = 48, seed: int = 0) -> np.ndarray:
    """Vectors in 40 loose clusters (nearest neighbours mean something, as with sentence vectors)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((40, d))
    return (centres[rng.integers(0, 40, n)] + 0.6 * rng.standard_normal((n, d))).astype(np.float32)


def st_search(q: np.ndarray, c: np.ndarray, k: int, dot: bool = False) -> list[list[dict]]:
    from sentence_transformers.util import dot_score, semantic_search as reference

    kwargs = {"score_function": dot_score} if dot else {}
    return reference(torch.from_numpy(q), torch.from_numpy(c), top_k=k, **kwargs)


def assert_same_ranking(ours: list[list[dict]], ref: list[list[dict]], tol: float = 1e-5) -> None:
    """Same scores; same ids wherever the reference's neighbouring scores are apart by more than float noise."""
    for a, b in zip(ours, ref, strict=True):
        assert len(a) == len(b)
        np.testing.assert_allclose([h["score"] for h in a], [h["score"] for h in b], atol=tol)
        scores = [h["score"] for h in b]
        for n, (x, y) in enumerate(zip(a, b)):
            near = [abs(scores[n] - scores[m]) < tol for m in (n - 1, n + 1) if 0 <= m < len(scores)]
            if not any(near):
                assert x["corpus_id"] == y["corpus_id"], (n, x, y)


# ---- semantic_search -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dot", [False, True])
def test_semantic_search_matches_sentence_transformers(dot):
    corpus, queries = clustered(5000), clustered(23, seed=1)
    ours = semantic_search(queries, corpus, top_k=15, corpus_chunk_size=777, query_chunk_size=4,
                           score="dot" if dot else "cosine")
    assert_same_ranking(ours, st_search(queries, corpus, 15, dot), tol=1e-4 if dot else 1e-5)
    assert all(h.keys() == {"corpus_id", "score"} for hits in ours for h in hits)


def test_semantic_search_torch_input_and_one_query():
    corpus, query = clustered(300), clustered(1, seed=2)[0]
    ours = semantic_search(torch.from_numpy(query), torch.from_numpy(corpus), top_k=5)
    assert len(ours) == 1
    assert_same_ranking(ours, st_search(query[None], corpus, 5))


@pytest.mark.parametrize("dtype", ["float16", "int8"])
def test_semantic_search_reads_stored_dtypes_chunk_by_chunk(tmp_path, dtype):
    """A memory-mapped float16/int8 corpus is dequantised a chunk at a time: the same answer as its float32 rows."""
    rows = clustered(2000)
    vectors = open_vectors(write_vectors(tmp_path / "v", rows, dtype=dtype))
    queries = clustered(5, seed=3)
    ours = semantic_search(queries, vectors, top_k=10, corpus_chunk_size=300)
    assert_same_ranking(ours, st_search(queries, vectors.dequantize(0, None), 10))
    assert isinstance(vectors.array, np.memmap)


def test_semantic_search_clamps_top_k_and_orders_ties():
    corpus = np.repeat(clustered(3), 4, axis=0)  # rows 4i..4i+3 are equal
    hits = semantic_search(corpus[:1], corpus, top_k=100)[0]
    assert len(hits) == 12  # top_k above the corpus: the whole corpus, ranked (as sentence-transformers)
    assert [h["corpus_id"] for h in hits[:4]] == [0, 1, 2, 3]
    for a, b in zip(hits, hits[1:]):  # equal scores: lower corpus_id first
        assert a["score"] > b["score"] or (a["score"] == b["score"] and a["corpus_id"] < b["corpus_id"])
    assert semantic_search(corpus[:2], np.zeros((0, corpus.shape[1]), np.float32)) == [[], []]
    with pytest.raises(SearchError, match="top_k: must be at least 1"):
        semantic_search(corpus[:1], corpus, top_k=0)
    with pytest.raises(SearchError, match="dimension 5"):
        semantic_search(np.ones((1, 5)), corpus)
    with pytest.raises(SearchError, match="score"):
        semantic_search(corpus[:1], corpus, score="l2")


def test_exact_top_k_skips_rows():
    corpus = clustered(500)
    skip = np.array([3, 10, 11, 499])
    rows, scores = exact_top_k(corpus[[3, 10]], corpus, 20, skip=skip, corpus_chunk_size=64)
    assert not np.isin(rows, skip).any()
    keep = np.setdiff1d(np.arange(500), skip)
    ref = st_search(corpus[[3, 10]], corpus[keep], 20)
    assert [[int(keep[h["corpus_id"]]) for h in r] for r in ref] == rows.tolist()


# ---- the index -------------------------------------------------------------------------------------------------------
@pytest.fixture
def two_sources(tmp_path):
    rows = clustered(3000)
    a = write_vectors(tmp_path / "a", rows[:2000])
    b = write_vectors(tmp_path / "b", rows[2000:], dtype="float16")
    return rows, a, b


def test_index_segments_equal_one_exact_search(tmp_path, two_sources):
    rows, a, b = two_sources
    idx = Index.build(a, tmp_path / "idx")
    assert idx.add(b) == 1000 and len(idx) == 3000 and len(idx.segments) == 2
    stored = np.concatenate([rows[:2000], rows[2000:].astype(np.float16).astype(np.float32)])
    queries = clustered(9, seed=4)
    ref = st_search(queries, stored, 10)
    got = Index.load(tmp_path / "idx").search(queries, 10)
    ids = [f"a:{i}" for i in range(2000)] + [f"b:{i}" for i in range(1000)]
    assert_same_ranking([[{"corpus_id": ids.index(h["id"]), "score": h["score"]} for h in hits] for hits in got], ref)
    assert [h["rank"] for h in got[0]] == list(range(1, 11))
    assert idx.model == {**MODEL, "dimension": 48}


def test_hnsw_recall_and_scores_match_exact(tmp_path, two_sources):
    pytest.importorskip("usearch")
    rows, a, b = two_sources
    idx = Index.build([a, b], tmp_path / "idx", hnsw=True, expansion_search=128)
    queries = clustered(50, seed=5)
    ex_rows, ex_scores = idx.search_rows(queries, 10, exact=True)
    hn_rows, hn_scores = idx.search_rows(queries, 10)
    recall = np.mean([len(set(x) & set(y)) / 10 for x, y in zip(ex_rows, hn_rows)])
    assert recall >= 0.97  # this noisy 48-d data is harder than sentence vectors (0.95 at ef 64)
    for x, y, sx, sy in zip(ex_rows, hn_rows, ex_scores, hn_scores):  # a row found by both scores the same
        common = {r: s for r, s in zip(x, sx)}
        for r, s in zip(y, sy):
            if r in common:
                assert abs(common[r] - s) < 1e-5
    with pytest.raises(SearchError, match="no HNSW graph"):
        Index.build(a, tmp_path / "plain").search_rows(queries, 3, exact=False)


@pytest.mark.parametrize("hnsw", [False, True])
def test_delete_by_id(tmp_path, two_sources, hnsw):
    if hnsw:
        pytest.importorskip("usearch")
    rows, a, b = two_sources
    idx = Index.build([a, b], tmp_path / "idx", hnsw=hnsw)
    first = idx.search(rows[:3], 1)
    gone = [hits[0]["id"] for hits in first]
    deleted, missing = idx.delete([*gone, "nope"])
    assert deleted == 3 and missing == ["nope"] and len(idx) == 2997
    for loaded in (idx, Index.load(tmp_path / "idx")):
        assert len(loaded) == 2997
        for exact in (True, None):
            found = {h["id"] for hits in loaded.search(rows[:3], 50, exact=exact) for h in hits}
            assert not found & set(gone)
    assert idx.delete(gone) == (0, gone)  # already deleted: nothing changes
    files = sorted(p.name.split("-")[0] for p in (tmp_path / "idx").iterdir())  # the old generation is gone
    assert files == [".lock", "deleted", *(["hnsw"] if hnsw else []), "index.json", "seg", "seg"]


@pytest.mark.parametrize("hnsw", [False, True])
def test_interrupted_add_leaves_the_index_as_it_was(tmp_path, two_sources, monkeypatch, hnsw):
    if hnsw:
        pytest.importorskip("usearch")
    rows, a, b = two_sources
    Index.build(a, tmp_path / "idx", hnsw=hnsw)
    before = Index.load(tmp_path / "idx").search(rows[2000:2005], 5)

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("killed mid-add")

    monkeypatch.setattr(index_module, "_write_manifest", crash)  # the segment and graph are written, not the manifest
    with pytest.raises(KeyboardInterrupt):
        Index.load(tmp_path / "idx").add(b)
    monkeypatch.undo()
    again = Index.load(tmp_path / "idx")
    assert len(again) == 2000 and again.search(rows[2000:2005], 5) == before
    again.add(b)  # the next write succeeds and clears the strays of the interrupted one
    assert len(Index.load(tmp_path / "idx")) == 3000
    assert len(list((tmp_path / "idx").glob("seg-*"))) == 2 and len(list((tmp_path / "idx").glob("hnsw-*"))) == hnsw


def test_bad_inputs_are_named(tmp_path, two_sources):
    rows, a, b = two_sources
    idx = Index.build(a, tmp_path / "idx")
    other = write_vectors(tmp_path / "other", rows[:10], model={**MODEL, "path": "other", "fingerprint": "0" * 64})
    with pytest.raises(IndexFormatError, match="other.*fingerprint 000000000000.*models/m"):
        idx.add(other)
    with pytest.raises(IndexFormatError, match="32-d vectors; .*holds 48-d"):
        idx.add(write_vectors(tmp_path / "narrow", rows[:10, :32]))
    empty = VectorsWriter(tmp_path / "empty", 48, model=MODEL)
    empty.finish()
    with pytest.raises(IndexFormatError, match="empty.*no vectors"):
        idx.add(tmp_path / "empty")
    with pytest.raises(IndexFormatError, match="meta.json missing"):
        Index.build(tmp_path / "nothing", tmp_path / "idx2")
    with pytest.raises(SearchError, match="top_k: must be at least 1"):
        idx.search(rows[:1], 0)
    with pytest.raises(SearchError, match="top_k: 2001 is more than the 2,000"):
        idx.search(rows[:1], 2001)
    with pytest.raises(SearchError, match="dimension 10"):
        idx.search(rows[:1, :10], 1)
    with pytest.raises(Exception, match="not empty"):
        Index.build(b, tmp_path / "idx")  # an existing index is replaced only with overwrite
    assert len(Index.build(b, tmp_path / "idx", overwrite=True)) == 1000
    with pytest.raises(IndexFormatError, match="index.json missing"):
        Index.load(tmp_path / "a")
    (tmp_path / "idx" / "index.json").write_text('{"format": "bertkit-index", "version": 1, "model": {}')
    with pytest.raises(IndexFormatError, match="index.json: malformed"):
        Index.load(tmp_path / "idx")
    (tmp_path / "idx" / "index.json").write_text(json.dumps({"format": "bertkit-index", "version": 1}))
    with pytest.raises(IndexFormatError, match="field 'model'"):
        Index.load(tmp_path / "idx")


# ---- the CLI, on real sentences and the real model -------------------------------------------------------------------
@pytest.fixture(scope="module")
def real_vectors(tmp_path_factory, minilm_dir):
    from bertkit.apps.sentence import SentenceModel

    texts = list(dict.fromkeys(ln.split("\t")[7] for ln in gz_lines("glue", "STS-B", "dev.tsv.gz")[1:200]))[:120]
    assert len(texts) == 120  # unique: the texts are the ids
    d = tmp_path_factory.mktemp("real")
    model = {"path": str(minilm_dir), "name": minilm_dir.name, "fingerprint": model_fingerprint(minilm_dir)}
    vectors = SentenceModel.from_pretrained(minilm_dir).encode(texts)
    write_vectors(d / "v1", vectors[:80], ids=texts[:80], normalized=True, model=model)
    write_vectors(d / "v2", vectors[80:], ids=texts[80:], normalized=True, model=model)
    return d, texts


def test_cli_build_add_search_delete(real_vectors, minilm_dir, tmp_path, capsys):
    d, texts = real_vectors
    out = tmp_path / "idx"
    assert cli.main(["index", "build", "--vectors", str(d / "v1"), "--out", str(out)]) == 0
    assert cli.main(["index", "add", "--index", str(out), "--vectors", str(d / "v2")]) == 0
    capsys.readouterr()
    query = texts[100]  # a sentence of the second segment finds itself first
    assert cli.main(["index", "search", "--index", str(out), "--model", str(minilm_dir), "--query", query,
                     "--query", texts[5], "--top-k", "3"]) == 0
    lines = [json.loads(ln) for ln in capsys.readouterr().out.splitlines()]
    assert [(ln["query"], ln["rank"]) for ln in lines] == [(query, 1), (query, 2), (query, 3),
                                                           (texts[5], 1), (texts[5], 2), (texts[5], 3)]
    assert lines[0]["id"] == query and lines[0]["score"] > 0.999 and lines[3]["id"] == texts[5]
    assert cli.main(["index", "delete", "--index", str(out), "--ids", query, "absent"]) == 0
    assert "1 rows deleted; 119 left; not found: absent" in capsys.readouterr().err
    assert cli.main(["index", "search", "--index", str(out), "--model", str(minilm_dir), "--query", query]) == 0
    assert query not in [json.loads(ln)["id"] for ln in capsys.readouterr().out.splitlines()]
    assert cli.main(["index", "info", "--index", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["live"] == 119


def test_cli_errors(real_vectors, minilm_dir, tiny_dir, tmp_path, capsys):
    d, texts = real_vectors
    out = tmp_path / "idx"
    assert cli.main(["index", "build", "--vectors", str(d / "v1"), "--out", str(out)]) == 0
    capsys.readouterr()
    assert cli.main(["index", "search", "--index", str(out), "--model", str(tiny_dir), "--query", "x"]) == 2
    assert "not the model of index" in capsys.readouterr().err
    assert cli.main(["index", "search", "--index", str(out), "--model", str(minilm_dir), "--query", "x",
                     "--top-k", "81"]) == 2
    assert "top_k: 81 is more than the 80 vectors" in capsys.readouterr().err
    assert cli.main(["index", "search", "--index", str(tmp_path), "--model", str(minilm_dir), "--query", "x"]) == 2
    assert "index.json missing" in capsys.readouterr().err
    assert cli.main(["index", "build", "--vectors", str(d / "v1"), "--out", str(out)]) == 2
    assert "not empty" in capsys.readouterr().err


def test_embed_then_index_then_search(real_vectors, minilm_dir, tmp_path, capsys):
    """The verbs chained as a user runs them: bertkit embed -> bertkit index build --hnsw -> bertkit index search."""
    pytest.importorskip("usearch")
    _, texts = real_vectors
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": t, "id": f"s{n}"}) + "\n" for n, t in enumerate(texts[:40])))
    assert cli.main(["embed", "--model", str(minilm_dir), "--input", str(corpus), "--id-field", "id",
                     "--output", str(tmp_path / "vectors")]) == 0
    assert cli.main(["index", "build", "--vectors", str(tmp_path / "vectors"), "--out", str(tmp_path / "idx"),
                     "--hnsw"]) == 0
    capsys.readouterr()
    assert cli.main(["index", "search", "--index", str(tmp_path / "idx"), "--model", str(minilm_dir),
                     "--query", texts[17], "--top-k", "2"]) == 0
    hits = [json.loads(ln) for ln in capsys.readouterr().out.splitlines()]
    assert [h["rank"] for h in hits] == [1, 2] and hits[0]["id"] == "s17" and hits[0]["score"] > 0.999
