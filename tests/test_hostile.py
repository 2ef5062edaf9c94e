"""Issue 13's probes of the HTTP service, as a hostile client would send them, against a real uvicorn server on
loopback (the `Server` of test_serve.py, with the connection limits `bertkit serve` runs with). Each test is named
after its reproduction; each is bounded (short read timeouts and gates instead of long waits), the whole module
in well under two minutes. The fuzz test of the API is in test_serve.py."""

from __future__ import annotations

import json
import select
import socket
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

from bertkit import BertForSequenceClassification, BertModel
from bertkit.heads import BertForMaskedLM, BertForQuestionAnswering

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from bertkit.serve.app import CONFIG_ENV, ServeSettings, create_app  # noqa: E402
from bertkit.serve.batcher import BatcherSettings  # noqa: E402
from test_serve import Server, tiny  # noqa: E402

HEADER_S, BODY_S = 1.0, 1.5  # the read timeouts of this module's server (the defaults are 10 and 15 s)


class Gate:
    """A model call that blocks until the test lets it go: which calls ran, and when one is running."""

    def __init__(self, classify):
        self.classify, self.calls = classify, 0
        self.running, self.tickets = threading.Event(), threading.Semaphore(0)

    def __call__(self, *args, **kw):
        self.calls += 1
        self.running.set()
        try:
            self.tickets.acquire(timeout=20)  # bounded, whatever the test does
            return self.classify(*args, **kw)
        finally:
            self.running.clear()

    def release(self, n=1000):
        for _ in range(n):
            self.tickets.release()


@pytest.fixture(scope="module")
def tok(minilm_dir):
    from bertkit import Tokenizer

    return Tokenizer.from_pretrained(minilm_dir)


@pytest.fixture(scope="module")
def served(tok):
    slow = tiny(BertForSequenceClassification, tok)
    gate = Gate(slow.classify)
    slow.classify = gate
    predictors = {"sentiment": tiny(BertForSequenceClassification, tok), "encoder": tiny(BertModel, tok),
                  "mlm": tiny(BertForMaskedLM, tok), "qa": tiny(BertForQuestionAnswering, tok), "slow": slow}
    app = create_app(predictors, ServeSettings(header_timeout_s=HEADER_S, body_timeout_s=BODY_S, max_connections=40,
                                               stall_after_s=0.3, batcher=BatcherSettings(max_batch=4)))
    s = Server(app)
    s.gate = gate
    yield s
    gate.release()
    s.stop()


