"""Pre-training data: documents -> instances -> memory-mapped shards -> masked batches.

Instances (`build_shards`), as in the paper and Google's `create_pretraining_data.py`:
- objective `bert`: segments A and B of sentences; a target length of max_seq_length - 3, shorter (uniform in
  [2, target]) with probability `short_seq_prob`; B is the true continuation (IsNext) or, with probability 0.5,
  sentences from another document (NotNext), and the continuation's unused sentences go back to the document;
  pairs are truncated longest-first, one token at a time from a random end. One deviation: the label is drawn
  first, so a chunk of a single sentence is split in two for IsNext instead of always becoming NotNext; the
  classes are balanced 50/50 (Google's rule skews toward NotNext on corpora of short documents).
- objective `roberta`: FULL-SENTENCES packing, one segment of whole sentences up to max_seq_length - 2 tokens,
  running across document boundaries with an extra [SEP] where a document ends; no NSP.
- objective `albert`: sentence-order prediction (Lan et al. 2020): A and B are two consecutive pieces of the same
  chunk of a document, cut and truncated as for `bert`; with probability 0.5 they are swapped (label 1), else kept
  in order (label 0). Both classes come from the same text, so topic gives the label away in neither.

Storage: each shard is a flat int32 array of token ids (`.tokens.npy`) and an (n, 4) int64 index (`.index.npy`:
offset, length of A, length of B, pair label: NSP 0 IsNext, 1 NotNext; SOP 0 in order, 1 swapped), opened
memory-mapped, so a corpus far larger than memory works. `meta.json`, written last, lists every shard with its size
and CRC32; a missing, truncated or altered shard is an error naming the file.

Masking (`Masker`) happens when a batch is served: 15 % of the non-special tokens (at least one, at most
`max_predictions`), of which 80 % become [MASK], 10 % a random non-special token, 10 % stay; optionally whole
words. The mask of an instance is a function of (seed, instance, epoch) for dynamic masking, or of (seed,
instance, copy) with `duplication` static copies: it never depends on the batch or the process it lands in,
which is what makes resumed and distributed runs equal to a single uninterrupted one.
"""

from __future__ import annotations

import array
import json
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from bertkit.data.corpus import CorpusError, read_documents
from bertkit.data.features import IGNORE
from bertkit.io import atomic_path, atomic_write_text
from bertkit.tokenizer import Tokenizer

OBJECTIVES = ("bert", "roberta", "albert")  # instances: NSP pairs, packed sentences, SOP pairs


class ShardError(ValueError):
    """A shard set that is missing, incomplete, truncated or altered; the message names the file."""


@dataclass
class InstanceConfig:
    max_seq_length: int = 128
    objective: str = "bert"
    short_seq_prob: float = 0.1
    seed: int = 12345
    docs_per_chunk: int = 4000  # documents tokenised and paired at a time (NotNext partners come from the chunk)
    instances_per_shard: int = 200_000

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective '{self.objective}': choose one of {', '.join(OBJECTIVES)}")
        if self.max_seq_length < 8:
            raise ValueError(f"max_seq_length={self.max_seq_length}: too short for a pair of segments")


# ---- instances ------------------------------------------------------------------------------------------------
def truncate_pair(a: list[int], b: list[int], max_tokens: int, rng: np.random.Generator) -> None:
    """Longest-first, in place, one token at a time from the front or the back at random (as the reference)."""
    while len(a) + len(b) > max_tokens:
        longer = a if len(a) > len(b) else b
        if rng.random() < 0.5:
            del longer[0]
        else:
            longer.pop()


