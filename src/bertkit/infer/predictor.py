"""The one inference path: text in, answers out. The CLI (`bertkit predict`, `bertkit evaluate`), evaluation during
fine-tuning, the HTTP service and the benchmarks all call a Predictor.

tokenise -> order by length and batch (padding only up to the longest input of its batch; batch 1 has none) ->
encoder + head under `torch.inference_mode` -> post-processing back in input order:
- classification: `label` and `probs` (a name -> probability map); regression: `score`;
- tagging: `entities`, each with `type`, `text`, `start`, `end` (characters of the input text);
- span QA: `answer`, `start`, `end` (characters of the context), `score` (start + end logit), over windows of
  long contexts (`QASettings`);
- embeddings: mask-aware mean pooling of the last layer, or another pooling (`Predictor.pooling`, the `pooling`
  argument of `embed`): `from_pretrained` on a sentence-transformers directory takes its Pooling / Dense /
  Normalize, token window and lower-casing (`infer/sentence_head.py`), so its vectors are the model's own.
Inputs longer than the model's window: classification averages the logits of overlapping windows (pairs are
truncated longest-first, and `truncated` says so); tagging and QA slide windows over them too.

A model that `from_pretrained` loads in fp32 on the torch backend has its Linear weights packed once for oneDNN
(`infer/packed.py`; the state dict is unchanged): re-laying them out on every call was most of batch 1's time.

Options (`PredictorSettings`), none of which is a second code path:
- `backend`: `"auto"` (the default of `from_pretrained`) takes the fastest engine installed for the model: ONNX
  Runtime (`infer/onnxrt.py`, the export cached outside the model's directory) where the head has an ONNX graph,
  PyTorch otherwise (fill-mask, a `bertkit quantize` directory, no onnxruntime); `"torch"`, `"onnx"` or
  `"openvino"` (`infer/openvino_rt.py`: the same export, compiled by OpenVINO) by name.
  `Predictor.describe()` says which ran and why; `explain` and the embeddings of a task model need gradients or
  the encoder alone and read the float PyTorch model of the same directory, loaded on first use;
- `int8=True`: dynamic int8 Linear layers (`infer/quantize.py`; with the ONNX backend, ONNX Runtime's own int8);
  a directory written by `bertkit quantize` is int8 whatever this says;
- `bf16=True`: bfloat16 matrix products on OpenVINO (`auto` picks it), on a CPU with bf16 instructions: the
  throughput tier beside int8, with outputs closer to fp32 (benchmarks/RESULTS.md);
- `max_tokens=N`: batches of at most N tokens (rows x the longest of the batch, padding included) as well as at
  most `batch_size` rows, so short texts can go in large batches (small matrix products are overhead-bound; the
  gain depends on the machine's load, see benchmarks/embed.py) and long ones in small ones (bounded memory);
- `cache_size=N`: an LRU of the last N model rows. Its key is the normalised input the model actually sees (the
  token ids and segment ids of a row, after the tokenizer's normalisation, truncation and windowing), so two
  texts that differ only in what the tokenizer discards share an entry, and a hit returns exactly what the
  model would have. `cache_info()` counts hits and misses.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from collections.abc import Callable, Hashable, Iterator, Sequence

import numpy as np
import torch

from bertkit.checkpoint import CheckpointError
from bertkit.config import BertConfig
from bertkit.data.features import (QASettings, group_by_example, qa_decode, qa_features, tag_decode,
                                   tag_features, windows)
from bertkit.data.tasks import QAExample, TagExample
from bertkit.heads import HEADS
from bertkit.infer.quantize import INT8_KEY
from bertkit.infer.sentence_head import read_layout, sentence_window
from bertkit.metrics import chunks
from bertkit.task_families import Family, family_of, inference_head
from bertkit.tokenizer import Tokenizer, check_vocab


def _scale(items: list[dict]) -> None:
    """Scores divided by the largest magnitude (signed scores keep their signs)."""
    peak = max((abs(x["score"]) for x in items), default=0.0) or 1.0
    for x in items:
        x["score"] = x["score"] / peak


def mean_pool(last_hidden_state: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, T, H), (B, T) -> (B, H): the mean over real tokens only."""
    mask = attention_mask.unsqueeze(-1).to(last_hidden_state.dtype)
    return (last_hidden_state * mask).sum(1) / mask.sum(1).clamp(min=1e-9)


@contextmanager
def evaluating(model):
    """`model` in eval mode within, as it was after. Switching walks every module (0.5 ms for MiniLM, a tenth of a
    batch-1 call; benchmarks/batch1.py --kernels), so a model already in eval mode is left alone."""
    was_training = getattr(model, "training", False)
    if was_training:
        model.eval()
    try:
        yield model
    finally:
        if was_training:
            model.train()


log = logging.getLogger("bertkit.predictor")
BACKENDS = ("auto", "torch", "onnx", "openvino")
GRAPH_BACKENDS = ("onnx", "openvino")  # run the cached ONNX export (`onnx_file`), every padded position computed


