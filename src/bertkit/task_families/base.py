"""What every task family is asked for. A family is one object (one file each, registered in `__init__`); the
trainer, the Predictor, the ONNX export, the HTTP service and the CLI ask it instead of testing family names.

Imports of torch, the Predictor, the features and the service happen inside the methods that need them: the
registry itself is pure Python, so that `bertkit tokenize` and the CLI's choice lists load neither a trainer
nor a server.
"""

from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Callable

TEXTS = {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1}
PAIRS = {"type": "array", "minItems": 1,
         "items": {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 2, "maxItems": 2}}
MODEL = {"type": "string", "description": "which served model (default: the first)"}
SERVED_SUMMARIES = ("centrality", "centroid", "lead", "textrank", "frequency")  # the oracle needs a reference: the CLI's


@dataclass
class Call:
    """A parsed HTTP request: the batcher operation, its items with their names for error messages, the
    operation's options, and how the results become the response body."""

    op: str
    items: list
    names: list[str]
    finish: Callable[[list], dict]
    options: dict | None = None


def window_cost(n: int, max_length: int, specials: int = 2) -> tuple[int, int]:
    """(windows, tokens) for a text of `n` pieces read in windows of `max_length` (the template's `specials`
    tokens around each: `[CLS] ... [SEP]`) half a window apart, as tagging and long-text classification read it."""
    from bertkit.data.features import windows

    room = max_length - specials
    spans = windows(n, room, max(room // 2, 1))
    return len(spans), sum(length + specials for _, length in spans)


class Family:
    """The defaults every family shares: any model embeds (`/v1/embed`, `/v1/similarity`)."""

    name = ""
    heads: tuple[str, ...] = ()  # names in bertkit.heads.HEADS whose models are this family; the first is trained
    operation = ""  # the Predictor method that answers for it
    trainable = False  # `bertkit finetune` trains it (it then has rows, loss, count and evaluate)
    onnx_outputs: tuple[str, ...] = ()  # output names of its ONNX graph; () : no export
    per_text_outputs: tuple[str, ...] = ()  # outputs with one row per text (no sequence axis)
    rows_use_qa_settings = False  # its training rows are cut by `QASettings` (windows of question + context)
    feature_based = False  # the feature-based recipe (frozen encoder, BiLSTM over chosen layers) applies
    problem_type: str | None = None  # config.json's problem_type for a trained model
    union_labels = False  # labels are those of the training and the evaluation data together
    endpoints: tuple[str, ...] = ()  # HTTP endpoints of its own, besides the shared embedding ones
    SHARED = ("embed", "similarity", "summarize")
    class_labels = False  # config.json's id2label are the classes it answers (listed by /v1/models)
    explains = False  # `Predictor.explain` (gradient x input of a class's logit) applies
    input_fields: tuple[str, str] | None = None  # `predict` reads JSON lines of these two fields, not text lines
    whole_text_reason = ""  # why `predict` reads every token of a line, when `reads_whole` says it does
    agreement_threshold: float | None = 0.99  # int8 is kept by `infer.calibrate` at or above it; None: no preset

    def accepts(self, config) -> bool:
        """Whether a model of one of `heads` with this config is this family (classification vs regression)."""
        return True

    # ---- training -------------------------------------------------------------------------------------------
    def num_labels(self, labels: list[str] | None) -> int:
        return len(labels) if labels else 2

    def rows(self, tokenizer, examples: list, labels: list[str] | None, max_length: int, qa) -> list[dict]:
        raise ValueError(f"{self.name}: not a fine-tuning family")

    def count(self, batch) -> float:
        """The units the loss is a mean over (examples; labelled words for tagging)."""
        return float(len(batch["input_ids"]))

    def loss(self, model, batch):
        """The loss summed over the batch's units, as the head computes it."""
        raise ValueError(f"{self.name}: not a fine-tuning family")

    def eval_options(self, train_set: list, eval_set: list, korean: bool) -> dict:
        return {}

    def evaluate(self, predictor, examples: list, labels: list[str] | None, **options) -> dict[str, float]:
        raise ValueError(f"{self.name}: not a fine-tuning family")

    # ---- the CLI's `predict` --------------------------------------------------------------------------------
    def reads_whole(self, pairs: bool) -> bool:
        """Whether `predict` reads every token of a line (windows): a line cut at --max-chars is then refused;
        otherwise only the first max_length tokens matter and a provably covering prefix is enough."""
        return False

    def predict(self, predictor, texts: list[str], pairs: list[str] | None) -> list[dict]:
        return [{"vector": v.tolist()} for v in predictor.embed(texts)]

    def agreement(self, a: list[dict], b: list[dict]) -> tuple[str, float]:
        """(what was measured, how far `b`'s answers agree with `a`'s): the same inputs' `predict` results from
        two precisions of one model (`infer.calibrate`). Vectors: their mean cosine."""
        import numpy as np

        from bertkit.apps.search import normalize

        x, y = (normalize(np.asarray([r["vector"] for r in side], dtype=np.float64)) for side in (a, b))
        return "mean cosine of the vectors", float((x * y).sum(1).mean())

    # ---- the HTTP service -----------------------------------------------------------------------------------
    def schema(self, endpoint: str) -> tuple[dict, str]:
        """(the request body's JSON schema, a one-line summary) of one of its endpoints."""
        if endpoint == "embed":
            return ({"type": "object", "properties": {"texts": TEXTS, "model": MODEL}, "required": ["texts"]},
                    "an L2-normalised sentence vector for each text")
        if endpoint == "similarity":
            return ({"type": "object", "properties": {"pairs": PAIRS, "model": MODEL}, "required": ["pairs"]},
                    "cosine similarity of the sentence vectors of each pair")
        if endpoint == "summarize":
            return ({"type": "object", "properties": {
                "text": {"type": "string", "minLength": 1, "description": "the article (split into sentences here)"},
                "sentences": {"type": "array", "items": {"type": "string"}, "minItems": 1},
                "k": {"type": "integer", "minimum": 1, "maximum": 50},
                "method": {"type": "string", "enum": list(SERVED_SUMMARIES)}, "model": MODEL}},
                "the k sentences that stand for an article (extractive), in article order, with their offsets")
        raise KeyError(endpoint)

    def parse(self, endpoint: str, body: dict, settings, predictor) -> Call:
        """The request `body` checked (BadRequest naming the field) and turned into a batcher call."""
        import numpy as np

        from bertkit.serve.inputs import read_pairs, read_texts

        if endpoint == "embed":
            texts, cut = read_texts(body, "texts", settings)
            return Call("embed", texts, [f"texts[{i}]" for i in range(len(texts))],
                        lambda vectors: {"vectors": [np.asarray(v).tolist() for v in vectors], "truncated": cut},
                        {"normalize": True})
        if endpoint == "similarity":
            a, b, _ = read_pairs(body, settings)
            n = len(a)
            return Call("embed", a + b, [f"pairs[{i % n}][{i // n}]" for i in range(2 * n)],
                        lambda v: {"scores": [float(np.dot(v[i], v[n + i])) for i in range(n)]}, {"normalize": True})
        if endpoint == "summarize":
            return summarize_call(body, settings)
        raise KeyError(endpoint)

    def cost(self, predictor, op: str, pieces: tuple[int, ...], name: str, options: dict | None = None
             ) -> tuple[int, str]:
        """(tokens the model reads for one item of `op`, how that was counted) from its pieces (no specials) and
        the call's options."""
        n, L = pieces[0] + predictor.tok.num_special_tokens(), predictor.max_length
        return min(n, L), f"{n} tokens" + (f" (cut to {L})" if n > L else "")

    def side_names(self, op: str, name: str) -> tuple[str, str]:
        """How an error names the two sides of a two-text item `name`."""
        return f"{name}[0]", f"{name}[1]"

    def run(self, predictor, op: str, items: list, options: dict) -> list:
        """The model side of a batcher call (runs in the model's worker thread)."""
        if op == "embed":
            return list(predictor.embed(items, normalize=options.get("normalize", True)))
        raise ValueError(f"unknown operation {op}")


def texts_call(op: str, texts: list[str], cut: list[bool], options: dict | None = None) -> Call:
    """A call over `texts` answered as {"results": [...]} with `truncated` on the texts cut at max_chars."""
    return Call(op, texts, [f"texts[{i}]" for i in range(len(texts))],
                lambda results: {"results": [{**r, **({"truncated": True} if c else {})}
                                             for r, c in zip(results, cut)]}, options)


def summarize_call(body: dict, settings) -> Call:
    """/v1/summarize: the article's sentences embedded as one call of the model, then chosen (`apps.summarize`)."""
    from bertkit.apps.summarize import MAX_SENTENCES, sentence_offsets, split_text, summarize
    from bertkit.serve.inputs import BadRequest, check_text, read_int

    cut = False
    if "sentences" in body:
        items = body["sentences"]
        if not isinstance(items, list) or not items:
            raise BadRequest(400, "sentences: expected a non-empty list of strings")
        sentences = [check_text(x, f"sentences[{i}]", settings)[0].strip() for i, x in enumerate(items)]
        text, offsets = None, None
    else:
        if "text" not in body:
            raise BadRequest(400, "text: missing (or give sentences)")
        text, cut = check_text(body["text"], "text", settings)
        sentences = split_text(text)
        offsets = sentence_offsets(text, sentences)
    if len(sentences) > min(MAX_SENTENCES, settings.max_items):
        raise BadRequest(413, f"{'sentences' if text is None else 'text'}: {len(sentences)} sentences, limit "
                              f"{min(MAX_SENTENCES, settings.max_items)} per request")
    k = read_int(body, "k", 3, 1, 50, "at most 50 sentences")
    method = body.get("method", "centrality")
    if method not in SERVED_SUMMARIES:
        raise BadRequest(400, f"method: choose one of {', '.join(SERVED_SUMMARIES)}")

    def finish(vectors) -> dict:
        import numpy as np

        chosen = summarize(sentences, k, method, vectors=np.asarray(vectors))
        return {"summary_sentences": chosen, "sentences": sentences,
                "summary": " ".join(sentences[i] for i in chosen),
                **({"offsets": offsets} if offsets is not None else {}), **({"truncated": True} if cut else {})}

    return Call("embed", sentences, [f"sentences[{i}]" if text is None else f"text (sentence {i})"
                                     for i in range(len(sentences))], finish, {"normalize": True})


# ---- explanations over HTTP (classification, QA answers) --------------------------------------------------------------
EXPLAIN_SCHEMA = {
    "explain": {"type": "boolean", "description": "which words drove the answer"},
    "method": {"type": "string", "enum": ["gradient x input", "integrated gradients"]},
    "steps": {"type": "integer", "minimum": 1, "maximum": 128, "description": "integrated gradients' steps"},
    "baseline": {"type": "string", "enum": ["pad", "mask", "zero"]}}


def read_explain(body: dict, predictor) -> dict | None:
    """The explanation a body asks for (`explain`, and `method`, `steps`, `baseline`), or None; BadRequest naming
    the field."""
    from bertkit.serve.inputs import BadRequest, read_int

    explain = body.get("explain", False)
    if not isinstance(explain, bool):
        raise BadRequest(400, "explain: expected true or false")
    if not explain:
        return None
    if not predictor.has_float_model():
        raise BadRequest(400, "explain: needs the float PyTorch model (this one is an int8 directory)")
    method = body.get("method", "gradient x input")
    if method not in predictor.EXPLAIN_METHODS:
        raise BadRequest(400, f"method: choose one of {', '.join(predictor.EXPLAIN_METHODS)}")
    baseline = body.get("baseline", "pad")
    if baseline not in predictor.IG_BASELINES:
        raise BadRequest(400, f"baseline: choose one of {', '.join(predictor.IG_BASELINES)}")
    steps = read_int(body, "steps", 32, 1, 128, "at most 128 (each step is a forward and a backward pass)")
    return {"method": method, "steps": steps, "baseline": baseline}


def explain_factor(explain: dict) -> tuple[int, str]:
    """(model passes an explanation costs, in forward-pass equivalents: a backward pass is ~2 forwards; how)."""
    if explain["method"] == "integrated gradients":  # the two ends, then a forward and a backward per step
        n = 2 + 3 * explain["steps"]
        return n, f"x{n} for integrated gradients with {explain['steps']} steps"
    return 3, "x3 to explain"
