"""Tokenization on the Rust `tokenizers` engine, behind bertkit's own small API: every kind of vocabulary the BERT
family ships with.

- WordPiece (BERT, ELECTRA, DistilBERT, klue/roberta): normalize (clean control characters, space out CJK
  ideographs, lower-case, strip accents) -> pre-tokenize (whitespace and punctuation) -> greedy longest match with
  `##` continuations, [UNK] for a word that cannot be covered or is longer than 100 characters -> `[CLS] A [SEP]`
  or `[CLS] A [SEP] B [SEP]` with segment ids 0/1.
- Byte-level BPE (RoBERTa, DistilRoBERTa): no normalizer, bytes mapped to printable characters, a space carried by
  the next word's first piece (`Ġ`), `<s> A </s>` or `<s> A </s></s> B </s>`, no segment ids.
- SentencePiece Unigram (XLM-RoBERTa, multilingual-e5, ALBERT): `▁` marks a word start; the most likely
  segmentation under the piece probabilities; XLM-R's template.

A `tokenizer.json` is run by the engine as written (normalizer, pre-tokenizer, model, post-processor, added
tokens), so ids and offsets are those of transformers' fast tokenizer; the special tokens' roles come from
tokenizer_config.json / special_tokens_map.json, else from the template, else the family's defaults.

Korean (WordPiece). The reference strips accents by decomposing to NFD and dropping combining marks, and it strips
whenever it lower-cases. NFD also splits every Hangul syllable into conjoining jamo, which are not combining marks,
so they stay split: "한국어" becomes six jamo (google-research/bert#135). bertkit keeps two behaviours apart:
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
from tokenizers.models import BPE, WordPiece

from bertkit.io import atomic_write_text

SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")  # BERT's, in its vocab.txt order
ROBERTA_SPECIALS = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")  # RoBERTa's and XLM-R's, ids 0-4
ROLES = ("pad", "unk", "cls", "sep", "mask")  # the order of `special_ids()`
KINDS = {"WordPiece": "wordpiece", "BPE": "bpe", "Unigram": "unigram"}  # tokenizer.json model type -> kind
DEFAULT_SPECIALS = {
    "wordpiece": dict(zip(ROLES, SPECIALS)),
    "bpe": {"pad": "<pad>", "unk": "<unk>", "cls": "<s>", "sep": "</s>", "mask": "<mask>"},
    "unigram": {"pad": "<pad>", "unk": "<unk>", "cls": "<s>", "sep": "</s>", "mask": "<mask>"},
}
MAX_CHARS_PER_WORD = 100  # longer words become [UNK], as in the reference
SPM_FILES = ("sentencepiece.bpe.model", "spiece.model", "sentencepiece.model", "tokenizer.model")


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


def build_engine(vocab: dict[str, int], opt: Options, specials: dict[str, str] | None = None) -> Engine:
    """The reference pipeline over a vocabulary; what `transformers.BertTokenizer` builds, plus `keep_hangul`."""
    sp = specials or DEFAULT_SPECIALS["wordpiece"]
    missing = [sp[r] for r in ROLES if sp[r] not in vocab]
    if missing:
        raise TokenizerError(f"vocabulary lacks the special tokens {', '.join(missing)}")
    engine = Engine(WordPiece(vocab, unk_token=sp["unk"], max_input_chars_per_word=MAX_CHARS_PER_WORD))
    engine.normalizer = build_normalizer(opt)
    engine.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    engine.decoder = decoders.WordPiece(prefix="##")
    cls, sep = sp["cls"], sp["sep"]
    engine.post_processor = processors.TemplateProcessing(
        single=f"{cls}:0 $A:0 {sep}:0", pair=f"{cls}:0 $A:0 {sep}:0 $B:1 {sep}:1",
        special_tokens=[(cls, vocab[cls]), (sep, vocab[sep])])
    engine.add_special_tokens([AddedToken(sp[r], special=True, normalized=False) for r in ROLES])
    return engine


def roberta_pipeline(engine: Engine, specials: dict[str, str], add_prefix_space: bool = False,
                     trim_offsets: bool = True, mask_lstrip: bool = True) -> Engine:
    """RoBERTa's pipeline around a byte-level BPE model: what `transformers.RobertaTokenizer` builds. RoBERTa's
    `<mask>` takes the space before it (`mask_lstrip`), so "a <mask>" fills the word with its space."""
    engine.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=add_prefix_space, trim_offsets=trim_offsets)
    engine.decoder = decoders.ByteLevel()
    vocab = engine.get_vocab()
    cls, sep = specials["cls"], specials["sep"]
    engine.post_processor = processors.RobertaProcessing((sep, vocab[sep]), (cls, vocab[cls]),
                                                         trim_offsets=trim_offsets, add_prefix_space=add_prefix_space)
    engine.add_special_tokens([AddedToken(specials[r], special=True, normalized=False,
                                          lstrip=mask_lstrip and r == "mask") for r in ROLES])
    return engine


def metaspace_pre_tokenizer():
    """SentencePiece's word marking as XLM-RoBERTa has it: split on whitespace, `▁` before every word."""
    return pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(),
                                    pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")])


