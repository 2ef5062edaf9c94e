"""The task registry (`TASKS`: one `Task` per name, pure data) and the readers behind it: labelled examples from
the files the benchmarks ship, with errors that name file and line.

- sentence and sentence-pair tasks, classification and regression (`read_sentences`): GLUE (SST-2, CoLA, MRPC,
  RTE, STS-B, WNLI, QNLI, MNLI, QQP formats), NSMC, KLUE-NLI and KLUE-STS (JSON), and a user's own file
  (`custom`: TSV, CSV with a header, or JSON lines; fields `text`, optional `text_pair`, `label`);
- span question answering (`read_squad`): SQuAD v1.1 and v2.0 (`is_impossible`), KorQuAD 1.0;
- token tagging (`read_conll`, `read_klue_ner`): CoNLL-2003 (word ... tag columns, with or without `-DOCSTART-`),
  KLUE-NER (one character per line, BIO).

A task names its family (`bertkit.task_families.FAMILIES`: what the model, the features, the loss, the
prediction and the HTTP schema are); everything task-specific is a field here, so no code tests a task's name.
Adding a task is one `register_task` call (or one entry below).
"""

from __future__ import annotations

import csv
import gzip
import io
import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from bertkit.data.corpus import CorpusError, json_objects


@dataclass
class Example:
    text: str
    label: str | float
    text_pair: str | None = None


@dataclass(frozen=True)
class Spec:
    """Where a sentence task's fields are: column names (a header row) or indices (no header)."""

    text: str | int
    label: str | int
    pair: str | int | None = None
    labels: tuple[str, ...] | None = None  # the data's label values in id order; None: regression or from the data
    # Readable names for `labels`, in the same order (GLUE's, where the files say 0/1): what examples carry, what
    # config.json's id2label saves and what predictions answer.
    names: tuple[str, ...] | None = None
    regression: bool = False
    header: bool = True
    fmt: str = "tsv"  # tsv | klue-json


Reader = Callable[[Path, "Task"], "tuple[list, list[str] | None]"]


@dataclass(frozen=True)
class Task:
    """One task: how its files are read, which family it is, how it is scored and split, its defaults."""

    family: str  # a name in bertkit.task_families.FAMILIES
    metric: str  # the main metric: the best epoch is chosen by it
    splits: tuple[str, str]  # file stems of (training, evaluation)
    reader: Reader  # (path, task) -> (examples, label names or None)
    spec: Spec | None = None  # sentence tasks: where the fields are
    # example -> the key that keeps related examples on one side of `split_eval`; None: the task has a training
    # split and `split_eval` is refused
    group: Callable | None = None
    max_length: int = 128  # the default --max-length (QA: 384, the paper's)
    korean: bool = False  # QA: KorQuAD's answer normalisation for EM / F1

    @property
    def labels(self) -> tuple[str, ...] | None:
        return self.spec.labels if self.spec else None

    @property
    def names(self) -> tuple[str, ...] | None:
        return self.spec.names if self.spec else None


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
    return spec.names[spec.labels.index(value)] if spec.names else value


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


def _rows_jsonl(path: Path, spec: Spec):
    for where, item in json_objects(path, _read_text(path).splitlines()):
        for name in (spec.text, spec.label):
            if name not in item:
                raise CorpusError(f"{where}: missing field '{name}'")
        if not isinstance(item[spec.text], str) or not isinstance(item.get(spec.pair, ""), (str, type(None))):
            raise CorpusError(f"{where}: '{spec.text}' and '{spec.pair}' must be strings")
        yield where, item[spec.text], item.get(spec.pair), item[spec.label]


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


def read_sentences(path: Path, task: Task) -> tuple[list[Example], list[str] | None]:
    """A sentence task's split: (examples, class names, or None for regression)."""
    spec = task.spec
    if spec.fmt == "klue-json":
        rows = _rows_klue(path, spec)
    elif path.name.removesuffix(".gz").endswith(".jsonl"):
        rows = _rows_jsonl(path, spec)
    else:
        rows = _rows_tsv(path, spec)
    examples = [Example(text, _label(label, spec, where), pair) for where, text, pair, label in rows]
    if not examples:
        raise CorpusError(f"{path}: no examples")
    if spec.regression:
        return examples, None
    if spec.labels is not None:
        return examples, list(spec.names or spec.labels)
    return examples, sorted({str(e.label) for e in examples})


