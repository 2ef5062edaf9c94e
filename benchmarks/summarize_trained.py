"""The trained (BertSum-style) sentence scorer on the BBC articles, held out the way benchmarks/summarize.py holds
them out: every figure is on articles 145-444, each scored by a model that never saw it.

    python benchmarks/summarize_trained.py [--model DIR] [--select-lr 5e-5,1e-4,2e-4] [--folds 2]
    python benchmarks/summarize_trained.py --korean runs/ko-minilm --select-lr 1e-4 --epochs 10   # 20 Korean articles

1. The learning rate is chosen on the tuning articles alone (0-144): trained on the first 100, ROUGE-2 at k = 3 on
   the other 45.
2. Cross-validation over the held-out articles: for each of `--folds` parts, a scorer trained on the tuning
   articles + the other parts (labels: the greedy oracle's 3 sentences) scores that part.
3. ROUGE-1/2/L F1 at k = 3 and at the length-matched k, trigram blocking on, beside the untrained methods' figures
   of the same articles (benchmarks/summarize.py prints those).

Korean (`--korean ENCODER`): the 20 science articles with human-marked sentences, 5-fold (trained on 16 with the
marked sentences as labels, scored on the other 4), sentence precision / recall / F1 at k = 3 and at k = the
number marked, beside lead and TextRank on the same articles. No learning rate is chosen there (20 articles): the
one given.

Runs go to runs/extractive-bbc/ (git-ignored); time is this machine's, both cores.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE))

from summarize import bbc, korean, mean_rouge, reference_sentences  # noqa: E402

from bertkit.apps.extractive import ExtractiveConfig, ExtractiveScorer  # noqa: E402
from bertkit.apps.summarize import summarize  # noqa: E402
from bertkit.checkpoint import packaged_model_dir  # noqa: E402
from bertkit.metrics import sentence_prf  # noqa: E402
from bertkit.train.extractive import ExtractiveTrainConfig, run_extractive  # noqa: E402

RUNS = HERE.parent / "runs" / "extractive-bbc"


def write(path: Path, articles) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"sentences": s, "reference": r}) + "\n" for s, r in articles))
    return str(path)


def korean_folds(args) -> dict:
    docs = korean()
    folds = 5
    picks = {label: {m: [] for m in ("trained", "lead", "textrank", "frequency")} for label in ("k = 3", "k = marked")}
    for f in range(folds):
        test = [d for i, d in enumerate(docs) if i % folds == f]
        train_docs = [d for i, d in enumerate(docs) if i % folds != f]
        path = RUNS / f"korean-{f}-train.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps({"sentences": d["sentences"], "labels": d["summaries"]},
                                           ensure_ascii=False) + "\n" for d in train_docs))
        cfg = ExtractiveTrainConfig(model=args.korean, train_file=str(path), out=str(RUNS / f"korean-{f}"),
                                    epochs=args.epochs, batch_size=args.batch_size, rouge_tokens="unicode",
                                    scorer=ExtractiveConfig(layers=args.layers, graph_features=args.graph_features),
                                freeze_encoder=args.freeze_encoder, label_k=args.label_k)
        cfg.train.lr, cfg.train.threads = float(args.select_lr.split(",")[0]), args.threads
        cfg.head_lr = args.head_lr
        run_extractive(cfg, overwrite=True)
        scorer = ExtractiveScorer.from_pretrained(RUNS / f"korean-{f}")
        for d, sc in zip(test, scorer.scores([d["sentences"] for d in test])):
            for label in picks:
                k = 3 if label == "k = 3" else len(d["summaries"])
                for m in picks[label]:
                    chosen = summarize(d["sentences"], k, m, scores=sc)
                    picks[label][m].append(sentence_prf(chosen, d["summaries"]))
        print(f"Korean fold {f}: trained on {len(train_docs)}, scored {len(test)}", flush=True)
    out = {}
    for label, by in picks.items():
        for m, rows in by.items():
            out.setdefault(label, {})[m] = {x: 100 * statistics.mean(r[x] for r in rows)
                                            for x in ("precision", "recall", "f")}
            row = out[label][m]
            print(f"Korean, {label}: {m:9s} sentence P / R / F1 {row['precision']:.1f} / {row['recall']:.1f} / "
                  f"{row['f']:.1f}")
    return out


def train(name: str, model: str, train_set, eval_set, args, lr: float) -> tuple[ExtractiveScorer, dict]:
    cfg = ExtractiveTrainConfig(model=model, train_file=write(RUNS / f"{name}-train.jsonl", train_set),
                                eval_file=write(RUNS / f"{name}-eval.jsonl", eval_set) if eval_set else "",
                                out=str(RUNS / name), epochs=args.epochs, batch_size=args.batch_size,
                                scorer=ExtractiveConfig(layers=args.layers, graph_features=args.graph_features),
                                freeze_encoder=args.freeze_encoder, label_k=args.label_k, targets=args.targets)
    cfg.train.lr, cfg.train.threads, cfg.head_lr = lr, args.threads, args.head_lr
    start = time.perf_counter()
    result = run_extractive(cfg, overwrite=True)
    result["wall_seconds"] = time.perf_counter() - start
    return ExtractiveScorer.from_pretrained(RUNS / name), result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="the encoder (default: all-MiniLM-L6-v2 from PyPI)")
    ap.add_argument("--select-lr", default="5e-5,1e-4,2e-4")
    ap.add_argument("--folds", type=int, default=2)
    ap.add_argument("--tune", type=int, default=145)
    ap.add_argument("--epochs", type=float, default=3.0)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--head-lr", type=float, default=0.0, help="the new layers' learning rate (0: --lr's)")
    ap.add_argument("--graph-features", action="store_true", help="TextRank and frequency scores, ranks, position")
    ap.add_argument("--label-k", type=int, default=3, help="BBC: the greedy oracle's sentences labelled per article")
    ap.add_argument("--targets", choices=("oracle", "rouge"), default="oracle",
                    help="BBC: the oracle's sentences as 1s, or each sentence's ROUGE-2 recall as a soft label")
    ap.add_argument("--freeze-encoder", action="store_true", help="the new layers alone, on fixed sentence vectors")
    ap.add_argument("--select-only", action="store_true", help="stop after choosing the learning rate")
    ap.add_argument("--korean", default=None, help="the Korean articles instead, with this encoder")
    args = ap.parse_args()
    if args.korean:
        report = {"model": args.korean, "lr": float(args.select_lr.split(",")[0]), "korean": korean_folds(args)}
        if args.json:
            args.json.write_text(json.dumps(report, indent=2) + "\n")
        return
    model = args.model or str(packaged_model_dir())
    articles = bbc()
    tune, held = articles[:args.tune], articles[args.tune:]
    report = {"model": model, "epochs": args.epochs, "batch_size": args.batch_size, "layers": args.layers,
              "freeze_encoder": args.freeze_encoder,
              "graph_features": args.graph_features, "label_k": args.label_k, "targets": args.targets,
              "select": {}, "folds": []}
    rates = [float(x) for x in args.select_lr.split(",")]
    report["head_lr"] = args.head_lr
    if len(rates) > 1 or args.select_only:
        for lr in rates:
            _, result = train(f"select-{lr:g}", model, tune[:100], tune[100:], args, lr)
            report["select"][f"{lr:g}"] = {"rouge2": result["rouge2"], "wall_seconds": result["wall_seconds"]}
            print(f"lr {lr:g}: ROUGE-2 {result['rouge2']:.2f} on tuning articles 100-{args.tune - 1} "
                  f"({result['wall_seconds'] / 60:.1f} min)", flush=True)
        lr = max(rates, key=lambda r: report["select"][f"{r:g}"]["rouge2"])
    else:
        lr = rates[0]
    report["lr"] = lr
    print(f"learning rate: {lr:g}")
    if args.select_only:
        if args.json:
            args.json.write_text(json.dumps(report, indent=2) + "\n")
        return
    scores: list = [None] * len(held)
    parts = [list(range(f, len(held), args.folds)) for f in range(args.folds)]
    for f, part in enumerate(parts):
        others = [held[i] for g, p in enumerate(parts) if g != f for i in p]
        scorer, result = train(f"fold-{f}", model, tune + others, None, args, lr)
        for i, s in zip(part, scorer.scores([held[i][0] for i in part])):
            scores[i] = s
        report["folds"].append({"train_articles": result["train_articles"], "wall_seconds": result["wall_seconds"],
                                "train_seconds": result["train_seconds"]})
        print(f"fold {f}: trained on {result['train_articles']} articles in {result['wall_seconds'] / 60:.1f} min, "
              f"scored {len(part)}", flush=True)
    report["results"] = {}
    for label, ks in (("k = 3", [3] * len(held)), ("length-matched k", [reference_sentences(r) for _, r in held])):
        picks = [summarize(s, k, "trained", scores=sc) for (s, _), k, sc in zip(held, ks, scores)]
        oracle = [summarize(s, k, "oracle", reference=r) for (s, r), k in zip(held, ks)]
        r, o = mean_rouge(held, picks), mean_rouge(held, oracle)
        report["results"][label] = {"trained": r, "oracle": o}
        print(f"BBC, {len(held)} held-out articles, {label}: trained {r['rouge1']:.1f} / {r['rouge2']:.1f} / "
              f"{r['rougeL']:.1f} (oracle {o['rouge2']:.1f} ROUGE-2)")
    times = []
    for s, _ in held[:50]:
        t = time.perf_counter()
        summarize(s, 3, "trained", scores=scorer.scores([s])[0])
        times.append(time.perf_counter() - t)
    report["seconds_per_article"] = {"p50": statistics.median(times), "max": max(times)}
    print(f"trained scorer: p50 {statistics.median(times):.3f} s an article (max {max(times):.3f})")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
