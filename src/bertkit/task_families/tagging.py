"""Token tagging (CoNLL-2003, KLUE-NER): a label per word from the token where the word starts; entities with
character offsets at prediction."""

from __future__ import annotations

from bertkit.task_families.base import MODEL, TEXTS, Family, texts_call, window_cost


class Tagging(Family):
    name = "tagging"
    heads = ("BertForTokenClassification",)
    operation = "tag"
    trainable = True
    feature_based = True
    onnx_outputs = ("logits",)
    union_labels = True  # a tag seen only in evaluation still needs an output
    endpoints = ("tag",)
    whole_text_reason = "tagging reads the whole text in windows"

    def rows(self, tokenizer, examples, labels, max_length, qa) -> list[dict]:
        from bertkit.data.features import tag_features

        label_ids = {t: i for i, t in enumerate(labels)}
        return [{"input_ids": f.input_ids, "token_type_ids": f.token_type_ids, "labels": f.labels}
                for f in tag_features(tokenizer, examples, label_ids, max_length)]

    def count(self, batch) -> float:
        from bertkit.data.features import IGNORE

        return float((batch["labels"] != IGNORE).sum())  # the loss is a mean over labelled words

    def loss(self, model, batch):
        out = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"], labels=batch["labels"],
                    reduction="sum")
        return out.loss  # a micro-batch without a labelled word adds 0 (a sum over nothing), not 0/0

    def evaluate(self, predictor, examples, labels, **options) -> dict[str, float]:
        from bertkit import metrics as M

        predicted = [r["tags"] for r in predictor.tag(examples)]
        scores = M.entity_scores(predicted, [e.tags for e in examples])
        return {"f1": scores["f1"], "precision": scores["precision"], "recall": scores["recall"]}

    def reads_whole(self, pairs: bool) -> bool:
        return True

    def predict(self, predictor, texts, pairs) -> list[dict]:
        return predictor.tag(texts)

    agreement_threshold = 0.98

    def agreement(self, a, b):
        """The F1 of `b`'s entities (type and character span) against `a`'s; 1 where neither finds any."""
        x = {(n, e["type"], e["start"], e["end"]) for n, r in enumerate(a) for e in r["entities"]}
        y = {(n, e["type"], e["start"], e["end"]) for n, r in enumerate(b) for e in r["entities"]}
        return "F1 of the entities", 2 * len(x & y) / (len(x) + len(y)) if x or y else 1.0

    def schema(self, endpoint):
        if endpoint != "tag":
            return super().schema(endpoint)
        return ({"type": "object", "properties": {"texts": TEXTS, "model": MODEL}, "required": ["texts"]},
                "entities with character offsets for each text")

    def parse(self, endpoint, body, settings, predictor):
        if endpoint != "tag":
            return super().parse(endpoint, body, settings, predictor)
        from bertkit.serve.inputs import read_texts

        return texts_call("tag", *read_texts(body, "texts", settings))

    def cost(self, predictor, op, pieces, name, options=None):
        if op != "tag":
            return super().cost(predictor, op, pieces, name, options)
        n, L, specials = pieces[0], predictor.max_length, predictor.tok.num_special_tokens()
        windows, cost = window_cost(n, L, specials)
        return cost, f"{n + specials} tokens" + (f", read as {windows} windows of {L}: {cost} tokens"
                                                 if windows > 1 else "")

    def run(self, predictor, op, items, options):
        if op == "tag":
            return predictor.tag(items)
        return super().run(predictor, op, items, options)


FAMILY = Tagging()
