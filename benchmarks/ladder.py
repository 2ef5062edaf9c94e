"""The Roblox ladder on this machine: from transformers' BERT-base padded to 128 to a distilled int8 student with
dynamic shapes and a cache, with ONNX Runtime as the strongest peer, measured in one run.

    python benchmarks/ladder.py --sst2-teacher runs/finetune/sst2 --sst2-student runs/distill-sst2 \
        --nsmc-teacher runs/finetune/nsmc --nsmc-student runs/distill-nsmc [--sentences 400] [--threads 1]

Latency rows (random weights of the stated shape, as the issue allows): p50 / p99 milliseconds at batch 1 over
real sentences at their natural lengths (half SST-2 dev, half NSMC test reviews), and throughput at batch 32
(sentences/s; batches of neighbouring lengths for dynamic shapes, padded to 128 otherwise). One thread per process:
the CPU serving rule (a second core serves a second process). Each row's speed-up is over the baseline's p50.
The int8 rung uses `quantize_int8`'s default kernels (oneDNN's where PyTorch has them); a row after the cache
runs the same weights with fbgemm's (PyTorch's default engine) for comparison.

Accuracy rows use the real models of each rung: the teacher (fp32, in transformers for the baseline and in bertkit
for the next row), the distilled student in fp32, then in int8, and in ONNX Runtime fp32 / int8. The cache
changes no answer. A rung without its model directory is left blank in the accuracy columns.

Also reported: achieved GFLOP/s of the bertkit fp32 base encoder at batch 1, sequence 128, as a fraction of the
measured peak of a large fp32 matmul; peak resident memory of the fp32 teacher vs the int8 student (each measured
in a fresh process).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("BERTKIT_DATA", ROOT.parent / "shared" / "data"))
sys.path.insert(0, str(ROOT / "benchmarks"))
warnings.filterwarnings("ignore")


def read_lines(path: Path, column: int, n: int | None = None) -> tuple[list[str], list[str]]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        rows = [ln.split("\t") for ln in f.read().splitlines()[1:]]
    rows = rows[:n] if n else rows
    label = 1 if column == 0 else 2
    return [r[column] for r in rows], [r[label] for r in rows]


# ---- timing ---------------------------------------------------------------------------------------------------------
def latencies(run, inputs: list, repeats: int = 2) -> list[float]:
    """Seconds per call of run(x) for every input, `repeats` passes, warm-up first."""
    for x in inputs[:10]:
        run(x)
    out = []
    for _ in range(repeats):
        for x in inputs:
            start = time.perf_counter()
            run(x)
            out.append(time.perf_counter() - start)
    return out


def throughput(run, batches: list, n_sentences: int) -> float:
    run(batches[0])
    start = time.perf_counter()
    for b in batches:
        run(b)
    return n_sentences / (time.perf_counter() - start)


def pad_to(batch: dict, length: int) -> dict:
    out = {}
    for k, v in batch.items():
        pad = torch.zeros(v.shape[0], length - v.shape[1], dtype=v.dtype)
        out[k] = torch.cat([v, pad], 1) if v.shape[1] < length else v[:, :length]
    return out


# ---- models ---------------------------------------------------------------------------------------------------------
def hf_model(bertkit_model):
    from forward import reference_model

    return reference_model(bertkit_model, "BertForSequenceClassification")


def ort_peer(bertkit_model, directory: Path, int8: bool):
    """ONNX Runtime on the transformers graph of the same weights, with ORT's transformer fusions (+ its int8)."""
    from bertkit.heads import BertForSequenceClassification
    from bertkit.infer.onnxrt import OnnxModel, optimize_onnx, quantize_onnx

    ref = hf_model(bertkit_model)
    raw, opt = directory / "hf.onnx", directory / "hf.opt.onnx"
    if not opt.exists():
        ids = torch.randint(1000, 2000, (2, 16))

        class Wrap(torch.nn.Module):
            def __init__(self, m):
                super().__init__()
                self.m = m

            def forward(self, input_ids, attention_mask, token_type_ids):
                return self.m(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).logits

        axes = {n: {0: "batch", 1: "sequence"} for n in ("input_ids", "attention_mask", "token_type_ids")}
        axes["logits"] = {0: "batch"}
        torch.onnx.export(Wrap(ref).eval(), (ids, torch.ones_like(ids), torch.zeros_like(ids)), str(raw),
                          input_names=["input_ids", "attention_mask", "token_type_ids"], output_names=["logits"],
                          dynamic_axes=axes, opset_version=17, dynamo=False)
        optimize_onnx(raw, opt, bertkit_model.config)
    path = opt
    if int8:
        path = directory / "hf.opt.int8.onnx"
        if not path.exists():
            quantize_onnx(opt, path)
    return OnnxModel(path, bertkit_model.config, BertForSequenceClassification, threads=torch.get_num_threads())


