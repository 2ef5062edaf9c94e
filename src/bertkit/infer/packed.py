"""fp32 Linear layers whose weights are laid out once, at load, for oneDNN: the matrix products of inference.

`nn.Linear` hands each call to a BLAS that lays the weight out again every time. With a few tokens in a batch that
is most of the cost: MiniLM-L6 at batch 1 spent 81 % of its forward in `addmm` (benchmarks/batch1.py, 2 threads),
and oneDNN's linear on a weight packed beforehand is 1.5-2.1x faster with 10 rows, 1.3-1.6x with 32 and 1.1-1.3x
with 320 at MiniLM's shapes (`python benchmarks/batch1.py --kernels`).

`pack_linears(model)` turns each `nn.Linear` into a `PackedLinear`: the same parameters under the same names (the
state dict and `save_pretrained` are unchanged), plus the packed copy, which is never saved. Two products
are fused as well, which saves 20-35 us a layer each at MiniLM's batch-1 shape: attention's query, key and value in
one product over their concatenated weights (`PackedSelfAttention`), and the feed-forward's exact gelu inside its
first product (`PackedIntermediate`).

The packed path runs only where it computes the same thing: float32 on the CPU, and no gradient to record
(training, or a `requires_grad` input, takes `F.linear`). A weight changed in place after packing (an optimizer
step) is packed again on the next call (its storage and version counter say so). The packed copy is not a buffer
(oneDNN's tensor has no storage to move, copy or pickle): `.to()`, `.half()`, deepcopy and pickling leave it
behind, and the next call on the fast path packs again. It costs the Linear weights' memory once more.
"""

from __future__ import annotations

import functools
import logging
import os

import torch
import torch.nn.functional as F
from torch import nn

from bertkit.model import BertIntermediate, BertSelfAttention

log = logging.getLogger("bertkit.packed")

# oneDNN compiles kernels for each input shape and keeps them in two caches, its own and ideep's, of 1,024 entries
# each by default. A server's packed products see a new row count with nearly every request: a MiniLM classifier
# grew from 530 MB to 2.4 GB over 1,000 batches of new shapes, and 64 entries kept it at 700 MB, at the cost of
# ~10 % on batch-1 latency when every length is new (benchmarks/RESULTS.md, "Peak memory"). Set from the
# environment where the user set nothing; the caches read it when oneDNN first runs in the process.
CACHE_ENTRIES = 64
CACHE_VARIABLES = ("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "LRU_CACHE_CAPACITY")


def bound_onednn_caches() -> None:
    for name in CACHE_VARIABLES:
        os.environ.setdefault(name, str(CACHE_ENTRIES))


@functools.cache
def available() -> bool:
    """oneDNN's packed linear is in this PyTorch build and gives F.linear's result on a small case."""
    if not torch.backends.mkldnn.is_available() or not hasattr(torch.ops.mkldnn, "_reorder_linear_weight"):
        return False
    try:
        w, b, x = torch.randn(8, 16), torch.randn(8), torch.randn(3, 16)
        with torch.no_grad():
            got = torch.ops.mkldnn._linear_pointwise(x, torch.ops.mkldnn._reorder_linear_weight(w, None), b,
                                                     "none", [], "")
        return torch.allclose(got, F.linear(x, w, b), atol=1e-5)
    except (RuntimeError, AttributeError):
        return False


def _fast(x: torch.Tensor, *params: torch.Tensor) -> bool:
    """The packed path computes what F.linear would: float32 on the CPU, and no gradient to record; and oneDNN is
    on (bulk jobs switch it off, `batchio.without_onednn`: it keeps state per input shape, and memory grew with
    the shapes seen)."""
    if not torch.backends.mkldnn.enabled:
        return False
    if x.dtype != torch.float32 or x.device.type != "cpu":
        return False
    if any(p.dtype != torch.float32 or p.device.type != "cpu" for p in params):
        return False
    return not (torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in params)))


