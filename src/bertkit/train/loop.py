"""The one training loop. Pre-training, fine-tuning and distillation are `Task`s run by it, not copies of it.

Per step: the task hands this rank its micro-batches and how many items each objective counts in them (masked
tokens, sequences, ...); the counts are summed over micro-batches and ranks first, so every loss is a sum divided
by the count of the whole global batch. Gradient accumulation and any number of processes therefore give the
same update as one big batch. Then: clip, AdamW, warm-up/decay schedule.

Around it: bf16 autocast where the device has fast bf16 (CUDA; off on CPUs without AMX, where it is slower),
torchrun DDP (gloo on CPU, NCCL on GPU; only rank 0 writes), a progress bar with tokens/s and ETA, one JSON line
per logged step or evaluation in `metrics.jsonl` and its plot, and checkpoints that resume exactly:
`checkpoints/step-N/` holds an HF model directory plus `trainer_state.pt` (optimiser, schedule, RNG, step, the
open log window, the run id). It is written under a temporary name and renamed when complete, so a crash while
saving leaves the previous checkpoint intact; a resume removes such temporaries and takes only its own run's
checkpoints. The data position is the step: tasks derive each step's batch from (seed, step), never from a stream.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import math
import os
import re
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

import torch
import torch.distributed as dist
from safetensors import SafetensorError
from tqdm import tqdm

from bertkit.checkpoint import CheckpointError, load_state_into
from bertkit.io import OutputError, atomic_write_text, read_json
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
    # The run this training belongs to (the output directory's run.json): written into every checkpoint, and only
    # checkpoints carrying it are resumed from or pruned. "": no check (a bare `train()` call).
    run_id: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def warmup_steps(self) -> int:
        return int(self.warmup * self.steps) if self.warmup < 1 else int(self.warmup)

    def validate(self) -> None:
        """Every numeric setting in its range (a ValueError naming the flag), before anything is written."""
        require("steps", self.steps, 1)
        require("lr", self.lr, 0, above=True)
        require("warmup", self.warmup, 0)
        require("weight_decay", self.weight_decay, 0)
        require("adam_eps", self.adam_eps, 0, above=True)
        require("max_grad_norm", self.max_grad_norm, 0, above=True)
        require("grad_accum", self.grad_accum, 1)
        require("log_every", self.log_every, 1)
        require("eval_every", self.eval_every, 0)
        require("save_every", self.save_every, 0)
        require("keep_checkpoints", self.keep_checkpoints, 0)
        require("threads", self.threads, 0)
        if self.bf16 not in ("auto", "on", "off"):
            raise ValueError(f"--bf16 {self.bf16}: choose auto, on or off")


def refuse_changed_config(path: Path, now: dict, may_change: set[str], added: dict | None = None) -> None:
    """Refuse to resume with a config (`now`, nested dicts) that computes a different run than the one saved at
    `path`: another learning rate, data, steps or seed would silently continue a schedule it did not start. Keys in
    `may_change` (how a run is carried out: threads, device, checkpoint frequency; a key ending in "." covers its
    section) are not compared. `added`: fields newer than some saved files, with the value a file without them
    meant. A missing file (a run killed before writing it) has nothing to compare."""
    if not path.exists():
        return

    def flat(d: dict, prefix: str = "") -> dict:
        out = {}
        for k, v in d.items():
            out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
        return out

    before = read_json(path, "config")
    if not isinstance(before, dict):
        raise ValueError(f"{path}: malformed config (not a JSON object)")

    def free(key: str) -> bool:
        return key in may_change or any(key.startswith(p) for p in may_change if p.endswith("."))

    before, now = {**(added or {}), **flat(before)}, flat(json.loads(json.dumps(now, default=str)))
    changed = sorted(k for k in set(now) | set(before) if not free(k) and now.get(k) != before.get(k))
    if changed:
        diffs = ", ".join(f"{k}: {before.get(k)!r} -> {now.get(k)!r}" for k in changed)
        raise ValueError(f"{path}: --resume with a different config ({diffs}); use the same flags, or a new --out")


# how a recipe's run is carried out, not what it computes: free to change on --resume (`refuse_changed_config`)
RUN_SETTINGS = frozenset({"out", "train.threads", "train.device", "train.save_every", "train.log_every",
                          "train.keep_checkpoints"})


def require_batch_split(batch_size: int, grad_accum: int) -> None:
    """A global batch that splits evenly into `grad_accum` micro-batches."""
    if batch_size % grad_accum:
        raise ValueError(f"--batch-size {batch_size} is not a multiple of --grad-accum {grad_accum}")


def require(name: str, value, minimum: float, above: bool = False, maximum: float | None = None,
            below: bool = False) -> None:
    """`value` within [minimum, maximum] (open ends with `above` / `below`), else a one-line ValueError naming the
    setting as its flag: `--batch-size 0: must be at least 1`."""
    flag = "--" + name.replace("_", "-")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{flag} {value!r}: not a finite number")
    if value < minimum or (above and value == minimum):
        raise ValueError(f"{flag} {value}: must be {'above' if above else 'at least'} {minimum}")
    if maximum is not None and (value > maximum or (below and value == maximum)):
        raise ValueError(f"{flag} {value}: must be {'below' if below else 'at most'} {maximum}")


class Task(Protocol):
    """What a recipe gives the loop."""

    names: tuple[str, ...]  # the objectives' count names, e.g. ("masked tokens", "sequences")

    def micro_batches(self, step: int, rank: int, world: int, accum: int) -> list[dict[str, torch.Tensor]]: ...

    def counts(self, batch: dict[str, torch.Tensor]) -> list[float]: ...  # per objective, in `names` order

    def loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor], totals: torch.Tensor
             ) -> tuple[torch.Tensor, dict[str, float]]: ...  # (loss to backward, summed statistics)

    def summarize(self, stats: dict[str, float], totals: list[float]) -> dict[str, float]: ...

    def evaluate(self, model: torch.nn.Module) -> dict[str, float]: ...

    # optional: `before_step(model, step)`, called before each step's batches (the transfer recipe freezes the body
    # for its first steps there)


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
def checkpoints(out: Path, run_id: str = "") -> list[Path]:
    """Complete checkpoints, oldest first (temporary directories of interrupted saves are not listed); with
    `run_id`, only that run's."""
    found = [p for p in (Path(out) / "checkpoints").glob("step-*") if re.fullmatch(r"step-\d+", p.name)]
    found = sorted((p for p in found if (p / STATE).is_file()), key=lambda p: int(p.name[5:]))
    # an unreadable state in this run's directory stays listed: resuming from it names the damage
    return [p for p in found if checkpoint_run_id(p) in (run_id, None)] if run_id else found


