"""The fine-tuning results table: each job fine-tunes with `bertkit finetune` on this machine and reports the task's
official metric, the wall time, and the published score of a comparable model.

    python benchmarks/finetune.py                       # every job (hours on 2 cores)
    python benchmarks/finetune.py --only sst2,stsb      # some of them
    python benchmarks/finetune.py --korean runs/ko-mini # the Korean jobs use this pre-trained model
    python benchmarks/finetune.py --features            # the feature-based CoNLL-2003 table (BERT paper, 5.3)
    python benchmarks/finetune.py --only squad --save-every 25   # a long job in parts: stop it any time, then
    python benchmarks/finetune.py --only squad --save-every 25 --resume   # (its time: the parts' loop times summed)
    python benchmarks/finetune.py --korean DIR --select-lr 5e-5,1e-4,3e-4   # each job's lr chosen first
    python benchmarks/finetune.py --korean DIR --only korsts,klue-sts-after-korsts   # KLUE-STS after KorSTS

`--select-lr`: before each job, one run per learning rate with `--validation 0.1` (trained on 90 % of the job's
training examples, scored on the other 10 %, held out by group or text: never the evaluation split); the job then
runs with the best of them and reports every validation score beside its result.

Writes benchmarks/out/finetune.json (every run's summary) and prints the markdown rows of README's table.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("BERTKIT_DATA", ROOT.parent / "shared" / "data"))

# (name, task, data, split, extra flags, published comparable score)
JOBS = [
    ("sst2", "sst2", "glue/SST-2", "dev", ["--epochs", "1", "--lr", "5e-5"],
     "MiniLM L6-H384: 91.3 (dev, Wang et al. 2020); BERT-base: 93.5 (test)"),
    ("cola", "cola", "glue/CoLA", "dev", ["--epochs", "3", "--lr", "5e-5"],
     "BERT-base: 52.1 MCC (test)"),
    ("mrpc", "mrpc", "glue/MRPC", "dev", ["--epochs", "5", "--lr", "5e-5"],
     "MiniLM L6-H384: 86.6 (dev); BERT-base: 88.9 F1 (test)"),
    ("stsb", "stsb", "glue/STS-B", "dev", ["--epochs", "4", "--lr", "1e-4", "--batch-size", "16"],
     "BERT-base: 85.8 Spearman (test)"),
    ("rte", "rte", "glue/RTE", "dev", ["--epochs", "4", "--lr", "5e-5"],
     "MiniLM L6-H384: 68.9 (dev); BERT-base: 66.4 (test)"),
    ("conll2003", "conll2003", "conll2003", "test (eng.testb)", ["--epochs", "3", "--lr", "5e-5"],
     "BERT-base: 92.4 F1 (test)"),
    ("squad", "squad", "squad", "dev, 20 % of articles held out", ["--split-eval", "0.2", "--epochs", "3",
                                                                    "--lr", "1e-4", "--group-by-length"],
     "BERT-base: 88.5 F1 (full dev, trained on 88k questions)"),
]
KOREAN_JOBS = [
    ("nsmc", "nsmc", "nsmc", "test", ["--epochs", "2", "--lr", "1e-4", "--max-train-examples", "20000"],
     "DistilKoBERT (3 layers, 28M): 88.3; KoBERT (92M): 88.7-89.6"),
    ("klue-nli", "klue-nli", "klue", "dev, 20 % of premises held out", ["--split-eval", "0.2", "--epochs", "10",
                                                                         "--lr", "3e-4"],
     "KLUE-BERT-base: 81.6 (dev; 24,998 training pairs)"),
    ("klue-sts", "klue-sts", "klue", "dev, 20 % held out", ["--split-eval", "0.2", "--epochs", "30", "--lr",
                                                             "3e-4"],
     "KLUE-BERT-base: 90.9 Pearson (dev; 11,668 training pairs)"),
    ("klue-ner", "klue-ner", "klue", "dev, 20 % held out", ["--split-eval", "0.2", "--epochs", "10", "--lr",
                                                             "3e-4"],
     "KLUE-BERT-base: 84.0 entity F1 (dev; 21,008 training sentences)"),
    # grouped by length (QA windows are mostly padding in random batches) and without dropout: attention dropout
    # takes PyTorch's unfused CPU attention, 6x slower at these lengths (benchmarks/attention_dropout.py); the
    # review BERT-mini's row ran before both, with dropout 0.1 in random batches
    ("korquad", "korquad", "korquad", "dev, 20 % of articles held out", ["--split-eval", "0.2", "--epochs", "2",
                                                                          "--lr", "3e-4", "--group-by-length",
                                                                          "--dropout", "0"],
     "KoMiniLM (6 layers, 23M): 78.3 / 88.0 EM / F1 (dev; 60,407 training questions)"),
    ("korsts", "korsts", "kornlu", "dev (1,499 pairs)", ["--epochs", "4", "--lr", "1e-4", "--batch-size", "16"],
     "klue/bert-base, supervised SimCSE on KorNLI: 86.0 cosine Spearman (KorSTS test; a bi-encoder)"),
]

# Intermediate-task training (STILTs, Phang et al. 2018): a Korean job started from another job's fine-tuned model
# (its output directory under --out, which must have run first): KLUE-STS has 421 training pairs here, KorSTS 5,749.
KOREAN_AFTER = [
    ("klue-sts-after-korsts", "klue-sts", "klue", "dev, 20 % held out", ["--split-eval", "0.2", "--epochs", "30",
                                                                          "--lr", "3e-4"],
     "KLUE-BERT-base: 90.9 Pearson (dev; 11,668 training pairs)", "korsts"),
]

# The BERT paper's feature-based table: BERT-base, CoNLL-2003 dev F1, two-layer 768-d BiLSTM on frozen layers.
FEATURE_JOBS = [("embeddings", 91.0), ("second_to_last", 95.6), ("last", 94.9), ("sum_last_four", 95.9),
                ("concat_last_four", 96.1), ("sum_all", 95.5)]
FEATURE_FLAGS = ["--eval-split", "eng.testa", "--epochs", "3", "--lr", "1e-3", "--lstm-hidden", "192"]


def with_lr(argv: list[str], lr: str) -> list[str]:
    """`argv` with its `--lr` set to `lr` (added where the job names none)."""
    argv = list(argv)
    if "--lr" in argv:
        argv[argv.index("--lr") + 1] = lr
    else:
        argv += ["--lr", lr]
    return argv


def main() -> None:
    from bertkit import packaged_model_dir
    from bertkit.cli import main as cli

    ap = argparse.ArgumentParser()
    ap.add_argument("--only", help="comma-separated job names")
    ap.add_argument("--korean", help="Korean pre-trained model directory (enables the Korean jobs)")
    ap.add_argument("--features", action="store_true", help="the feature-based CoNLL-2003 table instead")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "runs" / "finetune"))
    ap.add_argument("--save-every", type=int, default=0, help="checkpoint every N steps (for --resume)")
    ap.add_argument("--resume", action="store_true", help="continue each job from its last checkpoint")
    ap.add_argument("--select-lr", default="", help="comma-separated learning rates to choose from (see above)")
    ap.add_argument("--validation", type=float, default=0.1, help="--select-lr: the held-out training fraction")
    args = ap.parse_args()
    jobs = [(j, str(packaged_model_dir())) for j in JOBS]
    if args.features:
        jobs = [((f"features-{mode}", "conll2003", "conll2003", "dev (eng.testa)", ["--features", mode, *FEATURE_FLAGS],
                  f"BERT-base: {paper} F1 (dev)"), str(packaged_model_dir())) for mode, paper in FEATURE_JOBS]
    if args.korean:
        jobs += [(j, args.korean) for j in KOREAN_JOBS]
        jobs += [(j[:6], str(Path(args.out) / j[6])) for j in KOREAN_AFTER]
    if args.only:
        keep = set(args.only.split(","))
        jobs = [(j, m) for j, m in jobs if j[0] in keep]
    def run(argv: list[str]) -> dict | None:
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            code = cli(argv)
        if code != 0:
            print(f"{argv[argv.index('--out') + 1]}: failed (exit {code})", file=sys.stderr)
            return None
        return json.loads(buf.getvalue().strip().splitlines()[-1])

    results = []
    for (name, task, data, split, extra, published), model in jobs:
        out = Path(args.out) / name
        if not (Path(model) / "config.json").exists():
            print(f"{name}: skipped: starts from {model}, which has no model (run its job first)", file=sys.stderr)
            continue
        argv = ["finetune", "--task", task, "--model", model, "--data", str(DATA / data), "--out", str(out),
                "--threads", str(args.threads), *extra]
        selection, chose_at = {}, time.perf_counter()
        if args.select_lr:  # each learning rate scored on held-out training examples, then the best one runs
            for lr in args.select_lr.split(","):
                trial = with_lr(argv, lr) + ["--validation", str(args.validation), "--overwrite"]
                trial[trial.index("--out") + 1] = str(out) + f"-validation-lr{lr}"
                s = run(trial)
                if s is not None:
                    selection[lr] = s[s["metric"]]
                    print(f"  {name}: lr {lr}: validation {s['metric']} {100 * s[s['metric']]:.1f}", flush=True)
            if not selection:
                continue
            argv = with_lr(argv, max(selection, key=selection.get))
        if args.save_every:
            argv += ["--save-every", str(args.save_every)]
        argv += ["--resume"] if args.resume else ["--overwrite"]  # a rerun replaces the table's earlier run
        resumed = args.resume and (out / "checkpoints").exists()
        start = time.perf_counter()
        summary = run(argv)
        seconds = time.perf_counter() - start
        if summary is None:
            continue
        if selection:
            summary["lr_validation"] = selection
            summary["selection_seconds"] = round(start - chose_at, 1)
        if resumed:  # this call's wall time is only the last part: report the training loop's time over all parts
            seconds = summary["train_seconds"]
        results.append({"name": name, "model": model, "split": split, "seconds": seconds, "resumed": resumed,
                        "argv": argv,
                        "published": published, **summary})
        metric = summary["metric"]
        extra_metrics = ", ".join(f"{k} {100 * summary[k]:.1f}" for k in ("accuracy", "em", "pearson")
                                  if k in summary and k != metric)
        chosen = (f"; lr {argv[argv.index('--lr') + 1]} chosen on validation ("
                  + ", ".join(f"{lr}: {100 * v:.1f}" for lr, v in selection.items()) + ")") if selection else ""
        print(f"| {name} | {split} | {metric} | **{100 * summary[metric]:.1f}**{chosen}"
              f"{' (' + extra_metrics + ')' if extra_metrics else ''} | {published} | {seconds / 60:.1f} min{' (loop, summed over parts)' if resumed else ''} |",
              flush=True)
    Path(ROOT / "benchmarks" / "out").mkdir(parents=True, exist_ok=True)
    path = ROOT / "benchmarks" / "out" / ("features.json" if args.features else "finetune.json")
    # runs of a few jobs (--only) update their entries and keep the others
    kept = [r for r in (json.loads(path.read_text()) if path.exists() else [])
            if r["name"] not in {r["name"] for r in results}]
    path.write_text(json.dumps(kept + results, indent=2))


if __name__ == "__main__":
    main()
