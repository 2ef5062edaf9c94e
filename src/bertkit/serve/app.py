"""The HTTP service: a thin FastAPI layer over Predictors, with micro-batching, limits and metrics.

Endpoints (JSON in, JSON out; the OpenAPI schema at /openapi.json, rendered by the package's own page at /docs):
  POST /v1/classify     {"texts": [...]} or {"pairs": [[a, b], ...]}  -> {"results": [{label, probs} | {score}]}
                        {"texts": [...], "explain": true} adds `words` and `sentences` with importance scores
  POST /v1/tag          {"texts": [...]}                              -> {"results": [{entities: [...]}]}
  POST /v1/answer       {"question": "...", "context": "..."}         -> {answer, start, end, score}
  POST /v1/embed        {"texts": [...]}                              -> {"vectors": [[...], ...]}
  POST /v1/similarity   {"pairs": [[a, b], ...]}                      -> {"scores": [...]} (cosine of embeddings)
  POST /v1/fill-mask    {"texts": ["... [MASK] ..."]}                 -> {"results": [{masks: [[{token, score}]]}]}
  POST /v1/embeddings   OpenAI's shape: {"input": str | [str], "model", "encoding_format": "float" | "base64",
                        "dimensions"?} -> {"object": "list", "data": [{"object": "embedding", "embedding", "index"}],
                        "model", "usage": {"prompt_tokens", "total_tokens"}}; errors {"error": {"message", "type",
                        "param", "code"}}. Works with the `openai` client (`base_url=http://HOST:PORT/v1`).
  POST /v1/search       {"index", "query" | "queries", "top_k"?}          -> {"results": [[{id, score, rank}]]}
                        over the indexes served (`bertkit serve --index NAME=DIR`), one list per query; the ids
                        are those `bertkit embed` recorded (a JSONL input's --id-field, else "file:line")
  POST /v1/cluster      {"texts": [...], "min_cluster_size"?}             -> {"clusters": [{cluster, size, keywords,
                        members}], "labels", "coords"} (HDBSCAN over the sentence vectors, keywords by c-TF-IDF)
  GET  /healthz, GET /metrics (Prometheus text), GET /v1/models, GET /v1/indexes
Every body may name a `"model"` when several are served. An endpoint the model has no head for answers 404; bad
input answers 4xx with a message naming the field (`texts[3]: empty text`); the service never answers 5xx for
input, and an unexpected failure is a JSON 500 (logged with its traceback on the server, never sent). /metrics
counts every response by its real status.

Bounded work per request, whoever sends it:
- Bodies: JSON only (`Content-Type: application/json`, else 415: a cross-site form cannot post without a
  preflight), at most `max_body_bytes` (413; the rest of an over-limit body is read and discarded up to
  `max_discard_bytes` first, so that clients which send the whole body before reading, like urllib, see the 413).
- Tokens, not characters: at admission every text is tokenised and charged the tokens the model will read
  (windows of a long text included); a text or request over `max_tokens` is refused with 413 naming the field
  (`texts[2]: 20002 tokens ...`). A text with no visible character (only whitespace, zero-width or control
  characters) is a 400. Longer than `max_chars` characters: `on_long_text="truncate"` cuts it and says so
  (`"truncated": true`), `"reject"` answers 413.
- /v1/cluster takes up to `max_cluster_items` texts and `max_cluster_tokens` tokens (clustering wants many
  texts; its work is bounded apart from the other endpoints'), and runs one clustering at a time (a request
  that waits longer than `request_timeout_s` for its turn gets 503 + Retry-After).
- Each model has its own queue and worker (`batcher.py`): one model's long batch never delays another's; a model
  call holds at most `max_batch_tokens`; a request whose client disconnects or whose `request_timeout_s` passes
  is dropped from the queue, or stopped between model calls if it has started. /healthz answers 503 "stalled",
  naming the model, when a model call has run longer than `stall_after_s` (or a worker died).
- Connections (`protocol.py`, `bertkit serve`): headers due within `header_timeout_s`, the body within
  `body_timeout_s`, at most `max_connections` at once (uvicorn answers 503 beyond it).
- `api_key`: everything but /healthz and the static page shells (/, /docs, /static: no data in them) needs
  `Authorization: Bearer KEY` (RFC 6750: the scheme in any case, a bare key refused) or `X-API-Key: KEY`,
  compared in constant time. The page and /docs keep the key in the browser's localStorage and send it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hmac
import json
import logging
import os
import time
import unicodedata
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.requests import ClientDisconnect

from bertkit.infer.predictor import Predictor
from bertkit.serve.inputs import BadRequest, openai_error, read_embeddings, read_int, read_queries, read_texts
from bertkit.serve.inputs import show as _show
from bertkit.serve.batcher import BatcherSettings, MicroBatcher, QueueFull, ShuttingDown
from bertkit.serve.protocol import CONFIG_ENV, DEFAULT_BODY_TIMEOUT_S, DEFAULT_HEADER_TIMEOUT_S, GuardedH11Protocol
from bertkit.task_families import ENDPOINTS, endpoints_of

log = logging.getLogger("bertkit.serve")
STATIC = Path(__file__).parent / "static"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
OPENAI_PATHS = ("/v1/embeddings",)  # errors in OpenAI's shape there
RESERVED_NAMES = ("object", "data")  # /v1/models is also OpenAI's list: these keys are taken
PUBLIC = ("/healthz", "/", "/docs")  # with /static/*: no key needed (no data; the page asks for the key)
# The endpoints, their request schemas and how a request becomes a model call are the task families'
# (`bertkit.task_families`): a model answers its family's endpoints and the embedding ones.


@dataclass
class ServeSettings:
    """Field names are the `bertkit serve` flags (`max_tokens` -> `--max-tokens`)."""
    api_key: str | None = None
    max_body_bytes: int = 1 << 20
    max_discard_bytes: int = 64 << 20  # an over-limit body is read and dropped up to this before the 413
    max_items: int = 256  # texts or pairs per request
    max_chars: int = 20_000  # per text
    on_long_text: str = "truncate"  # truncate | reject
    max_tokens: int = 4096  # per request, windows included (~1.2-1.6 s of MiniLM-L6 on one core)
    max_cluster_items: int = 2000  # texts per /v1/cluster request
    max_cluster_tokens: int = 65_536  # tokens per /v1/cluster request (~20 s of MiniLM-L6 on one core)
    request_timeout_s: float = 30.0
    stall_after_s: float = 10.0  # a model call running longer: /healthz says "stalled"
    header_timeout_s: float = DEFAULT_HEADER_TIMEOUT_S
    body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S
    max_connections: int = 128
    batcher: BatcherSettings = field(default_factory=BatcherSettings)

    def problems(self) -> list[tuple[str, Any, str]]:
        """What is out of range, as (field, value, why); empty when all is well."""
        at_least = {"max_body_bytes": 1, "max_discard_bytes": 0, "max_items": 1, "max_chars": 1, "max_tokens": 1,
                    "max_cluster_items": 3, "max_cluster_tokens": 1, "max_connections": 1, "max_batch": 1,
                    "max_wait_ms": 0, "max_queue": 1, "max_batch_tokens": 1}
        positive = {"request_timeout_s", "stall_after_s", "header_timeout_s", "body_timeout_s"}
        out = []
        for obj in (self, self.batcher):
            for f in fields(obj):
                value = getattr(obj, f.name)
                number = isinstance(value, (int, float)) and not isinstance(value, bool) and value == value
                if f.name in positive and not (number and value > 0):
                    out.append((f.name, value, "must be a positive number of seconds"))
                elif f.name in at_least and not (number and value >= at_least[f.name]):
                    out.append((f.name, value, f"must be at least {at_least[f.name]}"))
        if self.on_long_text not in ("truncate", "reject"):
            out.append(("on_long_text", self.on_long_text, "choose truncate or reject"))
        return out


class ClientGone(Exception):
    """The client disconnected before its answer was ready."""


def token_costs(p: Predictor, op: str, items: list, names: list[str], budget: int, options: dict | None = None
                ) -> list[int]:
    """The tokens the model will read for each item (windows included: the family's `cost`), checked against
    the per-request budget: BadRequest(400) for an item with no piece at all, BadRequest(413) naming the item or
    the request when over. Runs the tokenizer over everything, so it is called off the event loop."""
    strings = [s for x in items for s in (x if isinstance(x, tuple) else (x,))]
    pieces = [len(e) for e in p.tok.encode_batch(strings, add_special_tokens=False)]
    per_item, k = [], 0
    for x, name in zip(items, names):
        width = len(x) if isinstance(x, tuple) else 1  # a pair, or (question, context)
        counts, k = tuple(pieces[k:k + width]), k + width
        sides = p.task_family.side_names(op, name) if width == 2 else (name,)
        for n, where in zip(counts, sides):
            if n == 0:
                raise BadRequest(400, f"{where}: empty text (no visible character)")
        cost, what = p.task_family.cost(p, op, counts, name, options)
        if cost > budget:
            raise BadRequest(413, f"{name}: {what}; limit {budget} tokens per request (max_tokens)")
        per_item.append(cost)
    if sum(per_item) > budget:
        raise BadRequest(413, f"{names[0].split('[')[0]}: {sum(per_item)} tokens in all, limit {budget} tokens "
                              f"per request (max_tokens): send fewer or shorter texts")
    return per_item


# ---- metrics ---------------------------------------------------------------------------------------------------------
class Metrics:
    def __init__(self):
        self.requests: dict[tuple[str, int], int] = {}
        self.latency: dict[str, list[int]] = {}
        self.latency_sum: dict[str, float] = {}

    def observe(self, endpoint: str, status: int, seconds: float) -> None:
        self.requests[(endpoint, status)] = self.requests.get((endpoint, status), 0) + 1
        counts = self.latency.setdefault(endpoint, [0] * (len(LATENCY_BUCKETS) + 1))
        counts[next((i for i, b in enumerate(LATENCY_BUCKETS) if seconds <= b), len(LATENCY_BUCKETS))] += 1
        self.latency_sum[endpoint] = self.latency_sum.get(endpoint, 0.0) + seconds

    def render(self, batchers: dict[str, MicroBatcher], predictors: dict[str, Predictor]) -> str:
        out = ["# HELP bertkit_requests_total Requests by endpoint and status.", "# TYPE bertkit_requests_total counter"]
        out += [f'bertkit_requests_total{{endpoint="{e}",status="{s}"}} {n}' for (e, s), n in sorted(self.requests.items())]
        out += ["# HELP bertkit_request_seconds Request latency.", "# TYPE bertkit_request_seconds histogram"]
        for e, counts in sorted(self.latency.items()):
            total = 0
            for b, c in zip((*LATENCY_BUCKETS, "+Inf"), counts):
                total += c
                out.append(f'bertkit_request_seconds_bucket{{endpoint="{e}",le="{b}"}} {total}')
            out += [f'bertkit_request_seconds_sum{{endpoint="{e}"}} {self.latency_sum[e]:.6f}',
                    f'bertkit_request_seconds_count{{endpoint="{e}"}} {total}']
        out += ["# HELP bertkit_batch_size Items per model call (recent calls).", "# TYPE bertkit_batch_size histogram"]
        sizes = [s for b in batchers.values() for s in list(b.stats.sizes)]
        for b in (*BATCH_BUCKETS, "+Inf"):
            n = sum(1 for s in sizes if b == "+Inf" or s <= b)
            out.append(f'bertkit_batch_size_bucket{{le="{b}"}} {n}')
        out += [f"bertkit_batch_size_sum {sum(sizes)}", f"bertkit_batch_size_count {len(sizes)}"]
        out += ["# HELP bertkit_queue_depth Items waiting for the model.", "# TYPE bertkit_queue_depth gauge"]
        out += [f'bertkit_queue_depth{{model="{m}"}} {b.depth}' for m, b in batchers.items()]
        out += ["# HELP bertkit_model_call_seconds How long the running model call has run (0: idle).",
                "# TYPE bertkit_model_call_seconds gauge"]
        out += [f'bertkit_model_call_seconds{{model="{m}"}} {b.busy_for():.3f}' for m, b in batchers.items()]
        out += ["# HELP bertkit_dropped_total Started requests stopped between model calls (client gone, deadline).",
                "# TYPE bertkit_dropped_total counter"]
        out += [f'bertkit_dropped_total{{model="{m}"}} {b.stats.dropped}' for m, b in batchers.items()]
        out += ["# HELP bertkit_cache_hits_total Predictor cache hits.", "# TYPE bertkit_cache_hits_total counter"]
        out += [f'bertkit_cache_hits_total{{model="{m}"}} {p.cache_hits}' for m, p in predictors.items()]
        out += ["# HELP bertkit_cache_misses_total Predictor cache misses.", "# TYPE bertkit_cache_misses_total counter"]
        out += [f'bertkit_cache_misses_total{{model="{m}"}} {p.cache_misses}' for m, p in predictors.items()]
        return "\n".join(out) + "\n"


def _endpoint_label(path: str) -> str:
    """A bounded set of metric labels, whatever paths clients try."""
    if path.startswith("/v1/") and path[4:] in ENDPOINTS:
        return path[4:]
    known = {"/healthz": "healthz", "/metrics": "metrics", "/v1/models": "models", "/openapi.json": "openapi",
             "/docs": "docs", "/": "page", "/v1/embeddings": "embeddings", "/v1/search": "search",
             "/v1/cluster": "cluster", "/v1/indexes": "indexes"}
    return known.get(path, "static" if path.startswith("/static/") else "other")


async def _drain(receive, bound: int) -> bool:
    """Read and drop the rest of a request body, up to `bound` bytes; True if it was all read."""
    seen = 0
    while seen <= bound:
        message = await receive()
        if message["type"] != "http.request":
            return False
        seen += len(message.get("body", b""))
        if not message.get("more_body", False):
            return True
    return False


def _json_error(status: int, message: str, headers: dict | None = None, openai: bool = False) -> JSONResponse:
    message = _show(message, 2000)
    return JSONResponse(openai_error(status, message) if openai else {"error": message}, status_code=status,
                        headers=headers)


class Guard:
    """The outermost layer of the app (pure ASGI): the API key, the real status of every response in /metrics,
    and a JSON 500 instead of a traceback for anything unexpected."""

    def __init__(self, app, settings: ServeSettings, metrics: Metrics):
        self.app, self.settings, self.metrics = app, settings, metrics
        self.key = settings.api_key.encode("utf-8") if settings.api_key is not None else None

    def refusal(self, headers: dict[bytes, bytes]) -> str | None:
        """Why the request's key is not accepted (None: it is)."""
        auth, x_key = headers.get(b"authorization"), headers.get(b"x-api-key")
        if auth is not None:
            scheme, _, token = auth.strip().partition(b" ")
            token = token.strip(b" ")
            if scheme.lower() != b"bearer" or not token:
                return "Authorization: expected 'Bearer <key>' (RFC 6750)"
            given = token
        elif x_key is not None:
            given = x_key
        else:
            return "missing API key: send Authorization: Bearer <key> (or X-API-Key)"
        return None if hmac.compare_digest(given, self.key) else "wrong API key"

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, status = time.perf_counter(), None

        async def send_and_see(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        path = scope["path"]
        try:
            if self.key is not None and path not in PUBLIC and not path.startswith("/static/"):
                why = self.refusal(dict(scope["headers"]))
                if why is not None:
                    drained = await _drain(receive, self.settings.max_discard_bytes)
                    response = _json_error(401, why, {"WWW-Authenticate": "Bearer",
                                                      **({} if drained else {"Connection": "close"})},
                                           openai=path in OPENAI_PATHS)
                    return await response(scope, receive, send_and_see)
            await self.app(scope, receive, send_and_see)
        except Exception as e:
            log.exception("%s %s failed", scope.get("method"), path)
            if status is None:
                await _json_error(500, f"internal error ({type(e).__name__}); the server log has the details",
                                  {"Connection": "close"}, openai=path in OPENAI_PATHS)(scope, receive, send_and_see)
            else:  # the answer had begun: what the client got is broken, count it as a failure
                status = 500
        finally:
            # no response at all: the client went away first (nginx's 499)
            self.metrics.observe(_endpoint_label(path), status if status is not None else 499,
                                 time.perf_counter() - start)


# ---- vectors, indexes and clusters ----------------------------------------------------------------------------------
def embedding_dim(p: Predictor) -> int:
    """The length of the sentence vectors `p.embed` gives (a sentence-transformers Dense may change it)."""
    return getattr(p.pooling, "output_dim", None) or p.config.hidden_size


def encode_vector(v: np.ndarray, encoding: str) -> list[float] | str:
    """One vector as OpenAI sends it: a list of floats, or base64 of its little-endian float32 bytes."""
    v = np.asarray(v, dtype="<f4")
    return base64.b64encode(v.tobytes()).decode("ascii") if encoding == "base64" else v.tolist()


@dataclass
class ServedIndex:
    """An index and the served model that embeds its queries (its vectors' model, by fingerprint)."""
    index: Any  # bertkit.apps.index.Index
    model: str
    path: str = ""


def load_indexes(index_dirs: dict[str, str], model_dirs: dict[str, str]) -> dict[str, ServedIndex]:
    """Each index (name -> directory) with the served model (name -> directory) whose fingerprint its vectors
    carry; ValueError naming both when no served model made them (queries embedded by another model would be
    compared with vectors of a different space)."""
    if not index_dirs:
        return {}
    from bertkit.apps.index import Index
    from bertkit.apps.vectors import model_fingerprint

    prints = {name: model_fingerprint(path) for name, path in model_dirs.items()}
    out = {}
    for name, path in index_dirs.items():
        index = Index.load(path)
        wanted = index.model
        model = next((m for m, fp in prints.items() if fp == wanted["fingerprint"]), None)
        if model is None:
            served = ", ".join(f"{m} = {model_dirs[m]} (fingerprint {fp})" for m, fp in prints.items())
            raise ValueError(f"index '{name}' ({path}) holds vectors of model {wanted.get('path') or '?'} "
                             f"(fingerprint {wanted['fingerprint']}), which is not served; served: {served}. "
                             f"Serve that model too (--model DIR)")
        out[name] = ServedIndex(index, model, str(path))
    return out


def clusters_payload(found, n: int) -> dict:
    """A `bertkit.apps.cluster` result as JSON: the groups (largest first; -1, the noise, last) with their keywords
    and members, each text's label and its 2-D coordinates."""
    labels = [int(x) for x in found.labels]
    members: dict[int, list[int]] = {}
    for i, label in enumerate(labels):
        members.setdefault(label, []).append(i)
    order = sorted(members, key=lambda c: (c == -1, -len(members[c]), c))
    # c-TF-IDF keywords come as (word, weight): the words are what a reader wants
    keywords = {int(k): [w[0] if isinstance(w, (tuple, list)) else w for w in v]
                for k, v in (found.keywords or {}).items()}
    return {"clusters": [{"cluster": c, "size": len(members[c]), "keywords": keywords.get(c, []),
                          "members": members[c]} for c in order],
            "labels": labels, "coords": np.nan_to_num(np.asarray(found.projection, dtype=float)).round(5).tolist(),
            "noise": len(members.get(-1, [])), "count": n}


# ---- the model side (runs in each model's batcher thread) -----------------------------------------------------------
def run_batch(p: Predictor, op: str, items: list, options: dict) -> list:
    return p.task_family.run(p, op, items, options)


# ---- the app ---------------------------------------------------------------------------------------------------------
def create_app(predictors: dict[str, Predictor], settings: ServeSettings | None = None,
               indexes: dict[str, ServedIndex] | None = None) -> FastAPI:
    """The service over `predictors` (name -> Predictor) and `indexes` (name -> an index and the served model that
    embeds its queries: `load_indexes`)."""
    if not predictors:
        raise ValueError("serve: no model to serve")
    if taken := [n for n in predictors if n in RESERVED_NAMES]:
        raise ValueError(f"serve: a model cannot be named '{taken[0]}' (/v1/models uses that key); rename it")
    indexes = indexes or {}
    if unknown := [n for n, x in indexes.items() if x.model not in predictors]:
        raise ValueError(f"serve: index '{unknown[0]}' is served by model '{indexes[unknown[0]].model}', which is "
                         f"not served")
    settings = settings or ServeSettings()
    if problems := settings.problems():
        raise ValueError("serve settings: " + "; ".join(f"{f}: {v!r}: {why}" for f, v, why in problems))
    default = next(iter(predictors))
    batchers = {name: MicroBatcher(lambda op, items, opts, p=p: run_batch(p, op, items, opts), settings.batcher,
                                   name=name) for name, p in predictors.items()}
    metrics = Metrics()
    started = int(time.time())

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        for b in batchers.values():  # graceful: what is queued is answered before the process exits
            b.close(wait=False)
        for b in batchers.values():
            b.close(wait=True)

    app = FastAPI(title="bertkit", version="0.1.0", lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="BERT models served with micro-batching. Bodies are JSON; see each endpoint.")
    app.state.batchers, app.state.predictors, app.state.metrics = batchers, predictors, metrics
    app.state.settings = settings
    app.add_middleware(Guard, settings=settings, metrics=metrics)

    async def read_body(request: Request) -> dict:
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        stream = request.stream()

        async def refuse(status: int, message: str):
            seen, drained = 0, False
            async for chunk in stream:  # the rest of the body, read and dropped up to a bound (see the docstring)
                seen += len(chunk)
                if seen > settings.max_discard_bytes:
                    break
            else:
                drained = True
            raise BadRequest(status, message, **({} if drained else {"Connection": "close"}))

        if media != "application/json":
            await refuse(415, f"Content-Type: expected application/json, got '{_show(media) or 'nothing'}'")
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > settings.max_body_bytes:
            if int(declared) > settings.max_discard_bytes:  # not worth reading: answer and close at once
                raise BadRequest(413, f"body: {declared} bytes, limit {settings.max_body_bytes}", Connection="close")
            await refuse(413, f"body: {declared} bytes, limit {settings.max_body_bytes}")
        raw = bytearray()
        async for chunk in stream:
            raw += chunk
            if len(raw) > settings.max_body_bytes:
                await refuse(413, f"body: more than {settings.max_body_bytes} bytes")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise BadRequest(400, f"body: not valid UTF-8 (byte {e.start})") from None
        try:
            body = json.loads(text)
        except json.JSONDecodeError as e:
            raise BadRequest(400, f"body: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
        except RecursionError:
            raise BadRequest(400, "body: JSON nested too deeply") from None
        if not isinstance(body, dict):
            raise BadRequest(400, f"body: expected a JSON object, got {type(body).__name__}")
        return body

    def pick_model(body: dict, op: str) -> str:
        name = body.get("model", default)
        if not isinstance(name, str):
            raise BadRequest(400, f"model: expected a string, got {type(name).__name__}")
        if any(unicodedata.category(ch) == "Cs" for ch in name):
            raise BadRequest(400, "model: contains a lone surrogate (not valid Unicode)")
        if name not in predictors:
            raise BadRequest(404, f"model: '{_show(name)}' is not served (served: {', '.join(predictors)})")
        family = predictors[name].task_family
        if op not in endpoints_of(family):
            raise BadRequest(404, f"/v1/{op}: model '{name}' is a {family.name} model and has no head for it")
        return name

    async def until_disconnected(request: Request) -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    async def run(request: Request, model: str, op: str, items: list, names: list[str], budget: int | None = None,
                  **options) -> tuple[list, list[int]]:
        """(results, tokens charged per item): admission (the token budget, off the event loop), then the model's
        queue; the work is cancelled if the client disconnects first."""
        costs = await asyncio.to_thread(token_costs, predictors[model], op, items, names,
                                        budget or settings.max_tokens, options)
        job = asyncio.ensure_future(batchers[model].submit(op, items, costs, settings.request_timeout_s, **options))
        gone = asyncio.ensure_future(until_disconnected(request))
        try:
            await asyncio.wait({job, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
            if not job.done():  # the client went away (or this handler was cancelled): so does its work
                job.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await job
                raise ClientGone()
        return job.result(), costs

    async def respond(work, openai: bool = False) -> Response:
        """`await work()` (a JSON payload) as the response, and every refusal as its status."""
        try:
            return JSONResponse(await work())
        except BadRequest as e:
            return _json_error(e.status, str(e), e.headers, openai)
        except QueueFull as e:
            return _json_error(503, f"overloaded: {e}", {"Retry-After": "1"}, openai)
        except ShuttingDown as e:
            return _json_error(503, str(e), {"Retry-After": "5"}, openai)
        except TimeoutError as e:
            return _json_error(504, str(e), None, openai)
        except (ClientGone, ClientDisconnect):
            return Response(status_code=499)  # nobody reads it; /metrics counts it
        except ValueError as e:  # the library's input checks (e.g. a text that tokenises to nothing)
            return _json_error(400, str(e), None, openai)

    async def handle(op: str, request: Request):
        async def work():
            body = await read_body(request)
            model = pick_model(body, op)
            p = predictors[model]
            # the family checks the body (a fill-mask request tokenises its texts: off the event loop)
            call = await asyncio.to_thread(p.task_family.parse, op, body, settings, p)
            results, _ = await run(request, model, call.op, call.items, call.names, **(call.options or {}))
            return call.finish(results)

        return await respond(work)

    def route(op: str):
        async def endpoint(request: Request):
            return await handle(op, request)

        endpoint.__name__ = op.replace("-", "_")
        schema, summary = ENDPOINTS[op].schema(op)
        app.post(f"/v1/{op}", summary=summary, openapi_extra={"requestBody": {
            "required": True, "content": {"application/json": {"schema": schema}}}})(endpoint)

    for op in ENDPOINTS:
        route(op)

    def schema(summary: str, properties: dict, required: list[str], example: dict) -> dict:
        return {"summary": summary, "openapi_extra": {"requestBody": {"required": True, "content": {
            "application/json": {"schema": {"type": "object", "properties": properties, "required": required,
                                            "example": example}}}}}}

    texts_schema = {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1}
    model_schema = {"type": "string", "description": "which served model (default: the first)"}

    @app.post("/v1/embeddings", **schema(
        "OpenAI-compatible embeddings: the model's own sentence vectors", {
            "input": {"oneOf": [{"type": "string", "minLength": 1}, texts_schema]}, "model": model_schema,
            "encoding_format": {"enum": ["float", "base64"], "description": "base64: little-endian float32"},
            "dimensions": {"type": "integer", "description": "only the model's own dimension (vectors of a "
                                                             "model not trained for it are not cut)"}},
        ["input"], {"input": ["A man is playing a guitar.", "Stocks fell sharply on Monday."],
                    "encoding_format": "float"}))
    async def embeddings(request: Request):
        async def work():
            body = await read_body(request)
            model = pick_model(body, "embed")
            texts, names, encoding, dimensions = read_embeddings(body, settings)
            dim = embedding_dim(predictors[model])
            if dimensions is not None and dimensions != dim:
                # cutting vectors is only sound for a model trained for it (Matryoshka); refused, not guessed
                raise BadRequest(400, f"dimensions: {dimensions}: model '{model}' gives {dim}-dimensional vectors "
                                      f"and cannot shorten them; leave dimensions out or send {dim}")
            # the model's own vectors, as sentence-transformers' encode gives them (no extra normalisation)
            vectors, costs = await run(request, model, "embed", texts, names, normalize=False)
            return {"object": "list", "model": model,
                    "data": [{"object": "embedding", "index": i, "embedding": encode_vector(v, encoding)}
                             for i, v in enumerate(vectors)],
                    "usage": {"prompt_tokens": sum(costs), "total_tokens": sum(costs)}}

        return await respond(work, openai=True)

    def pick_index(body: dict) -> str:
        if not indexes:
            raise BadRequest(404, "index: no index is served (start bertkit serve with --index NAME=DIR)")
        name = body.get("index", next(iter(indexes)))
        if not isinstance(name, str):
            raise BadRequest(400, f"index: expected a string, got {type(name).__name__}")
        if name not in indexes:
            raise BadRequest(404, f"index: '{_show(name)}' is not served (served: {', '.join(indexes)})")
        return name

    @app.post("/v1/search", **schema(
        "the nearest texts of a served index to each query (cosine or dot, as the index was built)", {
            "index": {"type": "string", "description": "which served index (default: the first)"},
            "query": {"type": "string", "minLength": 1}, "queries": texts_schema,
            "top_k": {"type": "integer", "minimum": 1, "description": "hits per query (default 10, at most the "
                                                                      "index size)"}},
        [], {**({"index": next(iter(indexes))} if indexes else {}), "query": "A man is playing a guitar.",
             "top_k": 1}))
    async def search(request: Request):
        async def work():
            body = await read_body(request)
            name = pick_index(body)
            served = indexes[name]
            queries, names = read_queries(body, settings)
            size = len(served.index)
            top_k = read_int(body, "top_k", min(10, size), 1, size, f"above the size of index '{name}' ({size})")
            vectors, costs = await run(request, served.model, "embed", queries, names, normalize=False)
            # exact search over a large index is a matrix product over the whole corpus: never on the event loop
            hits = await asyncio.to_thread(served.index.search, np.stack(vectors), top_k)
            return {"index": name, "model": served.model, "results": hits, "usage": {"prompt_tokens": sum(costs)}}

        return await respond(work)

    cluster_gate = asyncio.Semaphore(1)  # clustering takes the cores; one at a time, the others wait their turn
    cluster_settings = replace(settings, max_items=settings.max_cluster_items)

    @app.post("/v1/cluster", **schema(
        "groups of similar texts (HDBSCAN over the sentence vectors), their keywords and a 2-D map", {
            "texts": texts_schema, "model": model_schema,
            "min_cluster_size": {"type": "integer", "minimum": 2,
                                 "description": "the smallest group (default: a tenth of the texts, 2 to 15)"},
            "assign_noise": {"type": "boolean", "description": "put texts left as noise in the nearest group"}},
        ["texts"], {"texts": ["The striker scored twice in the final.", "The keeper saved a late penalty.",
                              "The coach praised his defenders after the win.", "Shares fell as profits dropped.",
                              "The central bank raised interest rates.", "Oil prices rose on supply fears."],
                    "min_cluster_size": 2}))
    async def cluster_texts(request: Request):
        async def work():
            from bertkit.apps.cluster import cluster

            body = await read_body(request)
            model = pick_model(body, "embed")
            texts, _ = read_texts(body, "texts", cluster_settings)
            if len(texts) < 3:
                raise BadRequest(400, f"texts: {len(texts)} text(s); clustering needs at least 3")
            # a pasted handful of texts needs smaller groups than the library's default (15) for a corpus
            default = min(15, max(2, len(texts) // 10))
            options = {"min_cluster_size": read_int(body, "min_cluster_size", default, 2, len(texts),
                                                    f"more than the {len(texts)} texts sent")}
            assign = body.get("assign_noise", False)
            if not isinstance(assign, bool):
                raise BadRequest(400, f"assign_noise: expected true or false, got {type(assign).__name__}")
            options["assign_noise"] = assign
            names = [f"texts[{i}]" for i in range(len(texts))]
            vectors, _ = await run(request, model, "embed", texts, names, budget=settings.max_cluster_tokens,
                                   normalize=False)
            try:
                await asyncio.wait_for(cluster_gate.acquire(), settings.request_timeout_s)
            except TimeoutError:
                raise QueueFull("another clustering is running; try again later") from None
            try:
                found = await asyncio.to_thread(cluster, np.stack(vectors), texts, **options)
            finally:
                cluster_gate.release()
            return clusters_payload(found, len(texts))

        return await respond(work)

    @app.get("/healthz")
    def healthz():
        # the process id tells which of `--workers N` processes answered
        stalled = [{"model": m, "running_s": round(b.busy_for(), 1), **({} if b.alive else {"worker": "dead"})}
                   for m, b in batchers.items() if b.busy_for() > settings.stall_after_s or not b.alive]
        out = {"status": "stalled" if stalled else "ok", "models": list(predictors),
               "queue_depth": sum(b.depth for b in batchers.values()), "pid": os.getpid(),
               **({"stalled": stalled} if stalled else {})}
        return JSONResponse(out, status_code=503 if stalled else 200)

    @app.get("/metrics", response_class=PlainTextResponse)
    def prometheus():
        return metrics.render(batchers, predictors)

    @app.get("/v1/models")
    def models():
        """name -> {family, endpoints, labels, dimension, backend, engine}, and the same as OpenAI's list
        (`object`, `data`) so that OpenAI clients can list the models."""
        out = {name: {"family": p.family, "endpoints": sorted(endpoints_of(p.task_family)),
                      "backend": p.settings.backend, "engine": p.engine(),
                      "labels": [p.config.id2label[i] for i in range(p.config.num_labels)]
                      if p.task_family.class_labels and p.config.id2label else None,
                      "dimension": embedding_dim(p)}
               for name, p in predictors.items()}
        return {**out, "object": "list",
                "data": [{"id": name, "object": "model", "created": started, "owned_by": "bertkit", **info}
                         for name, info in out.items()]}

    @app.get("/v1/indexes")
    def list_indexes():
        return {"indexes": [{"name": name, "size": len(x.index), "model": x.model} for name, x in indexes.items()]}

    if STATIC.exists():
        app.mount("/static", StaticFiles(directory=STATIC), name="static")

        @app.get("/", include_in_schema=False)
        def page():
            return FileResponse(STATIC / "index.html")

        @app.get("/docs", include_in_schema=False)
        def docs():  # the package's own page over /openapi.json: works offline, no third-party assets
            return FileResponse(STATIC / "docs.html")

    return app


# ---- processes ---------------------------------------------------------------------------------------------------
def load_predictors(models: dict[str, str], threads: int = 1, backend: str = "auto", int8: bool = False,
                    cache_size: int = 0, calibration: dict[str, str] | None = None,
                    bf16: bool = False) -> dict[str, Predictor]:
    """`calibration` {model name: file of inputs}: that model in int8 only where it agrees with fp32 on them
    (`infer.calibrate`)."""
    from bertkit.infer.batchio import int8_if_it_agrees_on_file
    from bertkit.infer.predictor import PredictorSettings

    settings = PredictorSettings(threads=threads, backend=backend, int8=int8, cache_size=cache_size, bf16=bf16)
    return {name: int8_if_it_agrees_on_file(path, calibration[name], settings)[0] if name in (calibration or {})
            else Predictor.from_pretrained(path, settings) for name, path in models.items()}


def server_options(settings: ServeSettings, in_process: bool = True) -> dict:
    """uvicorn options that enforce the connection limits of `settings`: the guarded protocol (read timeouts)
    and the connection cap. Worker processes (`in_process=False`) take the protocol class by name, and it reads
    its timeouts from the serve settings in the environment."""
    protocol = (GuardedH11Protocol.with_timeouts(settings.header_timeout_s, settings.body_timeout_s) if in_process
                else GuardedH11Protocol)
    return {"http": protocol, "limit_concurrency": settings.max_connections}


def settings_from_dict(raw: dict) -> ServeSettings:
    return ServeSettings(**{k: v for k, v in raw.items() if k != "batcher"}, batcher=BatcherSettings(**raw["batcher"]))


def app_from_env():
    """The app a worker process builds from the JSON config `bertkit serve` put in the environment
    (uvicorn's factory for --workers N: each process loads its own models)."""
    cfg = json.loads(os.environ[CONFIG_ENV])
    # the indexes first: a model that does not match fails before any model's weights are read
    indexes = load_indexes(cfg.get("indexes") or {}, cfg["models"])
    predictors = load_predictors(cfg["models"], cfg["threads"], cfg["backend"], cfg["int8"], cfg["cache_size"],
                                 cfg.get("calibration"), cfg.get("bf16", False))
    return create_app(predictors, settings_from_dict(cfg["settings"]), indexes)