def raw(port: int, data: bytes, timeout: float = 10) -> tuple[int, bytes]:
    """One request written as bytes on a fresh connection: (status, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as c:
        c.sendall(data)
        got = b""
        while chunk := c.recv(65536):
            got += chunk
    head, _, body = got.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body


def post_bytes(port: int, path: str, body: bytes, content_type: str = "application/json") -> tuple[int, bytes]:
    return raw(port, b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: %s\r\nContent-Length: %d\r\nConnection: close"
                     b"\r\n\r\n%s" % (path.encode(), content_type.encode(), len(body), body))


def status_count(server, endpoint: str, status: int) -> int:
    text = server.request("GET", "/metrics")[1]
    line = f'bertkit_requests_total{{endpoint="{endpoint}",status="{status}"}} '
    return next((int(x[len(line):]) for x in text.splitlines() if x.startswith(line)), 0)


# ---- 500s for input, and what /metrics records -----------------------------------------------------------------------
def test_nested_json_body_is_a_400_and_counted_as_400(served):
    before = status_count(served, "classify", 400)
    status, body = post_bytes(served.port, "/v1/classify", b"[" * 100_000 + b"]" * 100_000)
    assert status == 400 and "nested too deeply" in json.loads(body)["error"]
    assert status_count(served, "classify", 400) == before + 1


def test_surrogate_model_name_is_a_400_naming_the_field(served):
    status, body = post_bytes(served.port, "/v1/classify", b'{"texts": ["a"], "model": "\\ud800"}')
    assert status == 400 and json.loads(body)["error"].startswith("model: ")


def test_unexpected_failure_is_a_json_500_and_counted_as_500(served):
    before = status_count(served, "classify", 500)
    p = served.server.config.app.state.predictors["sentiment"]
    original = p.classify

    def broken(*a, **kw):
        raise RuntimeError("a bug, not the client's input")

    p.classify = broken
    try:
        status, out, _ = served.post("/v1/classify", {"texts": ["fine"], "model": "sentiment"})
    finally:
        p.classify = original
    assert status == 500 and "RuntimeError" in out["error"] and "a bug" not in out["error"]  # no internals leak
    assert status_count(served, "classify", 500) == before + 1


# ---- one request cannot stall the service ----------------------------------------------------------------------------
def test_classify_4_texts_of_20000_exclamation_marks_is_a_413_naming_the_text(served):
    status, out, _ = served.post("/v1/classify", {"texts": ["!" * 20000] * 4})
    assert status == 413 and out["error"].startswith("texts[0]: 20002 tokens"), out
    assert "limit 4096 tokens per request" in out["error"]
    # many texts, each within the budget, over it together
    status, out, _ = served.post("/v1/embed", {"texts": ["word " * 100] * 60, "model": "encoder"})
    assert status == 413 and "tokens in all" in out["error"], out


def test_a_long_call_to_one_model_does_not_hold_another_and_healthz_says_stalled(served):
    gate = served.gate
    with ThreadPoolExecutor(2) as pool:
        slow = pool.submit(served.post, "/v1/classify", {"texts": ["held"], "model": "slow"})
        assert gate.running.wait(10)
        # the slow model's worker is busy: another model still answers at once
        req = urllib.request.Request(f"http://127.0.0.1:{served.port}/v1/embed", data=json.dumps(
            {"texts": ["meanwhile"], "model": "encoder"}).encode(), headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=5) as r:
            assert r.status == 200
        assert gate.running.is_set()
        deadline = time.time() + 5
        while time.time() < deadline:  # the call passes stall_after_s (0.3 s) while we poll
            status, health, _ = served.request("GET", "/healthz")
            if status == 503:
                break
            time.sleep(0.1)
        assert status == 503 and health["status"] == "stalled" and health["stalled"][0]["model"] == "slow"
        gate.release(1)
        assert slow.result(timeout=20)[0] == 200
    assert served.request("GET", "/healthz")[0] == 200


def test_a_client_that_disconnects_stops_its_work_between_model_calls(served):
    gate, before = served.gate, served.gate.calls
    body = json.dumps({"texts": [f"text {i}" for i in range(24)], "model": "slow"}).encode()  # 6 calls of 4
    c = socket.create_connection(("127.0.0.1", served.port), timeout=10)
    c.sendall(b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d"
              b"\r\n\r\n%s" % (len(body), body))
    assert gate.running.wait(10)
    c.close()  # gone while the first call runs
    deadline = time.time() + 10
    while status_count(served, "classify", 499) == 0 and time.time() < deadline:
        time.sleep(0.05)
    assert status_count(served, "classify", 499) == 1, "the disconnect was not noticed"
    gate.release(10)
    batcher = served.server.config.app.state.batchers["slow"]
    deadline = time.time() + 10
    while (batcher.busy_for() or batcher.depth) and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)
    assert gate.calls - before == 1, "the calls after the disconnect were run anyway"
    gate.tickets = threading.Semaphore(0)


# ---- slow clients, connection cap ------------------------------------------------------------------------------------
def test_16_slow_clients_sending_headers_or_bodies_are_closed_in_bounded_time(served):
    socks = []
    for i in range(16):
        c = socket.create_connection(("127.0.0.1", served.port), timeout=10)
        if i % 2:  # complete headers, then a body that trickles
            c.sendall(b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Content-Length: 1000\r\n\r\n{")
        else:  # headers that trickle
            c.sendall(b"POST /v1/classify HTTP/1.1\r\n")
        socks.append(c)
    start, closed, answers = time.time(), {}, {}
    while len(closed) < len(socks) and time.time() - start < 3 * (HEADER_S + BODY_S):
        for i, c in enumerate(socks):
            if i in closed:
                continue
            try:
                if select.select([c], [], [], 0)[0]:
                    data = c.recv(4096)
                    answers[i] = answers.get(i, b"") + data
                    if not data:
                        closed[i] = time.time() - start
                        continue
                c.send(b"x" if i % 2 else b"X-Slow: 1\r\n"[:1])  # one byte at a time, forever
            except OSError:
                closed[i] = time.time() - start
        time.sleep(0.1)
    for c in socks:
        c.close()
    assert len(closed) == 16, f"still open after {time.time() - start:.0f} s: {sorted(set(range(16)) - set(closed))}"
    assert max(closed.values()) < 2 * (HEADER_S + BODY_S)
    assert all(a.startswith(b"HTTP/1.1 408") for a in answers.values() if a), answers
    assert served.request("GET", "/healthz")[0] == 200


def test_connections_beyond_the_cap_get_503(served):
    idle = [socket.create_connection(("127.0.0.1", served.port), timeout=10) for _ in range(40)]
    try:
        connections = served.server.server_state.connections
        deadline = time.time() + HEADER_S / 2  # all accepted, well before the header timeout closes them
        while len(connections) < 40 and time.time() < deadline:
            time.sleep(0.01)
        status, _ = raw(served.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert status == 503
    finally:
        for c in idle:
            c.close()
    deadline = time.time() + 5
    while time.time() < deadline and raw(served.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close"
                                                      b"\r\n\r\n")[0] != 200:
        time.sleep(0.1)
    assert served.request("GET", "/healthz")[0] == 200


# ---- bodies, content types -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("megabytes", [4, 8])
def test_urllib_posting_megabytes_gets_the_413(served, megabytes):
    body = json.dumps({"texts": ["x" * (megabytes << 20)]}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{served.port}/v1/classify", data=body,
                                 headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=30)
    assert e.value.code == 413 and "limit" in json.loads(e.value.read())["error"]


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"])
def test_a_body_that_is_not_declared_json_is_a_415(served, content_type):
    status, body = post_bytes(served.port, "/v1/classify", b'{"texts": ["a cross-site post"]}', content_type)
    assert status == 415 and "Content-Type: expected application/json" in json.loads(body)["error"]


# ---- answers that were cut say so; invisible text --------------------------------------------------------------------
def test_600_masks_answer_with_truncated_true(served):
    status, out, _ = served.post("/v1/fill-mask", {"texts": ["[MASK] " * 600, "a [MASK] day"], "model": "mlm"})
    assert status == 200 and out["results"][0]["truncated"] is True and "truncated" not in out["results"][1]
    assert len(out["results"][0]["masks"]) == 126  # what fits the tiny model's 128 positions


def test_a_question_cut_to_max_query_length_says_question_truncated(served):
    context = "The Broncos won the game in Denver."
    status, out, _ = served.post("/v1/answer", {"question": "who " * 100 + "won?", "context": context, "model": "qa"})
    assert status == 200 and out["question_truncated"] is True
    status, out, _ = served.post("/v1/answer", {"question": "Who won?", "context": context, "model": "qa"})
    assert status == 200 and "question_truncated" not in out


@pytest.mark.parametrize("text", ["\u200b\u200b\u200b", "\u00a0\u00a0", "\u200b \u00a0\ufeff"])
def test_zero_width_only_text_is_refused_like_nbsp_only_text(served, text):
    status, out, _ = served.post("/v1/classify", {"texts": ["fine", text]})
    assert status == 400 and out["error"] == "texts[1]: empty text (no visible character)", out


# ---- the API key -----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def keyed(tok):
    s = Server(create_app({"m": tiny(BertForSequenceClassification, tok)}, ServeSettings(api_key="s3cret")))
    yield s
    s.stop()


@pytest.mark.parametrize("path", ["/metrics", "/v1/models", "/openapi.json"])
def test_api_key_covers_every_get_but_healthz(keyed, path):
    status, out, headers = keyed.request("GET", path)
    assert status == 401 and "API key" in out["error"] and headers["WWW-Authenticate"] == "Bearer"
    assert keyed.request("GET", path, headers={"Authorization": "Bearer s3cret"})[0] == 200
    assert keyed.request("GET", "/healthz")[0] == 200


@pytest.mark.parametrize("headers,status", [
    ({"Authorization": "s3cret"}, 401),  # a bare key is not a bearer credential
    ({"Authorization": "Basic s3cret"}, 401),
    ({"Authorization": "Bearer s3cre"}, 401),
    ({"Authorization": "Bearer s3cret"}, 200),
    ({"Authorization": "bearer s3cret"}, 200),  # the scheme is case-insensitive (RFC 6750, RFC 7235)
    ({"Authorization": "BEARER  s3cret"}, 200),
    ({"X-API-Key": "s3cret"}, 200),
])
def test_bearer_parsing(keyed, headers, status):
    assert keyed.post("/v1/classify", {"texts": ["a"]}, headers=headers)[0] == status


def test_the_page_and_docs_load_without_the_key_and_send_it(keyed):
    status, page, _ = keyed.request("GET", "/")
    assert status == 200 and "localStorage" in page and "Authorization" in page
    status, docs, _ = keyed.request("GET", "/docs")
    assert status == 200 and "/openapi.json" in docs and "Authorization" in docs
    assert "https://" not in docs and "http://" not in docs  # no CDN: it works offline


# ---- serve's limits, checked before the port opens; the warning beyond loopback --------------------------------------
@pytest.fixture(scope="module")
def model_dir(tok, tmp_path_factory):
    d = tmp_path_factory.mktemp("served") / "m"
    tiny(BertForSequenceClassification, tok).model.save_pretrained(d, tokenizer=tok)
    return d


@pytest.mark.parametrize("flag,value", [("--max-chars", "-1"), ("--max-queue", "0"), ("--workers", "0"),
                                        ("--port", "99999"), ("--max-batch", "0"), ("--max-tokens", "0"),
                                        ("--header-timeout-s", "0"), ("--max-connections", "0")])
def test_serve_limits_are_refused_before_the_port_opens(model_dir, monkeypatch, capsys, flag, value):
    import uvicorn

    from bertkit.cli import main

    def opened(*a, **kw):
        raise AssertionError("the port was opened")

    monkeypatch.setattr(uvicorn, "run", opened)
    monkeypatch.setenv(CONFIG_ENV, "{}")  # serve sets it for its workers: undone after the test
    assert main(["serve", "--model", str(model_dir), flag, value]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"bertkit serve: error: {flag} ") and ": must be" in err and "\n" not in err


def test_binding_beyond_loopback_without_a_key_warns(model_dir, monkeypatch, capsys):
    import uvicorn

    from bertkit.cli import main

    ran = []
    monkeypatch.setattr(uvicorn, "run", lambda *a, **kw: ran.append(kw))
    monkeypatch.setenv(CONFIG_ENV, "{}")
    assert main(["serve", "--model", str(model_dir), "--host", "0.0.0.0"]) == 0
    assert "warning: listening on 0.0.0.0" in capsys.readouterr().err
    assert ran[0]["limit_concurrency"] == 128  # and the connection limits are on
    assert main(["serve", "--model", str(model_dir), "--host", "0.0.0.0", "--api-key", "k"]) == 0
    assert main(["serve", "--model", str(model_dir)]) == 0
    assert "warning" not in capsys.readouterr().err
