"""Every kind of tokenizer (WordPiece, byte-level BPE, SentencePiece-style Unigram), learned here on real English
and Korean lines, against transformers' fast tokenizers in both directions: saved by bertkit and read by
`AutoTokenizer`, and saved by transformers (from the same learned vocabulary) and read by bertkit.

Offsets: both libraries give the engine's character offsets into each text of the pair (its own text for the
second one), `(0, 0)` for specials, so they are compared as they are, tuple for tuple."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bertkit.tokenizer import Tokenizer, TokenizerError, check_vocab
from bertkit.vocab import learn_vocab
from conftest import klue_sentences, nsmc, sst2, wiki_paragraphs

transformers = pytest.importorskip("transformers")

KINDS = ("wordpiece", "bpe", "unigram")
HARD = ["", "   ", "Hello,   World!  ", " leading and trailing ", "<mask> is a <mask>.", "naïve CAFÉ résumé",
        "🙂 emoji 🙂", "tab\there\nnewline", "한국어 영화 정말 재미있어요!!", "x" * 300, "中文 字符", "\u200bzero width"]


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return sst2("dev")[:600] + nsmc("test")[:600] + klue_sentences()[:600] + HARD


@pytest.fixture(scope="module")
def learned(tmp_path_factory) -> dict[str, tuple[Tokenizer, object]]:
    """One tokenizer per kind, learned on 1,500 Wikipedia paragraphs and 4,000 NSMC reviews."""
    d = tmp_path_factory.mktemp("kinds")
    corpus = d / "corpus.txt"
    corpus.write_text("\n".join(wiki_paragraphs(1500) + nsmc("train")[:4000]) + "\n", encoding="utf-8")
    return {k: learn_vocab([corpus], size=3000, kind=k, show_progress=False) for k in KINDS}


def _compare(ours: Tokenizer, ref, texts, pairs=None, max_length=None, truncation="longest_first") -> None:
    kw = dict(truncation=truncation, max_length=max_length) if max_length else {}
    got = ours.encode_batch(texts, pairs, max_length=max_length, truncation=truncation)
    expected = ref(texts, *([pairs] if pairs else []), return_offsets_mapping=True, return_token_type_ids=True,
                   return_special_tokens_mask=True, **kw)
    bad = [i for i, e in enumerate(got) if e.ids != expected["input_ids"][i]
           or e.type_ids != expected["token_type_ids"][i]
           or e.special_tokens_mask != expected["special_tokens_mask"][i]
           or e.offsets != [tuple(o) for o in expected["offset_mapping"][i]]]
    assert not bad, f"{len(bad)} of {len(texts)} differ; first: {texts[bad[0]]!r} {pairs[bad[0]] if pairs else ''!r}"


def _all_ways(ours: Tokenizer, ref, texts) -> None:
    ref.model_max_length = 10**6
    _compare(ours, ref, texts)
    half = len(texts) // 2
    a, b = texts[:half], texts[half:2 * half]
    _compare(ours, ref, a, b)
    _compare(ours, ref, a, b, max_length=24)
    _compare(ours, ref, a, b, max_length=200, truncation="only_second")
    _compare(ours, ref, texts, max_length=16)


@pytest.mark.parametrize("kind", KINDS)
def test_saved_by_bertkit_read_by_transformers(kind, learned, texts, tmp_path):
    tok, report = learned[kind]
    assert report.vocab_size == 3000 and 0 <= report.unk_rate < 0.05 and report.hangul_syllable_pieces > 100
    tok.save(tmp_path)
    expected_files = {"wordpiece": {"vocab.txt"}, "bpe": {"vocab.json", "merges.txt"}, "unigram": set()}[kind]
    assert {p.name for p in tmp_path.iterdir()} == {"tokenizer.json", "tokenizer_config.json",
                                                    "special_tokens_map.json"} | expected_files
    ref = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    assert ref.is_fast
    if kind == "bpe":  # RoBERTa's own class: it rebuilds RoBERTa's pipeline, which is this one
        assert type(ref).__name__ == "RobertaTokenizer"
    assert ref.cls_token_id == tok.cls_id and ref.sep_token_id == tok.sep_id and ref.mask_token_id == tok.mask_id
    assert ref.pad_token_id == tok.pad_id and ref.unk_token_id == tok.unk_id
    assert ("token_type_ids" in ref.model_input_names) == (kind == "wordpiece") == tok.uses_token_types
    _all_ways(tok, ref, texts)
    again = Tokenizer.from_pretrained(tmp_path)
    assert (again.kind, again.specials, again.uses_token_types) == (tok.kind, tok.specials, tok.uses_token_types)
    assert [e.ids for e in again.encode_batch(texts)] == [e.ids for e in tok.encode_batch(texts)]
    alone = tmp_path / "alone"  # tokenizer.json without configs: roles from the template, the model, the defaults
    alone.mkdir()
    (alone / "tokenizer.json").write_bytes((tmp_path / "tokenizer.json").read_bytes())
    bare = Tokenizer.from_pretrained(alone)
    assert (bare.specials, bare.uses_token_types) == (tok.specials, tok.uses_token_types)


def _saved_by_transformers(kind: str, tok: Tokenizer, d):
    state = json.loads(tok._engine.to_str())
    if kind == "wordpiece":
        ref = transformers.BertTokenizer(vocab=tok.vocab, do_lower_case=True)
    elif kind == "bpe":
        ref = transformers.RobertaTokenizer(vocab=state["model"]["vocab"],
                                            merges=[tuple(m.split(" ")) if isinstance(m, str) else tuple(m)
                                                    for m in state["model"]["merges"]])
    else:
        ref = transformers.XLMRobertaTokenizer(vocab=[tuple(p) for p in state["model"]["vocab"]])
    ref.save_pretrained(str(d))
    return transformers.AutoTokenizer.from_pretrained(str(d))


@pytest.mark.parametrize("kind", KINDS)
def test_saved_by_transformers_read_by_bertkit(kind, learned, texts, tmp_path):
    ref = _saved_by_transformers(kind, learned[kind][0], tmp_path)
    ours = Tokenizer.from_pretrained(tmp_path)
    assert ours.kind == kind and ours.uses_token_types == (kind == "wordpiece")
    assert (ours.cls_id, ours.sep_id, ours.pad_id, ours.mask_id, ours.unk_id) == (
        ref.cls_token_id, ref.sep_token_id, ref.pad_token_id, ref.mask_token_id, ref.unk_token_id)
    _all_ways(ours, ref, texts)
    if kind == "bpe":  # the legacy files alone (older RoBERTa checkpoints): vocab.json + merges.txt, RoBERTa's
        legacy = tmp_path / "legacy"  # pipeline, template and specials by default
        learned[kind][0].save(legacy)
        for name in ("tokenizer.json", "special_tokens_map.json"):
            (legacy / name).unlink()
        (legacy / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "RobertaTokenizer"}))
        ours = Tokenizer.from_pretrained(legacy)
        assert (ours.kind, ours.cls_id, ours.pad_id, ours.sep_id, ours.unk_id, ours.mask_id) == ("bpe", 0, 1, 2, 3, 4)
        _all_ways(ours, transformers.AutoTokenizer.from_pretrained(str(legacy)), texts)


@pytest.mark.parametrize("kind", KINDS)
def test_covering_prefix_on_real_lines(kind, learned, texts):
    """However a real line is cut after the prefix, the prefix's first n tokens are the line's own; None only when
    the tokens before the line's last word (which a cut could change) are fewer than n."""
    tok = learned[kind][0]
    for text in texts[::15]:
        enc = tok.encode_batch([text], add_special_tokens=False)[0]
        full, words = enc.tokens, enc.word_ids
        for n in (1, 4, 12):
            prefix = tok.covering_prefix(text, n)
            if prefix is None:
                assert not words or words.index(words[-1]) < n, (text, n)
                continue
            for cut in (len(prefix), len(prefix) + 1, len(prefix) + 7):
                assert tok.tokenize(text[:cut])[:n] == full[:n], (text, n, cut)


