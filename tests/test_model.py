"""Encoder and heads against transformers, through bertkit's own loader: real weights (all-MiniLM-L6-v2) on real
English and Korean text, and tiny random configs of every head in both directions. Pinned numbers keep the real-
weight test meaningful when transformers is not installed."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from bertkit import (BertConfig, BertForMaskedLM, BertForPreTraining, BertForQuestionAnswering,
                     BertForSequenceClassification, BertForTokenClassification, BertModel, Tokenizer)
from conftest import nsmc, sst2

TOL = dict(atol=1e-5, rtol=0)


def real(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The real-token rows: padded positions are zeros in bertkit and meaningless in the reference."""
    return x[mask.bool()]


# ---- real weights -------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def minilm(minilm_dir):
    return BertModel.from_pretrained(minilm_dir), Tokenizer.from_pretrained(minilm_dir)


def test_pinned_minilm_numbers(minilm):
    """Values from transformers 5.23 BertModel on these inputs (same to 1e-6 at the time of pinning)."""
    model, tok = minilm
    batch = tok.batch(["The quick brown fox jumps over the lazy dog.", "한국어 문장도 잘 처리됩니다."])
    assert batch["input_ids"][0, :6].tolist() == [101, 1996, 4248, 2829, 4419, 14523]
    with torch.inference_mode():
        out = model(**batch)
    assert_close(out.last_hidden_state[0, 0, :4], torch.tensor([0.046444, 0.338062, 0.208206, 0.646797]),
                 atol=1e-5, rtol=0)
    assert_close(out.last_hidden_state[1, 3, :4], torch.tensor([-0.010219, 0.268708, 0.182373, -0.004741]),
                 atol=1e-5, rtol=0)
    assert_close(out.pooler_output[0, :4], torch.tensor([-0.066271, 0.028093, 0.070613, 0.116599]),
                 atol=1e-5, rtol=0)


def check_minilm_on_real_batches(texts, minilm, minilm_dir):
    transformers = pytest.importorskip("transformers")
    model, tok = minilm
    ref = transformers.BertModel.from_pretrained(str(minilm_dir), attn_implementation="sdpa").eval()
    worst_h = worst_p = 0.0
    with torch.inference_mode():
        for i in range(0, len(texts), 32):
            batch = tok.batch(texts[i:i + 32], max_length=128)
            assert (batch["attention_mask"] == 0).any()  # padded batches
            ours, theirs = model(**batch), ref(**batch)
            mask = batch["attention_mask"]
            worst_h = max(worst_h, (real(ours.last_hidden_state, mask) - real(theirs.last_hidden_state, mask))
                          .abs().max().item())
            worst_p = max(worst_p, (ours.pooler_output - theirs.pooler_output).abs().max().item())
    assert worst_h <= 1e-5 and worst_p <= 1e-5, (worst_h, worst_p)


@pytest.mark.parametrize("source", ["sst2", "nsmc"])
def test_minilm_matches_transformers_on_padded_real_batches(source, minilm, minilm_dir):
    check_minilm_on_real_batches((sst2("dev") if source == "sst2" else nsmc("test"))[:256], minilm, minilm_dir)


@pytest.mark.slow
@pytest.mark.parametrize("source", ["sst2", "nsmc"])
def test_minilm_matches_transformers_on_all_real_batches(source, minilm, minilm_dir):
    """All of SST-2 dev (872) and the first 5,000 NSMC test reviews."""
    check_minilm_on_real_batches(sst2("dev") if source == "sst2" else nsmc("test")[:5000], minilm, minilm_dir)


def test_hidden_states_match_reference(minilm, minilm_dir):
    transformers = pytest.importorskip("transformers")
    model, tok = minilm
    ref = transformers.BertModel.from_pretrained(str(minilm_dir)).eval()
    batch = tok.batch(["a short one", "and a rather longer second sentence for padding"])
    with torch.inference_mode():
        ours = model(**batch, output_hidden_states=True)
        theirs = ref(**batch, output_hidden_states=True)
    assert len(ours.hidden_states) == len(theirs.hidden_states) == 7  # embeddings + 6 layers
    for a, b in zip(ours.hidden_states, theirs.hidden_states):
        assert_close(real(a, batch["attention_mask"]), real(b, batch["attention_mask"]), **TOL)
    assert_close(ours.hidden_states[-1], ours.last_hidden_state)


