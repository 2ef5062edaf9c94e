"""The one training loop. Pre-training, fine-tuning and distillation are `Task`s run by it, not copies of it.

Per step: the task hands this rank its micro-batches and how many items each objective counts in them (masked
tokens, sequences, ...); the counts are summed over micro-batches and ranks first, so every loss is a sum divided
by the count of the whole global batch. Gradient accumulation and any number of processes therefore give the
same update as one big batch. Then: clip, AdamW, warm-up/decay schedule.

Around it: bf16 autocast where the device has fast bf16 (CUDA; off on CPUs without AMX, where it is slower),
torchrun DDP (gloo on CPU, NCCL on GPU; only rank 0 writes), a progress bar with tokens/s and ETA, one JSON line
per logged step or evaluation in `metrics.jsonl` and its plot, and checkpoints that resume exactly:
`checkpoints/step-N/` holds an HF model directory plus `trainer_state.pt` (optimiser, schedule, RNG, step). It is
written under a temporary name and renamed when complete, so a crash while saving leaves the previous checkpoint
intact. The data position is the step: tasks derive each step's batch from (seed, step), never from a stream.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import re
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

import torch
import torch.distributed as dist
from tqdm import tqdm

from bertkit.checkpoint import CheckpointError, atomic_write_text, load_state_into
from bertkit.train.optim import adamw, warmup_linear
from bertkit.train.plot import plot_metrics, read_metrics

log = logging.getLogger("bertkit.train")
STATE = "trainer_state.pt"


@dataclass
class TrainConfig:
    steps: int = 1000
    lr: float = 1e-4
    warmup: float = 0.01  # a fraction of `steps` (< 1) or a number of steps
    weight_decay: float = 0.01
    adam_eps: float = 1e-6
    max_grad_norm: float = 1.0
    grad_accum: int = 1  # micro-batches per step on each rank
    seed: int = 12345
    bf16: str = "auto"  # auto | on | off
    device: str = "auto"  # auto (a GPU per process when there are enough, else the CPU) | cpu | cuda
    log_every: int = 10
    eval_every: int = 0  # 0: only at the end
    save_every: int = 500  # 0: only at the end
    keep_checkpoints: int = 2
    threads: int = 0  # torch threads per process; 0: torch's choice
    best_metric: str = ""  # keep the weights of the evaluation where this metric was highest: out/ holds them
    # True: glibc keeps freed memory (see keep_freed_memory), faster steps for fixed shapes (pre-training's packed
    # sequences). False (fine-tuning, whose shapes vary from batch to batch): freed memory is handed back every
    # log_every steps (see release_freed_memory); without either, a KorQuAD run's heap grew to 20 GB.
    keep_freed_memory: bool = False
    extra: dict = field(default_factory=dict)

    @property
    def warmup_steps(self) -> int:
        return int(self.warmup * self.steps) if self.warmup < 1 else int(self.warmup)


class Task(Protocol):
    """What a recipe gives the loop."""

    names: tuple[str, ...]  # the objectives' count names, e.g. ("masked tokens", "sequences")

    def micro_batches(self, step: int, rank: int, world: int, accum: int) -> list[dict[str, torch.Tensor]]: ...

    def counts(self, batch: dict[str, torch.Tensor]) -> list[float]: ...  # per objective, in `names` order

    def loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor], totals: torch.Tensor
             ) -> tuple[torch.Tensor, dict[str, float]]: ...  # (loss to backward, summed statistics)

    def summarize(self, stats: dict[str, float], totals: list[float]) -> dict[str, float]: ...

    def evaluate(self, model: torch.nn.Module) -> dict[str, float]: ...


# ---- processes ---------------------------------------------------------------------------------------------------
@dataclass
class Env:
    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_env(device: str = "auto") -> Env:
    """One process, or one of `torchrun`'s (RANK / WORLD_SIZE / LOCAL_RANK in the environment). `auto` uses one
    GPU per process on this node when there are that many, else the CPU for every process (never some of each)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    per_node = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device '{device}': choose auto, cpu or cuda")
    if device == "cuda" and gpus < per_node:
        raise ValueError(f"device 'cuda': {per_node} process(es) on this node need as many GPUs, {gpus} visible")
    gpu = device == "cuda" or (device == "auto" and gpus >= per_node)
    device = torch.device(f"cuda:{local}") if gpu else torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Env(rank=int(os.environ.get("RANK", "0")), world=world, device=device)


