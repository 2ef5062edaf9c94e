"""`bertkit pretrain --init DIR`: a pre-trained BERT's body on a new vocabulary (train/transfer.py): the new
embedding rows by role, by shared piece and by the mean of the old pieces; the body frozen for the first steps
and only then trained; a resumed run equal to an uninterrupted one across the thaw."""

from __future__ import annotations

import shutil
import unicodedata
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from bertkit.cli import main
from bertkit.heads import BertForPreTraining
from bertkit.tokenizer import Tokenizer
from bertkit.train.pretrain import run_pretrain
from bertkit.train.transfer import frozen_body, init_embeddings, old_pieces, transferred_model
from test_train import config as train_config


def old_and_new(tiny_dir: Path, small_corpus: Path) -> tuple[torch.Tensor, Tokenizer, Tokenizer]:
    old = BertForPreTraining.from_pretrained(tiny_dir, strict=False).bert.embeddings.word_embeddings.weight.detach()
    return old, Tokenizer.from_pretrained(tiny_dir), Tokenizer.from_pretrained(small_corpus / "vocab")


def test_new_rows_copy_specials_and_shared_pieces_and_average_the_old_pieces_of_the_rest(tiny_dir, small_corpus):
    old, old_tok, new_tok = old_and_new(tiny_dir, small_corpus)
    new, report = init_embeddings(old, old_tok, new_tok, "mean")
    assert new.shape == (new_tok.vocab_size, old.shape[1])
    assert report.special + report.overlap + report.mean + report.random == new_tok.vocab_size
    for role in ("pad", "unk", "cls", "sep", "mask"):
        assert torch.equal(new[getattr(new_tok, f"{role}_id")], old[getattr(old_tok, f"{role}_id")]), role
    specials = {getattr(new_tok, f"{r}_id") for r in ("pad", "unk", "cls", "sep", "mask")}
    shared = [(p, i) for p, i in new_tok.vocab.items() if p in old_tok.vocab and i not in specials]
    assert len(shared) == report.overlap > 0  # digits, punctuation, Latin pieces of the review corpus
    for piece, i in shared:
        assert torch.equal(new[i], old[old_tok.vocab[piece]]), piece
    # in id order: the vocabulary dict's own order is the Rust engine's hash order, which changes between processes
    korean = sorted(((p, i) for p, i in new_tok.vocab.items() if "가" <= new_tok.piece_text(p)[:1] <= "힣"),
                    key=lambda x: x[1])
    assert len(korean) > 500
    known = [(piece, i, ids) for piece, i in korean if (ids := old_pieces(old_tok, new_tok.piece_text(piece)))]
    for piece, i, ids in known[:50]:  # MiniLM's tokenizer reads a syllable as its jamo: the mean of their rows
        assert torch.allclose(new[i], old[ids].mean(0), atol=1e-6), piece
    # every Korean piece not shared but one whose jamo are all missing from MiniLM's vocabulary (떄: ᄄ, ᅤ)
    assert report.mean >= sum(p not in old_tok.vocab and bool(old_pieces(old_tok, new_tok.piece_text(p)))
                              for p, _ in korean) > 0.99 * len(korean)
    jamo = unicodedata.normalize("NFD", "가")
    assert old_pieces(old_tok, "가") == [old_tok.vocab[t] for t in old_tok.tokenize("가")] and \
        old_tok.tokenize("가") == [jamo[0], "##" + jamo[1]]
    assert old_tok.tokenize("꼭") == ["[UNK]"]  # one jamo of it is not in MiniLM's vocabulary: the others count
    known = [old_tok.vocab[j] for j in unicodedata.normalize("NFD", "꼭") if j in old_tok.vocab]
    assert known and old_pieces(old_tok, "꼭") == known

    overlap, r2 = init_embeddings(old, old_tok, new_tok, "overlap")
    assert r2.overlap == report.overlap and r2.mean == 0
    i = korean[0][1]
    assert not torch.allclose(overlap[i], new[i])  # random, not the mean
    rand, r3 = init_embeddings(old, old_tok, new_tok, "random")
    assert r3.overlap == 0 and r3.special == 5 and r3.random == new_tok.vocab_size - 5
    spread = rand[sorted(set(range(new_tok.vocab_size)) - specials)].std()
    assert abs(float(spread) / float(old.std()) - 1) < 0.1  # the old rows' spread
    with pytest.raises(ValueError, match="--embedding-init 'fasttext': choose one of mean, overlap, random"):
        init_embeddings(old, old_tok, new_tok, "fasttext")


