"""How often int8 picks the same label as fp32, for the activation-quantisation choices of `infer/quantize.py`.

    python benchmarks/int8_agreement.py --model runs/finetune/sst2 [--task sst2] [--batch-sizes 32 1]

Variants, all with int8 weights per output channel on the encoder's Linear layers:
- PyTorch's dynamic Linear as shipped: one activation scale per call, 7-bit (`reduce_range`);
- the same with 8-bit activations;
- bertkit's Int8Linear: 8-bit, one scale per token (what `quantize_int8` does);
- ONNX Runtime's dynamic int8 of bertkit's ONNX export (per-channel weights, one activation scale per call).
Reports agreement with fp32 and accuracy on the task's evaluation split (SST-2 dev or NSMC test).

`--analyse` adds where the error comes from, in fp32 with simulated ("fake") quantisation so that one thing at a
time is rounded: the activations entering one kind of Linear layer (8-bit, one scale per call, as the dynamic
kernel does it), or the weights alone; and, per layer, how much larger the `[CLS]` token is than the largest
other token at the input of the feed-forward's second matrix (median over the evaluation sentences).
"""

from __future__ import annotations

import argparse
import copy
import gzip
import os
import re
import warnings
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("BERTKIT_DATA", ROOT.parent / "shared" / "data"))
warnings.filterwarnings("ignore")


def main() -> None:
    from bertkit.heads import load_model
    from bertkit.infer.predictor import Predictor, PredictorSettings
    from bertkit.infer.quantize import _quantized_api, quantizable, quantize_int8
    from bertkit.tokenizer import Tokenizer

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="a fine-tuned classification model directory")
    ap.add_argument("--task", choices=["sst2", "nsmc"], default="sst2")
    ap.add_argument("--batch-sizes", nargs="+", type=int, default=[32, 1])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--limit", type=int, help="only the first N evaluation sentences (a quick check)")
    ap.add_argument("--analyse", action="store_true", help="also the per-layer-kind breakdown and [CLS] ratios")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    path, column = (DATA / "glue" / "SST-2" / "dev.tsv.gz", 0) if args.task == "sst2" else \
        (DATA / "nsmc" / "test.tsv.gz", 1)
    with gzip.open(path, "rt", encoding="utf-8") as f:
        rows = [ln.split("\t") for ln in f.read().splitlines()[1:]]
    rows = rows[:args.limit] if args.limit else rows
    texts, gold = [r[column] for r in rows], np.array([r[column + 1] for r in rows])

    tok = Tokenizer.from_pretrained(args.model)
    model = load_model(args.model).eval()
    DynamicLinear, qconfig, quantize_dynamic = _quantized_api()
    names = quantizable(model)

    class EightBitShared(DynamicLinear):
        def forward(self, x):
            return torch.ops.quantized.linear_dynamic(x, self._packed_params._packed_params,
                                                      reduce_range=False).to(x.dtype)

    def shared(cls):
        return quantize_dynamic(model, {n: qconfig for n in names}, dtype=torch.qint8, inplace=False,
                                mapping={torch.nn.Linear: cls})

    def labels(m, batch_size, backend_dir=None):
        settings = PredictorSettings(batch_size=batch_size)
        p = Predictor(m, tok, settings) if backend_dir is None else Predictor.from_pretrained(
            backend_dir, PredictorSettings(batch_size=batch_size, backend="onnx", int8=True))
        return np.array([o["label"] for o in p.classify(texts)])

    print(f"{args.model} on {args.task} ({len(texts)} texts), {args.threads} threads")
    print("| activations | batch | agrees with fp32 | accuracy |")
    print("|---|---|---|---|")
    for b in args.batch_sizes:
        ref = labels(model, b)
        print(f"| fp32 | {b} | — | {100 * (ref == gold).mean():.2f} |", flush=True)
        for name, m, onnx in (("7-bit, one scale per call (PyTorch's module)", shared(DynamicLinear), None),
                              ("8-bit, one scale per call", shared(EightBitShared), None),
                              ("8-bit, one scale per token (bertkit)", quantize_int8(model), None),
                              ("ONNX Runtime int8 (one scale per call)", None, args.model)):
            out = labels(m, b, onnx)
            print(f"| {name} | {b} | {100 * (out == ref).mean():.2f} % | {100 * (out == gold).mean():.2f} |",
                  flush=True)
    if args.analyse:
        analyse(model, tok, texts)