@pytest.mark.parametrize("kind", KINDS)
def test_every_method_works_for_every_kind(kind, learned):
    tok = learned[kind][0]
    text, pair = "The movie was unbelievably good, 정말 재미있어요", "Second sentence"
    enc = tok.encode(text, pair)
    assert enc.ids == tok.build_inputs(tok.encode_batch([text], add_special_tokens=False)[0].ids,
                                       tok.encode_batch([pair], add_special_tokens=False)[0].ids)[0]
    assert (enc.ids[0], enc.ids[-1]) == (tok.cls_id, tok.sep_id)
    seps = [i for i, t in enumerate(enc.ids) if t == tok.sep_id]
    assert len(seps) == (2 if kind == "wordpiece" else 3)  # `<s> A </s></s> B </s>`
    assert enc.type_ids == ([0] * (seps[0] + 1) + [1] * (len(enc) - seps[0] - 1) if kind == "wordpiece"
                            else [0] * len(enc))
    batch = tok.batch([text, "short"], [pair, "x"])
    assert batch["token_type_ids"].tolist()[0] == enc.type_ids
    assert batch["input_ids"][1, -1].item() == tok.pad_id and batch["attention_mask"][1, -1].item() == 0
    # truncation leaves room for the template's specials: 3 for BERT, 4 for a RoBERTa pair
    need = 3 if kind == "wordpiece" else 4
    assert tok.num_special_tokens(pair=True) == need
    assert len(tok.encode(text, pair, max_length=need + 2)) == need + 2
    with pytest.raises(ValueError, match=f"max_length={need - 1}: needs room for the {need} special tokens"):
        tok.encode(text, max_length=need - 1)
    assert tok.decode(tok.encode("a good movie 좋은 영화").ids) == "a good movie 좋은 영화"
    assert tok.convert_ids_to_tokens(enc.ids[:1]) == [tok.specials["cls"]]
    assert sorted(set(tok.special_ids())) == sorted({tok.vocab[t] for r, t in tok.specials.items()})
    assert tok.vocab_size == len(tok.vocab) == len(tok.inv_vocab) == 3000

    # whole-word masking: a piece continues a word exactly when it is not the first piece of its word
    cont = tok.continuation_mask()
    assert not cont[tok.special_ids()].any()
    words = tok.encode_batch(["unbelievably good reviews of 재미있는 영화들"], add_special_tokens=False)[0]
    starts = [w != p for w, p in zip(words.word_ids, [None] + words.word_ids[:-1])]
    skip = 1 if kind == "bpe" else 0  # byte-level BPE marks a word by the space before it: the text's first has none
    assert cont[words.ids].tolist()[skip:] == [not s for s in starts][skip:], words.tokens

    # covering_prefix: the prefix's first n tokens are those of the whole text, however it is cut
    long = "Tokenizers split words into pieces, 그리고 한국어 문장도 조각으로 나눈다. " * 6
    full = tok.tokenize(long)
    for n in (1, 5, 17, 40):
        prefix = tok.covering_prefix(long, n)
        assert prefix is not None and long.startswith(prefix)
        assert tok.tokenize(prefix)[:n] == full[:n]
    assert tok.covering_prefix("two words", 50) is None

    class Config:
        vocab_size = 3000
    check_vocab(tok, Config, "here")
    Config.vocab_size = 2999
    with pytest.raises(TokenizerError, match="ids up to 2999"):
        check_vocab(tok, Config, "here")


