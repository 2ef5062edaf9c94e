"""Sentence pairs and triplets for sentence-embedding training (`bertkit.train.sentence`): what each loss reads.

A `PairSet` is rows of texts (columns) and one label per row, of one kind:

| kind | columns | label | from |
|---|---|---|---|
| score | (a, b) | similarity in [0, 1] (STS's 0-5 divided by 5) | STS-B, KorSTS, KLUE-STS; JSONL `sentence1`, `sentence2`, `score` |
| label | (a, b) | class index into `label_names` | KorNLI, KLUE-NLI, MRPC, QNLI; JSONL `sentence1`, `sentence2`, `label` |
| triplet | (anchor, positive[, negative]) | none | JSONL `anchor`, `positive`[, `negative`]; NLI via `nli_triplets` |
| text | (text,) or (source, translation) | none (the teacher's vector of the first column) | JSONL `text` or `source`, `translation` |

Where a dataset is spelt `--train NAME` it is a registered task of `bertkit.data.tasks` (its reader, so a file is read
the same way by `finetune` and `sbert`), found as `DATA/<folder>/<split stem>` by `find_split`; `NAME:FILE` reads
FILE in NAME's format; a `.jsonl` file is read by its fields. Errors name the file and line.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from bertkit.data.corpus import CorpusError, json_objects
from bertkit.data.tasks import _read_text, find_split, get_task, read_task


@dataclass(frozen=True)
class Dataset:
    task: str  # the bertkit.data.tasks name whose reader reads it
    folder: str  # under the data directory
    score_max: float = 0.0  # regression: the top of the gold scale (scores are divided by it); 0: classification
    positive: tuple[str, ...] = ()  # classification: the labels that make a pair a positive (MNRL)


DATASETS: dict[str, Dataset] = {
    "stsb": Dataset("stsb", "glue/STS-B", score_max=5.0),
    "korsts": Dataset("korsts", "kornlu", score_max=5.0),
    "klue-sts": Dataset("klue-sts", "klue", score_max=5.0),
    "kornli": Dataset("kornli", "kornlu", positive=("entailment",)),
    "klue-nli": Dataset("klue-nli", "klue", positive=("entailment",)),
    "mrpc": Dataset("mrpc", "glue/MRPC", positive=("equivalent",)),
    "qnli": Dataset("qnli", "glue/QNLI", positive=("entailment",)),
}
KINDS = ("score", "label", "triplet", "text")


@dataclass
class PairSet:
    kind: str  # one of KINDS
    columns: list[tuple[str, ...]]  # per row: its texts, the same number in every row
    labels: list = field(default_factory=list)  # per row (score / label kinds); empty otherwise
    label_names: list[str] | None = None  # label kind: the class names, in index order
    source: str = ""  # where it was read from, for messages
    positive: tuple[str, ...] = ()  # label kind: the classes that count as positive pairs

    def __len__(self) -> int:
        return len(self.columns)

    @property
    def width(self) -> int:
        return len(self.columns[0]) if self.columns else 0

    def texts(self) -> list[str]:
        """Every distinct text, in first-seen order."""
        return list(dict.fromkeys(t for row in self.columns for t in row))


def default_data_dir() -> Path:
    """`$BERTKIT_DATA`, else `../shared/data` beside the current directory (the layout of the development machines)."""
    return Path(os.environ.get("BERTKIT_DATA") or Path.cwd().parent / "shared" / "data")


def read_pairs(spec: str, split: str = "train", data_dir: str | Path | None = None) -> PairSet:
    """`NAME` (a `DATASETS` entry: its `split` file, `train` or `dev`, under `data_dir`), `NAME:FILE` (FILE in
    NAME's format) or a JSONL file."""
    name, sep, file = spec.partition(":")
    if sep and name in DATASETS:
        return _read_dataset(name, Path(file))
    if spec in DATASETS:
        d = DATASETS[spec]
        root = Path(data_dir) if data_dir else default_data_dir()
        stems = get_task(d.task).splits
        stem = stems[0] if split == "train" else stems[1]
        try:
            path = find_split(root / d.folder, stem)
        except CorpusError as e:
            raise CorpusError(f"{spec} ({split}): {e} (give --data DIR, the folder holding {d.folder}/, or "
                              f"{spec}:FILE)") from None
        return _read_dataset(spec, path)
    path = Path(spec)
    if path.name.removesuffix(".gz").endswith(".jsonl"):
        return read_jsonl(path)
    if not path.exists():
        raise CorpusError(f"{spec}: neither a dataset ({', '.join(DATASETS)}) nor a file")
    raise CorpusError(f"{spec}: give a .jsonl file, or NAME:FILE to read it in a dataset's format "
                      f"(NAME one of {', '.join(DATASETS)})")


def _read_dataset(name: str, path: Path) -> PairSet:
    d = DATASETS[name]
    examples, names = read_task(path, d.task)
    for i, e in enumerate(examples):
        if e.text_pair is None:
            raise CorpusError(f"{path}: example {i + 1}: no second sentence")
    columns = [(e.text, e.text_pair) for e in examples]
    if d.score_max:
        labels = [float(e.label) / d.score_max for e in examples]
        for i, s in enumerate(labels):
            if not 0.0 <= s <= 1.0:
                raise CorpusError(f"{path}: example {i + 1}: score {examples[i].label} outside 0..{d.score_max:g}")
        return PairSet("score", columns, labels, source=str(path))
    index = {n: i for i, n in enumerate(names)}
    return PairSet("label", columns, [index[str(e.label)] for e in examples], list(names), str(path), d.positive)


# JSONL: the set of fields on a row decides its kind; every row of a file must be of one kind (and width)
_LAYOUTS = {
    ("anchor", "positive"): "triplet", ("anchor", "negative", "positive"): "triplet",
    ("score", "sentence1", "sentence2"): "score", ("label", "sentence1", "sentence2"): "label",
    ("text",): "text", ("source",): "text", ("source", "translation"): "text",
}
_ORDER = ("anchor", "positive", "negative", "sentence1", "sentence2", "text", "source", "translation")


def read_jsonl(path: str | Path) -> PairSet:
    """One JSON object a line: {"anchor", "positive"[, "negative"]}, {"sentence1", "sentence2", "score" | "label"},
    {"text"} or {"source"[, "translation"]} (other fields are ignored). Scores must lie in [-1, 1] (the range of
    a cosine): divide STS's 0-5 by 5."""
    path = Path(path)
    kind, keys, columns, raw_labels = None, None, [], []
    for where, item in json_objects(path, _read_text(path).splitlines()):
        found = tuple(sorted(k for k in item if k in _ORDER or k in ("score", "label")))
        if found not in _LAYOUTS:
            raise CorpusError(f"{where}: fields {list(found)}: expected anchor/positive[/negative], "
                              f"sentence1/sentence2/score|label, text, or source[/translation]")
        if keys is None:
            kind, keys = _LAYOUTS[found], found
        elif found != keys:
            raise CorpusError(f"{where}: fields {list(found)} differ from the first row's {list(keys)}")
        texts = tuple(item[k] for k in _ORDER if k in item)
        for k in _ORDER:
            if k in item and (not isinstance(item[k], str) or not item[k].strip()):
                raise CorpusError(f"{where}: '{k}' must be a non-empty string")
        columns.append(texts)
        if kind == "score":
            s = item["score"]
            if isinstance(s, bool) or not isinstance(s, (int, float)) or not -1.0 <= s <= 1.0:
                raise CorpusError(f"{where}: score {s!r}: expected a number in [-1, 1] (divide STS's 0-5 by 5)")
            raw_labels.append(float(s))
        elif kind == "label":
            if not isinstance(item["label"], (str, int)) or isinstance(item["label"], bool):
                raise CorpusError(f"{where}: label {item['label']!r}: expected a string or an integer")
            raw_labels.append(str(item["label"]))
    if not columns:
        raise CorpusError(f"{path}: no rows")
    if kind == "label":
        names = sorted(set(raw_labels))
        return PairSet(kind, columns, [names.index(v) for v in raw_labels], names, str(path))
    return PairSet(kind, columns, raw_labels, source=str(path))


# ---- what each loss reads ----------------------------------------------------------------------------------------
def nli_triplets(pairs: PairSet, positive: str = "entailment", negative: str = "contradiction") -> PairSet:
    """SBERT's NLI recipe for MNRL: (premise, an entailed hypothesis, a contradicting one), one triplet per premise
    that has both (its first of each), so that no anchor appears twice in a batch, where it would be its own
    false negative."""
    if pairs.kind != "label" or positive not in (pairs.label_names or []) or negative not in pairs.label_names:
        raise CorpusError(f"{pairs.source}: NLI triplets need labels '{positive}' and '{negative}'")
    pos, neg = pairs.label_names.index(positive), pairs.label_names.index(negative)
    found: dict[str, dict[int, str]] = {}
    for (a, b), label in zip(pairs.columns, pairs.labels):
        if label in (pos, neg):
            found.setdefault(a, {}).setdefault(label, b)
    rows = [(a, h[pos], h[neg]) for a, h in found.items() if pos in h and neg in h]
    if not rows:
        raise CorpusError(f"{pairs.source}: no premise has both an '{positive}' and a '{negative}' hypothesis")
    return PairSet("triplet", rows, source=pairs.source)


def for_loss(pairs: PairSet, loss: str, threshold: float = 0.8) -> PairSet:
    """`pairs` as `loss` reads them, or a CorpusError saying why they cannot be:
    softmax: labelled pairs; cosine, cosent: scored pairs; mnrl / mnrl-symmetric: triplets, or the positive pairs
    (NLI: triplets with contradictions as hard negatives; other labels: the positive classes; scores >= `threshold`);
    mse: the texts (a pair set's every distinct sentence; (source, translation) kept as they are)."""
    kind, where = pairs.kind, pairs.source
    if loss == "softmax":
        if kind != "label":
            raise CorpusError(f"{where}: the softmax loss needs labelled pairs (NLI), not {kind} rows")
        return pairs
    if loss in ("cosine", "cosent"):
        if kind != "score":
            raise CorpusError(f"{where}: the {loss} loss needs scored pairs (STS), not {kind} rows")
        return pairs
    if loss in ("mnrl", "mnrl-symmetric"):
        if kind == "triplet":
            return pairs
        if kind == "label" and {"entailment", "contradiction"} <= set(pairs.label_names or ()):
            return nli_triplets(pairs)
        if kind == "label" and pairs.positive:
            keep = {pairs.label_names.index(p) for p in pairs.positive}
            rows = [c for c, y in zip(pairs.columns, pairs.labels) if y in keep]
        elif kind == "score":
            rows = [c for c, y in zip(pairs.columns, pairs.labels) if y >= threshold]
        else:
            raise CorpusError(f"{where}: {loss} needs (anchor, positive) pairs; {kind} rows say none")
        if not rows:
            raise CorpusError(f"{where}: no positive pairs for {loss}")
        return PairSet("triplet", rows, source=where)
    if loss == "mse":
        if kind == "text":
            return pairs
        return PairSet("text", [(t,) for t in pairs.texts()], source=where)
    raise ValueError(f"loss '{loss}': choose softmax, cosine, cosent, mnrl, mnrl-symmetric or mse")
