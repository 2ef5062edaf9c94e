"""Pre-training data on real text: sentence splitting, instances, NSP balance, masking statistics, shard errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bertkit.data.corpus import CorpusError, read_documents, split_sentences
from bertkit.data.pretraining import (InstanceConfig, Masker, MaskingConfig, Schedule, ShardError, ShardSet,
                                      build_shards)
from bertkit.heads import IGNORE
from conftest import nsmc_corpus_head


def test_sentence_splitter_english_and_korean():
    assert split_sentences("Dr. Smith went to Washington, D.C. on Jan. 5. He met J. R. R. Tolkien there! "
                           "Was it 3.14? Yes.") == \
        ["Dr. Smith went to Washington, D.C. on Jan. 5.", "He met J. R. R. Tolkien there!", "Was it 3.14?", "Yes."]
    assert split_sentences("정말 재미있었다. 그러나 결말이 아쉽다! 다시 볼까? 글쎄요 ㅋㅋ") == \
        ["정말 재미있었다.", "그러나 결말이 아쉽다!", "다시 볼까?", "글쎄요 ㅋㅋ"]
    assert split_sentences('He said "Stop." Then he left.') == ['He said "Stop."', "Then he left."]
    assert split_sentences("It grew e.g. in 1812. Done") == ["It grew e.g. in 1812.", "Done"]
    assert split_sentences("") == [] and split_sentences("no end mark") == ["no end mark"]


def test_documents_in_both_layouts(tmp_path):
    f = tmp_path / "c.txt"
    f.write_text("First doc. Still first.\nsecond line\n\n\nsecond doc\n", encoding="utf-8")
    assert list(read_documents([f], "sentences")) == [["First doc. Still first.", "second line"], ["second doc"]]
    assert list(read_documents([f], "paragraphs")) == [["First doc.", "Still first.", "second line"],
                                                       ["second doc"]]


# ---- on real text ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def korean(tmp_path_factory):
    """The first 30,000 lines of the NSMC review corpus (documents = movies) and a vocabulary learned on them."""
    d = tmp_path_factory.mktemp("ko")
    tok = nsmc_corpus_head(d, 30_000, 8000)
    build_shards([d / "corpus.txt"], tok, d / "shards", InstanceConfig(max_seq_length=128), show_progress=False)
    return d, tok, ShardSet(d / "shards" / "train")


def test_instances_and_nsp_balance(korean):
    _, tok, shards = korean
    labels = np.array([shards[j][2] for j in range(len(shards))])
    assert len(shards) > 3000
    assert abs(labels.mean() - 0.5) < 0.03  # NotNext / IsNext balanced
    lengths = np.array([len(shards[j][0]) + len(shards[j][1]) + 3 for j in range(len(shards))])
    assert lengths.max() <= 128 and all(len(shards[j][0]) and len(shards[j][1]) for j in range(len(shards)))
    assert np.mean(lengths < 60) < 0.35  # mostly full-length; short ones come from short_seq_prob and doc ends
    specials = {tok.cls_id, tok.sep_id, tok.pad_id}  # [UNK] occurs in text; structure tokens do not
    assert not any(int(t) in specials for j in range(0, len(shards), 7) for part in shards[j][:2] for t in part)


def test_masking_statistics_on_real_text(korean):
    _, tok, shards = korean
    masker = Masker(tok, MaskingConfig(max_predictions=1000))
    special = set(tok.special_ids())
    chosen = candidates = masked = randomised = kept = 0
    for start in range(0, 3000, 100):
        batch = masker.batch(shards, list(range(start, start + 100)), [0] * 100)
        ids, labels, mask = batch["input_ids"], batch["labels"], batch["attention_mask"].bool()
        is_special = np.isin(np.where(labels != IGNORE, labels, ids), list(special)) & mask.numpy()
        picked = labels != IGNORE
        assert not (picked.numpy() & is_special).any()  # a special token is never a prediction target
        assert ((ids == tok.cls_id) | (ids == tok.sep_id)).sum() == 2 * len(ids) + (ids[:, 1:] == tok.sep_id).sum() \
            - len(ids)  # specials stay in place
        candidates += int(mask.sum()) - 3 * len(ids)
        chosen += int(picked.sum())
        masked += int((ids[picked] == tok.mask_id).sum())
        kept += int((ids[picked] == labels[picked]).sum())
        replaced = ids[picked][(ids[picked] != tok.mask_id) & (ids[picked] != labels[picked])]
        randomised += len(replaced)
        assert not any(int(t) in special for t in replaced)  # random replacements are never special
    assert abs(chosen / candidates - 0.15) < 0.005
    assert abs(masked / chosen - 0.8) < 0.015
    assert abs(randomised / chosen - 0.1) < 0.012
    assert abs(kept / chosen - 0.1) < 0.012


def test_max_predictions_whole_word_and_mask_schedules(korean):
    _, tok, shards = korean
    capped = Masker(tok, MaskingConfig(max_predictions=5)).batch(shards, list(range(200)), [0] * 200)
    assert (capped["labels"] != IGNORE).sum(1).max() == 5
    cont = tok.continuation_mask()
    wwm = Masker(tok, MaskingConfig(whole_word=True, max_predictions=1000))
    batch = wwm.batch(shards, list(range(300)), [0] * 300)
    original = np.where(batch["labels"] != IGNORE, batch["labels"], batch["input_ids"]).astype(np.int64)
    picked = (batch["labels"] != IGNORE).numpy()
    for row in range(len(original)):  # a chosen piece's whole word is chosen: no partially masked word
        for t in range(1, original.shape[1]):
            after_special = original[row, t - 1] in tok.special_ids()  # a word cut at a segment start
            if cont[original[row, t]] and batch["attention_mask"][row, t] and not after_special:
                assert picked[row, t] == picked[row, t - 1]
    dynamic = Masker(tok, MaskingConfig())
    a, b = dynamic.batch(shards, [5], [0]), dynamic.batch(shards, [5], [1])
    assert not np.array_equal(a["labels"], b["labels"])  # a fresh mask each epoch
    static = Masker(tok, MaskingConfig(duplication=2))
    assert np.array_equal(static.batch(shards, [5], [0])["labels"], static.batch(shards, [5], [2])["labels"])
    sched = Schedule(len(shards), 32, seed=3)
    first, _ = sched.step(0)
    assert len(set(first)) == 32 and sched.step(0)[0] == first  # the data position is the step


def test_length_grouped_schedule_sees_every_instance_in_batches_of_similar_length():
    lengths = np.random.default_rng(0).integers(5, 385, size=1000)
    plain, grouped = Schedule(1000, 32, seed=7), Schedule(1000, 32, seed=7, lengths=lengths, pool=10)
    epoch = grouped.permutation(0)
    assert sorted(epoch.tolist()) == list(range(1000))  # each instance once an epoch
    assert np.array_equal(Schedule(1000, 32, seed=7, lengths=lengths, pool=10).permutation(0), epoch)
    assert not np.array_equal(grouped.permutation(1), epoch)  # a fresh order each epoch

    def padding(schedule: Schedule) -> float:  # the share of a padded (B, T) batch that is padding, 31 full steps
        rows = [lengths[schedule.step(s)[0]] for s in range(31)]
        return 1 - sum(r.sum() for r in rows) / sum(32 * r.max() for r in rows)

    assert padding(plain) > 0.4 and padding(grouped) < 0.15  # 10 pools: each batch spans ~1/10 of the range
    longest = [lengths[grouped.step(s)[0]].max() for s in range(31)]
    assert longest != sorted(longest, reverse=True)  # batches shuffled, not served longest first
    assert grouped.step(31)[1] == [0] * 8 + [1] * 24  # the partial batch stays last: steps keep their boundaries
    with pytest.raises(ValueError, match="999 lengths for 1000 instances"):
        Schedule(1000, 32, seed=7, lengths=lengths[:999])


def test_roberta_packing_crosses_documents(korean, tmp_path):
    d, tok, _ = korean
    build_shards([d / "corpus.txt"], tok, tmp_path, InstanceConfig(objective="roberta"), show_progress=False)
    shards = ShardSet(tmp_path / "train")
    lengths = [len(shards[j][0]) for j in range(len(shards) - 1)]
    assert all(len(shards[j][1]) == 0 and shards[j][2] == 0 for j in range(len(shards)))
    assert np.mean(lengths) > 110  # packed nearly full (max 126)
    assert sum(int((shards[j][0] == tok.sep_id).sum()) for j in range(100)) > 0  # document boundaries marked


# ---- errors ---------------------------------------------------------------------------------------------------------
def test_corpus_errors_name_the_file(korean, tmp_path):
    _, tok, _ = korean
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    with pytest.raises(CorpusError, match="empty.txt: no text to pre-train on"):
        build_shards([empty], tok, tmp_path / "a", InstanceConfig(), show_progress=False)
    one = tmp_path / "one.txt"
    one.write_text("한 문서뿐입니다.\n두 번째 문장.\n")
    with pytest.raises(CorpusError, match="one.txt: only one document; NotNext pairs need at least two"):
        build_shards([one], tok, tmp_path / "b", InstanceConfig(), show_progress=False)
    bad = tmp_path / "bad.txt"
    bad.write_bytes("좋은 영화\n\n괜찮다\n".encode() + b"\xed\xa0\x80 broken\n")
    with pytest.raises(CorpusError, match=r"bad.txt: line 4: not valid UTF-8"):
        build_shards([bad], tok, tmp_path / "c", InstanceConfig(), show_progress=False)


def test_damaged_shards_are_named(korean, tmp_path):
    import shutil

    d, _, _ = korean
    shutil.copytree(d / "shards" / "train", tmp_path / "s")
    tokens = tmp_path / "s" / "shard-00000.tokens.npy"
    data = bytearray(tokens.read_bytes())
    data[-5] ^= 0xFF
    tokens.write_bytes(bytes(data))
    with pytest.raises(ShardError, match="shard-00000.tokens.npy: checksum mismatch"):
        ShardSet(tmp_path / "s")
    tokens.write_bytes(bytes(data[: len(data) // 2]))
    with pytest.raises(ShardError, match=r"shard-00000.tokens.npy: \d+ bytes, expected \d+ \(truncated\?\)"):
        ShardSet(tmp_path / "s")
    (tmp_path / "s" / "meta.json").write_text("{broken")
    with pytest.raises(ShardError, match="meta.json: malformed"):
        ShardSet(tmp_path / "s")
    (tmp_path / "s" / "meta.json").unlink()
    with pytest.raises(ShardError, match="meta.json: not found"):
        ShardSet(tmp_path / "s")
    meta = json.loads((d / "shards" / "train" / "meta.json").read_text())
    assert meta["instances"] == sum(s["instances"] for s in meta["shards"])
