"""Compression and the inference options: the layer map and distillation, int8 quantisation (save/load, agreement
with fp32 on a real evaluation set), the ONNX export and backend (parity with PyTorch), and the cache."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from bertkit import BertConfig, BertForSequenceClassification, BertModel, Tokenizer
from bertkit.checkpoint import CheckpointError
from bertkit.cli import main
from bertkit.heads import BertForPreTraining, BertForQuestionAnswering, BertForTokenClassification
from bertkit.infer.predictor import Predictor, PredictorSettings
from bertkit.train.distill import DistillSettings, DistillTask, every_other, layer_map, student_from_teacher
from conftest import need_data


@pytest.fixture(scope="module")
def tok(minilm_dir):
    return Tokenizer.from_pretrained(minilm_dir)


def tiny(cls, layers: int = 4, num_labels: int = 2, id2label: dict | None = None, **overrides):
    torch.manual_seed(0)
    cfg = BertConfig.named("tiny", max_position_embeddings=128, num_hidden_layers=layers, **overrides)
    cfg.num_labels = num_labels
    if id2label:
        cfg.id2label = id2label
    return cls(cfg).eval()


# ---- the student ---------------------------------------------------------------------------------------------------
def test_every_other_layer():
    assert every_other(12) == [0, 2, 4, 6, 8, 10]
    assert every_other(6) == [0, 2, 4]
    assert every_other(12, 4) == [0, 3, 6, 9]
    with pytest.raises(ValueError, match="between 1 and"):
        every_other(4, 5)


def test_layer_map_copies_the_right_tensors():
    teacher = tiny(BertForSequenceClassification, layers=4, num_labels=3)
    student = student_from_teacher(teacher, [1, 3])
    assert student.config.num_hidden_layers == 2 and type(student) is BertForSequenceClassification
    t, s = teacher.state_dict(), student.state_dict()
    for name, value in s.items():
        source = name.replace("encoder.layer.0.", "encoder.layer.1.").replace("encoder.layer.1.", "encoder.layer.3.") \
            if name.startswith("bert.encoder.layer.1.") else name.replace("encoder.layer.0.", "encoder.layer.1.")
        assert torch.equal(value, t[source]), name
    assert torch.equal(s["classifier.weight"], t["classifier.weight"])
    assert torch.equal(s["bert.embeddings.word_embeddings.weight"], t["bert.embeddings.word_embeddings.weight"])
    mapped = layer_map(t, [2])
    assert set(k for k in mapped if ".layer." in k) == {k.replace(".layer.2.", ".layer.0.") for k in t
                                                        if ".layer.2." in k}
    with pytest.raises(ValueError, match="distinct indices"):
        student_from_teacher(teacher, [0, 0])
    with pytest.raises(ValueError, match="distinct indices"):
        student_from_teacher(teacher, [4])


def _sentence_task(tok, n=16):
    from bertkit.data.tasks import Example
    from bertkit.train.finetune import SentenceTask

    texts = ["a fine film", "dull and slow", "one of the best this year", "not good at all"] * (n // 4)
    examples = [Example(t, "1" if i % 2 == 0 else "0") for i, t in enumerate(texts)]
    return SentenceTask(tok, examples, examples[:4], ["0", "1"], 64, 8, 0)


def test_distillation_loss_is_zero_when_the_student_is_the_teacher(tok):
    teacher = tiny(BertForSequenceClassification, layers=2, hidden_dropout_prob=0.0,
                   attention_probs_dropout_prob=0.0, num_labels=2)
    with torch.no_grad():
        teacher.classifier.weight.mul_(100)  # confident logits, so that students that differ are told apart
    student = student_from_teacher(teacher, [0, 1]).train()
    task = DistillTask(_sentence_task(tok), student, teacher, DistillSettings(temperature=2.0, alpha=1.0, cosine=1.0))
    batch = task.micro_batches(0, 0, 1, 1)[0]
    totals = torch.tensor(task.counts(batch), dtype=torch.float64)
    loss, stats = task.loss(student, batch, totals)
    assert abs(stats["soft_loss"]) < 1e-5 and stats["cosine_loss"] < 1e-5 and float(loss.detach()) < 1e-5
    # a different student has a positive soft loss, with gradients only in the student
    other = student_from_teacher(teacher, [1]).train()
    task = DistillTask(_sentence_task(tok), other, teacher, DistillSettings(alpha=0.5))
    loss, stats = task.loss(other, batch, totals)
    loss.backward()
    assert stats["soft_loss"] > 1e-3
    assert all(p.grad is None for p in teacher.parameters())
    assert other.classifier.weight.grad is not None


def test_distill_cli_task_specific_and_general(tmp_path, tok, capsys, small_corpus):
    sst = need_data("glue", "SST-2")
    teacher_dir = tmp_path / "teacher"
    # labelled with SST-2's raw values, as models fine-tuned before bertkit named GLUE's classes are
    tiny(BertForSequenceClassification, layers=4, num_labels=2, id2label={0: "0", 1: "1"}).save_pretrained(
        teacher_dir, tokenizer=tok)
    out = tmp_path / "student"
    assert main(["distill", "--teacher", str(teacher_dir), "--out", str(out), "--task", "sst2", "--data", str(sst),
                 "--epochs", "1", "--max-train-examples", "64", "--max-eval-examples", "32", "--threads", "1",
                 "--temperature", "3", "--cosine", "0.5", "--group-by-length"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert json.loads((out / "eval_results.json").read_text())["config"]["finetune"]["group_by_length"] is True
    assert summary["layers"] == [0, 2] and summary["metric"] == "accuracy" and 0 <= summary["accuracy"] <= 1
    assert json.loads((out / "config.json").read_text())["num_hidden_layers"] == 2
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if r["split"] == "train"]
    assert train_rows and {"soft_loss", "hard_loss", "cosine_loss", "loss"} <= set(train_rows[-1])
    assert Predictor.from_pretrained(out).classify(["a fine film"])[0]["label"] in ("0", "1")
    # --resume on a finished run: nothing left to train, the same best evaluation
    assert main(["distill", "--teacher", str(teacher_dir), "--out", str(out), "--task", "sst2", "--data", str(sst),
                 "--epochs", "1", "--max-train-examples", "64", "--max-eval-examples", "32", "--threads", "1",
                 "--temperature", "3", "--cosine", "0.5", "--group-by-length", "--resume"]) == 0
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert again["accuracy"] == summary["accuracy"] and again["best_step"] == summary["best_step"]

    # general distillation: an MLM teacher, pre-training shards of a corpus
    mlm_dir = tmp_path / "mlm"
    ko = Tokenizer.from_pretrained(small_corpus / "vocab")
    BertForPreTraining(BertConfig.named("tiny", vocab_size=ko.vocab_size, num_hidden_layers=2)).save_pretrained(
        mlm_dir, tokenizer=ko)
    out = tmp_path / "general"
    assert main(["distill", "--teacher", str(mlm_dir), "--out", str(out), "--corpus",
                 str(small_corpus / "corpus.txt"), "--steps", "3", "--batch-size", "8", "--layers", "1",
                 "--threads", "1"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["layers"] == [1]
    last = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()][-1]
    assert {"mlm_accuracy", "soft_loss", "hard_loss"} <= set(last) and last["step"] == 3
    assert BertForPreTraining.from_pretrained(out).config.num_hidden_layers == 1
    # bad requests are one-line errors
    assert main(["distill", "--teacher", str(teacher_dir), "--out", str(tmp_path / "x")]) == 2
    assert "needs --task and --data" in capsys.readouterr().err


# ---- int8 -----------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sst2_minilm(tmp_path_factory, minilm_dir):
    """all-MiniLM-L6-v2 fine-tuned on 6,000 SST-2 training sentences for one epoch (~1.5 min here): a real
    classifier, with the margins a real one has."""
    from bertkit.train.finetune import FinetuneConfig, run_finetune

    data = need_data("glue", "SST-2")
    out = tmp_path_factory.mktemp("sst2-minilm")
    cfg = FinetuneConfig(task="sst2", model=str(minilm_dir), train_file=str(data / "train.tsv.gz"),
                         eval_file=str(data / "dev.tsv.gz"), out=str(out), epochs=1, max_train_examples=6000,
                         max_eval_examples=64, max_length=64)
    cfg.train.lr, cfg.train.threads = 1e-4, 2
    run_finetune(cfg, show_progress=False)
    return out


def test_int8_agrees_with_fp32_on_a_real_evaluation_set(sst2_minilm):
    """int8 picks the same label as fp32 on >= 99 % of SST-2 dev (872 sentences), and the model is a real
    classifier (accuracy well above chance), so agreement means something."""
    from bertkit.data.tasks import read_task

    dev, _ = read_task(need_data("glue", "SST-2") / "dev.tsv.gz", "sst2")  # labels by name, as the model's
    texts, gold = [e.text for e in dev], [e.label for e in dev]
    fp32 = Predictor.from_pretrained(sst2_minilm, PredictorSettings(backend="torch")).classify(texts)
    int8 = Predictor.from_pretrained(sst2_minilm, PredictorSettings(backend="torch", int8=True)).classify(texts)
    accuracy = np.mean([a["label"] == g for a, g in zip(fp32, gold)])
    agree = np.mean([a["label"] == b["label"] for a, b in zip(fp32, int8)])
    assert accuracy > 0.75, accuracy
    assert agree >= 0.99, f"int8 agrees with fp32 on {agree:.3f} of SST-2 dev (fp32 accuracy {accuracy:.3f})"


def test_int8_save_load_and_errors(tmp_path, tok):
    from bertkit.infer.quantize import load_int8, quantize_int8, save_int8

    model = tiny(BertForTokenClassification, layers=2, num_labels=5)
    q = quantize_int8(model)
    save_int8(q, tmp_path / "q", tokenizer=tok)
    ids = torch.randint(5, 1000, (3, 11))
    again = load_int8(tmp_path / "q")
    with torch.inference_mode():
        assert torch.equal(q(ids).logits, again(ids).logits)
        # int8 stays close to the float model
        assert torch.allclose(q(ids).logits, model(ids).logits, atol=0.1)
    p = Predictor.from_pretrained(tmp_path / "q")
    assert p.family == "tagging" and p.tag(["Peter lives in Paris"])[0].keys() == {"entities"}
    # the encoder's matrices take one byte a weight instead of four
    n_quantized = sum(m.weight.numel() for name, m in model.named_modules()
                      if isinstance(m, torch.nn.Linear) and ".encoder." in f".{name}")
    fp32_bytes = sum(v.numel() * 4 for v in model.state_dict().values())
    assert fp32_bytes - (tmp_path / "q" / "model.int8.safetensors").stat().st_size > 2.9 * n_quantized
    # a float loader refuses the directory instead of loading garbage; a truncated file names itself
    with pytest.raises(CheckpointError, match="model.int8.safetensors|weights"):
        BertForTokenClassification.from_pretrained(tmp_path / "q")
    blob = (tmp_path / "q" / "model.int8.safetensors").read_bytes()
    (tmp_path / "q" / "model.int8.safetensors").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(CheckpointError, match="model.int8.safetensors"):
        load_int8(tmp_path / "q")


def test_int8_directory_loads_without_a_float_model_and_keeps_ties(tmp_path, tok, monkeypatch):
    """load_int8 builds the model's skeleton on the meta device and takes every tensor from the file: no float
    Linear weight is ever made (peak memory is the file's, not the float model's), and a decoder tied to the word
    embeddings stays tied. The engine is measured for the model's shape unless named."""
    from bertkit.heads import BertForMaskedLM
    from bertkit.infer.quantize import fastest_engine, int8_engine, load_int8, quantize_int8, save_int8

    model = tiny(BertForMaskedLM, layers=2)
    q = quantize_int8(model)
    save_int8(q, tmp_path / "q", tokenizer=tok)
    made = []
    real = torch.nn.Linear.reset_parameters
    monkeypatch.setattr(torch.nn.Linear, "reset_parameters",
                        lambda self: (made.append(self.weight.device.type), real(self))[1])
    again = load_int8(tmp_path / "q")
    assert made and set(made) == {"meta"}  # every Linear was made without storage
    assert again.cls.predictions.decoder.weight is again.bert.embeddings.word_embeddings.weight
    ids = torch.randint(5, 1000, (2, 9))
    with torch.inference_mode():
        assert torch.equal(q(ids).logits, again(ids).logits)
    engines = tuple(e for e in ("fbgemm", "onednn") if e in torch.backends.quantized.supported_engines)
    shape = (model.config.hidden_size, model.config.intermediate_size)
    assert int8_engine(None, shape) in engines and int8_engine("fbgemm" if "fbgemm" in engines else engines[0],
                                                               shape) in engines
    if len(engines) > 1:  # measured once per shape and thread count
        assert int8_engine(None, shape) == fastest_engine(*shape, torch.get_num_threads(), engines)