def get_task(name: str) -> Task:
    """The registered task `name`, or a ValueError listing the registered ones."""
    if name not in TASKS:
        raise ValueError(f"task '{name}': choose one of {', '.join(TASKS)}")
    return TASKS[name]


def read_task(path: str | Path, task: str) -> tuple[list, list[str] | None]:
    """(examples, label names or None) of one split file of `task`, read by the task's reader."""
    t = get_task(task)
    return t.reader(Path(path), t)


def align_labels(examples: list[Example], task: str, model_labels: list[str], source: str | Path | None = None,
                 model: str | Path | None = None) -> list[Example]:
    """`examples` labelled as the model names its classes: a model fine-tuned on the raw values ("0"/"1", before
    bertkit named GLUE's and NSMC's classes) is still evaluated and distilled correctly. With `source`, a gold
    label the model does not know (a fresh/rotten model on SST-2) is a ValueError naming the labels, the file
    (`source`) and the model's labels, not a KeyError later."""
    spec = TASKS[task].spec if task in TASKS else None
    if spec is not None and spec.names and set(model_labels) <= set(spec.labels):
        raw = dict(zip(spec.names, spec.labels))
        examples = [replace(e, label=raw.get(e.label, e.label)) for e in examples]
    unknown = sorted({str(e.label) for e in examples} - set(model_labels))
    if source is not None and unknown:
        shown = ", ".join(repr(u) for u in unknown[:10]) + (f" and {len(unknown) - 10} more" * (len(unknown) > 10))
        raise ValueError(f"{source}: gold label(s) {shown} unknown to the model{f' {model}' if model else ''} "
                         f"(its labels: {', '.join(model_labels)}); evaluate it on the task it was trained for")
    return examples


def read_classification(path: str | Path, task: str) -> tuple[list[Example], list[str]]:
    """A classification task's split (regression tasks are refused here)."""
    examples, labels = read_task(path, task)
    if labels is None:
        raise ValueError(f"task '{task}' is a regression task")
    return examples, labels


def find_split(directory: str | Path, stem: str) -> Path:
    """`DIR/<stem>` with .tsv, .csv, .jsonl, .json or no extension, gzipped or not (`DIR` itself if it is a file)."""
    d = Path(directory)
    if d.is_file():
        return d
    for suffix in (".tsv", ".csv", ".jsonl", ".json", ""):
        for gz in ("", ".gz"):
            if (d / f"{stem}{suffix}{gz}").is_file():
                return d / f"{stem}{suffix}{gz}"
    raise CorpusError(f"{d}: no {stem}.tsv, .csv, .jsonl or .json (gzipped or not)")



# ---- span question answering -------------------------------------------------------------------------------------
@dataclass
class QAExample:
    id: str
    question: str
    context: str
    answers: list[tuple[str, int]]  # (text, character offset in context); several for dev sets
    is_impossible: bool = False
    title: str = ""


def read_squad(path: str | Path) -> list[QAExample]:
    """SQuAD v1.1 / v2.0 and KorQuAD 1.0 (the same JSON layout). Every answer must sit where `answer_start` says:
    a misplaced one is an error naming the question, never a silently wrong training target."""
    path = Path(path)
    try:
        data = json.loads(_read_text(path))
    except json.JSONDecodeError as e:
        raise CorpusError(f"{path}: malformed JSON at line {e.lineno}, column {e.colno}: {e.msg}") from None
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise CorpusError(f"{path}: expected a JSON object with a 'data' list (SQuAD layout)")
    examples = []
    for i, article in enumerate(data["data"]):
        for j, para in enumerate(article.get("paragraphs", []) if isinstance(article, dict) else []):
            where = f"{path}: data[{i}].paragraphs[{j}]"
            try:
                context = para["context"]
                for k, qa in enumerate(para["qas"]):
                    here = f"{where}.qas[{k}] (id {qa.get('id', '?')})"
                    impossible = bool(qa.get("is_impossible", False))
                    answers = []
                    for a in qa.get("answers", []):
                        text, start = a["text"], int(a["answer_start"])
                        if context[start:start + len(text)] != text:
                            raise CorpusError(f"{here}: answer {text!r} is not at answer_start {start} of the context")
                        answers.append((text, start))
                    if not answers and not impossible:
                        raise CorpusError(f"{here}: no answers and not marked is_impossible")
                    if not isinstance(qa["question"], str) or not qa["question"].strip():
                        raise CorpusError(f"{here}: empty question")
                    examples.append(QAExample(str(qa["id"]), qa["question"], context, [] if impossible else answers,
                                              impossible, str(article.get("title", ""))))
            except (KeyError, TypeError, ValueError) as e:
                if isinstance(e, CorpusError):
                    raise
                raise CorpusError(f"{where}: missing or malformed field ({type(e).__name__}: {e})") from None
    if not examples:
        raise CorpusError(f"{path}: no questions")
    return examples


