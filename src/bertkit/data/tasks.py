"""Task readers: labelled examples from the files the benchmarks ship, with errors that name file and line.

Sentence and sentence-pair tasks, classification and regression: GLUE (SST-2, CoLA, MRPC, RTE, STS-B, WNLI, QNLI,
MNLI, QQP formats), NSMC, KLUE-NLI and KLUE-STS (JSON), and a user's own TSV/CSV (`text`, optional `text_pair`,
`label`). Spans (SQuAD, KorQuAD) and tags (CoNLL, KLUE-NER) come with the fine-tuning issue.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
from dataclasses import dataclass
from pathlib import Path

from bertkit.data.corpus import CorpusError


@dataclass
class Example:
    text: str
    label: str | float
    text_pair: str | None = None


@dataclass(frozen=True)
class Spec:
    """Where a task's fields are: column names (a header row) or indices (no header)."""

    text: str | int
    label: str | int
    pair: str | int | None = None
    labels: tuple[str, ...] | None = None  # class names in id order; None: regression or taken from the data
    regression: bool = False
    header: bool = True
    splits: tuple[str, str] = ("train", "dev")  # (training, evaluation)
    fmt: str = "tsv"  # tsv | klue-json


TASKS: dict[str, Spec] = {
    "sst2": Spec("sentence", "label", labels=("0", "1")),
    "cola": Spec(3, 1, labels=("0", "1"), header=False),
    "mrpc": Spec("#1 String", "Quality", pair="#2 String", labels=("0", "1")),
    "rte": Spec("sentence1", "label", pair="sentence2", labels=("entailment", "not_entailment")),
    "wnli": Spec("sentence1", "label", pair="sentence2", labels=("0", "1")),
    "qnli": Spec("question", "label", pair="sentence", labels=("entailment", "not_entailment")),
    "stsb": Spec("sentence1", "score", pair="sentence2", regression=True),
    "mnli": Spec("sentence1", "gold_label", pair="sentence2", labels=("contradiction", "entailment", "neutral"),
                 splits=("train", "dev_matched")),
    "qqp": Spec("question1", "is_duplicate", pair="question2", labels=("0", "1")),
    "nsmc": Spec("document", "label", labels=("0", "1"), splits=("train", "test")),
    "klue-nli": Spec("premise", "gold_label", pair="hypothesis", labels=("entailment", "neutral", "contradiction"),
                     fmt="klue-json"),
    "klue-sts": Spec("sentence1", "labels.label", pair="sentence2", regression=True, fmt="klue-json"),
    "tsv": Spec("text", "label", pair="text_pair"),  # a user's file; `text_pair` optional
}


def _read_text(path: Path) -> str:
    if not path.is_file():
        raise CorpusError(f"{path}: file not found")
    try:
        raw = gzip.open(path, "rb").read() if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError) as e:
        raise CorpusError(f"{path}: cannot be read ({e})") from None
    try:
        return raw.decode("utf-8-sig")  # MRPC's header starts with a byte-order mark
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise CorpusError(f"{path}: line {line}: not valid UTF-8") from None


def _label(value, spec: Spec, where: str):
    if spec.regression:
        try:
            return float(value)
        except (TypeError, ValueError):
            raise CorpusError(f"{where}: score {value!r} is not a number") from None
    value = str(value).strip()
    if spec.labels is not None and value not in spec.labels:
        raise CorpusError(f"{where}: label {value!r} is not one of {list(spec.labels)}")
    return value


def _rows_tsv(path: Path, spec: Spec):
    delimiter = "," if path.name.removesuffix(".gz").endswith(".csv") else "\t"
    reader = csv.reader(io.StringIO(_read_text(path)), delimiter=delimiter,
                        quoting=csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL)
    fields = [spec.text, spec.label] + ([spec.pair] if spec.pair is not None else [])
    if spec.header:
        header = next(reader, None)
        if header is None:
            raise CorpusError(f"{path}: empty file")
        for name in fields[:2]:
            if name not in header:
                raise CorpusError(f"{path}: line 1: no '{name}' column in the header {header}")
        index = {name: header.index(name) for name in fields if name in header}
        width = len(header)
    else:
        index, width = {f: f for f in fields}, max(f for f in fields) + 1
    for lineno, row in enumerate(reader, 2 if spec.header else 1):
        if not row:
            continue
        if len(row) < width:
            raise CorpusError(f"{path}: line {lineno}: {len(row)} fields, expected {width}")
        pair = row[index[spec.pair]] if spec.pair in index else None
        yield f"{path}: line {lineno}", row[index[spec.text]], pair, row[index[spec.label]]


def _rows_klue(path: Path, spec: Spec):
    try:
        data = json.loads(_read_text(path))
    except json.JSONDecodeError as e:
        raise CorpusError(f"{path}: malformed JSON at line {e.lineno}, column {e.colno}: {e.msg}") from None
    if not isinstance(data, list):
        raise CorpusError(f"{path}: expected a JSON list of examples")
    for i, item in enumerate(data):
        where = f"{path}: example {i} ({item.get('guid', '?') if isinstance(item, dict) else '?'})"
        try:
            label = item
            for key in str(spec.label).split("."):
                label = label[key]
            yield where, item[spec.text], item[spec.pair], label
        except (KeyError, TypeError) as e:
            raise CorpusError(f"{where}: missing field {e}") from None


def read_task(path: str | Path, task: str) -> tuple[list[Example], list[str] | None]:
    """(examples, class names, or None for regression) of one split file of `task`."""
    if task not in TASKS:
        raise ValueError(f"task '{task}': choose one of {', '.join(TASKS)}")
    spec, path = TASKS[task], Path(path)
    rows = _rows_klue(path, spec) if spec.fmt == "klue-json" else _rows_tsv(path, spec)
    examples = [Example(text, _label(label, spec, where), pair) for where, text, pair, label in rows]
    if not examples:
        raise CorpusError(f"{path}: no examples")
    if spec.regression:
        return examples, None
    return examples, list(spec.labels) if spec.labels is not None else sorted({str(e.label) for e in examples})


def read_classification(path: str | Path, task: str) -> tuple[list[Example], list[str]]:
    """A classification task's split (regression tasks are refused here)."""
    examples, labels = read_task(path, task)
    if labels is None:
        raise ValueError(f"task '{task}' is a regression task")
    return examples, labels


def find_split(directory: str | Path, task: str, split: str) -> Path:
    """`DIR/<split>` with .tsv, .tsv.gz, .csv, .csv.gz, .json or .json.gz; KLUE files keep their long names."""
    d = Path(directory)
    names = [f"{split}{s}" for s in (".tsv", ".tsv.gz", ".csv", ".csv.gz", ".json", ".json.gz")]
    if TASKS[task].fmt == "klue-json":
        names += [f"{task}-v1.1_{split}.json", f"{task}-v1.1_{split}.json.gz"]
    for name in names:
        if (d / name).is_file():
            return d / name
    raise CorpusError(f"{d}: no {split}.tsv(.gz) or {split}.csv(.gz) for task '{task}'")


SPLITS = {task: spec.splits for task, spec in TASKS.items()}
