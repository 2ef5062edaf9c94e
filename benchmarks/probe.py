"""What a pre-trained encoder knows about a sentence task before fine-tuning: a logistic-regression probe on frozen
features (per sentence, the mean of its token states and the `[CLS]` state of one layer), trained on the first N
training sentences and scored on the evaluation split, for the pre-trained weights and for random weights of the
same architecture.

    python benchmarks/probe.py --model runs/en-mlm-13k [--task sst2] [--layers 0 2 4] [--train 1000 2000]

SST-2 (train -> dev) or NSMC (train -> the first 5,000 test reviews). The probe is L2-regularised logistic
regression on standardised features, fitted by L-BFGS (torch; no other dependency).
"""

from __future__ import annotations

import argparse
import gzip
import os
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("BERTKIT_DATA", ROOT.parent / "shared" / "data"))
SPLITS = {"sst2": ("glue/SST-2/train.tsv.gz", "glue/SST-2/dev.tsv.gz", 0, None),
          "nsmc": ("nsmc/train.tsv.gz", "nsmc/test.tsv.gz", 1, 5000)}


def read(path: Path, column: int, n: int | None) -> tuple[list[str], np.ndarray]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        rows = [ln.split("\t") for ln in f.read().splitlines()[1:]][:n]
    return [r[column] for r in rows], np.array([int(r[column + 1]) for r in rows])


def features(encoder, tok, texts: list[str], layers: list[int]) -> dict[int, np.ndarray]:
    out: dict[int, list[np.ndarray]] = {layer: [] for layer in layers}
    with torch.inference_mode():
        for s in range(0, len(texts), 64):
            b = tok.batch(texts[s:s + 64], max_length=128)
            states = encoder(b["input_ids"], b["attention_mask"], b["token_type_ids"],
                             output_hidden_states=True).hidden_states
            mask = b["attention_mask"][..., None].float()
            for layer in layers:
                h = states[layer]
                out[layer].append(torch.cat([(h * mask).sum(1) / mask.sum(1), h[:, 0]], -1).numpy())
    return {layer: np.concatenate(v) for layer, v in out.items()}


def probe(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray, l2: float = 1e-2) -> float:
    x = torch.tensor(train_x)
    mu, sd = x.mean(0), x.std(0) + 1e-6
    x, y = (x - mu) / sd, torch.tensor(train_y, dtype=torch.float32)
    w = torch.zeros(x.shape[1], requires_grad=True)
    c = torch.zeros(1, requires_grad=True)
    opt = torch.optim.LBFGS([w, c], max_iter=500)

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(x @ w + c, y) + l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        pred = (((torch.tensor(test_x) - mu) / sd) @ w + c > 0).numpy()
    return float((pred == test_y).mean())


def main() -> None:
    from bertkit import BertConfig, BertModel, Tokenizer
    from bertkit.heads import load_model

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="a pre-trained model directory")
    ap.add_argument("--task", choices=sorted(SPLITS), default="sst2")
    ap.add_argument("--layers", nargs="+", type=int, help="hidden-state indices (0: embeddings; default: all)")
    ap.add_argument("--train", nargs="+", type=int, default=[1000, 2000], help="training sentences for the probe")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    train_file, eval_file, column, n_eval = SPLITS[args.task]
    train_texts, train_y = read(DATA / train_file, column, max(args.train))
    eval_texts, eval_y = read(DATA / eval_file, column, n_eval)

    tok = Tokenizer.from_pretrained(args.model)
    loaded = load_model(args.model)
    pretrained = getattr(loaded, "bert", loaded).eval()
    torch.manual_seed(0)
    random = BertModel(BertConfig.from_json_file(Path(args.model) / "config.json")).eval()
    layers = args.layers or list(range(pretrained.config.num_hidden_layers + 1))

    print(f"{args.model} on {args.task}: probe accuracy on {len(eval_texts)} evaluation sentences")
    print("| layer | training sentences | pre-trained | random weights | difference |")
    print("|---|---|---|---|---|")
    feats = {name: (features(m, tok, train_texts, layers), features(m, tok, eval_texts, layers))
             for name, m in (("pretrained", pretrained), ("random", random))}
    for layer in layers:
        for n in args.train:
            a, b = (probe(feats[k][0][layer][:n], train_y[:n], feats[k][1][layer], eval_y)
                    for k in ("pretrained", "random"))
            print(f"| {layer} | {n} | {100 * a:.1f} | {100 * b:.1f} | {100 * (a - b):+.1f} |", flush=True)


if __name__ == "__main__":
    main()