def test_unknown_model_kind_is_one_line_naming_the_file(tmp_path, learned):
    learned["wordpiece"][0].save(tmp_path)
    spec = json.loads((tmp_path / "tokenizer.json").read_text())
    for kind in ("WordLevel", "Garbage"):
        spec["model"]["type"] = kind
        (tmp_path / "tokenizer.json").write_text(json.dumps(spec))
        with pytest.raises(TokenizerError) as e:
            Tokenizer.from_pretrained(tmp_path)
        msg = str(e.value)
        assert "\n" not in msg and str(tmp_path / "tokenizer.json") in msg and repr(kind) in msg
        assert "supported: WordPiece, BPE, Unigram" in msg
    (tmp_path / "tokenizer.json").write_text(json.dumps({"model": {"vocab": 3}}))
    with pytest.raises(TokenizerError, match=r"tokenizer.json: cannot be read by the tokenizers engine \([^\n]*\)$"):
        Tokenizer.from_pretrained(tmp_path)
    spm = tmp_path / "spm"
    spm.mkdir()
    (spm / "sentencepiece.bpe.model").write_bytes(b"\x00")
    with pytest.raises(TokenizerError, match="sentencepiece.bpe.model: .*provide tokenizer.json"):
        Tokenizer.from_pretrained(spm)


