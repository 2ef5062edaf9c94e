"""Soak test of `bertkit serve`: capacity first, then `--minutes N` at ~70 % of it with hostile requests mixed in.

    python benchmarks/soak.py --minutes 30                      # the recorded run (the lead runs it alone)
    python benchmarks/soak.py --minutes 1 --window-s 10         # a quick check of the script itself

The server runs as a subprocess (`bertkit serve`, one process, `--threads 1`, an API key) with two models: a
MiniLM classifier (the first MiniLM-sized `BertForSequenceClassification` under runs/, else all-MiniLM-L6-v2's
real weights with a fresh two-label head, saved into a temporary directory: the compute of a real MiniLM
classifier) and the packaged all-MiniLM-L6-v2 as an embedding model.

1. Capacity: `--clients` closed-loop clients on kept-alive connections send normal requests (one SST-2 dev
   sentence to /v1/classify or /v1/embed, alternately) for `--capacity-s` seconds: requests/s at saturation.
2. Soak: normal requests arrive on a fixed schedule at `--load` (0.7) x capacity, served by a pool of client
   threads; latency counts from the scheduled time, so a stalled server cannot hide queueing in the client. About
   `--hostile-per-s` hostile requests a second cycle through: an over-budget request (4 x 20,000 "!"), malformed
   JSON, JSON nested 100,000 deep, a text/plain body, a wrong API key, a bare key without "Bearer", a 4 MB body,
   an invisible-only text; every 15 s a slow client trickles its headers a byte a second.
3. Per window (`--window-s`, default 60 s): p50 / p99 of the normal requests, the server's resident memory
   (VmRSS from /proc), the server's CPU seconds and the CPU time the hypervisor stole from this machine, answers by status for normal and hostile requests. A table on stdout, JSON lines in
   `--out`. At the end the checks: p99 stable (after warm-up, the later half's median p99 within 1.5x the earlier
   half's + 25 ms, and no window above 3x the median), resident memory after warm-up grows at most 10 %, no 5xx, every hostile request answered 4xx or 503
   (a slow client: a 408 within the header timeout + 5 s), every normal one 200. Exit status 1 if one fails.
"""

from __future__ import annotations

import argparse
import gzip
import http.client
import itertools
import json
import os
import queue
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from load import wait_ready  # benchmarks/load.py: the same readiness wait

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("BERTKIT_DATA", ROOT.parent / "shared" / "data"))
HEADER_TIMEOUT_S = 10.0
FALLBACK_SENTENCES = ["a gorgeous, witty, seductive movie.", "the plot is a dull, lifeless mess.",
                      "not the best of the series, but the final act is thrilling.",
                      "an exercise in boredom that never lands a joke.", "a quietly moving film about memory."]


def sentences() -> list[str]:
    path = DATA / "glue" / "SST-2" / "dev.tsv.gz"
    if not path.exists():
        return FALLBACK_SENTENCES
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [ln.split("\t")[0] for ln in f.read().splitlines()[1:] if ln.strip()]