def _key(*params: torch.Tensor) -> tuple:
    """Changes when a parameter is replaced (`.to()`, `.half()`) or changed in place (its version counter)."""
    return tuple((p.data_ptr(), p._version) for p in params)


class _Packed:
    """A packed copy and the `_key` of what it was packed from. A copy or a pickle of it is empty (oneDNN's opaque
    tensors cannot be copied): the module packs again on its first call."""

    def __init__(self, tensors: tuple = (), key: tuple = ()):
        self.tensors, self.key = tensors, key

    def __getstate__(self) -> dict:
        return {}

    def __setstate__(self, state: dict) -> None:
        self.tensors, self.key = (), ()


class PackedLinear(nn.Linear):
    """An `nn.Linear` with its weight also packed for oneDNN (`packed`, not saved)."""

    def pack(self) -> None:
        with torch.no_grad():
            self.packed = _Packed((torch.ops.mkldnn._reorder_linear_weight(self.weight.detach(), None),),
                                  _key(self.weight))

    def forward(self, x: torch.Tensor, activation: str = "none") -> torch.Tensor:
        """`activation` "gelu": gelu (erf) fused into the product."""
        if not _fast(x, self.weight):
            y = F.linear(x, self.weight, self.bias)
            return F.gelu(y) if activation == "gelu" else y
        if getattr(self, "packed", None) is None or self.packed.key != _key(self.weight):
            self.pack()
        return torch.ops.mkldnn._linear_pointwise(x, self.packed.tensors[0], self.bias, activation, [],
                                                  "none" if activation == "gelu" else "")


class PackedSelfAttention(BertSelfAttention):
    """Query, key and value from one product over the three weights concatenated (packed once, not saved)."""

    def pack(self) -> None:
        params = [self.query.weight, self.key.weight, self.value.weight]
        with torch.no_grad():
            packed = torch.ops.mkldnn._reorder_linear_weight(torch.cat([w.detach() for w in params]), None)
            bias = torch.cat([lin.bias.detach() for lin in (self.query, self.key, self.value)])
        self.qkv = _Packed((packed, bias), self._qkv_key())

    def _qkv_key(self) -> tuple:
        return _key(*(p for lin in (self.query, self.key, self.value) for p in (lin.weight, lin.bias)))

    def project(self, x: torch.Tensor):
        if not _fast(x, self.query.weight, self.key.weight, self.value.weight):
            return super().project(x)
        if getattr(self, "qkv", None) is None or self.qkv.key != self._qkv_key():
            self.pack()
        qkv = torch.ops.mkldnn._linear_pointwise(x, *self.qkv.tensors, "none", [], "")
        return qkv.split(self.query.out_features, dim=-1)


class PackedIntermediate(BertIntermediate):
    """The feed-forward's first product with its exact gelu fused in."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dense(x, "gelu")


def pack_linears(model: nn.Module) -> nn.Module:
    """`model` (in place) with every float32 CPU `nn.Linear` packed for oneDNN; unchanged where oneDNN's packed
    linear is not available."""
    bound_onednn_caches()
    if not available():
        log.info("oneDNN packed linear not available in this PyTorch build: Linear layers left as they are")
        return model
    def fp32_cpu(linear: nn.Module) -> bool:
        return linear.weight.dtype == torch.float32 and linear.weight.device.type == "cpu"

    for m in model.modules():
        if type(m) is nn.Linear and fp32_cpu(m):
            m.__class__ = PackedLinear
            m.pack()
    for m in model.modules():
        if type(m) is BertSelfAttention and all(fp32_cpu(lin) and lin.bias is not None
                                                for lin in (m.query, m.key, m.value)):
            m.__class__ = PackedSelfAttention
            m.pack()
            for lin in (m.query, m.key, m.value):  # the fused copy serves them: no second one each
                lin.__class__ = nn.Linear
                del lin.packed
        elif type(m) is BertIntermediate and m.act is F.gelu and isinstance(m.dense, PackedLinear):
            m.__class__ = PackedIntermediate
    return model
