"""Where batch-1 time goes on the PyTorch path, beside ONNX Runtime (bertkit's `--backend onnx`) on the same model
and the same real sentences, in one process, interleaved, medians.

    python benchmarks/batch1.py                          # all-MiniLM-L6-v2, 2 threads
    python benchmarks/batch1.py --shape base --threads 1 # BERT-base shape (random weights), one thread
    python benchmarks/batch1.py --profile 200            # + a torch.profiler table of the encoder by operator
    python benchmarks/batch1.py --kernels                # the products alone: nn.Linear vs packed vs fused

Rows (milliseconds per sentence at batch 1, p50 / p90):
- `predictor torch` / `predictor onnx`: `Predictor.embed([text])` end to end (tokenise, collate, model, pool);
- `predictor torch int8` / `predictor onnx int8`: the same with `int8=True` (PyTorch's kernels as measured at load);
- `forward torch` / `forward onnx`: the model call alone on tensors collated beforehand, so the difference between
  the two rows of a backend is the Predictor's own overhead, and between the backends the engines';
- `forward torch, no checks`: the encoder without `_check_inputs` (the host syncs of the id range checks);
- `forward torch, nn.Linear`: the same model with plain `nn.Linear` layers instead of the weights packed for oneDNN
  at load (`bertkit.infer.packed`), i.e. the path before packing.
Then batch 32: the four `predictor` paths embedding `--batch32` sentences in batches of 32 (sentences per second),
interleaved the same way. Only bertkit's runtimes are in this process (benchmarks/peers.py loads the others too,
whose thread pools slow PyTorch's rows there).
`--kernels` times the pieces in isolation instead (microseconds per call, random inputs of the model's shapes, 10,
32 and 320 rows): `F.linear` against oneDNN's linear on a packed weight for each product of a layer; query, key and
value as three packed products against one over the concatenated weights; the feed-forward's product then gelu
against gelu fused into the product; and `model.eval()` + `model.train(False)` on the loaded model (what the
Predictor did around every call). The profile (`--profile N`: N forward calls) lists operators by self CPU time
per call, so a sync (`aten::item`, `aten::nonzero`), a copy or a thread-pool wait shows by name.
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
from dataclasses import replace
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
DATA = Path(os.environ.get("BERTKIT_DATA", ROOT.parent / "shared" / "data"))

from bertkit.checkpoint import packaged_model_dir  # noqa: E402
from bertkit.infer.predictor import Predictor, PredictorSettings  # noqa: E402


def sentences(n: int) -> list[str]:
    with gzip.open(DATA / "glue" / "STS-B" / "dev.tsv.gz", "rt", encoding="utf-8") as f:
        rows = [line.rstrip("\n").split("\t") for line in f][1:]
    return [r[7] for r in rows[:n]]


def model_dir(shape: str, work: Path) -> Path:
    if shape == "minilm":
        return packaged_model_dir()
    from bertkit.config import BertConfig
    from bertkit.model import BertModel
    from bertkit.tokenizer import Tokenizer

    tok = Tokenizer.from_pretrained(packaged_model_dir())
    torch.manual_seed(0)
    model = BertModel(BertConfig(vocab_size=tok.vocab_size, hidden_size=768, num_hidden_layers=12,
                                 num_attention_heads=12, intermediate_size=3072))
    model.save_pretrained(work / "base", tokenizer=tok)
    return work / "base"


def timed(fn, inputs: list) -> list[float]:
    out = []
    for x in inputs:
        start = time.perf_counter()
        fn(x)
        out.append((time.perf_counter() - start) * 1e3)
    return out


def per_call_us(fn, n: int = 2000) -> float:
    for _ in range(50):
        fn()
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n * 1e6


def kernels(model: torch.nn.Module) -> dict:
    """The products of one layer of `model`'s shape, alone (see the module docstring)."""
    import torch.nn.functional as F

    linear, pack = torch.ops.mkldnn._linear_pointwise, torch.ops.mkldnn._reorder_linear_weight
    H, inner = model.config.hidden_size, model.config.intermediate_size
    out: dict = {"eval_train_us": round(per_call_us(lambda: (model.eval(), model.train(False)), 500), 1)}
    print(f"  model.eval() + model.train(False): {out['eval_train_us']:.1f} us")
    model.eval()
    for rows in (10, 32, 320):
        for k, n in ((H, H), (H, inner), (inner, H)):
            x, w, b = torch.randn(rows, k), torch.randn(n, k), torch.randn(n)
            packed = pack(w, None)
            with torch.inference_mode():
                plain_us = per_call_us(lambda: F.linear(x, w, b))
                packed_us = per_call_us(lambda: linear(x, packed, b, "none", [], ""))
            out[f"linear {rows}x{k}->{n}"] = {"F.linear": round(plain_us, 1), "packed": round(packed_us, 1)}
            print(f"  {rows:4d} rows, {k:5d} -> {n:5d}: F.linear {plain_us:8.1f} us, packed {packed_us:8.1f} us "
                  f"({plain_us / packed_us:.2f}x)")
        x = torch.randn(rows, H)
        ws, bs = [torch.randn(H, H) for _ in range(3)], [torch.randn(H) for _ in range(3)]
        three, one, bias = [pack(w, None) for w in ws], pack(torch.cat(ws), None), torch.cat(bs)
        wi, bi = torch.randn(inner, H), torch.randn(inner)
        pi = pack(wi, None)
        with torch.inference_mode():
            qkv = (per_call_us(lambda: [linear(x, p, b, "none", [], "") for p, b in zip(three, bs)]),
                   per_call_us(lambda: linear(x, one, bias, "none", [], "").split(H, -1)))
            gelu = (per_call_us(lambda: F.gelu(linear(x, pi, bi, "none", [], ""))),
                    per_call_us(lambda: linear(x, pi, bi, "gelu", [], "none")))
        out[f"fusions {rows} rows"] = {"qkv_three": round(qkv[0], 1), "qkv_one": round(qkv[1], 1),
                                       "gelu_after": round(gelu[0], 1), "gelu_fused": round(gelu[1], 1)}
        print(f"  {rows:4d} rows: q/k/v three products {qkv[0]:.1f} us, one {qkv[1]:.1f} us; feed-forward then "
              f"gelu {gelu[0]:.1f} us, fused {gelu[1]:.1f} us")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", choices=["minilm", "base"], default="minilm")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--sentences", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch32", type=int, default=640, help="sentences embedded in batches of 32 (0: skip)")
    ap.add_argument("--profile", type=int, default=0, help="forward calls to profile (0: none)")
    ap.add_argument("--kernels", action="store_true", help="time the products alone instead (see above)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    texts = sentences(args.sentences)
    with tempfile.TemporaryDirectory() as work:
        directory = model_dir(args.shape, Path(work))
        settings = PredictorSettings(threads=args.threads, batch_size=32, backend="torch")
        if args.kernels:
            from bertkit.model import BertModel

            print(f"{args.shape}, {args.threads} threads, torch {torch.__version__}: the products alone")
            report = kernels(BertModel.from_pretrained(directory))
            if args.json:
                args.json.write_text(json.dumps(report, indent=2))
            return
        ours = Predictor.from_pretrained(directory, settings)
        onnx = Predictor.from_pretrained(directory, replace(settings, backend="onnx"))
        torch8 = Predictor.from_pretrained(directory, replace(settings, int8=True))
        onnx8 = Predictor.from_pretrained(directory, replace(settings, backend="onnx", int8=True))
        plain = type(ours.model).from_pretrained(directory).eval()
        batches = [ours.tok.collate([e.ids], [e.type_ids]) for e in ours.tok.encode_batch(texts, max_length=256)]

        def forward(model):
            return lambda b: model(b["input_ids"], b["attention_mask"], b["token_type_ids"])

        def unchecked(b):
            check, ours.model._check_inputs = ours.model._check_inputs, lambda *a: None
            try:
                return ours.model(b["input_ids"], b["attention_mask"], b["token_type_ids"])
            finally:
                ours.model._check_inputs = check

        runs = {"predictor torch": (lambda t: ours.embed([t]), texts),
                "predictor onnx": (lambda t: onnx.embed([t]), texts),
                "predictor torch int8": (lambda t: torch8.embed([t]), texts),
                "predictor onnx int8": (lambda t: onnx8.embed([t]), texts),
                "forward torch": (forward(ours.model), batches),
                "forward torch, no checks": (unchecked, batches),
                "forward torch, nn.Linear": (forward(plain), batches),
                "forward onnx": (forward(onnx.model), batches)}
        times: dict[str, list[float]] = {name: [] for name in runs}
        with torch.inference_mode():
            for fn, inputs in runs.values():  # warm-up
                timed(fn, inputs[:20])
            for _ in range(args.repeats):  # interleaved: each repeat runs every path once over the sentences
                for name, (fn, inputs) in runs.items():
                    times[name] += timed(fn, inputs)
        print(f"int8 on PyTorch: {torch8.engine()}")
        rates: dict[str, list[float]] = {}
        if args.batch32:
            many = sentences(args.batch32)
            paths = {"predictor torch": ours, "predictor onnx": onnx, "predictor torch int8": torch8,
                     "predictor onnx int8": onnx8}
            rates = {name: [] for name in paths}
            with torch.inference_mode():
                for _ in range(args.repeats):
                    for name, p in paths.items():
                        time.sleep(0.2)
                        start = time.perf_counter()
                        p.embed(many)
                        rates[name].append(len(many) / (time.perf_counter() - start))
        mean_tokens = statistics.mean(b["input_ids"].shape[1] for b in batches)
        print(f"{args.shape}, {args.threads} threads, {len(texts)} STS-B dev sentences ({mean_tokens:.1f} tokens "
              f"on average) x {args.repeats}; torch {torch.__version__}")
        report = {"shape": args.shape, "threads": args.threads, "mean_tokens": round(mean_tokens, 1), "rows": {}}
        onnx_p50 = statistics.median(times["forward onnx"])
        for name, t in times.items():
            p50, p90 = statistics.median(t), statistics.quantiles(t, n=10)[-1]
            report["rows"][name] = {"p50_ms": round(p50, 3), "p90_ms": round(p90, 3)}
            rate = f"  batch 32: {statistics.median(rates[name]):6.0f}/s" if name in rates else ""
            if name in rates:
                report["rows"][name]["batch32_per_s"] = round(statistics.median(rates[name]), 1)
            print(f"  {name:26s} p50 {p50:7.3f} ms  p90 {p90:7.3f} ms  ({p50 / onnx_p50:.2f}x forward onnx){rate}")
        if args.profile:
            from torch.profiler import ProfilerActivity, profile

            fn = forward(ours.model)
            packed = any(type(m).__name__ == "PackedLinear" for m in ours.model.modules())
            print(f"\nprofile of `forward torch` (Linear weights packed for oneDNN: {packed})")
            with torch.inference_mode(), profile(activities=[ProfilerActivity.CPU]) as prof:
                for b in (batches * (args.profile // len(batches) + 1))[:args.profile]:
                    fn(b)
            events = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
            total = sum(e.self_cpu_time_total for e in events)
            print(f"\nprofile: {args.profile} forward calls, self CPU time per call by operator "
                  f"(total {total / args.profile / 1e3:.3f} ms)")
            report["profile"] = []
            for e in events[:25]:
                per_call = e.self_cpu_time_total / args.profile / 1e3
                print(f"  {e.key:42s} {per_call:7.3f} ms  {e.count / args.profile:6.1f} calls  "
                      f"{e.self_cpu_time_total / total:6.1%}")
                report["profile"].append({"op": e.key, "ms": round(per_call, 4), "calls": e.count / args.profile})
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
