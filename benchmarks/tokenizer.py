"""Tokenizer throughput, bertkit vs transformers' BertTokenizer (fast, Rust) and BertTokenizerLegacy (Python),
side by side in one process on real lines (SST-2 train, NSMC test, Wikipedia paragraphs), the all-MiniLM-L6-v2
(bert-base-uncased) vocabulary.

    python benchmarks/tokenizer.py [--lines 20000] [--repeats 5]

Two tasks, each producing the same thing from both libraries:
- ids: input_ids and token_type_ids as Python lists for every line (what a data pipeline stores);
- tensors: a padded (B, T) batch of input_ids / token_type_ids / attention_mask, in batches of 32 (what a model eats).
The legacy tokenizer is timed on the first 2,000 lines only (it is ~50x slower) and reported per line.
"""

from __future__ import annotations

import argparse
import gzip
import json
import statistics
import time
from pathlib import Path

import transformers

from bertkit import Tokenizer, packaged_model_dir

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def real_lines(n: int) -> list[str]:
    def gz(*p):
        with gzip.open(DATA.joinpath(*p), "rt", encoding="utf-8") as f:
            return f.read().splitlines()

    sst2 = [ln.split("\t")[0] for ln in gz("glue", "SST-2", "train.tsv.gz")[1:]]
    nsmc = [ln.split("\t")[1] for ln in gz("nsmc", "test.tsv.gz")[1:]]
    wiki = [ln for ln in gz("wikitext", "enwiki_2015", "enwiki_part2.txt.gz")[:20000] if ln.strip()]
    lines = []
    for trio in zip(sst2, nsmc, wiki):
        lines.extend(trio)
    return lines[:n]


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lines", type=int, default=20000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default="benchmarks/out/tokenizer.json")
    args = ap.parse_args()
    d = packaged_model_dir()
    ours = Tokenizer.from_pretrained(d)
    fast = transformers.BertTokenizer.from_pretrained(str(d))
    legacy = transformers.BertTokenizerLegacy.from_pretrained(str(d))
    for t in (fast, legacy):
        t.model_max_length = 512
    lines = real_lines(args.lines)
    chars = sum(map(len, lines))

    def ours_ids():
        return [(e.ids, e.type_ids) for e in ours.encode_batch(lines, max_length=512)]

    def fast_ids():
        out = fast(lines, truncation=True, max_length=512, return_attention_mask=False)
        return list(zip(out["input_ids"], out["token_type_ids"]))

    def ours_tensors():
        return [ours.batch(lines[i:i + 32], max_length=512) for i in range(0, len(lines), 32)]

    def fast_tensors():
        return [fast(lines[i:i + 32], truncation=True, max_length=512, padding=True, return_tensors="pt")
                for i in range(0, len(lines), 32)]

    assert ours_ids() == fast_ids(), "outputs differ: the comparison would be meaningless"
    results = {}
    print(f"{len(lines)} real lines, {chars / len(lines):.0f} characters per line on average")
    print("| task | bertkit | BertTokenizer (fast) | BertTokenizerLegacy | bertkit / fast | bertkit / legacy |")
    print("|---|---|---|---|---|---|")
    few = lines[:2000]
    legacy_s = best_of(lambda: legacy(few, truncation=True, max_length=512), 1) / len(few) * len(lines)
    for task, a_fn, b_fn in (("ids", ours_ids, fast_ids), ("tensors, batches of 32", ours_tensors, fast_tensors)):
        a_times, b_times = [], []
        for _ in range(args.repeats):  # interleaved
            a_times.append(best_of(a_fn, 1))
            b_times.append(best_of(b_fn, 1))
        a, b = statistics.median(a_times), statistics.median(b_times)
        results[task] = dict(bertkit_lines_per_s=len(lines) / a, fast_lines_per_s=len(lines) / b,
                             legacy_lines_per_s=len(lines) / legacy_s, ratio_vs_fast=b / a, ratio_vs_legacy=legacy_s / a)
        print(f"| {task} | {len(lines) / a:,.0f} lines/s | {len(lines) / b:,.0f} lines/s | "
              f"{len(lines) / legacy_s:,.0f} lines/s | {b / a:.2f} | {legacy_s / a:.1f} |", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
