"""Vocabulary learning on the real corpora, at the sizes the acceptance asks for (each run takes seconds)."""

from __future__ import annotations

import unicodedata

from bertkit.vocab import learn_vocab, measure
from conftest import gz_lines, need_data, nsmc


def test_nsmc_32k_vocab_low_unk_and_whole_hangul():
    tok, report = learn_vocab([need_data("nsmc", "corpus.txt.gz")], size=32000, show_progress=False)
    assert report.vocab_size == 32000 and report.train_lines > 500_000
    test = nsmc("test")
    scored = measure(tok, test)
    assert scored.unk_rate <= 0.005, scored
    # Hangul stays whole: every Hangul piece of every test review is made of syllables, never conjoining jamo
    # (the archaic vowels U+119E/U+11A2 occur as themselves in reviews and are the only exceptions).
    decomposed = [t for enc in tok.encode_batch(test[:5000]) for t in enc.tokens
                  if any(0x1100 <= ord(c) <= 0x11FF and c not in "\u119e\u11a2" for c in t)]
    assert decomposed == []
    sample = "이 영화 정말 재미있어요"
    assert "".join(t.removeprefix("##") for t in tok.tokenize(sample)) == sample.replace(" ", "")
    assert unicodedata.is_normalized("NFC", "".join(tok.tokenize(sample)))


def test_wikipedia_100mb_vocab_low_unk_on_wikitext2():
    tok, report = learn_vocab([need_data("wikitext", "enwiki_2015", "enwiki_part0.txt.gz")], size=32000,
                              show_progress=False)
    test = [ln.strip() for ln in gz_lines("wikitext", "wikitext-2", "test.txt.gz") if ln.strip()]
    scored = measure(tok, test)
    assert scored.unk_rate <= 0.002, scored
    assert 50 < scored.tokens_per_line < 200