def checkpoint_run_id(path: Path) -> str | None:
    """The run id a checkpoint was written by ("" before run ids existed; None: unreadable). Memory-mapped: the
    optimiser's tensors are not read."""
    try:
        state = torch.load(path / STATE, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # torch raises many kinds for a damaged file
        return None
    return str(state.get("run_id") or "") if isinstance(state, dict) else None


def remove_temporaries(out: Path) -> list[Path]:
    """Delete the half-written checkpoints of interrupted saves (`checkpoints/.tmp-step-*`) of the run in `out`.
    Called by the one writing process (rank 0) when a run resumes, before it saves anything."""
    stale = list((Path(out) / "checkpoints").glob(".tmp-step-*"))
    for p in stale:
        shutil.rmtree(p, ignore_errors=True)
    return stale


def rng_states(env: Env) -> list[torch.Tensor]:
    """The torch RNG state of every rank (dropout differs per rank), gathered to all."""
    state = torch.get_rng_state()
    if env.world == 1:
        return [state]
    states: list = [None] * env.world
    dist.all_gather_object(states, state)
    return states


def save_checkpoint(out: Path, step: int, model, optimizer, scheduler, tokenizer, keep: int,
                    rng: list[torch.Tensor], progress: dict | None = None, run_id: str = "") -> Path:
    """`progress`: what the run has accumulated besides the weights (training seconds, the best evaluation and its
    weights, the statistics of the log window in progress), so that a resumed run reports, logs and keeps the same
    as an uninterrupted one. A save that fails (a full disk) removes its temporary directory and raises an
    OutputError naming the path; the previous checkpoints are untouched."""
    final = out / "checkpoints" / f"step-{step:07d}"
    tmp = out / "checkpoints" / f".tmp-step-{step:07d}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    state = {"step": step, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
             "torch_rng": rng, "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
             "progress": progress or {}, "run_id": run_id}
    try:
        model.save_pretrained(tmp, tokenizer=tokenizer)
        torch.save(state, tmp / STATE)
    except WRITE_ERRORS as e:
        shutil.rmtree(tmp, ignore_errors=True)
        before = checkpoints(out, run_id)
        kept = f"the last complete checkpoint, {before[-1]}, is intact" if before else "no earlier checkpoint"
        raise OutputError(f"{final}: checkpoint not saved ({_os_reason(e)}); {kept}") from None
    fault = os.environ.get("BERTKIT_FAULT_SAVE_DELAY", "")  # "STEP:SECONDS", fault injection for the crash test
    if fault and int(fault.split(":")[0]) == step:
        time.sleep(float(fault.split(":")[1]))
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)  # the checkpoint exists only once it is complete
    for old in checkpoints(out, run_id)[:-keep] if keep > 0 else []:  # never another run's
        shutil.rmtree(old, ignore_errors=True)
    return final


