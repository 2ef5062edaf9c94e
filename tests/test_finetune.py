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
    # GLUE's files say 0/1; examples, config.json and answers carry GLUE's class names
    assert [(e.text, e.label) for e in examples] == [("a fine film", "positive"), ("a dull one", "negative")]
    assert labels == ["negative", "positive"]
    from bertkit.data.tasks import align_labels
    assert [e.label for e in align_labels(examples, "sst2", ["0", "1"])] == ["1", "0"]  # a model trained on 0/1
    assert align_labels(examples, "sst2", labels) is examples
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
    ("sst2", "dev", 872, ["negative", "positive"]), ("cola", "dev", 1043, ["unacceptable", "acceptable"]),
    ("mrpc", "dev", 408, ["not_equivalent", "equivalent"]),
    ("rte", "dev", 277, ["entailment", "not_entailment"]), ("wnli", "dev", 71, ["not_entailment", "entailment"]),
    ("qnli", "dev", 5463, ["entailment", "not_entailment"]), ("stsb", "dev", 1500, None),
])
def test_glue_readers_on_the_real_files(task, split, count, labels):
    folder = {"sst2": "SST-2", "cola": "CoLA", "mrpc": "MRPC", "rte": "RTE", "wnli": "WNLI", "qnli": "QNLI",
              "stsb": "STS-B"}[task]
    examples, names = read_task(find_split(need_data("glue", folder), split), task)
    assert len(examples) == count and names == labels
    assert all(e.text for e in examples)
    assert (examples[0].text_pair is None) == (task in ("sst2", "cola"))
    if task == "stsb":
        assert all(0.0 <= e.label <= 5.0 for e in examples)


def test_klue_readers_on_the_real_files():
    nli, names = read_task(find_split(need_data("klue"), "klue-nli-v1.1_dev"), "klue-nli")
    assert len(nli) == 3000 and names == ["entailment", "neutral", "contradiction"] and nli[0].text_pair
    sts, none = read_task(find_split(need_data("klue"), "klue-sts-v1.1_dev"), "klue-sts")
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
        config = json.loads((out / "config.json").read_text())
        assert config["architectures"] == ["BertForSequenceClassification"]
        assert config["id2label"] == {"0": "negative", "1": "positive"}
    (tmp_path / "empty").mkdir()
    assert main(["finetune", "--task", "sst2", "--model", str(model_dir), "--data", str(tmp_path / "empty"), "--out",
                 str(tmp_path / "x")]) == 2
    assert "no dev.tsv, .csv, .jsonl or .json (gzipped or not)" in capsys.readouterr().err



