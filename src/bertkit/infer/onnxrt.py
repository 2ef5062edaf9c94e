"""ONNX export and the ONNX Runtime backend of the Predictor.

`export_onnx` traces a bertkit model (encoder + head) into `model.onnx` with dynamic batch and sequence axes;
inputs `input_ids`, `attention_mask`, `token_type_ids` (int64), outputs named after the head's fields
(`logits`; `start_logits`, `end_logits`; `last_hidden_state` for a bare encoder). A family without segments
(DistilBERT) reads no `token_type_ids`, and the exporter leaves an unread input out: its graph takes
`input_ids`, `attention_mask`, as transformers' DistilBERT does, and `OnnxModel` feeds each graph the inputs it
declares. The graph computes the padded
layout with the padding keys masked (valid for any batch, padded or not; outputs at padded positions are not
zeroed): with static shapes ONNX Runtime's own graph optimisations apply, and a 3-layer student ran 1.3x faster
at batch 1 than with bertkit's unpadding path traced into the graph (benchmarks/RESULTS.md, the ladder).

`optimize_onnx` applies ONNX Runtime's transformer fusions (attention, LayerNorm, GELU, bias) when they match,
and `quantize_onnx` ONNX Runtime's dynamic int8 quantisation (MatMul weights int8, per channel).

`onnx_file` keeps a model's export in a cache outside the model directory (`cache_dir()`: `$BERTKIT_CACHE`, else
`$XDG_CACHE_HOME/bertkit`, else `~/.cache/bertkit`), in an entry keyed by a hash of what the export derives from.

`OnnxModel` runs such a file and is called like a bertkit model, so the Predictor has one code path whatever the
backend. onnx / onnxruntime are dependencies; where they cannot be installed, `backend="auto"` runs PyTorch.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from torch import nn

from bertkit.checkpoint import CheckpointError
from bertkit.io import atomic_path
from bertkit.config import BertConfig
from bertkit.task_families import family_of

log = logging.getLogger("bertkit.onnx")

INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def _require_ort():
    try:
        import onnxruntime
    except ImportError:
        raise ImportError("the ONNX backend needs onnxruntime and onnx: pip install onnxruntime onnx") from None
    return onnxruntime


def output_names(model: nn.Module) -> tuple[str, ...]:
    """The graph's outputs: the head's fields its task family names (`Family.onnx_outputs`)."""
    family = family_of(type(model), model.config)
    if family is None or not family.onnx_outputs:
        raise ValueError(f"{type(model).__name__}: no ONNX export for this head")
    return family.onnx_outputs


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
    axes = {n: {0: "batch", 1: "sequence"} for n in (*INPUTS, *names)}
    for n in family_of(type(model), model.config).per_text_outputs:  # (batch, labels); the others are per token
        axes[n] = {0: "batch"}
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

    with atomic_path(dst) as tmp, _quiet_root_logger():
        # DefaultTensorType: shape inference cannot type the outputs of ORT's fused (com.microsoft) operators
        quantize_dynamic(str(src), str(tmp), weight_type=QuantType.QInt8, per_channel=True,
                         extra_options={"DefaultTensorType": TensorProto.FLOAT})
    return Path(dst)


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """The quantiser advises its pre-processing script on the root logger at every call (a warning that does not
    apply: the graph is bertkit's own export); other loggers are untouched."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


class GraphModel:
    """A compiled graph of the export called like a bertkit model: `model(input_ids, attention_mask,
    token_type_ids)` returns an object with the head's fields (`outputs`) as torch tensors. A backend gives the
    graph's input names (`inputs`: without token_type_ids where none are read) and `run(feed)`, numpy in and out."""

    backend = "onnx"  # the Predictor's name for it
    inputs: set[str]
    outputs: list[str]
    training = False

    def run(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        raise NotImplementedError

    def __call__(self, input_ids, attention_mask=None, token_type_ids=None):
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        feed = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
        values = self.run({k: np.ascontiguousarray(v.cpu().numpy(), dtype=np.int64) for k, v in feed.items()
                           if k in self.inputs})
        return SimpleNamespace(**{n: torch.from_numpy(np.asarray(v)) for n, v in zip(self.outputs, values)})

    def eval(self):
        return self

    def train(self, mode: bool = True):
        return self


class OnnxModel(GraphModel):
    """An ONNX Runtime session as a `GraphModel`."""

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
        self.inputs = {i.name for i in self.session.get_inputs()}

    def run(self, feed):
        return self.session.run(self.outputs, feed)


CACHE_ENV = "BERTKIT_CACHE"
GRAPH = 2  # how the export writes the model (2: attention spelled out over (B, T, H)); a change means a new entry


def cache_dir() -> Path:
    """Where derived files live: `$BERTKIT_CACHE`, else `$XDG_CACHE_HOME/bertkit`, else `~/.cache/bertkit`. Never
    the model's directory, which may be read-only, shared between workers, or inside an installed package."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "bertkit"


def export_key(directory: str | Path, head: type, opset: int = 17) -> str:
    """A hash of everything the export derives from: the weights' bytes (all of them: sha256 reads ~1.5 GB/s
    here, 0.06 s for MiniLM's 91 MB, so a size-and-mtime shortcut is not worth its false hits), config.json, the
    head and the export settings with the versions of the exporter and quantiser. The tokenizer files are not
    in it: tokenisation runs outside the graph."""
    import hashlib

    from bertkit.version import __version__
    from bertkit.checkpoint import find_weights

    directory = Path(directory)
    weights = find_weights(directory)
    files = [weights]
    if weights.name.endswith(".index.json"):
        from bertkit.io import read_json

        index = read_json(weights, "shard index")
        files += [directory / s for s in sorted(set((index.get("weight_map") or {}).values()))] \
            if isinstance(index, dict) else []
    h = hashlib.sha256()
    for f in (*files, directory / "config.json"):
        h.update(f"{f.name}\0".encode())
        with open(f, "rb") as src:
            while block := src.read(1 << 20):
                h.update(block)
    try:
        import onnxruntime
        ort_version = onnxruntime.__version__
    except ImportError:
        ort_version = None
    settings = {"head": head.__name__, "opset": opset, "unpad": False, "graph": GRAPH, "bertkit": __version__,
                "torch": torch.__version__, "onnxruntime": ort_version}
    h.update(json.dumps(settings, sort_keys=True).encode())
    return h.hexdigest()[:32]


@contextlib.contextmanager
def _locked(path: Path, block: bool = True) -> Iterator[bool]:
    """An exclusive `flock` on `path` for the block (False when `block` is off and another process holds it).
    The kernel drops it when the holder dies, so a killed export never leaves the entry locked."""
    import fcntl

    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX if block else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _sweep(entry: Path) -> None:
    """Temporaries of interrupted writes (`atomic_path`'s `.NAME.*.tmp`) in an entry whose lock is held: every
    write into an entry happens under its lock, so whoever holds it knows any temporary there is dead."""
    for tmp in entry.glob(".*.tmp"):
        tmp.unlink(missing_ok=True)


def onnx_file(directory: str | Path, head: type, int8: bool = False) -> Path:
    """The ONNX export of `directory` (`model.onnx`, or `model.int8.onnx`) in the cache entry keyed by its content
    (`export_key`), exported the first time. Concurrent workers share one export: the entry is written under an
    exclusive lock, each file atomically, and a worker that waited finds it done. Nothing is written into the
    model's directory (old `MODEL/onnx/` directories are ignored)."""
    from bertkit.io import OutputError, atomic_write_text

    directory = Path(directory)
    root = cache_dir() / "onnx"
    entry = root / export_key(directory, head)
    fp32, q8 = entry / "model.onnx", entry / "model.int8.onnx"
    want = q8 if int8 else fp32
    if want.is_file():
        return want
    try:
        entry.mkdir(parents=True, exist_ok=True)
        with _locked(entry / ".lock"):
            _sweep(entry)
            if not fp32.is_file():
                log.warning("exporting %s to %s", directory, fp32)
                export_onnx(head.from_pretrained(directory), fp32)
                atomic_write_text(entry / "source.json", json.dumps({"model": str(directory.resolve()),
                                                                     "head": head.__name__}) + "\n")
            if int8 and not q8.is_file():
                quantize_onnx(fp32, q8)
        for other in root.iterdir():  # other entries' leftovers, where no process is writing now
            if other != entry and (other / ".lock").is_file():
                with _locked(other / ".lock", block=False) as free:
                    if free:
                        _sweep(other)
    except OSError as e:
        raise OutputError(f"{entry}: cannot write the ONNX cache ({e.strerror or e}); set ${CACHE_ENV} to a "
                          f"writable directory") from None
    return want