def call(model, b):
    return model(b["input_ids"], b["attention_mask"], b["token_type_ids"])


# ---- accuracy ------------------------------------------------------------------------------------------------------
def gold_as(names: list[str], task: str, raw: list[str]) -> list[str]:
    """The files' gold values (0/1) as the model names its classes: the values themselves (models fine-tuned
    before bertkit named GLUE's and NSMC's classes) or the class names."""
    from bertkit.data.tasks import TASKS

    spec = TASKS[task]
    return raw if set(names) <= set(spec.labels) else [spec.names[spec.labels.index(g)] for g in raw]


def accuracy(predictor, texts, gold, task) -> float:
    out = predictor.classify(texts)
    gold = gold_as([predictor.config.id2label[i] for i in range(predictor.config.num_labels)], task, gold)
    return float(np.mean([o["label"] == g for o, g in zip(out, gold)]))


def hf_accuracy(model_dir, texts, gold, task) -> float:
    """The teacher in transformers (the baseline's library), on the same tokenisation as bertkit's."""
    from bertkit.heads import load_model
    from bertkit.tokenizer import Tokenizer

    ours = load_model(model_dir)
    ref = hf_model(ours)
    tok = Tokenizer.from_pretrained(model_dir)
    names = [ours.config.id2label[i] for i in range(ours.config.num_labels)]
    pred = []
    with torch.inference_mode():
        for i in range(0, len(texts), 64):
            b = tok.batch(texts[i:i + 64], max_length=128)
            pred += ref(**b).logits.argmax(-1).tolist()
    return float(np.mean([names[p] == g for p, g in zip(pred, gold_as(names, task, gold))]))


def peak_rss_mb(model_dir: str | None, int8: bool, texts: list[str]) -> float:
    """Peak resident memory of a fresh process that loads the model and classifies `texts`. VmHWM of the process's
    own address space: getrusage's ru_maxrss would report this (large) parent's peak, which Linux carries across
    fork and exec."""
    code = (
        "import sys, json, re\n"
        "from bertkit.infer.predictor import Predictor, PredictorSettings\n"
        + (f"p = Predictor.from_pretrained({model_dir!r}, PredictorSettings(int8={int8}, threads=1))\n"
           f"p.classify(json.loads(sys.stdin.read()))\n" if model_dir else "import torch\n")
        + "print(int(re.search(r'VmHWM:\\s+(\\d+) kB', open('/proc/self/status').read()).group(1)) / 1024)\n")
    out = subprocess.run([sys.executable, "-c", code], input=json.dumps(texts), capture_output=True, text=True,
                         check=True)
    return float(out.stdout.strip().splitlines()[-1])


