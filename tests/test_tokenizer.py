"""Tokenizer: hand-made vocabularies (the reference's own cases), Korean behaviour, hard strings, files, and exact
parity with transformers' BertTokenizer (fast) and BertTokenizerLegacy (Google's Python port) on real text."""

from __future__ import annotations

import json
import shutil

import pytest

from bertkit.tokenizer import Tokenizer, TokenizerError
from bertkit.vocab import learn_vocab
from conftest import real_lines

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def small(extra, **kw) -> Tokenizer:
    return Tokenizer.from_vocab(SPECIALS + extra, **kw)


# ---- the reference's own hand-made cases (google-research/bert tokenization_test.py) ----------------------------
def test_wordpiece_greedy_longest_match():
    tok = small(["want", "##want", "##ed", "wa", "un", "runn", "##ing", ","])
    assert tok.tokenize("") == []
    assert tok.tokenize("unwanted running") == ["un", "##want", "##ed", "runn", "##ing"]
    assert tok.tokenize("unwantedX running") == ["[UNK]", "runn", "##ing"]  # a word that cannot be covered


def test_basic_tokenizer_lower_and_accents():
    tok = small(["un", "##want", "##ed", ",", "runn", "##ing", "hello", "how", "are", "you", "?", "!", "allo"])
    assert tok.tokenize("UNwant\u00E9d,running") == ["un", "##want", "##ed", ",", "runn", "##ing"]
    assert tok.tokenize(" \tHeLLo!how  \n Are yoU?  ") == ["hello", "!", "how", "are", "you", "?"]
    assert tok.tokenize("H\u00E9llo") == ["hello"]
    cased = small(["HeLLo", "!", "how", "Are", "yoU", "?", "H\u00E9llo"], lowercase=False)
    assert cased.tokenize(" \tHeLLo!how  \n Are yoU?  ") == ["HeLLo", "!", "how", "Are", "yoU", "?"]
    assert cased.tokenize("H\u00E9llo") == ["H\u00E9llo"]  # no lower-casing: accents kept (reference default)
    stripped = small(["HeLLo", "Hallo"], lowercase=False, strip_accents=True)
    assert stripped.tokenize("H\u00E4llo") == ["Hallo"]


def test_chinese_characters_are_split():
    tok = small(["ah", "\u535A", "\u63A8", "zz"])
    assert tok.tokenize("ah\u535A\u63A8zz") == ["ah", "\u535A", "\u63A8", "zz"]


def test_control_characters_and_whitespace():
    tok = small(["hello", "world"])
    assert tok.tokenize("hello\u0000 world\ufffd") == ["hello", "world"]  # NUL and U+FFFD are cleaned away
    assert tok.tokenize("hello\u200bworld") == ["[UNK]"]  # zero-width space is not whitespace: one word
    assert tok.tokenize("hello\x07 \x1b world") == ["hello", "world"]
    assert tok.tokenize(" \t\n\r ") == []


# ---- Korean ---------------------------------------------------------------------------------------------------
HANGUL = "한국어 모델"


def test_reference_mode_decomposes_hangul_when_lowercasing():
    """The reference (and bertkit on a loaded vocab) NFD-decomposes Hangul: google-research/bert#135."""
    import unicodedata

    jamo = sorted({c for c in unicodedata.normalize("NFD", HANGUL) if c != " "})
    tok = small(jamo + ["##" + c for c in jamo], lowercase=True)  # keep_hangul=False: reference
    pieces = [t.lstrip("#") for t in tok.tokenize(HANGUL)]
    assert all(0x1100 <= ord(p) <= 0x11FF for p in pieces)
    assert "".join(pieces) == unicodedata.normalize("NFD", "한국어모델")


