"""Load test on loopback: `bertkit serve` against a plain FastAPI endpoint that calls a `transformers` pipeline one
request at a time, and against infinity-emb (a dynamic-batching embedding and classification server, in its own
venv: `make peers-venv`), on the same model, the same machine, in one run. Bounded in requests and time.

    python benchmarks/load.py --model runs/finetune/sst2 [--clients 16] [--requests 800] [--threads 2] [--repeats 3]
                              [--infinity .venv-infinity/bin/infinity_emb]

infinity runs its PyTorch engine: its ONNX engine (optimum) does not load a local directory in infinity-emb 0.0.78
with optimum 2.1 (it asks for "<model-id>/model.onnx" inside the model's directory, whatever is there).

Each client sends one SST-2 dev sentence per request over a kept-alive connection. Reported per server:
throughput (requests/s), p50 / p99 latency, errors; the two servers' runs alternate, `--repeats` times each, and
the run of median throughput is reported (all runs are in the JSON). Then an overload phase against bertkit with a
small queue (as many items as there are clients in the normal phase) and 4x the clients: answers beyond capacity
must be 503 with Retry-After, not timeouts or crashes.
Both servers get the same CPU: bertkit as `--workers W --threads T`, the peer with torch set to W x T threads.
"""

from __future__ import annotations

import argparse
import gzip
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("BERTKIT_DATA", ROOT.parent / "shared" / "data"))


def peer_app(model_dir: str, threads: int):
    """The usual stack: FastAPI + a transformers pipeline, one request at a time (a lock around the model)."""
    import torch
    from fastapi import FastAPI
    from transformers import pipeline

    torch.set_num_threads(threads)
    clf = pipeline("text-classification", model=model_dir, tokenizer=model_dir, device=-1)
    lock = threading.Lock()
    app = FastAPI()

    @app.post("/v1/classify")
    def classify(body: dict):
        with lock:
            out = clf(body["texts"], truncation=True)
        return {"results": [{"label": o["label"], "score": o["score"]} for o in out]}

    @app.get("/healthz")
    def healthz():
        return {"status": "ok"}

    return app


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(port: int, proc: subprocess.Popen, timeout: float = 300, health: str = "/healthz") -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}: {proc.stderr.read().decode()[-2000:]}")
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", health)
            if c.getresponse().status == 200:
                return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError("server did not start")


def bertkit_request(text: str) -> tuple[str, str]:
    return "/v1/classify", json.dumps({"texts": [text]})


def infinity_request(text: str) -> tuple[str, str]:
    return "/classify", json.dumps({"input": [text], "model": "m"})


def run_load(port: int, texts: list[str], clients: int, requests: int, timeout: float = 30.0,
             request=bertkit_request) -> dict:
    """`requests` in all from `clients` concurrent keep-alive connections; `request(text)` -> (path, body)."""
    per_client = requests // clients
    results: list[tuple[int, float]] = []
    lock = threading.Lock()

    def client(k: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        for i in range(per_client):
            path, body = request(texts[(k * per_client + i) % len(texts)])
            start = time.perf_counter()
            try:
                conn.request("POST", path, body, {"Content-Type": "application/json"})
                r = conn.getresponse()
                r.read()
                status = r.status
            except (OSError, http.client.HTTPException):
                status = -1  # timeout or connection error
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
            with lock:
                results.append((status, time.perf_counter() - start))

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, range(clients)))
    wall = time.perf_counter() - start
    ok = [t for s, t in results if s == 200]
    codes: dict[str, int] = {}
    for s, _ in results:
        codes[str(s)] = codes.get(str(s), 0) + 1
    return {"requests": len(results), "ok": len(ok), "throughput": len(ok) / wall,
            "p50_ms": 1000 * statistics.median(ok) if ok else None,
            "p99_ms": 1000 * sorted(ok)[max(0, int(0.99 * len(ok)) - 1)] if ok else None, "codes": codes}