def choose_backend(requested: str, head: type, config: BertConfig, quantized: bool = False,
                   bf16: bool = False) -> tuple[str, str]:
    """(backend, why) for a model of class `head`: `requested` if it names one, else the fastest installed that can
    run it: ONNX Runtime, 1.7-2.8x PyTorch's speed at batch 1 and level with it at batch 32, and faster than
    OpenVINO in fp32 (benchmarks/peers.py and batch1.py, MiniLM and the BERT-base shape, 2 threads); for `bf16`,
    OpenVINO, the one engine here with bf16 kernels."""
    import importlib.util

    if requested not in BACKENDS:
        raise ValueError(f"backend '{requested}': choose one of {', '.join(BACKENDS)}")
    if bf16 and requested not in ("auto", "openvino"):
        raise ValueError(f"bf16 runs on the openvino backend, not {requested}")
    if requested != "auto":
        return requested, "asked for"
    family = family_of(head, config)
    if quantized:
        if bf16:
            raise ValueError("bf16: a `bertkit quantize` directory is int8; give the float model")
        return "torch", "auto: a `bertkit quantize` directory runs in PyTorch"
    if family is None or not family.onnx_outputs:
        if bf16:
            raise ValueError(f"bf16: {family.name if family else head.__name__} has no ONNX graph to run in bf16")
        return "torch", f"auto: {family.name if family else head.__name__} has no ONNX graph"
    needed = ("openvino", "onnx") if bf16 else ("onnxruntime", "onnx")
    missing = [m for m in needed if importlib.util.find_spec(m) is None]
    if missing and bf16:
        raise ImportError(f"bf16 needs {' and '.join(missing)}: pip install 'bertkit[openvino]'")
    if missing:
        return "torch", f"auto: {' and '.join(missing)} not installed"
    if bf16:
        return "openvino", "auto: the engine with bf16 kernels"
    return "onnx", "auto: the fastest engine installed"


@dataclass
class PredictorSettings:
    batch_size: int = 32  # rows per batch at most
    max_tokens: int = 0  # tokens per batch at most (rows x the longest, padding included); 0: batch_size rows
    max_length: int | None = None  # None: the model's longest input (`BertConfig.max_length`)
    threads: int = 0  # torch / ONNX Runtime threads; 0 leaves the library's choice
    qa: QASettings = field(default_factory=QASettings)
    backend: str = "auto"  # auto (onnx where the head exports, else torch; openvino for bf16) | torch | onnx | openvino
    int8: bool = False
    bf16: bool = False  # bfloat16 matrix products on OpenVINO, where the CPU has bf16 instructions
    cache_size: int = 0  # rows kept in the LRU cache; 0: no cache


