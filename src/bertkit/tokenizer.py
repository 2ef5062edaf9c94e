"""BERT WordPiece tokenization on the Rust `tokenizers` engine, behind bertkit's own small API.

The pipeline is the reference one, stage by stage:
normalize (clean control characters, space out CJK ideographs, lower-case, strip accents) -> pre-tokenize (split on
whitespace and punctuation) -> WordPiece (greedy longest match, `##` continuations, [UNK] for a word that cannot be
covered or is longer than 100 characters) -> post-process (`[CLS] A [SEP]` or `[CLS] A [SEP] B [SEP]`, segment ids).

Korean. The reference strips accents by decomposing to NFD and dropping combining marks, and it strips whenever it
lower-cases. NFD also splits every Hangul syllable into conjoining jamo, which are not combining marks, so they
stay split: "한국어" becomes six jamo (google-research/bert#135). bertkit keeps two behaviours apart:
- `keep_hangul=False` (the reference; the default for a loaded vocab.txt): exactly what BertTokenizer does.
- `keep_hangul=True` (the default for every vocabulary bertkit learns): the same, then NFC, which recomposes the
  jamo into syllables after the accents are gone. Latin accents are still stripped, Hangul stays whole. The
  setting is saved in tokenizer.json, so `transformers` loads the same behaviour.

Offsets are character offsets into the text given (not bytes), `(0, 0)` for special tokens.
"""

from __future__ import annotations

import io
import json
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Iterable, Sequence

import numpy as np
import torch
from tokenizers import AddedToken, Tokenizer as Engine, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import WordPiece

SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
MAX_CHARS_PER_WORD = 100  # longer words become [UNK], as in the reference


class TokenizerError(ValueError):
    """A vocabulary or tokenizer file that cannot be used; the message names the file (and line)."""


@dataclass(frozen=True)
class Options:
    lowercase: bool = True
    strip_accents: bool | None = None  # None: follow `lowercase`, as the reference does
    keep_hangul: bool = False  # recompose Hangul after stripping accents (see module docstring)
    tokenize_chinese_chars: bool = True

    @property
    def strips(self) -> bool:
        return self.lowercase if self.strip_accents is None else self.strip_accents


def build_normalizer(opt: Options):
    if opt.strips and opt.keep_hangul:
        return normalizers.Sequence([
            normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=opt.tokenize_chinese_chars,
                                       strip_accents=False, lowercase=opt.lowercase),
            normalizers.NFD(), normalizers.StripAccents(), normalizers.NFC(),
        ])
    return normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=opt.tokenize_chinese_chars,
                                      strip_accents=opt.strips, lowercase=opt.lowercase)


