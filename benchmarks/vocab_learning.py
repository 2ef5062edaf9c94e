"""Learn the two reference vocabularies and measure them: time, peak memory, [UNK] rate on a test set.

    python benchmarks/vocab_learning.py [--data ../shared/data] [--out benchmarks/out/vocab]

- Korean: 32k pieces from the NSMC review corpus (512k reviews), [UNK] rate on the 50k NSMC test reviews.
- English: 32k pieces from 100 MB of Wikipedia (enwiki_part0), [UNK] rate on WikiText-2 test.

Each run happens in its own process so that its peak resident memory (ru_maxrss) is its own.
"""

from __future__ import annotations

import argparse
import gzip
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

RUNS = {
    "nsmc-32k": dict(corpus=["nsmc/corpus.txt.gz"], size=32000, test="nsmc/test.tsv.gz", column=1),
    "enwiki100MB-32k": dict(corpus=["wikitext/enwiki_2015/enwiki_part0.txt.gz"], size=32000,
                            test="wikitext/wikitext-2/test.txt.gz", column=None),
}


def test_lines(path: Path, column: int | None) -> list[str]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        lines = f.read().splitlines()
    if column is not None:  # TSV with a header: id, document, label
        lines = [ln.split("\t")[column] for ln in lines[1:]]
    return [ln.strip() for ln in lines if ln.strip()]


def one(name: str, data: Path, out: Path) -> dict:
    from bertkit.vocab import learn_vocab, measure, save_vocab

    spec = RUNS[name]
    start = time.perf_counter()
    tok, report = learn_vocab([data / c for c in spec["corpus"]], size=spec["size"], show_progress=False)
    seconds = time.perf_counter() - start
    save_vocab(tok, report, out / name)
    test = measure(tok, test_lines(data / spec["test"], spec["column"]))
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"run": name, "corpus": spec["corpus"], "size": spec["size"], "seconds": round(seconds, 1),
            "peak_rss_mib": round(peak_mib), "held_out_unk_rate": report.unk_rate,
            "test_set": spec["test"], "test_lines": test.held_out_lines, "test_unk_rate": test.unk_rate,
            "test_tokens_per_line": round(test.tokens_per_line, 2), "jamo_pieces": report.jamo_pieces,
            "hangul_syllable_pieces": report.hangul_syllable_pieces}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[1].parent / "shared" / "data"))
    ap.add_argument("--out", default="benchmarks/out/vocab")
    ap.add_argument("--only", choices=list(RUNS))
    ap.add_argument("--one", choices=list(RUNS), help=argparse.SUPPRESS)
    args = ap.parse_args()
    data, out = Path(args.data), Path(args.out)
    if args.one:
        print(json.dumps(one(args.one, data, out)))
        return
    results = []
    for name in [args.only] if args.only else RUNS:
        proc = subprocess.run([sys.executable, __file__, "--data", str(data), "--out", str(out), "--one", name],
                              capture_output=True, text=True, check=True)
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(json.dumps(results[-1]), flush=True)
    print("\n| run | corpus | time (s) | peak RSS (MiB) | test set | test lines | [UNK] rate | tokens/line | jamo pieces |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['run']} | {', '.join(r['corpus'])} | {r['seconds']} | {r['peak_rss_mib']} | {r['test_set']} | "
              f"{r['test_lines']} | {100 * r['test_unk_rate']:.3f} % | {r['test_tokens_per_line']} | "
              f"{r['jamo_pieces']} |")
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
