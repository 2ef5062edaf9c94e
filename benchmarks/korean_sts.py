"""Korean sentence similarity with the encoder made by transfer, as a bi-encoder (sentence embeddings), where its
cross-encoder rows fail (benchmarks/RESULTS.md, "Why the Korean pair tasks fail"):

    python benchmarks/korean_sts.py --model runs/ko-minilm [--select-lr 2e-5,5e-5,1e-4]

1. KorSTS: `bertkit sbert --train korsts --eval korsts --loss cosent --epochs 4` from the encoder (mean pooling),
   the best epoch by KorSTS dev Spearman, as the sentence-embedding table's rows are made.
2. KLUE-STS, on the split of the cross-encoder row (`finetune --split-eval 0.2`, seed 12345: 421 training pairs,
   98 held out): the KorSTS model's cosine before any KLUE training; then CoSENT on the 421 from the KorSTS model
   (4 epochs, the last kept), its learning rate chosen among `--select-lr` on 10 % of them (finetune
   --validation's split), and the chosen rate's model scored once on the 98 held-out pairs: Pearson x 100 (KLUE's
   metric) and Spearman.
3. `--nli`: KLUE-NLI the same way, on the split of its cross-encoder row (20 % of premises held out, seed 12345):
   SBERT's classification objective (`sbert --loss softmax`: a linear layer on [u; v; |u - v|] of the two
   sentence vectors, trained with the encoder) from the KorSTS model, 4 epochs, the rate chosen among `--select-lr`
   on 10 % of the training premises; accuracy on the held-out pairs. `--nli-extra` adds the 2,490 pairs of KorNLI's
   XNLI dev (Korean, another source: never a KLUE pair) to the training rows.

Runs go to runs/korean-sts/ (git-ignored). Both cores.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))

from bertkit.apps.sentence import SentenceModel  # noqa: E402
from bertkit.data.pairs import PairSet  # noqa: E402
from bertkit.data.tasks import get_task, read_task  # noqa: E402
from bertkit.train.finetune import split_by_group  # noqa: E402
from bertkit.train.sentence import CLASSIFIER_FILE, SbertConfig, run_sbert, sts_scores  # noqa: E402

DATA = HERE.parent.parent / "shared" / "data"
RUNS = HERE.parent / "runs" / "korean-sts"
SEED = 12345


def pairs(examples) -> PairSet:
    return PairSet("score", [(e.text, e.text_pair) for e in examples], [float(e.label) / 5 for e in examples])


def write(path: Path, examples) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"sentence1": e.text, "sentence2": e.text_pair, "score": float(e.label) / 5},
                                       ensure_ascii=False) + "\n" for e in examples), encoding="utf-8")
    return str(path)


def write_nli(path: Path, examples) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"sentence1": e.text, "sentence2": e.text_pair, "label": e.label},
                                       ensure_ascii=False) + "\n" for e in examples), encoding="utf-8")
    return str(path)


def nli_accuracy(out: Path, examples, batch_size: int = 64) -> float:
    """Accuracy x 100 of the softmax classifier that `sbert --loss softmax` saved beside the encoder in `out`
    (its classes are the training labels in sorted order: `read_jsonl`'s)."""
    import numpy as np
    import torch
    from safetensors.torch import load_file

    model = SentenceModel.from_pretrained(out)
    w = load_file(str(out / CLASSIFIER_FILE))
    names = sorted({e.label for e in examples})
    u = torch.from_numpy(model.encode([e.text for e in examples], batch_size=batch_size))
    v = torch.from_numpy(model.encode([e.text_pair for e in examples], batch_size=batch_size))
    logits = torch.cat([u, v, (u - v).abs()], dim=-1) @ w["weight"].T + w["bias"]
    gold = np.array([names.index(e.label) for e in examples])
    return float(100 * (logits.argmax(-1).numpy() == gold).mean())


def sbert(model: str, train: str, out: Path, lr: float, threads: int, eval_data: str = "",
          loss: str = "cosent") -> dict:
    cfg = SbertConfig(model=model, train_data=train, eval_data=eval_data, loss=loss, out=str(out), epochs=4.0,
                      data_dir=str(DATA))
    cfg.train.lr, cfg.train.threads = lr, threads
    start = time.perf_counter()
    result = run_sbert(cfg, overwrite=True, show_progress=False)
    return {**result, "wall_seconds": time.perf_counter() - start}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="the Korean encoder (e.g. runs/ko-minilm)")
    ap.add_argument("--select-lr", default="2e-5,5e-5,1e-4")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--korsts", type=Path, help="step 1 done before: its sbert output directory")
    ap.add_argument("--nli", action="store_true", help="KLUE-NLI (step 3) instead of KLUE-STS (step 2)")
    ap.add_argument("--nli-extra", action="store_true", help="--nli: KorNLI's XNLI dev pairs added to training")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    report: dict = {"model": args.model}
    sts_model = args.korsts or RUNS / "korsts"
    if args.korsts is None:
        korsts = sbert(args.model, "korsts", sts_model, 2e-5, args.threads, eval_data="korsts")
        report["korsts"] = {"before": korsts["before"]["cosine_spearman"], "after": korsts["cosine_spearman"],
                            "minutes": korsts["wall_seconds"] / 60}
        print(f"KorSTS dev Spearman: {report['korsts']['before']:.2f} -> {report['korsts']['after']:.2f} "
              f"({report['korsts']['minutes']:.1f} min)", flush=True)

    if args.nli:
        report["klue_nli"] = klue_nli(str(sts_model), args)
    else:
        report["klue_sts"] = klue_sts(sts_model, args)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


