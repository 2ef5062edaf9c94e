"""Dynamic int8 quantisation of the encoder's Linear layers (PyTorch's oneDNN or fbgemm kernels on this CPU).

Weights are int8 with one scale per output channel; activations are quantised on the fly (8 bits, one scale per
call over the real tokens of the batch, outlier tokens apart: see `_int8_linear_class`), so nothing needs
calibrating. The encoder's and pooler's Linear layers are quantised (~95 % of the FLOPs); embeddings, LayerNorms
and the small task heads stay fp32.

On disk a quantised model is a normal model directory (config.json, tokenizer) whose weights are in
`model.int8.safetensors`: every quantised `X.weight` is stored as int8 with `X.weight_scale` (fp32, one per
output row); everything else as in model.safetensors. config.json says so under `bertkit_int8`, so loading it as a
float model gives a clear error instead of garbage; `transformers` cannot load it (no int8 kernels of this kind).
"""

from __future__ import annotations

import contextlib
import functools
import json
import warnings
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from bertkit.checkpoint import TIED, CheckpointError, atomic_path
from bertkit.config import BertConfig
from bertkit.heads import head_class

INT8_WEIGHTS = "model.int8.safetensors"
INT8_KEY = "bertkit_int8"  # config.json field naming the quantised modules


_INT8_LINEAR = None


def _int8_linear_class():
    """PyTorch's dynamic int8 Linear with per-token activation scales, which BERT needs (measured in
    benchmarks/RESULTS.md on SST-2 dev, all-MiniLM-L6-v2 fine-tuned, labels that agree with fp32):

    - the dynamic kernel (oneDNN's or fbgemm's) takes one activation scale per call; at the input of the
      feed-forward's second matrix the [CLS] token is 3-6x larger than any other in the first four layers, so a
      shared scale leaves the other tokens 2-3 bits fewer. Dividing each token by its own peak before the kernel
      and multiplying the output back gives every token its own scale at the cost of two element-wise passes (the
      bias is added after, in the same fused multiply-add). Agreement, shared scale: 99.5 % (batch 32), 98.5 %
      (batch 1); per token: 99.9 %, 99.5 %.
    - full-range 8-bit activations: PyTorch's module asks for `reduce_range` (7 bits, against int16 overflow in
      AVX2's u8 x s8 multiply-add); 7 bits cost another 1-2 % of the labels.
    """
    global _INT8_LINEAR
    if _INT8_LINEAR is None:
        DynamicLinear = _quantized_api()[0]

        class Int8Linear(DynamicLinear):
            """Weights int8 per output channel (packed without the bias); `bias_fp32` added after scaling back."""

            bias_fp32: torch.Tensor | None = None

            def forward(self, x):
                peak = x.abs().amax(-1, keepdim=True).clamp_min(1e-6)  # (..., 1) one scale per token
                y = torch.ops.quantized.linear_dynamic(x / peak, self._packed_params._packed_params,
                                                       reduce_range=False)
                return torch.addcmul(self.bias_fp32, y, peak) if self.bias_fp32 is not None else y * peak

            @classmethod
            def from_float(cls, mod, *args, **kwargs):
                q = super().from_float(mod, *args, **kwargs)
                w, b = q._packed_params._weight_bias()
                q.set_weight_bias(w, None)
                q.bias_fp32 = None if b is None else b.detach().float().clone()
                return q

            def _get_name(self):
                return "Int8Linear"

        _INT8_LINEAR = Int8Linear
    return _INT8_LINEAR


def _quantized_api():
    # torch.ao.quantization still holds the fbgemm dynamic kernels in this torch; its creation functions warn that
    # they move to torchao one day. The kernels are what we want; the warning says nothing a user can act on.
    warnings.filterwarnings("ignore", message=".*torch.ao.quantization.*deprecated.*")
    warnings.filterwarnings("ignore", message=".*quantize_per_tensor.*deprecated.*")
    warnings.filterwarnings("ignore", message=".*quantized tensor creation.*deprecated.*")
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    return DynamicLinear, per_channel_dynamic_qconfig, quantize_dynamic


def quantizable(model: nn.Module) -> list[str]:
    """Names of the Linear layers that get int8 weights: those of the encoder and the pooler."""
    return [name for name, m in model.named_modules() if isinstance(m, nn.Linear)
            and (".encoder." in f".{name}" or ".pooler." in f".{name}")]