def test_int8_engines_agree_and_keep_their_packing(tmp_path, tok):
    """oneDNN and fbgemm pack the same int8 weights and round the same way: logits agree to int8 noise, whichever
    engine is global when the model runs, and a saved model loads for either."""
    from bertkit.infer.quantize import int8_engine, load_int8, quantize_int8, save_int8

    engines = [e for e in ("onednn", "fbgemm") if e in torch.backends.quantized.supported_engines]
    if len(engines) < 2:
        pytest.skip(f"this PyTorch has only {torch.backends.quantized.supported_engines} int8 engines")
    with pytest.raises(ValueError, match="int8 engine 'nope'"):
        int8_engine("nope")
    model = tiny(BertForSequenceClassification, layers=2, num_labels=3)
    ids = torch.randint(5, 1000, (4, 13))
    before = torch.backends.quantized.engine
    with torch.inference_mode():
        a, b = (quantize_int8(model, e) for e in engines)
        assert torch.backends.quantized.engine == before  # the global setting is left as it was
        la, lb = a(ids).logits, b(ids).logits
        assert torch.allclose(la, lb, atol=2e-2), (la - lb).abs().max()
        torch.backends.quantized.engine = engines[1]  # run a's oneDNN-packed weights with fbgemm current
        try:
            assert torch.equal(a(ids).logits, la)
        finally:
            torch.backends.quantized.engine = before
        save_int8(a, tmp_path / "q", tokenizer=tok)
        for e in engines:
            assert torch.allclose(load_int8(tmp_path / "q", e)(ids).logits, la, atol=2e-2)


