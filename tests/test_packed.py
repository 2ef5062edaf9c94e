"""Linear weights packed for oneDNN at load (`bertkit.infer.packed`): the same model, the same names, the same
numbers, and training still works through it."""

from __future__ import annotations

import pytest
import torch

from bertkit import BertConfig, BertForSequenceClassification
from bertkit.infer.packed import PackedIntermediate, PackedLinear, PackedSelfAttention, available, pack_linears
from bertkit.infer.predictor import Predictor, PredictorSettings

pytestmark = pytest.mark.skipif(not available(), reason="this PyTorch build has no oneDNN packed linear")


def tiny() -> BertForSequenceClassification:
    torch.manual_seed(0)
    return BertForSequenceClassification(BertConfig.named("tiny", max_position_embeddings=64)).eval()


def batch():
    ids = torch.randint(5, 1000, (3, 12))
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    return ids, mask, torch.zeros_like(ids)


def test_packing_keeps_names_values_and_outputs():
    plain, packed = tiny(), pack_linears(tiny())
    kinds = {type(m) for m in packed.modules()}
    assert {PackedLinear, PackedSelfAttention, PackedIntermediate} <= kinds
    a, b = plain.state_dict(), packed.state_dict()
    assert list(a) == list(b)  # the packed copies are not saved
    assert all(torch.equal(a[k], b[k]) for k in a)
    inputs = batch()
    with torch.inference_mode():
        torch.testing.assert_close(packed(*inputs).logits, plain(*inputs).logits, atol=1e-5, rtol=0)
        torch.testing.assert_close(packed.bert(*inputs).last_hidden_state, plain.bert(*inputs).last_hidden_state,
                                   atol=1e-5, rtol=0)


def test_a_weight_changed_after_packing_is_packed_again():
    plain, packed = tiny(), pack_linears(tiny())
    inputs = batch()
    for model in (plain, packed):
        with torch.no_grad():
            model.classifier.weight.mul_(3.0)
            model.bert.encoder.layer[0].intermediate.dense.weight.add_(0.01)
            model.bert.encoder.layer[1].attention.self.value.bias.add_(0.5)
    with torch.inference_mode():
        torch.testing.assert_close(packed(*inputs).logits, plain(*inputs).logits, atol=1e-5, rtol=0)


def test_training_through_a_packed_model_gets_gradients():
    plain, packed = tiny(), pack_linears(tiny())  # eval mode: no dropout, so the two runs compare exactly
    inputs = batch()
    for model in (plain, packed):
        model(*inputs).logits.sum().backward()
    dense = "bert.encoder.layer.0.intermediate.dense.weight"
    grads = {name: dict(m.named_parameters())[dense].grad for name, m in (("plain", plain), ("packed", packed))}
    assert grads["packed"] is not None
    torch.testing.assert_close(grads["packed"], grads["plain"], atol=1e-5, rtol=0)


def test_from_pretrained_packs_fp32_and_not_int8(tmp_path, minilm_dir):
    from bertkit import Tokenizer

    tiny().save_pretrained(tmp_path / "m", tokenizer=Tokenizer.from_pretrained(minilm_dir))
    fp32 = Predictor.from_pretrained(tmp_path / "m", PredictorSettings(backend="torch"))
    int8 = Predictor.from_pretrained(tmp_path / "m", PredictorSettings(backend="torch", int8=True))
    assert any(isinstance(m, PackedLinear) for m in fp32.model.modules())
    assert not any(isinstance(m, PackedLinear) for m in int8.model.modules())
    texts = ["a short one", "and a somewhat longer sentence than the first"]
    plain = Predictor(tiny(), fp32.tok)
    for got, want in zip(fp32.classify(texts), plain.classify(texts)):
        assert got["label"] == want["label"]
        for label, p in want["probs"].items():
            assert abs(got["probs"][label] - p) < 1e-5


def test_a_packed_model_copies_converts_and_pickles():
    import copy
    import io

    plain, packed = tiny(), pack_linears(tiny())
    inputs = batch()
    copied = copy.deepcopy(packed)
    buffer = io.BytesIO()
    torch.save(packed, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    round_trip = copy.deepcopy(packed).double().float()  # new weight tensors: the packed copy must follow them
    with torch.no_grad():
        plain.double().float()
    with torch.inference_mode():
        want = plain(*inputs).logits
        for model in (copied, loaded, round_trip, packed):
            torch.testing.assert_close(model(*inputs).logits, want, atol=1e-5, rtol=0)


def test_a_packed_model_in_a_bulk_job_stays_off_onednn(monkeypatch):
    """Bulk jobs on PyTorch run inside `without_onednn()` because oneDNN keeps state per input shape (a packed
    MiniLM over 200 batches of lengths 4-120 grew from 685 to 1,029 MB, the plain one stayed at 563). The packed
    products called oneDNN directly, past that switch: now they take `F.linear` while it is off, same outputs."""
    from bertkit.infer.batchio import without_onednn

    plain, packed = tiny(), pack_linears(tiny())
    inputs = batch()

    def refuse(*args):
        raise AssertionError("oneDNN's packed linear ran inside without_onednn()")

    monkeypatch.setattr(torch.ops.mkldnn, "_linear_pointwise", refuse)
    with torch.inference_mode(), without_onednn():
        torch.testing.assert_close(packed(*inputs).logits, plain(*inputs).logits, atol=1e-5, rtol=0)


def test_a_server_seeing_new_row_counts_keeps_bounded_memory():
    """A server's packed products see a new row count with nearly every request, and oneDNN compiles and keeps
    kernels per shape in two caches of 1,024 entries by default: a MiniLM classifier grew from 530 MB to 2.4 GB
    over 1,000 requests of new shapes (benchmarks/memory.py --serve). Packing bounds the caches first; here one
    packed Linear over 400 new row counts in a fresh process (the caches are per process), memory from the 200th
    to the 400th: with 1,024 entries it grew 115 MB, with 64 it stays within 0.1 MB."""
    import subprocess
    import sys

    code = """
import torch
from torch import nn
from bertkit.infer.packed import pack_linears
torch.set_num_threads(2)
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20
m = pack_linears(nn.Sequential(nn.Linear(384, 1536)))
with torch.inference_mode():
    for rows in range(1, 401):
        m(torch.randn(rows, 384))
        if rows == 200:
            start = rss()
print(rss() - start)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    grew = float(out.stdout.strip().splitlines()[-1])
    assert grew < 30, f"resident memory grew {grew:.0f} MB over 200 new row counts"
