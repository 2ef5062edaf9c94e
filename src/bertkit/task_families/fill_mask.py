"""Fill-mask: the most likely pieces for each [MASK], and word suggestions (`apps.suggest`: whole words, several
masks jointly, "is there a better word here?") (a masked-LM head; pre-training's MLM + NSP head too)."""

from __future__ import annotations

from bertkit.task_families.base import MODEL, TEXTS, Call, Family, texts_call


class FillMask(Family):
    name = "fill-mask"
    heads = ("BertForMaskedLM", "BertForPreTraining")
    operation = "fill_mask"
    endpoints = ("fill-mask", "suggest")
    agreement_threshold = None  # no int8 preset: word suggestions are ranked lists, int8 is only when asked

    def predict(self, predictor, texts, pairs) -> list[dict]:
        return predictor.fill_mask(texts)

    def schema(self, endpoint):
        if endpoint == "suggest":
            k = {"type": "integer", "minimum": 1, "maximum": 100}
            return ({"type": "object", "properties": {
                "text": {"type": "string", "minLength": 1,
                         "description": "with [MASK]s to fill (whole words), or a word to check (start, end)"},
                "targets": {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1,
                            "description": "only these words, ranked"},
                "start": {"type": "integer", "minimum": 0, "description": "the checked word's first character"},
                "end": {"type": "integer", "minimum": 0, "description": "one past its last character"},
                "top_k": k, "flag_rank": k, "model": MODEL}, "required": ["text"]},
                "whole-word suggestions for each [MASK], or alternatives to the word at [start, end)")
        if endpoint != "fill-mask":
            return super().schema(endpoint)
        return ({"type": "object", "properties": {"texts": TEXTS, "top_k": {"type": "integer", "minimum": 1,
                                                                            "maximum": 100}, "model": MODEL},
                 "required": ["texts"]}, "the most likely pieces for each [MASK]")

    def parse(self, endpoint, body, settings, predictor):
        if endpoint == "suggest":
            from bertkit.apps.suggest import Suggester
            from bertkit.serve.inputs import BadRequest, check_text

            text, cut = check_text(body.get("text"), "text", settings)
            request = {k: v for k, v in body.items() if k != "model"} | {"text": text}
            try:
                rows, width = Suggester.default_for(predictor).plan(request)
            except ValueError as e:
                raise BadRequest(400, str(e)) from None
            # one item: the text, charged every row the search reads (the batcher runs it alone when large)
            return Call("suggest", [text], ["text"], lambda results: {**results[0], **({"truncated": True} if cut
                                                                                       else {})},
                        {"query": request, "rows": rows, "width": width})
        if endpoint != "fill-mask":
            return super().parse(endpoint, body, settings, predictor)
        from bertkit.serve.inputs import BadRequest, read_texts

        texts, cut = read_texts(body, "texts", settings)
        top_k = body.get("top_k", 5)
        if not isinstance(top_k, int) or isinstance(top_k, bool) or not 1 <= top_k <= 100:
            raise BadRequest(400, "top_k: expected an integer between 1 and 100")
        # checked here, not in the worker: one bad text must not fail the other requests of its batch
        encs = predictor.tok.encode_batch(texts, max_length=predictor.max_length)
        bad = next((i for i, e in enumerate(encs) if predictor.tok.mask_id not in e.ids), None)
        if bad is not None:
            raise BadRequest(400, f"texts[{bad}]: no {predictor.tok.specials['mask']} token to fill")
        return texts_call("fill-mask", texts, cut, {"top_k": top_k})

    def cost(self, predictor, op, pieces, name, options=None):
        if op != "suggest":
            return super().cost(predictor, op, pieces, name, options)
        rows, width = options["rows"], options["width"]
        return rows * width, f"{rows} model rows of up to {width} tokens: {rows * width} tokens"

    def run(self, predictor, op, items, options):
        if op == "suggest":  # identical requests share a batch (same options): one search answers them all
            from bertkit.apps.suggest import Suggester

            return [Suggester.default_for(predictor).answer(options["query"])] * len(items)
        if op == "fill-mask":
            return predictor.fill_mask(items, top_k=options.get("top_k", 5))
        return super().run(predictor, op, items, options)


FAMILY = FillMask()