def test_quantize_cli(tmp_path, tok, capsys):
    src = tmp_path / "src"
    tiny(BertForSequenceClassification, layers=2, num_labels=2).save_pretrained(src, tokenizer=tok)
    assert main(["quantize", "--model", str(src), "--out", str(tmp_path / "q")]) == 0
    (tmp_path / "in.txt").write_text("good\nbad film\n", encoding="utf-8")
    assert main(["predict", "--model", str(tmp_path / "q"), "--input", str(tmp_path / "in.txt"), "--output",
                 str(tmp_path / "o.jsonl")]) == 0
    assert len((tmp_path / "o.jsonl").read_text().splitlines()) == 2
    assert main(["quantize", "--model", str(src), "--out", str(src)]) == 2
    assert "another directory" in capsys.readouterr().err


# ---- ONNX -----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cls,field", [(BertForSequenceClassification, "logits"),
                                       (BertForTokenClassification, "logits"),
                                       (BertForQuestionAnswering, "start_logits"),
                                       (BertModel, "last_hidden_state")])
@pytest.mark.parametrize("unpad", [False, True], ids=["padded-graph", "unpadded-graph"])
def test_onnx_export_matches_pytorch(cls, field, unpad, tmp_path):
    pytest.importorskip("onnxruntime")
    from bertkit.infer.onnxrt import OnnxModel, export_onnx

    model = tiny(cls, layers=2, num_labels=3) if cls is not BertModel else tiny(cls, layers=2)
    export_onnx(model, tmp_path / "m.onnx", unpad=unpad)
    assert not model.training  # the exporter must not leave the model in training mode
    assert all(m.unpad for m in model.modules() if isinstance(m, BertModel))  # eager runs unpad again
    session = OnnxModel(tmp_path / "m.onnx", model.config, cls, threads=1)
    for B, T, cut in ((1, 5, None), (3, 40, 7)):  # other shapes than the trace's, with and without padding
        ids = torch.randint(5, 1000, (B, T))
        mask = torch.ones_like(ids)
        if cut:
            mask[1, cut:] = 0
        types = torch.zeros_like(ids)
        with torch.inference_mode():
            want = getattr(model(ids, mask, types), field)
        got = getattr(session(ids, mask, types), field)
        real = mask.bool() if want.dim() >= 2 and want.shape[:2] == ids.shape else slice(None)
        assert (want[real] - got[real]).abs().max() <= 1e-4


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    """The ONNX cache of a test: its own directory, through the variable users set."""
    monkeypatch.setenv("BERTKIT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "onnx"


def test_onnx_backend_and_int8_in_the_predictor(tmp_path, tok, cache, capsys):
    pytest.importorskip("onnxruntime")
    src = tmp_path / "qa"
    tiny(BertForQuestionAnswering, layers=2).save_pretrained(src, tokenizer=tok)
    question, context = ["Who won?"] * 2, ["The Broncos won the game in Denver.", "Nobody knows."]
    torch_answers = Predictor.from_pretrained(src, PredictorSettings(backend="torch")).answer(question, context)
    onnx_answers = Predictor.from_pretrained(src, PredictorSettings(backend="onnx", threads=1)).answer(
        question, context)
    for a, b in zip(torch_answers, onnx_answers):
        assert (a["start"], a["end"], a["answer"]) == (b["start"], b["end"], b["answer"])
        assert a["score"] == pytest.approx(b["score"], abs=1e-4)
    (entry,) = cache.iterdir()
    assert (entry / "model.onnx").is_file() and not (src / "onnx").exists()
    # int8 through ONNX Runtime, and through the CLI
    int8 = Predictor.from_pretrained(src, PredictorSettings(backend="onnx", int8=True)).answer(question, context)
    assert len(int8) == 2 and (entry / "model.int8.onnx").is_file()
    lines = tmp_path / "q.jsonl"
    lines.write_text(json.dumps({"question": "Who won?", "context": context[0]}) + "\n", encoding="utf-8")
    assert main(["predict", "--model", str(src), "--input", str(lines), "--output", str(tmp_path / "o.jsonl"),
                 "--backend", "onnx", "--int8"]) == 0
    for extra in ([], ["--int8"]):
        assert main(["export", "--model", str(src), "--onnx", "--output", str(tmp_path / "x.onnx")] + extra) == 0
        assert (tmp_path / "x.onnx").stat().st_size > 0
        assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "o.jsonl", "q.jsonl", "qa", "x.onnx"]
    # new weights in the directory: a new entry, not the stale export
    tiny(BertForQuestionAnswering, layers=2, initializer_range=0.05).save_pretrained(src, tokenizer=tok)
    Predictor.from_pretrained(src, PredictorSettings(backend="onnx"))
    assert len(list(cache.iterdir())) == 2
    (entry,) = [e for e in cache.iterdir() if not (e / "model.int8.onnx").exists()]
    (entry / "model.onnx").write_bytes(b"not onnx")  # a damaged entry names itself
    with pytest.raises(CheckpointError, match="model.onnx"):
        Predictor.from_pretrained(src, PredictorSettings(backend="onnx"))


