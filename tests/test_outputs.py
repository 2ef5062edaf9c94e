"""Output directories and files are never silently clobbered (issue 13): a non-empty --out is refused unless it is
this verb's own run being resumed or --overwrite is given (swapped in only when the new run succeeds); an --out
that is an input is refused; nothing is written before the inputs validate; a resume never takes, and pruning never
deletes, another run's checkpoint; files get normal permissions; numeric flags are checked; SIGKILL and a full disk
during a save leave a run that resumes bit-identical (benchmarks/faults.py, one bounded trial of each)."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import pytest
import torch

from bertkit import BertConfig, BertModel, Tokenizer
from bertkit.cli import main
from bertkit.io import OutputError, atomic_write_text, prepare_output_dir
from conftest import need_data

ROOT = Path(__file__).resolve().parents[1]



def digest(directory: Path) -> dict[str, str]:
    """Every file under `directory` and a hash of its bytes."""
    return {str(p.relative_to(directory)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def finetune(tiny_dir, out, examples, *extra) -> list[str]:
    return ["finetune", "--task", "sst2", "--model", str(tiny_dir), "--data", str(need_data("glue", "SST-2")),
            "--out", str(out), "--epochs", "1", "--max-train-examples", str(examples), "--max-eval-examples", "32",
            "--batch-size", "16", "--max-length", "32", "--lr", "1e-3", "--threads", "1", "--save-every", "2", *extra]


def last_json(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_run_b_into_run_as_directory_is_refused_and_never_resumes_from_as_checkpoint(tiny_dir, tmp_path, capsys):
    """The issue's reproduction: run A (128 examples, 8 steps) into X, run B (32 examples, 2 steps) into X, then B
    with --resume reported `best_step 8` with A's weights. Now B is refused until --overwrite, which replaces X
    only when B succeeds; a run that fails on bad data writes nothing."""
    x = tmp_path / "X"
    assert main(finetune(tiny_dir, x, 128)) == 0
    a = last_json(capsys)
    assert a["best_step"] == 8 and (x / "checkpoints" / "step-0000008").is_dir()
    before = digest(x)

    assert main(finetune(tiny_dir, x, 32)) == 2
    err = capsys.readouterr().err
    assert f"{x}: not empty; give --resume to continue it, --overwrite to replace it, or another --out" in err
    assert digest(x) == before  # nothing overwritten, truncated or deleted
    assert main(finetune(tiny_dir, x, 32, "--resume")) == 2  # A's run, B's flags
    assert "--resume with a different config (max_train_examples: 128 -> 32)" in capsys.readouterr().err

    # bad data: refused before anything is written, fresh directory or --overwrite alike
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "train.tsv").write_text("sentence\tlabel\nfine\t1\nno label here\n", encoding="utf-8")
    (bad / "dev.tsv").write_text("sentence\tlabel\nfine\t1\n", encoding="utf-8")
    args = finetune(tiny_dir, tmp_path / "fresh", 32)
    args[args.index("--data") + 1] = str(bad)
    assert main(args) == 2
    assert "train.tsv: line 3" in capsys.readouterr().err and not (tmp_path / "fresh").exists()
    args[args.index("--out") + 1] = str(x)
    assert main([*args, "--overwrite"]) == 2
    assert digest(x) == before and sorted(p.name for p in tmp_path.iterdir()) == ["X", "bad"]  # no temporaries

    assert main(finetune(tiny_dir, x, 32, "--overwrite")) == 0
    b = last_json(capsys)
    assert b["best_step"] == 2 and b["train_examples"] == 32
    assert sorted(p.name for p in (x / "checkpoints").iterdir()) == ["step-0000002"]  # none of A's left
    assert main(finetune(tiny_dir, x, 32, "--resume")) == 0
    again = last_json(capsys)
    assert again["best_step"] == 2 and again["accuracy"] == b["accuracy"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["X", "bad"]


def test_out_equal_to_inside_or_containing_an_input_is_refused_by_every_verb(tiny_dir, tmp_path, capsys):
    """`finetune --out` equal to `--model` silently overwrote the source model (only quantize refused it)."""
    before = digest(tiny_dir)
    corpus = tmp_path / "text" / "corpus.txt"
    corpus.parent.mkdir()
    corpus.write_text("a line of text\nanother line\n" * 20, encoding="utf-8")
    sst2 = str(need_data("glue", "SST-2"))
    cases = [
        (finetune(tiny_dir, tiny_dir, 32), "is the input"),
        (finetune(tiny_dir, tiny_dir / "sub", 32), "is inside the input"),
        (finetune(tiny_dir, Path(sst2) / "run", 32), "is inside the input"),
        (["finetune", "--task", "conll2003", "--model", str(tiny_dir), "--data", str(need_data("conll2003")),
          "--out", str(tiny_dir), "--features", "last"], "is the input"),
        (["distill", "--teacher", str(tiny_dir), "--out", str(tiny_dir), "--task", "sst2", "--data", sst2],
         "is the input"),
        (["pretrain", "--corpus", str(corpus), "--vocab", str(tiny_dir), "--out", str(tiny_dir), "--size", "tiny"],
         "is the input"),
        (["pretrain", "--corpus", str(corpus), "--vocab", str(tiny_dir), "--out", str(corpus.parent.parent),
          "--size", "tiny"], "contains the input"),
        (["vocab", "--corpus", str(corpus), "--size", "50", "--out", str(corpus.parent)], "contains the input"),
        (["quantize", "--model", str(tiny_dir), "--out", str(tiny_dir)], "is the input"),
    ]
    for args, relation in cases:
        assert main(args) == 2, args
        err = capsys.readouterr().err
        assert f"--out {args[args.index('--out') + 1]} {relation}" in err and "write to another directory" in err, err
    assert digest(tiny_dir) == before


def test_pretrain_on_a_bad_corpus_leaves_no_directory(tiny_dir, tmp_path, capsys):
    """Shards are built inside the run's directory: a corpus that fails there leaves nothing behind."""
    corpus = tmp_path / "one-document.txt"
    corpus.write_text("Only one document.\nNo pair can be drawn from another.\n", encoding="utf-8")
    out = tmp_path / "out"
    assert main(["pretrain", "--corpus", str(corpus), "--vocab", str(tiny_dir), "--out", str(out), "--size", "tiny",
                 "--steps", "2", "--threads", "1"]) == 2
    assert "only one document" in capsys.readouterr().err and not out.exists()


