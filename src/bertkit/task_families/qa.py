"""Span question answering (SQuAD 1.1 / 2.0, KorQuAD 1.0): a start and an end logit per token, over windows of
long contexts; the answer with character offsets in the context."""

from __future__ import annotations

from bertkit.task_families.base import EXPLAIN_SCHEMA, MODEL, Call, Family, explain_factor, read_explain


class QuestionAnswering(Family):
    name = "qa"
    heads = ("BertForQuestionAnswering",)
    operation = "answer"
    trainable = True
    rows_use_qa_settings = True
    onnx_outputs = ("start_logits", "end_logits")
    endpoints = ("answer",)

    def rows(self, tokenizer, examples, labels, max_length, qa) -> list[dict]:
        from bertkit.data.features import qa_features

        return [{"input_ids": f.input_ids, "token_type_ids": f.token_type_ids, "start_positions": f.start_position,
                 "end_positions": f.end_position} for f in qa_features(tokenizer, examples, qa, train=True)]

    def loss(self, model, batch):
        out = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"],
                    start_positions=batch["start_positions"], end_positions=batch["end_positions"], reduction="sum")
        return out.loss

    def eval_options(self, train_set, eval_set, korean) -> dict:
        # SQuAD 2.0 (some question unanswerable): an empty answer may win
        return {"allow_empty": any(e.is_impossible for e in train_set + eval_set), "korean": korean}

    def evaluate(self, predictor, examples, labels, allow_empty: bool = False, korean: bool = False,
                 **options) -> dict[str, float]:
        import numpy as np

        from bertkit import metrics as M

        answers = predictor.answer(examples, allow_empty=allow_empty)
        em_fn, f1_fn = (M.korquad_em, M.korquad_f1) if korean else (M.squad_em, M.squad_f1)
        gold = [[t for t, _ in e.answers] or [""] for e in examples]
        return {"em": float(np.mean([em_fn(a["answer"], g) for a, g in zip(answers, gold)])),
                "f1": float(np.mean([f1_fn(a["answer"], g) for a, g in zip(answers, gold)]))}

    input_fields = ("question", "context")
    whole_text_reason = "question answering reads the whole context"

    def reads_whole(self, pairs: bool) -> bool:
        return True

    def predict(self, predictor, questions, contexts) -> list[dict]:
        return predictor.answer(questions, contexts)

    agreement_threshold = 0.95  # a span one word longer or shorter is a different answer

    def agreement(self, a, b):
        return "share of equal answers", sum(x["answer"] == y["answer"] for x, y in zip(a, b)) / len(a)

    def schema(self, endpoint):
        if endpoint != "answer":
            return super().schema(endpoint)
        return ({"type": "object", "properties": {"question": {"type": "string", "minLength": 1},
                                                  "context": {"type": "string", "minLength": 1},
                                                  "alternatives": {"type": "integer", "minimum": 0, "maximum": 20,
                                                                   "description": "the next best spans too"},
                                                  "model": MODEL, **EXPLAIN_SCHEMA},
                 "required": ["question", "context"]},
                "the answer span of the context, with character offsets")

    def parse(self, endpoint, body, settings, predictor):
        if endpoint != "answer":
            return super().parse(endpoint, body, settings, predictor)
        from bertkit.serve.inputs import check_text, read_int

        (q, c1), (ctx, c2) = (check_text(body.get("question"), "question", settings),
                              check_text(body.get("context"), "context", settings))
        alternatives = read_int(body, "alternatives", 0, 0, 20, "at most 20")
        explain = read_explain(body, predictor)
        options = {**({"alternatives": alternatives} if alternatives else {}),
                   **({"explain": explain} if explain else {})}
        return Call("answer", [(q, ctx)], ["question + context"],
                    lambda results: {**results[0], **({"truncated": True} if c1 or c2 else {})}, options or None)

    def cost(self, predictor, op, pieces, name, options=None):
        if op != "answer":
            return super().cost(predictor, op, pieces, name, options)
        from bertkit.data.features import windows

        na, nb = pieces
        qa = predictor.settings.qa
        qa_len = min(qa.max_length, predictor.config.max_length)
        q = min(na, qa.max_query_length)
        specials = predictor.tok.num_special_tokens(pair=True)
        spans = windows(nb, max(qa_len - q - specials, 1), qa.doc_stride)
        cost = sum(length + q + specials for _, length in spans)
        what = f"{na} + {nb} tokens, read as {len(spans)} window(s) of up to {qa_len}: {cost} tokens"
        if (options or {}).get("explain"):  # and the window that holds the answer, explained
            factor, how = explain_factor(options["explain"])
            cost += factor * max(length + q + specials for _, length in spans)
            what += f", + the answer's window {how}: {cost} tokens"
        return cost, what

    def side_names(self, op, name) -> tuple[str, str]:
        return ("question", "context") if op == "answer" else super().side_names(op, name)

    def run(self, predictor, op, items, options):
        if op == "answer":
            answers = predictor.answer([q for q, _ in items], [c for _, c in items],
                                       alternatives=options.get("alternatives", 0))
            if options.get("explain"):
                return [{**a, **{k: v for k, v in predictor.explain_answer(q, c, answer=a, **options["explain"]).items()
                                 if k not in a}} for a, (q, c) in zip(answers, items)]
            return answers
        return super().run(predictor, op, items, options)


FAMILY = QuestionAnswering()
