"""The minimal classification recipe over the one loop (the fine-tuning issue grows it), and its task readers."""

from __future__ import annotations

import json

import pytest

from bertkit import BertConfig, BertModel, Tokenizer
from bertkit.cli import main
from bertkit.data.corpus import CorpusError
from bertkit.data.tasks import find_split, read_classification, read_task
from conftest import need_data


def test_readers_name_file_and_line(tmp_path):
    good = tmp_path / "train.tsv"
    good.write_text("sentence\tlabel\na fine film\t1\na dull one\t0\n", encoding="utf-8")
    examples, labels = read_classification(good, "sst2")
    assert [(e.text, e.label) for e in examples] == [("a fine film", "1"), ("a dull one", "0")] and labels == ["0", "1"]
    bad = tmp_path / "bad.tsv"
    bad.write_text("sentence\tlabel\nok\t1\nno label here\n", encoding="utf-8")
    with pytest.raises(CorpusError, match=r"bad.tsv: line 3: 1 fields, expected 2"):
        read_classification(bad, "sst2")
    bad.write_text("sentence\tlabel\nok\t7\n", encoding="utf-8")
    with pytest.raises(CorpusError, match=r"bad.tsv: line 2: label '7' is not one of"):
        read_classification(bad, "sst2")
    bad.write_text("text\tgold\nok\t1\n", encoding="utf-8")
    with pytest.raises(CorpusError, match=r"bad.tsv: line 1: no 'sentence' column"):
        read_classification(bad, "sst2")
    nsmc, _ = read_classification(need_data("nsmc", "test.tsv.gz"), "nsmc")
    assert len(nsmc) == 50000


@pytest.mark.parametrize("task,split,count,labels", [
    ("sst2", "dev", 872, ["0", "1"]), ("cola", "dev", 1043, ["0", "1"]), ("mrpc", "dev", 408, ["0", "1"]),
    ("rte", "dev", 277, ["entailment", "not_entailment"]), ("wnli", "dev", 71, ["0", "1"]),
    ("qnli", "dev", 5463, ["entailment", "not_entailment"]), ("stsb", "dev", 1500, None),
])
def test_glue_readers_on_the_real_files(task, split, count, labels):
    folder = {"sst2": "SST-2", "cola": "CoLA", "mrpc": "MRPC", "rte": "RTE", "wnli": "WNLI", "qnli": "QNLI",
              "stsb": "STS-B"}[task]
    examples, names = read_task(find_split(need_data("glue", folder), task, split), task)
    assert len(examples) == count and names == labels
    assert all(e.text for e in examples)
    assert (examples[0].text_pair is None) == (task in ("sst2", "cola"))
    if task == "stsb":
        assert all(0.0 <= e.label <= 5.0 for e in examples)


def test_klue_readers_on_the_real_files():
    nli, names = read_task(find_split(need_data("klue"), "klue-nli", "dev"), "klue-nli")
    assert len(nli) == 3000 and names == ["entailment", "neutral", "contradiction"] and nli[0].text_pair
    sts, none = read_task(find_split(need_data("klue"), "klue-sts", "dev"), "klue-sts")
    assert len(sts) == 519 and none is None and sts[0].label == 4.9


def test_finetune_cli_pretrained_and_random(tmp_path, minilm_dir, capsys):
    sst2 = need_data("glue", "SST-2")
    model_dir = tmp_path / "tiny"
    tiny = BertModel(BertConfig.named("tiny", max_position_embeddings=128))
    tiny.save_pretrained(model_dir, tokenizer=Tokenizer.from_pretrained(minilm_dir))
    for init in ("pretrained", "random"):
        out = tmp_path / init
        assert main(["finetune", "--task", "sst2", "--model", str(model_dir), "--data", str(sst2), "--out", str(out),
                     "--epochs", "1", "--max-train-examples", "256", "--max-eval-examples", "200", "--lr", "1e-3",
                     "--init", init, "--threads", "1"]) == 0
        summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert summary["init"] == init and summary["train_examples"] == 256 and summary["eval_examples"] == 200
        assert 0.3 < summary["accuracy"] < 1.0
        written = json.loads((out / "eval_results.json").read_text())
        assert written["accuracy"] == summary["accuracy"]
        assert json.loads((out / "config.json").read_text())["architectures"] == ["BertForSequenceClassification"]
    assert main(["finetune", "--task", "sst2", "--model", str(model_dir), "--data", str(tmp_path), "--out",
                 str(tmp_path / "x")]) == 2
    assert "no train.tsv(.gz) or train.csv(.gz) for task 'sst2'" in capsys.readouterr().err