def test_padding_does_not_change_real_tokens(minilm):
    model, tok = minilm
    alone = tok.batch(["padding must not leak into real tokens"])
    together = tok.batch(["padding must not leak into real tokens", "x " * 40])
    with torch.inference_mode():
        a, b = model(**alone), model(**together)
    n = alone["input_ids"].shape[1]
    assert_close(a.last_hidden_state[0], b.last_hidden_state[0, :n], **TOL)
    assert_close(b.last_hidden_state[0, n:], torch.zeros_like(b.last_hidden_state[0, n:]))


def test_input_errors(minilm):
    model, _ = minilm
    with pytest.raises(ValueError, match="exceeds max_position_embeddings 512"):
        model(torch.zeros(1, 513, dtype=torch.long))
    with pytest.raises(ValueError, match="vocab_size=30522"):
        model(torch.tensor([[101, 30522, 102]]))
    with pytest.raises(ValueError, match="attention_mask: shape"):
        model(torch.tensor([[101, 102]]), attention_mask=torch.ones(1, 3))
    with pytest.raises(ValueError, match="no real token"):
        model(torch.tensor([[101, 102]]), attention_mask=torch.tensor([[0, 0]]))
    with pytest.raises(ValueError, match=r"expected shape \(batch, seq\)"):
        model(torch.tensor([101, 102]))


# ---- tiny random configs, every head, both directions ------------------------------------------------------------
TINY = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
            max_position_embeddings=64, type_vocab_size=2, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
HEADS = {
    "BertModel": BertModel,
    "BertForPreTraining": BertForPreTraining,
    "BertForMaskedLM": BertForMaskedLM,
    "BertForSequenceClassification": BertForSequenceClassification,
    "regression": BertForSequenceClassification,
    "BertForTokenClassification": BertForTokenClassification,
    "BertForQuestionAnswering": BertForQuestionAnswering,
}


def tiny_inputs(B=3, T=11):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, 99, (B, T), generator=g)
    mask = torch.ones(B, T, dtype=torch.long)
    mask[1, 7:] = 0
    mask[2, 4:] = 0
    types = torch.zeros(B, T, dtype=torch.long)
    types[:, 5:] = 1
    labels = {
        "BertModel": {},
        "BertForPreTraining": {"labels": torch.where(torch.rand(B, T, generator=g) < 0.3, ids, -100)
                               .masked_fill(mask == 0, -100), "next_sentence_label": torch.tensor([0, 1, 1])},
        "BertForMaskedLM": {"labels": torch.where(torch.rand(B, T, generator=g) < 0.3, ids, -100)
                            .masked_fill(mask == 0, -100)},
        "BertForSequenceClassification": {"labels": torch.tensor([0, 2, 1])},
        "regression": {"labels": torch.tensor([0.5, -1.0, 2.0])},
        "BertForTokenClassification": {"labels": torch.randint(0, 3, (B, T), generator=g).masked_fill(mask == 0,
                                                                                                        -100)},
        "BertForQuestionAnswering": {"start_positions": torch.tensor([1, 2, 30]),
                                     "end_positions": torch.tensor([3, 5, 2])},
    }
    return dict(input_ids=ids, attention_mask=mask, token_type_ids=types), labels


def config_for(name: str) -> BertConfig:
    num_labels = {"regression": 1, "BertForSequenceClassification": 3, "BertForTokenClassification": 3}.get(name)
    cfg = BertConfig(**TINY)
    if num_labels:
        cfg.num_labels = num_labels
    return cfg