KINDS = {"query": "attention.self.query", "key": "attention.self.key", "value": "attention.self.value",
         "attention output": "attention.output.dense", "feed-forward in": "intermediate.dense",
         "feed-forward out": "output.dense"}


def fake_activations(x: torch.Tensor) -> torch.Tensor:
    """8-bit asymmetric rounding with one scale for the whole call, as the dynamic kernel computes it (bertkit's
    Linear layers see only real tokens, (N, H): padding never widens the range)."""
    lo, hi = min(x.min().item(), 0.0), max(x.max().item(), 0.0)
    scale = max(hi - lo, 1e-8) / 255
    zero = round(-lo / scale)
    return (torch.clamp(torch.round(x / scale) + zero, 0, 255) - zero) * scale


def fake_weights(w: torch.Tensor) -> torch.Tensor:
    """int8 symmetric, one scale per output row."""
    scale = w.abs().amax(1, keepdim=True).clamp_min(1e-8) / 127
    return torch.clamp(torch.round(w / scale), -127, 127) * scale


def analyse(model, tok, texts) -> None:
    batches = [tok.batch(texts[s:s + 32], max_length=128) for s in range(0, len(texts), 32)]  # tokenised once

    def run(m, hook_kind=None):
        handles, out = [], []
        if hook_kind is not None:
            pattern = re.compile(rf"\.encoder\.layer\.\d+\.{re.escape(hook_kind)}$")
            for name, mod in m.named_modules():
                if isinstance(mod, torch.nn.Linear) and pattern.search(f".{name}"):
                    handles.append(mod.register_forward_pre_hook(lambda _m, args: (fake_activations(args[0]),)))
        with torch.inference_mode():
            out = [m(**b).logits.argmax(-1).numpy() for b in batches]
        for h in handles:
            h.remove()
        return np.concatenate(out)

    ref = run(model)
    print("\nWhere int8's disagreement comes from (fp32 with one thing rounded at a time, batch 32):")
    print("| rounded | agrees with fp32 |")
    print("|---|---|")
    for label, kind in KINDS.items():
        agree = 100 * (run(model, kind) == ref).mean()
        print(f"| activations into {label} (8-bit, one scale per call) | {agree:.2f} % |", flush=True)
    wq = copy.deepcopy(model)
    with torch.no_grad():
        for name, mod in wq.named_modules():
            if isinstance(mod, torch.nn.Linear) and ".encoder." in f".{name}":
                mod.weight.copy_(fake_weights(mod.weight))
    print(f"| weights only (int8 per output row) | {100 * (run(wq) == ref).mean():.2f} % |")

    # [CLS] against the largest other real token at the feed-forward's second matrix, per layer
    ratios: dict[int, list[float]] = {}
    lengths = {}

    def ratio_hook(layer):
        def hook(_m, args):
            peak = args[0].abs().amax(-1)  # (N,) real tokens, sentence after sentence
            for sentence in peak.split(lengths["n"]):
                ratios.setdefault(layer, []).append((sentence[0] / sentence[1:].max().clamp_min(1e-8)).item())
        return hook

    layers = model.bert.encoder.layer
    handles = [layer.output.dense.register_forward_pre_hook(ratio_hook(i)) for i, layer in enumerate(layers)]
    with torch.inference_mode():
        for b in batches:
            lengths["n"] = b["attention_mask"].sum(1).tolist()
            model(**b)
    for h in handles:
        h.remove()
    print("\n[CLS] peak / largest other token's peak at the feed-forward's second matrix (median, p90):")
    print("| layer | median | p90 |")
    print("|---|---|---|")
    for i, r in sorted(ratios.items()):
        print(f"| {i} | {np.median(r):.1f}x | {np.percentile(r, 90):.1f}x |")


if __name__ == "__main__":
    main()