# ---- token tagging -----------------------------------------------------------------------------------------------
@dataclass
class TagExample:
    words: list[str]  # CoNLL: the words; KLUE-NER: the characters of `text`, spaces included
    tags: list[str]  # one per word
    text: str | None = None  # KLUE-NER: the sentence, so that predictions map back to character offsets
    id: str = ""


def read_conll(path: str | Path) -> list[TagExample]:
    """CoNLL-2003 style: one token per line, the word first and the tag last (`word POS chunk NER` or `word NER`),
    a blank line between sentences; `-DOCSTART-` lines (present or not) are skipped."""
    path = Path(path)
    examples, words, tags = [], [], []
    for lineno, line in enumerate(_read_text(path).splitlines(), 1):
        cols = line.split()
        if not cols or cols[0] == "-DOCSTART-":
            if words:
                examples.append(TagExample(words, tags, id=f"{len(examples)}"))
                words, tags = [], []
            continue
        if len(cols) < 2:
            raise CorpusError(f"{path}: line {lineno}: expected 'word ... tag', found {line!r}")
        words.append(cols[0])
        tags.append(_tag(cols[-1], f"{path}: line {lineno}"))
    if words:
        examples.append(TagExample(words, tags, id=f"{len(examples)}"))
    if not examples:
        raise CorpusError(f"{path}: no sentences")
    return examples


def read_klue_ner(path: str | Path) -> list[TagExample]:
    """KLUE-NER: `## <guid>\t<annotated sentence>` then one `character\tBIO tag` line per character (spaces
    included), a blank line between sentences; other `##` lines are comments."""
    path = Path(path)
    examples, chars, tags, guid = [], [], [], ""

    def flush():
        if chars:
            examples.append(TagExample(list(chars), list(tags), text="".join(chars), id=guid))
        chars.clear()
        tags.clear()

    for lineno, line in enumerate(_read_text(path).split("\n"), 1):
        if line.startswith("##"):
            head = line[2:].strip().split("\t", 1)
            if len(head) == 2 and not head[0].startswith(("토큰", "문장", "주석", "컬럼")):
                flush()
                guid = head[0]
            continue
        if not line.strip("\r"):
            flush()
            continue
        char, sep, tag = line.rstrip("\r").rpartition("\t")
        if not sep or len(char) != 1:
            raise CorpusError(f"{path}: line {lineno}: expected 'character<TAB>tag', found {line!r}")
        chars.append(char)
        tags.append(_tag(tag, f"{path}: line {lineno}"))
    flush()
    if not examples:
        raise CorpusError(f"{path}: no sentences")
    return examples


def _tag(tag: str, where: str) -> str:
    if tag != "O" and not (len(tag) > 2 and tag[0] in "BIES" and tag[1] == "-"):
        raise CorpusError(f"{where}: tag {tag!r} is not O, B-X, I-X, E-X or S-X")
    return tag


def _tag_labels(examples: list[TagExample]) -> list[str]:
    return sorted({t for e in examples for t in e.tags})


def read_conll_task(path: Path, task: Task) -> tuple[list[TagExample], list[str]]:
    examples = read_conll(path)
    return examples, _tag_labels(examples)


def read_klue_ner_task(path: Path, task: Task) -> tuple[list[TagExample], list[str]]:
    examples = read_klue_ner(path)
    return examples, _tag_labels(examples)


def read_squad_task(path: Path, task: Task) -> tuple[list[QAExample], None]:
    return read_squad(path), None


# ---- the registry ------------------------------------------------------------------------------------------------
def sentence_task(spec: Spec, splits: tuple[str, str] = ("train", "dev"), metric: str | None = None,
                  group: Callable | None = None) -> Task:
    """A classification (or, with `spec.regression`, regression) task read by `read_sentences`; the metric
    defaults to accuracy (Spearman for regression)."""
    return Task("regression" if spec.regression else "classification",
                metric or ("spearman" if spec.regression else "accuracy"), splits, read_sentences, spec, group)