def bert_instances(docs: list[list[list[int]]], cfg: InstanceConfig, rng: np.random.Generator
                   ) -> Iterator[tuple[list[int], list[int], int]]:
    """(A, B, NotNext) triples from tokenised documents (lists of sentences of ids)."""
    max_tokens = cfg.max_seq_length - 3
    for d, doc in enumerate(docs):
        target = max_tokens if rng.random() >= cfg.short_seq_prob else int(rng.integers(2, max_tokens + 1))
        chunk, length, i = [], 0, 0
        while i < len(doc):
            chunk.append(doc[i])
            length += len(doc[i])
            if i == len(doc) - 1 or length >= target:
                not_next = rng.random() < 0.5
                a_end = int(rng.integers(1, len(chunk))) if len(chunk) >= 2 else 1
                a = [t for s in chunk[:a_end] for t in s]
                if not_next:
                    b: list[int] = []
                    other = d
                    for _ in range(10):
                        other = int(rng.integers(len(docs)))
                        if other != d:
                            break
                    if other != d:
                        partner = docs[other]
                        for s in partner[int(rng.integers(len(partner))):]:
                            b.extend(s)
                            if len(b) >= target - len(a):
                                break
                        i -= len(chunk) - a_end  # the unused sentences go back to this document
                    else:
                        not_next = False
                if not not_next:
                    if len(chunk) >= 2:
                        b = [t for s in chunk[a_end:] for t in s]
                    elif len(a) >= 2:  # one sentence: its two halves are contiguous text
                        cut = int(rng.integers(1, len(a)))
                        a, b = a[:cut], a[cut:]
                    else:
                        b = []
                truncate_pair(a, b, max_tokens, rng)
                if a and b:
                    yield a, b, int(not_next)
                chunk, length = [], 0
            i += 1


def albert_instances(docs: list[list[list[int]]], cfg: InstanceConfig, rng: np.random.Generator
                     ) -> Iterator[tuple[list[int], list[int], int]]:
    """(A, B, swapped) triples: contiguous segments of one document, in order (0) or swapped (1)."""
    max_tokens = cfg.max_seq_length - 3
    for doc in docs:
        target = max_tokens if rng.random() >= cfg.short_seq_prob else int(rng.integers(2, max_tokens + 1))
        chunk, length = [], 0
        for i, sentence in enumerate(doc):
            chunk.append(sentence)
            length += len(sentence)
            if i == len(doc) - 1 or length >= target:
                a_end = int(rng.integers(1, len(chunk))) if len(chunk) >= 2 else 1
                a = [t for s in chunk[:a_end] for t in s]
                b = [t for s in chunk[a_end:] for t in s]
                if not b and len(a) >= 2:  # one sentence: its two halves are contiguous text
                    cut = int(rng.integers(1, len(a)))
                    a, b = a[:cut], a[cut:]
                truncate_pair(a, b, max_tokens, rng)
                swapped = rng.random() < 0.5
                if a and b:
                    yield (b, a, 1) if swapped else (a, b, 0)
                chunk, length = [], 0


def roberta_instances(docs: list[list[list[int]]], cfg: InstanceConfig, sep_id: int, carry: list[int]
                      ) -> Iterator[tuple[list[int], list[int], int]]:
    """Packed whole sentences across document boundaries (an extra [SEP] marks each boundary). `carry` holds the
    unfinished sequence between chunks."""
    max_tokens = cfg.max_seq_length - 2
    for doc in docs:
        for sentence in doc:
            for start in range(0, max(len(sentence), 1), max_tokens):  # a sentence longer than a sequence is cut
                piece = sentence[start:start + max_tokens]
                if carry and len(carry) + len(piece) > max_tokens:
                    yield carry.copy(), [], 0
                    carry.clear()
                carry.extend(piece)
        if carry and len(carry) < max_tokens:
            carry.append(sep_id)


