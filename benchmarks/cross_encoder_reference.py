"""A sentence-pair regression (cross-encoder) fine-tuned with transformers alone, beside `bertkit finetune`: whether a
model that does not learn a pair task fails in bertkit or in itself, and whether the usual remedies change it.

    python benchmarks/cross_encoder_reference.py --model runs/ko-minilm --task korsts            # HF's own head
    python benchmarks/cross_encoder_reference.py --model runs/ko-minilm --task korsts --pool mean
    python benchmarks/cross_encoder_reference.py --model runs/ko-minilm --task korsts --zero-types
    python benchmarks/cross_encoder_reference.py --model MINILM --task stsb                       # the control

The recipe of `bertkit finetune --task korsts --epochs 1 --batch-size 16 --lr 1e-4` (AdamW, weight decay 0.01,
linear decay after 10 % warm-up, gradient norm clipped at 1, MSE on the 0-5 score, 128 tokens), written out with
transformers' `BertModel`: `--pool cls` is `BertForSequenceClassification`'s head (the pooler's tanh over [CLS],
then a linear layer), `--pool mean` a linear layer over the mean of the tokens, `--zero-types` every token of
segment B given segment id 0 (RoBERTa's way of reading a pair). Dev Spearman x 100 at the end, and a character
Jaccard baseline of the same pairs (what overlap alone gives). Both cores; a few minutes a run.
"""

from __future__ import annotations

import argparse
import gzip
import random
from pathlib import Path

import torch
from scipy.stats import spearmanr

DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
FILES = {"korsts": ("kornlu/sts-train.tsv.gz", "kornlu/sts-dev.tsv.gz"),
         "stsb": ("glue/STS-B/train.tsv.gz", "glue/STS-B/dev.tsv.gz")}


def read(path: Path) -> list[tuple[str, str, float]]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        rows = [line.rstrip("\n").split("\t") for line in f]
    a, b, s = (rows[0].index(c) for c in ("sentence1", "sentence2", "score"))
    return [(r[a], r[b], float(r[s])) for r in rows[1:]]


def char_jaccard(a: str, b: str) -> float:
    x, y = set(a.replace(" ", "")), set(b.replace(" ", ""))
    return len(x & y) / max(len(x | y), 1)


def main() -> None:
    from transformers import BertModel, BertTokenizerFast, get_linear_schedule_with_warmup

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--task", choices=sorted(FILES), default="korsts")
    ap.add_argument("--pool", choices=("cls", "mean"), default="cls")
    ap.add_argument("--zero-types", action="store_true")
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    train, dev = (read(DATA / f) for f in FILES[args.task])
    tok = BertTokenizerFast.from_pretrained(args.model)
    encoder = BertModel.from_pretrained(args.model)
    head = torch.nn.Linear(encoder.config.hidden_size, 1)
    params = [*encoder.parameters(), *head.parameters()]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01)
    per_epoch = len(train) // args.batch_size
    sched = get_linear_schedule_with_warmup(opt, per_epoch * args.epochs // 10, per_epoch * args.epochs)

    def scores(rows):
        x = tok([r[0] for r in rows], [r[1] for r in rows], padding=True, truncation=True, max_length=128,
                return_tensors="pt")
        if args.zero_types:
            x["token_type_ids"] = torch.zeros_like(x["token_type_ids"])
        h = encoder(**x).last_hidden_state
        if args.pool == "mean":
            m = x["attention_mask"].unsqueeze(-1).to(h.dtype)
            v = (h * m).sum(1) / m.sum(1)
        else:
            v = encoder.pooler(h)
        return head(v)[:, 0]

    encoder.train()
    for epoch in range(args.epochs):
        rng.shuffle(train)
        losses = []
        for i in range(per_epoch):
            rows = train[i * args.batch_size:(i + 1) * args.batch_size]
            loss = torch.nn.functional.mse_loss(scores(rows), torch.tensor([r[2] for r in rows]))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step(), sched.step(), opt.zero_grad()
            losses.append(loss.item())
        print(f"epoch {epoch + 1}: training MSE of its last 100 steps {sum(losses[-100:]) / len(losses[-100:]):.3f} "
              f"(the scores' variance: {torch.tensor([r[2] for r in train]).var().item():.3f})", flush=True)
    encoder.eval()
    with torch.no_grad():
        pred = [s for i in range(0, len(dev), 64) for s in scores(dev[i:i + 64]).tolist()]
    gold = [r[2] for r in dev]
    print(f"{args.task} dev Spearman x 100: {100 * spearmanr(pred, gold).correlation:.1f} ({args.model}, pool "
          f"{args.pool}{', segment ids 0' if args.zero_types else ''}, lr {args.lr:g}, {args.epochs} epoch(s)); "
          f"character Jaccard of the pair: {100 * spearmanr([char_jaccard(a, b) for a, b, _ in dev], gold).correlation:.1f}")


if __name__ == "__main__":
    main()
