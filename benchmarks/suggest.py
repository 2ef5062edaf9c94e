"""Word suggestions, measured: recall@1 / @5 of held-out whole words, by how many pieces the word takes, and the
latency of one query at batch 1 (`bertkit.apps.suggest`), beside the classic one-piece fill-mask of transformers'
pipeline on the same weights, in one process, queries interleaved.

    python benchmarks/suggest.py --model runs/en-minilm-mlm --corpus wikitext     # WikiText-2 test
    python benchmarks/suggest.py --model runs/ko-minilm --corpus korquad          # KorQuAD 1.0 dev contexts
    python benchmarks/suggest.py --model runs/ko-minilm --corpus nsmc             # NSMC test reviews

A sample is a sentence (8-60 words; an NSMC review of 5-60) with one word held out: English, a run of letters
between spaces or punctuation; Korean, an eojeol of Hangul syllables only. NSMC's test reviews are outside the
review corpus the Korean encoder was pre-trained on (../shared/data/nsmc/README.md), and in its domain; KorQuAD's
Wikipedia contexts are not. The word is replaced by the mask token and the model's
suggestions are compared with it by pieces (the tokenizer's own spelling, so case folding is the model's). A word
longer than --max-pieces pieces cannot be suggested and counts as a miss (its share is printed). The one-piece
pipeline can only ever name one-piece words.
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import re
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))

from bertkit.apps.suggest import SuggestSettings, Suggester  # noqa: E402
from bertkit.data.corpus import split_sentences  # noqa: E402
from bertkit.infer.predictor import Predictor, PredictorSettings  # noqa: E402

DATA = HERE.parent.parent / "shared" / "data"
HANGUL_WORD = re.compile(r"(?<!\S)[가-힣]+(?!\S)")
WORD = {"wikitext": re.compile(r"(?<![\w'’-])[A-Za-z]{2,}(?![\w'’-])"), "korquad": HANGUL_WORD, "nsmc": HANGUL_WORD}


def detokenize(line: str) -> str:
    """WikiText's tokenized text back to plain text (@-@ joins, spaces before punctuation)."""
    line = re.sub(r" @(.)@ ", r"\1", line)
    line = re.sub(r" ([.,;:!?)\]'’]|n't|'s|'re|'ve|'ll|'d)", r"\1", line)
    return re.sub(r"([(\[]) ", r"\1", line).strip()


def sentences(corpus: str) -> list[str]:
    out = []
    if corpus == "wikitext":
        with gzip.open(DATA / "wikitext/wikitext-2/test.txt.gz", "rt", encoding="utf-8") as f:
            for line in f:
                if line.strip() and not line.strip().startswith("=") and "<unk>" not in line:
                    out.extend(split_sentences(detokenize(line)))
    elif corpus == "nsmc":
        with gzip.open(DATA / "nsmc/test.tsv.gz", "rt", encoding="utf-8") as f:
            out = [line.rstrip("\n").split("\t")[1] for line in f][1:]
        return [s for s in out if 5 <= len(s.split()) <= 60]
    else:
        with gzip.open(DATA / "korquad/KorQuAD_v1.0_dev.json.gz", "rt", encoding="utf-8") as f:
            contexts = {p["context"] for a in json.load(f)["data"] for p in a["paragraphs"]}
        for c in sorted(contexts):
            out.extend(split_sentences(c.replace("\n", " ")))
    return [s for s in out if 8 <= len(s.split()) <= 60]