@pytest.mark.parametrize("task,data,extra,metric", [
    ("stsb", ("glue", "STS-B"), [], "spearman"),
    ("mrpc", ("glue", "MRPC"), [], "f1"),
    ("conll2003", ("conll2003",), [], "f1"),
    ("squad", ("squad", "dev-v1.1.json.gz"), ["--split-eval", "0.1", "--max-length", "192", "--doc-stride", "64",
                                              "--group-by-length"], "f1"),
])
def test_every_family_trains_evaluates_and_keeps_the_best_epoch(task, data, extra, metric, tiny_dir, tmp_path,
                                                                  capsys):
    out = tmp_path / task
    assert main(["finetune", "--task", task, "--model", str(tiny_dir), "--data", str(need_data(*data)), "--out",
                 str(out), "--epochs", "2", "--max-train-examples", "96", "--max-eval-examples", "48", "--lr", "1e-3",
                 "--threads", "1", *extra]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["metric"] == metric and summary["train_examples"] == 96 and summary["eval_examples"] == 48
    evals = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()
             if json.loads(line)["split"] == "eval"]
    assert len(evals) == 2  # one per epoch
    best = max(evals, key=lambda r: r[metric])
    assert summary[metric] == pytest.approx(best[metric]) and summary["best_step"] == best["step"]
    config = json.loads((out / "config.json").read_text())
    assert config["finetuning_task"] == task
    if task == "conll2003":
        assert set(config["id2label"].values()) >= {"O", "B-PER", "I-ORG"}
        assert config["architectures"] == ["BertForTokenClassification"]
    if task == "squad":
        assert config["architectures"] == ["BertForQuestionAnswering"] and "em" in summary

    # `evaluate` scores the saved (best) model the same way; `predict` answers in the family's fields
    split = ["--split-eval", "0.1"] if task == "squad" else []
    data_dir = str(need_data(*data))
    assert main(["evaluate", "--model", str(out), "--task", task, "--data", data_dir, "--output",
                 str(tmp_path / "m.json"), *split]) == 0
    evaluated = json.loads((tmp_path / "m.json").read_text())
    assert evaluated["metric"] == metric and 0.0 <= evaluated[metric] <= 1.0 or metric == "spearman"
    inputs = tmp_path / "in.txt"
    if task == "squad":
        inputs.write_text(json.dumps({"question": "Who won?", "context": "The Broncos won the game."}) + "\n",
                          encoding="utf-8")
    elif task in ("stsb", "mrpc"):
        inputs.write_text("A man plays.\tA man is playing.\nDogs run.\tThe market fell.\n", encoding="utf-8")
    else:
        inputs.write_text("Peter Blackburn visited Paris .\n\n", encoding="utf-8")
    pairs = ["--pairs"] if task in ("stsb", "mrpc") else []
    assert main(["predict", "--model", str(out), "--input", str(inputs), "--output", str(tmp_path / "p.jsonl"),
                 *pairs]) == 0
    lines = [json.loads(x) for x in (tmp_path / "p.jsonl").read_text(encoding="utf-8").splitlines()]
    want = {"stsb": {"score"}, "mrpc": {"label", "probs"}, "conll2003": {"entities"},
            "squad": {"answer", "start", "end", "score"}}[task]
    assert len(lines) == len(inputs.read_text(encoding="utf-8").splitlines()) and all(want <= set(x) for x in lines)
    if task == "squad":
        a = lines[0]
        assert "The Broncos won the game."[a["start"]:a["end"]] == a["answer"]
    if task == "conll2003":
        text = "Peter Blackburn visited Paris ."
        assert all(text[e["start"]:e["end"]] == e["text"] for e in lines[0]["entities"])
        assert lines[1] == {"entities": []}


def test_split_eval_keeps_groups_apart():
    from bertkit.data.tasks import read_squad
    from bertkit.train.finetune import TASK_INFO, split_by_group

    examples = read_squad(need_data("squad", "dev-v1.1.json.gz"))
    train_part, eval_part = split_by_group(examples, TASK_INFO["squad"].group, 0.2, seed=1)
    assert not {e.title for e in train_part} & {e.title for e in eval_part}
    assert 0.1 < len(eval_part) / len(examples) < 0.35
    again, _ = split_by_group(examples, TASK_INFO["squad"].group, 0.2, seed=1)
    assert [e.id for e in again] == [e.id for e in train_part]


def test_validation_holds_out_training_examples_never_the_evaluation_split(tiny_dir):
    """Choosing a learning rate must not read the evaluation split: `validation` scores a held-out part of the
    training examples instead: by group where the task has groups (KLUE-NLI's premise, inside the part that
    `split_eval` left for training), by text otherwise (NSMC)."""
    from bertkit.train.finetune import FinetuneConfig, load_task_data

    klue = need_data("klue", "klue-nli-v1.1_dev.json.gz")
    plain = FinetuneConfig(task="klue-nli", model=str(tiny_dir), eval_file=str(klue), split_eval=0.2)
    _, train, test, _ = load_task_data(plain)
    held = FinetuneConfig(task="klue-nli", model=str(tiny_dir), eval_file=str(klue), split_eval=0.2, validation=0.1)
    _, train2, valid, _ = load_task_data(held)
    key = lambda e: (e.text, e.text_pair)  # noqa: E731
    assert {key(e) for e in train2} | {key(e) for e in valid} == {key(e) for e in train}  # the training part only
    assert not {key(e) for e in valid} & {key(e) for e in test}
    assert not {e.text for e in valid} & {e.text for e in train2}  # a premise on one side
    assert 0.05 < len(valid) / len(train) < 0.15
    nsmc = FinetuneConfig(task="nsmc", model=str(tiny_dir), train_file=str(need_data("nsmc", "train.tsv.gz")),
                          eval_file=str(need_data("nsmc", "test.tsv.gz")), max_train_examples=2000, validation=0.1)
    _, train3, valid3, _ = load_task_data(nsmc)
    assert len(train3) + len(valid3) == 2000 and 100 < len(valid3) < 300
    assert not {e.text for e in valid3} & {e.text for e in train3}


