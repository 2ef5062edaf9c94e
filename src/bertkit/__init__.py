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


def __getattr__(name: str):
    # SentenceModel pulls in the Predictor: loaded on first use, so `import bertkit` (and `bertkit tokenize`) stays light
    if name == "SentenceModel":
        from bertkit.apps.sentence import SentenceModel

        return SentenceModel
    raise AttributeError(f"module 'bertkit' has no attribute {name!r}")


__all__ = [
    "BertConfig", "ConfigError", "SIZES",
    "BertModel", "EncoderOutput",
    "BertForPreTraining", "BertForMaskedLM", "BertForSequenceClassification", "BertForTokenClassification",
    "BertForQuestionAnswering", "BertForReplacedTokenDetection", "HeadOutput",
    "Tokenizer", "Encoding", "TokenizerError", "learn_vocab", "VocabReport", "SentenceModel", "__version__",
    "load_pretrained", "load_model", "save_pretrained", "packaged_model_dir", "CheckpointError", "LoadReport",
]