def int8_engine(engine: str | None = None, shape: tuple[int, int] | None = None) -> str:
    """The kernels that pack and run the int8 products: `engine` if named; else, for a model whose feed-forward
    is `shape` (hidden, intermediate), fbgemm's unless oneDNN's run that product clearly faster on this machine at
    this thread count (`fastest_engine`: a 0.05-0.15 s measurement at load, once per shape and process). Both round the same way; which is
    faster depends on the shape, the threads and the CPU (in the ladder oneDNN was 1.5x faster at batch 32 for a
    6 x 768 student at one thread; `benchmarks/batch1.py` prints which ran beside its int8 rows). Without a shape:
    oneDNN's where this PyTorch has them, else fbgemm's."""
    supported = torch.backends.quantized.supported_engines
    if engine is not None:
        if engine not in supported:
            have = ", ".join(e for e in supported if e != "none")
            raise ValueError(f"int8 engine '{engine}': this PyTorch has {have}")
        return engine
    candidates = tuple(e for e in ("fbgemm", "onednn") if e in supported)
    if shape is not None and len(candidates) > 1:
        return fastest_engine(*shape, torch.get_num_threads(), candidates)
    return next((e for e in ("onednn", "fbgemm", "x86", "qnnpack") if e in supported), "none")


@functools.lru_cache(maxsize=None)
def fastest_engine(k: int, n: int, threads: int, candidates: tuple[str, ...]) -> str:
    """Of `candidates` (the first preferred), the engine whose dynamic int8 product (rows, k) x (k, n) is fastest
    here, at a batch-1 row count (16) and a batch-32 one (320) together: another engine replaces the first only if
    it is 15 % faster on the geometric mean of the two (best of 8 calls each), so noise does not flip the choice
    between processes; fbgemm comes first because oneDNN's int8 kernels keep more memory (benchmarks/memory.py:
    peaks 545-583 MB against 425-500 with fbgemm for the same MiniLM-sized models)."""
    import time

    with warnings.catch_warnings():  # the quantized-tensor creation functions warn of their deprecation
        warnings.simplefilter("ignore")
        weight = torch.quantize_per_channel(torch.randn(n, k), torch.full((n,), 0.02, dtype=torch.double),
                                            torch.zeros(n, dtype=torch.long), 0, torch.qint8)
    inputs = [torch.randn(rows, k) for rows in (16, 320)]
    best: dict[str, list[float]] = {}
    with torch.inference_mode():
        for engine in candidates:
            with packing_engine(engine):
                packed = torch.ops.quantized.linear_prepack(weight, None)
            best[engine] = []
            for x in inputs:
                times = []
                for _ in range(10):  # the first two warm the kernel's caches up
                    start = time.perf_counter()
                    torch.ops.quantized.linear_dynamic(x, packed, reduce_range=False)
                    times.append(time.perf_counter() - start)
                best[engine].append(min(times[2:]))
    first = candidates[0]

    def speedup(e: str) -> float:  # over the first candidate, geometric mean of the two row counts
        return (best[first][0] / best[e][0] * best[first][1] / best[e][1]) ** 0.5

    fastest = max(candidates, key=speedup)
    return fastest if speedup(fastest) >= 1.15 else first


@contextlib.contextmanager
def packing_engine(engine: str):
    """Weights are packed for the engine that is current when they are packed (quantize, load) and run with that
    engine's kernel whatever is current later; the global setting is restored."""
    before = torch.backends.quantized.engine
    torch.backends.quantized.engine = engine
    try:
        yield
    finally:
        torch.backends.quantized.engine = before


def quantize_int8(model: nn.Module, engine: str | None = None, inplace: bool = False) -> nn.Module:
    """A copy of `model` (eval mode) with int8 encoder Linear layers, packed for `int8_engine(engine, its shape)`;
    `inplace=True` converts `model` itself, without the transient fp32 copy (for callers that drop the original)."""
    _, qconfig, quantize_dynamic = _quantized_api()
    names = quantizable(model)
    if not names:
        raise ValueError(f"{type(model).__name__}: no encoder Linear layers to quantise")
    engine = int8_engine(engine, (model.config.hidden_size, model.config.intermediate_size))
    with packing_engine(engine):
        q = quantize_dynamic(model.eval(), {name: qconfig for name in names}, dtype=torch.qint8, inplace=inplace,
                             mapping={nn.Linear: _int8_linear_class()})
    q.config.extra[INT8_KEY] = {"method": "dynamic int8, per-channel weights", "modules": names}
    q.int8_engine = engine  # which kernels run it (`Predictor.engine()` says)
    return q.eval()


