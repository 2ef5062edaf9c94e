"""Fault injection: SIGKILL at random moments of fine-tuning and pre-training, and a full disk during a checkpoint.

    python benchmarks/faults.py [--trials 20] [--only finetune,pretrain,disk] [--seed 0] [--workdir DIR]

- `finetune`: a tiny BERT (2 layers, 128 wide, the all-MiniLM-L6-v2 tokenizer) fine-tuned on 128 SST-2 sentences,
  2 epochs of 8 steps, a checkpoint every 2 steps. Each trial (its own seed) SIGKILLs the run at a moment drawn
  uniformly over the uninterrupted run's wall time (start-up included), then `--resume`s it, and kills the resumed
  run too with probability 0.3 per attempt (at most 3 kills), until one finishes.
- `pretrain`: the same for `bertkit pretrain` (tiny size, 16 steps of 8 sequences, 3,000 lines of the NSMC review
  corpus with a 1,500-piece vocabulary; shard building is inside the window where kills land).
- Pass: the final `model.safetensors` equals the uninterrupted run's tensor for tensor, bit for bit; the train and
  eval rows of `metrics.jsonl` are the same but for wall-clock fields (`time`, `tokens_per_s`); no half-written
  checkpoint (`checkpoints/.tmp-step-*`) is left.
- `disk`: a fine-tuning run is killed while its step-4 checkpoint is being written (BERTKIT_FAULT_SAVE_DELAY), then
  resumed with RLIMIT_FSIZE (1 MB) in the child and SIGXFSZ ignored, so its next checkpoint fails with EFBIG as on
  a full disk. Pass: exit code 2 with one line naming the checkpoint's path, the step-2 checkpoint still loads (its
  weights and trainer state), no temporary left; and a final `--resume` without the limit ends bit-identical.

One thread per process. Prints a table and a final PASS/FAIL line (exit code 0/1). The functions are used by
tests/test_outputs.py for one bounded trial of each kind.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("BERTKIT_DATA", ROOT.parent / "shared" / "data"))
WALL_CLOCK = ("time", "tokens_per_s")  # the only fields of metrics.jsonl a resumed run may change
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


# ---- the two runs ------------------------------------------------------------------------------------------------
def make_inputs(work: Path) -> dict[str, Path]:
    """A tiny model for fine-tuning, and a small corpus with its vocabulary for pre-training, under `work`."""
    from bertkit import BertConfig, BertModel, Tokenizer, packaged_model_dir
    from bertkit.vocab import learn_vocab

    tiny = work / "tiny"
    if not (tiny / "config.json").is_file():
        BertModel(BertConfig.named("tiny", max_position_embeddings=128)).save_pretrained(
            tiny, tokenizer=Tokenizer.from_pretrained(packaged_model_dir()))
    corpus = work / "corpus.txt"
    if not (work / "vocab" / "vocab.txt").is_file():
        with gzip.open(DATA / "nsmc" / "corpus.txt.gz", "rt", encoding="utf-8") as f, \
                open(corpus, "w", encoding="utf-8") as out:
            for i, line in enumerate(f):
                out.write(line)
                if i + 1 >= 3000:
                    break
        tok, _ = learn_vocab([corpus], size=1500, show_progress=False)
        tok.save(work / "vocab")
    return {"tiny": tiny, "corpus": corpus, "vocab": work / "vocab", "sst2": DATA / "glue" / "SST-2"}


def command(kind: str, inputs: dict[str, Path], out: Path) -> list[str]:
    if kind == "finetune":
        args = ["finetune", "--task", "sst2", "--model", str(inputs["tiny"]), "--data", str(inputs["sst2"]),
                "--epochs", "2", "--max-train-examples", "128", "--max-eval-examples", "64", "--batch-size", "16",
                "--max-length", "48", "--lr", "1e-3", "--save-every", "2"]
    else:
        args = ["pretrain", "--corpus", str(inputs["corpus"]), "--vocab", str(inputs["vocab"]), "--size", "tiny",
                "--max-seq-length", "64", "--batch-size", "8", "--steps", "16", "--lr", "5e-4", "--warmup", "2",
                "--log-every", "3", "--save-every", "2", "--eval-fraction", "0.05"]
    return [sys.executable, "-m", "bertkit.cli", *args, "--out", str(out), "--threads", "1"]


def run(cmd: list[str], kill_after: float | None = None, env: dict | None = None, limit_bytes: int = 0,
        kill_when=None) -> tuple[int | None, str]:
    """(exit code, or None when killed; stderr). Killed after `kill_after` seconds, or once `kill_when()` holds."""
    def child():
        if limit_bytes:  # a full disk: writes past the limit fail with EFBIG instead of killing the process
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, env=env or ENV, stdout=subprocess.DEVNULL, stderr=err, preexec_fn=child)
        start = time.perf_counter()
        while proc.poll() is None:
            if (kill_after is not None and time.perf_counter() - start >= kill_after) or (kill_when and kill_when()):
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                err.seek(0)
                return None, err.read().decode(errors="replace")
            time.sleep(0.01)
        err.seek(0)
        return proc.returncode, err.read().decode(errors="replace")


def reference(kind: str, inputs: dict[str, Path], work: Path) -> tuple[Path, float]:
    """The uninterrupted run and its wall time (start-up included)."""
    out = work / f"ref-{kind}"
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    code, err = run(command(kind, inputs, out))
    if code != 0:
        raise RuntimeError(f"reference {kind} run failed ({code}): {err[-2000:]}")
    return out, time.perf_counter() - start


# ---- comparisons -------------------------------------------------------------------------------------------------
def same_weights(a: Path, b: Path) -> bool:
    import torch
    from safetensors.torch import load_file

    x, y = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def metric_rows(out: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k not in WALL_CLOCK}
            for line in (out / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]


def leftovers(out: Path) -> list[str]:
    return sorted(p.name for p in (out / "checkpoints").glob(".tmp-step-*"))


@dataclass
class Trial:
    kind: str
    seed: int
    kills: list[float]  # seconds after each start at which a process was killed
    weights_equal: bool
    metrics_equal: bool
    temporaries: list[str]
    note: str = ""

    @property
    def ok(self) -> bool:
        return self.weights_equal and self.metrics_equal and not self.temporaries and not self.note


def kill_trial(kind: str, seed: int, inputs: dict[str, Path], ref: Path, wall: float, work: Path,
               first_kill: float | None = None) -> Trial:
    """Kill at a random moment (or at `first_kill` seconds), resume until a part finishes, compare with `ref`."""
    rng = random.Random(seed)
    out = work / f"{kind}-{seed}"
    kills: list[float] = []
    # A run can end a little sooner than the reference did: redraw until the kill lands before its end.
    at = first_kill if first_kill is not None else rng.uniform(0.0, wall)
    for draw in range(5):
        shutil.rmtree(out, ignore_errors=True)
        code, err = run(command(kind, inputs, out), kill_after=at)
        if code is None:
            break
        at = rng.uniform(0.0, at)
    else:
        return Trial(kind, seed, kills, False, False, [], "never killed: every draw came after the run's end")
    kills.append(round(at, 2))
    at = rng.uniform(0.0, wall) if rng.random() < 0.3 else None
    for attempt in range(1, 8):
        code, err = run(command(kind, inputs, out) + ["--resume"], kill_after=at)
        if code is None:
            kills.append(round(at, 2))
            at = rng.uniform(0.0, wall) if len(kills) < 3 and rng.random() < 0.3 else None
            continue
        if code != 0:
            return Trial(kind, seed, kills, False, False, [], f"part {attempt + 1} exited {code}: "
                                                             f"{err.strip().splitlines()[-1:]}")
        break
    return Trial(kind, seed, kills, same_weights(ref, out), metric_rows(ref) == metric_rows(out), leftovers(out))


def disk_full_trial(inputs: dict[str, Path], ref: Path, work: Path, finish: bool = True) -> Trial:
    """See the module docstring; `note` says what went wrong, empty when it held. `finish=False` skips the final
    resume and its comparison (the kill trials check resuming)."""
    import torch

    from bertkit.heads import BertForSequenceClassification
    from bertkit.train.loop import STATE, checkpoints

    out = work / "disk-full"
    shutil.rmtree(out, ignore_errors=True)
    cmd = command("finetune", inputs, out)
    code, err = run(cmd, env={**ENV, "BERTKIT_FAULT_SAVE_DELAY": "4:60"},
                    kill_when=lambda: any((out / "checkpoints").glob(".tmp-step-0000004-*/trainer_state.pt")))
    notes = []
    if code is not None:
        notes.append(f"the first part was not killed while saving step 4 ({code}): {err[-500:]}")
    code, err = run(cmd + ["--resume"], limit_bytes=1 << 20)
    lines = err.strip().splitlines()
    if code != 2 or not lines or "checkpoint not saved" not in lines[-1] or "step-0000004" not in lines[-1]:
        notes.append(f"full disk: exit {code}, expected 2 and one line naming the checkpoint: {lines[-3:]}")
    elif "Traceback" in err:
        notes.append("full disk: a traceback")
    found = checkpoints(out)
    if [p.name for p in found] != ["step-0000002"]:
        notes.append(f"checkpoints after the failed save: {[p.name for p in found]}")
    else:
        BertForSequenceClassification.from_pretrained(found[-1])  # the previous checkpoint still loads
        torch.load(found[-1] / STATE, weights_only=True)
    temporaries = leftovers(out)
    if not finish:
        return Trial("disk", 0, [], True, True, temporaries, "; ".join(notes))
    code, err = run(cmd + ["--resume"])
    if code != 0:
        notes.append(f"the resume after the full disk exited {code}: {err.strip().splitlines()[-1:]}")
        return Trial("disk", 0, [], False, False, temporaries, "; ".join(notes))
    return Trial("disk", 0, [], same_weights(ref, out), metric_rows(ref) == metric_rows(out), temporaries,
                 "; ".join(notes))


# ---- the table ---------------------------------------------------------------------------------------------------
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=20, help="kill trials per kind")
    ap.add_argument("--only", default="finetune,pretrain,disk")
    ap.add_argument("--seed", type=int, default=0, help="trial i uses seed + i")
    ap.add_argument("--workdir", help="where runs are written (default: a temporary directory, removed)")
    args = ap.parse_args()
    kinds = args.only.split(",")
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="bertkit-faults-"))
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    try:
        inputs = make_inputs(work)
        trials: list[Trial] = []
        refs = {}
        for kind in ("finetune", "pretrain"):
            if kind in kinds or (kind == "finetune" and "disk" in kinds):
                refs[kind] = reference(kind, inputs, work)
                print(f"reference {kind}: {refs[kind][1]:.1f} s", flush=True)
        print(f"{'kind':9} {'seed':>4}  {'killed at (s)':24} {'weights':8} {'metrics':8} {'temps':6} note", flush=True)
        for kind in ("finetune", "pretrain", "disk"):
            if kind not in kinds:
                continue
            for i in range(args.trials if kind != "disk" else 1):
                if kind == "disk":
                    t = disk_full_trial(inputs, refs["finetune"][0], work)
                else:
                    t = kill_trial(kind, args.seed + i, inputs, *refs[kind], work)
                trials.append(t)
                print(f"{t.kind:9} {t.seed:>4}  {','.join(map(str, t.kills)) or '-':24} "
                      f"{'equal' if t.weights_equal else 'DIFFER':8} {'equal' if t.metrics_equal else 'DIFFER':8} "
                      f"{len(t.temporaries):<6} {t.note}", flush=True)
                shutil.rmtree(work / f"{kind}-{t.seed}", ignore_errors=True)
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    failed = [t for t in trials if not t.ok]
    kills = sum(len(t.kills) for t in trials)
    print(f"{'PASS' if not failed else 'FAIL'}: {len(trials) - len(failed)}/{len(trials)} trials, {kills} kills, "
          f"{time.perf_counter() - started:.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