def test_korean_safe_mode_keeps_syllables_and_still_strips_latin_accents():
    tok = small(["한국어", "모델", "cafe"], lowercase=True, keep_hangul=True)
    assert tok.tokenize(HANGUL) == ["한국어", "모델"]
    assert tok.tokenize("CAF\u00C9") == ["cafe"]
    enc = tok.encode("한국어 CAFÉ")
    assert [("한국어 CAFÉ"[s:e]) for s, e in enc.offsets[1:-1]] == ["한국어", "CAFÉ"]


def test_learned_vocab_keeps_hangul_whole(tmp_path):
    lines = ["이 영화 정말 재미있어요", "배우들의 연기가 좋았다", "한국어 문장을 학습합니다"] * 50
    corpus = tmp_path / "ko.txt"
    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tok, report = learn_vocab([corpus], size=200, min_frequency=1, show_progress=False)
    assert tok.options.keep_hangul and report.jamo_pieces == 0 and report.hangul_syllable_pieces > 0
    assert "".join(t.lstrip("#") for t in tok.tokenize("영화 정말")) == "영화정말"
    assert report.unk_rate == 0.0


# ---- encoding API ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mini_tok(minilm_dir):
    return Tokenizer.from_pretrained(minilm_dir)


def test_single_pair_segments_and_offsets(mini_tok):
    text, pair = "Hello, World! It's BERT.", "Second   sentence here"
    enc = mini_tok.encode(text, pair)
    assert enc.tokens[0] == "[CLS]" and enc.tokens.count("[SEP]") == 2 and enc.tokens[-1] == "[SEP]"
    first_sep = enc.tokens.index("[SEP]")
    assert enc.type_ids == [0] * (first_sep + 1) + [1] * (len(enc) - first_sep - 1)
    assert enc.offsets[0] == (0, 0) and enc.offsets[-1] == (0, 0)
    for tokn, (s, e), seq in zip(enc.tokens, enc.offsets, enc.sequence_ids):
        if seq is not None:
            src = text if seq == 0 else pair
            assert src[s:e].lower() == tokn.removeprefix("##")


def test_truncation_longest_first(mini_tok):
    a, b = "one two three four five six seven eight", "alpha beta"
    enc = mini_tok.encode(a, b, max_length=10)
    assert len(enc) == 10
    n_a = enc.sequence_ids.count(0)
    n_b = enc.sequence_ids.count(1)
    assert (n_a, n_b) == (5, 2)  # the longer side loses tokens first until both fit
    assert len(mini_tok.encode(a, max_length=4)) == 4
    only_second = mini_tok.encode(b, a, max_length=8, truncation="only_second")
    assert only_second.sequence_ids.count(0) == 2
    with pytest.raises(ValueError, match="max_length"):
        mini_tok.encode(a, max_length=2)


def test_batch_pads_to_longest(mini_tok):
    batch = mini_tok.batch(["short", "a somewhat longer sentence here", ""])
    assert batch["input_ids"].shape == (3, 7)
    assert batch["attention_mask"].sum(1).tolist() == [3, 7, 2]
    assert batch["input_ids"][2].tolist() == [mini_tok.cls_id, mini_tok.sep_id] + [mini_tok.pad_id] * 5


def test_decode_round_trip(mini_tok):
    text = "the quick brown fox, unaffable and running!"
    assert mini_tok.decode(mini_tok.encode(text).ids) == text
    assert mini_tok.decode(mini_tok.encode("Hello World").ids, skip_special_tokens=False) == "[CLS] hello world [SEP]"


def test_hard_strings(mini_tok):
    assert mini_tok.encode("").tokens == ["[CLS]", "[SEP]"]
    assert mini_tok.encode("\u0000\u0001").tokens == ["[CLS]", "[SEP]"]
    assert "[UNK]" in mini_tok.encode("a" * 101).tokens  # longer than max_input_chars_per_word
    assert mini_tok.encode("🙂 ok").tokens[1:-1] == ["[UNK]", "ok"]  # not in the bert-base vocabulary
    enc = mini_tok.encode("word " * 20000, max_length=512)
    assert len(enc) == 512
    with pytest.raises(ValueError, match="lone surrogate"):
        mini_tok.encode("bad \ud800 text")
    with pytest.raises(TypeError, match="texts\\[1\\]"):
        mini_tok.encode_batch(["ok", None])
    with pytest.raises(TypeError, match="one string"):
        mini_tok.encode_batch("not a list")


