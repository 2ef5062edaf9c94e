"""Sentence (pair) classification: [CLS] -> pooler -> linear; a label and its probabilities per text."""

from __future__ import annotations

from bertkit.task_families.base import (EXPLAIN_SCHEMA, MODEL, PAIRS, TEXTS, Call, Family, explain_factor,
                                        read_explain, texts_call, window_cost)


class Classification(Family):
    name = "classification"
    heads = ("BertForSequenceClassification",)
    operation = "classify"
    trainable = True
    onnx_outputs = ("logits",)
    per_text_outputs = ("logits",)
    problem_type = "single_label_classification"
    class_labels = True
    explains = True
    endpoints = ("classify",)
    whole_text_reason = "classification reads the whole text in windows"

    def accepts(self, config) -> bool:
        return not (config.num_labels == 1 or config.problem_type == "regression")

    # ---- training -------------------------------------------------------------------------------------------
    def target(self, label, index: dict[str, int]):
        return index[label]

    def rows(self, tokenizer, examples, labels, max_length, qa) -> list[dict]:
        pairs = [e.text_pair or "" for e in examples] if any(e.text_pair is not None for e in examples) else None
        encs = tokenizer.encode_batch([e.text for e in examples], pairs, max_length=max_length)
        index = {name: i for i, name in enumerate(labels or [])}
        return [{"input_ids": enc.ids, "token_type_ids": enc.type_ids, "labels": self.target(e.label, index)}
                for e, enc in zip(examples, encs)]

    def loss(self, model, batch):
        out = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"], labels=batch["labels"],
                    reduction="sum")
        return out.loss

    def classify(self, predictor, examples):
        pairs = [e.text_pair or "" for e in examples] if any(e.text_pair is not None for e in examples) else None
        return predictor.classify([e.text for e in examples], pairs)

    def evaluate(self, predictor, examples, labels, **options) -> dict[str, float]:
        from bertkit import metrics as M

        out = self.classify(predictor, examples)
        index = {name: i for i, name in enumerate(labels)}
        pred, gold = [index[o["label"]] for o in out], [index[e.label] for e in examples]
        result = {"accuracy": M.accuracy(pred, gold)}
        if len(labels) == 2:
            result["f1"] = M.f1_binary(pred, gold)
            result["mcc"] = M.matthews_corrcoef(pred, gold)
        return result

    # ---- prediction -----------------------------------------------------------------------------------------
    def result(self, logits, names: list[str]) -> dict:
        """One text's answer from its (window-averaged) logits."""
        import numpy as np

        p = np.exp(logits - logits.max())
        p /= p.sum()
        return {"label": names[int(np.argmax(p))], "probs": {n: float(x) for n, x in zip(names, p)}}

    def reads_whole(self, pairs: bool) -> bool:
        return not pairs  # a pair is truncated longest-first to the window

    def predict(self, predictor, texts, pairs) -> list[dict]:
        return predictor.classify(texts, pairs)

    def agreement(self, a, b):
        return "share of equal labels", sum(x["label"] == y["label"] for x, y in zip(a, b)) / len(a)

    # ---- the HTTP service -----------------------------------------------------------------------------------
    def schema(self, endpoint):
        if endpoint != "classify":
            return super().schema(endpoint)
        return ({"type": "object", "properties": {"texts": TEXTS, "pairs": PAIRS, "model": MODEL, **EXPLAIN_SCHEMA},
                 "description": "texts, or pairs for a sentence-pair model; explain: word (and, for one text, "
                                "sentence) importance with each answer, by gradient x input or integrated "
                                "gradients (each text read in its first window)"},
                "label and probabilities (or a score) for each text or pair")

    def parse(self, endpoint, body, settings, predictor) -> Call:
        if endpoint != "classify":
            return super().parse(endpoint, body, settings, predictor)
        from bertkit.serve.inputs import read_pairs, read_texts

        explain = read_explain(body, predictor)
        op = "explain" if explain else "classify"
        if "pairs" in body:
            a, b, cut = read_pairs(body, settings)
            call = texts_call(op, list(zip(a, b)), cut, {"pairs": True, **({"explain": explain} if explain else {})})
            call.names = [f"pairs[{i}]" for i in range(len(a))]
            return call
        texts, cut = read_texts(body, "texts", settings)
        return texts_call(op, texts, cut, {"explain": explain} if explain else None)

    def cost(self, predictor, op, pieces, name, options=None):
        L, specials = predictor.max_length, predictor.tok.num_special_tokens(pair=len(pieces) == 2)
        if op == "explain":  # the first window only
            tokens = min(sum(pieces) + specials, L)
            factor, how = explain_factor(options["explain"])
            return factor * tokens, f"{tokens} tokens ({how}: {factor * tokens})"
        if len(pieces) == 2:  # pairs: truncated longest-first to the window
            na, nb = pieces
            return min(na + nb + specials, L), f"{na + nb + specials} tokens"
        n = pieces[0]
        if op != "classify":
            return super().cost(predictor, op, pieces, name, options)
        windows, cost = window_cost(n, L, specials)
        cost = windows * L if windows > 1 else cost  # the last window ends at the text's end: all are full
        return cost, f"{n + specials} tokens" + (f", read as {windows} windows of {L}: {cost} tokens"
                                                 if windows > 1 else "")

    def run(self, predictor, op, items, options):
        if op == "classify":
            if options.get("pairs"):
                return predictor.classify([a for a, _ in items], [b for _, b in items])
            return predictor.classify(items)
        if op == "explain":
            how = options["explain"]
            if options.get("pairs"):
                return [predictor.explain(a, pair=b, **how) for a, b in items]
            return [predictor.explain(t, **how) for t in items]
        return super().run(predictor, op, items, options)


FAMILY = Classification()
