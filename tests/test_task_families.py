"""The task registry and the task-family registry are complete and are what the code asks: every task names a
family, every family answers every operation, the CLI's choices are the registry's, a new task is one registry
entry, windows are cut by one function and the loss is the head's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from bertkit.data.features import windows
from bertkit.data.tasks import TASKS, Example, Spec, Task, read_task, register_task, sentence_task
from bertkit.task_families import ENDPOINTS, FAMILIES, Family, endpoints_of, family_of, inference_head


def test_every_task_names_a_family_that_trains_it():
    for name, task in TASKS.items():
        assert task.family in FAMILIES, name
        family = FAMILIES[task.family]
        assert family.trainable, name
        assert len(task.splits) == 2 and task.metric and callable(task.reader), name
    assert {t.family for t in TASKS.values()} == {"classification", "regression", "tagging", "qa"}


def test_every_family_has_every_operation():
    from bertkit.heads import HEADS, HeadOutput
    from bertkit.infer.predictor import Predictor
    from bertkit.model import EncoderOutput

    outputs = {f for cls in (HeadOutput, EncoderOutput) for f in cls.__dataclass_fields__}
    assert list(ENDPOINTS) == ["classify", "tag", "answer", "embed", "similarity", "summarize", "fill-mask", "suggest"]
    for name, f in FAMILIES.items():
        assert f.name == name and isinstance(f, Family)
        assert f.heads and all(h in HEADS for h in f.heads), name
        assert callable(getattr(Predictor, f.operation)), name
        assert set(f.onnx_outputs) <= outputs and set(f.per_text_outputs) <= set(f.onnx_outputs), name
        for endpoint in endpoints_of(f):
            schema, summary = ENDPOINTS[endpoint].schema(endpoint)
            assert schema["type"] == "object" and summary, (name, endpoint)
            assert f.schema(endpoint) == (schema, summary), (name, endpoint)  # one schema per endpoint
        if f.trainable:  # fine-tuning's operations are the family's own, not the base's refusals
            for op in ("rows", "loss", "evaluate"):
                assert getattr(type(f), op) is not getattr(Family, op), (name, op)
    # every head class a family names maps back to it (classification and regression split on the config)
    from bertkit import BertConfig

    for f in FAMILIES.values():
        config = BertConfig.named("tiny")
        config.num_labels = 1 if f.name == "regression" else 3
        assert family_of(HEADS[f.heads[0]], config) is f
    assert inference_head("BertForReplacedTokenDetection") == "BertModel"
    assert inference_head("BertForNextSentencePrediction") is None


def test_cli_task_choices_are_the_registry(monkeypatch):
    from bertkit.cli import build_parser

    def choices(verb):
        sub = next(a for a in build_parser([verb])._actions if a.dest == "verb").choices[verb]
        return next(a for a in sub._actions if a.dest == "task").choices

    for verb in ("finetune", "evaluate", "distill"):
        assert list(choices(verb)) == list(TASKS)
    monkeypatch.setitem(TASKS, "tmp-task", TASKS["sst2"])
    assert "tmp-task" in choices("finetune")


def test_registering_a_taken_name_is_refused():
    with pytest.raises(ValueError, match="'sst2' is already registered"):
        register_task("sst2", TASKS["sst2"])
    with pytest.raises(ValueError, match="task 'nope': choose one of sst2, cola"):
        read_task("x.tsv", "nope")


def read_json_reviews(path: Path, task: Task):
    """A reader of one's own format: a JSON list of {"review": ..., "stars": 1..5}, positive from 4 stars."""
    rows = json.loads(path.read_text(encoding="utf-8"))
    return [Example(r["review"], "good" if r["stars"] >= 4 else "bad") for r in rows], ["bad", "good"]