# ---- files ----------------------------------------------------------------------------------------------------
def test_save_load_round_trip_and_transformers_reads_it(tmp_path):
    transformers = pytest.importorskip("transformers")
    tok = small(["한국어", "모델", "cafe", "##s", "."], lowercase=True, keep_hangul=True)
    tok.save(tmp_path)
    again = Tokenizer.from_pretrained(tmp_path)
    o = again.options
    assert (o.lowercase, o.strips, o.keep_hangul) == (True, True, True)
    text = "한국어 CAFÉs 모델."
    assert again.encode(text).ids == tok.encode(text).ids
    hf = transformers.AutoTokenizer.from_pretrained(str(tmp_path))  # the class tokenizer_config.json names
    expected = tok.encode(text, "모델")
    got = hf(text, "모델")
    assert (got["input_ids"], got["token_type_ids"]) == (expected.ids, expected.type_ids)
    assert expected.tokens[1] == "한국어"  # Korean-safe behaviour travels in tokenizer.json


def test_vocab_txt_only_directory_uses_tokenizer_config(tmp_path):
    (tmp_path / "vocab.txt").write_text("\n".join(SPECIALS + ["Hello", "hello"]) + "\n", encoding="utf-8")
    assert Tokenizer.from_pretrained(tmp_path).tokenize("Hello") == ["hello"]  # HF default: do_lower_case=True
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": False}))
    assert Tokenizer.from_pretrained(tmp_path).tokenize("Hello") == ["Hello"]