def build_engine(vocab: dict[str, int], opt: Options) -> Engine:
    """The reference pipeline over a vocabulary; what `transformers.BertTokenizer` builds, plus `keep_hangul`."""
    missing = [t for t in SPECIALS if t not in vocab]
    if missing:
        raise TokenizerError(f"vocabulary lacks the special tokens {', '.join(missing)}")
    engine = Engine(WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=MAX_CHARS_PER_WORD))
    engine.normalizer = build_normalizer(opt)
    engine.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    engine.decoder = decoders.WordPiece(prefix="##")
    engine.post_processor = processors.TemplateProcessing(
        single="[CLS]:0 $A:0 [SEP]:0",
        pair="[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    engine.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIALS])
    return engine


def _options_from_normalizer(spec: dict | None) -> Options:
    """Read lower-casing / accent stripping back out of a tokenizer.json normalizer."""
    if not spec:
        return Options(lowercase=False, strip_accents=False)
    if spec.get("type") == "BertNormalizer":
        return Options(lowercase=bool(spec.get("lowercase")), strip_accents=spec.get("strip_accents"),
                       tokenize_chinese_chars=bool(spec.get("handle_chinese_chars", True)))
    if spec.get("type") == "Sequence":
        parts = spec.get("normalizers", [])
        types = [p.get("type") for p in parts]
        bert = next((p for p in parts if p.get("type") == "BertNormalizer"), {})
        strips = "StripAccents" in types or bool(bert.get("strip_accents"))
        return Options(lowercase=bool(bert.get("lowercase")) or "Lowercase" in types, strip_accents=strips,
                       keep_hangul=strips and types[-1:] == ["NFC"],
                       tokenize_chinese_chars=bool(bert.get("handle_chinese_chars", True)))
    return Options(lowercase=False, strip_accents=False)


class Encoding:
    """One encoded text or pair. Thin view over the engine's result; lists are built on first access."""

    __slots__ = ("_e",)

    def __init__(self, e):
        self._e = e

    ids = property(lambda self: self._e.ids)  # token ids, specials included
    type_ids = property(lambda self: self._e.type_ids)  # segment ids: 0 for [CLS] A [SEP], 1 for B [SEP]
    tokens = property(lambda self: self._e.tokens)
    offsets = property(lambda self: self._e.offsets)  # (start, end) characters in its own text; (0, 0) specials
    sequence_ids = property(lambda self: self._e.sequence_ids)  # 0 for A, 1 for B, None for specials
    word_ids = property(lambda self: self._e.word_ids)  # index of the pre-tokenized word; None for specials

    def __len__(self) -> int:
        return len(self._e.ids)

    def __repr__(self) -> str:
        return f"Encoding(tokens={self.tokens})"


class Tokenizer:
    """BERT WordPiece tokenizer: `Tokenizer.from_pretrained(dir)`, `.encode`, `.encode_batch`, `.batch`, `.decode`."""

    def __init__(self, vocab: dict[str, int], options: Options = Options(), model_max_length: int = 512,
                 engine: Engine | None = None):
        self.vocab = vocab
        self.options = options
        self.model_max_length = model_max_length
        self._engine = engine if engine is not None else build_engine(vocab, options)
        self._engine.no_padding()
        self._engine.no_truncation()
        self._truncating: dict[tuple, Engine] = {}  # one engine per truncation setting: the setting is state
        self._lock = threading.Lock()
        self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id = (vocab[t] for t in SPECIALS)
        self.inv_vocab = {i: t for t, i in vocab.items()}

    # ---- construction -----------------------------------------------------------------------------------
    @classmethod
    def from_vocab(cls, vocab: Sequence[str] | dict[str, int] | str | Path, lowercase: bool = True,
                   strip_accents: bool | None = None, keep_hangul: bool = False,
                   tokenize_chinese_chars: bool = True, model_max_length: int = 512) -> Tokenizer:
        if isinstance(vocab, (str, Path)):
            vocab = read_vocab(vocab)
        elif not isinstance(vocab, dict):
            vocab = {t: i for i, t in enumerate(vocab)}
        opt = Options(lowercase, strip_accents, keep_hangul, tokenize_chinese_chars)
        return cls(dict(vocab), opt, model_max_length)

    @classmethod
    def from_pretrained(cls, path: str | Path) -> Tokenizer:
        """A checkpoint directory: tokenizer.json when present (what `transformers` reads first), else vocab.txt
        with tokenizer_config.json's `do_lower_case`, `strip_accents`, `tokenize_chinese_chars`, `keep_hangul`."""
        d = Path(path)
        if not d.is_dir():
            raise TokenizerError(f"{d}: no such directory")
        cfg = _read_json(d / "tokenizer_config.json") if (d / "tokenizer_config.json").is_file() else {}
        max_len = cfg.get("model_max_length", 512)
        max_len = max_len if isinstance(max_len, int) and 0 < max_len <= 1_000_000 else 512
        if (d / "tokenizer.json").is_file():
            spec = _read_json(d / "tokenizer.json")
            model = spec.get("model") or {}
            if model.get("type") != "WordPiece" or not isinstance(model.get("vocab"), dict):
                raise TokenizerError(f"{d / 'tokenizer.json'}: field 'model' is not a WordPiece model with a vocab")
            vocab = {str(k): int(v) for k, v in model["vocab"].items()}
            if len(set(vocab.values())) != len(vocab):
                seen: dict[int, str] = {}
                clash = next((t, seen[i]) for t, i in vocab.items() if seen.setdefault(i, t) != t)
                raise TokenizerError(f"{d / 'tokenizer.json'}: tokens {clash[1]!r} and {clash[0]!r} share the id "
                                     f"{vocab[clash[0]]}; each id must name one token")
            try:
                engine = Engine.from_file(str(d / "tokenizer.json"))
            except Exception as e:
                raise TokenizerError(f"{d / 'tokenizer.json'}: cannot be read by the tokenizers engine ({e})") \
                    from None
            missing = [t for t in SPECIALS if t not in vocab]
            if missing:
                raise TokenizerError(f"{d / 'tokenizer.json'}: vocabulary lacks {', '.join(missing)}")
            return cls(vocab, _options_from_normalizer(spec.get("normalizer")), max_len, engine)
        if not (d / "vocab.txt").is_file():
            raise TokenizerError(f"{d}: no tokenizer found (looked for tokenizer.json and vocab.txt)")
        opt = Options(lowercase=bool(cfg.get("do_lower_case", True)), strip_accents=cfg.get("strip_accents"),
                      keep_hangul=bool(cfg.get("keep_hangul", False)),
                      tokenize_chinese_chars=bool(cfg.get("tokenize_chinese_chars", True)))
        try:
            return cls(read_vocab(d / "vocab.txt"), opt, max_len)
        except TokenizerError as e:
            raise TokenizerError(f"{d / 'vocab.txt'}: {e}") from None

    def save(self, path: str | Path) -> None:
        """vocab.txt, tokenizer.json, tokenizer_config.json and special_tokens_map.json, each written atomically."""
        from bertkit.checkpoint import atomic_write_text

        d = Path(path)
        ordered = sorted(self.vocab.items(), key=lambda kv: kv[1])
        atomic_write_text(d / "vocab.txt", "".join(t + "\n" for t, _ in ordered))
        atomic_write_text(d / "tokenizer.json", self._engine.to_str(pretty=True))
        o = self.options
        # transformers' BertTokenizer rebuilds the reference normalizer from these flags and would decompose
        # Hangul again; the generic fast class runs tokenizer.json as written, so a Korean-safe vocabulary names it.
        cls_name = "PreTrainedTokenizerFast" if o.keep_hangul and o.strips else "BertTokenizer"
        config = {"tokenizer_class": cls_name, "model_input_names": ["input_ids", "token_type_ids", "attention_mask"],
                  "do_lower_case": o.lowercase, "strip_accents": o.strip_accents,
                  "tokenize_chinese_chars": o.tokenize_chinese_chars, "keep_hangul": o.keep_hangul,
                  "model_max_length": self.model_max_length, "unk_token": "[UNK]", "sep_token": "[SEP]",
                  "pad_token": "[PAD]", "cls_token": "[CLS]", "mask_token": "[MASK]"}
        atomic_write_text(d / "tokenizer_config.json", json.dumps(config, indent=2) + "\n")
        specials = {f"{t[1:-1].lower()}_token": t for t in SPECIALS}
        atomic_write_text(d / "special_tokens_map.json", json.dumps(specials, indent=2) + "\n")

    # ---- encoding ------------------------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return max(self.vocab.values()) + 1

    def _engine_for(self, max_length: int | None, strategy: str, stride: int) -> Engine:
        if max_length is None:
            return self._engine
        key = (max_length, strategy, stride)
        with self._lock:
            engine = self._truncating.get(key)
            if engine is None:
                if max_length < 3:
                    raise ValueError(f"max_length={max_length}: needs room for [CLS] and [SEP]")
                engine = Engine.from_str(self._engine.to_str())
                engine.enable_truncation(max_length, stride=stride, strategy=strategy)
                self._truncating[key] = engine
        return engine

    def encode(self, text: str, pair: str | None = None, max_length: int | None = None,
               truncation: str = "longest_first", stride: int = 0) -> Encoding:
        """`[CLS] text [SEP]` or `[CLS] text [SEP] pair [SEP]`. `max_length` truncates (pairs by `truncation`:
        longest_first, only_first or only_second); None keeps everything."""
        _check_text(text, "text")
        if pair is not None:
            _check_text(pair, "pair")
        try:
            return Encoding(self._engine_for(max_length, truncation, stride).encode(text, pair))
        except Exception as e:  # the engine raises plain Exceptions, e.g. a pair that cannot be truncated
            raise ValueError(f"cannot encode: {e}") from None

    def encode_batch(self, texts: Sequence[str], pairs: Sequence[str] | None = None, max_length: int | None = None,
                     truncation: str = "longest_first", stride: int = 0, add_special_tokens: bool = True
                     ) -> list[Encoding]:
        """Many texts (or pairs) at once, in parallel in the engine. `add_special_tokens=False` gives the bare
        WordPiece ids (no [CLS]/[SEP]), as pre-training data needs them."""
        if isinstance(texts, str):
            raise TypeError("texts: expected a list of strings, got one string (use encode)")
        for i, t in enumerate(texts):
            _check_text(t, f"texts[{i}]")
        if pairs is not None:
            if len(pairs) != len(texts):
                raise ValueError(f"pairs: {len(pairs)} items for {len(texts)} texts")
            for i, t in enumerate(pairs):
                _check_text(t, f"pairs[{i}]")
        inputs = list(texts) if pairs is None else list(zip(texts, pairs))
        try:
            encoded = self._engine_for(max_length, truncation, stride).encode_batch(
                inputs, add_special_tokens=add_special_tokens)
        except Exception as e:
            raise ValueError(f"cannot encode: {e}") from None
        return [Encoding(e) for e in encoded]

    def batch(self, texts: Sequence[str], pairs: Sequence[str] | None = None, max_length: int | None = None,
              truncation: str = "longest_first", pad_to_multiple_of: int = 1) -> dict[str, torch.Tensor]:
        """Model inputs: `input_ids`, `token_type_ids`, `attention_mask` as (B, T) int64 tensors padded to the
        longest. `max_length` defaults to `model_max_length`."""
        encs = self.encode_batch(texts, pairs, max_length or self.model_max_length, truncation)
        return self.collate([e.ids for e in encs], [e.type_ids for e in encs], pad_to_multiple_of)

    def collate(self, ids: Sequence[Sequence[int]], type_ids: Sequence[Sequence[int]] | None = None,
                pad_to_multiple_of: int = 1) -> dict[str, torch.Tensor]:
        lengths = [len(x) for x in ids]
        T = max(lengths, default=0)
        T = -(-T // pad_to_multiple_of) * pad_to_multiple_of
        input_ids = np.full((len(ids), T), self.pad_id, dtype=np.int64)
        segments = np.zeros((len(ids), T), dtype=np.int64)
        mask = np.zeros((len(ids), T), dtype=np.int64)
        for i, (row, n) in enumerate(zip(ids, lengths)):
            input_ids[i, :n] = row
            mask[i, :n] = 1
            if type_ids is not None:
                segments[i, :n] = type_ids[i]
        return {"input_ids": torch.from_numpy(input_ids), "token_type_ids": torch.from_numpy(segments),
                "attention_mask": torch.from_numpy(mask)}

    def special_ids(self) -> list[int]:
        return [self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id]

    def continuation_mask(self) -> np.ndarray:
        """(vocab_size,) bool: True for `##` pieces, which continue a word (for whole-word masking)."""
        mask = np.zeros(self.vocab_size, dtype=bool)
        for token, i in self.vocab.items():
            mask[i] = token.startswith("##")
        return mask

    def covering_prefix(self, text: str, tokens: int) -> str | None:
        """A prefix of `text` whose first `tokens` WordPiece tokens are those of `text` itself, whatever follows
        the prefix or was cut off after it; None when `text` (taken as possibly cut) does not hold that many.

        Why a character count cannot decide it: one token may cover any number of characters (a word over 100
        characters is one [UNK]; control and zero-width characters, accents and runs of spaces vanish in
        normalisation), so no prefix length is safe a priori. But normalisation acts per character and WordPiece
        per word, so the tokens of every word that ends before the last word of a prefix are final. Prefixes are
        tried at growing lengths; the last word of each is not counted."""
        if tokens <= 0:
            return text[:0]
        n = min(len(text), 8 * tokens)
        while True:
            e = self._engine.encode(text[:n], add_special_tokens=False)
            words = e.word_ids  # non-decreasing: the tokens before the last word's first one are final
            if words and words.index(words[-1]) >= tokens:
                return text[:n]
            if n == len(text):
                return None
            n = min(len(text), 4 * n)

    def tokenize(self, text: str) -> list[str]:
        """WordPiece tokens without [CLS]/[SEP]."""
        _check_text(text, "text")
        return self._engine.encode(text, add_special_tokens=False).tokens

    def convert_ids_to_tokens(self, ids: Iterable[int]) -> list[str]:
        return [self.inv_vocab.get(int(i), "[UNK]") for i in ids]

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = True) -> str:
        """Ids back to text: `##` pieces joined, specials dropped (lower-casing and accents do not come back)."""
        return self._engine.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)