def build_shards(corpus: Sequence[str | Path], tokenizer: Tokenizer, out: str | Path, cfg: InstanceConfig,
                 fmt: str = "sentences", eval_fraction: float = 0.01, max_eval_docs: int = 500,
                 show_progress: bool = True) -> dict:
    """Tokenise the corpus in chunks of documents, build instances, write `out/train` and `out/eval` shard sets
    (one document in every `1/eval_fraction`, up to `max_eval_docs`, is held out). Returns the train meta."""
    out = Path(out)
    rng = np.random.default_rng(cfg.seed)
    writers = {"train": ShardWriter(out / "train", cfg, tokenizer), "eval": ShardWriter(out / "eval", cfg, tokenizer)}
    carry: dict[str, list[int]] = {"train": [], "eval": []}
    n_docs = {"train": 0, "eval": 0}
    every = max(1, round(1 / eval_fraction)) if eval_fraction > 0 else 0
    total = sum(Path(p).stat().st_size for p in corpus if Path(p).is_file())
    bar = tqdm(total=total, unit="B", unit_scale=True, desc="building instances", disable=not show_progress)

    def flush(split: str, docs: list[list[str]]) -> None:
        sentences = [s for doc in docs for s in doc]
        encoded = tokenizer.encode_batch(sentences, add_special_tokens=False) if sentences else []
        ids, k = [], 0
        for doc in docs:
            ids.append([e.ids for e in encoded[k:k + len(doc)] if len(e.ids)])
            k += len(doc)
        ids = [d for d in ids if d]
        n_docs[split] += len(ids)
        if cfg.objective == "bert":
            instances = bert_instances(ids, cfg, rng)
        elif cfg.objective == "albert":
            instances = albert_instances(ids, cfg, rng)
        else:
            instances = roberta_instances(ids, cfg, tokenizer.sep_id, carry[split])
        for a, b, label in instances:
            writers[split].add(a, b, label)

    pending: dict[str, list[list[str]]] = {"train": [], "eval": []}
    for i, doc in enumerate(read_documents(corpus, fmt, progress=bar)):
        held_out = every and i % every == every // 2 and n_docs["eval"] + len(pending["eval"]) < max_eval_docs
        split = "eval" if held_out else "train"
        pending[split].append(doc)
        if len(pending[split]) >= cfg.docs_per_chunk:
            flush(split, pending[split])
            pending[split] = []
    for split in ("train", "eval"):
        if pending[split]:
            flush(split, pending[split])
        if carry[split]:
            writers[split].add(carry[split], [], 0)
    bar.close()
    names = ", ".join(map(str, corpus))
    if n_docs["train"] == 0:
        raise CorpusError(f"{names}: no text to pre-train on (the corpus is empty)")
    if cfg.objective == "bert" and n_docs["train"] + n_docs["eval"] < 2:
        raise CorpusError(f"{names}: only one document; NotNext pairs need at least two (separate documents by a "
                          f"blank line, or use --objective roberta)")
    meta = writers["train"].close(n_docs["train"])
    writers["eval"].close(n_docs["eval"])
    if meta["instances"] == 0:
        raise CorpusError(f"{names}: no instance could be built (documents too short?)")
    return meta


