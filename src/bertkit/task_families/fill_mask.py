"""Fill-mask: the most likely pieces for each [MASK] (a masked-LM head; pre-training's MLM + NSP head too)."""

from __future__ import annotations

from bertkit.task_families.base import MODEL, TEXTS, Family, texts_call


class FillMask(Family):
    name = "fill-mask"
    heads = ("BertForMaskedLM", "BertForPreTraining")
    operation = "fill_mask"
    endpoints = ("fill-mask",)
    agreement_threshold = None  # no int8 preset: word suggestions are ranked lists, int8 is only when asked

    def predict(self, predictor, texts, pairs) -> list[dict]:
        return predictor.fill_mask(texts)

    def schema(self, endpoint):
        if endpoint != "fill-mask":
            return super().schema(endpoint)
        return ({"type": "object", "properties": {"texts": TEXTS, "top_k": {"type": "integer", "minimum": 1,
                                                                            "maximum": 100}, "model": MODEL},
                 "required": ["texts"]}, "the most likely pieces for each [MASK]")

    def parse(self, endpoint, body, settings, predictor):
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

    def run(self, predictor, op, items, options):
        if op == "fill-mask":
            return predictor.fill_mask(items, top_k=options.get("top_k", 5))
        return super().run(predictor, op, items, options)


FAMILY = FillMask()
