"""Sentence-embedding training throughput: bertkit's recipe (`bertkit sbert`, over the one loop) against
sentence-transformers training the same model with the same loss on the same batches in the same order, with the
same threads, for the same number of steps. Pairs per second, interleaved repeats, medians and the ratio.

    python benchmarks/sbert.py --quick            # a few steps, one repeat: checks that it runs and agrees
    python benchmarks/sbert.py                    # 100 steps x 3 repeats (run alone: timings under load mislead)
    python benchmarks/sbert.py --loss mnrl --data nli   # MNRL on KorNLI triplets

The sentence-transformers side is its training step as `SentenceTransformerTrainer` runs it: the collator tokenises
each column of the batch (`model.preprocess`), the loss module embeds the columns (`embed_columns`: the anchors in
one padded forward pass, the other columns in another), then backward, gradient clipping at 1.0, AdamW (lr 2e-5, weight decay 0.01) and a linear warm-up
schedule, as bertkit's loop does. It runs that step in a plain loop (the `datasets` package the Trainer needs is
not installed here), so the Trainer's own bookkeeping is not counted against it: the ratio is conservative.
bertkit's time includes loading the model, tokenising its whole training set up front (the recipe does it once)
and the loop's checkpoint at the end; sentence-transformers' includes loading the model.

Before timing, `--check` (on by default) compares the first batch's loss of both with dropout off: they must agree
to 1e-4, or the two sides are not computing the same thing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
DATA = Path(os.environ.get("BERTKIT_DATA", ROOT.parent / "shared" / "data"))

from bertkit.apps.sentence import SentenceModel  # noqa: E402
from bertkit.checkpoint import packaged_model_dir  # noqa: E402
from bertkit.data.pairs import for_loss, read_pairs  # noqa: E402
from bertkit.train.loop import TrainConfig, train  # noqa: E402
from bertkit.train.sentence import SentenceTask, SentenceTrainee  # noqa: E402

DATASETS = {"sts": ("stsb", "cosent"), "nli": (f"kornli:{DATA / 'kornlu' / 'xnli.dev.ko.tsv.gz'}", "mnrl")}


def batches_in_order(task: SentenceTask, steps: int) -> list[list[int]]:
    """The rows of each step as bertkit's schedule draws them: the sentence-transformers side gets the same."""
    return [task.schedule.step(s)[0] for s in range(steps)]


def run_bertkit(model_dir: Path, rows, loss: str, batch: int, steps: int, threads: int, max_length: int) -> float:
    """Seconds for `steps` steps of the recipe, its tokenisation of the training set included."""
    start = time.perf_counter()
    sentence = SentenceModel.from_pretrained(model_dir)
    model = SentenceTrainee(sentence)
    task = SentenceTask(sentence, rows, loss, batch, 12345, max_length)
    build = time.perf_counter() - start
    cfg = TrainConfig(steps=steps, lr=2e-5, warmup=0.1, log_every=10**9, save_every=0, keep_checkpoints=1,
                      threads=threads)
    with tempfile.TemporaryDirectory() as out:
        result = train(model, task, cfg, out, tokenizer=sentence.tokenizer, show_progress=False)
    return build + result["train_seconds"]


def st_loss(model, loss: str):
    from sentence_transformers.sentence_transformer import losses

    return losses.CoSENTLoss(model) if loss == "cosent" else losses.MultipleNegativesRankingLoss(model)


def st_step_inputs(model, rows, indices: list[int], loss: str):
    prepare = getattr(model, "preprocess", None) or model.tokenize  # sentence-transformers 6 renamed it
    features = [prepare([rows.columns[i][c] for i in indices]) for c in range(rows.width)]
    labels = torch.tensor([rows.labels[i] for i in indices], dtype=torch.float32) if loss == "cosent" else None
    return features, labels


