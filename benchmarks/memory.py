"""Peak resident memory of a model loaded for inference, each path in a fresh process: the interpreter with bertkit
imported (the floor every row shares), then the model loaded by `Predictor.from_pretrained` on each backend and
precision and used on real sentences (SST-2 dev, one at a time and in batches of 32).

    python benchmarks/memory.py --model runs/demo/teacher --model runs/demo/student

Rows per model: PyTorch fp32 (packed weights), PyTorch int8 from the float directory (`--int8`), PyTorch int8 from a
`bertkit quantize` directory (written to a temporary directory first), ONNX Runtime fp32 (the default) and int8.
The ONNX exports are made in a warm-up process first, so no row pays for exporting. Peak = `ru_maxrss` of the
child at exit.

    python benchmarks/memory.py --model DIR --shapes 200

`--shapes N` instead: the peak after 20 and after N batches of 32 texts of random lengths (4-120 words) as a bulk
job runs them (`batchio.bulk_job`), classified (the head's own graph) and embedded (a task model's encoder, which is
PyTorch's float model on every backend), for each backend: whether memory stays bounded when every batch has a new
shape. With `--serve`, as the server runs them: oneDNN on (the packed path's batch-1 speed), 1-32 texts a batch.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("BERTKIT_DATA", ROOT.parent / "shared" / "data"))

CHILD = r"""
import gzip, json, resource, sys
sys.path.insert(0, {src!r})
from bertkit.infer.predictor import Predictor, PredictorSettings
floor = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
path, backend, int8 = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
if backend != "none":
    with gzip.open({data!r}, "rt", encoding="utf-8") as f:
        texts = [line.split("\t")[0] for line in f.read().splitlines()[1:201]]
    p = Predictor.from_pretrained(path, PredictorSettings(backend=backend, int8=int8, threads=2))
    for t in texts[:100]:
        p.classify([t])
    p.classify(texts)
    what = p.describe()
else:
    what = "bertkit imported, no model"
print(json.dumps({{"floor_mb": floor, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "what": what}}))
"""


SHAPES = r"""
import contextlib, json, random, resource, sys
sys.path.insert(0, {src!r})
from bertkit.infer.batchio import bulk_job
from bertkit.infer.predictor import Predictor, PredictorSettings
p = Predictor.from_pretrained(sys.argv[1], PredictorSettings(backend=sys.argv[2], threads=2))
run = p.embed if sys.argv[3] == "embed" else p.classify
serve = sys.argv[4] == "serve"
random.seed(0)
peaks = {{}}
with contextlib.nullcontext() if serve else bulk_job(p):
    for i in range({n}):
        rows = random.randint(1, 32) if serve else 32
        run([" ".join(["word"] * random.randint(4, 120)) for _ in range(rows)])
        if i + 1 in (20, {n}):
            peaks[i + 1] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({{"peaks_mb": peaks, "what": p.describe()}}))
"""


def shapes(path: str, backend: str, operation: str, n: int, serve: bool) -> dict:
    code = SHAPES.format(src=str(ROOT / "src"), n=n)
    out = subprocess.run([sys.executable, "-c", code, path, backend, operation, "serve" if serve else "bulk"],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def child(path: str, backend: str, int8: bool) -> dict:
    code = CHILD.format(src=str(ROOT / "src"), data=str(DATA / "glue" / "SST-2" / "dev.tsv.gz"))
    out = subprocess.run([sys.executable, "-c", code, path, backend, "1" if int8 else "0"], capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", required=True, help="a classification model directory")
    ap.add_argument("--shapes", type=int, default=0, help="batches of new shapes instead (see above)")
    ap.add_argument("--serve", action="store_true", help="with --shapes: as the server runs them (see above)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if args.shapes:
        for model in args.model:
            for operation in ("classify", "embed"):
                for backend in ("torch", "onnx"):
                    r = shapes(model, backend, operation, args.shapes, args.serve)
                    print(f"  {model}: {operation} on {r['what']}{' (serve)' * args.serve}: peak after 20 batches "
                          f"{r['peaks_mb']['20']:.0f}"
                          f" MB, after {args.shapes} {r['peaks_mb'][str(args.shapes)]:.0f} MB")
        return
    sys.path.insert(0, str(ROOT / "src"))
    from bertkit.cli import main as cli

    report = {"floor": child(args.model[0], "none", False)}
    print(f"interpreter + bertkit imported: {report['floor']['peak_mb']:.0f} MB")
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.model:
            quantized = Path(tmp) / (Path(model).name + "-int8")
            cli(["quantize", "--model", model, "--out", str(quantized)])
            child(model, "onnx", False), child(model, "onnx", True)  # the exports, outside the measured runs
            rows = {"torch fp32": (model, "torch", False), "torch int8 (--int8)": (model, "torch", True),
                    "torch int8 (quantize directory)": (str(quantized), "torch", False),
                    "onnx fp32 (the default)": (model, "onnx", False), "onnx int8": (model, "onnx", True)}
            report[model] = {}
            for name, spec in rows.items():
                r = child(*spec)
                report[model][name] = r
                print(f"  {model}: {name:34s} peak {r['peak_mb']:6.0f} MB  ({r['what']})")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
