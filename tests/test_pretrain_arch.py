"""`bertkit pretrain --arch roberta|electra|albert`: each writes its family's HF directory, which transformers
loads with no missing or unexpected key and the same outputs, bertkit loads back, and fine-tuning starts from;
the sentence-order data of ALBERT; how --arch and --objective relate."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.testing import assert_close

from bertkit import BertForSequenceClassification
from bertkit.data.corpus import read_documents
from bertkit.data.pretraining import InstanceConfig, ShardSet, build_shards
from bertkit.heads import BertForMaskedLM, BertForPreTraining, BertForReplacedTokenDetection, load_model
from bertkit.tokenizer import Tokenizer
from bertkit.train.pretrain import PretrainConfig, resolve_objective, run_pretrain
from test_train import config as train_config

TOL = dict(atol=1e-5, rtol=1e-5)
WIDER = {"hidden_size": 256, "num_attention_heads": 4, "intermediate_size": 512}  # embeddings (128) narrower


def run(corpus: Path, out: Path, arch: str, overrides: dict | None = None, **train) -> dict:
    cfg = train_config(corpus, out, **{"steps": 3, "save_every": 0, **train})
    cfg.arch, cfg.model_overrides = arch, overrides or {}
    return run_pretrain(cfg, show_progress=False)


def a_batch(directory: Path) -> tuple[torch.Tensor, torch.Tensor]:
    tok = Tokenizer.from_pretrained(directory)
    enc = tok.encode_batch(["영화가 정말 재미있었다", "별로였다 시간 아까움 다시는 안 본다"])
    T = max(len(e.ids) for e in enc)
    ids = torch.full((len(enc), T), tok.pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, e in enumerate(enc):
        ids[i, :len(e.ids)], mask[i, :len(e.ids)] = torch.tensor(e.ids), 1
    return ids, mask


def loads_cleanly(auto, path: Path):
    model, info = auto.from_pretrained(str(path), output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    return model.eval()


def starts_finetuning(path: Path, classifier: set[str]) -> None:
    clf = BertForSequenceClassification.from_pretrained(path, num_labels=2)
    assert set(clf.load_report.newly_initialized) == classifier, clf.load_report


def test_roberta_arch_writes_roberta_for_masked_lm(small_corpus, tmp_path):
    transformers = pytest.importorskip("transformers")
    out = tmp_path / "roberta"
    result = run(small_corpus, out, "roberta")
    assert {"mlm_loss", "mlm_accuracy"} <= set(result) and not any(k.startswith("nsp") for k in result)
    config = json.loads((out / "config.json").read_text())
    pad = config["pad_token_id"]
    assert (config["model_type"], config["architectures"], config["type_vocab_size"]) == \
        ("roberta", ["RobertaForMaskedLM"], 1)
    assert config["max_position_embeddings"] == 512 + pad + 1  # BERT's longest input, positions from pad + 1
    assert json.loads((out / "pretrain_config.json").read_text())["objective"] == "roberta"
    # one segment row: neither tokenizer gives segment ids, so a pair never indexes past it
    assert not Tokenizer.from_pretrained(out).uses_token_types
    assert "token_type_ids" not in transformers.AutoTokenizer.from_pretrained(str(out))("영화", "별로")
    ref = loads_cleanly(transformers.AutoModelForMaskedLM, out)
    assert type(ref).__name__ == "RobertaForMaskedLM"
    ours = load_model(out).eval()
    assert isinstance(ours, BertForMaskedLM) and ours.config.max_length == 512
    ids, mask = a_batch(out)
    with torch.no_grad():
        assert_close(ours(ids, mask).logits[mask.bool()], ref(input_ids=ids, attention_mask=mask).logits[mask.bool()],
                     **TOL)
    starts_finetuning(out, {"classifier.dense.weight", "classifier.dense.bias", "classifier.out_proj.weight",
                            "classifier.out_proj.bias"})

    # general distillation from it: MLM only, the student a RobertaForMaskedLM of one layer
    from bertkit.train.distill import DistillConfig, run_distill

    general = {"corpus": [str(small_corpus / "corpus.txt")], "objective": "roberta", "batch_size": 8,
               "max_seq_length": 64, "train": {"steps": 2, "threads": 1}}
    run_distill(DistillConfig(teacher=str(out), out=str(tmp_path / "student"), layers=[1], pretrain=general),
                show_progress=False)
    student = loads_cleanly(transformers.AutoModelForMaskedLM, tmp_path / "student")
    assert type(student).__name__ == "RobertaForMaskedLM" and student.config.num_hidden_layers == 1
    with pytest.raises(ValueError, match="a masked-LM teacher \\(RobertaForMaskedLM\\) has no NSP head"):
        run_distill(DistillConfig(teacher=str(out), out=str(tmp_path / "nsp"),
                                  pretrain={**general, "objective": "bert"}), show_progress=False)


def test_albert_arch_writes_albert_for_pretraining_with_sop(small_corpus, tmp_path):
    transformers = pytest.importorskip("transformers")
    out = tmp_path / "albert"
    result = run(small_corpus, out, "albert", WIDER)
    assert {"mlm_loss", "sop_loss", "sop_accuracy"} <= set(result) and "nsp_loss" not in result
    config = json.loads((out / "config.json").read_text())
    assert (config["model_type"], config["architectures"], config["hidden_act"], config["embedding_size"],
            config["hidden_size"], config["num_hidden_groups"], config["inner_group_num"]) == \
        ("albert", ["AlbertForPreTraining"], "gelu_new", 128, 256, 1, 1)
    ref = loads_cleanly(transformers.AutoModelForPreTraining, out)
    assert type(ref).__name__ == "AlbertForPreTraining"
    ours = load_model(out).eval()
    assert isinstance(ours, BertForPreTraining) and len(ours.bert.encoder.layer) == 1  # one layer, shared
    ids, mask = a_batch(out)
    types = torch.zeros_like(ids)
    with torch.no_grad():
        o, r = ours(ids, mask, types), ref(input_ids=ids, attention_mask=mask, token_type_ids=types)
    assert_close(o.logits[mask.bool()], r.prediction_logits[mask.bool()], **TOL)
    assert_close(o.seq_relationship_logits, r.sop_logits, **TOL)
    starts_finetuning(out, {"classifier.weight", "classifier.bias"})


def test_electra_arch_writes_discriminator_and_generator(small_corpus, tmp_path):
    transformers = pytest.importorskip("transformers")
    out = tmp_path / "electra"
    result = run(small_corpus, out, "electra", WIDER)
    assert {"mlm_loss", "rtd_loss", "rtd_accuracy"} <= set(result)
    disc, gen = (json.loads((d / "config.json").read_text()) for d in (out, out / "generator"))
    assert (disc["model_type"], disc["architectures"], disc["embedding_size"], disc["hidden_size"]) == \
        ("electra", ["ElectraForPreTraining"], 128, 256)  # ELECTRA-small's shape
    assert (gen["model_type"], gen["architectures"], gen["embedding_size"], gen["hidden_size"]) == \
        ("electra", ["ElectraForMaskedLM"], 128, 64)  # a quarter as wide, the discriminator's embedding width
    ids, mask = a_batch(out)
    ref = loads_cleanly(transformers.AutoModelForPreTraining, out)
    assert type(ref).__name__ == "ElectraForPreTraining"
    ours = load_model(out).eval()
    assert isinstance(ours, BertForReplacedTokenDetection)
    with torch.no_grad():
        assert_close(ours(ids, mask).logits, ref(input_ids=ids, attention_mask=mask).logits[mask.bool()], **TOL)
    ref = loads_cleanly(transformers.AutoModelForMaskedLM, out / "generator")
    assert type(ref).__name__ == "ElectraForMaskedLM"
    ours = load_model(out / "generator").eval()
    with torch.no_grad():
        assert_close(ours(ids, mask).logits[mask.bool()], ref(input_ids=ids, attention_mask=mask).logits[mask.bool()],
                     **TOL)
    starts_finetuning(out, {"classifier.dense.weight", "classifier.dense.bias", "classifier.out_proj.weight",
                            "classifier.out_proj.bias"})


def test_albert_resume_after_a_checkpoint_is_exact(small_corpus, tmp_path):
    from safetensors.torch import load_file

    run(small_corpus, tmp_path / "full", "albert", steps=4)
    part = train_config(small_corpus, tmp_path / "part", steps=4, save_every=2)
    part.arch = "albert"
    run_pretrain(part, show_progress=False)
    shutil.rmtree(tmp_path / "part" / "checkpoints" / "step-0000004")
    run_pretrain(part, resume=True, show_progress=False)
    a, b = (load_file(str(tmp_path / run / "model.safetensors")) for run in ("full", "part"))
    assert a.keys() == b.keys() and any(k.startswith("sop_classifier.") for k in a)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    other = train_config(small_corpus, tmp_path / "part", steps=4, save_every=2)  # the same run under another arch
    other.arch = "roberta"
    with pytest.raises(ValueError, match=r"--resume with a different config \(arch: 'albert' -> 'roberta'"):
        run_pretrain(other, resume=True, show_progress=False)


def test_sentence_order_pairs_are_consecutive_text_in_or_out_of_order(small_corpus, tmp_path):
    tok = Tokenizer.from_pretrained(small_corpus / "vocab")
    build_shards([small_corpus / "corpus.txt"], tok, tmp_path, InstanceConfig(objective="albert"),
                 show_progress=False)
    shards = ShardSet(tmp_path / "train")
    assert shards.config.objective == "albert"
    labels = np.array([shards[j][2] for j in range(len(shards))])
    assert len(shards) > 300 and abs(labels.mean() - 0.5) < 0.06
    docs = []  # each document's pieces, one int32 string, to find the segments in
    for doc in read_documents([small_corpus / "corpus.txt"], "sentences"):
        docs.append(np.concatenate([np.asarray(e.ids, np.int32) for e in
                                    tok.encode_batch(doc, add_special_tokens=False)]).tobytes())

    def contiguous(a: np.ndarray) -> bool:
        needle = a.astype(np.int32).tobytes()
        return any(_aligned_find(d, needle) for d in docs)

    checked = swapped_in_order = 0
    for j in range(len(shards)):
        a, b, swapped = shards[j]
        if len(a) + len(b) == 128 - 3:  # truncated at either end: the join may have lost a piece in between
            continue
        first, second = (b, a) if swapped else (a, b)
        assert contiguous(np.concatenate([first, second])), j  # the document's own order, restored
        checked += 1
        swapped_in_order += swapped and contiguous(np.concatenate([a, b]))
    assert checked > 100 and swapped_in_order == 0, (checked, swapped_in_order)


def _aligned_find(haystack: bytes, needle: bytes) -> bool:
    at = haystack.find(needle)
    while at >= 0:
        if at % 4 == 0:
            return True
        at = haystack.find(needle, at + 1)
    return False


def test_arch_implies_its_objective():
    assert [resolve_objective("bert", o) for o in ("", "bert", "roberta", "electra", "albert")] == \
        ["bert", "bert", "roberta", "electra", "albert"]  # the BERT layout trains any objective, as before
    assert [resolve_objective(a, "") for a in ("roberta", "electra", "albert")] == ["roberta", "electra", "albert"]
    assert resolve_objective("albert", "albert") == "albert"
    with pytest.raises(ValueError, match="--objective bert does not go with --arch roberta"):
        resolve_objective("roberta", "bert")
    with pytest.raises(ValueError, match=r"--arch 'gpt2': choose one of bert, roberta, electra, albert"):
        resolve_objective("gpt2", "")
    with pytest.raises(ValueError, match=r"--objective 'sop': choose one of"):
        PretrainConfig(corpus=["x"], vocab="v", objective="sop").validate()


def test_a_run_saved_before_arch_existed_still_resumes_as_bert(tmp_path):
    from dataclasses import asdict

    from bertkit.train.loop import refuse_changed_config
    from bertkit.train.pretrain import ADDED_FIELDS, RESUME_MAY_CHANGE

    cfg = PretrainConfig(corpus=["c.txt"], vocab="v")
    cfg.validate()
    saved = asdict(cfg)
    del saved["arch"]  # pretrain_config.json as written before --arch
    (tmp_path / "pretrain_config.json").write_text(json.dumps(saved))
    refuse_changed_config(tmp_path / "pretrain_config.json", asdict(cfg), RESUME_MAY_CHANGE, added=ADDED_FIELDS)
    cfg.arch = "albert"
    with pytest.raises(ValueError, match=r"arch: 'bert' -> 'albert'"):
        refuse_changed_config(tmp_path / "pretrain_config.json", asdict(cfg), RESUME_MAY_CHANGE, added=ADDED_FIELDS)


def test_cli_refuses_an_objective_the_arch_does_not_train(tmp_path, capsys):
    from bertkit.cli import main

    assert main(["pretrain", "--corpus", str(tmp_path / "c.txt"), "--vocab", str(tmp_path), "--out",
                 str(tmp_path / "out"), "--arch", "roberta", "--objective", "bert"]) == 2
    assert "--objective bert does not go with --arch roberta" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # refused before anything is written