class VocabularyWarning(UserWarning):
    """A tokenizer and a model that work together but may not be a pair (fewer tokens than embedding rows)."""


def check_vocab(tok: Tokenizer, config, source: str | Path) -> None:
    """A model and its tokenizer, loaded together: every id the tokenizer gives must have an embedding row.

    transformers checks nothing here: an id beyond the rows fails at the first text that produces it (an index
    error), and a vocabulary far smaller than the embedding silently shifts which rows are read. Rows beyond the
    vocabulary are common and harmless in small numbers (tables padded to a multiple of 8 or 128, reserved rows),
    so a vocabulary covering at least 90 % of the rows gets a named warning; less is an error: padding never
    accounts for 10 % of a real vocabulary, a wrong or truncated vocab.txt does (200 lines for 30,522 rows)."""
    rows, size = config.vocab_size, tok.vocab_size
    if size > rows:
        raise TokenizerError(f"{source}: the tokenizer has ids up to {size - 1} but the model's embedding has "
                             f"{rows} rows (config.json vocab_size): not this model's vocabulary")
    if size < rows:
        where = f"{source}: the tokenizer has {size} tokens for the model's {rows} embedding rows"
        if size < 0.9 * rows:
            raise TokenizerError(f"{where} (under 90 %): not this model's vocabulary, or a truncated vocab.txt")
        warnings.warn(f"{where}: the last {rows - size} rows are never used (padding?)", VocabularyWarning,
                      stacklevel=2)