# What a failed write raises: the OS error itself, safetensors' and torch.save's wrappings of it (a full disk
# reads "File too large (os error 27)" or "unexpected pos ..."), and io's OutputError.
WRITE_ERRORS = (OSError, RuntimeError, SafetensorError, OutputError)


def _os_reason(e: Exception) -> str:
    """'File too large', 'No space left on device', ... from an OSError or from the message of a wrapped one."""
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def load_checkpoint(path: Path, model, optimizer, scheduler, env: Env, run_id: str = "") -> tuple[int, dict]:
    """Restore a checkpoint into the model, optimiser, schedule and random streams: (step, progress)."""
    from bertkit.checkpoint import read_state_dict

    try:
        state = torch.load(path / STATE, map_location="cpu", weights_only=True)
        if run_id and state.get("run_id") != run_id:
            raise CheckpointError(f"{path}: written by run {state.get('run_id')!r}, not this run {run_id!r}")
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
    except CheckpointError:
        raise
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
    cfg.validate()
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
        if env.main:
            for stale in remove_temporaries(out):
                log.warning("removed %s (a checkpoint whose save was interrupted)", stale)
        found = checkpoints(out, cfg.run_id)
        if found:
            start, progress = load_checkpoint(found[-1], model, optimizer, scheduler, env, cfg.run_id)
            log.warning("resuming from %s (step %d)", found[-1], start)
        else:
            others = " (those there belong to another run)" if checkpoints(out) else ""
            log.warning("--resume: no checkpoint of this run in %s%s; starting from scratch", out / "checkpoints",
                        others)
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
    # Statistics of the steps since the last log line, so that each line summarises its whole window. A checkpoint
    # carries them: resumed between two log lines, the next line still covers the whole window (without them it
    # covered only the steps after the resume, and the train rows of metrics.jsonl differed from an uninterrupted
    # run's). Only tokens_per_s and time, wall-clock measures, may differ.
    saved = progress.get("window", {}) if env.main else {}  # saved summed over ranks: rank 0 carries the sum
    window: dict[str, float] = dict(saved.get("stats", {}))
    window_totals = torch.tensor(progress.get("window", {}).get("totals", [0.0] * len(task.names)),
                                 dtype=torch.float64)  # already global: the counts are all-reduced every step
    window_tokens, window_start = int(saved.get("tokens", 0)), time.perf_counter()
    model.train()
    before_step = getattr(task, "before_step", None)  # optional: a recipe that freezes part of the model a while
    for step in range(start, cfg.steps):
        if before_step is not None:
            before_step(model, step)
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
            if "attention_mask" in batch:  # tokens read by the encoder (none where a recipe feeds it cached vectors)
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
            keys = sorted(window)
            summed = _all_reduce(torch.tensor([window[k] for k in keys] + [window_tokens], dtype=torch.float64,
                                              device=env.device), env).tolist()
            if env.main:
                progress = {"train_seconds": seconds_before + time.perf_counter() - loop_start,
                            "last_eval": last_eval, "best": best,
                            "window": {"stats": dict(zip(keys, summed)), "totals": window_totals.tolist(),
                                       "tokens": int(summed[-1])}}
                save_checkpoint(out, done, model, optimizer, scheduler, tokenizer, cfg.keep_checkpoints, rng,
                                progress, cfg.run_id)
            if env.world > 1:
                dist.barrier()
    bar.close()
    train_seconds = seconds_before + time.perf_counter() - loop_start
    if best is not None:
        model.load_state_dict(best[2])
        last_eval = best[1]
    if env.main:
        metrics.close()
        try:
            model.save_pretrained(out, tokenizer=tokenizer)  # the final (or best) model, an HF directory
        except WRITE_ERRORS as e:
            last = checkpoints(out, cfg.run_id)
            hint = f"; --resume writes it from {last[-1]}" if last else ""
            raise OutputError(f"{out}: final model not saved ({_os_reason(e)}){hint}") from None
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
