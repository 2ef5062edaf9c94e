"""Extractive summaries on real articles: each method of `bertkit.apps.summarize` against the references.

    python benchmarks/summarize.py                       # all-MiniLM-L6-v2 sentence vectors
    python benchmarks/summarize.py --model DIR --korean-model DIR

English: the 445 BBC articles of ../shared/data/summarization (title line dropped, sentences by `split_text`), ROUGE
as rouge-score computes it (`metrics.rouge`, no stemming) of the chosen sentences joined by spaces against the
reference summary, at k = 3 and at a length-matched k (the reference's number of sentences). The settings of
`centrality` (its lexical share of the graph, mmr) are chosen on the first `--tune` articles by ROUGE-2 at k = 3 and every figure
is reported on the others (the held-out articles), so nothing is chosen on what is scored.

Korean: the 20 science articles with human-marked sentences, sentence precision / recall / F1 of the chosen indices
at k = 3 and at k = the number marked (4-5), and ROUGE with the unicode tokenisation (rouge-score's deletes Hangul)
against the marked sentences. No tuning: the English settings.

Time: seconds per article for the default method, sentence vectors included, measured over the held-out articles.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import itertools
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))

from bertkit.apps.summarize import split_text, summarize  # noqa: E402
from bertkit.checkpoint import packaged_model_dir  # noqa: E402
from bertkit.infer.predictor import Predictor, PredictorSettings  # noqa: E402
from bertkit.metrics import rouge, sentence_prf  # noqa: E402

DATA = HERE.parent.parent / "shared" / "data" / "summarization"
GRID = {"lexical": (0.0, 0.3, 0.5, 0.7, 0.8, 0.9, 1.0), "mmr": (1.0, 0.8)}


def bbc() -> list[tuple[list[str], str]]:
    with gzip.open(DATA / "bbc_news_summary_valid.csv.gz", "rt", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    out = []
    for r in rows:
        body = r["document"].split("\n", 1)[1] if "\n" in r["document"] else r["document"]  # the title line
        out.append((split_text(body), r["summary"]))
    return out


def korean() -> list[dict]:
    with gzip.open(DATA / "sci_news_sum_kr_dev.jsonl.gz", "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def reference_sentences(summary: str) -> int:
    """The reference's number of sentences (its full stops run into the next sentence: "said.the")."""
    return max(1, len(split_text(summary.replace(".", ". "))))


def mean_rouge(articles, picks) -> dict[str, float]:
    scores = [rouge(" ".join(s[i] for i in p), ref) for (s, ref), p in zip(articles, picks)]
    return {m: 100 * statistics.mean(x[m]["f"] for x in scores) for m in ("rouge1", "rouge2", "rougeL")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="sentence vectors (default: all-MiniLM-L6-v2 from PyPI)")
    ap.add_argument("--korean-model", default=None, help="sentence vectors for Korean (default: --model)")
    ap.add_argument("--tune", type=int, default=145, help="articles for choosing centrality's settings")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    model = args.model or str(packaged_model_dir())
    predictor = Predictor.from_pretrained(model, PredictorSettings(threads=args.threads))
    articles = bbc()
    start = time.perf_counter()
    vectors = [predictor.embed(s) for s, _ in articles]
    embed_s = time.perf_counter() - start
    tune, test = range(args.tune), range(args.tune, len(articles))
    # centrality's settings, chosen on the tuning articles by ROUGE-2 at k = 3
    best = None
    for values in itertools.product(*GRID.values()):
        chosen = dict(zip(GRID, values))
        picks = [summarize(articles[i][0], 3, vectors=vectors[i], **chosen) for i in tune]
        r2 = mean_rouge([articles[i] for i in tune], picks)["rouge2"]
        print(f"  tuning articles, centrality {chosen}: ROUGE-2 {r2:.2f}", flush=True)
        if best is None or r2 > best[0]:
            best = (r2, chosen)
    settings = best[1]
    print(f"centrality settings chosen on articles 0-{args.tune - 1}: {settings} (ROUGE-2 {best[0]:.2f} there)")
    held = [articles[i] for i in test]
    report = {"model": model, "settings": settings, "tune_articles": args.tune, "test_articles": len(held),
              "english": {}}
    for label, ks in (("k = 3", [3] * len(held)), ("length-matched k", [reference_sentences(r) for _, r in held])):
        print(f"\nBBC, {len(held)} held-out articles, {label} (mean k {statistics.mean(ks):.1f}); ROUGE-1 / 2 / L F1")
        for method in ("lead", "textrank", "frequency", "centroid", "centrality", "oracle"):
            extra = settings if method == "centrality" else {}
            picks = [summarize(s, k, method, vectors=vectors[i], reference=ref, **extra)
                     for (s, ref), k, i in zip(held, ks, test)]
            r = mean_rouge(held, picks)
            report["english"].setdefault(label, {})[method] = r
            print(f"  {method:11s} {r['rouge1']:.1f} / {r['rouge2']:.1f} / {r['rougeL']:.1f}", flush=True)
    # time per article, vectors included, default method
    times = []
    for i in test:
        t = time.perf_counter()
        summarize(articles[i][0], 3, vectors=predictor.embed(articles[i][0]), **settings)
        times.append(time.perf_counter() - t)
    report["seconds_per_article"] = {"p50": statistics.median(times), "max": max(times),
                                     "first_pass_embed_s": embed_s}
    print(f"\ncentrality, vectors included: p50 {statistics.median(times):.3f} s an article, max {max(times):.3f}")

    ko_model = args.korean_model or model
    ko_predictor = predictor if ko_model == model else Predictor.from_pretrained(
        ko_model, PredictorSettings(threads=args.threads))
    docs = korean()
    print(f"\nKorean science news, {len(docs)} articles, human-marked sentences ({ko_model})")
    report["korean"] = {"model": ko_model}
    for label in ("k = 3", "k = marked"):
        for method in ("lead", "textrank", "frequency", "centroid", "centrality"):
            f1s, r2s = [], []
            for d in docs:
                s, gold = d["sentences"], d["summaries"]
                k = 3 if label == "k = 3" else len(gold)
                v = ko_predictor.embed(s) if method in ("centroid", "centrality") else None
                p = summarize(s, k, method, vectors=v, **(settings if method == "centrality" else {}))
                f1s.append(sentence_prf(p, gold)["f"])
                r2s.append(rouge(" ".join(s[i] for i in p), " ".join(s[i] for i in gold), "unicode")["rouge2"]["f"])
            row = {"sentence_f1": 100 * statistics.mean(f1s), "rouge2_unicode": 100 * statistics.mean(r2s)}
            report["korean"].setdefault(label, {})[method] = row
            print(f"  {label:10s} {method:11s} sentence F1 {row['sentence_f1']:.1f}, ROUGE-2 {row['rouge2_unicode']:.1f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
