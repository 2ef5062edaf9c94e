"""The HTTP service: a thin FastAPI layer over Predictors, with micro-batching, limits and metrics.

Endpoints (JSON in, JSON out; OpenAPI schema at /docs):
  POST /v1/classify     {"texts": [...]} or {"pairs": [[a, b], ...]}  -> {"results": [{label, probs} | {score}]}
                        {"texts": [...], "explain": true} adds `words` and `sentences` with importance scores
  POST /v1/tag          {"texts": [...]}                              -> {"results": [{entities: [...]}]}
  POST /v1/answer       {"question": "...", "context": "..."}         -> {answer, start, end, score}
  POST /v1/embed        {"texts": [...]}                              -> {"vectors": [[...], ...]}
  POST /v1/similarity   {"pairs": [[a, b], ...]}                      -> {"scores": [...]} (cosine of embeddings)
  POST /v1/fill-mask    {"texts": ["... [MASK] ..."]}                 -> {"results": [{masks: [[{token, score}]]}]}
  GET  /healthz, GET /metrics (Prometheus text), GET /v1/models
Every body may name a `"model"` when several are served. An endpoint the model has no head for answers 404; bad
input answers 4xx with a message naming the field (`texts[3]: empty text`); the service never answers 5xx for
input. Long texts: `on_long_text="truncate"` cuts them at `max_chars` and says so (`"truncated": true`),
`"reject"` answers 413.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse
from fastapi.staticfiles import StaticFiles

from bertkit.infer.predictor import Predictor
from bertkit.serve.batcher import BatcherSettings, MicroBatcher, QueueFull, ShuttingDown

STATIC = Path(__file__).parent / "static"
ENDPOINTS = ("classify", "tag", "answer", "embed", "similarity", "fill-mask")
FAMILY_OPS = {  # what each kind of model can answer
    "classification": {"classify", "embed", "similarity"},
    "regression": {"classify", "embed", "similarity"},
    "tagging": {"tag", "embed", "similarity"},
    "qa": {"answer", "embed", "similarity"},
    "embedding": {"embed", "similarity"},
    "fill-mask": {"fill-mask", "embed", "similarity"},
}
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


_TEXTS = {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1}
_PAIRS = {"type": "array", "minItems": 1,
          "items": {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 2, "maxItems": 2}}
_MODEL = {"type": "string", "description": "which served model (default: the first)"}
BODY_SCHEMAS = {
    "classify": {"type": "object", "properties": {"texts": _TEXTS, "pairs": _PAIRS, "model": _MODEL,
                                                  "explain": {"type": "boolean"}},
                 "description": "texts, or pairs for a sentence-pair model; explain: word and sentence importance "
                                "(gradient x input) with each answer"},
    "tag": {"type": "object", "properties": {"texts": _TEXTS, "model": _MODEL}, "required": ["texts"]},
    "answer": {"type": "object", "properties": {"question": {"type": "string", "minLength": 1},
                                                "context": {"type": "string", "minLength": 1}, "model": _MODEL},
               "required": ["question", "context"]},
    "embed": {"type": "object", "properties": {"texts": _TEXTS, "model": _MODEL}, "required": ["texts"]},
    "similarity": {"type": "object", "properties": {"pairs": _PAIRS, "model": _MODEL}, "required": ["pairs"]},
    "fill-mask": {"type": "object", "properties": {"texts": _TEXTS, "top_k": {"type": "integer", "minimum": 1,
                                                                               "maximum": 100}, "model": _MODEL},
                  "required": ["texts"]},
}
SUMMARIES = {
    "classify": "label and probabilities (or a score) for each text or pair",
    "tag": "entities with character offsets for each text",
    "answer": "the answer span of the context, with character offsets",
    "embed": "an L2-normalised sentence vector for each text",
    "similarity": "cosine similarity of the sentence vectors of each pair",
    "fill-mask": "the most likely pieces for each [MASK]",
}


@dataclass
class ServeSettings:
    api_key: str | None = None
    max_body_bytes: int = 1 << 20
    max_items: int = 256  # texts or pairs per request
    max_chars: int = 20_000  # per text
    on_long_text: str = "truncate"  # truncate | reject
    request_timeout_s: float = 30.0
    batcher: BatcherSettings = field(default_factory=BatcherSettings)


class BadRequest(ValueError):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


# ---- input checks ----------------------------------------------------------------------------------------------------
def _check_text(value: Any, where: str, settings: ServeSettings) -> tuple[str, bool]:
    """(text, truncated) or BadRequest naming `where`."""
    if not isinstance(value, str):
        raise BadRequest(400, f"{where}: expected a string, got {type(value).__name__}")
    if not value.strip():
        raise BadRequest(400, f"{where}: empty text")
    for i, ch in enumerate(value):
        kind = unicodedata.category(ch)
        if kind == "Cc" and ch not in "\t\n\r":
            raise BadRequest(400, f"{where}: control character U+{ord(ch):04X} at position {i}")
        if kind == "Cs":  # JSON can spell a lone surrogate (\ud800); it is not text
            raise BadRequest(400, f"{where}: lone surrogate U+{ord(ch):04X} at position {i} (not valid Unicode)")
    if len(value) > settings.max_chars:
        if settings.on_long_text == "reject":
            raise BadRequest(413, f"{where}: {len(value)} characters, limit {settings.max_chars}")
        return value[: settings.max_chars], True
    return value, False


def _texts(body: dict, key: str, settings: ServeSettings) -> tuple[list[str], list[bool]]:
    items = body.get(key)
    if not isinstance(items, list):
        raise BadRequest(400, f"{key}: expected a list of strings" + ("" if key in body else " (missing)"))
    if not items:
        raise BadRequest(400, f"{key}: empty list")
    if len(items) > settings.max_items:
        raise BadRequest(413, f"{key}: {len(items)} items, limit {settings.max_items} per request")
    checked = [_check_text(t, f"{key}[{i}]", settings) for i, t in enumerate(items)]
    return [t for t, _ in checked], [c for _, c in checked]


def _pairs(body: dict, settings: ServeSettings) -> tuple[list[str], list[str], list[bool]]:
    items = body.get("pairs")
    if not isinstance(items, list) or not items:
        raise BadRequest(400, "pairs: expected a non-empty list of [text, text_pair]")
    if len(items) > settings.max_items:
        raise BadRequest(413, f"pairs: {len(items)} items, limit {settings.max_items} per request")
    a, b, cut = [], [], []
    for i, p in enumerate(items):
        if not isinstance(p, list) or len(p) != 2:
            raise BadRequest(400, f"pairs[{i}]: expected [text, text_pair]")
        (x, c1), (y, c2) = _check_text(p[0], f"pairs[{i}][0]", settings), _check_text(p[1], f"pairs[{i}][1]", settings)
        a.append(x), b.append(y), cut.append(c1 or c2)
    return a, b, cut


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

    def render(self, batcher: MicroBatcher, predictors: dict[str, Predictor]) -> str:
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
        sizes = list(batcher.stats.sizes)
        for b in (*BATCH_BUCKETS, "+Inf"):
            n = sum(1 for s in sizes if b == "+Inf" or s <= b)
            out.append(f'bertkit_batch_size_bucket{{le="{b}"}} {n}')
        out += [f"bertkit_batch_size_sum {sum(sizes)}", f"bertkit_batch_size_count {len(sizes)}"]
        out += ["# HELP bertkit_queue_depth Items waiting for the model.", "# TYPE bertkit_queue_depth gauge",
                f"bertkit_queue_depth {batcher.depth}"]
        out += ["# HELP bertkit_cache_hits_total Predictor cache hits.", "# TYPE bertkit_cache_hits_total counter"]
        out += [f'bertkit_cache_hits_total{{model="{m}"}} {p.cache_hits}' for m, p in predictors.items()]
        out += ["# HELP bertkit_cache_misses_total Predictor cache misses.", "# TYPE bertkit_cache_misses_total counter"]
        out += [f'bertkit_cache_misses_total{{model="{m}"}} {p.cache_misses}' for m, p in predictors.items()]
        return "\n".join(out) + "\n"


# ---- the model side (runs in the batcher's worker thread) -----------------------------------------------------------
def run_batch(predictors: dict[str, Predictor], model: str, op: str, items: list, options: dict) -> list:
    p = predictors[model]
    if op == "classify":
        if options.get("pairs"):
            return p.classify([a for a, _ in items], [b for _, b in items])
        return p.classify(items)
    if op == "explain":
        return [p.explain(t) for t in items]
    if op == "tag":
        return p.tag(items)
    if op == "answer":
        return p.answer([q for q, _ in items], [c for _, c in items])
    if op == "embed":
        return list(p.embed(items, normalize=options.get("normalize", True)))
    if op == "fill-mask":
        return p.fill_mask(items, top_k=options.get("top_k", 5))
    raise ValueError(f"unknown operation {op}")


# ---- the app ---------------------------------------------------------------------------------------------------------
def create_app(predictors: dict[str, Predictor], settings: ServeSettings | None = None) -> FastAPI:
    if not predictors:
        raise ValueError("serve: no model to serve")
    settings = settings or ServeSettings()
    default = next(iter(predictors))
    batcher = MicroBatcher(lambda m, op, items, opts: run_batch(predictors, m, op, items, opts), settings.batcher)
    metrics = Metrics()
    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        batcher.close(wait=True)  # graceful: what is queued is answered before the process exits

    app = FastAPI(title="bertkit", version="0.1.0", lifespan=lifespan,
                  description="BERT models served with micro-batching. Bodies are JSON; see each endpoint.")
    app.state.batcher, app.state.predictors, app.state.metrics = batcher, predictors, metrics

    def error(status: int, message: str, **headers) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status, headers=headers or None)

    async def read_body(request: Request) -> dict:
        if settings.api_key is not None:
            given = request.headers.get("x-api-key") or request.headers.get("authorization", "").removeprefix(
                "Bearer ")
            if given != settings.api_key:
                raise BadRequest(401, "missing or wrong API key (X-API-Key or Authorization: Bearer)")
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > settings.max_body_bytes:
            raise BadRequest(413, f"body: {declared} bytes, limit {settings.max_body_bytes}")
        raw = b""
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > settings.max_body_bytes:
                raise BadRequest(413, f"body: more than {settings.max_body_bytes} bytes")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise BadRequest(400, f"body: not valid UTF-8 (byte {e.start})") from None
        try:
            body = json.loads(text)
        except json.JSONDecodeError as e:
            raise BadRequest(400, f"body: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
        if not isinstance(body, dict):
            raise BadRequest(400, f"body: expected a JSON object, got {type(body).__name__}")
        return body

    def pick_model(body: dict, op: str) -> str:
        name = body.get("model", default)
        if not isinstance(name, str) or name not in predictors:
            raise BadRequest(404, f"model: '{name}' is not served (served: {', '.join(predictors)})")
        family = predictors[name].family
        if op not in FAMILY_OPS[family]:
            raise BadRequest(404, f"/v1/{op}: model '{name}' is a {family} model and has no head for it")
        return name

    async def handle(op: str, request: Request):
        start = time.perf_counter()
        status = 200
        try:
            body = await read_body(request)
            model = pick_model(body, op)
            p = predictors[model]
            timeout = settings.request_timeout_s
            if op == "classify":
                if "pairs" in body:
                    a, b, cut = _pairs(body, settings)
                    results = await batcher.submit(model, op, list(zip(a, b)), timeout, pairs=True)
                else:
                    texts, cut = _texts(body, "texts", settings)
                    explain = body.get("explain", False)
                    if not isinstance(explain, bool):
                        raise BadRequest(400, "explain: expected true or false")
                    if explain and (p.family != "classification" or not isinstance(p.model, torch.nn.Module)):
                        raise BadRequest(400, "explain: needs a classification model on the float torch backend")
                    results = await batcher.submit(model, "explain" if explain else op, texts, timeout)
                payload = {"results": [{**r, **({"truncated": True} if c else {})} for r, c in zip(results, cut)]}
            elif op in ("tag", "fill-mask"):
                texts, cut = _texts(body, "texts", settings)
                options = {}
                if op == "fill-mask":
                    top_k = body.get("top_k", 5)
                    if not isinstance(top_k, int) or isinstance(top_k, bool) or not 1 <= top_k <= 100:
                        raise BadRequest(400, "top_k: expected an integer between 1 and 100")
                    # checked here, not in the worker: one bad text must not fail the other requests of its batch
                    encs = p.tok.encode_batch(texts, max_length=p.max_length)
                    bad = next((i for i, e in enumerate(encs) if p.tok.mask_id not in e.ids), None)
                    if bad is not None:
                        raise BadRequest(400, f"texts[{bad}]: no [MASK] token to fill")
                    options["top_k"] = top_k
                results = await batcher.submit(model, op, texts, timeout, **options)
                payload = {"results": [{**r, **({"truncated": True} if c else {})} for r, c in zip(results, cut)]}
            elif op == "answer":
                (q, c1), (ctx, c2) = (_check_text(body.get("question"), "question", settings),
                                      _check_text(body.get("context"), "context", settings))
                [answer] = await batcher.submit(model, op, [(q, ctx)], timeout)
                payload = {**answer, **({"truncated": True} if c1 or c2 else {})}
            elif op == "embed":
                texts, cut = _texts(body, "texts", settings)
                vectors = await batcher.submit(model, op, texts, timeout, normalize=True)
                payload = {"vectors": [np.asarray(v).tolist() for v in vectors], "truncated": cut}
            else:  # similarity
                a, b, cut = _pairs(body, settings)
                vectors = await batcher.submit(model, "embed", a + b, timeout, normalize=True)
                n = len(a)
                payload = {"scores": [float(np.dot(vectors[i], vectors[n + i])) for i in range(n)]}
            return JSONResponse(payload)
        except BadRequest as e:
            status = e.status
            return error(e.status, str(e))
        except QueueFull as e:
            status = 503
            return error(503, f"overloaded: {e}", **{"Retry-After": "1"})
        except ShuttingDown as e:
            status = 503
            return error(503, str(e), **{"Retry-After": "5"})
        except TimeoutError as e:
            status = 504
            return error(504, str(e))
        except ValueError as e:  # the library's input checks (e.g. a text that tokenises to nothing)
            status = 400
            return error(400, str(e))
        finally:
            metrics.observe(op, status, time.perf_counter() - start)

    def route(op: str):
        async def endpoint(request: Request):
            return await handle(op, request)

        endpoint.__name__ = op.replace("-", "_")
        app.post(f"/v1/{op}", summary=SUMMARIES[op], openapi_extra={"requestBody": {
            "required": True, "content": {"application/json": {"schema": BODY_SCHEMAS[op]}}}})(endpoint)

    for op in ENDPOINTS:
        route(op)

    @app.get("/healthz")
    def healthz():
        # the process id tells which of `--workers N` processes answered
        return {"status": "ok", "models": list(predictors), "queue_depth": batcher.depth, "pid": os.getpid()}

    @app.get("/metrics", response_class=PlainTextResponse)
    def prometheus():
        return metrics.render(batcher, predictors)

    @app.get("/v1/models")
    def models():
        return {name: {"family": p.family, "endpoints": sorted(FAMILY_OPS[p.family]),
                       "labels": [p.config.id2label[i] for i in range(p.config.num_labels)]
                       if p.family == "classification" and p.config.id2label else None}
                for name, p in predictors.items()}

    if STATIC.exists():
        app.mount("/static", StaticFiles(directory=STATIC), name="static")

        @app.get("/", include_in_schema=False)
        def page():
            return FileResponse(STATIC / "index.html")

    return app


# ---- processes ---------------------------------------------------------------------------------------------------
CONFIG_ENV = "BERTKIT_SERVE_CONFIG"


def load_predictors(models: dict[str, str], threads: int = 1, backend: str = "torch", int8: bool = False,
                    cache_size: int = 0) -> dict[str, Predictor]:
    from bertkit.infer.predictor import PredictorSettings

    return {name: Predictor.from_pretrained(path, PredictorSettings(threads=threads, backend=backend, int8=int8,
                                                                    cache_size=cache_size))
            for name, path in models.items()}


def app_from_env():
    """The app a worker process builds from the JSON config `bertkit serve` put in the environment
    (uvicorn's factory for --workers N: each process loads its own models)."""
    cfg = json.loads(os.environ[CONFIG_ENV])
    predictors = load_predictors(cfg["models"], cfg["threads"], cfg["backend"], cfg["int8"], cfg["cache_size"])
    settings = ServeSettings(**{k: v for k, v in cfg["settings"].items() if k != "batcher"},
                             batcher=BatcherSettings(**cfg["settings"]["batcher"]))
    return create_app(predictors, settings)