def start(cmd: list[str], env: dict | None = None, cwd: Path | None = None) -> subprocess.Popen:
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, **(env or {})},
                            cwd=cwd)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="a fine-tuned classification directory (HF format)")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--requests", type=int, default=800)
    ap.add_argument("--threads", type=int, default=2, help="torch threads per server process")
    ap.add_argument("--workers", type=int, default=1,
                    help="bertkit processes (--workers 2 --threads 1: one thread per core, the CPU serving rule)")
    ap.add_argument("--repeats", type=int, default=3, help="normal-phase runs per server, alternating")
    ap.add_argument("--backend", default="auto", help="bertkit serve's --backend")
    ap.add_argument("--infinity", default=str(ROOT / ".venv-infinity" / "bin" / "infinity_emb"),
                    help="infinity-emb's command (skipped when absent)")
    ap.add_argument("--peer-server", type=int, metavar="PORT", help=argparse.SUPPRESS)  # internal: run the peer
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "load.json"))
    args = ap.parse_args()
    if args.peer_server:
        import uvicorn

        uvicorn.run(peer_app(args.model, args.threads), host="127.0.0.1", port=args.peer_server, log_level="error")
        return

    with gzip.open(DATA / "glue" / "SST-2" / "dev.tsv.gz", "rt", encoding="utf-8") as f:
        texts = [ln.split("\t")[0] for ln in f.read().splitlines()[1:]]
    bk, peer = "bertkit", "peer: FastAPI + transformers pipeline"
    infinity = "peer: infinity-emb"
    names = [bk, peer] + ([infinity] if Path(args.infinity).is_file() else [])
    if infinity not in names:
        print(f"infinity-emb not found at {args.infinity} (make peers-venv): skipped", file=sys.stderr)
    requests = {bk: bertkit_request, peer: bertkit_request, infinity: infinity_request}

    def serve(name: str, queue: int = 0) -> tuple[int, subprocess.Popen]:
        port = free_port()
        health = "/healthz"
        if name == bk:
            proc = start([sys.executable, "-m", "bertkit.cli", "serve", "--model", f"m={args.model}", "--port",
                          str(port), "--threads", str(args.threads), "--workers", str(args.workers), "--backend",
                          args.backend,
                          "--max-batch", "32", "--max-wait-ms", "5", *(["--max-queue", str(queue)] if queue else [])])
        elif name == infinity:  # its batching as it ships (batches of up to 32), the same threads in all
            threads = str(args.threads * args.workers)
            proc = start([args.infinity, "v2", "--model-id", str(Path(args.model).resolve()), "--served-model-name", "m", "--port",
                          str(port), "--engine", "torch", "--device", "cpu", "--batch-size", "32",
                          "--no-bettertransformer", "--log-level", "error"],
                         env={"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads,
                              "INFINITY_ANONYMOUS_USAGE_STATS": "0", "DO_NOT_TRACK": "1"})
            health = "/health"
        else:
            proc = start([sys.executable, __file__, "--model", args.model, "--threads",
                          str(args.threads * args.workers), "--peer-server", str(port)])
        wait_ready(port, proc, health=health)
        run_load(port, texts, min(4, args.clients), 40, request=requests[name])  # warm-up
        return port, proc

    # the normal phase: both servers up (the idle one waits on its socket), runs alternating between them
    runs: dict[str, list[dict]] = {name: [] for name in names}
    procs = []
    try:
        ports = {}
        for name in names:
            ports[name], proc = serve(name)
            procs.append(proc)
        for i in range(args.repeats):
            for name in names:
                r = run_load(ports[name], texts, args.clients, args.requests, timeout=60, request=requests[name])
                runs[name].append(r)
                print(f"  {name}, run {i + 1}: {json.dumps(r)}", file=sys.stderr, flush=True)
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=30)
    report = {}
    for name in names:  # the run of median throughput stands for the server; all runs are kept
        ordered = sorted(runs[name], key=lambda r: r["throughput"])
        report[name] = {**ordered[len(ordered) // 2], "runs": runs[name]}

    # overload: 4x the clients against a queue as long as the normal phase's client count
    clients = 4 * args.clients
    port, proc = serve(bk, queue=args.clients)
    try:
        r = run_load(port, texts, clients, args.requests * 2, timeout=60)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    key = f"{bk} (overload: {clients} clients, queue of {args.clients})"
    report[key] = r
    print(f"  {key}: {json.dumps(r)}", file=sys.stderr, flush=True)

    b = report["bertkit"]
    print(f"\n{args.clients} concurrent clients, {args.requests} requests of one SST-2 dev sentence each, "
          f"bertkit {args.workers} process(es) x {args.threads} thread(s), the peer 1 x {args.threads * args.workers}, "
          "loopback")
    print("| server | requests/s | p50 ms | p99 ms | answers |")
    print("|---|---|---|---|---|")
    for key, r in report.items():
        print(f"| {key} | {r['throughput']:.1f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | "
              + ", ".join(f"{c}: {n}" for c, n in sorted(r["codes"].items())) + " |")
    for other in names[1:]:
        p = report[other]
        print(f"\nthroughput ratio bertkit / {other}: {b['throughput'] / p['throughput']:.2f}; p99 ratio: "
              f"{b['p99_ms'] / p['p99_ms']:.2f} (median runs of {args.repeats}); per run: "
              + ", ".join(f"{x['throughput'] / y['throughput']:.2f}x / {x['p99_ms'] / y['p99_ms']:.2f}"
                          for x, y in zip(b["runs"], p["runs"])))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
