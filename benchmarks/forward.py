"""Encoder forward speed, bertkit vs transformers (SDPA attention), side by side in one process.

    python benchmarks/forward.py [--sizes mini base] [--seqs 32 128 512] [--repeats 5] [--threads 2]

For each size and sequence length: latency at batch 1 and throughput at batch 32, fp32, CPU, the same weights and
the same thread count for both. Runs alternate between the two libraries and the median of the repeats is kept;
the ratio is transformers' time over bertkit's (> 1 means bertkit is faster). Inputs are full-length (no padding).
A last row set uses real SST-2 dev sentences in batches of 32 padded to their longest, where unpadding matters.
"""

from __future__ import annotations

import argparse
import gzip
import json
import platform
import statistics
import time
from pathlib import Path

import torch
import transformers

from bertkit import BertConfig, BertModel, Tokenizer, packaged_model_dir

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def reference_model(model: torch.nn.Module, cls_name: str = "BertModel") -> torch.nn.Module:
    """The transformers class `cls_name` (SDPA attention) holding `model`'s weights."""
    cfg = transformers.BertConfig(**model.config.to_dict())
    cfg._attn_implementation = "sdpa"
    ref = getattr(transformers, cls_name)(cfg).eval()
    missing, unexpected = ref.load_state_dict(model.state_dict(), strict=False)
    assert not unexpected and all("position_ids" in k or "token_type_ids" in k for k in missing), missing
    return ref


def timed(fn, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n


def compare(ours, ref, batches: list[dict], repeats: int, inner: int) -> tuple[float, float]:
    """Median seconds per pass over `batches` for each model, runs interleaved."""
    def run(model):
        return lambda: [model(**b) for b in batches]

    with torch.inference_mode():
        run(ours)(), run(ref)()  # warm-up
        a, b = [], []
        for _ in range(repeats):
            a.append(timed(run(ours), inner))
            b.append(timed(run(ref), inner))
    return statistics.median(a), statistics.median(b)


def matmul_peak(n: int = 2048, repeats: int = 5) -> float:
    """GFLOP/s of a large fp32 matmul: the practical ceiling for the encoder on this machine."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    return 2 * n**3 / statistics.median(timed(lambda: a @ b, 3) for _ in range(repeats)) / 1e9


def synthetic(B: int, T: int, vocab: int) -> dict:
    g = torch.Generator().manual_seed(B * 1000 + T)
    ids = torch.randint(1000, vocab, (B, T), generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", nargs="+", default=["mini", "base"])
    ap.add_argument("--seqs", nargs="+", type=int, default=[32, 128, 512])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="benchmarks/out/forward.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rows = []
    header = (f"torch {torch.__version__}, transformers {transformers.__version__}, {args.threads} threads, "
              f"{platform.processor() or platform.machine()}")
    peak = matmul_peak()
    header += f"; fp32 matmul peak {peak:.0f} GFLOP/s (2048^3)"
    print(header)
    print("| size | seq | batch | bertkit | transformers (sdpa) | ratio | bertkit GFLOP/s (% of peak) |")
    print("|---|---|---|---|---|---|---|")
    for size in args.sizes:
        ours = BertModel(BertConfig.named(size)).eval()
        ref = reference_model(ours)
        for T in args.seqs:
            for B in (1, 32):
                work = B * T * ours.config.flops_per_token(T)
                inner = max(1, int(2e9 / work)) if B == 1 else 1  # about a second per timing at batch 1
                a, b = compare(ours, ref, [synthetic(B, T, ours.config.vocab_size)],
                               args.repeats if work < 5e11 else max(2, args.repeats // 2), inner)
                unit = (f"{1000 * a:.1f} ms", f"{1000 * b:.1f} ms") if B == 1 else (f"{B / a:.1f} seq/s",
                                                                                    f"{B / b:.1f} seq/s")
                rows.append(dict(size=size, seq=T, batch=B, bertkit_s=a, transformers_s=b, ratio=b / a,
                                 bertkit_gflops=work / a / 1e9))
                print(f"| {size} | {T} | {B} | {unit[0]} | {unit[1]} | {b / a:.2f} | {work / a / 1e9:.0f} "
                      f"({100 * work / a / 1e9 / peak:.0f} %) |", flush=True)

    sst2 = DATA / "glue" / "SST-2" / "dev.tsv.gz"
    if sst2.exists():
        with gzip.open(sst2, "rt", encoding="utf-8") as f:
            texts = [ln.split("\t")[0] for ln in f.read().splitlines()[1:]]
        d = packaged_model_dir()
        ours, tok = BertModel.from_pretrained(d), Tokenizer.from_pretrained(d)
        ref = reference_model(ours)
        batches = [tok.batch(texts[i:i + 32]) for i in range(0, len(texts), 32)]
        real = sum(int(b["attention_mask"].sum()) for b in batches)
        padded = sum(b["input_ids"].numel() for b in batches)
        a, b = compare(ours, ref, batches, max(2, args.repeats // 2), 1)
        rows.append(dict(size="all-MiniLM-L6-v2", seq="SST-2 dev", batch=32, bertkit_s=a, transformers_s=b,
                         ratio=b / a, padding_fraction=1 - real / padded))
        print(f"| all-MiniLM-L6-v2 | SST-2 dev ({len(texts)} sentences, {100 * (1 - real / padded):.0f} % padding)"
              f" | 32 | {len(texts) / a:.0f} sent/s | {len(texts) / b:.0f} sent/s | {b / a:.2f} | — |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"setup": header, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