def xlmr_pipeline(engine: Engine, specials: dict[str, str]) -> Engine:
    """XLM-RoBERTa's pre-tokenizer, decoder and template around a Unigram model (the normalizer is the caller's)."""
    engine.pre_tokenizer = metaspace_pre_tokenizer()
    engine.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    vocab = engine.get_vocab()
    cls, sep = specials["cls"], specials["sep"]
    engine.post_processor = processors.TemplateProcessing(
        single=f"{cls}:0 $A:0 {sep}:0", pair=f"{cls}:0 $A:0 {sep}:0 {sep}:0 $B:0 {sep}:0",
        special_tokens=[(cls, vocab[cls]), (sep, vocab[sep])])
    engine.add_special_tokens([AddedToken(specials[r], special=True, normalized=False, lstrip=r == "mask")
                               for r in ROLES])
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
    return Options(lowercase=spec.get("type") == "Lowercase", strip_accents=False)


def _state(component) -> dict | None:
    return None if component is None else json.loads(component.__getstate__())


def _template(engine: Engine) -> tuple[list, list]:
    """The post-processor as two lists (single, pair) of `(id | "A" | "B", type_id)`; a special id is an int."""
    spec = _state(engine.post_processor)
    if spec is not None and spec.get("type") == "Sequence":  # e.g. [ByteLevel (offsets only), TemplateProcessing]
        spec = next((p for p in spec.get("processors", []) if p.get("type") in
                     ("TemplateProcessing", "BertProcessing", "RobertaProcessing")), None)
    kind = spec and spec.get("type")
    if kind == "TemplateProcessing":
        ids = {name: v["ids"] for name, v in spec.get("special_tokens", {}).items()}

        def parse(items):
            out = []
            for item in items:
                if "Sequence" in item:
                    out.append((item["Sequence"]["id"], item["Sequence"]["type_id"]))
                else:
                    out += [(i, item["SpecialToken"]["type_id"]) for i in ids[item["SpecialToken"]["id"]]]
            return out
        return parse(spec["single"]), parse(spec["pair"])
    if kind == "BertProcessing":
        cls, sep = spec["cls"][1], spec["sep"][1]
        return [(cls, 0), ("A", 0), (sep, 0)], [(cls, 0), ("A", 0), (sep, 0), ("B", 1), (sep, 1)]
    if kind == "RobertaProcessing":
        cls, sep = spec["cls"][1], spec["sep"][1]
        return [(cls, 0), ("A", 0), (sep, 0)], [(cls, 0), ("A", 0), (sep, 0), (sep, 0), ("B", 0), (sep, 0)]
    return [("A", 0)], [("A", 0), ("B", 1)]  # no template: the engine concatenates, B with type 1


