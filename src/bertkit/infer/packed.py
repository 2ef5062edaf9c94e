"""fp32 Linear layers whose weights are laid out once, at load, for oneDNN: the matrix products of inference.

`nn.Linear` hands each call to a BLAS that lays the weight out again every time. With a few tokens in a batch that
is most of the cost: MiniLM-L6 at batch 1 spent 81 % of its forward in `addmm` (benchmarks/batch1.py, 2 threads),
and oneDNN's linear on a weight packed beforehand is 2-3x faster with 10 rows and ~1.3x with 32-320 rows
(MiniLM's and BERT-base's shapes, measured on this machine).

`pack_linears(model)` turns each `nn.Linear` into a `PackedLinear`: the same parameters under the same names (the
state dict and `save_pretrained` are unchanged), plus the packed copy as a buffer that is not saved. The packed path
runs only where it computes the same thing: float32 on the CPU, and no gradient to record (training, or a
`requires_grad` input, takes `F.linear`). A weight changed in place after packing (an optimizer step) is packed
again on the next call (its version counter says so). The copy costs the Linear weights' memory once more.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger("bertkit.packed")


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


class PackedLinear(nn.Linear):
    """An `nn.Linear` with its weight also packed for oneDNN (`packed`, not saved)."""

    packed: torch.Tensor

    def pack(self) -> None:
        with torch.no_grad():
            packed = torch.ops.mkldnn._reorder_linear_weight(self.weight.detach(), None)
        self.register_buffer("packed", packed, persistent=False)
        self.packed_version = self.weight._version

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (x.dtype != torch.float32 or x.device.type != "cpu" or self.weight.device.type != "cpu"
                or self.weight.dtype != torch.float32
                or (torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad))):
            return F.linear(x, self.weight, self.bias)
        if self.weight._version != self.packed_version:
            self.pack()
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")


def pack_linears(model: nn.Module) -> nn.Module:
    """`model` (in place) with every float32 CPU `nn.Linear` packed for oneDNN; unchanged where oneDNN's packed
    linear is not available."""
    if not available():
        log.info("oneDNN packed linear not available in this PyTorch build: Linear layers left as they are")
        return model
    for m in model.modules():
        if type(m) is nn.Linear and m.weight.dtype == torch.float32 and m.weight.device.type == "cpu":
            m.__class__ = PackedLinear
            m.pack()
    return model
