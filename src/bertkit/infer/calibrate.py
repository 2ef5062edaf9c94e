"""int8 where it agrees with fp32: the preset that decides for the user.

Dynamic int8 is faster on CPU (benchmarks/RESULTS.md) but moves outputs a little, and how much depends on the model
and the inputs. `int8_if_it_agrees` loads a model both ways, runs each on a calibration sample of the inputs it
will serve, compares the answers with the measure of the model's family (`Family.agreement`: the share of equal
labels, tags or answers, the correlation of scores, the mean cosine of vectors), and keeps int8 only when the
agreement reaches the family's threshold. It says what it measured either way (`Agreement.line`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

from bertkit.infer.predictor import Predictor, PredictorSettings

log = logging.getLogger("bertkit.calibrate")


@dataclass
class Agreement:
    measure: str  # what was compared, e.g. "share of equal labels"
    value: float  # int8 against fp32 on the sample, in [0, 1] (correlation and cosine may go below 0)
    threshold: float  # int8 is kept at or above it
    n: int  # calibration inputs
    fp32_s: float  # seconds each precision took over the sample (one pass, after the first WARM inputs once)
    int8_s: float

    @property
    def accepted(self) -> bool:
        return self.value >= self.threshold

    def line(self) -> str:
        speed = self.fp32_s / self.int8_s if self.int8_s > 0 else float("nan")
        verdict = "int8 used" if self.accepted else "fp32 kept"
        return (f"int8 against fp32 on {self.n} calibration inputs: {self.measure} {self.value:.4f} (threshold "
                f"{self.threshold}), int8 {speed:.2f}x the speed of fp32 on them: {verdict}")


WARM = 32  # inputs run once before the timed pass (first calls pay for allocations and kernel choices)


def int8_if_it_agrees(path: str | Path, texts: Sequence[str], pairs: Sequence[str] | None = None,
                      settings: PredictorSettings | None = None, threshold: float | None = None,
                      fp32: Predictor | None = None) -> tuple[Predictor, Agreement]:
    """The model in `path` in int8 if its answers on `texts` (and `pairs`: text pairs, or a QA model's contexts
    with `texts` its questions) agree with fp32's at least `threshold` (default: the family's
    `agreement_threshold`), else in fp32; with what was measured. Both load on `settings.backend` (`fp32`: the
    fp32 one already loaded); where fp32 runs on OpenVINO, which offers no int8, int8 is ONNX Runtime's."""
    settings = settings or PredictorSettings()
    if not texts:
        raise ValueError("int8 calibration: no inputs (give a sample of what the model will read)")
    if pairs is not None and len(pairs) != len(texts):
        raise ValueError(f"int8 calibration: {len(texts)} texts but {len(pairs)} pairs")
    fp32 = fp32 or Predictor.from_pretrained(path, replace(settings, int8=False))
    family = fp32.task_family
    if not fp32.has_float_model():
        raise ValueError(f"{path}: already int8 (a `bertkit quantize` directory): give the float model")
    if family.agreement_threshold is None:
        raise ValueError(f"{path}: no int8 calibration for {family.name} models (ask for int8 by name)")
    backend = "onnx" if fp32.settings.backend == "openvino" else fp32.settings.backend
    int8 = Predictor.from_pretrained(path, replace(settings, int8=True, backend=backend))

    def answers(p: Predictor) -> tuple[list[dict], float]:
        family.predict(p, list(texts[:WARM]), None if pairs is None else list(pairs[:WARM]))
        start = time.perf_counter()
        out = family.predict(p, list(texts), None if pairs is None else list(pairs))
        return out, time.perf_counter() - start

    a, fp32_s = answers(fp32)
    b, int8_s = answers(int8)
    measure, value = family.agreement(a, b)
    report = Agreement(measure, float(value), family.agreement_threshold if threshold is None else threshold,
                       len(texts), fp32_s, int8_s)
    chosen = int8 if report.accepted else fp32
    chosen.reason += f"; {report.line()}"
    log.info("%s: %s", path, report.line())
    return chosen, report

