"""The OpenVINO backend of the Predictor (optional: `pip install 'bertkit[openvino]'`), for bf16.

It runs the same cached ONNX export as the ONNX Runtime backend (`onnxrt.onnx_file`: attention spelled out over the
padded layout), read by OpenVINO's ONNX frontend and compiled for the CPU with a latency hint and the Predictor's
thread count. On a CPU with bf16 instructions (AVX512_BF16, AMX) OpenVINO's matrix products in bfloat16 ran
1.5-2x ONNX Runtime's fp32 throughput at batch 32 (MiniLM, the BERT-base shape), with sentence vectors at cosine
>= 0.99998 of fp32 (benchmarks/RESULTS.md, "Precision named"). In fp32 OpenVINO was no faster than ONNX Runtime
here, so `auto` never picks it for fp32; `backend="openvino"` runs fp32 by name.

OpenVINO's own default precision is bf16 wherever the CPU has it, so a plain `compile_model` quietly computes in
bf16 (hidden states up to 0.02 from fp32 for MiniLM): the precision is always set here, and bf16 on a CPU without
bf16 instructions is an error rather than fp32 under bf16's name.

Converting from PyTorch instead (OpenVINO's PyTorch frontend, as optimum-intel does, which keeps
`ScaledDotProductAttention` ops) compiled to the same kernels (one `Subgraph` per attention) and ran no faster on
identical batches; the ONNX file is already cached and needs no PyTorch model at load. No int8 here: OpenVINO's
comes from NNCF's post-training quantiser, which moved one MiniLM sentence vector to cosine 0.72 of fp32; int8 runs
on ONNX Runtime or PyTorch.

Compiled models are cached by OpenVINO itself under bertkit's cache (`compiled_cache`), so only the first load of a
model with given options compiles. `OpenVinoModel` is a `GraphModel`, called like a bertkit model as `OnnxModel` is. An infer request serves one call at
a time, so each thread gets its own (the HTTP service calls from several).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from bertkit.checkpoint import CheckpointError
from bertkit.config import BertConfig
from bertkit.infer.onnxrt import GraphModel
from bertkit.task_families import family_of


def _require_openvino():
    try:
        import openvino
    except ImportError:
        raise ImportError("the OpenVINO backend needs openvino: pip install 'bertkit[openvino]'") from None
    return openvino


def compiled_cache(bf16: bool, threads: int) -> Path | None:
    """Where OpenVINO keeps the compiled models of this precision and thread count, under bertkit's cache; None
    when that cannot be written (each load then compiles again). A directory per setting: OpenVINO's own cache key
    (2026.4) leaves out the precision hint, so one directory handed a later bf16 load the fp32 blob of the same
    model (NaN out, on an AMX CPU)."""
    from bertkit.infer.onnxrt import cache_dir

    path = cache_dir() / "openvino" / f"{'bf16' if bf16 else 'f32'}-threads{threads}"
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    return path if os.access(path, os.W_OK) else None


class OpenVinoModel(GraphModel):
    """An OpenVINO compiled model as a `GraphModel` (called like a bertkit model)."""

    backend = "openvino"

    def __init__(self, path: str | Path, config: BertConfig, family_class: type, threads: int = 0,
                 bf16: bool = False):
        ov = _require_openvino()
        self.path, self.config, self.family_class = Path(path), config, family_class
        core = ov.Core()
        if bf16 and "BF16" not in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
            raise ValueError("bf16: this CPU has no bf16 instructions (OpenVINO would run fp32 under that name)")
        # OpenVINO's own default is bf16 wherever the CPU has it: fp32 is asked for by name
        options = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "bf16" if bf16 else "f32"}
        if threads:
            options["INFERENCE_NUM_THREADS"] = threads
        blobs = compiled_cache(bf16, threads)
        if blobs is not None:  # OpenVINO's own model cache: a later load reads the compiled blob (~10x faster)
            options["CACHE_DIR"] = str(blobs)
        try:
            self.compiled = core.compile_model(str(path), "CPU", options)
        except Exception as e:  # OpenVINO's errors name neither the file nor what to do
            raise CheckpointError(f"{path}: OpenVINO cannot compile it ({str(e).strip().splitlines()[0]})") from None
        self.inputs = {i.get_any_name() for i in self.compiled.inputs}
        # a tensor may carry several names (the graph's own beside the export's): the head's field names it
        wanted = set(family_of(family_class, config).onnx_outputs)
        self.outputs = [next(iter(sorted(o.get_names() & wanted)), o.get_any_name()) for o in self.compiled.outputs]
        self._local = threading.local()

    def run(self, feed):
        request = getattr(self._local, "request", None)
        if request is None:  # one call at a time per request: one request per thread
            request = self._local.request = self.compiled.create_infer_request()
        values = request.infer(feed)  # copied out (share_outputs off): the request reuses its buffers
        return [values[o] for o in self.compiled.outputs]