def test_onnx_export_is_not_stale_after_config_json_changes(tmp_path, tok, cache):
    """The issue's reproduction: hidden_act changed to relu in config.json; PyTorch 0.678, ONNX still 0.951."""
    pytest.importorskip("onnxruntime")
    src = tmp_path / "enc"
    tiny(BertModel, layers=2).save_pretrained(src, tokenizer=tok)
    text = ["a gorgeous, witty, seductive movie"]
    before = Predictor.from_pretrained(src, PredictorSettings(backend="onnx", threads=1)).embed(text)
    config = json.loads((src / "config.json").read_text())
    (src / "config.json").write_text(json.dumps({**config, "hidden_act": "relu"}))
    want = Predictor.from_pretrained(src, PredictorSettings(backend="torch")).embed(text)
    got = Predictor.from_pretrained(src, PredictorSettings(backend="onnx", threads=1)).embed(text)
    assert np.abs(want - before).max() > 1e-2  # the change matters...
    np.testing.assert_allclose(got, want, atol=1e-4)  # ...and the ONNX backend follows it


def test_onnx_export_of_a_read_only_model_directory_writes_nothing_there(tmp_path, tok, cache, capsys):
    """The issue's reproduction: PermissionError on a read-only directory, 113 MB written into site-packages."""
    pytest.importorskip("onnxruntime")
    src = tmp_path / "ro"
    tiny(BertForTokenClassification, layers=2).save_pretrained(src, tokenizer=tok)
    before = sorted(p.name for p in src.rglob("*"))
    os.chmod(src, 0o555)  # read-only for a normal user (root writes anyway: the listing below is the check then)
    try:
        assert main(["export", "--model", str(src), "--onnx"]) == 0
        path = Path(capsys.readouterr().out.strip())
        assert path.is_file() and path.parent.parent == cache
        assert Predictor.from_pretrained(src, PredictorSettings(backend="onnx", threads=1)).tag(["Paris"])
    finally:
        os.chmod(src, 0o755)
    assert sorted(p.name for p in src.rglob("*")) == before


