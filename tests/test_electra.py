"""ELECTRA's replaced-token detection: the discriminator head against transformers' ElectraForPreTraining, and the
recipe over the one loop (exact resume, the two saved networks, fine-tuning from the discriminator)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.testing import assert_close

from bertkit import BertConfig, BertForReplacedTokenDetection, BertForSequenceClassification
from bertkit.heads import IGNORE
from bertkit.train.plot import read_metrics
from bertkit.train.pretrain import PretrainConfig, generator_config, run_pretrain
from test_train import config as train_config

TOL = dict(atol=1e-5, rtol=1e-4)


def test_discriminator_matches_transformers_electra():
    transformers = pytest.importorskip("transformers")
    cfg = BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
                     max_position_embeddings=64)
    torch.manual_seed(0)
    ours = BertForReplacedTokenDetection(cfg).eval()
    with torch.no_grad():  # random biases and LayerNorms too, so that nothing matches by accident
        for p in ours.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    ref_cfg = transformers.ElectraConfig(**{k: v for k, v in cfg.to_dict().items() if k != "model_type"},
                                         embedding_size=cfg.hidden_size)
    ref = transformers.ElectraForPreTraining(ref_cfg).eval()
    missing, unexpected = ref.load_state_dict({k.replace("bert.", "electra.", 1): v
                                               for k, v in ours.state_dict().items()}, strict=False)
    assert not unexpected and all("position_ids" in k or "token_type_ids" in k for k in missing)
    ids = torch.randint(5, 99, (3, 11), generator=torch.Generator().manual_seed(1))
    mask = torch.ones(3, 11, dtype=torch.long)
    mask[1, 6:] = 0
    labels = torch.randint(0, 2, (3, 11), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        o = ours(ids, mask, labels=labels)
        r = ref(input_ids=ids, attention_mask=mask, labels=labels)
    assert_close(o.logits, r.logits[mask.bool()], **TOL)
    assert_close(o.loss, r.loss, **TOL)
    ignored = labels.masked_fill(torch.arange(11) < 2, IGNORE)  # ignored positions take no part
    with torch.no_grad():
        assert ours(ids, mask, labels=ignored).logits.shape[0] == int((mask.bool() & (ignored != IGNORE)).sum())


def test_generator_is_a_quarter_as_wide():
    g = generator_config(BertConfig.named("mini", vocab_size=8000), {})
    assert (g.hidden_size, g.num_attention_heads, g.intermediate_size, g.num_hidden_layers) == (64, 1, 256, 4)
    assert generator_config(BertConfig.named("base"), {"num_hidden_layers": 6}).hidden_size == 192


def config(corpus: Path, out: Path, **train) -> PretrainConfig:
    cfg = train_config(corpus, out, **{"steps": 6, "save_every": 3, **train})
    cfg.objective = "electra"
    return cfg


def test_electra_recipe_is_deterministic_and_saves_both_networks(small_corpus, tmp_path):
    transformers = pytest.importorskip("transformers")
    result = run_pretrain(config(small_corpus, tmp_path / "ref"), show_progress=False)
    assert {"mlm_loss", "rtd_loss", "rtd_accuracy", "replaced_fraction"} <= set(result)
    assert 0.05 < result["replaced_fraction"] < 0.2  # 15 % masked, minus what the generator guessed right
    ref_rows = {r["step"]: r["loss"] for r in read_metrics(tmp_path / "ref" / "metrics.jsonl") if r["split"] == "train"}

    again = config(small_corpus, tmp_path / "again")
    run_pretrain(again, show_progress=False)
    rows = {r["step"]: r["loss"] for r in read_metrics(tmp_path / "again" / "metrics.jsonl") if r["split"] == "train"}
    assert rows == pytest.approx(ref_rows, abs=1e-6)  # the generator's samples are a function of the step

    out = tmp_path / "ref"
    assert (out / "generator" / "model.safetensors").is_file()
    enc, info = transformers.BertModel.from_pretrained(str(out), output_loading_info=True)
    assert not info["missing_keys"] or all("pooler" in k for k in info["missing_keys"])
    gen, info = transformers.BertForMaskedLM.from_pretrained(str(out / "generator"), output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    clf = BertForSequenceClassification.from_pretrained(out, num_labels=2)
    assert any(k.startswith("discriminator_predictions.") for k in clf.load_report.unused)
    assert "bert.pooler.dense.weight" in clf.load_report.newly_initialized


def test_electra_resume_after_a_checkpoint_is_exact(small_corpus, tmp_path):
    from safetensors.torch import load_file

    full = config(small_corpus, tmp_path / "full", save_every=0)
    run_pretrain(full, show_progress=False)
    part = config(small_corpus, tmp_path / "part")
    run_pretrain(part, show_progress=False)
    # drop everything after step 3 and continue from its checkpoint
    import shutil

    shutil.rmtree(tmp_path / "part" / "checkpoints" / "step-0000006")
    run_pretrain(part, resume=True, show_progress=False)
    a = load_file(str(tmp_path / "full" / "model.safetensors"))
    b = load_file(str(tmp_path / "part" / "model.safetensors"))
    for k in a:
        assert torch.equal(a[k], b[k]), k
    a = load_file(str(tmp_path / "full" / "generator" / "model.safetensors"))
    b = load_file(str(tmp_path / "part" / "generator" / "model.safetensors"))
    for k in a:
        assert torch.equal(a[k], b[k]), k