def test_output_dir_rules(tmp_path):
    """--resume only continues this verb's own run; --resume with --overwrite is refused; a file is not a dir."""
    run = tmp_path / "run"
    target = prepare_output_dir(run, verb="finetune")
    assert not run.exists()  # checking writes nothing
    with target as work:
        (work / "metrics.jsonl").write_text("", encoding="utf-8")
    assert json.loads((run / "run.json").read_text())["run_id"] == target.run_id
    again = prepare_output_dir(run, verb="finetune", resume=True)
    assert again.resuming and again.run_id == target.run_id
    with pytest.raises(OutputError, match=r"holds a 'finetune' run, not 'pretrain'"):
        prepare_output_dir(run, verb="pretrain", resume=True)
    with pytest.raises(OutputError, match=r"--resume continues the run in .*, --overwrite replaces it: choose one"):
        prepare_output_dir(run, verb="finetune", resume=True, overwrite=True)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine", encoding="utf-8")
    with pytest.raises(OutputError, match=r"foreign: --resume: not a run bertkit can resume"):
        prepare_output_dir(foreign, verb="finetune", resume=True)
    with pytest.raises(OutputError, match=r"notes.txt: exists and is not a directory"):
        prepare_output_dir(foreign / "notes.txt", verb="finetune")
    # --overwrite: the old directory stays when the new run fails, and is replaced when it succeeds
    with pytest.raises(RuntimeError):
        with prepare_output_dir(foreign, verb="vocab", overwrite=True, resumable=False) as work:
            (work / "vocab.txt").write_text("new", encoding="utf-8")
            raise RuntimeError("the new run fails")
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    assert (foreign / "notes.txt").read_text() == "mine"
    with prepare_output_dir(foreign, verb="vocab", overwrite=True, resumable=False) as work:
        (work / "vocab.txt").write_text("new", encoding="utf-8")
    assert sorted(p.name for p in foreign.iterdir()) == ["vocab.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["foreign", "run"]


def test_resume_never_takes_and_pruning_never_deletes_another_runs_checkpoint(tmp_path):
    from bertkit.checkpoint import CheckpointError
    from bertkit.heads import BertForMaskedLM
    from bertkit.train.loop import Env, checkpoints, load_checkpoint, save_checkpoint
    from bertkit.train.optim import adamw, warmup_linear

    model = BertForMaskedLM(BertConfig.named("tiny", vocab_size=64, max_position_embeddings=16))
    opt = adamw(model, 1e-3, 0.01)
    sched = warmup_linear(opt, 1, 10)
    rng = [torch.get_rng_state()]
    save_checkpoint(tmp_path, 9, model, opt, sched, None, 2, rng, run_id="other")
    for step in (1, 2, 3):
        save_checkpoint(tmp_path, step, model, opt, sched, None, 2, rng, run_id="mine")
    assert [p.name for p in checkpoints(tmp_path, "mine")] == ["step-0000002", "step-0000003"]
    assert [p.name for p in checkpoints(tmp_path, "other")] == ["step-0000009"]  # kept: not this run's to prune
    with pytest.raises(CheckpointError, match=r"step-0000009: written by run 'other', not this run 'mine'"):
        load_checkpoint(tmp_path / "checkpoints" / "step-0000009", model, opt, sched, Env(), "mine")


def test_evaluate_fresh_rotten_model_on_sst2_names_the_unknown_labels(tmp_path, minilm_dir, capsys):
    """A model with labels fresh/rotten evaluated on SST-2 crashed with a KeyError traceback."""
    from bertkit.heads import BertForSequenceClassification

    cfg = BertConfig.named("tiny", max_position_embeddings=128)
    cfg.num_labels = 2
    cfg.id2label, cfg.label2id = {0: "fresh", 1: "rotten"}, {"fresh": 0, "rotten": 1}
    BertForSequenceClassification(cfg).save_pretrained(tmp_path / "m", tokenizer=Tokenizer.from_pretrained(minilm_dir))
    assert main(["evaluate", "--model", str(tmp_path / "m"), "--task", "sst2", "--data",
                 str(need_data("glue", "SST-2"))]) == 2
    err = capsys.readouterr().err
    assert "dev.tsv.gz: gold label(s) 'negative', 'positive' unknown to the model" in err
    assert "(its labels: fresh, rotten)" in err and "Traceback" not in err


def test_written_files_get_normal_permissions_and_bad_output_paths_are_named(tmp_path, capsys):
    """mkstemp made every atomically written file 0600; an output path that is a directory was a traceback."""
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.json", "{}\n")
        BertModel(BertConfig.named("tiny", vocab_size=64, max_position_embeddings=16)).save_pretrained(tmp_path / "m")
    finally:
        os.umask(old)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644
    assert {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "m").iterdir()} == \
        {"config.json": 0o644, "model.safetensors": 0o644}
    with pytest.raises(OutputError, match=r"m: is a directory; give a file name"):
        atomic_write_text(tmp_path / "m", "x")
    with pytest.raises(OutputError, match=r"a.json/x.json: cannot write here"):
        atomic_write_text(tmp_path / "a.json" / "x.json", "x")


