"""ONNX export and the ONNX Runtime backend of the Predictor.

`export_onnx` traces a bertkit model (encoder + head) into `model.onnx` with dynamic batch and sequence axes;
inputs `input_ids`, `attention_mask`, `token_type_ids` (int64), outputs named after the head's fields
(`logits`; `start_logits`, `end_logits`; `last_hidden_state` for a bare encoder). The graph computes the padded
layout with the padding keys masked (valid for any batch, padded or not; outputs at padded positions are not
zeroed): with static shapes ONNX Runtime's own graph optimisations apply, and a 3-layer student ran 1.3x faster
at batch 1 than with bertkit's unpadding path traced into the graph (benchmarks/RESULTS.md, the ladder).

`optimize_onnx` applies ONNX Runtime's transformer fusions (attention, LayerNorm, GELU, bias) when they match,
and `quantize_onnx` ONNX Runtime's dynamic int8 quantisation (MatMul weights int8, per channel).

`OnnxModel` runs such a file and is called like a bertkit model, so the Predictor has one code path whatever the
backend. onnx / onnxruntime are optional dependencies (`pip install bertkit[onnx]`).
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from torch import nn

from bertkit.checkpoint import CheckpointError, atomic_path
from bertkit.config import BertConfig

log = logging.getLogger("bertkit.onnx")

INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def _require_ort():
    try:
        import onnxruntime
    except ImportError:
        raise ImportError("the ONNX backend needs onnxruntime: pip install 'bertkit[onnx]'") from None
    return onnxruntime


def output_names(model: nn.Module) -> tuple[str, ...]:
    from bertkit.heads import BertForQuestionAnswering, BertForSequenceClassification, BertForTokenClassification
    from bertkit.model import BertModel

    if isinstance(model, BertForQuestionAnswering):
        return ("start_logits", "end_logits")
    if isinstance(model, (BertForSequenceClassification, BertForTokenClassification)):
        return ("logits",)
    if isinstance(model, BertModel):
        return ("last_hidden_state",)
    raise ValueError(f"{type(model).__name__}: no ONNX export for this head")


class _Traced(nn.Module):
    def __init__(self, model: nn.Module, names: tuple[str, ...]):
        super().__init__()
        self.model, self.names = model, names

    def forward(self, input_ids, attention_mask, token_type_ids):
        out = self.model(input_ids, attention_mask, token_type_ids)
        return tuple(getattr(out, n) for n in self.names)


def export_onnx(model: nn.Module, path: str | Path, opset: int = 17, unpad: bool = False) -> Path:
    """Write `model` (float) to `path` as ONNX; the file appears only once complete. By default the graph computes
    the padded layout with masked keys (`BertModel.unpad` off while tracing): static shapes let ONNX Runtime infer
    shapes and fuse (bias + GELU, residual + LayerNorm), which beats skipping padding there; `unpad=True` keeps
    bertkit's eager path (index_select / index_copy on the real tokens) in the graph."""
    from bertkit.model import BertModel

    names = output_names(model)
    model = model.eval()
    vocab = model.config.vocab_size
    ids = torch.randint(max(0, min(1000, vocab - 10)), vocab, (2, 16))
    mask = torch.ones_like(ids)
    mask[1, 10:] = 0  # padding in the trace: the graph keeps the general (unpadding) path
    types = torch.zeros_like(ids)
    path = Path(path)
    from bertkit.heads import BertForSequenceClassification

    per_text = isinstance(model, BertForSequenceClassification)  # (batch, labels); the others are per token
    axes = {n: {0: "batch", 1: "sequence"} for n in (*INPUTS, *names)}
    if per_text:
        axes["logits"] = {0: "batch"}
    encoders = [m for m in model.modules() if isinstance(m, BertModel)]
    try:
        for m in encoders:
            m.unpad = unpad
        with atomic_path(path) as tmp, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings about Python-side checks, which are constant here
            # eval() on the wrapper: the exporter restores the wrapper's mode recursively afterwards
            torch.onnx.export(_Traced(model, names).eval(), (ids, mask, types), str(tmp), input_names=list(INPUTS),
                              output_names=list(names), dynamic_axes=axes, opset_version=opset, dynamo=False,
                              do_constant_folding=True)
    finally:
        for m in encoders:
            m.unpad = True
    return path


def optimize_onnx(src: str | Path, dst: str | Path, config: BertConfig) -> Path:
    """ONNX Runtime's transformer graph optimisations (fusions), written to `dst`."""
    _require_ort()
    from onnxruntime.transformers.optimizer import optimize_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        opt = optimize_model(str(src), model_type="bert", num_heads=config.num_attention_heads,
                             hidden_size=config.hidden_size)
    log.info("ONNX Runtime fusions: %s", opt.get_fused_operator_statistics())
    with atomic_path(dst) as tmp:
        opt.save_model_to_file(str(tmp))
    return Path(dst)


def quantize_onnx(src: str | Path, dst: str | Path) -> Path:
    """ONNX Runtime dynamic int8 quantisation (weights int8 per channel, activations per batch)."""
    _require_ort()
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from onnx import TensorProto

    with atomic_path(dst) as tmp:
        # DefaultTensorType: shape inference cannot type the outputs of ORT's fused (com.microsoft) operators
        quantize_dynamic(str(src), str(tmp), weight_type=QuantType.QInt8, per_channel=True,
                         extra_options={"DefaultTensorType": TensorProto.FLOAT})
    return Path(dst)


class OnnxModel:
    """An ONNX Runtime session called like a bertkit model: `model(input_ids, attention_mask, token_type_ids)`
    returns an object with the head's fields as torch tensors."""

    def __init__(self, path: str | Path, config: BertConfig, family_class: type, threads: int = 0):
        ort = _require_ort()
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        self.path, self.config, self.family_class = Path(path), config, family_class
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime's errors name neither the file nor what to do
            raise CheckpointError(f"{path}: ONNX Runtime cannot load it ({e})") from None
        self.outputs = [o.name for o in self.session.get_outputs()]
        self.training = False

    def __call__(self, input_ids, attention_mask=None, token_type_ids=None):
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        feed = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
        values = self.session.run(self.outputs, {k: np.ascontiguousarray(v.cpu().numpy(), dtype=np.int64)
                                                 for k, v in feed.items()})
        return SimpleNamespace(**{n: torch.from_numpy(v) for n, v in zip(self.outputs, values)})

    def eval(self):
        return self

    def train(self, mode: bool = True):
        return self


def onnx_file(directory: str | Path, head: type, int8: bool = False) -> Path:
    """`directory/onnx/model.onnx` (or `model.int8.onnx`), exported from the directory's float weights the first
    time and again whenever those weights change (their size and mtime are recorded beside the export)."""
    import json

    from bertkit.checkpoint import atomic_write_text, find_weights

    directory = Path(directory)
    weights = find_weights(directory)
    stat = weights.stat()
    source = {"weights": weights.name, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    target = directory / "onnx"
    stamp = target / "source.json"
    fresh = stamp.exists() and json.loads(stamp.read_text(encoding="utf-8")) == source
    fp32, q8 = target / "model.onnx", target / "model.int8.onnx"
    if not (fresh and fp32.exists()):
        log.warning("exporting %s to %s", directory, fp32)
        target.mkdir(parents=True, exist_ok=True)
        stamp.unlink(missing_ok=True)
        q8.unlink(missing_ok=True)
        export_onnx(head.from_pretrained(directory), fp32)
        atomic_write_text(stamp, json.dumps(source) + "\n")
    if int8 and not q8.exists():
        quantize_onnx(fp32, q8)
    return q8 if int8 else fp32
