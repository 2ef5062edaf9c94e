"""The strongest CPU inference stacks, side by side in one process: bertkit's paths (its default, and each backend
and precision by name) against ONNX Runtime with its transformer fusions (fp32, int8), CTranslate2 (int8),
OpenVINO (fp32, bf16; int8 by NNCF's post-training quantiser, calibrated on STS-B train sentences) and
sentence-transformers (PyTorch, and its ONNX and OpenVINO backends, the latter in fp32 and bf16), on the same model
and the same real sentences: text in, mean-pooled vector out, each stack through its own API with the same threads.
OpenVINO's precision is always named: its default is bf16 on a CPU with bf16 instructions (this one has
AVX512_BF16), so an OpenVINO row without a precision hint is a bf16 row.

    make peers-venv                                          # .venv-peers: bertkit + the peers (optimum pins an
                                                             # older transformers, so they get a venv of their own)
    .venv-peers/bin/python benchmarks/peers.py               # all-MiniLM-L6-v2, 2 threads
    .venv-peers/bin/python benchmarks/peers.py --shape base  # BERT-base shape (random weights), fewer sentences
    .venv-peers/bin/python benchmarks/peers.py --quick       # a few sentences: checks that every peer runs
    .venv-peers/bin/python benchmarks/peers.py --task sst2 --model runs/finetune/sst2-20k   # a classifier

`--task sst2`: the same stacks on a fine-tuned SST-2 classifier (text in, logits out; CTranslate2 applies the
classifier to its pooler output; sentence-transformers has no classification path and is left out), timed on SST-2
dev sentences, accuracy on all 872 of them and the share of labels equal to bertkit's fp32 PyTorch ones.

Rows: batch 1 (each STS-B dev sentence alone, p50 / p90 ms per call, tokenisation included) and batch 32 (sentences
per second over dev sentences in batches of 32: every stack orders by length first, as bertkit and
sentence-transformers do inside), then accuracy on the same evaluation: STS-B dev Spearman x 100 of the cosine of
each pair (MiniLM's real weights), or for random weights the smallest cosine to bertkit's fp32 PyTorch vectors.
Timing is interleaved: each repeat runs every stack once, in a rotated order, with a pause between stacks (ONNX
Runtime's and OpenVINO's worker threads spin for a while after a call); medians over repeats.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE))

from batch1 import DATA, model_dir  # noqa: E402
from bertkit.checkpoint import packaged_model_dir  # noqa: E402
from bertkit.infer.onnxrt import onnx_file  # noqa: E402
from bertkit.infer.predictor import Predictor, PredictorSettings  # noqa: E402
from bertkit.heads import BertForSequenceClassification  # noqa: E402
from bertkit.model import BertModel  # noqa: E402

Embed = Callable[[list[str]], np.ndarray]


def sts_dev() -> tuple[list[str], list[str], list[float]]:
    import gzip

    with gzip.open(DATA / "glue" / "STS-B" / "dev.tsv.gz", "rt", encoding="utf-8") as f:
        rows = [line.rstrip("\n").split("\t") for line in f][1:]
    return [r[7] for r in rows], [r[8] for r in rows], [float(r[9]) for r in rows]


def sst2(split: str) -> tuple[list[str], list[str]]:
    import gzip

    with gzip.open(DATA / "glue" / "SST-2" / f"{split}.tsv.gz", "rt", encoding="utf-8") as f:
        rows = [line.rstrip("\n").split("\t") for line in f][1:]
    return [r[0] for r in rows], [r[1] for r in rows]


def sts_train(n: int) -> list[str]:
    import gzip

    with gzip.open(DATA / "glue" / "STS-B" / "train.tsv.gz", "rt", encoding="utf-8") as f:
        rows = [line.rstrip("\n").split("\t") for line in f][1:]
    return [r[7] for r in rows[:n]]


# ---- the raw engines: the model's own tokenizer, padding to the longest of the batch, mean pooling in numpy ------
class Tokens:
    def __init__(self, directory: Path, max_length: int = 256):
        from tokenizers import Tokenizer

        self.tok = Tokenizer.from_file(str(directory / "tokenizer.json"))
        self.tok.enable_truncation(max_length)
        self.tok.enable_padding(pad_id=0)

    def __call__(self, texts: list[str]) -> dict[str, np.ndarray]:
        encs = self.tok.encode_batch(texts)
        return {"input_ids": np.array([e.ids for e in encs], dtype=np.int64),
                "attention_mask": np.array([e.attention_mask for e in encs], dtype=np.int64),
                "token_type_ids": np.array([e.type_ids for e in encs], dtype=np.int64)}


def pool(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    m = mask[..., None].astype(np.float32)
    return (hidden * m).sum(1) / np.clip(m.sum(1), 1e-9, None)


def ort_session(path: Path, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def hf_onnx(directory: Path, work: Path, classify: bool = False) -> Path:
    """transformers' graph of the model, exported by optimum (what `ORTModel` and sentence-transformers run)."""
    from optimum.exporters.onnx import main_export

    out = work / ("hf-onnx-cls" if classify else "hf-onnx")
    if not (out / "model.onnx").is_file():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            main_export(str(directory), out, task="text-classification" if classify else "feature-extraction",
                        opset=17, do_validation=False)
    return out / "model.onnx"