def klue_nli(sts_model: str, args) -> dict:
    task = get_task("klue-nli")
    examples, _ = read_task(DATA / "klue" / "klue-nli-v1.1_dev.json.gz", "klue-nli")
    train, held = split_by_group(examples, task.group, 0.2, SEED)
    fit, check = split_by_group(train, task.group, 0.1, f"{SEED}-validation")
    extra = read_task(DATA / "kornlu" / "xnli.dev.ko.tsv.gz", "kornli")[0] if args.nli_extra else []
    tag = "-extra" if extra else ""
    report: dict = {"train": len(train), "held_out": len(held), "validation": len(check), "extra": len(extra),
                    "select": {}}
    print(f"KLUE-NLI: {len(train)} training pairs (+ {len(extra)} KorNLI), {len(held)} held out", flush=True)
    for lr in [float(x) for x in args.select_lr.split(",")]:
        out = RUNS / f"nli{tag}-select-{lr:g}"
        r = sbert(sts_model, write_nli(RUNS / f"nli{tag}-fit.jsonl", fit + extra), out, lr, args.threads,
                  loss="softmax")
        report["select"][f"{lr:g}"] = nli_accuracy(out, check)
        print(f"  lr {lr:g}: validation ({len(check)} pairs) accuracy {report['select'][f'{lr:g}']:.1f} "
              f"({r['wall_seconds']:.0f} s)", flush=True)
    best = max(report["select"], key=report["select"].get)
    out = RUNS / f"klue-nli{tag}"
    r = sbert(sts_model, write_nli(RUNS / f"nli{tag}-train.jsonl", train + extra), out, float(best), args.threads,
              loss="softmax")
    report.update(lr=float(best), held_out_accuracy=nli_accuracy(out, held), seconds=r["wall_seconds"])
    print(f"KLUE-NLI held-out {len(held)} pairs, lr {best} (chosen): accuracy {report['held_out_accuracy']:.1f} "
          f"({r['wall_seconds']:.0f} s)")
    return report


def klue_sts(sts_model: Path, args) -> dict:
    task = get_task("klue-sts")
    examples, _ = read_task(DATA / "klue" / "klue-sts-v1.1_dev.json.gz", "klue-sts")
    train, held = split_by_group(examples, task.group, 0.2, SEED)
    fit, check = split_by_group(train, task.group, 0.1, f"{SEED}-validation")
    zero = sts_scores(SentenceModel.from_pretrained(sts_model), pairs(held))
    report = {"train": len(train), "held_out": len(held), "validation": len(check), "korsts_model_before": zero,
              "select": {}}
    print(f"KLUE-STS held-out {len(held)} pairs, the KorSTS model before KLUE training: Pearson "
          f"{zero['cosine_pearson']:.2f}", flush=True)
    for lr in [float(x) for x in args.select_lr.split(",")]:
        r = sbert(str(sts_model), write(RUNS / "klue-fit.jsonl", fit), RUNS / f"klue-select-{lr:g}", lr,
                  args.threads)
        score = sts_scores(SentenceModel.from_pretrained(RUNS / f"klue-select-{lr:g}"), pairs(check))
        report["select"][f"{lr:g}"] = score
        print(f"  lr {lr:g}: validation ({len(check)} pairs) Pearson {score['cosine_pearson']:.2f} "
              f"({r['wall_seconds']:.0f} s)", flush=True)
    best = max(report["select"], key=lambda k: report["select"][k]["cosine_pearson"])
    r = sbert(str(sts_model), write(RUNS / "klue-train.jsonl", train), RUNS / "klue-sts", float(best),
              args.threads)
    final = sts_scores(SentenceModel.from_pretrained(RUNS / "klue-sts"), pairs(held))
    report.update(lr=float(best), held_out_scores=final, seconds=r["wall_seconds"])
    print(f"KLUE-STS held-out {len(held)} pairs, lr {best} (chosen): Pearson {final['cosine_pearson']:.2f}, "
          f"Spearman {final['cosine_spearman']:.2f} ({r['wall_seconds']:.0f} s)")
    return report


if __name__ == "__main__":
    main()