def _token_name(value) -> str | None:
    """A special token as tokenizer_config.json / special_tokens_map.json write it: a string or an AddedToken dict."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"]
    return None


def _find_specials(kind: str, configs: Sequence[dict], engine: Engine | None = None) -> dict[str, str]:
    """Each role's token: the first config naming it, else the template's first/last special (cls/sep) and the
    model's unknown token, else the family's default. `bos`/`eos` default to cls/sep (RoBERTa's roles)."""
    found = dict(DEFAULT_SPECIALS[kind])
    if engine is not None:
        single = [t for t, _ in _template(engine)[0] if isinstance(t, int)]
        if single:
            found["cls"] = engine.id_to_token(single[0]) or found["cls"]
            found["sep"] = engine.id_to_token(single[-1]) or found["sep"]
        found["unk"] = getattr(engine.model, "unk_token", None) or found["unk"]  # WordPiece's and BPE's own
    for role in ROLES + ("bos", "eos"):
        for cfg in reversed(configs):  # the first config wins
            name = _token_name(cfg.get(f"{role}_token"))
            if name is not None:
                found[role] = name
    found.setdefault("bos", found["cls"])
    found.setdefault("eos", found["sep"])
    return found


class Encoding:
    """One encoded text or pair. Thin view over the engine's result; lists are built on first access."""

    __slots__ = ("_e", "_types")

    def __init__(self, e, types: bool = True):
        self._e = e
        self._types = types

    ids = property(lambda self: self._e.ids)  # token ids, specials included
    tokens = property(lambda self: self._e.tokens)
    offsets = property(lambda self: self._e.offsets)  # (start, end) characters in its own text; (0, 0) specials
    sequence_ids = property(lambda self: self._e.sequence_ids)  # 0 for A, 1 for B, None for specials
    word_ids = property(lambda self: self._e.word_ids)  # index of the pre-tokenized word; None for specials
    special_tokens_mask = property(lambda self: self._e.special_tokens_mask)  # 1 where the template added a token

    @property
    def type_ids(self) -> list[int]:
        """Segment ids: 0 for `[CLS] A [SEP]`, 1 for `B [SEP]`; all 0 for a family without them (RoBERTa)."""
        return self._e.type_ids if self._types else [0] * len(self._e)

    def __len__(self) -> int:
        return len(self._e.ids)

    def __repr__(self) -> str:
        return f"Encoding(tokens={self.tokens})"


class Tokenizer:
    """A WordPiece, byte-level BPE or Unigram tokenizer: `Tokenizer.from_pretrained(dir)`, `.encode`,
    `.encode_batch`, `.batch`, `.decode`. `kind` says which; `cls_id`, `sep_id`, `pad_id`, `mask_id`, `unk_id`
    (`bos_id`/`eos_id`) come from the files."""

    def __init__(self, vocab: dict[str, int] | None = None, options: Options = Options(), model_max_length: int = 512,
                 engine: Engine | None = None, *, specials: dict[str, str] | None = None,
                 uses_token_types: bool | None = None, source: str | Path = "tokenizer"):
        if engine is None:  # a WordPiece vocabulary with the reference pipeline
            if vocab is None:
                raise TypeError("Tokenizer needs a vocab or an engine")
            engine = build_engine(vocab, options, specials)
        model = type(engine.model).__name__
        if model not in KINDS:
            raise TokenizerError(f"{source}: model type {model!r} is not supported (supported: {', '.join(KINDS)})")
        self.kind = KINDS[model]
        self.options = options
        self.model_max_length = model_max_length
        self._engine = engine
        self._engine.no_padding()
        self._engine.no_truncation()
        self._truncating: dict[tuple, Engine] = {}  # one engine per truncation setting: the setting is state
        self._lock = threading.Lock()
        self.vocab = dict(vocab) if vocab is not None else engine.get_vocab(with_added_tokens=True)
        self.inv_vocab = {i: t for t, i in self.vocab.items()}
        self.specials = dict(specials) if specials else _find_specials(self.kind, [], engine)
        self.specials.setdefault("bos", self.specials["cls"])
        self.specials.setdefault("eos", self.specials["sep"])
        missing = [f"{r} ({self.specials[r]})" for r in ROLES + ("bos", "eos") if self.specials[r] not in self.vocab]
        if missing:
            raise TokenizerError(f"{source}: vocabulary lacks the special tokens {', '.join(missing)}")
        self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id, self.bos_id, self.eos_id = (
            self.vocab[self.specials[r]] for r in ROLES + ("bos", "eos"))
        self._single, self._pair = _template(engine)
        self.uses_token_types = (any(t != 0 for _, t in self._pair) if uses_token_types is None
                                 else bool(uses_token_types))

    # ---- construction -----------------------------------------------------------------------------------
    @classmethod
    def from_vocab(cls, vocab: Sequence[str] | dict[str, int] | str | Path, lowercase: bool = True,
                   strip_accents: bool | None = None, keep_hangul: bool = False,
                   tokenize_chinese_chars: bool = True, model_max_length: int = 512) -> Tokenizer:
        """A WordPiece vocabulary (a list, a dict or a vocab.txt) with BERT's pipeline and specials."""
        if isinstance(vocab, (str, Path)):
            vocab = read_vocab(vocab)
        elif not isinstance(vocab, dict):
            vocab = {t: i for i, t in enumerate(vocab)}
        opt = Options(lowercase, strip_accents, keep_hangul, tokenize_chinese_chars)
        return cls(dict(vocab), opt, model_max_length)

    @classmethod
    def from_pretrained(cls, path: str | Path) -> Tokenizer:
        """A checkpoint directory, read as transformers reads it: tokenizer.json when present (any WordPiece,
        BPE or Unigram pipeline, run as written); else vocab.json + merges.txt (byte-level BPE with RoBERTa's
        pipeline and template, `add_prefix_space` / `trim_offsets` from tokenizer_config.json); else vocab.txt
        (WordPiece with tokenizer_config.json's `do_lower_case`, `strip_accents`, `tokenize_chinese_chars`,
        `keep_hangul`). Special tokens from tokenizer_config.json, then special_tokens_map.json; segment ids
        follow tokenizer_config.json's `model_input_names` when it has them, else none where config.json's
        `type_vocab_size` is 1, else the template."""
        d = Path(path)
        if not d.is_dir():
            raise TokenizerError(f"{d}: no such directory")
        cfg = _read_json(d / "tokenizer_config.json") if (d / "tokenizer_config.json").is_file() else {}
        stm = _read_json(d / "special_tokens_map.json") if (d / "special_tokens_map.json").is_file() else {}
        max_len = cfg.get("model_max_length", 512)
        max_len = max_len if isinstance(max_len, int) and 0 < max_len <= 1_000_000 else 512
        names = cfg.get("model_input_names")
        types = ("token_type_ids" in names) if isinstance(names, list) else None
        if types is None and (d / "config.json").is_file():
            # klue/roberta: BERT's template and a one-row segment table; a segment id 1 would index past it
            model_cfg = _read_json(d / "config.json")
            types = False if model_cfg.get("type_vocab_size") == 1 else None
        if (d / "tokenizer.json").is_file():
            return cls._from_tokenizer_json(d / "tokenizer.json", [cfg, stm], max_len, types)
        if (d / "vocab.json").is_file() and (d / "merges.txt").is_file():
            specials = _find_specials("bpe", [cfg, stm])
            vocab = _read_json(d / "vocab.json")
            if not all(isinstance(k, str) and isinstance(v, int) for k, v in vocab.items()):
                raise TokenizerError(f"{d / 'vocab.json'}: expected an object of token -> integer id")
            _check_unique_ids(vocab, d / "vocab.json")
            merges = read_merges(d / "merges.txt")
            missing = [specials[r] for r in ROLES if specials[r] not in vocab]
            if missing:
                raise TokenizerError(f"{d / 'vocab.json'}: vocabulary lacks the special tokens {', '.join(missing)}")
            try:
                engine = Engine(BPE(vocab, merges, fuse_unk=False))
            except Exception as e:
                raise TokenizerError(f"{d / 'merges.txt'}: {_one_line(e)}") from None
            # transformers reads `<mask>`'s lstrip from tokenizer_config.json's AddedToken form only
            mask = cfg.get("mask_token")
            roberta_pipeline(engine, specials, bool(cfg.get("add_prefix_space", False)),
                             bool(cfg.get("trim_offsets", True)), isinstance(mask, dict) and bool(mask.get("lstrip")))
            return cls(None, Options(lowercase=False, strip_accents=False), max_len, engine, specials=specials,
                       uses_token_types=types, source=d / "vocab.json")
        if (d / "vocab.txt").is_file():
            specials = _find_specials("wordpiece", [cfg, stm])
            opt = Options(lowercase=bool(cfg.get("do_lower_case", True)), strip_accents=cfg.get("strip_accents"),
                          keep_hangul=bool(cfg.get("keep_hangul", False)),
                          tokenize_chinese_chars=bool(cfg.get("tokenize_chinese_chars", True)))
            vocab = read_vocab(d / "vocab.txt", tuple(specials[r] for r in ROLES))  # its errors name the file
            try:
                return cls(vocab, opt, max_len, specials=specials, uses_token_types=types, source=d / "vocab.txt")
            except TokenizerError as e:
                raise TokenizerError(f"{d / 'vocab.txt'}: {e}") from None
        spm = next((d / n for n in SPM_FILES if (d / n).is_file()), None)
        if spm is not None:
            raise TokenizerError(f"{spm}: a SentencePiece model needs the sentencepiece package, which bertkit does "
                                 f"not use; provide tokenizer.json (transformers writes one: "
                                 f"AutoTokenizer.from_pretrained(dir).save_pretrained(dir))")
        raise TokenizerError(f"{d}: no tokenizer found (looked for tokenizer.json, vocab.json + merges.txt and "
                             f"vocab.txt)")

    @classmethod
    def _from_tokenizer_json(cls, file: Path, configs: list[dict], max_len: int, types: bool | None) -> Tokenizer:
        spec = _read_json(file)
        model = spec.get("model")
        if not isinstance(model, dict):
            raise TokenizerError(f"{file}: field 'model' is missing or not an object")
        declared = model.get("type")
        if declared is not None and declared not in KINDS:  # older files leave the type out: the engine infers it
            raise TokenizerError(f"{file}: model type {declared!r} is not supported (supported: "
                                 f"{', '.join(KINDS)})")
        if isinstance(model.get("vocab"), dict):
            _check_unique_ids(model["vocab"], file)
        try:
            engine = Engine.from_file(str(file))
        except Exception as e:
            raise TokenizerError(f"{file}: cannot be read by the tokenizers engine ({_one_line(e)})") from None
        kind = KINDS.get(type(engine.model).__name__)
        if kind is None:
            raise TokenizerError(f"{file}: model type {type(engine.model).__name__!r} is not supported (supported: "
                                 f"{', '.join(KINDS)})")
        return cls(None, _options_from_normalizer(spec.get("normalizer")), max_len, engine,
                   specials=_find_specials(kind, configs, engine), uses_token_types=types, source=file)

    def save(self, path: str | Path) -> None:
        """What transformers reads back for this kind, each file written atomically: tokenizer.json,
        tokenizer_config.json (the class that runs this pipeline, the special tokens), special_tokens_map.json, and
        the legacy vocabulary files: vocab.txt (WordPiece), vocab.json + merges.txt (BPE)."""
        d = Path(path)
        state = json.loads(self._engine.to_str())
        atomic_write_text(d / "tokenizer.json", self._engine.to_str(pretty=True))
        sp = self.specials
        inputs = ["input_ids", "token_type_ids", "attention_mask"] if self.uses_token_types else \
            ["input_ids", "attention_mask"]
        named = {"unk_token": sp["unk"], "sep_token": sp["sep"], "pad_token": sp["pad"], "cls_token": sp["cls"],
                 "mask_token": sp["mask"]}
        if self.kind == "wordpiece":
            ordered = sorted(self.vocab.items(), key=lambda kv: kv[1])
            atomic_write_text(d / "vocab.txt", "".join(t + "\n" for t, _ in ordered))
            o = self.options
            # transformers' BertTokenizer rebuilds the reference normalizer from these flags and would decompose
            # Hangul again; the generic fast class runs tokenizer.json as written, so a Korean-safe vocabulary
            # names it.
            cls_name = "PreTrainedTokenizerFast" if o.keep_hangul and o.strips else "BertTokenizer"
            config = {"tokenizer_class": cls_name, "model_input_names": inputs,
                      "do_lower_case": o.lowercase, "strip_accents": o.strip_accents,
                      "tokenize_chinese_chars": o.tokenize_chinese_chars, "keep_hangul": o.keep_hangul,
                      "model_max_length": self.model_max_length, **named}
            specials_map = {f"{r}_token": sp[r] for r in ROLES}
        else:
            if self.kind == "bpe":
                model = state["model"]
                atomic_write_text(d / "vocab.json", json.dumps(model["vocab"], ensure_ascii=False) + "\n")
                merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
                atomic_write_text(d / "merges.txt", "#version: 0.2\n" + "".join(m + "\n" for m in merges))
            cls_name, extra = _transformers_class(self.kind, state)
            config = {"tokenizer_class": cls_name, "model_input_names": inputs,
                      "model_max_length": self.model_max_length, **extra,
                      "bos_token": sp["bos"], "eos_token": sp["eos"], **named}
            specials_map = {f"{r}_token": sp[r] for r in ("bos", "eos") + ROLES}
        atomic_write_text(d / "tokenizer_config.json", json.dumps(config, indent=2, ensure_ascii=False) + "\n")
        atomic_write_text(d / "special_tokens_map.json", json.dumps(specials_map, indent=2, ensure_ascii=False) + "\n")

    # ---- encoding ------------------------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return max(self.vocab.values()) + 1

    def num_special_tokens(self, pair: bool = False) -> int:
        """How many tokens the template adds: 2 / 3 for BERT, 2 / 4 for RoBERTa."""
        return sum(1 for t, _ in (self._pair if pair else self._single) if isinstance(t, int))

    def build_inputs(self, ids: Sequence[int], pair_ids: Sequence[int] | None = None) -> tuple[list[int], list[int]]:
        """The template around already tokenized ids: (`[CLS] A [SEP] B [SEP]` or `<s> A </s></s> B </s>`, their
        segment ids), as `encode` would give them."""
        parts = {"A": list(ids), "B": list(pair_ids) if pair_ids is not None else []}
        out, types = [], []
        for item, t in (self._single if pair_ids is None else self._pair):
            piece = [item] if isinstance(item, int) else parts[item]
            out += piece
            types += [t if self.uses_token_types else 0] * len(piece)
        return out, types

    def _engine_for(self, max_length: int | None, strategy: str, stride: int) -> Engine:
        if max_length is None:
            return self._engine
        key = (max_length, strategy, stride)
        with self._lock:
            engine = self._truncating.get(key)
            if engine is None:
                need = self.num_special_tokens(pair=True)
                if max_length < need:
                    names = " ".join(self.inv_vocab.get(t, "?") if isinstance(t, int) else t for t, _ in self._pair)
                    raise ValueError(f"max_length={max_length}: needs room for the {need} special tokens of the "
                                     f"template ({names})")
                engine = Engine.from_str(self._engine.to_str())
                engine.enable_truncation(max_length, stride=stride, strategy=strategy)
                self._truncating[key] = engine
        return engine

    def encode(self, text: str, pair: str | None = None, max_length: int | None = None,
               truncation: str = "longest_first", stride: int = 0) -> Encoding:
        """`[CLS] text [SEP]` or `[CLS] text [SEP] pair [SEP]` (or this tokenizer's template). `max_length`
        truncates (pairs by `truncation`: longest_first, only_first or only_second); None keeps everything."""
        _check_text(text, "text")
        if pair is not None:
            _check_text(pair, "pair")
        try:
            return Encoding(self._engine_for(max_length, truncation, stride).encode(text, pair), self.uses_token_types)
        except Exception as e:  # the engine raises plain Exceptions, e.g. a pair that cannot be truncated
            raise ValueError(f"cannot encode: {e}") from None

    def encode_batch(self, texts: Sequence[str], pairs: Sequence[str] | None = None, max_length: int | None = None,
                     truncation: str = "longest_first", stride: int = 0, add_special_tokens: bool = True
                     ) -> list[Encoding]:
        """Many texts (or pairs) at once, in parallel in the engine. `add_special_tokens=False` gives the bare
        ids (no template), as pre-training data needs them."""
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
        types = self.uses_token_types
        return [Encoding(e, types) for e in encoded]

    def batch(self, texts: Sequence[str], pairs: Sequence[str] | None = None, max_length: int | None = None,
              truncation: str = "longest_first", pad_to_multiple_of: int = 1) -> dict[str, torch.Tensor]:
        """Model inputs: `input_ids`, `token_type_ids` (zeros for a family without segments), `attention_mask` as
        (B, T) int64 tensors padded to the longest. `max_length` defaults to `model_max_length`."""
        encs = self.encode_batch(texts, pairs, max_length or self.model_max_length, truncation)
        return self.collate([e.ids for e in encs], [e.type_ids for e in encs] if self.uses_token_types else None,
                            pad_to_multiple_of)

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
        """(vocab_size,) bool: True for pieces that continue a word (whole-word masking). WordPiece: `##` pieces;
        byte-level BPE: pieces not starting with `Ġ` (the space before a word); Unigram: pieces not starting
        with `▁`. Special and added tokens never continue a word. Computed once (a pass over the vocabulary; an
        explanation asks for it per request) and returned read-only."""
        mask = getattr(self, "_continues", None)
        if mask is None:
            prefix, start = self.word_markers()
            mask = np.zeros(self.vocab_size, dtype=bool)
            for token, i in self.vocab.items():
                mask[i] = token.startswith(prefix) if prefix else not token.startswith(start)
            for i in self._engine.get_added_tokens_decoder():
                mask[i] = False
            mask.setflags(write=False)
            self._continues = mask
        return mask

    def added_token_mask(self) -> np.ndarray:
        """(vocab_size,) bool: True for the template's specials and the added tokens (never a word's piece)."""
        mask = np.zeros(self.vocab_size, dtype=bool)
        for i in [*self._engine.get_added_tokens_decoder(), *self.special_ids()]:
            if i is not None and 0 <= i < self.vocab_size:
                mask[i] = True
        return mask

    def piece_ids(self, text: str) -> list[int]:
        """The ids of `text`'s pieces, without the template's specials and without truncation."""
        _check_text(text, "text")
        return self._engine.encode(text, add_special_tokens=False).ids

    def word_markers(self) -> tuple[str | None, str | None]:
        """(continuation prefix, word-start mark): one of them says where words begin in this vocabulary."""
        prefix = getattr(self._engine.model, "continuing_subword_prefix", None)
        if prefix:
            return prefix, None
        spec = _state(self._engine.pre_tokenizer) or {}
        for p in [spec] + spec.get("pretokenizers", []):
            if p.get("type") == "ByteLevel":
                return None, "Ġ"
            if p.get("type") == "Metaspace":
                return None, p.get("replacement", "▁")
        raise TokenizerError(f"this {self.kind} tokenizer marks neither word starts (ByteLevel, Metaspace) nor "
                             f"continuations (a continuing_subword_prefix): cannot tell words apart")

    def piece_text(self, token: str) -> str:
        """A vocabulary piece as the text it stands for, without its word mark (`##`, `Ġ`/byte-level, `▁`)."""
        prefix, start = self.word_markers()
        if prefix:
            return token.removeprefix(prefix)
        if start == "Ġ":
            return bytes(_BYTE_OF.get(c, 32) for c in token).decode("utf-8", errors="replace").strip(" ")
        return token.removeprefix(start)

    def covering_prefix(self, text: str, tokens: int) -> str | None:
        """A prefix of `text` whose first `tokens` tokens are those of `text` itself, whatever follows the
        prefix or was cut off after it; None when `text` (taken as possibly cut) does not hold that many.

        Why a character count cannot decide it: one token may cover any number of characters (a word over 100
        characters is one [UNK]; control and zero-width characters, accents and runs of spaces vanish in
        normalisation), so no prefix length is safe a priori. But normalisation acts per character and the
        model per pre-tokenized word, so the tokens of every word that ends before the last word of a prefix are
        final. Prefixes are tried at growing lengths; the last word of each is not counted."""
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
        """Tokens without the template's specials."""
        _check_text(text, "text")
        return self._engine.encode(text, add_special_tokens=False).tokens

    def convert_ids_to_tokens(self, ids: Iterable[int]) -> list[str]:
        unk = self.specials["unk"]
        return [self.inv_vocab.get(int(i), unk) for i in ids]

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = True) -> str:
        """Ids back to text: pieces joined, specials dropped (lower-casing and accents do not come back)."""
        return self._engine.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character table, which byte-level BPE pieces are written in."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = {}, 0
    for b in range(256):
        if b in keep:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return chars


