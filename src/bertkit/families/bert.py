"""BERT (Devlin et al. 2019): the internal layout itself."""

from bertkit.families.base import Family

HEADS = ("BertModel", "BertForPreTraining", "BertForMaskedLM", "BertForSequenceClassification",
         "BertForTokenClassification", "BertForQuestionAnswering", "BertForReplacedTokenDetection")

# BertForReplacedTokenDetection has no HF BERT class: it keeps its own name (ELECTRA's head on a BERT config).
FAMILY = Family(model_type="bert", title="BERT", prefix="bert", architectures={h: h for h in HEADS},
                tied=("cls.predictions.decoder.weight", "cls.predictions.decoder.bias"))