WORKER = """
import sys
from bertkit.infer.predictor import Predictor, PredictorSettings
print(Predictor.from_pretrained(sys.argv[1], PredictorSettings(backend="onnx", threads=1)).classify(["fine"])[0]["label"])
"""


def test_two_workers_exporting_at_once_share_one_export(tmp_path, tok, cache):
    """The issue's reproduction: two workers exporting at once corrupted the export (DecodeError, a worker died)."""
    pytest.importorskip("onnxruntime")
    src = tmp_path / "clf"
    tiny(BertForSequenceClassification, layers=2).save_pretrained(src, tokenizer=tok)
    env = {**os.environ, "BERTKIT_CACHE": str(cache.parent), "OMP_NUM_THREADS": "1"}
    workers = [subprocess.Popen([sys.executable, "-c", WORKER, str(src)], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [w.communicate(timeout=300) for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outs
    assert sum(err.count("exporting /") for _, err in outs) == 1  # one export, the other worker waited for it
    (entry,) = cache.iterdir()
    assert sorted(p.name for p in entry.iterdir()) == [".lock", "model.onnx", "source.json"]


def test_interrupted_exports_leave_no_temporaries(tmp_path, tok, cache):
    """The issue's reproduction: 0-byte ONNX temporaries of an interrupted export stayed forever."""
    pytest.importorskip("onnxruntime")
    from bertkit.infer.onnxrt import export_key, onnx_file

    src = tmp_path / "enc"
    tiny(BertModel, layers=2).save_pretrained(src, tokenizer=tok)
    entry, other = cache / export_key(src, BertModel), cache / "0123abcd"
    for d in (entry, other):  # what a SIGKILL in the middle of atomic_path leaves
        d.mkdir(parents=True)
        (d / ".lock").touch()
        (d / ".model.onnx.k3j2h1.tmp").touch()
    assert onnx_file(src, BertModel) == entry / "model.onnx"
    assert not list(entry.glob("*.tmp")) and not list(other.glob("*.tmp"))


# ---- OpenVINO ------------------------------------------------------------------------------------------------------
def cpu_has_bf16() -> bool:
    import openvino as ov

    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


@pytest.mark.parametrize("cls,method", [(BertForSequenceClassification, "classify"),
                                        (BertForTokenClassification, "tag"),
                                        (BertForQuestionAnswering, "answer"),
                                        (BertModel, "embed")])
def test_openvino_backend_is_fp32_unless_bf16_is_asked_for(cls, method, tmp_path, tok, cache):
    """OpenVINO computes in bf16 by default on a CPU with bf16 instructions (this one): compiled plainly, MiniLM's
    hidden states were up to 0.019 from PyTorch's. By name the backend is fp32 (equal to PyTorch within 1e-5 here),
    and `bf16=True` is bf16 and says so."""
    pytest.importorskip("openvino")
    src = tmp_path / "m"
    (tiny(cls, layers=2, num_labels=3) if cls is not BertModel else tiny(cls, layers=2)).save_pretrained(
        src, tokenizer=tok)
    texts = ["a fine film", "좋은 영화", "The Broncos won the game in Denver, and the crowd went home happy."]
    args = (["Who won?"] * 3, texts) if method == "answer" else (texts,)

    def outputs(p: Predictor) -> np.ndarray:
        out = getattr(p, method)(*args)
        if method == "embed":
            return np.asarray(out)
        if method == "answer":
            return np.array([a["score"] for a in out])
        if method == "tag":
            return np.array([len(r) for r in out], dtype=float)  # tiny random taggers: compare the spans found
        return np.array([list(r["probs"].values()) for r in out])

    torch_ = Predictor.from_pretrained(src, PredictorSettings(backend="torch"))
    ov = Predictor.from_pretrained(src, PredictorSettings(backend="openvino", threads=1))
    assert ov.describe().startswith("openvino (OpenVINO ") and "fp32; asked for" in ov.describe()
    want = outputs(torch_)
    assert np.abs(outputs(ov) - want).max() <= 1e-5
    if method == "tag":  # spans on tiny random weights: the raw logits say more
        ids = torch.randint(5, 1000, (2, 9))
        with torch.inference_mode():
            np.testing.assert_allclose(ov.model(ids).logits, torch_.model(ids).logits, atol=1e-5)
    if not cpu_has_bf16():
        with pytest.raises(ValueError, match="no bf16 instructions"):
            Predictor.from_pretrained(src, PredictorSettings(bf16=True))
        return
    bf16 = Predictor.from_pretrained(src, PredictorSettings(bf16=True, threads=1))  # auto: OpenVINO
    assert bf16.describe().startswith("openvino (OpenVINO ") and "bf16; auto:" in bf16.describe()
    got = outputs(bf16)
    assert np.abs(got - want).max() <= 0.05
    if method != "tag":
        assert np.abs(got - want).max() > 1e-5  # bf16 really: not fp32 under its name


def test_bf16_and_openvino_refuse_what_they_cannot_run(tmp_path, tok, cache, monkeypatch):
    import importlib.util

    from bertkit import BertForMaskedLM
    from bertkit.infer.quantize import quantize_int8, save_int8

    tiny(BertForSequenceClassification, layers=2).save_pretrained(tmp_path / "clf", tokenizer=tok)
    for settings, error, match in (
            (PredictorSettings(bf16=True, int8=True), ValueError, "int8 and bf16: choose one"),
            (PredictorSettings(bf16=True, backend="torch"), ValueError, "bf16 runs on the openvino backend, not torch"),
            (PredictorSettings(bf16=True, backend="onnx"), ValueError, "not onnx"),
            (PredictorSettings(backend="openvino", int8=True), ValueError, "int8 on the openvino backend")):
        with pytest.raises(error, match=match):
            Predictor.from_pretrained(tmp_path / "clf", settings)
    with pytest.raises(ValueError, match="bf16 runs on the openvino backend, not torch"):  # a module given as it is
        Predictor(tiny(BertForSequenceClassification, layers=2), tok, PredictorSettings(bf16=True))
    tiny(BertForMaskedLM, layers=2).save_pretrained(tmp_path / "mlm", tokenizer=tok)
    with pytest.raises(ValueError, match="bf16: fill-mask has no ONNX graph"):
        Predictor.from_pretrained(tmp_path / "mlm", PredictorSettings(bf16=True))
    save_int8(quantize_int8(tiny(BertForSequenceClassification, layers=2)), tmp_path / "q", tokenizer=tok)
    with pytest.raises(ValueError, match="is int8; give the float model"):
        Predictor.from_pretrained(tmp_path / "q", PredictorSettings(bf16=True))
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "openvino" else real(name, *a))
    with pytest.raises(ImportError, match=r"bf16 needs openvino: pip install 'bertkit\[openvino\]'"):
        Predictor.from_pretrained(tmp_path / "clf", PredictorSettings(bf16=True))
    assert Predictor.from_pretrained(tmp_path / "clf").settings.backend == "onnx"  # fp32's auto never needs it
    assert main(["predict", "--model", str(tmp_path / "clf"), "--input", "-", "--output", str(tmp_path / "o"),
                 "--bf16", "--int8-calibration", str(tmp_path / "clf" / "config.json")]) == 2


def test_openvino_answers_threads_at_once(tmp_path, tok, cache):
    """An OpenVINO infer request serves one call at a time; the HTTP service calls from several threads."""
    pytest.importorskip("openvino")
    from concurrent.futures import ThreadPoolExecutor

    tiny(BertForSequenceClassification, layers=2, num_labels=3).save_pretrained(tmp_path / "clf", tokenizer=tok)
    p = Predictor.from_pretrained(tmp_path / "clf", PredictorSettings(backend="openvino", threads=1))
    texts = [" ".join(["word"] * n) + f" {n}" for n in range(1, 41)]
    want = [r["probs"] for r in p.classify(texts)]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda t: p.classify([t])[0]["probs"], texts))
    for a, b in zip(got, want):
        assert list(a.values()) == pytest.approx(list(b.values()), abs=1e-6)


