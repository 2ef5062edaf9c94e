"""Tokenizer parity and throughput, bertkit vs transformers, side by side in one process on real lines (SST-2
train, NSMC test, Wikipedia paragraphs: English and Korean).

    python benchmarks/tokenizer.py [--kind bert|wordpiece|bpe|unigram|all] [--lines 20000] [--repeats 5]

- `bert` (the default): the all-MiniLM-L6-v2 (bert-base-uncased) vocabulary against BertTokenizer (fast, Rust)
  and BertTokenizerLegacy (Python); the legacy tokenizer is timed on the first 2,000 lines only (it is ~50x
  slower) and reported per line.
- `wordpiece`, `bpe`, `unigram`: a vocabulary of that kind learned here (`--train-lines` lines of other text:
  Wikipedia paragraphs and NSMC reviews, half each; `--size` pieces), saved by bertkit and loaded by
  `transformers.AutoTokenizer` (its fast tokenizer of that kind). First the exact-match counts on every line:
  ids, type ids and offsets (both libraries give character offsets into each text of a pair; compared as they
  are) of single lines, and of pairs (line i with line i + n/2) truncated longest-first to 64 tokens.
- `all`: bert, then the three kinds.

Two timed tasks, each producing the same thing from both libraries, interleaved repeats, medians:
- ids: input_ids (and token_type_ids where the family has them) as Python lists for every line (what a data
  pipeline stores);
- tensors: a padded (B, T) batch of input_ids / token_type_ids / attention_mask, in batches of 32 (what a model eats).
"""

from __future__ import annotations

import argparse
import gzip
import itertools
import json
import statistics
import tempfile
import time
from pathlib import Path

import transformers

from bertkit import Tokenizer, packaged_model_dir
from bertkit.vocab import learn_vocab

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


