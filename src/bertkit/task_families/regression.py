"""Sentence (pair) regression (STS-B, KLUE-STS): the classification head with one output, a score per text."""

from __future__ import annotations

from bertkit.task_families.classification import Classification


class Regression(Classification):
    name = "regression"
    problem_type = "regression"
    class_labels = False
    explains = False  # gradient x input explains a class's logit

    def accepts(self, config) -> bool:
        return not super().accepts(config)

    def num_labels(self, labels) -> int:
        return 1

    def target(self, label, index):
        return float(label)

    def evaluate(self, predictor, examples, labels, **options) -> dict[str, float]:
        from bertkit import metrics as M

        out = self.classify(predictor, examples)
        pred, gold = [o["score"] for o in out], [float(e.label) for e in examples]
        return {"pearson": M.pearson(pred, gold), "spearman": M.spearman(pred, gold)}

    def result(self, logits, names):
        return {"score": float(logits[0])}

    agreement_threshold = 0.995

    def agreement(self, a, b):
        from bertkit import metrics as M

        return "Pearson correlation of the scores", M.pearson([x["score"] for x in a], [y["score"] for y in b])


FAMILY = Regression()