class Predictor:
    def __init__(self, model: torch.nn.Module, tokenizer: Tokenizer, settings: PredictorSettings | None = None):
        self.model, self.tok = model, tokenizer
        self.settings = settings or PredictorSettings()
        self.config: BertConfig = model.config
        kind = getattr(model, "family_class", type(model))  # an OnnxModel says which head it was exported from
        family = family_of(kind, self.config)
        if family is None:
            raise ValueError(f"{type(model).__name__}: no inference path for this head")
        self.task_family: Family = family
        self.family = family.name
        self.max_length = min(self.settings.max_length or self.config.max_length, self.config.max_length)
        if self.settings.batch_size < 1 or self.settings.max_tokens < 0:
            raise ValueError(f"batch_size {self.settings.batch_size} / max_tokens {self.settings.max_tokens}: "
                             f"give at least 1 row per batch and a token budget of 0 (off) or more")
        is_module = isinstance(model, torch.nn.Module)
        if self.settings.backend == "auto":  # a model given as it is runs where it is
            given = "torch" if is_module else getattr(model, "backend", "onnx")  # a GraphModel names its own
            self.settings = replace(self.settings, backend=given)
        if self.settings.bf16 and self.settings.backend != "openvino":
            raise ValueError(f"bf16 runs on the openvino backend, not {self.settings.backend}")
        self.reason = "given"  # why this backend (`from_pretrained` says why it chose one)
        # the directory a float PyTorch model can be read from when one is needed (`float_model`)
        self.source: Path | None = None
        self._head: type | None = None  # the head class `from_pretrained` read (to read the float model with)
        self._float: torch.nn.Module | None = model if is_module and INT8_KEY not in self.config.extra else None
        self._encoder: Predictor | None = None  # a task model's encoder, for `embed`
        if self.settings.threads:
            torch.set_num_threads(self.settings.threads)
        self._cache: OrderedDict = OrderedDict()
        self.cache_hits = self.cache_misses = 0
        # `embed`'s sentence vector: None = the mean over real tokens; a sentence-transformers directory's own
        # Pooling / Dense / Normalize (`from_pretrained`, `SentenceModel.predictor()`), and its do_lower_case
        self.pooling: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None
        self.lowercase = False

    @classmethod
    def from_pretrained(cls, path: str | Path, settings: PredictorSettings | None = None) -> Predictor:
        """The head named in config.json `architectures` (a bare encoder for embeddings), on the backend and in the
        precision that `settings` ask for. The ONNX backend exports the model once into the cache (`onnx_file`).
        The tokenizer must fit the embedding (`check_vocab`). A sentence-transformers directory (modules.json) gives
        its encoder with its own pooling, Dense, Normalize, window (unless `settings.max_length` says) and
        lower-casing."""
        from bertkit.infer.packed import bound_onednn_caches, pack_linears
        from bertkit.infer.quantize import int8_dir, load_int8, quantize_int8

        bound_onednn_caches()  # before any oneDNN kernel of this process (int8's engine choice runs some)
        settings = settings or PredictorSettings()
        layout = read_layout(path)
        directory = layout.encoder_dir if layout is not None else Path(path)
        config = BertConfig.from_json_file(directory / "config.json")
        architecture = (config.architectures or ["BertModel"])[0]
        # a family's HF class (RobertaForSequenceClassification) names one of bertkit's heads
        name = inference_head(config.family.internal_class(architecture) or architecture)
        head = HEADS.get(name) if name is not None else None
        if head is None:
            raise CheckpointError(f"{directory / 'config.json'}: architectures {config.architectures}: no "
                                  f"inference path for it")
        tokenizer = Tokenizer.from_pretrained(directory)
        check_vocab(tokenizer, config, directory)
        if layout is not None and settings.max_length is None:
            window = sentence_window(layout.max_seq_length, tokenizer.model_max_length, config.max_length)
            settings = replace(settings, max_length=window)
        quantized = int8_dir(directory)
        if settings.int8 and settings.bf16:
            raise ValueError("int8 and bf16: choose one precision")
        backend, reason = choose_backend(settings.backend, head, config, quantized, settings.bf16)
        settings = replace(settings, backend=backend)
        if quantized:
            if backend != "torch":
                raise ValueError(f"{directory}: an int8 directory runs on the torch backend; for ONNX Runtime "
                                 f"int8 give the float model with int8=True")
            model = load_int8(directory)
        else:
            model = None
            if backend in GRAPH_BACKENDS:
                from bertkit.infer.onnxrt import OnnxModel, onnx_file
                from bertkit.io import OutputError

                if backend == "openvino" and settings.int8:
                    raise ValueError("int8 on the openvino backend: not offered (NNCF's int8 moved MiniLM vectors "
                                     "to cosine 0.72); use backend onnx or torch for int8")
                try:
                    file = onnx_file(directory, head, int8=settings.int8)
                    if backend == "openvino":
                        from bertkit.infer.openvino_rt import OpenVinoModel

                        model = OpenVinoModel(file, config, head, threads=settings.threads, bf16=settings.bf16)
                    else:
                        model = OnnxModel(file, config, head, threads=settings.threads)
                except OutputError as e:  # no writable cache: asked for by name, an error; chosen, PyTorch instead
                    if reason == "asked for" or settings.bf16:
                        raise
                    log.warning("%s: running PyTorch instead", e)
                    settings, reason = replace(settings, backend="torch"), f"auto: no ONNX export ({e})"
        if model is None:
            model = head.from_pretrained(directory).eval()
            model = quantize_int8(model, inplace=True) if settings.int8 else pack_linears(model)
        predictor = cls(model, tokenizer, settings)
        predictor.reason = reason
        predictor.source, predictor._head = (None if quantized else directory), head
        if layout is not None:
            predictor.pooling, predictor.lowercase = layout.head, layout.do_lower_case
        log.info("%s: %s", directory, predictor.describe())
        return predictor

    def engine(self) -> str:
        """The engine and precision that run this model, e.g. 'ONNX Runtime 1.32.0, int8'."""
        if self.settings.backend == "onnx":
            import onnxruntime

            engine = f"ONNX Runtime {onnxruntime.__version__}"
        elif self.settings.backend == "openvino":
            import openvino

            engine = f"OpenVINO {openvino.__version__.split('-')[0]}"
        else:
            engine = f"PyTorch {torch.__version__.split('+')[0]}"
        if self.settings.bf16:
            return f"{engine}, bf16"
        if not (self.settings.int8 or INT8_KEY in self.config.extra):
            return f"{engine}, fp32"
        kernels = getattr(self.model, "int8_engine", None)  # PyTorch's: oneDNN's or fbgemm's, measured at load
        return f"{engine}, int8" + (f" ({kernels} kernels)" if kernels else "")

    def describe(self) -> str:
        """Which backend runs this model, on what, and why: what `predict`, `serve` and the jobs print."""
        return f"{self.settings.backend} ({self.engine()}; {self.reason})"

    def has_float_model(self) -> bool:
        return self._float is not None or self.source is not None

    def float_model(self) -> torch.nn.Module:
        """The float PyTorch model of this predictor: its own model, or the one in the directory it was loaded
        from (read once, on first use) when it runs in ONNX Runtime or in int8. Explanations need its gradients,
        and the embeddings of a task model its encoder alone."""
        if self._float is None:
            if self.source is None:
                raise ValueError("this needs the float PyTorch model, and this predictor has none (an int8 "
                                 "directory, or a model given without its directory)")
            self._float = self._head.from_pretrained(self.source).eval()
        return self._float

    def cache_info(self) -> dict[str, int]:
        return {"hits": self.cache_hits, "misses": self.cache_misses, "size": len(self._cache),
                "capacity": self.settings.cache_size}

    # ---- batching --------------------------------------------------------------------------------------------------
    def _run(self, rows: Sequence[tuple[list[int], list[int]]], fn: Callable, kind: Hashable = "",
             model: Callable | None = None) -> list:
        """`fn(output, batch)` -> one result per row, over batches of similar length; results in row order.
        `model` (default: the predictor's) is what runs, e.g. only the encoder of a head model.
        With a cache, rows seen before (same `kind` of result, same ids) are not run again."""
        model = model if model is not None else self.model
        results: list = [None] * len(rows)
        todo = list(range(len(rows)))
        keys = None
        repeats: list[tuple[int, int]] = []  # (row, the earlier row of this call with the same key)
        if self.settings.cache_size:
            keys = [(kind, tuple(r[0]), tuple(r[1])) for r in rows]
            todo, first = [], {}
            for i, key in enumerate(keys):
                if key in self._cache:
                    self._cache.move_to_end(key)
                    results[i] = self._cache[key]
                elif key in first:
                    repeats.append((i, first[key]))
                else:
                    first[key] = i
                    todo.append(i)
            self.cache_misses += len(todo)
            self.cache_hits += len(rows) - len(todo)
        order = sorted(todo, key=lambda i: len(rows[i][0]))
        is_module = isinstance(model, torch.nn.Module)
        device = next(model.parameters()).device if is_module else torch.device("cpu")
        with evaluating(model), torch.inference_mode():
            for idx in self._batches(order, rows):
                batch = self.tok.collate([rows[i][0] for i in idx], [rows[i][1] for i in idx])
                batch = {k: v.to(device) for k, v in batch.items()}
                out = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
                for i, r in zip(idx, fn(out, batch)):
                    results[i] = r
        for i, j in repeats:
            results[i] = results[j]
        if keys is not None:
            for i in todo:
                self._cache[keys[i]] = results[i]
            while len(self._cache) > self.settings.cache_size:
                self._cache.popitem(last=False)
        return results

    def _batches(self, order: list[int], rows: Sequence[tuple[list[int], list[int]]]) -> Iterator[list[int]]:
        """Consecutive runs of `order` (row indices, shortest first): at most `batch_size` rows and, with
        `max_tokens`, at most that many tokens padded (a row longer than the budget goes alone); on ONNX Runtime,
        beyond four rows, at most a third of the batch padding."""
        cap, budget = self.settings.batch_size, self.settings.max_tokens
        # ONNX Runtime computes every padded position (PyTorch skips them): a server's mixed-length micro-batches
        # ran 1.2x faster with these cuts (benchmarks/RESULTS.md, issue 16)
        padded = self.settings.backend in GRAPH_BACKENDS
        start = 0
        while start < len(order):
            end = min(start + cap, len(order))
            if budget or padded:  # a batch ends before the row that would take it past the budget
                end, real = start + 1, len(rows[order[start]][0])
                while end < len(order) and end - start < cap:
                    n, longest = end - start + 1, len(rows[order[end]][0])
                    if (budget and n * longest > budget) or (padded and n > 4 and 2 * n * longest > 3 * (
                            real + longest)):
                        break
                    real += longest
                    end += 1
            yield order[start:end]
            start = end

    # ---- the families --------------------------------------------------------------------------------------------
    def _require(self, operation: str, what: str) -> None:
        if self.task_family.operation != operation:
            raise ValueError(f"this model does {self.family}, not {what}")

    def classify(self, texts: Sequence[str], pairs: Sequence[str] | None = None) -> list[dict]:
        """A text longer than the model's window is read in overlapping windows (half a window apart) whose logits
        are averaged (`windows`: how many); a pair that does not fit is truncated longest-first (`truncated`)."""
        self._require("classify", "classification")
        encs = self.tok.encode_batch(texts, pairs, max_length=self.max_length)
        rows, owner, notes = [], [], [dict() for _ in encs]
        long_ = [i for i, e in enumerate(encs) if len(e) == self.max_length]
        full = dict(zip(long_, self.tok.encode_batch([texts[i] for i in long_],
                                                     [pairs[i] for i in long_] if pairs is not None else None)))
        for i, e in enumerate(encs):
            f = full.get(i)
            if f is None or len(f) == len(e):
                rows.append((e.ids, e.type_ids))
                owner.append(i)
            elif pairs is not None:
                rows.append((e.ids, e.type_ids))
                owner.append(i)
                notes[i]["truncated"] = True
            else:
                body = [t for t, special in zip(f.ids, f.special_tokens_mask) if not special]
                room = self.max_length - self.tok.num_special_tokens()
                spans = windows(len(body), room, room // 2, align_end=True)
                for b, length in spans:
                    rows.append(self.tok.build_inputs(body[b:b + length]))
                    owner.append(i)
                notes[i]["windows"] = len(spans)
        logits = self._run(rows, lambda out, b: out.logits.float().cpu().numpy(), "logits")
        summed = [np.zeros(self.config.num_labels) for _ in encs]
        for i, lg in zip(owner, logits):
            summed[i] += lg
        names = [(self.config.id2label or {}).get(i, f"LABEL_{i}") for i in range(self.config.num_labels)]
        results = []
        for i, total in enumerate(summed):
            results.append({**self.task_family.result(total / notes[i].get("windows", 1), names), **notes[i]})
        return results

    EXPLAIN_METHODS = ("gradient x input", "integrated gradients")
    IG_BASELINES = ("pad", "mask", "zero")

    def explain(self, text: str, label: str | None = None, method: str = "gradient x input", steps: int = 64,
                baseline: str = "pad", internal_batch: int = 16, pair: str | None = None) -> dict:
        """Which words drove a classification, per piece summed over each word's pieces (and, for one text, over
        each sentence), scaled so that the largest magnitude is 1. One text, or a pair (`pair`: each word says its
        `side`, 0 or 1, and its offsets are in that side's text), read in its first window; needs the float
        PyTorch model (gradients).

        - `gradient x input` (Shrikumar et al. 2017): the label logit's gradient with respect to the word
          embeddings times the embeddings, its L1 norm over the hidden size for each piece (unsigned).
        - `integrated gradients` (Sundararajan et al. 2017): the gradient averaged along the straight path from a
          `baseline` to the input embeddings (`steps` midpoints, `internal_batch` of them per model call) times
          (input - baseline), summed over the hidden size: signed, and summing to F(input) - F(baseline) up to
          the integral's error, which is reported (`difference`, `delta`, and `delta_share` of the difference).
          Baselines: every piece but [CLS]/[SEP] replaced by [PAD] (`pad`, the usual choice for BERT) or [MASK]
          (`mask`), or zero vectors (`zero`)."""
        from bertkit.data.corpus import split_sentences

        if not self.task_family.explains:
            raise ValueError(f"this model does {self.family}; explanations are for classification and QA answers")
        self._check_explain(method, steps, baseline, internal_batch)
        model = self.float_model()
        enc = self.tok.encode(text, pair, max_length=self.max_length)
        ids, types = torch.tensor([enc.ids]), torch.tensor([enc.type_ids])
        names = [self.config.id2label.get(i, f"LABEL_{i}") if self.config.id2label else f"LABEL_{i}"
                 for i in range(self.config.num_labels)]
        if label is not None and label not in names:
            raise ValueError(f"label {label!r}: the model's labels are {', '.join(names)}")
        with evaluating(model), torch.no_grad():
            logits = model(ids, torch.ones_like(ids), types).logits[0].float()
        target = names.index(label) if label is not None else int(logits.argmax())
        scores, extra = self._attribute(model, ids, types, lambda out: out.logits[:, target], method, steps,
                                        baseline, internal_batch)
        words = self._words(enc, scores, (text,) if pair is None else (text, pair))
        result = {"label": names[target], "probs": dict(zip(names, logits.softmax(-1).tolist())), "method": method,
                  "words": words}
        if pair is None:
            sentences, cursor = [], 0
            for sent in split_sentences(text) or [text]:
                a = text.find(sent, cursor)
                a = cursor if a < 0 else a
                cursor = b = a + len(sent)
                sentences.append({"text": sent, "start": a, "end": b,
                                  "score": sum(w["score"] for w in words if a <= w["start"] < b)})
            _scale(sentences)
            result["sentences"] = sentences
        _scale(words)
        return {**result, **extra, **({"truncated": True} if len(enc) == self.max_length else {})}

    def explain_answer(self, question: str, context: str, method: str = "gradient x input", steps: int = 64,
                       baseline: str = "pad", internal_batch: int = 16, answer: dict | None = None) -> dict:
        """Which words of the passage (`side` 1) and of the question (`side` 0) drove the answer (`answer`'s, or
        the model's own): the attributions of its start + end logit, in the window that holds it (`explain`'s
        methods)."""
        self._require("answer", "question answering")
        self._check_explain(method, steps, baseline, internal_batch)
        model = self.float_model()
        answer = answer if answer is not None else self.answer([question], [context])[0]
        settings = self.settings.qa
        examples = [QAExample("0", question, context, [])]
        features = qa_features(self.tok, examples, QASettings(**{**settings.__dict__, "max_length": min(
            settings.max_length, self.config.max_length)}))

        def span(f):  # the answer's first and last piece in this window, if it lies there whole
            inside = [i for i, o in enumerate(f.offsets) if o is not None and answer["start"] <= o[0] and
                      o[1] <= answer["end"] and o[1] > o[0]]
            return (inside[0], inside[-1]) if inside else None

        f = next((f for f in features if span(f) is not None), features[0])
        first, last = span(f) or (0, 0)  # no answer: the [CLS] "no answer" logits
        ids, types = torch.tensor([f.input_ids]), torch.tensor([f.token_type_ids])
        scores, extra = self._attribute(
            model, ids, types, lambda out: out.start_logits[:, first] + out.end_logits[:, last], method, steps,
            baseline, internal_batch)
        q = self.tok.encode_batch([question], add_special_tokens=False)[0]
        q_ids = q.ids[:settings.max_query_length]
        at = next(i for i in range(len(f.input_ids)) if f.input_ids[i:i + len(q_ids)] == q_ids)  # after [CLS]
        words = [{**w, "side": 0} for w in self._join_words(
            [(*q.offsets[i], q_ids[i], scores[at + i]) for i in range(len(q_ids))], question)]
        words += [{**w, "side": 1} for w in self._join_words(
            [(*o, f.input_ids[i], scores[i]) for i, o in enumerate(f.offsets) if o is not None], context)]
        _scale(words)
        return {**answer, "method": method, "words": words, **extra}

    def _check_explain(self, method: str, steps: int, baseline: str, internal_batch: int) -> None:
        if method not in self.EXPLAIN_METHODS:
            raise ValueError(f"method {method!r}: choose one of {', '.join(self.EXPLAIN_METHODS)}")
        if baseline not in self.IG_BASELINES or steps < 1 or internal_batch < 1:
            raise ValueError(f"baseline {baseline!r} / steps {steps} / internal_batch {internal_batch}: a baseline "
                             f"of {', '.join(self.IG_BASELINES)} and at least one step and one row per call")

    def _words(self, enc, scores: list[float], texts: tuple[str, ...]) -> list[dict]:
        """Per-piece scores summed over each word of the text(s) of `enc`; with two texts each word says its side."""
        specials = (self.tok.cls_id, self.tok.sep_id, self.tok.pad_id)
        out = []
        for side, text in enumerate(texts):
            pieces = [(a, b, tid, sc) for (a, b), sc, tid, s in zip(enc.offsets, scores, enc.ids, enc.sequence_ids)
                      if s == side and tid not in specials]
            out += [{**w, "side": side} if len(texts) > 1 else w for w in self._join_words(pieces, text)]
        return out

    def _join_words(self, pieces: list[tuple[int, int, int, float]], text: str) -> list[dict]:
        """(start, end, token id, score) of pieces in text order -> words: continuation pieces (WordPiece `##`, BPE
        without `Ġ`, Unigram without `▁`) summed into their word."""
        continues = self.tok.continuation_mask()
        words: list[dict] = []
        for a, b, tid, sc in pieces:
            if a == b:
                continue
            # byte-level pieces of one character share its offsets (a < end): still the same word
            if words and continues[tid] and a <= words[-1]["end"]:
                words[-1]["end"], words[-1]["score"] = max(b, words[-1]["end"]), words[-1]["score"] + sc
            else:
                words.append({"start": a, "end": b, "score": sc})
        for w in words:
            w["text"] = text[w["start"]:w["end"]]
        return words

    def _attribute(self, model, ids, types, objective: Callable, method: str, steps: int, baseline: str,
                   internal_batch: int) -> tuple[list[float], dict]:
        """(one score per piece, what the method reports besides) for the scalar `objective(output)` (one value
        per row of a batch of the input, or of points on the integration path)."""
        if method == "integrated gradients":
            return self._integrated_gradients(model, ids, types, objective, steps, baseline, internal_batch)
        return self._gradient_x_input(model, ids, types, objective), {}

    def _gradient_x_input(self, model, ids, types, objective: Callable) -> list[float]:
        captured = {}

        def keep(module, args, out):  # returns None: the output is unchanged
            out.retain_grad()
            captured["emb"] = out

        hook = model.bert.embeddings.word_embeddings.register_forward_hook(keep)
        try:
            with evaluating(model), torch.enable_grad():
                objective(model(ids, torch.ones_like(ids), types)).sum().backward()
        finally:
            hook.remove()
            model.zero_grad(set_to_none=True)
        emb = captured["emb"]
        # one score per piece: the L1 norm of gradient x input (its sign over the hidden size is not meaningful)
        return (emb.grad * emb).abs().sum(-1)[0].detach().tolist()

    def _integrated_gradients(self, model, ids, types, objective: Callable, steps: int, baseline: str,
                              internal_batch: int) -> tuple[list[float], dict]:
        words = model.bert.embeddings.word_embeddings
        keep = torch.tensor([[t in (self.tok.cls_id, self.tok.sep_id) for t in ids[0].tolist()]])
        with torch.no_grad():
            x = words(ids)  # (1, T, E)
            if baseline == "zero":
                base = torch.where(keep[..., None], x, torch.zeros_like(x))
            else:
                fill = self.tok.pad_id if baseline == "pad" else self.tok.mask_id
                base = words(torch.where(keep, ids, torch.full_like(ids, fill)))
        path = {}

        def replace(module, args, out):  # the word embeddings of this call: points on the path
            return path["points"]

        hook = words.register_forward_hook(replace)
        try:
            with evaluating(model), torch.no_grad():  # the two ends, for the completeness check
                path["points"] = torch.cat([x, base])
                ends = objective(model(ids.expand(2, -1), torch.ones_like(ids).expand(2, -1), types.expand(2, -1)))
            alphas = (torch.arange(steps, dtype=x.dtype) + 0.5) / steps  # midpoints of the Riemann sum
            total = torch.zeros_like(x[0])
            with evaluating(model), torch.enable_grad():
                for chunk in alphas.split(internal_batch):
                    points = (base + chunk[:, None, None] * (x - base)).requires_grad_(True)
                    path["points"] = points
                    n = len(chunk)
                    out = model(ids.expand(n, -1), torch.ones_like(ids).expand(n, -1), types.expand(n, -1))
                    total += torch.autograd.grad(objective(out).sum(), points)[0].sum(0)
        finally:
            hook.remove()
            model.zero_grad(set_to_none=True)
        attributions = ((x - base)[0] * total / steps).sum(-1)  # (T,) signed
        difference = float(ends[0] - ends[1])
        delta = float(attributions.sum()) - difference
        return attributions.tolist(), {
            "steps": steps, "baseline": baseline, "difference": difference, "delta": delta,
            "delta_share": abs(delta) / abs(difference) if difference else float("inf")}

    def tag(self, texts: Sequence[str] | Sequence[TagExample]) -> list[dict]:
        """Entities of raw texts (characters are the units, so offsets are the input's own), or tags of
        pre-split `TagExample`s (`tags`, one per word)."""
        self._require("tag", "tagging")
        examples = [t if isinstance(t, TagExample) else TagExample(list(t), ["O"] * len(t), text=t) for t in texts]
        label_ids = {v: k for k, v in self.config.id2label.items()}
        features = tag_features(self.tok, examples, label_ids, self.max_length, train=False)
        preds = self._run([(f.input_ids, f.token_type_ids) for f in features],
                          lambda out, b: [p[:int(n)] for p, n in zip(out.logits.argmax(-1).cpu().tolist(),
                                                                      b["attention_mask"].sum(1))], "tags")
        grouped = group_by_example(features)
        results = []
        for n, ex in enumerate(examples):
            idx = grouped.get(n, [])
            tags = tag_decode(ex, [features[i] for i in idx], [preds[i] for i in idx], self.config.id2label)
            if isinstance(texts[n], TagExample):
                results.append({"tags": tags})
                continue
            entities = []
            for kind, a, b in sorted(chunks(tags), key=lambda c: c[1]):
                text = ex.text[a:b + 1]
                start = a + len(text) - len(text.lstrip())
                end = a + len(text.rstrip())
                entities.append({"type": kind, "text": ex.text[start:end], "start": start, "end": end})
            results.append({"entities": entities})
        return results

    def answer(self, questions: Sequence[str] | Sequence[QAExample], contexts: Sequence[str] | None = None,
               allow_empty: bool = False, alternatives: int = 0) -> list[dict]:
        """The best span of each context (`answer`, `start`, `end`, `score`: start + end logits), and with
        `alternatives` the next best spans in the same form, best first."""
        self._require("answer", "question answering")
        if contexts is not None:
            if len(contexts) != len(questions):
                raise ValueError(f"contexts: {len(contexts)} items for {len(questions)} questions")
            examples = [QAExample(str(i), q, c, []) for i, (q, c) in enumerate(zip(questions, contexts))]
        else:
            examples = list(questions)
        settings = self.settings.qa
        if settings.max_length > self.config.max_length:
            settings = QASettings(**{**settings.__dict__, "max_length": self.config.max_length})
        features = qa_features(self.tok, examples, settings)
        # qa_features keeps the first max_query_length pieces of a question: say when it cut one
        q_pieces = [len(e) for e in self.tok.encode_batch([ex.question for ex in examples], add_special_tokens=False)]
        logits = self._run([(f.input_ids, f.token_type_ids) for f in features],
                           lambda out, b: list(zip(out.start_logits.float().cpu().numpy(),
                                                   out.end_logits.float().cpu().numpy())), "spans")
        grouped = group_by_example(features)
        results = []
        for n, ex in enumerate(examples):
            idx = grouped.get(n, [])
            a = qa_decode(ex, [features[i] for i in idx], [logits[i][0][:len(features[i].input_ids)] for i in idx],
                          [logits[i][1][:len(features[i].input_ids)] for i in idx], settings, allow_empty=allow_empty)
            others = [{"answer": t, "start": i, "end": j, "score": sc} for t, i, j, sc in a.candidates
                      if (i, j) != (a.start, a.end)][:alternatives]
            results.append({"answer": a.text, "start": a.start, "end": a.end, "score": a.score,
                            **({"alternatives": others} if alternatives else {}),
                            **({"question_truncated": True} if q_pieces[n] > settings.max_query_length else {})})
        return results

    def fill_mask(self, texts: Sequence[str], top_k: int = 5) -> list[dict]:
        """For every mask token (`[MASK]`, `<mask>`) of each text, the `top_k` most likely pieces: `{"masks":
        [[{"token", "score"}, ...], ...]}` in the order the masks appear, and `"truncated": true` when the text was
        cut to the model's window (its later masks are not filled). Only masked positions are projected onto the
        vocabulary."""
        self._require("fill_mask", "fill-mask (it needs an MLM head)")
        mask_id = self.tok.mask_id
        encs = self.tok.encode_batch(texts, max_length=self.max_length)
        for i, e in enumerate(encs):
            if mask_id not in e.ids:
                raise ValueError(f"texts[{i}]: no {self.tok.specials['mask']} token to fill")
        k = max(1, min(int(top_k), self.config.vocab_size))

        def top(log_probs):
            values, ids = log_probs.topk(k, dim=-1)
            return [[{"token": t, "score": float(p)} for t, p in
                     zip(self.tok.convert_ids_to_tokens(i.tolist()), v.exp().tolist())] for i, v in zip(ids, values)]

        masks = self.masked_log_probs([(e.ids, e.type_ids) for e in encs], top, f"fill{k}")
        # a text cut to the window loses the masks beyond it: say so (only texts that reached the window are re-read)
        long_ = [i for i, e in enumerate(encs) if len(e) == self.max_length]
        cut = {i for i, f in zip(long_, self.tok.encode_batch([texts[i] for i in long_])) if len(f) > self.max_length}
        return [{"masks": m, **({"truncated": True} if i in cut else {})} for i, m in enumerate(masks)]

    def masked_log_probs(self, rows: Sequence[tuple[list[int], list[int]]], reduce: Callable[[torch.Tensor], Any],
                         kind: Hashable) -> list:
        """`reduce(log_probs)` for each row of (ids, type_ids): `log_probs` is the (masks, vocab) float32 log-softmax
        of the MLM head at the row's mask tokens, in order. Only masked positions are projected onto the
        vocabulary. `kind` names the reduction in the cache key (rows seen before with the same `kind` are not
        run again)."""
        self._require("fill_mask", "fill-mask (it needs an MLM head)")
        head, mask_id = self.model.cls.predictions, self.tok.mask_id

        def run(out, b):
            # the head once over every mask of the batch: its decoder (H x vocab, 47 MB for a 30k vocabulary at
            # 384) is read once a batch, not once a row, which was a third of a suggestion's time
            where = b["input_ids"] == mask_id
            log_probs = head(out.last_hidden_state[where]).float().log_softmax(-1)
            return [reduce(lp) for lp in log_probs.split(where.sum(1).tolist())]

        return self._run(rows, run, kind, model=self.model.bert)

    def embed(self, texts: Sequence[str], normalize: bool = False,
              pooling: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None) -> np.ndarray:
        """(len(texts), H) mean of the last layer over each text's real tokens; `pooling(last_hidden_state,
        attention_mask)` (default `self.pooling`) instead of the mean gives another sentence vector (a
        sentence-transformers directory's Pooling, Dense and Normalize: `bertkit.apps.sentence`)."""
        pooling = pooling if pooling is not None else self.pooling
        texts = [t.lower() for t in texts] if self.lowercase else texts

        def pool(out, b):
            v = (mean_pool if pooling is None else pooling)(out.last_hidden_state, b["attention_mask"])
            return (torch.nn.functional.normalize(v, dim=-1) if normalize else v).float().cpu().numpy()

        encs = self.tok.encode_batch(texts, max_length=self.max_length)
        # the pooling object itself in the cache key (identity, and a reference: its id is never reused while cached)
        kind = f"mean{int(normalize)}" if pooling is None else (pooling, normalize)
        if self.task_family.operation == "embed":  # a bare encoder; a task model embeds through its encoder
            if not encs:
                return np.zeros((0, getattr(pooling, "output_dim", self.config.hidden_size)), dtype=np.float32)
            return np.stack(self._run([(e.ids, e.type_ids) for e in encs], pool, kind))
        if self._encoder is None:  # the task model's encoder: its own in PyTorch, the float model's under ONNX
            model = self.model if isinstance(self.model, torch.nn.Module) else self.float_model()
            self._encoder = Predictor(model.bert, self.tok, replace(self.settings, backend="torch", cache_size=0))
        return self._encoder.embed(texts, normalize, pooling)
