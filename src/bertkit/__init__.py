"""bertkit: BERT, whole, in Python. The public API."""

from bertkit.checkpoint import CheckpointError, LoadReport, load_pretrained, packaged_model_dir, save_pretrained
from bertkit.config import SIZES, BertConfig, ConfigError
from bertkit.heads import (BertForMaskedLM, BertForPreTraining, BertForQuestionAnswering,
                           BertForReplacedTokenDetection, BertForSequenceClassification, BertForTokenClassification,
                           HeadOutput, load_model)
from bertkit.model import BertModel, EncoderOutput
from bertkit.tokenizer import Encoding, Tokenizer, TokenizerError
from bertkit.vocab import VocabReport, learn_vocab

__version__ = "0.1.0"

__all__ = [
    "BertConfig", "ConfigError", "SIZES",
    "BertModel", "EncoderOutput",
    "BertForPreTraining", "BertForMaskedLM", "BertForSequenceClassification", "BertForTokenClassification",
    "BertForQuestionAnswering", "BertForReplacedTokenDetection", "HeadOutput",
    "Tokenizer", "Encoding", "TokenizerError", "learn_vocab", "VocabReport",
    "load_pretrained", "load_model", "save_pretrained", "packaged_model_dir", "CheckpointError", "LoadReport",
]