def _first_text(e: Example) -> str:
    return e.text


def _title(e: QAExample) -> str:
    return e.title


def _id(e: TagExample) -> str:
    return e.id


TASKS: dict[str, Task] = {
    "sst2": sentence_task(Spec("sentence", "label", labels=("0", "1"), names=("negative", "positive"))),
    "cola": sentence_task(Spec(3, 1, labels=("0", "1"), names=("unacceptable", "acceptable"), header=False),
                          metric="mcc"),
    "mrpc": sentence_task(Spec("#1 String", "Quality", pair="#2 String", labels=("0", "1"),
                               names=("not_equivalent", "equivalent")), metric="f1"),
    "rte": sentence_task(Spec("sentence1", "label", pair="sentence2", labels=("entailment", "not_entailment"))),
    "wnli": sentence_task(Spec("sentence1", "label", pair="sentence2", labels=("0", "1"),
                               names=("not_entailment", "entailment"))),
    "qnli": sentence_task(Spec("question", "label", pair="sentence", labels=("entailment", "not_entailment"))),
    "stsb": sentence_task(Spec("sentence1", "score", pair="sentence2", regression=True)),
    "mnli": sentence_task(Spec("sentence1", "gold_label", pair="sentence2",
                               labels=("contradiction", "entailment", "neutral")), splits=("train", "dev_matched")),
    "qqp": sentence_task(Spec("question1", "is_duplicate", pair="question2", labels=("0", "1"),
                              names=("not_duplicate", "duplicate")), metric="f1"),
    "nsmc": sentence_task(Spec("document", "label", labels=("0", "1"), names=("negative", "positive")),
                          splits=("train", "test")),
    # KLUE ships no training split here: `split_eval` keeps a premise / first sentence on one side
    "klue-nli": sentence_task(Spec("premise", "gold_label", pair="hypothesis",
                                   labels=("entailment", "neutral", "contradiction"), fmt="klue-json"),
                              splits=("klue-nli-v1.1_train", "klue-nli-v1.1_dev"), group=_first_text),
    "klue-sts": sentence_task(Spec("sentence1", "labels.label", pair="sentence2", regression=True, fmt="klue-json"),
                              splits=("klue-sts-v1.1_train", "klue-sts-v1.1_dev"), metric="pearson",
                              group=_first_text),
    # KorSTS / KorNLI (Kakao Brain): STS-B and XNLI/SNLI/MNLI translated to Korean. KorNLI's training files are
    # the translated SNLI/MNLI (multinli.train.ko.tsv; snli_1.0_train.ko.tsv has the same columns).
    "korsts": sentence_task(Spec("sentence1", "score", pair="sentence2", regression=True),
                            splits=("sts-train", "sts-dev")),
    "kornli": sentence_task(Spec("sentence1", "gold_label", pair="sentence2",
                                 labels=("entailment", "neutral", "contradiction")),
                            splits=("multinli.train.ko", "xnli.dev.ko")),
    "custom": sentence_task(Spec("text", "label", pair="text_pair")),  # .tsv, .csv, .jsonl; `text_pair` optional
    "conll2003": Task("tagging", "f1", ("eng.train", "eng.testb"), read_conll_task, group=_id),
    "klue-ner": Task("tagging", "f1", ("klue-ner-v1.1_dev", "klue-ner-v1.1_dev"), read_klue_ner_task, group=_id),
    "squad": Task("qa", "f1", ("train-v1.1", "dev-v1.1"), read_squad_task, group=_title, max_length=384),
    "squad2": Task("qa", "f1", ("train-v2.0", "dev-v2.0"), read_squad_task, group=_title, max_length=384),
    "korquad": Task("qa", "f1", ("KorQuAD_v1.0_train", "KorQuAD_v1.0_dev"), read_squad_task, group=_title,
                    max_length=384, korean=True),
}


def register_task(name: str, task: Task, replace_existing: bool = False) -> Task:
    """Add `task` to the registry under `name` (the CLI's --task choices are read from it when a parser is
    built). A name already taken is refused unless `replace_existing`."""
    if name in TASKS and not replace_existing:
        raise ValueError(f"task '{name}' is already registered")
    TASKS[name] = task
    return task