def test_the_transferred_model_keeps_the_body_under_the_new_vocabulary(tiny_dir, small_corpus, tmp_path):
    _, old_tok, new_tok = old_and_new(tiny_dir, small_corpus)
    old = BertForPreTraining.from_pretrained(tiny_dir, strict=False)
    model, report = transferred_model(tiny_dir, new_tok, BertForPreTraining)
    assert model.config.vocab_size == new_tok.vocab_size and model.config.pad_token_id == new_tok.pad_id
    assert model.cls.predictions.decoder.weight is model.bert.embeddings.word_embeddings.weight  # still tied
    ours, theirs = model.state_dict(), old.state_dict()
    body = [k for k in theirs if k.startswith("bert.") and "word_embeddings" not in k]
    assert body and all(torch.equal(ours[k], theirs[k]) for k in body)
    frozen = {id(p) for p in frozen_body(model)}
    assert id(model.bert.embeddings.word_embeddings.weight) not in frozen
    assert id(model.bert.embeddings.position_embeddings.weight) in frozen
    assert not any(id(p) in frozen for p in model.cls.parameters())
    model.save_pretrained(tmp_path / "m", tokenizer=new_tok)  # an ordinary BERT directory of the new vocabulary
    again = BertForPreTraining.from_pretrained(tmp_path / "m")
    assert torch.equal(again.bert.embeddings.word_embeddings.weight, model.bert.embeddings.word_embeddings.weight)
    with pytest.raises(Exception, match="no config.json"):
        transferred_model(tmp_path, new_tok, BertForPreTraining)


def transfer_config(small_corpus: Path, out: Path, init: Path, freeze: int, **train):
    cfg = train_config(small_corpus, out, **{"save_every": 0, **train})
    cfg.init, cfg.freeze_body_steps, cfg.objective = str(init), freeze, "roberta"
    cfg.model_overrides = {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
    return cfg


def test_the_body_stays_frozen_for_its_steps_and_trains_after(tiny_dir, small_corpus, tmp_path):
    _, _, new_tok = old_and_new(tiny_dir, small_corpus)
    start, _ = transferred_model(tiny_dir, new_tok, BertForPreTraining)
    start = start.state_dict()
    run_pretrain(transfer_config(small_corpus, tmp_path / "frozen", tiny_dir, 3, steps=3), show_progress=False)
    frozen = load_file(str(tmp_path / "frozen" / "model.safetensors"))
    body = [k for k in frozen if k.startswith("bert.") and "word_embeddings" not in k]
    assert body and all(torch.equal(frozen[k], start[k]) for k in body), "the body moved while frozen"
    assert not torch.equal(frozen["bert.embeddings.word_embeddings.weight"],
                           start["bert.embeddings.word_embeddings.weight"])
    assert not torch.equal(frozen["cls.predictions.transform.dense.weight"],
                           start["cls.predictions.transform.dense.weight"])
    run_pretrain(transfer_config(small_corpus, tmp_path / "thawed", tiny_dir, 3, steps=5), show_progress=False)
    thawed = load_file(str(tmp_path / "thawed" / "model.safetensors"))
    layers = [k for k in body if k.startswith("bert.encoder.")]  # (the pooler: no loss reads it with MLM alone)
    assert all(not torch.equal(thawed[k], start[k]) for k in layers)


def test_a_transfer_resumed_before_the_thaw_equals_an_uninterrupted_one(tiny_dir, small_corpus, tmp_path):
    run_pretrain(transfer_config(small_corpus, tmp_path / "full", tiny_dir, 3, steps=5), show_progress=False)
    part = transfer_config(small_corpus, tmp_path / "part", tiny_dir, 3, steps=5, save_every=2)
    run_pretrain(part, show_progress=False)
    for later in ("step-0000004", "step-0000005"):  # back to step 2: frozen, then thawed at step 3
        shutil.rmtree(tmp_path / "part" / "checkpoints" / later, ignore_errors=True)
    run_pretrain(part, resume=True, show_progress=False)
    a, b = (load_file(str(tmp_path / run / "model.safetensors")) for run in ("full", "part"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    other = transfer_config(small_corpus, tmp_path / "part", tiny_dir, 2, steps=5, save_every=2)
    with pytest.raises(ValueError, match=r"freeze_body_steps: 3 -> 2"):
        run_pretrain(other, resume=True, show_progress=False)


def test_transfer_settings_that_cannot_work_are_refused(tiny_dir, small_corpus, tmp_path, capsys):
    cfg = train_config(small_corpus, tmp_path / "x")
    cfg.freeze_body_steps = 5
    with pytest.raises(ValueError, match="--freeze-body-steps: freezes the body of an --init model; give --init"):
        cfg.validate()
    cfg = transfer_config(small_corpus, tmp_path / "x", tiny_dir, 0)
    cfg.arch, cfg.objective = "electra", ""
    with pytest.raises(ValueError, match="--init: the transfer recipe trains a BERT by MLM"):
        cfg.validate()
    args = ["pretrain", "--corpus", str(small_corpus / "corpus.txt"), "--vocab", str(small_corpus / "vocab"),
            "--out", str(tmp_path / "y"), "--init", str(tiny_dir), "--embedding-init", "fasttext"]
    with pytest.raises(SystemExit):
        main(args)
    assert "invalid choice: 'fasttext'" in capsys.readouterr().err