def test_errors_name_the_file(tmp_path):
    with pytest.raises(TokenizerError, match="no tokenizer found"):
        Tokenizer.from_pretrained(tmp_path)
    (tmp_path / "vocab.txt").write_bytes(b"[PAD]\n[UNK]\n\xff\xfe\n")
    with pytest.raises(TokenizerError, match=r"vocab.txt: line 3: not valid UTF-8"):
        Tokenizer.from_pretrained(tmp_path)
    (tmp_path / "vocab.txt").write_text("[PAD]\n[UNK]\nhello\n")
    with pytest.raises(TokenizerError, match=r"vocab.txt.*lacks the special tokens \[CLS\], \[SEP\], \[MASK\]"):
        Tokenizer.from_pretrained(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(TokenizerError, match=r"tokenizer.json: malformed JSON at line 1"):
        Tokenizer.from_pretrained(tmp_path)


# ---- parity with the reference on real text ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def lines():
    return real_lines()


@pytest.fixture(scope="module")
def cased_dir(tmp_path_factory, lines):
    """A cased vocabulary learned here from the same sources, saved as vocab.txt + tokenizer_config.json only:
    both libraries build their pipelines from it (reference Hangul behaviour, as for any loaded vocabulary)."""
    d = tmp_path_factory.mktemp("cased")
    corpus = d / "corpus.txt"
    corpus.write_text("\n".join(v for vs in lines.values() for v in vs[::3]) + "\n", encoding="utf-8")
    tok, _ = learn_vocab([corpus], size=12000, lowercase=False, show_progress=False)
    tok.save(d)
    (d / "tokenizer.json").unlink()
    cfg = json.loads((d / "tokenizer_config.json").read_text())
    cfg.pop("keep_hangul")
    (d / "tokenizer_config.json").write_text(json.dumps(cfg))
    return d


def _compare(ours: Tokenizer, ref, texts, pairs=None, max_length=None, offsets=True):
    kw = dict(truncation="longest_first", max_length=max_length) if max_length else {}
    expected = ref(texts, pairs, return_offsets_mapping=offsets, **kw) if pairs else \
        ref(texts, return_offsets_mapping=offsets, **kw)
    got = ours.encode_batch(texts, pairs, max_length=max_length)
    bad = [i for i, e in enumerate(got) if e.ids != expected["input_ids"][i]
           or e.type_ids != expected["token_type_ids"][i]
           or (offsets and [tuple(o) for o in e.offsets] != [tuple(o) for o in expected["offset_mapping"][i]])]
    assert not bad, f"{len(bad)} of {len(texts)} differ; first: {texts[bad[0]]!r}"


@pytest.mark.parametrize("case", ["uncased", "cased"])
def test_parity_with_transformers_fast(case, lines, minilm_dir, cased_dir):
    transformers = pytest.importorskip("transformers")
    d = minilm_dir if case == "uncased" else cased_dir
    ours, ref = Tokenizer.from_pretrained(d), transformers.BertTokenizer.from_pretrained(str(d))
    ref.model_max_length = 10**6
    everything = [t for v in lines.values() for t in v]
    assert len(everything) >= 20000
    _compare(ours, ref, everything)
    half = len(everything) // 2
    _compare(ours, ref, everything[:half], everything[half: 2 * half], max_length=64)  # pairs, truncated


@pytest.mark.parametrize("case", ["uncased", "cased"])
def test_parity_with_transformers_legacy_python(case, lines, minilm_dir, cased_dir):
    """Google's algorithm as Python code (BertTokenizerLegacy): ids on every line (it has no offsets)."""
    transformers = pytest.importorskip("transformers")
    d = minilm_dir if case == "uncased" else cased_dir
    ours = Tokenizer.from_pretrained(d)
    ref = transformers.BertTokenizerLegacy.from_pretrained(str(d))
    ref.model_max_length = 10**6
    texts = [t for v in lines.values() for t in v]
    got = [e.ids for e in ours.encode_batch(texts)]
    bad = [t for t, g, e in zip(texts, got, ref(texts)["input_ids"]) if g != e]
    assert not bad, f"{len(bad)} of {len(texts)} differ; first: {bad[0]!r}"


def test_copy_of_minilm_without_tokenizer_json_still_matches(minilm_dir, tmp_path):
    """vocab.txt alone (the older checkpoint layout) gives the same ids as tokenizer.json."""
    for name in ("vocab.txt", "tokenizer_config.json"):
        shutil.copy(minilm_dir / name, tmp_path / name)
    a, b = Tokenizer.from_pretrained(minilm_dir), Tokenizer.from_pretrained(tmp_path)
    text = "Ünïcode Résumé, naïve café — 한국어 and 中文!"
    assert a.encode(text).ids == b.encode(text).ids


def test_duplicated_cls_in_vocab_txt_names_the_lines(tmp_path):
    """The issue's reproduction: a second [CLS] line shifted every later id (0.951 -> 0.942) without a word."""
    tokens = list(SPECIALS) + ["hello", "[CLS]", "world", "world"]
    (tmp_path / "vocab.txt").write_text("\n".join(tokens) + "\n", encoding="utf-8")
    with pytest.raises(TokenizerError, match=r"vocab.txt: duplicated tokens \(2\): '\[CLS\]' on lines 3, 7; "
                                             r"'world' on lines 8, 9"):
        Tokenizer.from_pretrained(tmp_path)
    good = Tokenizer.from_vocab(list(SPECIALS) + ["hello", "world"])
    good.save(tmp_path)
    spec = json.loads((tmp_path / "tokenizer.json").read_text())
    spec["model"]["vocab"]["world"] = spec["model"]["vocab"]["hello"]
    (tmp_path / "tokenizer.json").write_text(json.dumps(spec))
    with pytest.raises(TokenizerError, match=r"tokenizer.json: tokens 'hello' and 'world' share the id 5"):
        Tokenizer.from_pretrained(tmp_path)