def test_openvino_keeps_compiled_models_in_bertkits_cache(tmp_path, tok, cache, monkeypatch):
    """The second load of a model reads OpenVINO's compiled blob from bertkit's cache and answers the same; an
    unwritable cache only means compiling again."""
    pytest.importorskip("openvino")
    from bertkit.infer import openvino_rt

    tiny(BertForSequenceClassification, layers=2, num_labels=3).save_pretrained(tmp_path / "clf", tokenizer=tok)
    first = Predictor.from_pretrained(tmp_path / "clf", PredictorSettings(backend="openvino", threads=1))
    blobs = list((cache.parent / "openvino").rglob("*.blob"))
    assert len(blobs) == 1
    again = Predictor.from_pretrained(tmp_path / "clf", PredictorSettings(backend="openvino", threads=1))
    assert list((cache.parent / "openvino").rglob("*.blob")) == blobs  # read, not compiled anew
    texts = ["a fine film", "좋은 영화", "word " * 30]
    for a, b in zip(first.classify(texts), again.classify(texts)):
        assert list(a["probs"].values()) == pytest.approx(list(b["probs"].values()), abs=1e-6)
    monkeypatch.setattr(openvino_rt, "compiled_cache", lambda bf16, threads: None)
    plain = Predictor.from_pretrained(tmp_path / "clf", PredictorSettings(backend="openvino", threads=1))
    assert plain.classify(texts)[0]["label"] == first.classify(texts)[0]["label"]


