"""Corpus embedding throughput: `bertkit embed` (the library function `embed_corpus`, a .txt file in, a vectors
directory out) against sentence-transformers' `SentenceTransformer(dir).encode` on the same model, the same real
sentences (STS-B English and KorSTS Korean, train split, half each), the same threads. Sentences per second,
interleaved repeats, medians and ratios to sentence-transformers at its default batch of 32.

Four runs, to say where a difference comes from: bertkit as it runs by default (batches by token budget:
`--max-tokens` 8192, at most 256 rows), bertkit with sentence-transformers' batching (32 rows per batch),
sentence-transformers at 32 and at 256 rows per batch.

    python benchmarks/embed.py --quick              # 400 sentences, one repeat: checks that it runs and agrees
    python benchmarks/embed.py                      # 5,000 sentences x 3 repeats (run alone: load misleads)
    python benchmarks/embed.py --threads 1 --max-tokens 4096 --no-onnx

What is timed: for bertkit, the chunk loop of `embed_corpus` (reading the chunk from the file, tokenising,
embedding, converting and writing and committing to disk: `meta.json` `last_run.seconds`), not the model's
loading or the first pass over the input; for sentence-transformers, `encode` of the texts in memory (the model
already loaded, its output kept in memory). Before timing, the vectors of every run are compared with
sentence-transformers' (cosine, must be > 0.9999). After the torch runs, in a block of its own (ONNX Runtime's
spinning threads would slow the PyTorch runs interleaved with it), `--backend onnx --int8` and `--backend onnx`
are timed the same way (bertkit's default batching), and their vectors compared with sentence-transformers'.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
DATA = Path(os.environ.get("BERTKIT_DATA", ROOT.parent / "shared" / "data"))

from bertkit.apps.embed import BATCH_SIZE, MAX_TOKENS, embed_corpus
from bertkit.checkpoint import packaged_model_dir


def sentences(n: int) -> list[str]:
    """n distinct sentences: half STS-B (English), half KorSTS (Korean), train split, in file order."""
    def column(path: Path, col: str) -> list[str]:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            header = f.readline().rstrip("\n").split("\t")
            at = header.index(col)
            out = []
            for line in f:
                parts = line.rstrip("\n").split("\t")
                if len(parts) == len(header) and parts[at].strip():
                    out.append(parts[at].strip())
            return out

    seen: dict[str, None] = {}
    for path in (DATA / "glue" / "STS-B" / "train.tsv.gz", DATA / "kornlu" / "sts-train.tsv.gz"):
        before = len(seen)
        for text in column(path, "sentence1") + column(path, "sentence2"):
            if len(seen) - before >= n // 2:
                break
            seen.setdefault(text, None)
    return list(seen)


def cosine_min(a: np.ndarray, b: np.ndarray) -> float:
    return float(((a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)).min())


def run_bertkit(model: Path, corpus: Path, out: Path, threads: int, **kw) -> tuple[float, np.ndarray]:
    v = embed_corpus(model, [corpus], out, threads=threads, overwrite=True, progress=False, **kw)
    return v.meta["last_run"]["seconds"], v.dequantize()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, default=None, help="sentence-transformers directory (default: the packaged "
                                                           "all-MiniLM-L6-v2)")
    p.add_argument("--sentences", type=int, default=5000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--batch-size", type=int, default=32, help="sentence-transformers' batch (its default 32), and "
                                                             "bertkit's in the run with a fixed count per batch")
    p.add_argument("--max-tokens", type=int, default=MAX_TOKENS, help="bertkit's token budget per batch (default "
                                                                      "%(default)s; at most --big-batch rows)")
    p.add_argument("--big-batch", type=int, default=BATCH_SIZE, help="bertkit's rows per batch at most, and "
                                                                     "sentence-transformers' second batch size")
    p.add_argument("--no-onnx", action="store_true", help="skip the ONNX Runtime block")
    p.add_argument("--quick", action="store_true", help="400 sentences, one repeat")
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args()
    if args.quick:
        args.sentences, args.repeats = 400, 1
    import sentence_transformers

    model = args.model or packaged_model_dir()
    torch.set_num_threads(args.threads)
    texts = sentences(args.sentences)
    work = Path(tempfile.mkdtemp(prefix="bertkit-embed-bench-"))
    corpus = work / "corpus.txt"
    corpus.write_text("".join(t + "\n" for t in texts), encoding="utf-8")
    st = sentence_transformers.SentenceTransformer(str(model), device="cpu")
    print(f"{len(texts)} sentences (STS-B + KorSTS), {args.threads} threads, batch {args.batch_size}, "
          f"model {model}", file=sys.stderr)

    def st_run(batch: int):
        def run() -> tuple[float, np.ndarray]:
            start = time.perf_counter()
            vectors = st.encode(texts, batch_size=batch, convert_to_numpy=True)
            return time.perf_counter() - start, vectors
        return run

    def ours(**kw):
        return lambda: run_bertkit(model, corpus, work / "v", args.threads, **kw)

    default = {"batch_size": args.big_batch, "max_tokens": args.max_tokens}
    runs = {f"bertkit torch ({args.max_tokens} tokens per batch)": ours(**default),
            f"sentence-transformers (batch {args.batch_size})": st_run(args.batch_size),
            f"bertkit torch (batch {args.batch_size})": ours(batch_size=args.batch_size, max_tokens=0),
            f"sentence-transformers (batch {args.big_batch})": st_run(args.big_batch)}
    base_name = f"sentence-transformers (batch {args.batch_size})"
    # warm-up (first-call allocations, lazy imports) and the check that all compute the same vectors
    _, reference = runs[base_name]()
    agreement = {}
    for name, fn in runs.items():
        agreement[name] = cosine_min(fn()[1], reference)
        print(f"min cosine {name} vs {base_name}: {agreement[name]:.6f}", file=sys.stderr)
        if agreement[name] < 0.9999:
            raise SystemExit(f"{name} disagrees: the timings would compare different work")
    times: dict[str, list[float]] = {name: [] for name in runs}
    for r in range(args.repeats):  # interleaved, the order alternating
        order = list(runs.items())
        for name, fn in order if r % 2 == 0 else order[::-1]:
            seconds, _ = fn()
            times[name].append(seconds)
            print(f"  {name}: {len(texts) / seconds:.1f} sentences/s", file=sys.stderr)
    if not args.no_onnx:
        for name, kw in (("bertkit onnx int8", {"backend": "onnx", "int8": True}),
                         ("bertkit onnx", {"backend": "onnx"})):
            _, vectors = ours(**default, **kw)()  # the export (cached), warm-up
            agreement[name] = cosine_min(vectors, reference)
            times[name] = []
            for _ in range(args.repeats):
                seconds, _ = ours(**default, **kw)()
                times[name].append(seconds)
                print(f"  {name}: {len(texts) / seconds:.1f} sentences/s", file=sys.stderr)
    base = statistics.median(times[base_name])
    rows = []
    print(f"\n| run | sentences/s (median of {args.repeats}) | vs {base_name} | min cosine vs it |")
    print("|---|---|---|---|")
    for name, ts in times.items():
        median = statistics.median(ts)
        rows.append({"run": name, "sentences_per_s": len(texts) / median, "ratio": base / median,
                     "min_cosine": agreement[name], "seconds": ts})
        print(f"| {name} | {len(texts) / median:.1f} | {base / median:.2f}x | {agreement[name]:.4f} |")
    if args.json:
        args.json.write_text(json.dumps({"sentences": len(texts), "threads": args.threads,
                                         "batch_size": args.batch_size, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
