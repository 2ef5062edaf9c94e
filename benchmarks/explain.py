"""Faithfulness of the explanations, measured (ERASER: comprehensiveness and sufficiency, AOPC over 1/5/10/20/50 %
of the words; `bertkit.apps.explain`): gradient x input and integrated gradients against random word scores and
leave-one-out, on a classifier's real evaluation sentences.

    python benchmarks/explain.py --model runs/finetune/sst2-30k                 # SST-2 dev
    python benchmarks/explain.py --model runs/finetune/nsmc --task nsmc          # NSMC test

Comprehensiveness: higher is more faithful (the words named were needed); sufficiency: lower is more faithful (they
were enough). Means over the first `--n` sentences of at least `--min-words` words; seconds per explanation.
"""

from __future__ import annotations

import argparse
import gzip
import json
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))

from bertkit.apps.explain import faithfulness, leave_one_out_scores, random_scores  # noqa: E402
from bertkit.infer.predictor import Predictor, PredictorSettings  # noqa: E402

DATA = HERE.parent.parent / "shared" / "data"


def sentences(task: str) -> list[str]:
    path = DATA / ("glue/SST-2/dev.tsv.gz" if task == "sst2" else "nsmc/test.tsv.gz")
    with gzip.open(path, "rt", encoding="utf-8") as f:
        rows = [line.rstrip("\n").split("\t") for line in f][1:]
    return [r[0] if task == "sst2" else r[1] for r in rows]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="a fine-tuned classifier directory")
    ap.add_argument("--task", choices=["sst2", "nsmc"], default="sst2")
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--min-words", type=int, default=4)
    ap.add_argument("--steps", type=int, default=32, help="integrated gradients' steps")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    p = Predictor.from_pretrained(args.model, PredictorSettings(threads=args.threads))
    texts = [t for t in sentences(args.task) if len(t.split()) >= args.min_words][:args.n]
    methods = {
        "gradient x input": lambda t: p.explain(t)["words"],
        "integrated gradients (mask baseline)": lambda t: p.explain(t, method="integrated gradients",
                                                                    steps=args.steps, baseline="mask")["words"],
        "integrated gradients (pad baseline)": lambda t: p.explain(t, method="integrated gradients",
                                                                   steps=args.steps, baseline="pad")["words"],
        "leave-one-out": lambda t: leave_one_out_scores(p, t, p.explain(t)["words"]),
        "random": lambda t: random_scores(p.explain(t)["words"], seed=len(t)),
    }
    report = {"model": args.model, "task": args.task, "n": len(texts), "methods": {}}
    print(f"{args.model} on {len(texts)} {args.task} sentences; AOPC over 1/5/10/20/50 % of the words")
    for name, explain in methods.items():
        comp, suff, secs = [], [], []
        for t in texts:
            start = time.perf_counter()
            words = explain(t)
            secs.append(time.perf_counter() - start)
            f = faithfulness(p, t, words)
            comp.append(f["comprehensiveness"])
            suff.append(f["sufficiency"])
        row = {"comprehensiveness": statistics.mean(comp), "sufficiency": statistics.mean(suff),
               "seconds_p50": statistics.median(secs)}
        report["methods"][name] = row
        print(f"  {name:38s} comprehensiveness {row['comprehensiveness']:.3f} (higher is better), sufficiency "
              f"{row['sufficiency']:.3f} (lower is better), {row['seconds_p50']:.3f} s an explanation", flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