def test_read_only_output_places_are_one_line_errors(tiny_dir, tmp_path, capsys):
    """A read-only --out or --output was a PermissionError traceback."""
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    if os.access(ro, os.W_OK):
        pytest.skip("running as root: a read-only directory is writable here")
    assert main(["quantize", "--model", str(tiny_dir), "--out", str(ro / "q")]) == 2
    assert f"{ro / 'q'}: cannot create the output directory (Permission denied)" in capsys.readouterr().err
    with pytest.raises(OutputError, match=r"ro/m.json: cannot write here \(Permission denied\)"):
        atomic_write_text(ro / "m.json", "{}")


@pytest.mark.parametrize("args,message", [
    (["finetune", "--epochs", "0"], "--epochs 0.0: must be above 0"),
    (["finetune", "--max-length", "0"], "--max-length 0: must be at least 8"),
    (["finetune", "--lr", "-1"], "--lr -1.0: must be above 0"),
    (["finetune", "--dropout", "1.5"], "--dropout 1.5: must be below 1"),
    (["finetune", "--warmup", "-0.5"], "--warmup -0.5: must be at least 0"),
    (["pretrain", "--batch-size", "0"], "--batch-size 0: must be at least 1"),
    (["pretrain", "--steps", "0"], "--steps 0: must be at least 1"),
    (["pretrain", "--max-seq-length", "0"], "--max-seq-length 0: must be at least 8"),
    (["pretrain", "--lr", "nan"], "--lr nan: not a finite number"),
    (["pretrain", "--save-every", "-1"], "--save-every -1: must be at least 0"),
    (["distill", "--temperature", "0"], "--temperature 0.0: must be above 0"),
])
def test_numeric_flags_are_checked_before_anything_is_written(args, message, tiny_dir, tmp_path, capsys):
    """`--epochs 0` exited 0 with no metric; pretrain `--batch-size 0` said `range() arg 3 must not be zero`."""
    verb, out = args[0], tmp_path / "out"
    small = ["--max-train-examples", "16", "--max-eval-examples", "8", "--threads", "1"]  # bounded, if it ran
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("".join(f"Document {d} starts here.\nIt has a second sentence.\n\n" for d in range(40)),
                      encoding="utf-8")
    base = {"finetune": ["--task", "sst2", "--model", str(tiny_dir), "--data", str(need_data("glue", "SST-2")), *small],
            "pretrain": ["--corpus", str(corpus), "--vocab", str(tiny_dir), "--size", "tiny", "--steps", "2",
                         "--threads", "1"],
            "distill": ["--teacher", str(tiny_dir), "--task", "sst2", "--data", str(need_data("glue", "SST-2")),
                        *small]}
    assert main([verb, *base[verb], "--out", str(out), *args[1:]]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()


# ---- fault injection: one bounded trial of each kind from benchmarks/faults.py ---------------------------------
@pytest.fixture(scope="module")
def faults(tmp_path_factory, minilm_dir):
    need_data("glue", "SST-2")
    need_data("nsmc", "corpus.txt.gz")
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import faults as module  # benchmarks/ is not a package

    work = tmp_path_factory.mktemp("faults")
    inputs = module.make_inputs(work)
    ref, wall = module.reference("finetune", inputs, work)
    return module, inputs, ref, wall, work


def test_sigkill_mid_finetuning_then_resume_ends_bit_identical(faults):
    module, inputs, ref, wall, work = faults
    trial = module.kill_trial("finetune", 1, inputs, ref, wall, work, first_kill=0.6 * wall)
    assert trial.kills and trial.ok, trial


def test_full_disk_during_a_checkpoint_save_keeps_the_previous_one_and_names_the_path(faults):
    module, inputs, ref, _, work = faults
    trial = module.disk_full_trial(inputs, ref, work, finish=False)
    assert trial.ok, trial