_BYTE_OF = {c: b for b, c in _bytes_to_unicode().items()}


def _transformers_class(kind: str, state: dict) -> tuple[str, dict]:
    """The transformers class that runs this pipeline, with its settings. transformers' model-specific classes
    rebuild their own pipeline around the vocabulary (keeping only the model and the template of tokenizer.json),
    so RobertaTokenizer is named only when its rebuild is this pipeline; otherwise, and for Unigram (whose
    XLMRobertaTokenizer drops any normalizer but SentencePiece's compiled one), the generic fast class, which runs
    tokenizer.json as written."""
    model, pre, post = state["model"], state.get("pre_tokenizer") or {}, state.get("post_processor") or {}
    if kind == "bpe":
        plain = (state.get("normalizer") is None and not model.get("dropout") and not model.get("fuse_unk")
                 and not model.get("byte_fallback") and not model.get("ignore_merges")
                 and not model.get("continuing_subword_prefix") and not model.get("end_of_word_suffix"))
        if plain and pre.get("type") == "ByteLevel" and pre.get("use_regex", True) and \
                post.get("type") == "RobertaProcessing" and \
                (pre.get("add_prefix_space"), pre.get("trim_offsets")) == \
                (post.get("add_prefix_space"), post.get("trim_offsets")):
            return "RobertaTokenizer", {"add_prefix_space": pre["add_prefix_space"],
                                        "trim_offsets": pre["trim_offsets"], "errors": "replace"}
    return "PreTrainedTokenizerFast", {}