def train_lines(n: int) -> list[str]:
    """`n` lines for learning a vocabulary, none of them among `real_lines`: Wikipedia paragraphs of another part
    and NSMC training-corpus reviews, half each."""
    with gzip.open(DATA / "wikitext" / "enwiki_2015" / "enwiki_part0.txt.gz", "rt", encoding="utf-8") as f:
        wiki = list(itertools.islice((ln for ln in f if ln.strip()), n // 2))
    with gzip.open(DATA / "nsmc" / "corpus.txt.gz", "rt", encoding="utf-8") as f:
        reviews = list(itertools.islice((ln for ln in f if ln.strip()), n - len(wiki)))
    return [ln.rstrip("\n") for ln in wiki + reviews]


def side_by_side(ours: Tokenizer, fast, lines: list[str], repeats: int, extra=None) -> dict:
    """Both tokenizers on the same two tasks (id lists, padded tensors), outputs checked equal first, then timed
    interleaved; segment ids compared only where the tokenizer has them."""
    types = ours.uses_token_types

    def ours_ids():
        encs = ours.encode_batch(lines, max_length=512)
        return [(e.ids, e.type_ids) for e in encs] if types else [e.ids for e in encs]

    def fast_ids():
        out = fast(lines, truncation=True, max_length=512, return_attention_mask=False, return_token_type_ids=types)
        return list(zip(out["input_ids"], out["token_type_ids"])) if types else out["input_ids"]

    def ours_tensors():
        return [ours.batch(lines[i:i + 32], max_length=512) for i in range(0, len(lines), 32)]

    def fast_tensors():
        return [fast(lines[i:i + 32], truncation=True, max_length=512, padding=True, return_tensors="pt")
                for i in range(0, len(lines), 32)]

    assert ours_ids() == fast_ids(), "outputs differ: the comparison would be meaningless"
    n, results = len(lines), {}
    for task, a_fn, b_fn in (("ids", ours_ids, fast_ids), ("tensors, batches of 32", ours_tensors, fast_tensors)):
        a_times, b_times = [], []
        for _ in range(repeats):  # interleaved
            a_times.append(best_of(a_fn, 1))
            b_times.append(best_of(b_fn, 1))
        a, b = statistics.median(a_times), statistics.median(b_times)
        results[task] = dict(bertkit_lines_per_s=n / a, fast_lines_per_s=n / b, ratio_vs_fast=b / a)
        if extra is not None:
            results[task].update(extra(a))
    return results


def run_bert(lines: list[str], repeats: int) -> dict:
    d = packaged_model_dir()
    ours = Tokenizer.from_pretrained(d)
    fast = transformers.BertTokenizer.from_pretrained(str(d))
    legacy = transformers.BertTokenizerLegacy.from_pretrained(str(d))
    for t in (fast, legacy):
        t.model_max_length = 512
    few = lines[:2000]
    legacy_s = best_of(lambda: legacy(few, truncation=True, max_length=512), 1) / len(few) * len(lines)
    results = side_by_side(ours, fast, lines, repeats,
                           lambda a: dict(legacy_lines_per_s=len(lines) / legacy_s, ratio_vs_legacy=legacy_s / a))
    print("| task | bertkit | BertTokenizer (fast) | BertTokenizerLegacy | bertkit / fast | bertkit / legacy |")
    print("|---|---|---|---|---|---|")
    for task, r in results.items():
        print(f"| {task} | {r['bertkit_lines_per_s']:,.0f} lines/s | {r['fast_lines_per_s']:,.0f} lines/s | "
              f"{r['legacy_lines_per_s']:,.0f} lines/s | {r['ratio_vs_fast']:.2f} | {r['ratio_vs_legacy']:.1f} |",
              flush=True)
    return results


def parity(ours: Tokenizer, fast, lines: list[str]) -> dict:
    """Exact-match counts: ids (with type ids) and offsets, single lines and truncated pairs."""
    counts = {}
    half = len(lines) // 2
    for name, a, b, kw in (("single", lines, None, {}),
                           ("pair, max_length 64", lines[:half], lines[half:2 * half], dict(max_length=64))):
        got = ours.encode_batch(a, b, **kw)
        exp = fast(a, *([b] if b else []), return_offsets_mapping=True, return_token_type_ids=True,
                   **(dict(truncation="longest_first", **kw) if kw else {}))
        ids = sum(g.ids == e and g.type_ids == t for g, e, t in zip(got, exp["input_ids"], exp["token_type_ids"]))
        offsets = sum(g.offsets == [tuple(o) for o in e] for g, e in zip(got, exp["offset_mapping"]))
        counts[name] = dict(lines=len(a), ids_equal=ids, offsets_equal=offsets)
    return counts


def run_kind(kind: str, lines: list[str], repeats: int, n_train: int, size: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus.txt"
        corpus.write_text("\n".join(train_lines(n_train)) + "\n", encoding="utf-8")
        start = time.perf_counter()
        ours, report = learn_vocab([corpus], size=size, kind=kind, show_progress=False)
        learn_s = time.perf_counter() - start
        ours.save(Path(tmp) / "tok")
        fast = transformers.AutoTokenizer.from_pretrained(str(Path(tmp) / "tok"))
        ours = Tokenizer.from_pretrained(Path(tmp) / "tok")
    fast.model_max_length = 10**6
    print(f"\n{kind}: {report.vocab_size} pieces learned from {n_train:,} lines in {learn_s:.0f}s; "
          f"transformers loads it as {type(fast).__name__}")
    counts = parity(ours, fast, lines)
    results = side_by_side(ours, fast, lines, repeats)
    print(f"| {kind} ({type(fast).__name__}) | lines | ids equal | offsets equal |")
    print("|---|---|---|---|")
    for name, c in counts.items():
        print(f"| {name} | {c['lines']:,} | {c['ids_equal']:,} | {c['offsets_equal']:,} |")
    print("| task | bertkit | transformers (fast) | bertkit / fast |")
    print("|---|---|---|---|")
    for task, r in results.items():
        print(f"| {task} | {r['bertkit_lines_per_s']:,.0f} lines/s | {r['fast_lines_per_s']:,.0f} lines/s | "
              f"{r['ratio_vs_fast']:.2f} |", flush=True)
    return dict(transformers_class=type(fast).__name__, learn_seconds=learn_s, parity=counts, **results)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kind", choices=["bert", "wordpiece", "bpe", "unigram", "all"], default="bert")
    ap.add_argument("--lines", type=int, default=20000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--train-lines", type=int, default=40_000, help="lines to learn each kind's vocabulary from")
    ap.add_argument("--size", type=int, default=32000, help="pieces in each learned vocabulary")
    ap.add_argument("--out", help="JSON results (default benchmarks/out/tokenizer[-KIND].json)")
    args = ap.parse_args()
    lines = real_lines(args.lines)
    print(f"{len(lines)} real lines, {sum(map(len, lines)) / len(lines):.0f} characters per line on average")
    kinds = ["bert", "wordpiece", "bpe", "unigram"] if args.kind == "all" else [args.kind]
    results = {}
    for kind in kinds:
        results[kind] = run_bert(lines, args.repeats) if kind == "bert" else \
            run_kind(kind, lines, args.repeats, args.train_lines, args.size)
    out = Path(args.out or f"benchmarks/out/tokenizer{'' if args.kind == 'bert' else '-' + args.kind}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results if len(kinds) > 1 else results[kinds[0]], indent=2) + "\n")


if __name__ == "__main__":
    main()