def save_int8(model: nn.Module, path: str | Path, tokenizer=None) -> None:
    """`model.int8.safetensors` (int8 weights + per-row scales, the rest fp32) and config.json."""
    DynamicLinear, _, _ = _quantized_api()
    directory = Path(path)
    directory.mkdir(parents=True, exist_ok=True)
    state: dict[str, torch.Tensor] = {}
    quantized = {name for name, m in model.named_modules() if isinstance(m, DynamicLinear)}
    for name, m in model.named_modules():
        if name in quantized:
            w, b = m._packed_params._weight_bias()
            b = getattr(m, "bias_fp32", None) if b is None else b
            state[f"{name}.weight"] = w.int_repr().contiguous()
            state[f"{name}.weight_scale"] = w.q_per_channel_scales().float().contiguous() \
                if w.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric) \
                else torch.full((w.shape[0],), w.q_scale(), dtype=torch.float32)
            if b is not None:
                state[f"{name}.bias"] = b.detach().contiguous()
    for key, value in model.state_dict().items():
        owner = key.rsplit(".", 1)[0]
        if not any(owner == q or owner.startswith(q + ".") for q in quantized) and value.dtype.is_floating_point:
            state[key] = value.detach().contiguous()
    state = {k: v for k, v in state.items() if k not in TIED}
    with atomic_path(directory / INT8_WEIGHTS) as tmp:
        save_file(state, str(tmp), metadata={"format": "bertkit-int8"})
    config: BertConfig = model.config
    config.architectures = [type(model).__name__]
    config.extra[INT8_KEY] = {"method": "dynamic int8, per-channel weights", "modules": sorted(quantized)}
    config.save(directory / "config.json")
    (directory / "model.safetensors").unlink(missing_ok=True)  # a stale float file would be loaded by others
    if tokenizer is not None:
        tokenizer.save(directory)


def load_int8(path: str | Path, engine: str | None = None) -> nn.Module:
    """The model that `save_int8` wrote, ready for inference (weights packed for `int8_engine(engine)`)."""
    DynamicLinear = _int8_linear_class()
    directory = Path(path)
    config = BertConfig.from_json_file(directory / "config.json")
    spec = config.extra.get(INT8_KEY)
    file = directory / INT8_WEIGHTS
    if spec is None or not file.exists():
        raise CheckpointError(f"{directory}: not an int8 model directory (no {INT8_WEIGHTS} or no '{INT8_KEY}' "
                              f"in config.json); make one with `bertkit quantize`")
    if config.architectures and config.family.internal_class(config.architectures[0]) is None:
        raise CheckpointError(f"{directory / 'config.json'}: unknown architecture {config.architectures}")
    cls = head_class(config)
    try:
        state = load_file(str(file))
    except Exception as e:  # safetensors raises its own error types for truncated or corrupt files
        raise CheckpointError(f"{file}: cannot read int8 weights ({e})") from None
    engine = int8_engine(engine, (config.hidden_size, config.intermediate_size))
    # The model's skeleton on the meta device: no float weights are made (or initialised) only to be replaced, so
    # loading peaks at the file's size, not at the float model's.
    with torch.device("meta"):
        model = cls(config)
    modules = dict(model.named_modules())
    for name in spec["modules"]:
        m = modules.get(name)
        if not isinstance(m, nn.Linear) or f"{name}.weight" not in state:
            raise CheckpointError(f"{file}: quantised layer '{name}' is missing or is not a Linear of this model")
        w, scale = state.pop(f"{name}.weight"), state.pop(f"{name}.weight_scale", None)
        if w.dtype != torch.int8 or tuple(w.shape) != (m.out_features, m.in_features) or scale is None \
                or tuple(scale.shape) != (m.out_features,):
            raise CheckpointError(f"{file}: '{name}.weight' is {w.dtype} {tuple(w.shape)}, expected int8 "
                                  f"({m.out_features}, {m.in_features}) with one weight_scale per row")
        qw = torch._make_per_channel_quantized_tensor(w, scale.double(), torch.zeros(len(scale), dtype=torch.long), 0)
        with packing_engine(engine):
            q = DynamicLinear(m.in_features, m.out_features, bias_=False, dtype=torch.qint8)
            q.set_weight_bias(qw, None)
        q.bias_fp32 = state.pop(f"{name}.bias", None)
        parent, _, child = name.rpartition(".")
        setattr(modules[parent] if parent else model, child, q)
    # The rest, from the file's tensors themselves; a parameter shared by two modules (a decoder tied to the word
    # embeddings) stays one parameter.
    made: dict[int, nn.Parameter] = {}
    missing = []
    for owner, module in model.named_modules():
        for pname, p in list(module._parameters.items()):
            if p is None:
                continue
            key = f"{owner}.{pname}" if owner else pname
            if id(p) not in made:
                value = state.pop(key, None)
                if value is None:
                    missing.append(key)
                    continue
                if tuple(value.shape) != tuple(p.shape):
                    raise CheckpointError(f"{file}: '{key}' has shape {tuple(value.shape)}, the config implies "
                                          f"{tuple(p.shape)}")
                made[id(p)] = nn.Parameter(value.to(p.dtype), requires_grad=False)
            module._parameters[pname] = made[id(p)]
    missing = [k for k in missing if k not in TIED]
    if missing or state:
        raise CheckpointError(f"{file}: missing {missing[:5]} / unexpected {sorted(state)[:5]} tensors")
    model.config.extra[INT8_KEY] = spec
    model.int8_engine = engine
    return model.eval()


def int8_dir(path: str | Path) -> bool:
    p = Path(path)
    if not (p / INT8_WEIGHTS).exists():
        return False
    return INT8_KEY in json.loads((p / "config.json").read_text(encoding="utf-8"))