# ---- the ladder ----------------------------------------------------------------------------------------------------
def main() -> None:
    from forward import matmul_peak

    from bertkit import BertConfig, BertForSequenceClassification, Tokenizer, packaged_model_dir
    from bertkit.infer.onnxrt import OnnxModel, export_onnx, quantize_onnx
    from bertkit.infer.predictor import Predictor, PredictorSettings
    from bertkit.infer.quantize import int8_engine, quantize_int8
    from bertkit.train.distill import every_other, student_from_teacher

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sentences", type=int, default=400, help="latency sentences (half SST-2, half NSMC)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--duplicates", type=float, default=0.5, help="share of repeated requests for the cache row")
    ap.add_argument("--sst2-teacher"), ap.add_argument("--sst2-student")
    ap.add_argument("--nsmc-teacher"), ap.add_argument("--nsmc-student")
    ap.add_argument("--korean-vocab", default=str(ROOT / "runs" / "vocab-nsmc-8k"),
                    help="tokenizer for the NSMC latency sentences (their natural Korean lengths)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "ladder.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    random.seed(0)

    # ---- inputs: real sentences, natural lengths ----
    sst_texts, sst_gold = read_lines(DATA / "glue" / "SST-2" / "dev.tsv.gz", 0)
    nsmc_texts, nsmc_gold = read_lines(DATA / "nsmc" / "test.tsv.gz", 1)
    en_tok = Tokenizer.from_pretrained(packaged_model_dir())
    ko_tok = Tokenizer.from_pretrained(args.korean_vocab) if Path(args.korean_vocab).exists() else en_tok
    half = args.sentences // 2
    singles = [en_tok.batch([t], max_length=128) for t in sst_texts[:half]] + \
              [ko_tok.batch([t], max_length=128) for t in nsmc_texts[:half]]
    random.shuffle(singles)
    lengths = [b["input_ids"].shape[1] for b in singles]
    ids = [b["input_ids"][0].tolist() for b in singles]
    # batch 32: neighbouring lengths (what the Predictor does) for dynamic shapes, 128 for the padded rows
    order = sorted(range(len(ids)), key=lambda i: lengths[i])
    bucketed = [en_tok.collate([ids[i] for i in order[s:s + 32]]) for s in range(0, len(order), 32)]
    padded32 = [pad_to(b, 128) for b in bucketed]
    padded1 = [pad_to(b, 128) for b in singles]
    # the cache row's request stream: a share of requests repeats an earlier one
    stream, seen = [], []
    for b in singles:
        if seen and random.random() < args.duplicates:
            stream.append(random.choice(seen))
        else:
            stream.append(b)
            seen.append(b)

    base = BertConfig.named("base", vocab_size=30522, max_position_embeddings=512)
    base.num_labels = 2
    teacher = BertForSequenceClassification(base).eval()
    student = student_from_teacher(teacher, every_other(12)).eval()  # 6 layers, 768 wide
    student_q = quantize_int8(student)  # oneDNN's kernels where PyTorch has them
    student_qf = quantize_int8(student, "fbgemm") if "fbgemm" in torch.backends.quantized.supported_engines else None
    work = tempfile.mkdtemp(prefix="ladder-")

    def cached_runner(model):
        p = Predictor(model, en_tok, PredictorSettings(batch_size=32, cache_size=10_000))

        def run(b):
            return p._run([(b["input_ids"][0].tolist(), b["token_type_ids"][0].tolist())],
                          lambda out, batch: out.logits.float().numpy(), "logits")
        return run, p

    rows = []
    baseline = hf_model(teacher)
    with torch.inference_mode():
        def measure(name, model, one, many, stream_run=None, note="", fn=None):
            fn = fn or (lambda b: call(model, b))  # one batch through the model
            run = fn if not callable(stream_run) else stream_run
            lat = latencies(run, one if stream_run is None else stream)
            tput = throughput(fn, many, sum(len(b["input_ids"]) for b in many)) if many is not None else None
            row = {"row": name, "p50_ms": 1000 * statistics.median(lat),
                   "p99_ms": 1000 * float(np.percentile(lat, 99)), "batch32_sent_s": tput, "note": note}
            rows.append(row)
            print(f"  {name}: p50 {row['p50_ms']:.2f} ms, p99 {row['p99_ms']:.2f} ms"
                  + (f", {tput:.0f} sentences/s at batch 32" if tput else ""), file=sys.stderr, flush=True)

        measure("baseline: transformers BERT-base fp32, padded to 128", None, padded1, padded32,
                fn=lambda b, m=baseline: m(**b))
        del baseline  # its memory back before the next rows
        measure("bertkit BERT-base fp32, same padded inputs", teacher, padded1, padded32,
                note="bertkit never computes padding outside attention")
        measure("distilled 6-layer (every other layer), padded to 128", student, padded1, padded32)
        measure("+ dynamic shapes (no padding; batches of similar length)", student, singles, bucketed)
        measure(f"+ int8 (dynamic, per-token activations, {int8_engine()} kernels)", student_q, singles, bucketed)
        run, cache = cached_runner(student_q)
        measure(f"+ cache ({100 * args.duplicates:.0f} % repeated requests)", student_q, singles, None, run)
        info = cache.cache_info()
        rows[-1]["note"] = f"hits {info['hits']}, misses {info['misses']}"
        if student_qf is not None:
            measure("the same int8 with fbgemm's kernels (PyTorch's default engine)", student_qf, singles, bucketed)
        for int8 in (False, True):
            ort = ort_peer(student, Path(work), int8)
            measure(f"peer: ONNX Runtime {'int8' if int8 else 'fp32'}, same student, transformer fusions",
                    ort, singles, bucketed)
        path = export_onnx(student, Path(work) / "bertkit.onnx")
        for int8 in (False, True):
            if int8:
                path = quantize_onnx(path, Path(work) / "bertkit.int8.onnx")
            m = OnnxModel(path, student.config, BertForSequenceClassification, threads=args.threads)
            measure(f"bertkit's ONNX backend {'int8' if int8 else 'fp32'} (its own export)", m, singles, bucketed)

        # ---- the physical limit: base fp32 encoder at batch 1, sequence 128 ----
        peak = matmul_peak()
        x = {"input_ids": torch.randint(1000, 30000, (1, 128)), "attention_mask": torch.ones(1, 128, dtype=torch.long),
             "token_type_ids": torch.zeros(1, 128, dtype=torch.long)}
        t = statistics.median(latencies(lambda b: teacher.bert(b["input_ids"], b["attention_mask"],
                                                               b["token_type_ids"]), [x] * 10, repeats=3))
        gflops = 128 * base.flops_per_token(128) / t / 1e9

    baseline = rows[0]["p50_ms"]
    for r in rows:
        r["speedup_p50"] = baseline / r["p50_ms"]

    # ---- accuracy of each rung, real models ----
    acc: dict[str, dict[str, float]] = {}
    for task, key, teacher_dir, student_dir, texts, gold in (
            ("SST-2 dev", "sst2", args.sst2_teacher, args.sst2_student, sst_texts, sst_gold),
            ("NSMC test", "nsmc", args.nsmc_teacher, args.nsmc_student, nsmc_texts, nsmc_gold)):
        a = {}
        if teacher_dir:
            a["baseline"] = hf_accuracy(teacher_dir, texts, gold, key)
            a["bertkit"] = accuracy(Predictor.from_pretrained(teacher_dir, PredictorSettings(batch_size=64)), texts,
                                    gold, key)
        if student_dir:
            for rung, settings in (("student", PredictorSettings(batch_size=64)),
                                   ("int8", PredictorSettings(batch_size=64, int8=True)),
                                   ("ort", PredictorSettings(batch_size=64, backend="onnx")),
                                   ("ort_int8", PredictorSettings(batch_size=64, backend="onnx", int8=True))):
                a[rung] = accuracy(Predictor.from_pretrained(student_dir, settings), texts, gold, key)
        acc[task] = a
        print(f"  accuracy {task}: {a}", file=sys.stderr, flush=True)
    # the peer rows run the transformers graph of random weights; their real-model accuracy is bertkit's ONNX rows'
    keys = ["baseline", "bertkit", "student", "student", "int8", "int8"] + (["int8"] if student_qf is not None else []) \
        + [None, None, "ort", "ort_int8"]

    memory = {}
    if args.sst2_teacher and args.sst2_student:
        memory = {"teacher fp32": peak_rss_mb(args.sst2_teacher, False, sst_texts[:200]),
                  "student fp32": peak_rss_mb(args.sst2_student, False, sst_texts[:200]),
                  "student int8": peak_rss_mb(args.sst2_student, True, sst_texts[:200]),
                  "no model": peak_rss_mb(None, False, [])}

    # ---- the table ----
    print(f"\ntorch {torch.__version__}, {args.threads} thread(s), {platform.processor() or platform.machine()}; "
          f"{len(singles)} sentences (mean {np.mean(lengths):.1f} tokens)")
    print("| rung | p50 ms (batch 1) | p99 ms | speed-up (p50) | sentences/s (batch 32) | SST-2 dev | NSMC test |")
    print("|---|---|---|---|---|---|---|")
    for r, key in zip(rows, keys):
        cells = [f"{100 * acc[t][key]:.1f}" if key and key in acc.get(t, {}) else "—" for t in ("SST-2 dev", "NSMC test")]
        tput = f"{r['batch32_sent_s']:.0f}" if r["batch32_sent_s"] else "—"
        print(f"| {r['row']}{' (' + r['note'] + ')' if r['note'] else ''} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | "
              f"{r['speedup_p50']:.1f}x | {tput} | {cells[0]} | {cells[1]} |")
    print(f"\nbertkit fp32 base encoder, batch 1, sequence 128: {gflops:.0f} GFLOP/s = {100 * gflops / peak:.0f} % "
          f"of the fp32 matmul peak ({peak:.0f} GFLOP/s, 2048^3, {args.threads} thread(s))")
    if memory:
        print(f"peak resident memory of a fresh process classifying 200 sentences: teacher fp32 "
              f"{memory['teacher fp32']:.0f} MB, student fp32 {memory['student fp32']:.0f} MB, student int8 "
              f"(quantised at load) {memory['student int8']:.0f} MB; the interpreter with torch and bertkit "
              f"imported, no model: {memory['no model']:.0f} MB")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"rows": rows, "accuracy": acc, "gflops": gflops, "peak_gflops": peak,
                                          "memory_mb": memory, "threads": args.threads,
                                          "mean_tokens": float(np.mean(lengths))}, indent=2))


if __name__ == "__main__":
    main()
