"""Shared fixtures: where the real data and the real weights are, and skips that say why."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("BERTKIT_DATA", ROOT.parent / "shared" / "data"))


def need_data(*parts: str) -> Path:
    path = DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data not found at {path} (set BERTKIT_DATA or put ../shared/data beside the repo)")
    return path


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    from bertkit.checkpoint import CheckpointError, packaged_model_dir

    try:
        return packaged_model_dir()
    except CheckpointError as e:
        pytest.skip(str(e))


@pytest.fixture(scope="session", autouse=True)
def _onnx_cache(tmp_path_factory):
    """ONNX exports (the default backend makes them) go to a cache of the test session's own, not the user's;
    subprocesses (the CLI tests) inherit it."""
    from bertkit.infer.onnxrt import CACHE_ENV

    before = os.environ.get(CACHE_ENV)
    os.environ[CACHE_ENV] = str(tmp_path_factory.mktemp("bertkit-cache"))
    yield
    if before is None:
        os.environ.pop(CACHE_ENV, None)
    else:
        os.environ[CACHE_ENV] = before


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def gz_lines(*parts: str) -> list[str]:
    with gzip.open(need_data(*parts), "rt", encoding="utf-8") as f:
        return f.read().splitlines()


def sst2(split: str = "dev") -> list[str]:
    return [ln.split("\t")[0] for ln in gz_lines("glue", "SST-2", f"{split}.tsv.gz")[1:]]


def nsmc(split: str = "test") -> list[str]:
    return [ln.split("\t")[1] for ln in gz_lines("nsmc", f"{split}.tsv.gz")[1:]]


def klue_sentences() -> list[str]:
    out = []
    for name in ("klue-nli-v1.1_dev.json.gz", "klue-sts-v1.1_dev.json.gz"):
        for row in json.loads("\n".join(gz_lines("klue", name))):
            out += [row["premise"] if "premise" in row else row["sentence1"],
                    row["hypothesis"] if "hypothesis" in row else row["sentence2"]]
    return out


def conll_sentences(split: str = "eng.testa.gz") -> list[str]:
    sents, words = [], []
    for ln in gz_lines("conll2003", split) + [""]:
        if not ln.strip():
            if words:
                sents.append(" ".join(words))
            words = []
        elif not ln.startswith("-DOCSTART-"):
            words.append(ln.split()[0])
    return sents


def wiki_paragraphs(n: int) -> list[str]:
    out = []
    with gzip.open(need_data("wikitext", "enwiki_2015", "enwiki_part1.txt.gz"), "rt", encoding="utf-8") as f:
        for ln in f:
            if ln.strip():
                out.append(ln.strip())
                if len(out) == n:
                    break
    return out


def klue_ner_sentences() -> list[str]:
    sents, chars = [], []
    for ln in gz_lines("klue", "klue-ner-v1.1_dev.tsv.gz") + [""]:
        if ln.startswith("##"):
            continue
        if not ln:
            if chars:
                sents.append("".join(chars))
            chars = []
        else:
            chars.append(ln.split("\t")[0])
    return sents


def real_lines() -> dict[str, list[str]]:
    """More than 20,000 real lines from six sources, English and Korean."""
    return {
        "sst2": sst2("train")[:8000],
        "nsmc": nsmc("test")[:6000],
        "klue": klue_sentences(),
        "klue-ner": klue_ner_sentences()[:2000],
        "wikipedia": wiki_paragraphs(1500),
        "conll": conll_sentences()[:2500],
    }


def nsmc_corpus_head(directory: Path, lines: int, vocab_size: int):
    """`directory/corpus.txt`: the first `lines` lines of the NSMC review corpus (documents = movies, blank line
    between them), and `directory/vocab`: a vocabulary of `vocab_size` learned on it. Returns the tokenizer."""
    from bertkit.vocab import learn_vocab

    src = need_data("nsmc", "corpus.txt.gz")
    with gzip.open(src, "rt", encoding="utf-8") as f, open(directory / "corpus.txt", "w", encoding="utf-8") as out:
        for i, line in enumerate(f):
            out.write(line)
            if i + 1 >= lines:
                break
    tok, _ = learn_vocab([directory / "corpus.txt"], size=vocab_size, show_progress=False)
    tok.save(directory / "vocab")
    return tok


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory):
    """3,000 lines of the NSMC review corpus and a 1,500-piece vocabulary (pre-training tests)."""
    d = tmp_path_factory.mktemp("corpus")
    nsmc_corpus_head(d, 3000, 1500)
    return d


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory, minilm_dir) -> Path:
    """A tiny random BERT (2 layers, 128 wide) with all-MiniLM-L6-v2's tokenizer, saved as an HF directory."""
    from bertkit import BertConfig, BertModel, Tokenizer

    d = tmp_path_factory.mktemp("tiny")
    BertModel(BertConfig.named("tiny", max_position_embeddings=512)).save_pretrained(
        d, tokenizer=Tokenizer.from_pretrained(minilm_dir))
    return d
