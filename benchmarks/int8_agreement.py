"""How often int8 picks the same label as fp32, for the activation-quantisation choices of `infer/quantize.py`.

    python benchmarks/int8_agreement.py --model runs/finetune/sst2 [--task sst2] [--batch-sizes 32 1]

Variants, all with int8 weights per output channel on the encoder's Linear layers:
- PyTorch's dynamic Linear as shipped: one activation scale per call, 7-bit (`reduce_range`);
- the same with 8-bit activations;
- bertkit's Int8Linear: 8-bit, one scale per token (what `quantize_int8` does);
- ONNX Runtime's dynamic int8 of bertkit's ONNX export (per-channel weights, one activation scale per call).
Reports agreement with fp32 and accuracy on the task's evaluation split (SST-2 dev or NSMC test).
"""

from __future__ import annotations

import argparse
import gzip
import os
import warnings
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("BERTKIT_DATA", ROOT.parent / "shared" / "data"))
warnings.filterwarnings("ignore")


def main() -> None:
    from bertkit.checkpoint import load_model
    from bertkit.infer.predictor import Predictor, PredictorSettings
    from bertkit.infer.quantize import _quantized_api, quantizable, quantize_int8
    from bertkit.tokenizer import Tokenizer

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="a fine-tuned classification model directory")
    ap.add_argument("--task", choices=["sst2", "nsmc"], default="sst2")
    ap.add_argument("--batch-sizes", nargs="+", type=int, default=[32, 1])
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    path, column = (DATA / "glue" / "SST-2" / "dev.tsv.gz", 0) if args.task == "sst2" else \
        (DATA / "nsmc" / "test.tsv.gz", 1)
    with gzip.open(path, "rt", encoding="utf-8") as f:
        rows = [ln.split("\t") for ln in f.read().splitlines()[1:]]
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


if __name__ == "__main__":
    main()