def _one_line(e: Exception) -> str:
    return " ".join(str(e).split())


def _check_unique_ids(vocab: dict, file: Path) -> None:
    if len(set(vocab.values())) != len(vocab):
        seen: dict[int, str] = {}
        clash = next((t, seen[i]) for t, i in vocab.items() if seen.setdefault(i, t) != t)
        raise TokenizerError(f"{file}: tokens {clash[1]!r} and {clash[0]!r} share the id "
                             f"{vocab[clash[0]]}; each id must name one token")


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


def read_vocab(path: str | Path, specials: Sequence[str] = SPECIALS) -> dict[str, int]:
    """vocab.txt: one token per line, its id the line number (as the reference reads it); `specials` must be in it."""
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
    missing = [t for t in dict.fromkeys(specials) if t not in vocab]
    if missing:
        raise TokenizerError(f"{path}: vocabulary lacks the special tokens {', '.join(missing)}")
    return vocab


def read_merges(path: Path) -> list[tuple[str, str]]:
    """merges.txt: one merge a line, two pieces separated by a space, after an optional `#version` line."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise TokenizerError(f"{path}: not valid UTF-8 ({e.reason} at byte {e.start})") from None
    merges = []
    for n, line in enumerate(text.splitlines(), 1):
        if (n == 1 and line.startswith("#version")) or not line.strip():
            continue
        parts = line.split(" ")
        if len(parts) != 2 or not all(parts):
            raise TokenizerError(f"{path}: line {n}: expected two pieces separated by one space, got {line!r}")
        merges.append((parts[0], parts[1]))
    return merges