class ShardWriter:
    def __init__(self, directory: Path, cfg: InstanceConfig, tokenizer: Tokenizer):
        self.dir, self.cfg, self.tokenizer = directory, cfg, tokenizer
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "meta.json").unlink(missing_ok=True)  # the set is incomplete until meta.json is back
        self.tokens = array.array("i")  # 4 bytes a token, not a Python int each: shards stay cheap to build
        self.index = array.array("q")  # offset, len A, len B, label; 4 per instance
        self.shards: list[dict] = []
        self.count = 0

    def add(self, a: list[int], b: list[int], label: int) -> None:
        self.index.extend((len(self.tokens), len(a), len(b), label))
        self.tokens.extend(a)
        self.tokens.extend(b)
        if len(self.index) // 4 >= self.cfg.instances_per_shard:
            self._write()

    def _write(self) -> None:
        if not self.index:
            return
        name = f"shard-{len(self.shards):05d}"
        entry = {"name": name, "instances": len(self.index) // 4}
        for suffix, values in (("tokens", np.frombuffer(self.tokens, dtype=np.int32)),
                               ("index", np.frombuffer(self.index, dtype=np.int64).reshape(-1, 4))):
            path = self.dir / f"{name}.{suffix}.npy"
            with atomic_path(path) as tmp, open(tmp, "wb") as f:  # a file object: np.save would append .npy
                np.save(f, values, allow_pickle=False)
            data = path.read_bytes()
            entry[suffix] = {"bytes": len(data), "crc32": zlib.crc32(data)}
        self.shards.append(entry)
        self.count += entry["instances"]
        self.tokens, self.index = array.array("i"), array.array("q")

    def close(self, documents: int) -> dict:
        self._write()
        meta = {"format": "bertkit-pretraining-shards/1", "instances": self.count, "documents": documents,
                "config": asdict(self.cfg), "vocab_size": self.tokenizer.vocab_size, "shards": self.shards}
        atomic_write_text(self.dir / "meta.json", json.dumps(meta, indent=2) + "\n")
        return meta


# ---- reading -----------------------------------------------------------------------------------------------------
class ShardSet:
    """The instances of a shard set, memory-mapped: `len()`, `[j] -> (A, B, label)`."""

    def __init__(self, directory: str | Path, verify: bool = True):
        self.dir = Path(directory)
        meta_path = self.dir / "meta.json"
        if not meta_path.is_file():
            raise ShardError(f"{meta_path}: not found (the shard set is missing or was never finished)")
        try:
            self.meta = json.loads(meta_path.read_text(encoding="utf-8"))
            shards = self.meta["shards"]
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
            raise ShardError(f"{meta_path}: malformed ({type(e).__name__}: {e})") from None
        self.tokens, self.index, starts = [], [], [0]
        for entry in shards:
            arrays = {}
            for suffix in ("tokens", "index"):
                path = self.dir / f"{entry['name']}.{suffix}.npy"
                if not path.is_file():
                    raise ShardError(f"{path}: missing")
                size = path.stat().st_size
                if size != entry[suffix]["bytes"]:
                    raise ShardError(f"{path}: {size} bytes, expected {entry[suffix]['bytes']} (truncated?)")
                if verify and zlib.crc32(path.read_bytes()) != entry[suffix]["crc32"]:
                    raise ShardError(f"{path}: checksum mismatch (the file was altered or damaged)")
                try:
                    arrays[suffix] = np.load(path, mmap_mode="r", allow_pickle=False)
                except (ValueError, OSError, EOFError) as e:
                    raise ShardError(f"{path}: not a readable shard ({e})") from None
            idx = arrays["index"]
            if idx.ndim != 2 or idx.shape[1] != 4 or len(idx) != entry["instances"] or \
                    (len(idx) and idx[-1, 0] + idx[-1, 1] + idx[-1, 2] > len(arrays["tokens"])):
                raise ShardError(f"{self.dir / entry['name']}.index.npy: does not match its tokens file")
            self.tokens.append(arrays["tokens"])
            self.index.append(idx)
            starts.append(starts[-1] + len(idx))
        self.starts = np.asarray(starts)
        self.config = InstanceConfig(**self.meta["config"])

    def __len__(self) -> int:
        return int(self.starts[-1])

    def __getitem__(self, j: int) -> tuple[np.ndarray, np.ndarray, int]:
        s = int(np.searchsorted(self.starts, j, side="right") - 1)
        off, la, lb, label = self.index[s][j - self.starts[s]]
        toks = self.tokens[s]
        return toks[off:off + la], toks[off + la:off + la + lb], int(label)


# ---- masking and batches ------------------------------------------------------------------------------------------
@dataclass
class MaskingConfig:
    mlm_probability: float = 0.15
    max_predictions: int = 20  # per sequence (the reference: 20 at length 128, 80 at 512)
    whole_word: bool = False
    duplication: int = 0  # 0: dynamic masking; k > 0: static, k fixed masked copies of each instance
    seed: int = 12345


class Masker:
    """Builds model batches from instances: [CLS] A [SEP] (B [SEP]), segment ids, MLM labels, pair labels (NSP or
    SOP, under `next_sentence_label`)."""

    def __init__(self, tokenizer: Tokenizer, cfg: MaskingConfig):
        self.cfg = cfg
        self.cls, self.sep, self.pad, self.mask = tokenizer.cls_id, tokenizer.sep_id, tokenizer.pad_id, tokenizer.mask_id
        special = np.zeros(tokenizer.vocab_size, dtype=bool)
        special[tokenizer.special_ids()] = True
        self.special = special
        self.replacements = np.flatnonzero(~special)  # random tokens are never special
        self.continuation = tokenizer.continuation_mask()

    def mask_one(self, ids: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(masked ids, labels with -100 where nothing is predicted) for one sequence with its specials."""
        cfg = self.cfg
        candidates = np.flatnonzero(~self.special[ids])
        labels = np.full(len(ids), IGNORE, dtype=np.int64)
        if len(candidates) == 0:
            return ids, labels
        n = min(cfg.max_predictions, max(1, int(round(len(candidates) * cfg.mlm_probability))))
        if cfg.whole_word:
            # A word starts at a non-`##` piece, or after a special token (a segment cut inside a word).
            new_word = ~self.continuation[ids[candidates]]
            new_word[1:] |= np.diff(candidates) > 1
            words = np.split(candidates, np.flatnonzero(new_word[1:]) + 1)
            chosen: list[int] = []
            for w in rng.permutation(len(words)):
                if len(chosen) + len(words[w]) > n:
                    continue
                chosen.extend(words[w].tolist())
                if len(chosen) == n:
                    break
            picked = np.sort(np.asarray(chosen, dtype=np.int64))
        else:
            picked = np.sort(rng.choice(candidates, size=n, replace=False))
        labels[picked] = ids[picked]
        out = ids.copy()
        r = rng.random(len(picked))
        out[picked[r < 0.8]] = self.mask
        randomised = picked[(r >= 0.8) & (r < 0.9)]
        out[randomised] = self.replacements[rng.integers(len(self.replacements), size=len(randomised))]
        return out, labels

    def rng_for(self, instance: int, epoch: int) -> np.random.Generator:
        round_ = epoch % self.cfg.duplication if self.cfg.duplication > 0 else epoch
        return np.random.default_rng([self.cfg.seed, instance, round_])

    def batch(self, shards: ShardSet, instances: Sequence[int], epochs: Sequence[int]) -> dict[str, torch.Tensor]:
        seqs, types, labels, nsp = [], [], [], []
        for j, epoch in zip(instances, epochs):
            a, b, label = shards[j]
            ids = np.concatenate([[self.cls], a, [self.sep]] + ([b, [self.sep]] if len(b) else [])).astype(np.int64)
            masked, lab = self.mask_one(ids, self.rng_for(j, epoch))
            seqs.append(masked)
            labels.append(lab)
            types.append(np.concatenate([np.zeros(len(a) + 2, np.int64), np.ones(len(ids) - len(a) - 2, np.int64)]))
            nsp.append(label)
        T = max(map(len, seqs))
        batch = {k: np.full((len(seqs), T), fill, dtype=np.int64) for k, fill in
                 (("input_ids", self.pad), ("token_type_ids", 0), ("attention_mask", 0), ("labels", IGNORE))}
        for i, (s, t, lab) in enumerate(zip(seqs, types, labels)):
            batch["input_ids"][i, :len(s)] = s
            batch["token_type_ids"][i, :len(s)] = t
            batch["attention_mask"][i, :len(s)] = 1
            batch["labels"][i, :len(s)] = lab
        out = {k: torch.from_numpy(v) for k, v in batch.items()}
        out["next_sentence_label"] = torch.tensor(nsp, dtype=torch.long)
        return out


class Schedule:
    """Which instances make up each global step: a fresh permutation per epoch from (seed, epoch). Step s takes
    positions [s * B, (s + 1) * B) of the endless sequence of epochs, so the data position is the step itself.

    With `lengths`, batches hold instances of similar length (the length-grouped sampling of fine-tuning
    toolkits): the epoch's permutation is cut into pools of `pool` batches, each pool sorted longest first and cut
    into batches, and the order of the full batches shuffled. Every instance is still seen once an epoch, in an
    order that depends only on (seed, epoch); what shrinks is the padding that attention (quadratic in the padded
    length) and its dropout still compute."""

    def __init__(self, n: int, global_batch: int, seed: int, lengths: Sequence[int] | None = None, pool: int = 50):
        if n == 0:
            raise ShardError("the shard set holds no instances")
        if lengths is not None and len(lengths) != n:
            raise ValueError(f"Schedule: {len(lengths)} lengths for {n} instances")
        self.n, self.global_batch, self.seed, self.pool = n, global_batch, seed, pool
        self.lengths = None if lengths is None else np.asarray(lengths)
        self._perm: dict[int, np.ndarray] = {}

    def permutation(self, epoch: int) -> np.ndarray:
        if epoch not in self._perm:
            self._perm = {e: p for e, p in self._perm.items() if e == epoch - 1}  # a step may span two epochs
            rng = np.random.default_rng([self.seed, epoch])
            perm = rng.permutation(self.n)
            if self.lengths is not None:
                perm = self._grouped(perm, rng)
            self._perm[epoch] = perm
        return self._perm[epoch]

    def _grouped(self, perm: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        B, size = self.global_batch, self.global_batch * self.pool
        pools = [perm[i:i + size] for i in range(0, self.n, size)]
        perm = np.concatenate([p[np.argsort(-self.lengths[p], kind="stable")] for p in pools])
        full = self.n // B  # the partial last batch stays last, so step boundaries stay where they were
        order = rng.permutation(full)
        return np.concatenate([perm[:full * B].reshape(full, B)[order].reshape(-1), perm[full * B:]])

    def step(self, step: int) -> tuple[list[int], list[int]]:
        """(instances, epochs) of the global batch of `step`."""
        positions = range(step * self.global_batch, (step + 1) * self.global_batch)
        epochs = [p // self.n for p in positions]
        return [int(self.permutation(e)[p % self.n]) for p, e in zip(positions, epochs)], epochs
