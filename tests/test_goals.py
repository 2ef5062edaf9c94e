"""The fine-tuning goals of the README's English table, each trained with its table recipe (the JOBS of
benchmarks/finetune.py, so the test and the table cannot drift apart). Slow: 20-60 minutes each on two cores;
`make test-slow`. The scores the README reports came from the same recipes."""

from __future__ import annotations

import json
import sys

import pytest
from conftest import ROOT, need_data

from bertkit.cli import main

sys.path.insert(0, str(ROOT / "benchmarks"))
from finetune import JOBS  # benchmarks/ is not a package


@pytest.mark.slow
@pytest.mark.parametrize("name,metric,goal", [("sst2", "accuracy", 0.88), ("stsb", "spearman", 0.85),
                                              ("conll2003", "f1", 0.85)])
def test_english_goal_with_the_table_recipe(name, metric, goal, minilm_dir, tmp_path, capsys):
    _, task, data, _, flags, _ = next(job for job in JOBS if job[0] == name)
    assert main(["finetune", "--task", task, "--model", str(minilm_dir), "--data", str(need_data(*data.split("/"))),
                 "--out", str(tmp_path / name), "--threads", "2", *flags]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["metric"] == metric and summary[metric] >= goal, summary
