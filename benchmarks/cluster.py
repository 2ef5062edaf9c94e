"""Every clustering figure of bertkit's README/RESULTS: `bertkit.apps.cluster` on real news with all-MiniLM-L6-v2.

    python benchmarks/cluster.py [--quick] [--skip-sweep] [--umap] [--only bbc|news] [--backend torch|onnx]
                                 [--int8] [--batch-size N] [--max-tokens N] [--json OUT.json]

1. BBC News (445 articles of summarization/bbc_news_summary_valid.csv.gz, `document`; the 5 `categories` are the
   evaluation): scikit-learn's HDBSCAN with its defaults on the raw vectors (the baseline), then bertkit's default
   pipeline (normalise, PCA to 5, HDBSCAN min_cluster_size 15, min_samples 2): noise share, ARI / NMI / V-measure
   over all articles with the noise as one cluster, and after assigning the noise to the nearest centroid.
2. The sweep the defaults were chosen from (reduction x dimensions x min_cluster_size x min_samples; UMAP over
   three seeds with --umap), and the default on eight random 90 % subsamples (how much it depends on the data drawn).
3. Korean news titles (12,006 of news/kpf_newstrust_titles.json.gz, `title`; 11 `category` values): the scores
   over all titles and clustered per category (`by`), and the whole `bertkit cluster` job timed (read, encode,
   cluster, write JSONL + PNG + HTML). all-MiniLM-L6-v2 has an English vocabulary: it reads Hangul as jamo pieces
   (lower-casing strips accents, which decomposes syllables), so the Korean figures measure a model that barely
   reads the language.

Accuracy figures do not depend on the machine's load; timings do (run alone for the final numbers). --quick: the
first 150 articles and 1,500 titles, a small sweep: a check that the script runs, not figures.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import io
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from bertkit.apps.embed import BATCH_SIZE, MAX_TOKENS

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("BERTKIT_DATA", ROOT.parent / "shared" / "data"))
warnings.filterwarnings("ignore")  # scikit-learn's FutureWarning on HDBSCAN(copy=...) in the baseline


def bbc(limit: int | None) -> tuple[list[str], list[str]]:
    with gzip.open(DATA / "summarization" / "bbc_news_summary_valid.csv.gz", "rt", encoding="utf-8") as f:
        rows = list(csv.DictReader(io.StringIO(f.read())))[:limit]
    return [r["document"] for r in rows], [r["categories"] for r in rows]


def news(limit: int | None) -> list[dict]:
    with gzip.open(DATA / "news" / "kpf_newstrust_titles.json.gz", "rt", encoding="utf-8") as f:
        return json.load(f)[:limit]


def row(name: str, labels: np.ndarray, gold, assigned: np.ndarray | None = None) -> dict:
    from bertkit.apps.cluster import scores

    out = {"setting": name, "clusters": int(labels.max()) + 1, "noise": round(float((labels < 0).mean()), 3),
           **{k: round(v, 3) for k, v in scores(labels, gold).items()}}
    if assigned is not None:
        out.update({f"{k}_assigned": round(v, 3) for k, v in scores(assigned, gold).items()})
    return out


def table(rows: list[dict]) -> None:
    keys = list(dict.fromkeys(k for r in rows for k in r))
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for r in rows:
        print("| " + " | ".join(str(r.get(k, "")) for k in keys) + " |")
    print(flush=True)


def bbc_section(args, model: Path, report: dict) -> None:
    from sklearn.cluster import HDBSCAN

    from bertkit.apps.cluster import _assign, _normalise, cluster, encode_texts

    docs, gold = bbc(150 if args.quick else None)
    t0 = time.perf_counter()
    vectors = encode_texts(model, docs, args.batch_size, args.max_tokens, args.backend, args.int8)
    print(f"## BBC News: {len(docs)} articles, encoded in {time.perf_counter() - t0:.1f} s", flush=True)
    baseline = HDBSCAN().fit(vectors).labels_
    default = cluster(vectors, docs)
    rows = [row("sklearn HDBSCAN defaults, raw vectors (baseline)", baseline, gold,
                _assign(_normalise(vectors), baseline)),
            row("bertkit default: PCA 5, mcs 15, min_samples 2", default.hdbscan_labels, gold,
                default.assigned_labels)]
    table(rows)
    print("keywords:", {c: [w for w, _ in kw[:6]] for c, kw in default.keywords.items()}, "\n", flush=True)
    report["bbc"] = {"articles": len(docs), "rows": rows}
    if args.skip_sweep:
        return
    sweep = []
    dims = (2, 5) if args.quick else (2, 3, 5, 10, 20, 50)
    sizes = (10, 15) if args.quick else (5, 10, 15, 25)
    for reduce, n_components in [("none", 384)] + [("pca", d) for d in dims]:
        for mcs in sizes:
            for ms in dict.fromkeys((mcs, 2, 5)):  # mcs: scikit-learn's default
                found = cluster(vectors, reduce=reduce, n_components=n_components, min_cluster_size=mcs,
                                min_samples=ms, keywords=0)
                sweep.append(row(f"{reduce} {n_components if reduce != 'none' else ''} mcs {mcs} ms {ms}",
                                 found.hdbscan_labels, gold, found.assigned_labels))
    if args.umap:
        for seed in (0, 1, 2):
            for mcs in sizes:
                for ms in dict.fromkeys((mcs, 2, 5)):  # mcs: scikit-learn's default
                    found = cluster(vectors, reduce="umap", min_cluster_size=mcs, min_samples=ms, keywords=0,
                                    seed=seed)
                    sweep.append(row(f"umap 5 seed {seed} mcs {mcs} ms {ms}", found.hdbscan_labels, gold,
                                     found.assigned_labels))
    print("### the sweep (ari/nmi/v_measure: noise as one cluster; *_assigned: after assigning the noise)")
    table([{k: r[k] for k in ("setting", "clusters", "noise", "ari", "ari_assigned")} for r in sweep])
    subsamples = []
    gold_array = np.asarray(gold)
    for ms in (2, 5):  # the default, and the steadier min_samples
        for seed in range(8):
            idx = np.sort(np.random.default_rng(seed).permutation(len(docs))[:int(0.9 * len(docs))])
            found = cluster(vectors[idx], min_samples=ms, keywords=0)
            subsamples.append(row(f"min_samples {ms}, 90 % subsample {seed}", found.hdbscan_labels, gold_array[idx],
                                  found.assigned_labels))
    print("### the default (min_samples 2), and min_samples 5, on random 90 % subsamples")
    table([{k: r[k] for k in ("setting", "clusters", "noise", "ari", "ari_assigned")} for r in subsamples])
    report["bbc"].update(sweep=sweep, subsamples=subsamples)


def news_section(args, model: Path, report: dict) -> None:
    from bertkit.apps.cluster import cluster, cluster_file, encode_texts

    items = news(1500 if args.quick else None)
    titles, gold = [r["title"] for r in items], [r["category"] for r in items]
    t0 = time.perf_counter()
    vectors = encode_texts(model, titles, args.batch_size, args.max_tokens, args.backend, args.int8)
    encode_s = time.perf_counter() - t0
    print(f"## Korean news titles: {len(titles)} titles, encoded in {encode_s:.1f} s", flush=True)
    rows = []
    for name, by, mcs in (("all titles at once", None, 15), ("per category (by=category)", gold, 15),
                          ("per category, min_cluster_size 5", gold, 5)):
        t0 = time.perf_counter()
        found = cluster(vectors, titles, by=by, min_cluster_size=mcs)
        seconds = time.perf_counter() - t0
        rows.append({**row(name, found.hdbscan_labels, gold, found.assigned_labels), "cluster_s": round(seconds, 1),
                     "largest": max(n for c, n in found.sizes().items() if c >= 0)})
        sizes = found.sizes()
        print(f"{name}: the biggest clusters and their keywords:", {
            c: (n, found.groups.get(c, ""), [w for w, _ in found.keywords[c][:5]]) for c, n in list(sizes.items())[:8]
            if c >= 0})
    table(rows)
    with tempfile.TemporaryDirectory(prefix="bertkit-cluster-bench-") as work:
        src = Path(work) / "titles.jsonl"
        src.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in items), encoding="utf-8")
        t0 = time.perf_counter()
        summary = cluster_file(model, src, Path(work) / "out.jsonl", text_field="title", by="category",
                               labels="category", plot=Path(work) / "c.png", html_path=Path(work) / "c.html",
                               batch_size=args.batch_size, max_tokens=args.max_tokens, backend=args.backend,
                               int8=args.int8)
        job_s = time.perf_counter() - t0
    print(f"whole job (`bertkit cluster --by category --labels category --plot --html`): {job_s:.1f} s "
          f"(encode {summary['seconds']['encode']} s, cluster {summary['seconds']['cluster']} s)\n", flush=True)
    report["news"] = {"titles": len(titles), "encode_s": round(encode_s, 1), "rows": rows, "job_s": round(job_s, 1),
                      "job": summary["seconds"]}


def main() -> None:
    from bertkit.checkpoint import packaged_model_dir

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="default: the packaged all-MiniLM-L6-v2")
    ap.add_argument("--quick", action="store_true", help="small subsets, a small sweep: does it run")
    ap.add_argument("--skip-sweep", action="store_true")
    ap.add_argument("--umap", action="store_true", help="add UMAP (three seeds) to the sweep")
    ap.add_argument("--only", choices=["bbc", "news"])
    ap.add_argument("--batch-size", type=int, default=BATCH_SIZE, help="texts per model call at most")
    ap.add_argument("--max-tokens", type=int, default=MAX_TOKENS, help="tokens per model call at most (0: off)")
    ap.add_argument("--backend", choices=["torch", "onnx"], default="torch")
    ap.add_argument("--int8", action="store_true", help="encode with the dynamic int8 encoder")
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args()
    model = Path(args.model) if args.model else packaged_model_dir()
    report: dict = {"model": str(model), "backend": args.backend, "int8": args.int8, "batch_size": args.batch_size,
                    "max_tokens": args.max_tokens}
    if args.only != "news":
        bbc_section(args, model, report)
    if args.only != "bbc":
        news_section(args, model, report)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1, ensure_ascii=False), encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
