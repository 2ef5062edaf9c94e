"""ONNX graphs of one model side by side on ONNX Runtime: node counts, agreement, batch-1 p50 and batch-32 rate.

    python benchmarks/onnx_graphs.py --export now.onnx                 # this checkout's export of all-MiniLM-L6-v2
    git worktree add /tmp/before REV && (cd /tmp/before && python benchmarks/onnx_graphs.py --export /tmp/before.onnx)
    python benchmarks/onnx_graphs.py /tmp/before.onnx now.onnx [--fused]   # time them, interleaved

`--fused` adds each graph after ONNX Runtime's offline transformer optimiser (`onnxruntime.transformers`:
Attention, SkipLayerNorm, BiasGelu where its patterns match). Inputs: STS-B dev sentences with MiniLM's tokenizer,
padded to the longest of each call; batch 1 over the first 200 alone, batch 32 over the first 640 ordered by length;
2 threads, every graph once per repeat in a rotated order, medians.
"""

from __future__ import annotations

import argparse
import collections
import gzip
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
DATA = ROOT.parent / "shared" / "data"


def export(out: Path) -> None:
    from bertkit.checkpoint import packaged_model_dir
    from bertkit.infer.onnxrt import export_onnx
    from bertkit.model import BertModel

    export_onnx(BertModel.from_pretrained(packaged_model_dir()), out)


def nodes(path: Path) -> collections.Counter:
    import onnx

    return collections.Counter(n.op_type for n in onnx.load(str(path), load_external_data=False).graph.node)


def fuse(path: Path) -> Path:
    from onnxruntime.transformers.optimizer import optimize_model

    opt = optimize_model(str(path), model_type="bert", num_heads=12, hidden_size=384)
    out = path.with_suffix(".fused.onnx")
    opt.save_model_to_file(str(out))
    print(f"{out.name}: fused {({k: v for k, v in opt.get_fused_operator_statistics().items() if v})}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("graphs", nargs="*", type=Path)
    ap.add_argument("--export", type=Path, help="write this checkout's MiniLM export here and stop")
    ap.add_argument("--fused", action="store_true")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    if args.export:
        export(args.export)
        print(f"{args.export}: {sum(nodes(args.export).values())} nodes")
        return
    import onnxruntime as ort
    from tokenizers import Tokenizer

    from bertkit.checkpoint import packaged_model_dir

    graphs = list(args.graphs) + ([fuse(g) for g in args.graphs] if args.fused else [])
    tok = Tokenizer.from_file(str(packaged_model_dir() / "tokenizer.json"))
    tok.enable_truncation(256)
    tok.enable_padding(pad_id=0)
    with gzip.open(DATA / "glue" / "STS-B" / "dev.tsv.gz", "rt", encoding="utf-8") as f:
        texts = [line.rstrip("\n").split("\t")[7] for line in f][1:]

    def feed(batch: list[str]) -> dict[str, np.ndarray]:
        encs = tok.encode_batch(batch)
        return {"input_ids": np.array([e.ids for e in encs], np.int64),
                "attention_mask": np.array([e.attention_mask for e in encs], np.int64),
                "token_type_ids": np.array([e.type_ids for e in encs], np.int64)}

    sessions = {}
    for g in graphs:
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = args.threads, 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        sessions[g.name] = ort.InferenceSession(str(g), options, providers=["CPUExecutionProvider"])
        print(f"{g.name}: {sum(nodes(g).values())} nodes {dict(nodes(g).most_common(8))}")

    def run(name: str, x: dict) -> np.ndarray:
        s = sessions[name]
        return s.run(None, {k: v for k, v in x.items() if k in {i.name for i in s.get_inputs()}})[0]

    check = feed(texts[:64])
    real = check["attention_mask"].astype(bool)
    first = next(iter(sessions))
    for name in sessions:  # outputs at real tokens (padding's are not used)
        print(f"{name}: max |difference| to {first} at real tokens "
              f"{float(np.abs(run(name, check) - run(first, check))[real].max()):.2e}")
    order = np.argsort([len(tok.encode(t).ids) for t in texts[:640]], kind="stable")
    batches = [feed([texts[i] for i in order[s:s + 32]]) for s in range(0, 640, 32)]
    alone = [feed([t]) for t in texts[:200]]
    one: dict[str, list[float]] = {n: [] for n in sessions}
    rate: dict[str, list[float]] = {n: [] for n in sessions}
    names = list(sessions)
    for r in range(args.repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            time.sleep(0.3)
            for x in alone:
                start = time.perf_counter()
                run(name, x)
                one[name].append(time.perf_counter() - start)
            time.sleep(0.3)
            start = time.perf_counter()
            for x in batches:
                run(name, x)
            rate[name].append(640 / (time.perf_counter() - start))
    print(f"\n{args.threads} threads, {args.repeats} repeats, medians")
    for name in names:
        print(f"  {name:40s} batch 1 p50 {1e3 * statistics.median(one[name]):6.3f} ms   batch 32 "
              f"{statistics.median(rate[name]):5.0f} sentences/s")


if __name__ == "__main__":
    main()