def _check_text(text, field: str) -> None:
    if not isinstance(text, str):
        raise TypeError(f"{field}: expected a string, got {type(text).__name__}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(f"{field}: not valid Unicode text (lone surrogate at character {e.start})") from None


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise TokenizerError(f"{path}: not valid UTF-8 ({e.reason} at byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise TokenizerError(f"{path}: malformed JSON at line {e.lineno}, column {e.colno}: {e.msg}") from None
    if not isinstance(data, dict):
        raise TokenizerError(f"{path}: expected a JSON object")
    return data


def read_vocab(path: str | Path) -> dict[str, int]:
    """vocab.txt: one token per line, its id the line number (as the reference reads it)."""
    path = Path(path)
    if not path.is_file():
        raise TokenizerError(f"{path}: file not found")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise TokenizerError(f"{path}: line {line}: not valid UTF-8") from None
    vocab: dict[str, int] = {}
    repeated: dict[str, list[int]] = {}
    for i, line in enumerate(io.StringIO(text, newline=None).readlines()):  # universal newlines, as the reference
        token = line.rstrip("\n")
        if token in vocab:  # the reference keeps the last id silently: ids shift and the model reads other rows
            repeated.setdefault(token, [vocab[token] + 1]).append(i + 1)
        else:
            vocab[token] = i
    if repeated:
        listed = "; ".join(f"{t!r} on lines {', '.join(map(str, lines))}" for t, lines in list(repeated.items())[:5])
        raise TokenizerError(f"{path}: duplicated tokens ({len(repeated)}): {listed}; each token must appear once "
                             f"(its line number is its id)")
    if not vocab:
        raise TokenizerError(f"{path}: empty vocabulary")
    missing = [t for t in SPECIALS if t not in vocab]
    if missing:
        raise TokenizerError(f"{path}: vocabulary lacks the special tokens {', '.join(missing)}")
    return vocab
