"""sentence-transformers directories, read and written unchanged: `SentenceModel` (an encoder + its `SentenceHead`).

The layout (modules.json, Pooling, Dense, Normalize, sentence_bert_config.json) is read by
`bertkit.infer.sentence_head`, below the Predictor, so `Predictor.from_pretrained` on the same directory (and hence
`bertkit serve`'s /v1/embed) gives the same vectors. A directory without `modules.json` is what
sentence-transformers does with a plain HF encoder: mean pooling, no normalisation.

The encoder runs through the Predictor's batching (`SentenceModel.predictor()`: a Predictor whose `embed` uses this
pooling, window and lower-casing): texts ordered by length, padded only to the longest of their batch.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from bertkit.checkpoint import load_pretrained
from bertkit.config import BertConfig
from bertkit.infer.predictor import Predictor, PredictorSettings
from bertkit.infer.sentence_head import (LEGACY_POOLING_KEYS, POOLING_MODES, Dense, SentenceFormatError,  # noqa: F401
                                         SentenceHead, activation_name, pool, read_layout, read_sentence_config,
                                         sentence_window)
from bertkit.io import atomic_write_text, prepare_output_dir
from bertkit.model import BertModel
from bertkit.tokenizer import Tokenizer, check_vocab
from bertkit.version import __version__


def _load_encoder(folder: Path) -> tuple[BertModel, Tokenizer, int | None, bool]:
    """The bare encoder (a head checkpoint gives its encoder, as sentence-transformers' AutoModel does), its
    tokenizer, the token window and do_lower_case."""
    config = BertConfig.from_json_file(folder / "config.json")
    model = load_pretrained(BertModel, folder, config=config)  # head weights: reported, not loaded
    tokenizer = Tokenizer.from_pretrained(folder)
    check_vocab(tokenizer, config, folder)
    max_seq_length, lower = read_sentence_config(folder)
    return model, tokenizer, sentence_window(max_seq_length, tokenizer.model_max_length, config.max_length), lower


ENCODE_CHUNK = 4096  # texts per model call in `encode_texts`: the Predictor sorts each call by length; the bar moves


def encode_texts(model, texts: Sequence[str], batch_size: int = 32, show_progress: bool = False) -> np.ndarray:
    """(len(texts), D) float32 unit vectors of `texts`, each distinct text computed once (news repeats titles), with a
    progress bar when asked. `model`: a directory (`Predictor.from_pretrained`, which honours a sentence-transformers
    directory's modules), a `Predictor`, or anything with `encode(texts, batch_size=...)` (`SentenceModel`,
    sentence-transformers' own). What duplicates and clustering embed with."""
    from tqdm import tqdm

    if isinstance(texts, str):
        raise TypeError("texts: expected a list of texts, not one string")
    if isinstance(model, (str, Path)):
        model = Predictor.from_pretrained(model, PredictorSettings(batch_size=batch_size))
    distinct = list(dict.fromkeys(texts))
    parts = []
    with tqdm(total=len(distinct), desc="embedding", unit="text", disable=not show_progress) as bar:
        for start in range(0, len(distinct), ENCODE_CHUNK):
            part = distinct[start:start + ENCODE_CHUNK]
            v = model.embed(part) if hasattr(model, "embed") else model.encode(part, batch_size=batch_size)
            parts.append(np.asarray(v.detach().cpu() if hasattr(v, "detach") else v, dtype=np.float32))
            bar.update(len(part))
    if not parts:
        return np.zeros((0, 0), dtype=np.float32)
    vectors = np.concatenate(parts)
    vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    if len(distinct) == len(texts):
        return vectors
    row = {text: i for i, text in enumerate(distinct)}
    return vectors[[row[t] for t in texts]]


class SentenceModel:
    """An encoder + a `SentenceHead`; `encode` gives sentence-transformers' vectors."""

    def __init__(self, encoder: BertModel, tokenizer: Tokenizer, head: SentenceHead | None = None,
                 max_seq_length: int | None = None, do_lower_case: bool = False):
        self.encoder, self.tokenizer = encoder.eval(), tokenizer
        self.head = head if head is not None else SentenceHead(encoder.config.hidden_size)
        self.max_seq_length, self.do_lower_case = max_seq_length, do_lower_case

    @classmethod
    def from_pretrained(cls, path: str | Path) -> SentenceModel:
        directory = Path(path)
        if not directory.is_dir():
            raise SentenceFormatError(f"{directory}: no such directory")
        layout = read_layout(directory)
        if layout is None:  # sentence-transformers' fallback for a plain encoder: mean pooling, no normalise
            encoder, tok, max_len, lower = _load_encoder(directory)
            return cls(encoder, tok, SentenceHead(encoder.config.hidden_size, ("mean",)), max_len, lower)
        encoder, tok, max_len, lower = _load_encoder(layout.encoder_dir)
        return cls(encoder, tok, layout.head, max_len, lower)

    @property
    def dimension(self) -> int:
        return self.head.output_dim

    def predictor(self, batch_size: int = 32, max_tokens: int = 0) -> Predictor:
        """A Predictor whose `embed` gives this model's vectors (this pooling, window and lower-casing)."""
        settings = PredictorSettings(batch_size=batch_size, max_tokens=max_tokens, max_length=self.max_seq_length)
        predictor = Predictor(self.encoder, self.tokenizer, settings)
        predictor.pooling, predictor.lowercase = self.head, self.do_lower_case
        return predictor

    def encode(self, texts: Sequence[str], batch_size: int = 32, normalize_embeddings: bool = False,
               max_tokens: int = 0) -> np.ndarray:
        """(len(texts), dimension) float32 vectors. `max_tokens`: batches of at most that many tokens (and at most
        `batch_size` texts; `PredictorSettings.max_tokens`), so long texts keep memory bounded."""
        if isinstance(texts, str):
            raise TypeError("encode takes a list of texts, not one string")
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return self.predictor(batch_size, max_tokens).embed(texts, normalize=normalize_embeddings)

    # ---- writing ---------------------------------------------------------------------------------------------
    def save(self, path: str | Path, overwrite: bool = False) -> None:
        """The sentence-transformers layout: the encoder and tokenizer at the root, 1_Pooling, N_Dense, N_Normalize,
        modules.json, sentence_bert_config.json, config_sentence_transformers.json. A non-empty directory is
        replaced only with overwrite=True (then the new files are written aside and swapped in, and a failure
        leaves the old directory as it was)."""
        out = prepare_output_dir(path, verb="save", overwrite=overwrite, resumable=False)
        with out as directory:
            self._write(Path(directory))

    def _write(self, directory: Path) -> None:
        self.encoder.save_pretrained(directory, tokenizer=self.tokenizer)
        modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}]
        pooling = directory / "1_Pooling"
        pooling.mkdir()
        modes = self.head.modes
        canonical = tuple(m for m in LEGACY_POOLING_KEYS.values() if m in modes) == modes
        if canonical:  # the old boolean keys: every sentence-transformers version reads them
            config = {"word_embedding_dimension": self.head.dim,
                      **{k: m in modes for k, m in LEGACY_POOLING_KEYS.items()},
                      "include_prompt": self.head.include_prompt}
        else:  # an order the boolean keys cannot say
            config = {"embedding_dimension": self.head.dim, "pooling_mode": list(modes),
                      "include_prompt": self.head.include_prompt}
        atomic_write_text(pooling / "config.json", json.dumps(config, indent=2))
        modules.append({"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"})
        from safetensors.torch import save_file

        for idx, step in enumerate(self.head.steps, start=2):
            if step == "normalize":
                name, kind = f"{idx}_Normalize", "Normalize"
                (directory / name).mkdir()
            else:
                name, kind = f"{idx}_Dense", "Dense"
                (directory / name).mkdir()
                atomic_write_text(directory / name / "config.json", json.dumps(
                    {"in_features": step.in_features, "out_features": step.out_features, "bias": step.bias,
                     "activation_function": activation_name(step.activation)}, indent=2))
                save_file({f"linear.{k}": v.detach().contiguous().cpu() for k, v in step.linear.state_dict().items()},
                          str(directory / name / "model.safetensors"), metadata={"format": "pt"})
            modules.append({"idx": idx, "name": str(idx), "path": name, "type": f"sentence_transformers.models.{kind}"})
        atomic_write_text(directory / "modules.json", json.dumps(modules, indent=2))
        max_len = self.max_seq_length or self.encoder.config.max_length
        atomic_write_text(directory / "sentence_bert_config.json",
                          json.dumps({"max_seq_length": max_len, "do_lower_case": self.do_lower_case}, indent=2))
        atomic_write_text(directory / "config_sentence_transformers.json", json.dumps(
            {"__version__": {"bertkit": __version__, "pytorch": torch.__version__},
             "prompts": {}, "default_prompt_name": None, "similarity_fn_name": "cosine"}, indent=2))
