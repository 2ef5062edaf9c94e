"""Fine-tuning throughput with and without `--group-by-length`, on real SQuAD windows, in one process.

    python benchmarks/group_by_length.py [--steps 8] [--repeats 3] [--threads 2]

all-MiniLM-L6-v2 with a span-QA head, training steps of 32 windows (max length 384, doc stride 128) from the
SQuAD 1.1 dev file, forward + backward + AdamW, dropout 0.1. The same windows batched two ways (random batches,
as by default; grouped by length) alternate, `--repeats` times each, over the same step numbers; reported: real
(non-padding) tokens per second, medians, and the ratio. Results in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch

from bertkit import Tokenizer, packaged_model_dir
from bertkit.data.features import QASettings
from bertkit.data.pretraining import Schedule
from bertkit.data.tasks import read_squad
from bertkit.heads import BertForQuestionAnswering
from bertkit.train.finetune import QATask

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("BERTKIT_DATA", ROOT.parent / "shared" / "data"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--questions", type=int, default=3000, help="SQuAD dev questions to cut windows from")
    ap.add_argument("--steps", type=int, default=8, help="training steps per timed run")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    d = packaged_model_dir()
    tok = Tokenizer.from_pretrained(d)
    questions = read_squad(DATA / "squad" / "dev-v1.1.json.gz")[: args.questions]
    task = QATask(tok, questions, [], QASettings(), korean=False, batch_size=32, seed=0)
    rows = task.train_rows
    lengths = [len(r["input_ids"]) for r in rows]
    print(f"{len(rows)} windows, mean {statistics.mean(lengths):.0f} pieces, longest {max(lengths)}")
    model = BertForQuestionAnswering.from_pretrained(d).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    orders = {"random batches": Schedule(len(rows), 32, seed=0),
              "grouped by length": Schedule(len(rows), 32, seed=0, lengths=lengths)}

    def run(schedule: Schedule) -> tuple[float, float]:  # (real tokens/s, share of the padded batch that is padding)
        task.schedule = schedule
        tokens = padded = 0
        start = time.perf_counter()
        for step in range(1, args.steps + 1):  # step 0 warms up nothing in particular: skip it for both
            (b,) = task.micro_batches(step, 0, 1, 1)
            out = model(b["input_ids"], b["attention_mask"], b["token_type_ids"],
                        start_positions=b["start_positions"], end_positions=b["end_positions"])
            out.loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            tokens += int(b["attention_mask"].sum())
            padded += b["attention_mask"].numel()
        return tokens / (time.perf_counter() - start), 1 - tokens / padded

    run(orders["random batches"])  # warm-up
    speed: dict[str, list[float]] = {name: [] for name in orders}
    padding = {}
    for r in range(args.repeats):
        for name, schedule in orders.items():
            tps, padding[name] = run(schedule)
            speed[name].append(tps)
            print(f"  run {r + 1}: {name:18s} {tps:7.0f} tokens/s (padding {100 * padding[name]:.0f} %)", flush=True)
    base = statistics.median(speed["random batches"])
    for name in orders:
        med = statistics.median(speed[name])
        print(f"{name:18s} median {med:7.0f} real tokens/s, padding {100 * padding[name]:4.1f} %, "
              f"{med / base:.2f}x random batches")


if __name__ == "__main__":
    main()
