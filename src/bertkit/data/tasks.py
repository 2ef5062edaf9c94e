"""Task readers: labelled examples from the files the benchmarks ship, with errors that name file and line.

Single-sentence classification for now (SST-2, NSMC, a user's CSV/TSV with `text` and `label` columns); the
fine-tuning issue adds pairs, spans and tags.
"""

from __future__ import annotations

import csv
import gzip
import io
from dataclasses import dataclass
from pathlib import Path

from bertkit.data.corpus import CorpusError


@dataclass
class Example:
    text: str
    label: str
    text_pair: str | None = None


# task -> (column holding the text, column holding the label, label names in id order)
TASKS = {
    "sst2": ("sentence", "label", ["0", "1"]),
    "nsmc": ("document", "label", ["0", "1"]),
    "tsv": ("text", "label", None),  # a user's file: labels are taken as they come, sorted
}


def _read_text(path: Path) -> str:
    if not path.is_file():
        raise CorpusError(f"{path}: file not found")
    raw = gzip.open(path, "rb").read() if path.suffix == ".gz" else path.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise CorpusError(f"{path}: line {line}: not valid UTF-8") from None


def read_classification(path: str | Path, task: str) -> tuple[list[Example], list[str]]:
    """(examples, label names) of a TSV with a header row. A missing column, a short row or an unknown label
    is a CorpusError naming the file and line."""
    if task not in TASKS:
        raise ValueError(f"task '{task}': choose one of {', '.join(TASKS)}")
    path = Path(path)
    text_col, label_col, names = TASKS[task]
    delimiter = "," if path.name.removesuffix(".gz").endswith(".csv") else "\t"
    rows = csv.reader(io.StringIO(_read_text(path)), delimiter=delimiter, quoting=csv.QUOTE_NONE
                      if delimiter == "\t" else csv.QUOTE_MINIMAL)
    header = next(rows, None)
    if header is None:
        raise CorpusError(f"{path}: empty file")
    for col in (text_col, label_col):
        if col not in header:
            raise CorpusError(f"{path}: line 1: no '{col}' column in the header {header}")
    ti, li = header.index(text_col), header.index(label_col)
    examples = []
    for lineno, row in enumerate(rows, 2):
        if not row:
            continue
        if len(row) <= max(ti, li):
            raise CorpusError(f"{path}: line {lineno}: {len(row)} fields, expected {len(header)}")
        label = row[li].strip()
        if names is not None and label not in names:
            raise CorpusError(f"{path}: line {lineno}: label '{label}' is not one of {names}")
        examples.append(Example(row[ti], label))
    if not examples:
        raise CorpusError(f"{path}: no examples")
    return examples, names if names is not None else sorted({e.label for e in examples})


SPLITS = {"sst2": ("train", "dev"), "nsmc": ("train", "test"), "tsv": ("train", "dev")}  # (train, evaluation)


def find_split(directory: str | Path, task: str, split: str) -> Path:
    """`DIR/<split>.tsv`, `.tsv.gz`, `.csv` or `.csv.gz`."""
    d = Path(directory)
    for suffix in (".tsv", ".tsv.gz", ".csv", ".csv.gz"):
        if (d / f"{split}{suffix}").is_file():
            return d / f"{split}{suffix}"
    raise CorpusError(f"{d}: no {split}.tsv(.gz) or {split}.csv(.gz) for task '{task}'")