def test_fp32_and_bf16_compiles_of_one_model_never_share_a_cached_blob(tmp_path, tok, cache):
    """OpenVINO's cache key (2026.4) leaves out the precision hint: with one cache directory an fp32 compile's blob
    was read back for a later bf16 load of the same model, which then answered NaN on an AMX CPU (and a bf16 blob
    would be read as fp32). Each precision and thread count has its own directory."""
    pytest.importorskip("openvino")
    from bertkit.infer import openvino_rt

    dirs = {openvino_rt.compiled_cache(bf16, threads) for bf16 in (False, True) for threads in (0, 1, 2)}
    assert len(dirs) == 6 and all(d.parent == cache.parent / "openvino" for d in dirs)
    tiny(BertForSequenceClassification, layers=2, num_labels=3).save_pretrained(tmp_path / "clf", tokenizer=tok)
    Predictor.from_pretrained(tmp_path / "clf", PredictorSettings(backend="openvino", threads=1))
    assert [p.parent.name for p in (cache.parent / "openvino").rglob("*.blob")] == ["f32-threads1"]
    if cpu_has_bf16():
        bf16 = Predictor.from_pretrained(tmp_path / "clf", PredictorSettings(bf16=True, threads=1))
        assert not np.isnan([list(r["probs"].values()) for r in bf16.classify(["a fine film", "좋은 영화"])]).any()
        assert sorted(p.parent.name for p in (cache.parent / "openvino").rglob("*.blob")) == ["bf16-threads1",
                                                                                            "f32-threads1"]


