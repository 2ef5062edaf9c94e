"""AdamW as BERT used it, and the warm-up + linear decay schedule."""

from __future__ import annotations

import torch
from torch import nn


def param_groups(model: nn.Module, weight_decay: float, lr: float | None = None) -> list[dict]:
    """Decay on matrices only: biases, LayerNorm weights and other 1-D tensors are not decayed. Tied parameters
    (the MLM decoder and the word embeddings) appear once. A model with `lr_multiplier(name)` (a recipe whose new
    layers learn faster than its pre-trained encoder) gets a group per multiplier, at `lr` times it."""
    scale = getattr(model, "lr_multiplier", None)
    groups: dict[tuple[bool, float], list] = {}
    for name, p in model.named_parameters():  # named_parameters() yields each shared tensor once
        if p.requires_grad:
            groups.setdefault((p.dim() >= 2, scale(name) if scale else 1.0), []).append(p)
    out = []
    for (decays, mult), params in sorted(groups.items(), key=lambda kv: (not kv[0][0], kv[0][1])):
        group = {"params": params, "weight_decay": weight_decay if decays else 0.0}
        if mult != 1.0 and lr is not None:
            group["lr"] = lr * mult
        out.append(group)
    return out


def adamw(model: nn.Module, lr: float, weight_decay: float = 0.01, betas=(0.9, 0.999), eps: float = 1e-6
          ) -> torch.optim.AdamW:
    fused = {"foreach": True} if not any(p.is_cuda for p in model.parameters()) else {"fused": True}
    return torch.optim.AdamW(param_groups(model, weight_decay, lr), lr=lr, betas=betas, eps=eps, **fused)


def warmup_linear(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int
                  ) -> torch.optim.lr_scheduler.LambdaLR:
    """lr rises linearly from 0 over `warmup_steps`, then falls linearly to 0 at `total_steps`."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
