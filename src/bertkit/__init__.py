"""bertkit: BERT, whole, in Python. The public API."""

from bertkit.checkpoint import CheckpointError, LoadReport, load_pretrained, packaged_model_dir, save_pretrained
from bertkit.config import SIZES, BertConfig, ConfigError
from bertkit.heads import (BertForMaskedLM, BertForPreTraining, BertForQuestionAnswering,
                           BertForReplacedTokenDetection, BertForSequenceClassification, BertForTokenClassification,
                           HeadOutput, load_model)
from bertkit.model import BertModel, EncoderOutput
from bertkit.tokenizer import Encoding, Tokenizer, TokenizerError
from bertkit.version import __version__
from bertkit.vocab import VocabReport, learn_vocab


# The applications pull in the Predictor, numpy-heavy code and scikit-learn: loaded on first use, so `import bertkit`
# (and `bertkit tokenize`) stays light.
LAZY = {
    "SentenceModel": "bertkit.apps.sentence",  # .encode(texts)
    "semantic_search": "bertkit.apps.search",
    "paraphrase_mining": "bertkit.apps.duplicates",
    "cluster": "bertkit.apps.cluster",
    "embed_corpus": "bertkit.apps.embed",
    "open_vectors": "bertkit.apps.vectors",
    "Index": "bertkit.apps.index",
}


def __getattr__(name: str):
    if name in LAZY:
        import importlib

        return getattr(importlib.import_module(LAZY[name]), name)
    raise AttributeError(f"module 'bertkit' has no attribute {name!r}")


__all__ = [
    "BertConfig", "ConfigError", "SIZES",
    "BertModel", "EncoderOutput",
    "BertForPreTraining", "BertForMaskedLM", "BertForSequenceClassification", "BertForTokenClassification",
    "BertForQuestionAnswering", "BertForReplacedTokenDetection", "HeadOutput",
    "Tokenizer", "Encoding", "TokenizerError", "learn_vocab", "VocabReport", "__version__", *LAZY,
    "load_pretrained", "load_model", "save_pretrained", "packaged_model_dir", "CheckpointError", "LoadReport",
]
