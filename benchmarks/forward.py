"""Encoder forward speed, bertkit vs transformers (SDPA attention), side by side in one process.

    python benchmarks/forward.py [--sizes mini base] [--seqs 32 128 512] [--repeats 5] [--threads 2]
    python benchmarks/forward.py --families roberta-base electra-small electra-base [--seqs 32 128]

For each size and sequence length: latency at batch 1 and throughput at batch 32, fp32, CPU, the same weights and
the same thread count for both. Runs alternate between the two libraries and the median of the repeats is kept;
the ratio is transformers' time over bertkit's (> 1 means bertkit is faster). Inputs are full-length (no padding).
A last row set uses real SST-2 dev sentences in batches of 32 padded to their longest, where unpadding matters.

`--families` times the other families' shapes instead (random weights, the family's own layout: RoBERTa's 514
position rows counted from the pad id, ELECTRA's embedding projection), against the transformers class of that
family loaded from the directory bertkit saved; the padded row uses SST-2 dev lengths with random ids.
"""

from __future__ import annotations

import argparse
import gzip
import json
import platform
import statistics
import tempfile
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


# Released shapes of the other families, in their own config.json terms.
FAMILY_SHAPES = {
    "roberta-base": dict(model_type="roberta", vocab_size=50265, hidden_size=768, num_hidden_layers=12,
                         num_attention_heads=12, intermediate_size=3072, max_position_embeddings=514,
                         type_vocab_size=1, pad_token_id=1, layer_norm_eps=1e-5),
    "electra-small": dict(model_type="electra", vocab_size=30522, embedding_size=128, hidden_size=256,
                          num_hidden_layers=12, num_attention_heads=4, intermediate_size=1024),
    "electra-base": dict(model_type="electra", vocab_size=30522, embedding_size=768, hidden_size=768,
                         num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
}


def family_pair(shape: str) -> tuple[torch.nn.Module, torch.nn.Module]:
    """A random bertkit encoder of a family's shape and the transformers class of that family (SDPA) loaded from the
    directory bertkit saved: the same weights through each library's own loader."""
    ours = BertModel(BertConfig.from_dict(dict(FAMILY_SHAPES[shape]))).eval()
    with tempfile.TemporaryDirectory() as d:
        ours.save_pretrained(d)
        ref = transformers.AutoModel.from_pretrained(d, attn_implementation="sdpa").eval()
    return ours, ref


def family_rows(args, peak: float) -> list[dict]:
    rows = []
    sst2 = DATA / "glue" / "SST-2" / "dev.tsv.gz"
    lengths = []
    if sst2.exists():
        tok = Tokenizer.from_pretrained(packaged_model_dir())
        with gzip.open(sst2, "rt", encoding="utf-8") as f:
            texts = [ln.split("\t")[0] for ln in f.read().splitlines()[1:]]
        lengths = [len(e.ids) for e in tok.encode_batch(texts)]
    for shape in args.families:
        ours, ref = family_pair(shape)
        cfg = ours.config
        for T in args.seqs:
            for B in (1, 32):
                work = B * T * cfg.flops_per_token(T)
                inner = max(1, int(2e9 / work)) if B == 1 else 1
                batch = synthetic(B, T, cfg.vocab_size)
                batch["input_ids"] = batch["input_ids"].clamp(min=cfg.pad_token_id + 1)  # no pad id inside
                a, b = compare(ours, ref, [batch], args.repeats if work < 5e11 else max(2, args.repeats // 2), inner)
                unit = (f"{1000 * a:.1f} ms", f"{1000 * b:.1f} ms") if B == 1 else (f"{B / a:.1f} seq/s",
                                                                                    f"{B / b:.1f} seq/s")
                rows.append(dict(size=shape, seq=T, batch=B, bertkit_s=a, transformers_s=b, ratio=b / a))
                print(f"| {shape} | {T} | {B} | {unit[0]} | {unit[1]} | {b / a:.2f} | {work / a / 1e9:.0f} "
                      f"({100 * work / a / 1e9 / peak:.0f} %) |", flush=True)
        if lengths:  # real lengths, padded per batch of 32, pad id where there is padding
            g = torch.Generator().manual_seed(0)
            batches = []
            for i in range(0, len(lengths), 32):
                n = lengths[i:i + 32]
                mask = (torch.arange(max(n))[None] < torch.tensor(n)[:, None]).long()
                ids = torch.randint(cfg.pad_token_id + 1, cfg.vocab_size, mask.shape, generator=g)
                batches.append({"input_ids": ids.masked_fill(mask == 0, cfg.pad_token_id), "attention_mask": mask,
                                "token_type_ids": torch.zeros_like(ids)})
            a, b = compare(ours, ref, batches, max(2, args.repeats // 2), 1)
            rows.append(dict(size=shape, seq="SST-2 dev lengths", batch=32, bertkit_s=a, transformers_s=b,
                             ratio=b / a))
            print(f"| {shape} | SST-2 dev lengths ({len(lengths)} sentences, padded per batch) | 32 | "
                  f"{len(lengths) / a:.0f} sent/s | {len(lengths) / b:.0f} sent/s | {b / a:.2f} | — |", flush=True)
    return rows


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
    ap.add_argument("--families", nargs="+", choices=list(FAMILY_SHAPES),
                    help="time these shapes of the other families instead of BERT's sizes")
    ap.add_argument("--out", default=None, help="default benchmarks/out/forward.json (forward-families.json)")
    args = ap.parse_args()
    args.out = args.out or f"benchmarks/out/forward{'-families' if args.families else ''}.json"
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
    if args.families:
        rows = family_rows(args, peak)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"setup": header, "rows": rows}, indent=2) + "\n")
        return
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