def test_predict_cli_on_openvino(tmp_path, tok, cache, caplog):
    pytest.importorskip("openvino")
    src = tmp_path / "clf"
    tiny(BertForSequenceClassification, layers=2).save_pretrained(src, tokenizer=tok)
    (tmp_path / "in.txt").write_text("good\nbad film\n", encoding="utf-8")
    outs = {}
    for backend in ("torch", "openvino"):
        assert main(["predict", "--model", str(src), "--input", str(tmp_path / "in.txt"), "--output",
                     str(tmp_path / f"{backend}.jsonl"), "--backend", backend]) == 0
        outs[backend] = [json.loads(line) for line in (tmp_path / f"{backend}.jsonl").read_text().splitlines()]
    assert "openvino (OpenVINO" in caplog.text  # what the CLI prints when the model loads
    for a, b in zip(outs["torch"], outs["openvino"]):
        assert a["label"] == b["label"] and list(a["probs"].values()) == pytest.approx(list(b["probs"].values()),
                                                                                        abs=1e-5)


# ---- the cache ------------------------------------------------------------------------------------------------------
def test_cache_hits_misses_and_eviction(tok):
    model = tiny(BertForSequenceClassification, layers=2, num_labels=2)
    plain = Predictor(model, tok)
    cached = Predictor(model, tok, PredictorSettings(cache_size=3))
    texts = ["good film", "bad film", "good   film", "Good film", "a third one"]
    first = cached.classify(texts)
    # "good   film" is the same model input as "good film" (whitespace), and so is "Good film" (uncased vocab):
    # one row is run for the three
    assert cached.cache_info() == {"hits": 2, "misses": 3, "size": 3, "capacity": 3}
    for a, b in zip(first, plain.classify(texts)):
        assert a["label"] == b["label"] and np.allclose(list(a["probs"].values()), list(b["probs"].values()))
    again = cached.classify(["good film", "a third one"])
    assert cached.cache_info()["hits"] == 4 and again == [first[0], first[4]]
    cached.classify(["something new"])  # evicts the least recently used: "bad film"
    cached.classify(["bad film"])
    assert cached.cache_info() == {"hits": 4, "misses": 5, "size": 3, "capacity": 3}
    encoder = Predictor(model.bert, tok, PredictorSettings(cache_size=8))
    vectors = encoder.embed(["good film", "good film"])
    normalized = encoder.embed(["good film"], normalize=True)  # another kind of result: its own entry
    assert np.allclose(vectors[0], vectors[1]) and encoder.cache_info()["hits"] == 1
    assert encoder.cache_info()["size"] == 2 and np.allclose(np.linalg.norm(normalized[0]), 1.0)
