"""CUDA paths, where a GPU is present (skipped elsewhere: the suite never needs one). The encoder on the GPU equals
the CPU one in fp32 and stays close under bf16 autocast; pre-training on the GPU (bf16 autocast chosen by `auto`)
learns, keeps fp32 weights, and resumes from a checkpoint on the same curve."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from test_train import config, losses

from bertkit import BertConfig, BertForPreTraining
from bertkit.train.pretrain import run_pretrain

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here (CUDA paths only)")


def batch(cfg: BertConfig, device: str) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, cfg.vocab_size, (4, 48), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 30:] = mask[3, 7:] = 0  # padding, which the encoder must not compute on
    labels = torch.full_like(ids, -100)
    labels[:, 3:9] = ids[:, 3:9]
    inputs = {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids), "labels": labels,
              "next_sentence_label": torch.tensor([0, 1, 0, 1])}
    return {k: v.to(device) for k, v in inputs.items()}


def test_encoder_on_gpu_equals_cpu_and_bf16_stays_close():
    torch.backends.cuda.matmul.allow_tf32 = False
    cfg = BertConfig.named("mini", vocab_size=3000)
    cpu = BertForPreTraining(cfg).eval()
    gpu = BertForPreTraining(cfg).eval()
    gpu.load_state_dict(cpu.state_dict())
    gpu.cuda()
    with torch.no_grad():
        a = cpu(**batch(cfg, "cpu"))
        b = gpu(**batch(cfg, "cuda"))
        with torch.autocast("cuda", dtype=torch.bfloat16):
            c = gpu(**batch(cfg, "cuda"))
    torch.testing.assert_close(b.loss.cpu(), a.loss, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(b.logits.cpu(), a.logits, atol=1e-3, rtol=1e-3)
    assert abs(float(c.loss) - float(a.loss)) < 0.05 * float(a.loss)


def test_pretraining_on_gpu_learns_in_bf16_and_resumes_on_the_same_curve(small_corpus, tmp_path):
    from safetensors.torch import load_file

    ref = config(small_corpus, tmp_path / "ref", steps=12, save_every=4, keep_checkpoints=3)
    run_pretrain(ref, show_progress=False)
    expected = losses(tmp_path / "ref")
    assert expected[12] < expected[1]
    weights = load_file(tmp_path / "ref" / "model.safetensors")
    assert all(v.dtype == torch.float32 and v.device.type == "cpu" for v in weights.values())

    # a copy of the run as it stood after step 4's checkpoint, resumed to the end
    res = tmp_path / "res"
    shutil.copytree(tmp_path / "ref", res)
    for later in ("step-0000008", "step-0000012"):
        shutil.rmtree(res / "checkpoints" / later)
    metrics = (res / "metrics.jsonl").read_text().splitlines()
    (res / "metrics.jsonl").write_text("".join(m + "\n" for m in metrics if json.loads(m)["step"] <= 4))
    resumed = config(small_corpus, res, steps=12, save_every=4, keep_checkpoints=3)
    run_pretrain(resumed, resume=True, show_progress=False)
    got = losses(res)
    assert sorted(got) == list(range(1, 13))
    for step in range(5, 13):
        assert got[step] == pytest.approx(expected[step], rel=2e-3)