def test_klue_roberta_style_directory_loads(tmp_path, learned):
    """RoBERTa weights with a WordPiece vocabulary and BERT's specials (klue/roberta): vocab.txt with
    tokenizer_config.json naming BertTokenizer and `bos_token` [CLS], config.json of model_type roberta."""
    vocab = sorted(learned["wordpiece"][0].vocab, key=learned["wordpiece"][0].vocab.get)
    (tmp_path / "vocab.txt").write_text("".join(t + "\n" for t in vocab), encoding="utf-8")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({
        "do_lower_case": False, "tokenizer_class": "BertTokenizer", "bos_token": "[CLS]", "eos_token": "[SEP]",
        "unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]",
        "mask_token": "[MASK]", "model_max_length": 512}))
    (tmp_path / "special_tokens_map.json").write_text(json.dumps({"bos_token": "[CLS]", "eos_token": "[SEP]"}))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "roberta", "vocab_size": len(vocab)}))
    ours = Tokenizer.from_pretrained(tmp_path)
    assert ours.kind == "wordpiece" and (ours.bos_id, ours.eos_id) == (ours.cls_id, ours.sep_id) == (2, 3)
    ref = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    text, pair = "이 영화 정말 재미있어요", "Second Sentence"
    got, expected = ours.encode(text, pair), ref(text, pair)
    assert (got.ids, got.type_ids) == (expected["input_ids"], expected["token_type_ids"])
    # klue/roberta's one-row segment table: transformers' BertTokenizer gives B segment 1, which indexes past it
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "roberta", "type_vocab_size": 1}))
    one_row = Tokenizer.from_pretrained(tmp_path)
    assert not one_row.uses_token_types and one_row.encode(text, pair).type_ids == [0] * len(got)
    assert one_row.encode(text, pair).ids == got.ids
    # a family without segment ids says so in model_input_names: type ids become zeros, the template stays
    cfg = json.loads((tmp_path / "tokenizer_config.json").read_text())
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({**cfg, "model_input_names": ["input_ids",
                                                                                         "attention_mask"]}))
    flat = Tokenizer.from_pretrained(tmp_path)
    assert not flat.uses_token_types and flat.encode(text, pair).type_ids == [0] * len(got)
    assert flat.encode(text, pair).ids == got.ids
    assert not np.asarray(flat.batch([text], [pair])["token_type_ids"]).any()


def test_learn_vocab_names_the_kinds(tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text("a b c\n", encoding="utf-8")
    with pytest.raises(ValueError, match="kind='sentencepiece': expected one of wordpiece, bpe, unigram"):
        learn_vocab([corpus], size=100, kind="sentencepiece", show_progress=False)
    with pytest.raises(ValueError, match="size=200: must exceed the 5 special tokens and the 256 bytes"):
        learn_vocab([corpus], size=200, kind="bpe", show_progress=False)


def test_legacy_bpe_files_errors_name_the_line(tmp_path):
    vocab = {t: i for i, t in enumerate(["<s>", "<pad>", "</s>", "<unk>", "<mask>", "a", "b", "ab"])}
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    (tmp_path / "merges.txt").write_text("#version: 0.2\na b\nab\n")
    with pytest.raises(TokenizerError, match=r"merges.txt: line 3: expected two pieces separated by one space"):
        Tokenizer.from_pretrained(tmp_path)
    (tmp_path / "merges.txt").write_text("#version: 0.2\na b\n")
    tok = Tokenizer.from_pretrained(tmp_path)
    assert tok.encode("ab").tokens == ["<s>", "ab", "</s>"] and not tok.uses_token_types
    del vocab["<mask>"]
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    with pytest.raises(TokenizerError, match=r"vocab.json: vocabulary lacks the special tokens <mask>"):
        Tokenizer.from_pretrained(tmp_path)
