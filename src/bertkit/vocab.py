"""Learning a WordPiece vocabulary from raw text, and measuring it.

Text is streamed line by line from plain or .gz files (bounded memory: only word counts are kept, in the Rust
trainer), through the same normalizer and pre-tokenizer the tokenizer will use. Every `held_out_every`-th
non-empty line is kept out of training (up to `max_held_out` lines) and used to report the [UNK] rate and the
mean number of tokens per line of the learned vocabulary.

New vocabularies keep Hangul syllables whole (`keep_hangul=True`, see tokenizer.py). Ids: [PAD]=0, [UNK]=1,
[CLS]=2, [SEP]=3, [MASK]=4, then the learned pieces.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from collections.abc import Iterator, Sequence

from tokenizers import Tokenizer as Engine, pre_tokenizers, trainers
from tokenizers.models import WordPiece
from tqdm import tqdm

from bertkit.data.corpus import CorpusError, read_lines
from bertkit.tokenizer import SPECIALS, Options, Tokenizer, build_normalizer


@dataclass
class VocabReport:
    vocab_size: int
    train_lines: int
    held_out_lines: int
    unk_rate: float  # [UNK] tokens / all tokens on the held-out lines, specials excluded
    tokens_per_line: float
    words_per_line: float
    jamo_pieces: int  # vocabulary entries holding conjoining Hangul jamo (a sign of decomposed syllables)
    hangul_syllable_pieces: int
    seconds: float

    def __str__(self) -> str:
        return (f"vocabulary of {self.vocab_size} pieces from {self.train_lines:,} lines in {self.seconds:.0f}s; "
                f"held-out {self.held_out_lines:,} lines: [UNK] rate {100 * self.unk_rate:.3f} %, "
                f"{self.tokens_per_line:.2f} tokens/line ({self.words_per_line:.2f} words/line); "
                f"Hangul syllable pieces {self.hangul_syllable_pieces}, jamo pieces {self.jamo_pieces}")


def learn_vocab(corpus: Sequence[str | Path], size: int = 32000, lowercase: bool = True,
                strip_accents: bool | None = None, keep_hangul: bool = True, min_frequency: int = 2,
                held_out_every: int = 100, max_held_out: int = 20000, limit_alphabet: int | None = None,
                show_progress: bool = True) -> tuple[Tokenizer, VocabReport]:
    """Learn a `size`-piece WordPiece vocabulary from the files in `corpus`."""
    if size <= len(SPECIALS):
        raise ValueError(f"size={size}: must exceed the {len(SPECIALS)} special tokens")
    corpus = [Path(p) for p in corpus]
    for p in corpus:
        if not p.is_file():
            raise CorpusError(f"{p}: file not found")
    options = Options(lowercase=lowercase, strip_accents=strip_accents, keep_hangul=keep_hangul)
    engine = Engine(WordPiece(unk_token="[UNK]", max_input_chars_per_word=100))
    engine.normalizer = build_normalizer(options)
    engine.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    extra = {"limit_alphabet": limit_alphabet} if limit_alphabet is not None else {}
    trainer = trainers.WordPieceTrainer(vocab_size=size, min_frequency=min_frequency, special_tokens=list(SPECIALS),
                                        continuing_subword_prefix="##", show_progress=show_progress, **extra)
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
    pieces = engine.get_vocab()
    tokenizer = Tokenizer.from_vocab(dict(pieces), lowercase=lowercase, strip_accents=strip_accents,
                                     keep_hangul=keep_hangul)
    report = measure(tokenizer, held_out, time.perf_counter() - start, counts["train"])
    return tokenizer, report


def measure(tokenizer: Tokenizer, lines: Sequence[str], seconds: float = 0.0, train_lines: int = 0) -> VocabReport:
    """[UNK] rate and tokens per line of `tokenizer` on `lines`, and how it treats Hangul."""
    unk = total = words = 0
    for start in range(0, len(lines), 4096):
        for enc in tokenizer.encode_batch(lines[start:start + 4096]):
            ids = enc.ids[1:-1]  # drop [CLS] ... [SEP]
            total += len(ids)
            unk += sum(1 for i in ids if i == tokenizer.unk_id)
            word_ids = enc.word_ids[1:-1]
            words += len(set(word_ids))
    n = max(len(lines), 1)
    pieces = [t.removeprefix("##") for t in tokenizer.vocab]
    jamo = sum(1 for t in pieces if any(0x1100 <= ord(c) <= 0x11FF for c in t))
    syllables = sum(1 for t in pieces if any(0xAC00 <= ord(c) <= 0xD7A3 for c in t))
    return VocabReport(vocab_size=tokenizer.vocab_size, train_lines=train_lines, held_out_lines=len(lines),
                       unk_rate=unk / max(total, 1), tokens_per_line=total / n, words_per_line=words / n,
                       jamo_pieces=jamo, hangul_syllable_pieces=syllables, seconds=seconds)


def save_vocab(tokenizer: Tokenizer, report: VocabReport, out: str | Path) -> None:
    """The tokenizer's files and `vocab_report.json` in `out`, each written atomically (the CLI checks `out` first:
    `bertkit.io.prepare_output_dir`)."""
    from bertkit.io import atomic_write_text

    tokenizer.save(out)
    atomic_write_text(Path(out) / "vocab_report.json", json.dumps(asdict(report), indent=2) + "\n")
