"""The training loop through the pre-training recipe: exact resume after SIGKILL mid-checkpoint, DDP with two
processes equal to one, accumulation equal to a big batch, and the outputs transformers reads."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from bertkit.checkpoint import CheckpointError
from bertkit.cli import main
from bertkit.train.loop import checkpoints
from bertkit.train.plot import read_metrics
from bertkit.train.pretrain import PretrainConfig, run_pretrain

ROOT = Path(__file__).resolve().parents[1]


def config(corpus: Path, out: Path, **train) -> PretrainConfig:
    return PretrainConfig.from_dict({
        "corpus": [str(corpus / "corpus.txt")], "vocab": str(corpus / "vocab"), "out": str(out), "size": "tiny",
        "max_seq_length": 64, "batch_size": 8, "eval_instances": 64, "eval_fraction": 0.05,
        "train": {"steps": 12, "lr": 5e-4, "warmup": 2, "log_every": 1, "save_every": 4, "threads": 1, **train},
    })


def losses(out: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_metrics(out / "metrics.jsonl") if r["split"] == "train"}


def cli_args(cfg: PretrainConfig) -> list[str]:
    return ["pretrain", "--corpus", *cfg.corpus, "--vocab", cfg.vocab, "--out", cfg.out, "--size", cfg.size,
            "--max-seq-length", str(cfg.max_seq_length), "--batch-size", str(cfg.batch_size),
            "--steps", str(cfg.train.steps), "--lr", str(cfg.train.lr), "--warmup", str(cfg.train.warmup),
            "--log-every", "1", "--save-every", str(cfg.train.save_every), "--threads", "1",
            "--eval-fraction", str(cfg.eval_fraction)]


def test_sigkill_while_saving_then_resume_continues_the_same_curve(small_corpus, tmp_path):
    reference = config(small_corpus, tmp_path / "ref")
    run_pretrain(reference, show_progress=False)
    expected = losses(tmp_path / "ref")
    assert sorted(expected) == list(range(1, 13))

    crashed = config(small_corpus, tmp_path / "crash")
    env = {**os.environ, "BERTKIT_FAULT_SAVE_DELAY": "8:60", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "bertkit.cli", *cli_args(crashed)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    partial = []
    while time.time() < deadline and not partial:  # wait until step 8's checkpoint is being written
        partial = list((tmp_path / "crash" / "checkpoints").glob(".tmp-step-0000008-*/trainer_state.pt"))
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert partial, proc.stderr.read().decode()[-2000:]

    found = checkpoints(tmp_path / "crash")
    assert [p.name for p in found] == ["step-0000004"]  # the half-written step 8 is not a checkpoint
    from bertkit.heads import BertForPreTraining
    BertForPreTraining.from_pretrained(found[-1])  # and the previous one still loads
    assert main(cli_args(crashed) + ["--resume"]) == 0
    got = losses(tmp_path / "crash")
    assert sorted(got) == list(range(1, 13))
    for step in range(1, 13):
        assert got[step] == pytest.approx(expected[step], abs=1e-6), step
    assert [p.name for p in checkpoints(tmp_path / "crash")] == ["step-0000008", "step-0000012"]
    # the interrupted save's temporary directory (a full checkpoint's size) was left forever; resuming removes it
    assert list((tmp_path / "crash" / "checkpoints").glob(".tmp-step-*")) == []


def test_outputs_load_in_transformers_and_curves_exist(small_corpus, tmp_path):
    transformers = pytest.importorskip("transformers")
    cfg = config(small_corpus, tmp_path / "run", steps=4, save_every=0)
    result = run_pretrain(cfg, show_progress=False)
    assert {"mlm_loss", "mlm_accuracy", "nsp_accuracy"} <= set(result)
    out = tmp_path / "run"
    assert (out / "metrics.png").stat().st_size > 1000
    ref, info = transformers.BertForPreTraining.from_pretrained(str(out), output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    tok = transformers.AutoTokenizer.from_pretrained(str(out))
    assert tok("영화가 재미있다")["input_ids"][0] == 2  # [CLS] of the learned vocabulary


def test_accumulation_equals_one_big_batch(small_corpus, tmp_path):
    # on the CPU in fp32, where the sums agree to rounding (a GPU's bf16 autocast would not)
    a = config(small_corpus, tmp_path / "a", steps=3, save_every=0, device="cpu")
    b = config(small_corpus, tmp_path / "b", steps=3, save_every=0, grad_accum=4, device="cpu")
    a.model_overrides = b.model_overrides = {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
    run_pretrain(a, show_progress=False)
    run_pretrain(b, show_progress=False)
    la, lb = losses(tmp_path / "a"), losses(tmp_path / "b")
    for step in (1, 2, 3):
        assert la[step] == pytest.approx(lb[step], abs=1e-5)


def test_two_process_ddp_equals_one_process(small_corpus, tmp_path):
    from safetensors.torch import load_file

    # both on the CPU: two ranks on a one-GPU machine run there too (setup_env: a GPU per process, or none)
    single = config(small_corpus, tmp_path / "single", steps=3, save_every=0, device="cpu")
    single.model_overrides = {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
    run_pretrain(single, show_progress=False)
    (tmp_path / "ddp.json").write_text(json.dumps({"model_overrides": single.model_overrides}))
    ddp = config(small_corpus, tmp_path / "ddp", steps=3, save_every=0)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "--master_port", "29517", "-m", "bertkit.cli", *cli_args(ddp), "--config",
                           str(tmp_path / "ddp.json")], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    la, lb = losses(tmp_path / "single"), losses(tmp_path / "ddp")
    for step in (1, 2, 3):
        assert la[step] == pytest.approx(lb[step], abs=1e-5)
    wa, wb = load_file(tmp_path / "single" / "model.safetensors"), load_file(tmp_path / "ddp" / "model.safetensors")
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], atol=1e-5, rtol=1e-4)


def test_device_choice_is_checked(monkeypatch):
    from bertkit.train.loop import setup_env

    assert setup_env("cpu").device.type == "cpu"
    with pytest.raises(ValueError, match="device 'tpu': choose auto, cpu or cuda"):
        setup_env("tpu")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "64")  # more processes on this node than any machine here has GPUs
    with pytest.raises(ValueError, match="64 process\\(es\\) on this node need as many GPUs"):
        setup_env("cuda")
    assert setup_env("auto").device.type == "cpu"


def test_damaged_trainer_state_is_named(small_corpus, tmp_path):
    cfg = config(small_corpus, tmp_path / "run", steps=4, save_every=2)
    run_pretrain(cfg, show_progress=False)
    state = checkpoints(tmp_path / "run")[-1] / "trainer_state.pt"
    state.write_bytes(state.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="step-0000004/trainer_state.pt: not a readable trainer state"):
        run_pretrain(cfg, resume=True, show_progress=False)


def test_pretrain_resume_with_other_flags_is_refused_naming_them(small_corpus, tmp_path):
    """A resume with another learning rate or step count silently continued a schedule it did not start."""
    cfg = config(small_corpus, tmp_path / "run", steps=2, save_every=2)
    run_pretrain(cfg, show_progress=False)
    cfg.train.lr, cfg.train.steps, cfg.train.threads = 1e-3, 4, 2  # threads may change between parts
    with pytest.raises(ValueError, match=r"pretrain_config.json: --resume with a different config "
                                         r"\(train.lr: 0.0005 -> 0.001, train.steps: 2 -> 4\)"):
        run_pretrain(cfg, resume=True, show_progress=False)


def test_bf16_autocast_runs_on_cpu_when_asked(small_corpus, tmp_path):
    """`bf16: on` forces autocast (CPUs without AMX are slower in bf16, so `auto` keeps fp32 there)."""
    cfg = config(small_corpus, tmp_path / "bf16", steps=2, save_every=0, bf16="on")
    run_pretrain(cfg, show_progress=False)
    got = losses(tmp_path / "bf16")
    assert all(0 < v < 20 for v in got.values())
    from safetensors.torch import load_file
    assert load_file(tmp_path / "bf16" / "model.safetensors")["cls.predictions.bias"].dtype == torch.float32


def test_release_freed_memory_hands_fragmented_heap_back():
    """Freed blocks below a live one stay in the process until malloc_trim: what made fine-tuning grow to 20 GB."""
    from bertkit.train.loop import glibc, release_freed_memory

    if glibc() is None or not Path("/proc/self/status").exists():
        pytest.skip("no glibc malloc_trim or no /proc here")
    release_freed_memory()  # start from a trimmed heap

    def rss_mb() -> float:
        line = next(ln for ln in Path("/proc/self/status").read_text().splitlines() if ln.startswith("VmRSS"))
        return int(line.split()[1]) / 1024

    blocks = [torch.ones(16_000) for _ in range(8_000)]  # 64 kB each, from the heap (below the mmap threshold)
    keep = torch.ones(16_000)  # allocated last: the heap cannot shrink from its top
    del blocks
    before = rss_mb()
    assert release_freed_memory()
    assert before - rss_mb() > 200, (before, rss_mb())  # ~500 MB were freed inside the heap
    del keep