def samples(corpus: str, n: int, seed: int) -> list[tuple[str, int, int]]:
    rng = random.Random(seed)
    pool = sentences(corpus)
    rng.shuffle(pool)
    out = []
    for s in pool:
        words = list(WORD[corpus].finditer(s))
        if words:
            m = rng.choice(words)
            out.append((s, m.start(), m.end()))
        if len(out) == n:
            break
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="a masked-LM directory")
    ap.add_argument("--corpus", choices=list(WORD), default="wikitext")
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-pieces", type=int, default=3)
    ap.add_argument("--beam", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-peer", action="store_true", help="skip transformers' fill-mask pipeline")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    p = Predictor.from_pretrained(args.model, PredictorSettings(threads=args.threads))
    sug = Suggester(p, SuggestSettings(top_k=5, max_pieces=args.max_pieces, beam=args.beam))
    mask = p.tok.specials["mask"]
    peer = None
    if not args.no_peer:
        from transformers import pipeline

        peer = pipeline("fill-mask", model=args.model, tokenizer=args.model, top_k=5, device="cpu")
    reads = {"calls": 0, "rows": 0}  # what the search asks of the model (bertkit's queries)
    # rows by (the query's model call, masks in the row): with one mask in the text, call 1 reads the first piece
    # of each length (rows of 1, 2, 3 masks), call 2 the second pieces (2-piece words: 1 mask, 3-piece: 2), ...
    split: dict[str, int] = {}
    real = p.masked_log_probs

    def counted(batch, *a, **kw):
        reads["calls"] += 1
        reads["rows"] += len(batch)
        for ids, _ in batch:
            key = f"call {reads['calls'] - calls_before}, {sum(t == p.tok.mask_id for t in ids)} masks"
            split[key] = split.get(key, 0) + 1
        return real(batch, *a, **kw)

    p.masked_log_probs = counted
    rows = samples(args.corpus, args.n, args.seed)
    buckets: dict[str, dict[str, list]] = {}
    times: dict[str, list[float]] = {"bertkit": [], "pipeline": []}
    for i, (s, a, b) in enumerate(rows):
        text, gold = s[:a] + mask + s[b:], sug.word_pieces(s[a:b])
        size = "1 piece" if len(gold) == 1 else ("2 pieces" if len(gold) == 2 else
                                                 f"3-{args.max_pieces} pieces" if len(gold) <= args.max_pieces
                                                 else f"> {args.max_pieces} pieces")
        got = {}
        order = ("bertkit", "pipeline") if i % 2 == 0 else ("pipeline", "bertkit")
        for who in order:
            if who == "pipeline" and peer is None:
                continue
            calls_before = reads["calls"]
            start = time.perf_counter()
            if who == "bertkit":
                words = [x["words"][0] for x in sug.suggest(text)["suggestions"]]
                got[who] = [sug.word_pieces(w) for w in words]
            else:
                got[who] = [[x["token"]] for x in peer(text)]
            times[who].append(time.perf_counter() - start)
        for who, pieces in got.items():
            hit = [gold == x for x in pieces]
            bucket = buckets.setdefault(who, {}).setdefault(size, [])
            bucket.append((any(hit[:1]), any(hit[:5])))
    report = {"model": args.model, "corpus": args.corpus, "n": len(rows), "threads": args.threads,
              "max_pieces": args.max_pieces, "beam": args.beam, "results": {}}
    print(f"{args.model} on {len(rows)} held-out words of {args.corpus} (seed {args.seed}), {args.threads} threads")
    print(f"{'':10} {'words':>16} {'share':>6} {'recall@1':>9} {'recall@5':>9}")
    for who, by in buckets.items():
        every = [h for hits in by.values() for h in hits]
        for size, hits in sorted(by.items()) + [("all", every)]:
            r1, r5 = (100 * sum(h[k] for h in hits) / len(hits) for k in (0, 1))
            report["results"].setdefault(who, {})[size] = {"n": len(hits), "recall@1": round(r1, 1),
                                                           "recall@5": round(r5, 1)}
            print(f"{who:10} {size:>16} {100 * len(hits) / len(every):5.1f}% {r1:9.1f} {r5:9.1f}")
    for who, t in times.items():
        if t:
            q = statistics.quantiles(t, n=10)
            report["results"][who]["latency_ms"] = {"p50": round(1000 * statistics.median(t), 1),
                                                    "p90": round(1000 * q[8], 1)}
            print(f"{who}: latency p50 {1000 * statistics.median(t):.1f} ms, p90 {1000 * q[8]:.1f} ms (batch 1)")
    per = {k: v / max(len(rows), 1) for k, v in reads.items()}
    report["results"]["bertkit"]["model_reads_per_query"] = {k: round(v, 2) for k, v in per.items()}
    by = {k: round(v / max(len(rows), 1), 2) for k, v in sorted(split.items())}
    report["results"]["bertkit"]["rows_per_query"] = by
    print(f"bertkit: {per['calls']:.2f} model calls and {per['rows']:.2f} rows a query; rows a query by "
          + ", ".join(f"{k}: {v}" for k, v in by.items()))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
