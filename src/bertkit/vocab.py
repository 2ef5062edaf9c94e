"""Learning a vocabulary from raw text (WordPiece, byte-level BPE or SentencePiece-style Unigram), and measuring it.

Text is streamed line by line from plain or .gz files (bounded memory: only word counts are kept, in the Rust
trainer), through the same normalizer and pre-tokenizer the tokenizer will use. Every `held_out_every`-th
non-empty line is kept out of training (up to `max_held_out` lines) and used to report the unknown-token rate and
the mean number of tokens per line of the learned vocabulary.

Kinds and their ids:
- `wordpiece` (BERT; the default): Hangul syllables kept whole (`keep_hangul=True`, see tokenizer.py). [PAD]=0,
  [UNK]=1, [CLS]=2, [SEP]=3, [MASK]=4, then the learned pieces.
- `bpe` (RoBERTa): byte-level, every byte in the alphabet (a piece is never unknown), cased by default.
  <s>=0, <pad>=1, </s>=2, <unk>=3, <mask>=4 as RoBERTa has them; RoBERTa's pipeline and template.
- `unigram` (XLM-RoBERTa): NFKC, words marked by `▁` (SentencePiece's Metaspace), cased by default. <s>=0,
  <pad>=1, </s>=2, <unk>=3, <mask>=4 as XLM-R orders them; XLM-R's template.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from collections.abc import Iterator, Sequence

from tokenizers import Tokenizer as Engine, normalizers, pre_tokenizers, trainers
from tokenizers.models import BPE, Unigram, WordPiece
from tqdm import tqdm

from bertkit.data.corpus import CorpusError, read_lines
from bertkit.tokenizer import (DEFAULT_SPECIALS, ROBERTA_SPECIALS, SPECIALS, Options, Tokenizer, build_normalizer,
                               metaspace_pre_tokenizer, roberta_pipeline, xlmr_pipeline)

KINDS = ("wordpiece", "bpe", "unigram")


@dataclass
class VocabReport:
    vocab_size: int
    train_lines: int
    held_out_lines: int
    unk_rate: float  # unknown tokens (`unk_token`) / all tokens on the held-out lines, specials excluded
    tokens_per_line: float
    words_per_line: float
    jamo_pieces: int  # vocabulary entries holding conjoining Hangul jamo (a sign of decomposed syllables)
    hangul_syllable_pieces: int
    seconds: float
    unk_token: str = "[UNK]"

    def __str__(self) -> str:
        return (f"vocabulary of {self.vocab_size} pieces from {self.train_lines:,} lines in {self.seconds:.0f}s; "
                f"held-out {self.held_out_lines:,} lines: {self.unk_token} rate {100 * self.unk_rate:.3f} %, "
                f"{self.tokens_per_line:.2f} tokens/line ({self.words_per_line:.2f} words/line); "
                f"Hangul syllable pieces {self.hangul_syllable_pieces}, jamo pieces {self.jamo_pieces}")


def learn_vocab(corpus: Sequence[str | Path], size: int = 32000, lowercase: bool | None = None,
                strip_accents: bool | None = None, keep_hangul: bool = True, min_frequency: int = 2,
                held_out_every: int = 100, max_held_out: int = 20000, limit_alphabet: int | None = None,
                show_progress: bool = True, kind: str = "wordpiece") -> tuple[Tokenizer, VocabReport]:
    """Learn a `size`-piece vocabulary of `kind` (wordpiece, bpe, unigram) from the files in `corpus`.

    `lowercase` None: the kind's convention (WordPiece lower-cases, BPE and Unigram keep case). `strip_accents`
    None follows `lowercase` for WordPiece and means no stripping for the other kinds, which strip (when asked)
    without decomposing Hangul; `keep_hangul` applies to WordPiece. `min_frequency` and `limit_alphabet` apply
    to WordPiece and BPE (Unigram prunes by likelihood)."""
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r}: expected one of {', '.join(KINDS)}")
    specials = SPECIALS if kind == "wordpiece" else ROBERTA_SPECIALS
    if size <= len(specials) + (256 if kind == "bpe" else 0):
        raise ValueError(f"size={size}: must exceed the {len(specials)} special tokens"
                         + (" and the 256 bytes" if kind == "bpe" else ""))
    corpus = [Path(p) for p in corpus]
    for p in corpus:
        if not p.is_file():
            raise CorpusError(f"{p}: file not found")
    lowercase = (kind == "wordpiece") if lowercase is None else lowercase
    extra = {"limit_alphabet": limit_alphabet} if limit_alphabet is not None and kind != "unigram" else {}
    if kind == "wordpiece":
        options = Options(lowercase=lowercase, strip_accents=strip_accents, keep_hangul=keep_hangul)
        engine = Engine(WordPiece(unk_token="[UNK]", max_input_chars_per_word=100))
        engine.normalizer = build_normalizer(options)
        engine.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        trainer = trainers.WordPieceTrainer(vocab_size=size, min_frequency=min_frequency,
                                            special_tokens=list(specials), continuing_subword_prefix="##",
                                            show_progress=show_progress, **extra)
    else:
        options = Options(lowercase=lowercase, strip_accents=bool(strip_accents), keep_hangul=True)
        steps = ([normalizers.NFKC()] if kind == "unigram" else []) + \
            ([normalizers.Lowercase()] if lowercase else []) + \
            ([normalizers.NFD(), normalizers.StripAccents(), normalizers.NFC()] if strip_accents else [])
        if kind == "bpe":
            engine = Engine(BPE(fuse_unk=False))
            engine.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
            trainer = trainers.BpeTrainer(vocab_size=size, min_frequency=min_frequency, special_tokens=list(specials),
                                          initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                          show_progress=show_progress, **extra)
        else:
            engine = Engine(Unigram())
            engine.pre_tokenizer = metaspace_pre_tokenizer()
            trainer = trainers.UnigramTrainer(vocab_size=size, special_tokens=list(specials), unk_token="<unk>",
                                              show_progress=show_progress, max_piece_length=16)
        if steps:
            engine.normalizer = steps[0] if len(steps) == 1 else normalizers.Sequence(steps)
    held_out: list[str] = []
    counts = {"train": 0}

    def training_lines() -> Iterator[str]:
        for i, line in enumerate(read_lines(corpus, bar)):
            if i % held_out_every == held_out_every - 1 and len(held_out) < max_held_out:
                held_out.append(line)
                continue
            counts["train"] += 1
            yield line

    start = time.perf_counter()
    total = sum(p.stat().st_size for p in corpus)
    with tqdm(total=total, unit="B", unit_scale=True, desc="reading corpus", disable=not show_progress) as bar:
        engine.train_from_iterator(training_lines(), trainer=trainer)
    if counts["train"] == 0:
        raise CorpusError(f"{', '.join(map(str, corpus))}: no text to learn from (all files empty)")
    if kind == "wordpiece":
        tokenizer = Tokenizer.from_vocab(dict(engine.get_vocab()), lowercase=lowercase, strip_accents=strip_accents,
                                         keep_hangul=keep_hangul)
    else:
        if kind == "unigram":
            # tokenizer.json readers parse a 17-digit score to a neighbouring double, which can flip a tie
            # between two segmentations: scores of 12 digits parse exactly, so the engine here is what any reader
            # of the saved file gets
            state = json.loads(engine.to_str())
            state["model"]["vocab"] = [[p, float(f"{s:.12g}")] for p, s in state["model"]["vocab"]]
            engine = Engine.from_str(json.dumps(state))
        names = DEFAULT_SPECIALS[kind]
        (roberta_pipeline if kind == "bpe" else xlmr_pipeline)(engine, names)
        tokenizer = Tokenizer(None, options, engine=engine, specials=names, source=f"the learned {kind} vocabulary")
    report = measure(tokenizer, held_out, time.perf_counter() - start, counts["train"])
    return tokenizer, report


def measure(tokenizer: Tokenizer, lines: Sequence[str], seconds: float = 0.0, train_lines: int = 0) -> VocabReport:
    """Unknown-token rate and tokens per line of `tokenizer` on `lines`, and how it treats Hangul."""
    unk = total = words = 0
    for start in range(0, len(lines), 4096):
        for enc in tokenizer.encode_batch(lines[start:start + 4096], add_special_tokens=False):
            ids = enc.ids
            total += len(ids)
            unk += sum(1 for i in ids if i == tokenizer.unk_id)
            words += len(set(enc.word_ids))
    n = max(len(lines), 1)
    pieces = [tokenizer.piece_text(t) for t in tokenizer.vocab]
    jamo = sum(1 for t in pieces if any(0x1100 <= ord(c) <= 0x11FF for c in t))
    syllables = sum(1 for t in pieces if any(0xAC00 <= ord(c) <= 0xD7A3 for c in t))
    return VocabReport(vocab_size=tokenizer.vocab_size, train_lines=train_lines, held_out_lines=len(lines),
                       unk_rate=unk / max(total, 1), tokens_per_line=total / n, words_per_line=words / n,
                       jamo_pieces=jamo, hangul_syllable_pieces=syllables, seconds=seconds,
                       unk_token=tokenizer.specials["unk"])


def save_vocab(tokenizer: Tokenizer, report: VocabReport, out: str | Path) -> None:
    """The tokenizer's files and `vocab_report.json` in `out`, each written atomically (the CLI checks `out` first:
    `bertkit.io.prepare_output_dir`)."""
    from bertkit.io import atomic_write_text

    tokenizer.save(out)
    atomic_write_text(Path(out) / "vocab_report.json", json.dumps(asdict(report), indent=2) + "\n")