def test_feature_based_tagging_trains_a_bilstm_on_frozen_layers(tiny_dir, tmp_path, capsys):
    from safetensors.torch import load_file

    before = load_file(str(tiny_dir / "model.safetensors"))
    out = tmp_path / "feat"
    assert main(["finetune", "--task", "conll2003", "--model", str(tiny_dir), "--data",
                 str(need_data("conll2003")), "--out", str(out), "--features", "sum_all", "--epochs", "2",
                 "--max-train-examples", "64", "--max-eval-examples", "32", "--threads", "1"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["features"] == "sum_all" and 0.0 <= summary["f1"] <= 1.0 and "best_step" in summary
    spec = json.loads((out / "feature_head.json").read_text())
    assert spec["in_dim"] == 128 and "B-PER" in spec["id2label"].values()
    assert load_file(str(tiny_dir / "model.safetensors")).keys() == before.keys()  # the encoder is untouched
    from bertkit.train.feature_based import combine
    import torch
    hs = tuple(torch.full((1, 2, 3), float(i)) for i in range(7))  # embeddings + 6 layers
    assert combine(hs, "embeddings").sum() == 0 and combine(hs, "last")[0, 0, 0] == 6
    assert combine(hs, "second_to_last")[0, 0, 0] == 5 and combine(hs, "sum_last_four")[0, 0, 0] == 3 + 4 + 5 + 6
    assert combine(hs, "sum_all")[0, 0, 0] == 21 and combine(hs, "concat_last_four").shape == (1, 2, 12)
    with pytest.raises(ValueError, match="features 'mean'"):
        combine(hs, "mean")
    assert main(["finetune", "--task", "conll2003", "--model", str(tiny_dir), "--data", str(need_data("conll2003")),
                 "--out", str(tmp_path / "x"), "--features", "concat_last_four"]) == 2
    assert "the encoder has 2 layers, fewer than four" in capsys.readouterr().err
    assert main(["finetune", "--task", "conll2003", "--model", str(tiny_dir), "--data", str(need_data("conll2003")),
                 "--out", str(tmp_path / "y"), "--features", "last", "--group-by-length"]) == 2
    assert "--group-by-length is for fine-tuning the encoder, not with --features" in capsys.readouterr().err


def test_interrupted_finetuning_resumes_exactly_with_its_best_epoch_and_time(tiny_dir, tmp_path, capsys):
    """A long run (SQuAD on a CPU takes hours) checkpoints every few steps; resumed after a crash it ends with the
    same weights, the same best epoch and the training time of both parts."""
    import shutil

    import torch
    from safetensors.torch import load_file

    from bertkit.train.finetune import FinetuneConfig, run_finetune
    from bertkit.train.loop import checkpoints

    mrpc = need_data("glue", "MRPC")

    def config(out):
        cfg = FinetuneConfig(task="mrpc", model=str(tiny_dir), out=str(out), train_file=str(find_split(mrpc, "train")),
                             eval_file=str(find_split(mrpc, "dev")), epochs=3, max_train_examples=96,
                             max_eval_examples=48)
        cfg.train.lr, cfg.train.threads, cfg.train.save_every, cfg.train.keep_checkpoints = 1e-3, 1, 2, 10
        cfg.train.log_every = 3  # a log window (4..6) straddles the resume point (4)
        return cfg

    full = run_finetune(config(tmp_path / "full"), show_progress=False)
    run_finetune(config(tmp_path / "part"), show_progress=False)
    # crash after step 4: the later checkpoints and the final model never existed
    for ckpt in checkpoints(tmp_path / "part"):
        if int(ckpt.name.split("-")[1]) > 4:
            shutil.rmtree(ckpt)
    (tmp_path / "part" / "model.safetensors").unlink()
    state = torch.load(checkpoints(tmp_path / "part")[-1] / "trainer_state.pt", weights_only=True)
    assert state["progress"]["best"][1]["best_step"] == 3 and state["progress"]["train_seconds"] > 0
    resumed = run_finetune(config(tmp_path / "part"), resume=True, show_progress=False)
    for key in ("f1", "accuracy", "best_step"):
        assert resumed[key] == full[key], key
    assert resumed["train_seconds"] > state["progress"]["train_seconds"]
    a, b = load_file(str(tmp_path / "full" / "model.safetensors")), load_file(str(tmp_path / "part" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    evals = [json.loads(x) for x in (tmp_path / "part" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in evals if r["split"] == "eval"] == [3, 6, 9]  # the curve continues, no duplicates
    # the same rows as the uninterrupted run's, but for the wall-clock fields
    def rows(run):
        return [{k: v for k, v in json.loads(x).items() if k not in ("time", "tokens_per_s")}
                for x in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
    assert rows("part") == rows("full")

    # through the CLI: resuming a finished run trains no further and reports the same best evaluation
    assert main(["finetune", "--task", "mrpc", "--model", str(tiny_dir), "--data", str(mrpc), "--out",
                 str(tmp_path / "full"), "--epochs", "3", "--max-train-examples", "96", "--max-eval-examples", "48",
                 "--lr", "1e-3", "--threads", "1", "--save-every", "2", "--resume"]) == 0
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert again["best_step"] == full["best_step"] and again["f1"] == full["f1"]
    # resuming with flags that change what is computed is refused, naming them
    assert main(["finetune", "--task", "mrpc", "--model", str(tiny_dir), "--data", str(mrpc), "--out",
                 str(tmp_path / "full"), "--epochs", "4", "--max-train-examples", "96", "--lr", "2e-3",
                 "--threads", "1", "--resume"]) == 2
    err = capsys.readouterr().err
    assert "finetune_config.json: --resume with a different config" in err
    assert "epochs: 3.0 -> 4.0" in err and "train.lr: 0.001 -> 0.002" in err and "max_eval" not in err


def test_gradient_accumulation_gives_the_same_step(tiny_dir, tmp_path, capsys):
    """--grad-accum 4 splits each batch of 32 into micro-batches of 8: without dropout, the same updates."""
    import torch
    from safetensors.torch import load_file

    mrpc = need_data("glue", "MRPC")
    args = ["finetune", "--task", "mrpc", "--model", str(tiny_dir), "--data", str(mrpc), "--epochs", "1",
            "--max-train-examples", "64", "--max-eval-examples", "16", "--lr", "1e-3", "--dropout", "0",
            "--threads", "1"]
    assert main([*args, "--out", str(tmp_path / "one")]) == 0
    assert main([*args, "--out", str(tmp_path / "four"), "--grad-accum", "4"]) == 0
    a, b = load_file(str(tmp_path / "one" / "model.safetensors")), load_file(str(tmp_path / "four" / "model.safetensors"))
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)

    def train_rows(run):
        rows = [json.loads(x) for x in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
        return [r for r in rows if r["split"] == "train"]

    # Adam would hide a mis-scaled gradient in the weights; the logged norm does not
    for r1, r4 in zip(train_rows("one"), train_rows("four"), strict=True):
        assert r4["grad_norm"] == pytest.approx(r1["grad_norm"], rel=1e-4)
        assert r4["loss"] == pytest.approx(r1["loss"], rel=1e-5)
    assert main([*args, "--out", str(tmp_path / "x"), "--grad-accum", "3"]) == 2
    assert "--batch-size 32 is not a multiple of --grad-accum 3" in capsys.readouterr().err
    assert main([*args, "--out", str(tmp_path / "x"), "--grad-accum", "0"]) == 2
    assert "--grad-accum 0: must be at least 1" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()  # refused before anything is written