def test_a_new_task_is_one_registry_entry(tmp_path, tiny_dir, monkeypatch, capsys):
    """A task with its own reader, registered as data, is fine-tuned and evaluated through the CLI."""
    from bertkit.cli import main

    torch.set_num_threads(1)
    monkeypatch.setitem(TASKS, "reviews", Task("classification", "accuracy", ("reviews_train", "reviews_dev"),
                                               read_json_reviews))
    texts = ["a fine film", "dull and slow", "one of the best", "not good at all"] * 4
    data = tmp_path / "data"
    data.mkdir()
    for split in ("reviews_train", "reviews_dev"):
        (data / f"{split}.json").write_text(json.dumps([{"review": t, "stars": 5 if i % 2 == 0 else 1}
                                                        for i, t in enumerate(texts)]), encoding="utf-8")
    out = tmp_path / "out"
    assert main(["finetune", "--task", "reviews", "--model", str(tiny_dir), "--data", str(data), "--out", str(out),
                 "--epochs", "1", "--batch-size", "8", "--max-length", "16", "--threads", "1"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["task"] == "reviews" and summary["metric"] == "accuracy" and summary["train_examples"] == 16
    config = json.loads((out / "config.json").read_text())
    assert config["id2label"] == {"0": "bad", "1": "good"} and config["finetuning_task"] == "reviews"
    assert main(["evaluate", "--model", str(out), "--task", "reviews", "--data", str(data)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["eval_examples"] == 16 and 0.0 <= result["accuracy"] <= 1.0


def test_a_sentence_task_is_one_spec(tmp_path):
    task = sentence_task(Spec("t", "y", labels=("n", "p"), names=("no", "yes")), metric="f1")
    assert (task.family, task.metric, task.labels, task.names) == ("classification", "f1", ("n", "p"), ("no", "yes"))
    (tmp_path / "a.tsv").write_text("t\ty\nhello\tp\nbye\tn\n", encoding="utf-8")
    examples, labels = task.reader(tmp_path / "a.tsv", task)
    assert [e.label for e in examples] == ["yes", "no"] and labels == ["no", "yes"]


@pytest.mark.parametrize("n,room,step,align_end,want", [
    (5, 8, 4, False, [(0, 5)]),
    (10, 4, 2, False, [(0, 4), (2, 4), (4, 4), (6, 4)]),
    (11, 4, 3, False, [(0, 4), (3, 4), (6, 4), (9, 2)]),  # one more window reaches the end, shorter
    (11, 4, 3, True, [(0, 4), (3, 4), (6, 4), (7, 4)]),  # or ends at the end, full
])
def test_windows_cover_every_piece(n, room, step, align_end, want):
    got = windows(n, room, step, align_end)
    assert got == want
    assert set().union(*(range(b, b + k) for b, k in got)) == set(range(n))


def test_classify_windows_and_the_service_budget_agree(tok):
    """Predictor.classify and the service's token budget read a long text in the same windows."""
    from bertkit import BertConfig, BertForSequenceClassification
    from bertkit.infer.predictor import Predictor, PredictorSettings

    torch.set_num_threads(1)
    p = Predictor(BertForSequenceClassification(BertConfig.named("tiny")).eval(), tok,
                  PredictorSettings(max_length=16))
    text = " ".join(["word"] * 40)
    [n] = [len(e) for e in tok.encode_batch([text], add_special_tokens=False)]
    [result] = p.classify([text])
    cost, what = p.task_family.cost(p, "classify", (n,), "texts[0]")
    assert result["windows"] == len(windows(n, 14, 7, align_end=True)) > 1
    assert f"read as {result['windows']} windows of 16: {cost} tokens" in what and cost == result["windows"] * 16


@pytest.fixture(scope="module")
def tok(minilm_dir):
    from bertkit import Tokenizer

    return Tokenizer.from_pretrained(minilm_dir)


@pytest.mark.parametrize("family_name", ["classification", "regression", "tagging"])
def test_the_loss_is_the_heads_summed_over_the_units(family_name, tok):
    """Fine-tuning's loss is the head's own (no second copy in the trainer), summed over what `count` counts."""
    import torch.nn.functional as F

    from bertkit import BertConfig
    from bertkit.data.features import IGNORE
    from bertkit.data.tasks import TagExample
    from bertkit.heads import HEADS

    torch.set_num_threads(1)
    family = FAMILIES[family_name]
    labels = {"classification": ["a", "b", "c"], "regression": None, "tagging": ["B-X", "I-X", "O"]}[family_name]
    config = BertConfig.named("tiny", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    config.num_labels = family.num_labels(labels)
    config.problem_type = family.problem_type
    model = HEADS[family.heads[0]](config).eval()
    if family_name == "tagging":
        examples = [TagExample(["one", "two", "three"], ["B-X", "I-X", "O"]), TagExample(["four"], ["O"])]
    else:
        examples = [Example("one two", "a" if labels else "0.5"), Example("three", "c" if labels else "2.0"),
                    Example("four five six", "b" if labels else "4.0")]
    rows = family.rows(tok, examples, labels, 32, None)
    from bertkit.train.finetune import RowTask

    batch = RowTask(tok, rows, len(rows), 0).collate(rows)
    with torch.no_grad():
        got = family.loss(model, batch)
        logits = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]).logits
    if family_name == "regression":
        want = F.mse_loss(logits.squeeze(-1), batch["labels"].float(), reduction="sum")
    else:
        want = F.cross_entropy(logits.flatten(0, -2), batch["labels"].flatten(), ignore_index=IGNORE,
                               reduction="sum")
    assert family.count(batch) == (float((batch["labels"] != IGNORE).sum()) if family_name == "tagging" else 3.0)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