def classifier_dir(given: str | None, tmp: Path) -> tuple[str, str]:
    """(directory, what it is)."""
    if given:
        return given, "given"
    for config in sorted((ROOT / "runs").glob("**/config.json")):
        c = json.loads(config.read_text())
        if (c.get("architectures") or [""])[0] == "BertForSequenceClassification" and c.get("hidden_size") == 384 \
                and c.get("num_hidden_layers") == 6:
            return str(config.parent), "fine-tuned MiniLM from runs/"
    from bertkit import BertForSequenceClassification, Tokenizer, packaged_model_dir

    src = packaged_model_dir()
    model = BertForSequenceClassification.from_pretrained(src, num_labels=2)
    out = tmp / "minilm-classifier"
    model.save_pretrained(out, tokenizer=Tokenizer.from_pretrained(src))
    return str(out), "all-MiniLM-L6-v2 weights + a fresh 2-label head"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_counters(pid: int) -> tuple[float, float, float]:
    """(the server's CPU seconds, the machine's total and stolen jiffies): per window, how busy the server was and
    how much CPU the hypervisor took away from this VM, so that a slow minute can be told apart from a busy one."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    server = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime
    cpu = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return server, float(sum(cpu[:8])), float(cpu[7])  # steal is the 8th field of the cpu line


class Normal:
    """Normal requests over one kept-alive connection (reopened after an error)."""

    def __init__(self, port: int, key: str, texts: list[str]):
        self.port, self.key, self.texts, self.conn = port, key, texts, None
        self.n = itertools.count()

    def send(self) -> int:
        i = next(self.n)
        path, body = (("/v1/classify", {"texts": [self.texts[i % len(self.texts)]], "model": "clf"}) if i % 2 == 0
                      else ("/v1/embed", {"texts": [self.texts[i % len(self.texts)]], "model": "minilm"}))
        for attempt in (0, 1):
            try:
                if self.conn is None:
                    self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
                self.conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json",
                                                                   "Authorization": f"Bearer {self.key}"})
                r = self.conn.getresponse()
                r.read()
                if r.getheader("connection", "").lower() == "close":
                    self.conn.close()
                    self.conn = None
                return r.status
            except (OSError, http.client.HTTPException):
                if self.conn is not None:
                    self.conn.close()
                self.conn = None
                if attempt:  # a connection the server closed while idle is retried once
                    return 0
        return 0


def hostile_requests(key: str) -> list[tuple[str, dict, bytes]]:
    """(name, headers, body) of each hostile kind, posted to /v1/classify on a fresh connection."""
    good = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}
    return [
        ("over-budget", good, json.dumps({"texts": ["!" * 20000] * 4, "model": "clf"}).encode()),
        ("malformed-json", good, b'{"texts": ["unterminated'),
        ("nested-json", good, b"[" * 100_000 + b"]" * 100_000),
        ("text-plain", {**good, "Content-Type": "text/plain"}, b'{"texts": ["a cross-site post"], "model": "clf"}'),
        ("wrong-key", {**good, "Authorization": "Bearer not-the-key"}, b'{"texts": ["hello"], "model": "clf"}'),
        ("bare-key", {**good, "Authorization": key}, b'{"texts": ["hello"], "model": "clf"}'),
        ("invisible-text", good, json.dumps({"texts": ["\u200b\u200b"], "model": "clf"}).encode()),
        ("surrogate-model", good, b'{"texts": ["hello"], "model": "\\ud800"}'),
        ("huge-body", good, b'{"texts": ["' + b"x" * (4 << 20) + b'"]}'),
    ]


def send_hostile(port: int, headers: dict, body: bytes) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("POST", "/v1/classify", body, headers)
        r = conn.getresponse()
        r.read()
        return r.status
    except (OSError, http.client.HTTPException):
        return 0  # a reset: a failure for a hostile request too (the server must answer)
    finally:
        conn.close()


def slow_client(port: int) -> tuple[int, float]:
    """Headers a byte a second: (408 or 0 for a bare close, seconds until the server closed it)."""
    start = time.time()
    data = b"POST /v1/classify HTTP/1.1\r\nHost: soak\r\nContent-Type: application/json\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=HEADER_TIMEOUT_S + 30) as s:
        s.settimeout(1.0)
        got = b""
        for byte in itertools.cycle(data):
            try:
                s.send(bytes([byte]))
            except OSError:
                break
            try:
                chunk = s.recv(4096)
                if not chunk:
                    break
                got += chunk
            except socket.timeout:
                pass
            except OSError:
                break
            if time.time() - start > HEADER_TIMEOUT_S + 30:
                return -1, time.time() - start  # never closed: a failure
    status = 408 if got.startswith(b"HTTP/1.1 408") else 0
    return status, time.time() - start


def measure_capacity(port: int, key: str, texts: list[str], clients: int, seconds: float) -> float:
    done, stop = [], time.time() + seconds

    def client():
        c, n = Normal(port, key, texts), 0
        while time.time() < stop:
            if c.send() == 200:
                n += 1
        done.append(n)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    start = time.time()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(done) / (time.time() - start)


def percentile(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--window-s", type=float, default=60, help="one row of the table per window")
    ap.add_argument("--load", type=float, default=0.7, help="fraction of the measured capacity")
    ap.add_argument("--capacity-s", type=float, default=10)
    ap.add_argument("--clients", type=int, default=8, help="closed-loop clients for the capacity phase")
    ap.add_argument("--pool", type=int, default=32, help="client threads of the soak phase")
    ap.add_argument("--hostile-per-s", type=float, default=1.0)
    ap.add_argument("--threads", type=int, default=1, help="the server's torch threads")
    ap.add_argument("--classifier", help="a classifier directory (default: see the module docstring)")
    ap.add_argument("--out", default=str(ROOT / "runs" / "soak.jsonl"))
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bertkit-soak-"))
    from bertkit import packaged_model_dir

    clf, what = classifier_dir(args.classifier, tmp)
    key, port = secrets.token_urlsafe(16), free_port()
    cmd = [sys.executable, "-m", "bertkit.cli", "serve", "--model", f"clf={clf}",
           "--model", f"minilm={packaged_model_dir()}", "--port", str(port), "--threads", str(args.threads),
           "--api-key", key, "--header-timeout-s", str(HEADER_TIMEOUT_S)]
    print(f"classifier: {clf} ({what})\nserver: {' '.join(cmd[:-6])} ...", flush=True)
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    texts = sentences()
    try:
        try:
            wait_ready(port, server, timeout=180)
        except RuntimeError as e:
            raise SystemExit(f"{e}: {server.stderr.read()[-2000:] if server.poll() is not None else ''}") from None
        capacity = measure_capacity(port, key, texts, args.clients, args.capacity_s)
        rate = args.load * capacity
        print(f"capacity {capacity:.1f} requests/s ({args.clients} clients, {args.capacity_s:g} s); soak at "
              f"{rate:.1f}/s for {args.minutes:g} min, {args.hostile_per_s:g} hostile/s", flush=True)
        return soak(args, port, key, texts, rate, capacity, server.pid)
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        shutil.rmtree(tmp, ignore_errors=True)


def soak(args, port: int, key: str, texts: list[str], rate: float, capacity: float, pid: int) -> int:
    tickets: queue.Queue = queue.Queue()
    lock = threading.Lock()
    window: dict = {"lat": [], "normal": {}, "hostile": {}}
    totals: dict = {"normal": {}, "hostile": {}, "hostile_by_kind": {}}
    hostile = hostile_requests(key)
    end = time.time() + args.minutes * 60

    def record(kind: str, status: int, latency: float | None = None, name: str | None = None):
        with lock:
            window[kind][status] = window[kind].get(status, 0) + 1
            totals[kind][status] = totals[kind].get(status, 0) + 1
            if latency is not None:
                window["lat"].append(latency)
            if name is not None:
                by = totals["hostile_by_kind"].setdefault(name, {})
                by[status] = by.get(status, 0) + 1

    def worker():
        client = Normal(port, key, texts)
        while (t := tickets.get()) is not None:
            due, kind = t
            if kind == "normal":
                status = client.send()
                record("normal", status, time.time() - due)
            else:
                name, headers, body = kind
                record("hostile", send_hostile(port, headers, body), name=name)

    def slow_clients():
        while time.time() < end - HEADER_TIMEOUT_S - 6:
            status, seconds = slow_client(port)
            record("hostile", 408 if status == 408 and seconds <= HEADER_TIMEOUT_S + 5 else -1, name="slow-headers")
            time.sleep(max(0.0, 15 - seconds))

    pool = [threading.Thread(target=worker, daemon=True) for _ in range(args.pool)]
    for t in pool:
        t.start()
    slow = threading.Thread(target=slow_clients, daemon=True)
    slow.start()
    rows, start = [], time.time()
    next_normal, next_hostile, next_window = start, start, start + args.window_s
    kinds = itertools.cycle(hostile)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    print(f"{'window':>6} {'t (s)':>6} {'normal':>7} {'p50 ms':>7} {'p99 ms':>7} {'RSS MB':>7} {'cpu s':>6} {'steal%':>6}  normal statuses"
          f"  hostile statuses", flush=True)
    counters = cpu_counters(pid)
    with out.open("w") as f:
        f.write(json.dumps({"event": "start", "capacity_rps": capacity, "rate_rps": rate,
                            "minutes": args.minutes, "window_s": args.window_s}) + "\n")
        while True:
            now = time.time()
            if now >= next_window or now >= end:
                with lock:
                    lat, normal, bad = window["lat"], window["normal"], window["hostile"]
                    window.update(lat=[], normal={}, hostile={})
                row = {"window": len(rows), "t": round(now - start, 1), "normal": sum(normal.values()),
                       "p50_ms": round(1000 * percentile(lat, 0.5), 1),
                       "p99_ms": round(1000 * percentile(lat, 0.99), 1),
                       "rss_mb": round(rss_mb(pid), 1), "normal_status": {str(k): v for k, v in sorted(normal.items())},
                       "hostile_status": {str(k): v for k, v in sorted(bad.items())}}
                now_counters = cpu_counters(pid)
                server_s, total, steal = (b - a for a, b in zip(counters, now_counters))
                counters = now_counters
                row["server_cpu_s"] = round(server_s, 1)  # CPU seconds the server used in the window
                row["steal_pct"] = round(100 * steal / total, 2) if total else 0.0  # CPU the hypervisor took
                rows.append(row)
                f.write(json.dumps(row) + "\n")
                f.flush()
                print(f"{row['window']:>6} {row['t']:>6.0f} {row['normal']:>7} {row['p50_ms']:>7.1f} "
                      f"{row['p99_ms']:>7.1f} {row['rss_mb']:>7.1f} {row['server_cpu_s']:>6.1f} {row['steal_pct']:>6.2f}"
                      f"  {row['normal_status']}  {row['hostile_status']}",
                      flush=True)
                next_window += args.window_s
                if now >= end:
                    break
            if now >= next_normal:
                tickets.put((next_normal, "normal"))
                next_normal += 1 / rate
            if args.hostile_per_s > 0 and now >= next_hostile:
                tickets.put((next_hostile, next(kinds)))
                next_hostile += 1 / args.hostile_per_s
            time.sleep(max(0.0, min(next_normal, next_hostile, next_window) - time.time()))
        for _ in pool:
            tickets.put(None)
        for t in pool:
            t.join(timeout=120)
        slow.join(timeout=HEADER_TIMEOUT_S + 40)
        checks = judge(rows, totals)
        f.write(json.dumps({"event": "end", "totals": {k: {str(s): n for s, n in v.items()} if k != "hostile_by_kind"
                                                       else v for k, v in totals.items()}, "checks": checks},
                           default=str) + "\n")
    print("hostile answers by kind: " + "; ".join(f"{k} {v}" for k, v in sorted(totals["hostile_by_kind"].items())))
    for name, (ok, detail) in checks.items():
        print(f"{'ok  ' if ok else 'FAIL'} {name}: {detail}")
    print(f"JSON lines: {out}")
    return 0 if all(ok for ok, _ in checks.values()) else 1


def judge(rows: list[dict], totals: dict) -> dict[str, tuple[bool, str]]:
    warm = rows[1:] if len(rows) > 2 else rows  # the first window is warm-up
    p99 = [r["p99_ms"] for r in warm if r["normal"]]
    median = statistics.median(p99) if p99 else float("nan")
    # stable: no drift (the later half's median p99 within 1.5x the earlier half's, + 25 ms) and no blow-up (no
    # window above 3x the median); one window's p99 alone is noisy when other work shares the cores
    half = len(p99) // 2
    early, late = (statistics.median(p99[:half]), statistics.median(p99[half:])) if half else (median, median)
    drift_ok = late <= 1.5 * early + 25
    limit = 3 * median
    rss = [r["rss_mb"] for r in warm]
    growth = (max(rss) - rss[0]) / rss[0] if rss else float("nan")
    fivexx = sum(n for k in ("normal", "hostile") for s, n in totals[k].items() if 500 <= s < 600)
    bad_hostile = {s: n for s, n in totals["hostile"].items() if not (400 <= s < 500 or s == 503)}
    bad_normal = {s: n for s, n in totals["normal"].items() if s != 200}
    return {
        "p99 stable": (bool(p99) and drift_ok and max(p99) <= limit,
                       f"per-window p99 after warm-up {min(p99, default=0):.0f}-{max(p99, default=0):.0f} ms "
                       f"(max limit 3 x median {median:.0f} = {limit:.0f} ms); median of the earlier half "
                       f"{early:.0f} ms, of the later half {late:.0f} ms (limit 1.5x + 25 ms)"),
        "resident memory flat": (growth <= 0.10, f"{rss[0]:.0f} -> max {max(rss):.0f} MB after warm-up "
                                                 f"({100 * growth:+.1f} %, limit +10 %)"),
        "no 5xx": (fivexx == 0, f"{fivexx} answers 5xx"),
        "hostile answered 4xx or 503": (not bad_hostile and sum(totals["hostile"].values()) > 0,
                                        f"{sum(totals['hostile'].values())} hostile requests, others: {bad_hostile} "
                                        f"(0: reset without an answer, -1: a slow client held too long)"),
        "normal answered 200": (not bad_normal and sum(totals["normal"].values()) > 0,
                                f"{sum(totals['normal'].values())} normal requests, others: {bad_normal}"),
    }


if __name__ == "__main__":
    sys.exit(main())
