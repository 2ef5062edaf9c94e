"""What attention dropout costs on the CPU: `F.scaled_dot_product_attention` forward + backward at one shape, with
`dropout_p` 0 and 0.1 (with dropout PyTorch takes its unfused path: the probabilities materialised and a Bernoulli
mask drawn), interleaved, medians.

    python benchmarks/attention_dropout.py [--batch 6 --heads 12 --seq 512 --head-dim 32 --threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for name, default in (("batch", 6), ("heads", 12), ("seq", 512), ("head-dim", 32), ("threads", 1),
                          ("repeats", 7)):
        ap.add_argument(f"--{name}", type=int, default=default)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    shape = (args.batch, args.heads, args.seq, args.head_dim)
    mask = torch.ones(args.batch, 1, 1, args.seq, dtype=torch.bool)
    mask[: args.batch // 2, ..., args.seq * 3 // 4:] = False  # half the rows padded, as batches are
    times: dict[float, list[float]] = {0.0: [], 0.1: []}
    for _ in range(args.repeats):
        for p in times:
            q, k, v = (torch.randn(shape, requires_grad=True) for _ in range(3))
            start = time.perf_counter()
            F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p).sum().backward()
            times[p].append(time.perf_counter() - start)
    for p, t in times.items():
        print(f"dropout {p}: {statistics.median(t[1:]):.3f} s forward + backward, one layer's attention {shape}")
    print(f"ratio: {statistics.median(times[0.1][1:]) / statistics.median(times[0.0][1:]):.1f}x")


if __name__ == "__main__":
    main()