def run_st(model_dir: Path, rows, loss: str, order: list[list[int]], threads: int, max_length: int) -> float:
    """Seconds for the same steps as sentence-transformers trains them (see the module docstring)."""
    from sentence_transformers import SentenceTransformer
    from transformers import get_linear_schedule_with_warmup

    torch.set_num_threads(threads)
    start = time.perf_counter()
    model = SentenceTransformer(str(model_dir), device="cpu")
    model.max_seq_length = max_length
    criterion = st_loss(model, loss)
    decay = [p for n, p in model.named_parameters() if not any(k in n for k in ("bias", "LayerNorm"))]
    rest = [p for n, p in model.named_parameters() if any(k in n for k in ("bias", "LayerNorm"))]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": rest, "weight_decay": 0.0}],
                                  lr=2e-5)
    schedule = get_linear_schedule_with_warmup(optimizer, int(0.1 * len(order)), len(order))
    model.train()
    for indices in order:
        features, labels = st_step_inputs(model, rows, indices, loss)
        criterion(features, labels).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def check_same_loss(model_dir: Path, rows, loss: str, batch: int, max_length: int) -> tuple[float, float]:
    """The first batch's loss on both sides, dropout off."""
    from sentence_transformers import SentenceTransformer

    sentence = SentenceModel.from_pretrained(model_dir)
    task = SentenceTask(sentence, rows, loss, batch, 12345, max_length)
    trainee = SentenceTrainee(sentence).eval()
    indices = task.schedule.step(0)[0]
    with torch.no_grad():
        ours = float(task.batch_loss(trainee, task.collate(indices)))
        model = SentenceTransformer(str(model_dir), device="cpu").eval()
        model.max_seq_length = max_length
        features, labels = st_step_inputs(model, rows, indices, loss)
        theirs = float(st_loss(model, loss)(features, labels))
    return ours, theirs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="sentence-transformers directory (default: all-MiniLM-L6-v2)")
    ap.add_argument("--data", choices=list(DATASETS), default="sts", help="sts: STS-B train, CoSENT; nli: KorNLI "
                                                                          "dev as triplets, MNRL")
    ap.add_argument("--loss", choices=["cosent", "mnrl"], help="default: the data's")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-length", type=int, default=256, help="tokens per text, both sides")
    ap.add_argument("--quick", action="store_true", help="10 steps, one repeat")
    ap.add_argument("--no-check", dest="check", action="store_false")
    ap.add_argument("--json", help="also write the result here")
    args = ap.parse_args()
    if args.quick:
        args.steps, args.repeats = 10, 1
    model_dir = Path(args.model) if args.model else packaged_model_dir()
    spec, default_loss = DATASETS[args.data]
    loss = args.loss or default_loss
    rows = for_loss(read_pairs(spec, "train", DATA), loss)
    torch.set_num_threads(args.threads)
    if args.check:
        ours, theirs = check_same_loss(model_dir, rows, loss, args.batch_size, args.max_length)
        print(f"first-batch {loss} loss, dropout off: bertkit {ours:.6f}  sentence-transformers {theirs:.6f}")
        if abs(ours - theirs) > 1e-4 * max(1.0, abs(theirs)):
            sys.exit("the two sides disagree: not comparing")
    sentence = SentenceModel.from_pretrained(model_dir)
    order = batches_in_order(SentenceTask(sentence, rows, loss, args.batch_size, 12345, args.max_length), args.steps)
    pairs = args.steps * args.batch_size
    times: dict[str, list[float]] = {"bertkit": [], "sentence-transformers": []}
    for r in range(args.repeats):  # interleaved, so that a change in machine load hits both
        times["bertkit"].append(run_bertkit(model_dir, rows, loss, args.batch_size, args.steps, args.threads,
                                            args.max_length))
        times["sentence-transformers"].append(run_st(model_dir, rows, loss, order, args.threads, args.max_length))
        print(f"repeat {r + 1}: " + ", ".join(f"{k} {pairs / v[-1]:.1f} pairs/s" for k, v in times.items()),
              flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    result = {"loss": loss, "data": args.data, "steps": args.steps, "batch_size": args.batch_size,
              "threads": args.threads, "repeats": args.repeats,
              **{f"{k}_pairs_per_s": pairs / v for k, v in med.items()},
              "ratio": med["sentence-transformers"] / med["bertkit"], "seconds": times}
    print(f"median pairs/s: bertkit {pairs / med['bertkit']:.1f}, sentence-transformers "
          f"{pairs / med['sentence-transformers']:.1f}; ratio {result['ratio']:.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