def compare_outputs(name: str, ours, theirs, mask: torch.Tensor, labels: dict):
    if name == "BertModel":
        assert_close(real(ours.last_hidden_state, mask), real(theirs.last_hidden_state, mask), **TOL)
        assert_close(ours.pooler_output, theirs.pooler_output, **TOL)
        return
    if name in ("BertForPreTraining", "BertForMaskedLM"):
        ref_logits = theirs.prediction_logits if name == "BertForPreTraining" else theirs.logits
        if labels:  # bertkit projects masked positions only
            assert_close(ours.logits, ref_logits[labels["labels"] != -100], **TOL)
        else:
            assert_close(real(ours.logits, mask), real(ref_logits, mask), **TOL)
        if name == "BertForPreTraining":
            assert_close(ours.seq_relationship_logits, theirs.seq_relationship_logits, **TOL)
    elif name == "BertForTokenClassification":
        assert_close(real(ours.logits, mask), real(theirs.logits, mask), **TOL)
    elif name == "BertForQuestionAnswering":
        assert_close(real(ours.start_logits, mask), real(theirs.start_logits, mask), **TOL)
        assert_close(real(ours.end_logits, mask), real(theirs.end_logits, mask), **TOL)
    else:
        assert_close(ours.logits, theirs.logits, **TOL)
    if labels and name == "BertForQuestionAnswering":  # bertkit's softmax runs over real tokens only
        T = mask.shape[1]
        s, e = (labels[k].clamp(0, T) for k in ("start_positions", "end_positions"))
        ref_s, ref_e = (x.masked_fill(mask == 0, -1e4) for x in (theirs.start_logits, theirs.end_logits))
        expected = (torch.nn.functional.cross_entropy(ref_s, s, ignore_index=T)
                    + torch.nn.functional.cross_entropy(ref_e, e, ignore_index=T)) / 2
        assert_close(ours.loss, expected, **TOL)
    elif labels:
        assert_close(ours.loss, theirs.loss, **TOL)


def hf_class(transformers, name: str):
    return getattr(transformers, "BertForSequenceClassification" if name == "regression" else name)


@pytest.mark.parametrize("name", list(HEADS))
def test_hf_to_bertkit(name, tmp_path):
    transformers = pytest.importorskip("transformers")
    cfg = config_for(name)
    ref = hf_class(transformers, name)(transformers.BertConfig(**cfg.to_dict())).eval()
    with torch.no_grad():  # random biases and LayerNorms too, so that nothing matches by accident
        for p in ref.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    ref.save_pretrained(tmp_path)
    ours = HEADS[name].from_pretrained(tmp_path)
    assert ours.load_report.newly_initialized == [] and ours.load_report.unused == []
    inputs, labels = tiny_inputs()
    with torch.no_grad():
        for with_labels in (False, True):
            extra = labels[name] if with_labels else {}
            compare_outputs(name, ours(**inputs, **extra), ref(**inputs, **extra), inputs["attention_mask"], extra)


@pytest.mark.parametrize("name", list(HEADS))
def test_bertkit_to_hf(name, tmp_path):
    transformers = pytest.importorskip("transformers")
    ours = HEADS[name](config_for(name)).eval()
    with torch.no_grad():
        for p in ours.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    ours.save_pretrained(tmp_path)
    ref, info = hf_class(transformers, name).from_pretrained(str(tmp_path), output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    ref.eval()
    inputs, labels = tiny_inputs()
    with torch.no_grad():
        extra = labels[name]
        compare_outputs(name, ours(**inputs, **extra), ref(**inputs, **extra), inputs["attention_mask"], extra)


@pytest.mark.parametrize("name", [n for n in HEADS if n != "regression"])
def test_parameter_names_are_the_hf_key_set(name):
    transformers = pytest.importorskip("transformers")
    cfg = config_for(name)
    ref = hf_class(transformers, name)(transformers.BertConfig(**cfg.to_dict()))
    assert set(HEADS[name](cfg).state_dict()) == set(ref.state_dict())


def test_mlm_decoder_is_tied_to_embeddings():
    model = BertForPreTraining(BertConfig(**TINY))
    assert model.cls.predictions.decoder.weight is model.bert.embeddings.word_embeddings.weight
    assert model.cls.predictions.decoder.bias is model.cls.predictions.bias


def test_training_mode_backward_reaches_every_parameter():
    cfg = BertConfig(**{**TINY, "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1})
    model = BertForPreTraining(cfg).train()
    inputs, labels = tiny_inputs()
    out = model(**inputs, **labels["BertForPreTraining"])
    out.loss.backward()
    assert torch.isfinite(out.loss)
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, missing


def test_named_sizes():
    expected = {"tiny": (2, 128, 2), "mini": (4, 256, 4), "small": (4, 512, 8), "medium": (8, 512, 8),
                "base": (12, 768, 12), "large": (24, 1024, 16)}
    for size, (layers, hidden, heads) in expected.items():
        cfg = BertConfig.named(size)
        assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads, cfg.intermediate_size) == \
            (layers, hidden, heads, 4 * hidden)
    base = BertModel(BertConfig.named("base"))
    assert sum(p.numel() for p in base.parameters()) == BertConfig.named("base").num_parameters() == 109_482_240
