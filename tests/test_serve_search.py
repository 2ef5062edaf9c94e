"""The sentence-vector endpoints over a real uvicorn server on loopback, with the packaged all-MiniLM-L6-v2:
OpenAI's /v1/embeddings through the real `openai` client (vectors equal to SentenceModel.encode), /v1/search over
a small real index, /v1/cluster, every kind of bad input (4xx naming the field, never 5xx), and the page's search
box and cluster view in headless Chromium."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from test_serve import Server, render  # noqa: E402  (the loopback server and the browser harness of the service tests)

from bertkit.infer.predictor import Predictor, PredictorSettings  # noqa: E402
from bertkit.serve.app import ServeSettings, create_app  # noqa: E402

KEY = "sk-test-key"
TEXTS = ["A man is playing a guitar.", "Stocks fell sharply on Monday.", "서울은 한국의 수도이다.",
         "The cat sat on the mat, and then it slept for a long, long time in the afternoon sun."]


@pytest.fixture(scope="module")
def sentence_model(minilm_dir):
    from bertkit.apps.sentence import SentenceModel

    return SentenceModel.from_pretrained(minilm_dir)


@pytest.fixture(scope="module")
def minilm(minilm_dir):
    return Predictor.from_pretrained(minilm_dir, PredictorSettings(threads=1))


SETTINGS = ServeSettings(max_items=8, max_cluster_items=60, max_cluster_tokens=3000)


@pytest.fixture(scope="module")
def sts(tmp_path_factory, minilm_dir) -> dict:
    """A small real index: the first 300 distinct first sentences of STS-B dev (ids "sts-b:ROW"), embedded by
    `bertkit embed` and indexed by `bertkit index build`; and a query with its expected top hit (the second
    sentence of a pair rated 5.0, whose first sentence is in the index)."""
    import gzip
    import importlib.util
    import json

    from conftest import need_data

    from bertkit.apps.embed import embed_corpus
    from bertkit.apps.index import Index

    with gzip.open(need_data("glue", "STS-B", "dev.tsv.gz"), "rt", encoding="utf-8") as f:
        rows = [ln.rstrip("\n").split("\t") for ln in f][1:]
    corpus: dict[str, str] = {}
    query = None
    for r in rows:
        if len(corpus) == 300:
            break
        if r[7] not in corpus.values():
            corpus[f"sts-b:{r[0]}"] = r[7]
            if query is None and float(r[9]) == 5.0 and r[8].lower() != r[7].lower() and len(corpus) > 20:
                query = (r[8], f"sts-b:{r[0]}")
    d = tmp_path_factory.mktemp("sts")
    with open(d / "corpus.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps({"id": i, "text": t}) + "\n" for i, t in corpus.items())
    embed_corpus(minilm_dir, [d / "corpus.jsonl"], d / "vectors", id_field="id", progress=False)
    Index.build(d / "vectors", d / "index")
    hnsw = None
    if importlib.util.find_spec("usearch") is not None:
        # ef_search at the corpus size: the graph search visits every reachable row (at the default 128 more
        # than one of 300 rows could fall out of a top 10)
        Index.build(d / "vectors", d / "hnsw", hnsw=True, expansion_search=300)
        hnsw = d / "hnsw"
    return {"dir": d / "index", "hnsw": hnsw, "corpus": corpus, "query": query[0], "expected": query[1]}


@pytest.fixture(scope="module")
def server(minilm, minilm_dir, sts):
    """No API key: the page in a fresh browser has none (the key itself is tested on a server of its own)."""
    from bertkit.serve.app import load_indexes

    dirs = {"sts": str(sts["dir"]), **({"sts-hnsw": str(sts["hnsw"])} if sts["hnsw"] else {})}
    indexes = load_indexes(dirs, {"minilm": str(minilm_dir)})
    s = Server(create_app({"minilm": minilm}, SETTINGS, indexes))
    yield s
    s.stop()


@pytest.fixture(scope="module")
def keyed(minilm):
    s = Server(create_app({"minilm": minilm}, replace(SETTINGS, api_key=KEY)))
    yield s
    s.stop()


@pytest.fixture(scope="module")
def client(keyed):
    openai = pytest.importorskip("openai")
    return openai.OpenAI(base_url=f"http://127.0.0.1:{keyed.port}/v1", api_key=KEY, max_retries=0, timeout=60)


def post(server, path, body=None, raw=None):
    return server.post(path, body, raw=raw)


# ---- /v1/embeddings: the openai client -------------------------------------------------------------------------------
@pytest.mark.parametrize("encoding", ["float", "base64", None])
def test_openai_client_gets_the_models_own_vectors(client, sentence_model, encoding):
    """None: the client's default, which asks for base64 and decodes it itself; asked for explicitly, base64 is
    handed over as it came (little-endian float32 bytes)."""
    import base64

    expected = sentence_model.encode(TEXTS)
    kw = {} if encoding is None else {"encoding_format": encoding}
    out = client.embeddings.create(input=TEXTS, model="minilm", **kw)
    rows = [d.embedding for d in sorted(out.data, key=lambda d: d.index)]
    if encoding == "base64":
        assert all(isinstance(r, str) for r in rows)
        rows = [np.frombuffer(base64.b64decode(r), dtype="<f4") for r in rows]
    got = np.array(rows, dtype=np.float32)
    assert got.shape == expected.shape == (4, 384)
    np.testing.assert_allclose(got, expected, atol=1e-6, rtol=0)
    assert out.model == "minilm" and out.object == "list" and [d.index for d in out.data] == [0, 1, 2, 3]
    # the tokens the model read: [CLS] + pieces + [SEP] of each text
    pieces = [len(e) for e in sentence_model.tokenizer.encode_batch(TEXTS, add_special_tokens=False)]
    assert out.usage.prompt_tokens == out.usage.total_tokens == sum(n + 2 for n in pieces)


def test_openai_client_one_string(client, sentence_model):
    out = client.embeddings.create(input=TEXTS[0], model="minilm", encoding_format="float")
    assert len(out.data) == 1
    np.testing.assert_allclose(out.data[0].embedding, sentence_model.encode(TEXTS[:1])[0], atol=1e-6, rtol=0)


def test_openai_client_errors(client, keyed):
    import openai

    with pytest.raises(openai.NotFoundError) as e:
        client.embeddings.create(input=["a"], model="gpt-nope")
    assert e.value.status_code == 404 and e.value.code == "model_not_found" and e.value.param == "model"
    assert "'gpt-nope' is not served (served: minilm)" in e.value.message
    with pytest.raises(openai.BadRequestError) as e:
        client.embeddings.create(input=[], model="minilm")
    assert e.value.param == "input" and "input: empty list" in e.value.message
    with pytest.raises(openai.BadRequestError) as e:
        client.embeddings.create(input="", model="minilm")
    assert e.value.param == "input" and "empty text" in e.value.message
    with pytest.raises(openai.BadRequestError) as e:
        client.embeddings.create(input=[[101, 2023, 102]], model="minilm")
    assert "token-id arrays are not supported" in e.value.message
    with pytest.raises(openai.BadRequestError) as e:
        client.embeddings.create(input=["a"], model="minilm", dimensions=128)
    assert e.value.param == "dimensions" and "384" in e.value.message
    wrong = openai.OpenAI(base_url=f"http://127.0.0.1:{keyed.port}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as e:
        wrong.embeddings.create(input=["a"], model="minilm")
    assert e.value.code == "invalid_api_key" and e.value.body["message"] == "wrong API key"


def test_openai_client_lists_the_models(client, keyed):
    assert [m.id for m in client.models.list()] == ["minilm"]
    status, out, _ = keyed.request("GET", "/v1/models", headers={"Authorization": f"Bearer {KEY}"})
    assert status == 200 and out["minilm"]["dimension"] == 384 and out["data"][0]["id"] == "minilm"
    status, schema, _ = keyed.request("GET", "/openapi.json", headers={"Authorization": f"Bearer {KEY}"})
    assert {"/v1/embeddings", "/v1/search", "/v1/cluster"} <= set(schema["paths"])
    body = schema["paths"]["/v1/embeddings"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body["required"] == ["input"] and "encoding_format" in body["properties"]


@pytest.mark.parametrize("body,raw,status,needle,param", [
    (None, b"{not json", 400, "invalid JSON at line 1", None),
    ({"input": 3, "model": "minilm"}, None, 400, "input: expected a string or a list of strings, got int", "input"),
    ({"input": ["ok", None]}, None, 400, "input[1]: expected a string, got NoneType", "input"),
    ({"input": {"text": "a"}}, None, 400, "input: expected a string or a list of strings, got dict", "input"),
    ({"model": "minilm"}, None, 400, "input: missing", "input"),
    ({"input": ["a"], "encoding_format": "int8"}, None, 400, "encoding_format:", "encoding_format"),
    ({"input": ["a"], "dimensions": "384"}, None, 400, "dimensions: expected an integer", "dimensions"),
    ({"input": ["a"] * 9}, None, 413, "input: 9 items, limit 8", "input"),
    ({"input": ["a"], "model": 7}, None, 400, "model: expected a string", "model"),
])
def test_embeddings_bad_input_in_openai_shape(server, body, raw, status, needle, param):
    got, out, _ = post(server, "/v1/embeddings", body, raw=raw)
    assert got == status, out
    error = out["error"]
    assert needle in error["message"] and error["param"] == param and error["type"] == "invalid_request_error"
    assert set(error) == {"message", "type", "param", "code"}


def test_embeddings_dimensions_equal_to_the_models_is_accepted(server, sentence_model):
    status, out, _ = post(server, "/v1/embeddings", {"input": ["a cat"], "dimensions": 384})
    assert status == 200
    np.testing.assert_allclose(out["data"][0]["embedding"], sentence_model.encode(["a cat"])[0], atol=1e-6, rtol=0)


def test_v1_embed_gives_the_models_own_vectors(server, sentence_model):
    """/v1/embed (bertkit's own) normalises; all-MiniLM-L6-v2 ends in a Normalize module, so they are its vectors."""
    status, out, _ = post(server, "/v1/embed", {"texts": TEXTS})
    assert status == 200
    np.testing.assert_allclose(np.array(out["vectors"]), sentence_model.encode(TEXTS), atol=1e-6, rtol=0)


# ---- /v1/cluster ------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bbc_leads() -> tuple[list[str], list[str]]:
    """The lead sentence of the first 12 BBC articles of three categories (real text), and the categories."""
    import csv
    import gzip

    from conftest import need_data

    with gzip.open(need_data("summarization", "bbc_news_summary_valid.csv.gz"), "rt", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    picked = [r for cat in ("sport", "business", "tech") for r in [r for r in rows if r["categories"] == cat][:12]]
    return [r["document"].split("\n\n")[1].strip() for r in picked], [r["categories"] for r in picked]


def test_cluster_is_the_library_over_the_models_vectors(server, sentence_model, bbc_leads):
    from bertkit.apps.cluster import cluster

    texts, _ = bbc_leads
    status, out, _ = post(server, "/v1/cluster", {"texts": texts, "min_cluster_size": 4})
    assert status == 200, out
    expected = cluster(sentence_model.encode(texts), texts, min_cluster_size=4)
    assert out["labels"] == expected.labels.tolist() and out["count"] == len(texts)
    np.testing.assert_allclose(out["coords"], expected.projection, atol=1e-4)
    groups = {g["cluster"]: g for g in out["clusters"]}
    assert set(groups) == set(expected.labels.tolist())
    for c, g in groups.items():
        assert g["members"] == [i for i, x in enumerate(expected.labels) if x == c] and g["size"] == len(g["members"])
        assert g["keywords"] == ([w for w, _ in expected.keywords[c]] if c >= 0 else [])
    assert out["noise"] == int((expected.labels < 0).sum())
    sizes = [g["size"] for g in out["clusters"] if g["cluster"] >= 0]
    order = [g["cluster"] for g in out["clusters"]]
    assert sizes == sorted(sizes, reverse=True) and (-1 not in order or order[-1] == -1)  # largest first, noise last
    status, assigned, _ = post(server, "/v1/cluster", {"texts": texts, "min_cluster_size": 4, "assign_noise": True})
    assert status == 200 and assigned["noise"] == 0 and -1 not in assigned["labels"]


@pytest.mark.parametrize("body,status,needle", [
    ({"texts": []}, 400, "texts: empty list"),
    ({"texts": ["one", "two"]}, 400, "texts: 2 text(s); clustering needs at least 3"),
    ({"texts": ["a b", "c d", 5]}, 400, "texts[2]: expected a string, got int"),
    ({"texts": "one\ntwo\nthree"}, 400, "texts: expected a list of strings"),
    ({"texts": ["a", "b", "c"], "min_cluster_size": 1}, 400, "min_cluster_size: 1, must be at least 2"),
    ({"texts": ["a", "b", "c"], "min_cluster_size": 4}, 400, "min_cluster_size: 4, more than the 3 texts sent"),
    ({"texts": ["a", "b", "c"], "min_cluster_size": "3"}, 400, "min_cluster_size: expected an integer, got str"),
    ({"texts": ["a", "b", "c"], "assign_noise": "yes"}, 400, "assign_noise: expected true or false"),
    ({"texts": ["x"] * 61}, 413, "texts: 61 items, limit 60"),
    ({"texts": ["word " * 200] * 20}, 413, "tokens in all, limit 3000"),
    ({"texts": ["a", "b", "c"], "model": "nope"}, 404, "model: 'nope' is not served"),
])
def test_cluster_bad_input(server, body, status, needle):
    got, out, _ = post(server, "/v1/cluster", body)
    assert got == status and needle in out["error"], out


def test_page_cluster_view_shows_the_groups(server, bbc_leads):
    """The page's cluster view (texts pasted one per line) shows the groups /v1/cluster found, each with its
    keywords and members, and one dot per text on the map, coloured by group."""
    import html
    import re

    texts, _ = bbc_leads
    status, out, _ = post(server, "/v1/cluster", {"texts": texts})
    assert status == 200 and any(g["cluster"] >= 0 for g in out["clusters"])
    dom = render(server, {"cluster": "\n".join(texts)})
    shown = dom.split('id="cluster-out"')[1].split("<script")[0]  # the panel's output, not the page's script
    # each group's markup runs to the next group's (members are only inside groups)
    groups = [re.match(r'data-cluster="(-?\d+)" data-size="(\d+)">(.*)', chunk, re.S).groups()
              for chunk in shown.split('<div class="group" ')[1:]]
    assert [(int(c), int(n)) for c, n, _ in groups] == [(g["cluster"], g["size"]) for g in out["clusters"]]
    for (_, _, inner), g in zip(groups, out["clusters"]):
        members = [html.unescape(m) for m in re.findall(r'<div class="member">(.*?)</div>', inner)]
        assert members == [texts[i] for i in g["members"]]
        if g["cluster"] >= 0:
            keywords = html.unescape(re.search(r'<span class="keywords">(.*?)</span>', inner).group(1))
            assert keywords == ", ".join(g["keywords"][:6])
    dots = re.findall(r'<circle class="dot" data-cluster="(-?\d+)"', shown)
    assert [int(c) for c in dots] == out["labels"]


# ---- /v1/search -------------------------------------------------------------------------------------------------------
def test_search_finds_the_paraphrase(server, sts, sentence_model):
    status, out, _ = post(server, "/v1/search", {"index": "sts", "query": sts["query"], "top_k": 5})
    assert status == 200, out
    [hits] = out["results"]
    assert hits[0]["id"] == sts["expected"] and [h["rank"] for h in hits] == [1, 2, 3, 4, 5]
    # the scores are the cosines of the model's own vectors, and the hits the best five of the whole corpus
    ids, texts = list(sts["corpus"]), list(sts["corpus"].values())
    cos = sentence_model.encode(texts, normalize_embeddings=True) @ sentence_model.encode(
        [sts["query"]], normalize_embeddings=True)[0]
    best = np.argsort(-cos, kind="stable")[:5]
    assert [h["id"] for h in hits] == [ids[i] for i in best]
    np.testing.assert_allclose([h["score"] for h in hits], cos[best], atol=1e-5)
    assert out["index"] == "sts" and out["model"] == "minilm" and out["usage"]["prompt_tokens"] > 2


def test_search_several_queries_and_the_default_top_k(server, sts):
    queries = [sts["query"], sts["corpus"]["sts-b:0"]]
    status, out, _ = post(server, "/v1/search", {"queries": queries})  # the first index, 10 hits each
    assert status == 200 and out["index"] == "sts" and [len(r) for r in out["results"]] == [10, 10]
    assert out["results"][0][0]["id"] == sts["expected"] and out["results"][1][0]["id"] == "sts-b:0"
    assert out["results"][1][0]["score"] == pytest.approx(1.0, abs=1e-5)  # a corpus text finds itself
    if sts["hnsw"]:  # the same vectors through the HNSW graph (usearch, off the event loop)
        status, graph, _ = post(server, "/v1/search", {"index": "sts-hnsw", "queries": queries})
        assert status == 200 and [len(r) for r in graph["results"]] == [10, 10]
        status, every, _ = post(server, "/v1/search", {"index": "sts", "queries": queries, "top_k": 300})
        for a, b, full in zip(graph["results"], out["results"], every["results"]):
            # the graph is approximate and built by several threads, so a row may be unreachable in one build
            # even at ef_search = corpus size (CI saw one of ten missing): each hit carries its exact score,
            # best first, and at least 9 of the exact top 10 come back, the best one first
            exact = {h["id"]: h["score"] for h in full}
            assert [h["score"] for h in a] == pytest.approx([exact[h["id"]] for h in a], abs=1e-5)
            assert [h["score"] for h in a] == sorted((h["score"] for h in a), reverse=True)
            assert a[0]["id"] == b[0]["id"] and len({h["id"] for h in a} & {h["id"] for h in b}) >= 9
    status, out, _ = post(server, "/v1/search", {"index": "sts", "query": "a dog runs", "top_k": 300})
    assert status == 200 and len(out["results"][0]) == 300  # the whole index


@pytest.mark.parametrize("body,raw,status,needle", [
    ({"index": "nope", "query": "x"}, None, 404, "index: 'nope' is not served (served: sts"),
    ({"index": 3, "query": "x"}, None, 400, "index: expected a string, got int"),
    ({"index": "sts", "query": "x", "top_k": 0}, None, 400, "top_k: 0, must be at least 1"),
    ({"index": "sts", "query": "x", "top_k": -2}, None, 400, "top_k: -2, must be at least 1"),
    ({"index": "sts", "query": "x", "top_k": 301}, None, 400, "top_k: 301, above the size of index 'sts' (300)"),
    ({"index": "sts", "query": "x", "top_k": "5"}, None, 400, "top_k: expected an integer, got str"),
    ({"index": "sts", "query": "x", "top_k": 2.5}, None, 400, "top_k: expected an integer, got float"),
    ({"index": "sts"}, None, 400, "query: give `query` (a string) or `queries` (a list of strings)"),
    ({"index": "sts", "query": "x", "queries": ["y"]}, None, 400, "not both"),
    ({"index": "sts", "queries": []}, None, 400, "queries: empty list"),
    ({"index": "sts", "queries": "x"}, None, 400, "queries: expected a list of strings"),
    ({"index": "sts", "query": ["x"]}, None, 400, "query: expected a string, got list"),
    ({"index": "sts", "query": "   "}, None, 400, "query: empty text"),
    ({"index": "sts", "queries": ["x"] * 9}, None, 413, "queries: 9 items, limit 8"),
    (None, b'{"index": "sts", "query": ', 400, "invalid JSON"),
    (None, b'["sts", "x"]', 400, "expected a JSON object"),
])
def test_search_bad_input(server, body, raw, status, needle):
    got, out, _ = post(server, "/v1/search", body, raw=raw)
    assert got == status and needle in out["error"], out


def test_indexes_are_listed(server):
    status, out, _ = server.request("GET", "/v1/indexes")
    assert status == 200 and out["indexes"][0] == {"name": "sts", "size": 300, "model": "minilm"}
    post(server, "/v1/search", {"index": "nope", "query": "x"})
    status, text, _ = server.request("GET", "/metrics")  # the new endpoints have labels of their own
    assert 'bertkit_requests_total{endpoint="search",status="404"}' in text and 'endpoint="indexes"' in text


def test_an_index_of_another_model_is_refused_at_start_up(sts, tiny_dir, capsys, monkeypatch):
    """`bertkit serve --index` checks the index's model fingerprint against the served models before it listens:
    an index made by MiniLM served beside a different model is refused, naming both."""
    import uvicorn

    from bertkit.cli import main
    from bertkit.serve.app import load_indexes
    from bertkit.serve.protocol import CONFIG_ENV

    def opened(*a, **kw):
        raise AssertionError("the port was opened")

    monkeypatch.setattr(uvicorn, "run", opened)
    monkeypatch.setenv(CONFIG_ENV, "{}")  # serve sets it for its workers: undone after the test

    with pytest.raises(ValueError, match=r"index 'sts' .* holds vectors of model .*not served; served: tiny = "):
        load_indexes({"sts": str(sts["dir"])}, {"tiny": str(tiny_dir)})
    assert main(["serve", "--model", f"tiny={tiny_dir}", "--index", f"sts={sts['dir']}", "--port", "1"]) == 2
    err = capsys.readouterr().err
    assert "index 'sts'" in err and str(tiny_dir) in err and "fingerprint" in err
    assert main(["serve", "--model", str(tiny_dir), "--index", "/nonexistent/index"]) == 2
    assert "--index /nonexistent/index: /nonexistent/index: no such directory" in capsys.readouterr().err


def test_page_search_box_shows_the_ranked_hits(server, sts):
    import html
    import re

    status, out, _ = post(server, "/v1/search", {"index": "sts", "query": sts["query"], "top_k": 5})
    dom = render(server, {"search": sts["query"], "index": "sts", "top_k": "5"})
    hits = re.findall(r'<li class="hit" data-rank="(\d+)" data-id="([^"]*)" data-score="([0-9.-]+)">', dom)
    assert [(int(r), html.unescape(i)) for r, i, _ in hits] == [(h["rank"], h["id"]) for h in out["results"][0]]
    assert html.unescape(hits[0][1]) == sts["expected"]
    assert [float(s) for _, _, s in hits] == pytest.approx([h["score"] for h in out["results"][0]], abs=1e-4)


def test_serve_cli_serves_an_index(sts, minilm_dir, monkeypatch):
    """`bertkit serve --model DIR --index NAME=DIR`: the app it would run answers /v1/search with the index's model."""
    import uvicorn

    from bertkit.cli import main
    from bertkit.serve.protocol import CONFIG_ENV

    apps = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: apps.append(app))
    monkeypatch.setenv(CONFIG_ENV, "{}")
    assert main(["serve", "--model", f"mini={minilm_dir}", "--index", f"sts={sts['dir']}", "--threads", "1"]) == 0
    s = Server(apps[0])
    try:
        status, out, _ = s.post("/v1/search", {"index": "sts", "query": sts["query"], "top_k": 1})
        assert status == 200 and out["model"] == "mini" and out["results"][0][0]["id"] == sts["expected"]
    finally:
        s.stop()


def test_fuzz_no_5xx(server):
    """Random JSON shaped like these endpoints' bodies, and anything else: always an answer below 500."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    text = st.text(max_size=30)
    leaf = st.none() | st.booleans() | st.integers(-5, 400) | st.floats(allow_nan=True) | text
    value = st.recursive(leaf, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
                         max_leaves=10)
    shaped = st.fixed_dictionaries({}, optional={
        "input": text | st.lists(text | value, max_size=4) | value, "texts": st.lists(text | value, max_size=5),
        "query": text | value, "queries": st.lists(text | value, max_size=3) | value,
        "index": st.sampled_from(["sts", "nope"]) | value, "model": st.sampled_from(["minilm", "x"]) | value,
        "top_k": st.integers(-3, 400) | value, "min_cluster_size": st.integers(-1, 6) | value,
        "encoding_format": st.sampled_from(["float", "base64", "x"]) | value, "dimensions": value,
        "assign_noise": value})

    @settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.sampled_from(["embeddings", "search", "cluster"]), shaped | value)
    def check(endpoint, body):
        status, out, _ = server.post(f"/v1/{endpoint}", body)
        assert status < 500, (endpoint, body, out)

    check()
    assert server.request("GET", "/healthz")[0] == 200


def test_the_documented_examples_answer(server):
    """Each new endpoint's OpenAPI example body (shown on /docs) is a request that works."""
    status, schema, _ = server.request("GET", "/openapi.json")
    for path in ("/v1/embeddings", "/v1/search", "/v1/cluster"):
        example = schema["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]["example"]
        status, out, _ = post(server, path, example)
        assert status == 200, (path, out)
        if path == "/v1/cluster":  # three sentences on football, three on money
            assert sorted(sorted(g["members"]) for g in out["clusters"]) == [[0, 1, 2], [3, 4, 5]]