def glibc():
    """The C library when it is glibc (its malloc has the knobs used below), else None."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


def keep_freed_memory() -> bool:
    """Ask glibc to keep freed memory instead of returning it to the OS (no mmap for big blocks, no trimming).
    A training step allocates the same large temporaries (activations, MLM logits) again and again; handing them
    back and faulting fresh pages in each step costs 10-30 % of a CPU step here (benchmarks/pretrain.py)."""
    libc = glibc()
    M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
    return libc is not None and bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1))


def release_freed_memory() -> bool:
    """Hand memory that glibc holds free back to the OS (malloc_trim); True if some was. With batches of varying
    shapes the freed activations of one step fragment the heap and the process grows without bound: a KorQuAD
    fine-tuning process measured 7.9 GB resident at step 320, 0.95 GB right after one malloc_trim (called from
    gdb: `gdb -p PID -batch -ex 'call (int)malloc_trim(0)'`). Cheap at log intervals."""
    libc = glibc()
    return libc is not None and bool(libc.malloc_trim(0))


def _all_reduce(t: torch.Tensor, env: Env) -> torch.Tensor:
    if env.world > 1:
        dist.all_reduce(t)
    return t


# ---- checkpoints -------------------------------------------------------------------------------------------------
def checkpoints(out: Path) -> list[Path]:
    """Complete checkpoints, oldest first (temporary directories of interrupted saves are not listed)."""
    found = [p for p in (out / "checkpoints").glob("step-*") if re.fullmatch(r"step-\d+", p.name)]
    return sorted((p for p in found if (p / STATE).is_file()), key=lambda p: int(p.name[5:]))


def rng_states(env: Env) -> list[torch.Tensor]:
    """The torch RNG state of every rank (dropout differs per rank), gathered to all."""
    state = torch.get_rng_state()
    if env.world == 1:
        return [state]
    states: list = [None] * env.world
    dist.all_gather_object(states, state)
    return states


def save_checkpoint(out: Path, step: int, model, optimizer, scheduler, tokenizer, keep: int,
                    rng: list[torch.Tensor], progress: dict | None = None) -> Path:
    """`progress`: what the run has accumulated besides the weights (training seconds, the best evaluation and its
    weights), so that a resumed run reports and keeps the same as an uninterrupted one."""
    final = out / "checkpoints" / f"step-{step:07d}"
    tmp = out / "checkpoints" / f".tmp-step-{step:07d}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, tokenizer=tokenizer)
    state = {"step": step, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
             "torch_rng": rng, "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
             "progress": progress or {}}
    torch.save(state, tmp / STATE)
    fault = os.environ.get("BERTKIT_FAULT_SAVE_DELAY", "")  # "STEP:SECONDS", fault injection for the crash test
    if fault and int(fault.split(":")[0]) == step:
        time.sleep(float(fault.split(":")[1]))
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)  # the checkpoint exists only once it is complete
    for old in checkpoints(out)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(path: Path, model, optimizer, scheduler, env: Env) -> tuple[int, dict]:
    """Restore a checkpoint into the model, optimiser, schedule and random streams: (step, progress)."""
    from bertkit.checkpoint import read_state_dict

    try:
        state = torch.load(path / STATE, map_location="cpu", weights_only=True)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        rng = state["torch_rng"]
        rng = [rng] if isinstance(rng, torch.Tensor) else rng  # one state: written before per-rank states
        if len(rng) == env.world:  # the same number of processes: each continues its own random stream
            torch.set_rng_state(rng[env.rank])
        else:
            log.warning("%s: saved by %d processes, resumed by %d: dropout noise will differ", path, len(rng),
                        env.world)
        if state["cuda_rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        step = int(state["step"])
        progress = state.get("progress", {})  # absent from checkpoints written before it was kept
    except Exception as e:
        raise CheckpointError(f"{path / STATE}: not a readable trainer state ({type(e).__name__}: {e})") from None
    if hasattr(model, "load_weights"):  # a model saved as several directories (ELECTRA's two networks)
        model.load_weights(path)
    else:
        load_state_into(model, read_state_dict(path), str(path))
    return step, progress


# ---- the loop ----------------------------------------------------------------------------------------------------
def train(model: torch.nn.Module, task: Task, cfg: TrainConfig, out: str | Path, tokenizer=None,
          resume: bool = False, env: Env | None = None, show_progress: bool = True) -> dict:
    """Run `task` on `model` for `cfg.steps` steps, writing checkpoints, metrics and the final model to `out`.
    Returns the last evaluation (the best one with `cfg.best_metric`) and `train_seconds`, the time spent in this
    loop summed over every resumed part of the run."""
    env = env or setup_env(cfg.device)
    out = Path(out)
    if env.device.type == "cpu" and cfg.keep_freed_memory:
        keep_freed_memory()
    trim = env.device.type == "cpu" and not cfg.keep_freed_memory  # varying shapes: hand freed memory back
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed + env.rank)  # dropout differs per rank, as it would across a bigger batch
    model.to(env.device)
    optimizer = adamw(model, cfg.lr, cfg.weight_decay, eps=cfg.adam_eps)
    scheduler = warmup_linear(optimizer, cfg.warmup_steps, cfg.steps)
    start, progress = 0, {}
    if resume:
        found = checkpoints(out)
        if found:
            start, progress = load_checkpoint(found[-1], model, optimizer, scheduler, env)
            log.warning("resuming from %s (step %d)", found[-1], start)
        else:
            log.warning("--resume: no checkpoint in %s; starting from scratch", out / "checkpoints")
    if env.main:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "train_config.json", json.dumps(asdict(cfg), indent=2, default=str) + "\n")
        _truncate_metrics(out / "metrics.jsonl", start)
    ddp = torch.nn.parallel.DistributedDataParallel(model, find_unused_parameters=True) if env.world > 1 else model
    use_bf16 = cfg.bf16 == "on" or (cfg.bf16 == "auto" and env.device.type == "cuda" and torch.cuda.is_bf16_supported())
    autocast = torch.autocast(env.device.type, dtype=torch.bfloat16, enabled=use_bf16)

    metrics = open(out / "metrics.jsonl", "a", encoding="utf-8") if env.main else None
    bar = tqdm(total=cfg.steps, initial=start, desc="training", unit="step", disable=not (show_progress and env.main))
    last_eval: dict = progress.get("last_eval", {})
    best: tuple[float, dict, dict] | None = progress.get("best")  # (score, evaluation, weights) of the best so far
    seconds_before, loop_start = float(progress.get("train_seconds", 0.0)), time.perf_counter()
    # Statistics of the steps since the last log line, so that each line summarises its whole window.
    window: dict[str, float] = {}
    window_totals = torch.zeros(len(task.names), dtype=torch.float64)
    window_tokens, window_start = 0, time.perf_counter()
    model.train()
    for step in range(start, cfg.steps):
        micro = [{k: v.to(env.device) for k, v in b.items()} for b in
                 task.micro_batches(step, env.rank, env.world, cfg.grad_accum)]
        totals = _all_reduce(torch.tensor([sum(c) for c in zip(*(task.counts(b) for b in micro))],
                                          dtype=torch.float64, device=env.device), env)
        window_totals += totals.cpu()
        for i, batch in enumerate(micro):
            sync = ddp.no_sync() if env.world > 1 and i < len(micro) - 1 else contextlib.nullcontext()
            with sync:
                with autocast:
                    loss, s = task.loss(ddp, batch, totals)
                # DDP averages gradients over ranks; the loss is already divided by the global count, so undo it.
                (loss * env.world).backward()
            for k, v in s.items():
                window[k] = window.get(k, 0.0) + v
            window_tokens += int(batch["attention_mask"].sum())
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        done = step + 1
        bar.update(1)

        if done % cfg.log_every == 0 or done == cfg.steps:
            keys = sorted(window)
            summed = _all_reduce(torch.tensor([window[k] for k in keys] + [window_tokens], dtype=torch.float64,
                                              device=env.device), env).tolist()
            elapsed = time.perf_counter() - window_start
            row = {"split": "train", "step": done, **task.summarize(dict(zip(keys, summed)), window_totals.tolist()),
                   "lr": scheduler.get_last_lr()[0], "grad_norm": float(grad_norm),
                   "tokens_per_s": summed[-1] / elapsed, "time": time.time()}
            window, window_tokens, window_start = {}, 0, time.perf_counter()
            window_totals.zero_()
            if trim:
                release_freed_memory()
            if env.main:
                metrics.write(json.dumps(row) + "\n")
                metrics.flush()
                bar.set_postfix(loss=f"{row['loss']:.3f}", tok_s=f"{row['tokens_per_s']:.0f}")
        if (cfg.eval_every and done % cfg.eval_every == 0) or done == cfg.steps:
            last_eval = _evaluate(model, task, done, metrics, env)
            if trim:
                release_freed_memory()
            if env.main:
                plot_metrics(out / "metrics.jsonl")
            score = last_eval.get(cfg.best_metric) if cfg.best_metric else None
            if score is not None and (best is None or score > best[0]):
                best = (score, {**last_eval, "best_step": done},
                        {k: v.detach().clone() for k, v in model.state_dict().items()})
        if (cfg.save_every and done % cfg.save_every == 0) or done == cfg.steps:
            rng = rng_states(env)
            if env.main:
                progress = {"train_seconds": seconds_before + time.perf_counter() - loop_start,
                            "last_eval": last_eval, "best": best}
                save_checkpoint(out, done, model, optimizer, scheduler, tokenizer, cfg.keep_checkpoints, rng,
                                progress)
            if env.world > 1:
                dist.barrier()
    bar.close()
    train_seconds = seconds_before + time.perf_counter() - loop_start
    if best is not None:
        model.load_state_dict(best[2])
        last_eval = best[1]
    if env.main:
        metrics.close()
        model.save_pretrained(out, tokenizer=tokenizer)  # the final (or best) model, an HF directory
    return {**last_eval, "train_seconds": train_seconds}


def _evaluate(model, task: Task, step: int, metrics, env: Env) -> dict:
    model.eval()
    with torch.inference_mode():
        result = task.evaluate(model) if env.main else {}
    model.train()
    if env.main and result:
        metrics.write(json.dumps({"split": "eval", "step": step, **result, "time": time.time()}) + "\n")
        metrics.flush()
    return result


def _truncate_metrics(path: Path, step: int) -> None:
    """Keep the curve up to the step being resumed from, so that the resumed run continues it seamlessly."""
    if path.exists():
        rows = [r for r in read_metrics(path) if r.get("step", 0) <= step]
        atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows))
