"""Pre-training throughput, bertkit vs transformers.BertForPreTraining, side by side in one process.

    python benchmarks/pretrain.py [--sizes mini small] [--batch 32] [--steps 6] [--threads 2]
    python benchmarks/pretrain.py --device cuda --bf16 --sizes mini small base --steps 20   # on a GPU
    python benchmarks/pretrain.py --arch roberta --sizes mini   # RobertaForMaskedLM on packed sentences (MLM)
    python benchmarks/pretrain.py --arch albert --sizes mini    # AlbertForPreTraining on SOP pairs (MLM + SOP)

The same config (vocabulary of 32,000 learned from the NSMC corpus, sequence 128, dropout 0.1), the same initial
weights, and the very same masked batches (real Korean review instances from bertkit's pre-training pipeline,
MLM + NSP; with `--arch`, the model `bertkit pretrain --arch` builds, against the transformers class its directory
loads as). One training step = forward, backward, AdamW. Steps alternate between the two libraries; the median
step time is kept; tokens/s counts real (non-padding) tokens. transformers runs its SDPA attention path.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
import transformers

from bertkit import BertForMaskedLM, BertForPreTraining
from bertkit.data.corpus import read_lines
from bertkit.data.pretraining import InstanceConfig, Masker, MaskingConfig, Schedule, ShardSet, build_shards
from bertkit.train.loop import keep_freed_memory
from bertkit.train.pretrain import ARCHS, PAIR_HEAD, PretrainConfig, data_objective, model_config
from bertkit.vocab import learn_vocab

DATA = Path(os.environ.get("BERTKIT_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))


def real_batches(tmp: Path, n_batches: int, batch: int, objective: str):
    """Instances from the first 40,000 NSMC corpus lines, with a vocabulary learned from them."""
    corpus = tmp / "corpus.txt"
    lines = []
    with open(corpus, "w", encoding="utf-8") as f:
        for i, line in enumerate(read_lines([DATA / "nsmc" / "corpus.txt.gz"])):
            f.write(line + ("\n\n" if i % 40 == 39 else "\n"))  # documents of 40 reviews
            lines.append(line)
            if i == 40_000:
                break
    tok, _ = learn_vocab([corpus], size=32000, show_progress=False)
    build_shards([corpus], tok, tmp / "shards", InstanceConfig(max_seq_length=128, objective=data_objective(objective)),
                 show_progress=False)
    shards = ShardSet(tmp / "shards" / "train")
    masker, schedule = Masker(tok, MaskingConfig()), Schedule(len(shards), batch, seed=1)
    return tok, [masker.batch(shards, *schedule.step(s)) for s in range(n_batches)]


def step_fn(model, optimizer, batch, hf: bool, bf16: bool = False, pair: str | None = "nsp"):
    def run():
        with torch.autocast(batch["input_ids"].device.type, dtype=torch.bfloat16, enabled=bf16):
            out = forward(model, batch, hf, pair)
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(out.loss.detach())  # waits for the device
    return run


def forward(model, batch, hf: bool, pair: str | None = "nsp"):
    """`pair`: the two-way head's objective (NSP, ALBERT's SOP) or None (MLM only)."""
    labels = {}
    if pair:  # the same label column; transformers names it after the objective
        name = "sentence_order_label" if hf and pair == "sop" else "next_sentence_label"
        labels[name] = batch["next_sentence_label"]
    if hf:
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                     token_type_ids=batch["token_type_ids"], labels=batch["labels"], **labels)
    return model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"], labels=batch["labels"], **labels)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", nargs="+", default=["mini", "small"])
    ap.add_argument("--arch", choices=[a for a in ARCHS if a != "electra"], default="bert",
                    help="the family (ELECTRA's generator + discriminator pair has no one transformers class)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast for both (as bertkit's loop does on a GPU)")
    ap.add_argument("--default-malloc", action="store_true", help="leave glibc's allocator as it is")
    ap.add_argument("--out", help="default benchmarks/out/pretrain.json (pretrain-ARCH.json for another arch)")
    args = ap.parse_args()
    transformers.utils.logging.disable_progress_bar()
    args.out = args.out or f"benchmarks/out/pretrain{'' if args.arch == 'bert' else '-' + args.arch}.json"
    torch.set_num_threads(args.threads)
    if not args.default_malloc:
        keep_freed_memory()  # as bertkit's training loop does; both libraries run in this process and benefit
    with tempfile.TemporaryDirectory() as tmp:
        tok, batches = real_batches(Path(tmp), args.steps + 1, args.batch, args.arch)
    device = torch.device(args.device)
    batches = [{k: v.to(device) for k, v in b.items()} for b in batches]
    tokens = [int(b["attention_mask"].sum()) for b in batches]
    padded = [b["input_ids"].numel() for b in batches]
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{args.threads} threads"
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, {where}"
          f"{', bf16 autocast' if args.bf16 else ''}; batch "
          f"{args.batch} x seq <= 128, {statistics.mean(tokens):.0f} real tokens per batch "
          f"({100 * (1 - sum(tokens) / sum(padded)):.0f} % padding), vocabulary {tok.vocab_size}, arch {args.arch}")
    print("| size | bertkit tokens/s | transformers tokens/s | ratio | first-step loss (bertkit / transformers) |")
    print("|---|---|---|---|---|")
    rows = []
    pair = PAIR_HEAD.get(args.arch)
    for size in args.sizes:
        cfg = model_config(PretrainConfig(size=size, arch=args.arch, max_seq_length=128), tok)
        torch.manual_seed(0)
        ours = (BertForPreTraining if pair else BertForMaskedLM)(cfg)
        with tempfile.TemporaryDirectory() as saved:  # the weights as `bertkit pretrain` writes them
            ours.save_pretrained(saved)
            auto = transformers.AutoModelForPreTraining if pair else transformers.AutoModelForMaskedLM
            ref = auto.from_pretrained(saved, attn_implementation="sdpa").train().to(device)
        ours = ours.train().to(device)
        opt_a = torch.optim.AdamW(ours.parameters(), lr=1e-4)
        opt_b = torch.optim.AdamW(ref.parameters(), lr=1e-4)
        torch.manual_seed(1)
        first = (step_fn(ours, opt_a, batches[0], False, args.bf16, pair)(),
                 step_fn(ref, opt_b, batches[0], True, args.bf16, pair)())  # warm-up
        a_times, b_times = [], []
        for b in batches[1:]:
            for fn, times in ((step_fn(ours, opt_a, b, False, args.bf16, pair), a_times),
                              (step_fn(ref, opt_b, b, True, args.bf16, pair), b_times)):
                start = time.perf_counter()
                fn()
                times.append((time.perf_counter() - start) / int(b["attention_mask"].sum()))
        a, b = statistics.median(a_times), statistics.median(b_times)
        rows.append(dict(size=size, arch=args.arch, device=where, bf16=args.bf16, bertkit_tokens_per_s=1 / a, transformers_tokens_per_s=1 / b, ratio=b / a,
                         first_loss=first))
        print(f"| {size} | {1 / a:,.0f} | {1 / b:,.0f} | {b / a:.2f} | {first[0]:.4f} / {first[1]:.4f} |",
              flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