def head_out(out: np.ndarray, mask: np.ndarray, classify: bool) -> np.ndarray:
    """A raw engine's first output as the benchmark compares it: logits as they are, hidden states mean-pooled."""
    return out if classify else pool(out, mask)


def ort_peer(directory: Path, work: Path, threads: int, int8: bool, classify: bool = False) -> Embed:
    """ONNX Runtime on transformers' graph with its transformer fusions (Attention, SkipLayerNorm, BiasGelu), and
    for int8 its dynamic quantisation of the fused graph (weights int8 per channel)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.transformers.optimizer import optimize_model

    from bertkit.config import BertConfig

    config = BertConfig.from_json_file(directory / "config.json")
    fused = work / f"ort-fused{'-cls' * classify}.onnx"
    if not fused.is_file():
        opt = optimize_model(str(hf_onnx(directory, work, classify)), model_type="bert",
                             num_heads=config.num_attention_heads, hidden_size=config.hidden_size)
        ours = optimize_model(str(onnx_file(directory, BertForSequenceClassification if classify else BertModel)),
                              model_type="bert",
                              num_heads=config.num_attention_heads, hidden_size=config.hidden_size)
        fused_only = lambda m: {k: v for k, v in m.get_fused_operator_statistics().items() if v}  # noqa: E731
        print(f"    ONNX Runtime fusions on transformers' graph: {fused_only(opt)}; on bertkit's export: "
              f"{fused_only(ours)}")
        opt.save_model_to_file(str(fused))
    path = fused
    if int8:
        from onnx import TensorProto

        path = work / f"ort-fused{'-cls' * classify}-int8.onnx"
        if not path.is_file():
            quantize_dynamic(str(fused), str(path), weight_type=QuantType.QInt8, per_channel=True,
                             extra_options={"DefaultTensorType": TensorProto.FLOAT})
    session, tokens = ort_session(path, threads), Tokens(directory)
    names = {i.name for i in session.get_inputs()}

    def embed(texts):
        feed = tokens(texts)
        out = session.run(None, {k: v for k, v in feed.items() if k in names})[0]
        return head_out(out, feed["attention_mask"], classify)
    return embed


def ct2_peer(directory: Path, work: Path, threads: int, classify: bool = False) -> Embed:
    import ctranslate2
    from ctranslate2.converters import TransformersConverter

    out = work / "ct2-int8"
    if not out.is_dir():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            TransformersConverter(str(directory)).convert(str(out), quantization="int8")
    encoder = ctranslate2.Encoder(str(out), device="cpu", compute_type="int8", intra_threads=threads)
    tokens = Tokens(directory)
    if classify:  # CTranslate2 stops at the pooler: the classifier's fp32 product on top, as transformers does
        from safetensors.numpy import load_file

        weights = load_file(str(directory / "model.safetensors"))
        w, b = weights["classifier.weight"], weights["classifier.bias"]

    def embed(texts):
        feed = tokens(texts)
        lengths = feed["attention_mask"].sum(1)
        ids = [row[:n].tolist() for row, n in zip(feed["input_ids"], lengths)]
        out = encoder.forward_batch(ids)
        if classify:
            return np.array(out.pooler_output) @ w.T + b
        hidden = np.array(out.last_hidden_state)
        return pool(hidden, feed["attention_mask"][:, :hidden.shape[1]])
    return embed


def openvino_peer(directory: Path, work: Path, threads: int, int8: bool, graph: Path | None = None,
                  classify: bool = False, precision: str = "f32") -> Embed:
    """OpenVINO on transformers' graph, or on `graph` (bertkit's own export, which its openvino backend runs), in
    `precision` (OpenVINO's INFERENCE_PRECISION_HINT for what is not int8: its own default is bf16 on a CPU with
    bf16 instructions, so fp32 must be asked for)."""
    import openvino as ov

    core = ov.Core()
    model = core.read_model(str(graph or hf_onnx(directory, work, classify)))
    tokens = Tokens(directory)
    if int8:
        import nncf

        calibration = [tokens([t]) for t in (sst2("train")[0][:300] if classify else sts_train(300))]
        names = [i.get_any_name() for i in model.inputs]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = nncf.quantize(model, nncf.Dataset(calibration, lambda f: {k: f[k] for k in names}),
                                  model_type=nncf.ModelType.TRANSFORMER, subset_size=300)
    compiled = core.compile_model(model, "CPU", {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY",
                                                 "INFERENCE_PRECISION_HINT": precision})
    names = [i.get_any_name() for i in compiled.inputs]
    request = compiled.create_infer_request()

    def embed(texts):
        feed = tokens(texts)
        out = request.infer({k: feed[k] for k in names})[compiled.outputs[0]]
        return head_out(out, feed["attention_mask"], classify)
    return embed


def st_peer(directory: Path, work: Path, threads: int, backend: str, precision: str = "f32") -> Embed:
    from sentence_transformers import SentenceTransformer

    copy = work / f"st-{backend}"  # the ONNX / OpenVINO backends export into the model's directory
    if not copy.is_dir():
        shutil.copytree(directory, copy)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kwargs = {"model_kwargs": {"ov_config": {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY",
                                                 "INFERENCE_PRECISION_HINT": precision}}} \
            if backend == "openvino" else {}
        model = SentenceTransformer(str(copy), device="cpu", backend=backend, **kwargs)
    model.max_seq_length = 256
    return lambda texts: model.encode(texts, batch_size=32, convert_to_numpy=True)


def bertkit_peer(directory: Path, threads: int, classify: bool = False, **settings) -> tuple[Embed, Predictor]:
    predictor = Predictor.from_pretrained(directory, PredictorSettings(threads=threads, batch_size=32,
                                                                       max_length=256, **settings))
    if classify:  # the probabilities, in the label order of config.json (their argmax is the logits')
        return (lambda texts: np.array([list(r["probs"].values()) for r in predictor.classify(texts)])), predictor
    return (lambda texts: predictor.embed(texts)), predictor


def by_length_in_32s(embed: Embed, tokens: Tokens) -> Embed:
    """The raw engines take the batches they are given: order by length and cut into 32s, as the others do."""
    def run(texts):
        lengths = [len(e.ids) for e in tokens.tok.encode_batch(texts)]
        order = np.argsort(lengths, kind="stable")
        out = [None] * len(texts)
        for start in range(0, len(texts), 32):
            idx = order[start:start + 32]
            for i, v in zip(idx, embed([texts[i] for i in idx])):
                out[i] = v
        return np.stack(out)
    return run


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", choices=["minilm", "base"], default="minilm")
    ap.add_argument("--task", choices=["stsb", "sst2"], default="stsb",
                    help="stsb: sentence vectors of MiniLM (or the base shape); sst2: the classifier in --model")
    ap.add_argument("--model", type=Path, help="--task sst2: a fine-tuned SST-2 classifier directory")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch1", type=int, default=0, help="sentences timed alone (default 200; base 60)")
    ap.add_argument("--batch32", type=int, default=0, help="sentences timed in 32s (default 640; base 256)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--only", default="", help="comma-separated peer names (substrings) to run")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    base, classify = args.shape == "base", args.task == "sst2"
    if classify and args.model is None:
        ap.error("--task sst2 needs --model, a fine-tuned SST-2 classifier directory")
    n1 = args.batch1 or (8 if args.quick else 60 if base else 200)
    n32 = args.batch32 or (64 if args.quick else 256 if base else 640)
    repeats = 1 if args.quick else args.repeats
    torch.set_num_threads(args.threads)
    if classify:
        first, labels = sst2("dev")
        second = None
    else:
        first, second, gold = sts_dev()
    if args.quick or base:  # random weights: the agreement with fp32 on 200 pairs says enough
        n = 64 if args.quick else 200
        first = first[:n]
        if classify:
            labels = labels[:n]
        else:
            second, gold = second[:n], gold[:n]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        directory = args.model if classify else packaged_model_dir() if not base else model_dir("base", work)
        if not base:
            shutil.copytree(directory, work / "model")
            directory = work / "model"
        if classify:
            from bertkit.config import BertConfig

            from bertkit.data.tasks import TASKS

            spec = TASKS["sst2"].spec  # SST-2's labels "0" / "1" are named negative / positive in the model
            names = dict(zip(spec.labels, spec.names))
            label2id = {v: k for k, v in BertConfig.from_json_file(directory / "config.json").id2label.items()}
            gold = np.array([label2id[names.get(y, y)] for y in labels])
        tokens = Tokens(directory)
        c = classify
        builders: dict[str, Callable[[], Embed]] = {
            "bertkit default": lambda: bertkit_peer(directory, args.threads, c)[0],
            "bertkit torch fp32": lambda: bertkit_peer(directory, args.threads, c, backend="torch")[0],
            "bertkit torch int8": lambda: bertkit_peer(directory, args.threads, c, backend="torch", int8=True)[0],
            "bertkit onnx fp32": lambda: bertkit_peer(directory, args.threads, c, backend="onnx")[0],
            "bertkit onnx int8": lambda: bertkit_peer(directory, args.threads, c, backend="onnx", int8=True)[0],
            "bertkit openvino fp32": lambda: bertkit_peer(directory, args.threads, c, backend="openvino")[0],
            "bertkit bf16": lambda: bertkit_peer(directory, args.threads, c, bf16=True)[0],
            "ONNX Runtime fused fp32": lambda: by_length_in_32s(ort_peer(directory, work, args.threads, False, c),
                                                                tokens),
            "ONNX Runtime fused int8": lambda: by_length_in_32s(ort_peer(directory, work, args.threads, True, c),
                                                                tokens),
            "CTranslate2 int8": lambda: by_length_in_32s(ct2_peer(directory, work, args.threads, c), tokens),
            "OpenVINO fp32": lambda: by_length_in_32s(openvino_peer(directory, work, args.threads, False,
                                                                    classify=c), tokens),
            "OpenVINO bf16": lambda: by_length_in_32s(openvino_peer(directory, work, args.threads, False,
                                                                    classify=c, precision="bf16"), tokens),
            "OpenVINO int8 (NNCF)": lambda: by_length_in_32s(openvino_peer(directory, work, args.threads, True,
                                                                           classify=c), tokens),
        }
        if not classify:
            builders.update({
                "sentence-transformers torch": lambda: st_peer(directory, work, args.threads, "torch"),
                "sentence-transformers onnx": lambda: st_peer(directory, work, args.threads, "onnx"),
                "sentence-transformers openvino fp32": lambda: st_peer(directory, work, args.threads, "openvino"),
                "sentence-transformers openvino bf16": lambda: st_peer(directory, work, args.threads, "openvino",
                                                                       "bf16")})
        if args.only:
            wanted = [w.strip() for w in args.only.split(",")]
            builders = {k: v for k, v in builders.items() if k == "bertkit torch fp32" or any(w in k for w in wanted)}
        default_backend = bertkit_peer(directory, args.threads)[1].describe()
        what = f"{directory.name} on SST-2" if classify else args.shape
        print(f"{what}, {args.threads} threads, torch {torch.__version__}; bertkit's default: {default_backend}")
        peers: dict[str, Embed] = {}
        for name, build in builders.items():
            start = time.perf_counter()
            try:
                peers[name] = build()
            except Exception as e:  # a peer that does not install or convert here is reported, not fatal
                print(f"  {name}: not run ({type(e).__name__}: {str(e)[:200]})")
                continue
            print(f"  {name}: ready in {time.perf_counter() - start:.1f} s")

        # accuracy on the same evaluation, before timing (it also warms every stack up)
        report: dict = {"shape": args.shape, "task": args.task, "threads": args.threads, "default": default_backend,
                        "peers": {}}
        if classify:
            predicted = {name: embed(first).argmax(1) for name, embed in peers.items()}
            for name, p in predicted.items():
                report["peers"][name] = {"sst2_accuracy": round(100 * float((p == gold).mean()), 2),
                                         "equal_labels_to_fp32": round(float(
                                             (p == predicted["bertkit torch fp32"]).mean()), 4)}
        vectors = {} if classify else {name: (embed(first), embed(second)) for name, embed in peers.items()}
        reference = vectors.get("bertkit torch fp32")
        for name, (a, b) in vectors.items():
            row = report["peers"].setdefault(name, {})
            if base:
                row["min_cosine_to_fp32"] = round(float(min(cosine(a, reference[0]).min(),
                                                            cosine(b, reference[1]).min())), 4)
            else:
                row["stsb_spearman"] = round(100 * spearman(cosine(a, b), np.array(gold)), 2)
                row["min_cosine_to_fp32"] = round(float(cosine(a, reference[0]).min()), 4)

        alone, batched = first[:n1], first[:n32]
        times1: dict[str, list[float]] = {n: [] for n in peers}
        rates: dict[str, list[float]] = {n: [] for n in peers}
        names = list(peers)
        for r in range(repeats):
            for name in names[r % len(names):] + names[:r % len(names)]:
                embed = peers[name]
                time.sleep(0.3)
                for t in alone:
                    start = time.perf_counter()
                    embed([t])
                    times1[name].append((time.perf_counter() - start) * 1e3)
                time.sleep(0.3)
                start = time.perf_counter()
                embed(batched)
                rates[name].append(len(batched) / (time.perf_counter() - start))
        ref1 = statistics.median(times1["bertkit torch fp32"])
        print(f"\n{len(alone)} sentences alone and {len(batched)} in 32s, x {repeats} repeats (medians); accuracy "
              f"on {len(first)} " + ("SST-2 dev sentences" if classify else "STS-B dev pairs"))
        print(f"  {'stack':32s} {'batch 1 p50':>12s} {'p90':>8s} {'batch 32/s':>11s}  accuracy")
        for name in names:
            p50 = statistics.median(times1[name])
            p90 = statistics.quantiles(times1[name], n=10)[-1] if len(times1[name]) > 1 else p50
            rate = statistics.median(rates[name])
            row = report["peers"][name]
            row.update({"batch1_p50_ms": round(p50, 3), "batch1_p90_ms": round(p90, 3),
                        "batch32_per_s": round(rate, 1)})
            acc = (f"accuracy {row['sst2_accuracy']:.2f}, labels equal to fp32 {row['equal_labels_to_fp32']:.4f}"
                   if classify else (f"Spearman {row['stsb_spearman']:.2f}, " if "stsb_spearman" in row else "")
                   + f"min cos {row['min_cosine_to_fp32']:.4f}")
            print(f"  {name:32s} {p50:9.2f} ms {p90:6.2f} ms {rate:9.0f}/s  {acc}  ({ref1 / p50:.2f}x torch at 1)")
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
