"""Curves of a run: `metrics.jsonl` (one JSON object per logged step or evaluation) -> a PNG."""

from __future__ import annotations

import json
from pathlib import Path


def read_metrics(path: str | Path) -> list[dict]:
    """Every complete JSON line (a line cut by a crash is skipped)."""
    rows = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def plot_metrics(path: str | Path, out: str | Path | None = None) -> Path | None:
    """One panel per numeric metric (train and held-out on the same axes); None when there is nothing to plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(path)
    train = [r for r in rows if r.get("split") == "train"]
    evals = [r for r in rows if r.get("split") == "eval"]
    keys: list[str] = []
    for r in train + evals:
        keys += [k for k, v in r.items() if k not in ("split", "step", "time", "best_step") and k not in keys
                 and isinstance(v, (int, float))]
    if not keys:
        return None
    fig, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys), 3), squeeze=False)
    for ax, key in zip(axes[0], keys):
        for series, style, label in ((train, "-", "train"), (evals, "o-", "held-out")):
            pts = [(r["step"], r[key]) for r in series if key in r]
            if pts:
                ax.plot(*zip(*pts), style, label=label, markersize=3)
        ax.set_title(key)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0][0].legend()
    fig.tight_layout()
    out = Path(out) if out else Path(path).with_suffix(".png")
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
