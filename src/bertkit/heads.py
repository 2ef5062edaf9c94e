"""Task heads over the encoder, each with its loss. Class and parameter names are those of the HF BERT classes;
the other families' heads are these classes under their family's switches and key map (`bertkit.families`):
RoBERTa's `lm_head`, ALBERT's `predictions` + `sop_classifier`, DistilBERT's `vocab_*`, ELECTRA's generator
are the MLM head with a transform of width embedding_size; RoBERTa, ELECTRA and DistilBERT classify the first
token through `pre_classifier` -> activation -> `classifier` (their `classifier.dense` / `classifier.out_proj`).

| class | HF keys | output |
|---|---|---|
| BertForPreTraining | `bert.*`, `cls.predictions.*`, `cls.seq_relationship.*` | MLM logits + NSP logits |
| BertForMaskedLM | `bert.*` (no pooler), `cls.predictions.*` | MLM logits |
| BertForSequenceClassification | `bert.*`, `classifier.*` | label logits, or a score (num_labels=1) |
| BertForTokenClassification | `bert.*` (no pooler), `classifier.*` | a label per token |
| BertForQuestionAnswering | `bert.*` (no pooler), `qa_outputs.*` | start / end logits |
| BertForReplacedTokenDetection | `bert.*` (no pooler), `discriminator_predictions.*` | a replaced-token logit per token (ELECTRA's discriminator; head names of HF `ElectraForPreTraining`) |

Deviations: QA logits at padded positions are -10,000, so padding never wins a span and takes no share of the
softmax in the loss (the reference scores padding with whatever the encoder made of it). Given `labels`, the MLM head runs on the masked positions only (the vocabulary projection dominates
small models) and returns their logits as (M, V) in label order; without labels it returns (B, T, V).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bertkit.checkpoint import load_pretrained
from bertkit.config import BertConfig
from bertkit.model import _ACT, BertModel, BertPreTrainedModel

IGNORE = -100  # label value that contributes no loss, as in PyTorch and HF
NEG = -1e4  # logit of an impossible choice: exp() underflows to 0 in fp32 and bf16, and stays finite


@dataclass
class HeadOutput:
    loss: Tensor | None = None
    logits: Tensor | None = None  # MLM / classification / tagging logits
    seq_relationship_logits: Tensor | None = None  # (B, 2) NSP
    start_logits: Tensor | None = None  # (B, T) QA
    end_logits: Tensor | None = None  # (B, T) QA
    mlm_loss: Tensor | None = None
    nsp_loss: Tensor | None = None
    hidden_states: tuple[Tensor, ...] | None = None
    pooler_output: Tensor | None = None


class BertPredictionHeadTransform(nn.Module):
    """hidden -> embedding width: dense, activation, LayerNorm (the family may fix the activation: RoBERTa's and
    ELECTRA's generator use GELU whatever hidden_act says)."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.embedding_dim)
        self.act = _ACT[config.family.mlm_act or config.hidden_act]
        self.LayerNorm = nn.LayerNorm(config.embedding_dim, eps=config.layer_norm_eps)

    def forward(self, x: Tensor) -> Tensor:
        return self.LayerNorm(self.act(self.dense(x)))


class BertLMPredictionHead(nn.Module):
    """transform -> decoder tied to the word embeddings, plus an output-only bias (`cls.predictions.bias`)."""

    def __init__(self, config: BertConfig, word_embeddings: nn.Embedding):
        super().__init__()
        self.transform = BertPredictionHeadTransform(config)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))
        self.decoder = nn.Linear(config.embedding_dim, config.vocab_size)
        # Tied as in the reference: `cls.predictions.decoder.{weight,bias}` are aliases of the embedding matrix
        # and of `cls.predictions.bias`; the checkpoint code writes each tensor once.
        self.decoder.weight = word_embeddings.weight
        self.decoder.bias = self.bias

    def forward(self, x: Tensor) -> Tensor:  # (..., H) -> (..., V)
        return self.decoder(self.transform(x))


class BertOnlyMLMHead(nn.Module):
    def __init__(self, config: BertConfig, word_embeddings: nn.Embedding):
        super().__init__()
        self.predictions = BertLMPredictionHead(config, word_embeddings)


class BertPreTrainingHeads(nn.Module):
    def __init__(self, config: BertConfig, word_embeddings: nn.Embedding):
        super().__init__()
        self.predictions = BertLMPredictionHead(config, word_embeddings)
        self.seq_relationship = nn.Linear(config.hidden_size, 2)


def _mlm(head: BertLMPredictionHead, seq: Tensor, labels: Tensor | None, reduction: str
         ) -> tuple[Tensor, Tensor | None]:
    """MLM logits and loss; with labels, only the positions that carry one are projected onto the vocabulary."""
    if labels is None:
        return head(seq), None
    where = labels != IGNORE  # (B, T)
    logits = head(seq[where])  # (M, V)
    target = labels[where]
    loss = F.cross_entropy(logits, target, reduction=reduction) if target.numel() else logits.sum() * 0.0
    return logits, loss


class BertForPreTraining(BertPreTrainedModel):
    """MLM + NSP (ALBERT: sentence-order prediction, the same head). `labels` (B, T) holds the original id at
    masked positions and -100 elsewhere."""

    def __init__(self, config: BertConfig):
        super().__init__(config)
        self.bert = BertModel(config)
        self.cls = BertPreTrainingHeads(config, self.bert.embeddings.word_embeddings)
        self.init_weights()

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, labels=None, next_sentence_label=None,
                output_hidden_states=False, reduction: str = "mean") -> HeadOutput:
        """`reduction="sum"` gives summed losses, for a trainer that divides by a count over a whole step."""
        enc = self.bert(input_ids, attention_mask, token_type_ids, output_hidden_states)
        logits, mlm_loss = _mlm(self.cls.predictions, enc.last_hidden_state, labels, reduction)
        nsp_logits = self.cls.seq_relationship(enc.pooler_output)
        nsp_loss = F.cross_entropy(nsp_logits, next_sentence_label.view(-1), reduction=reduction) \
            if next_sentence_label is not None else None
        losses = [x for x in (mlm_loss, nsp_loss) if x is not None]
        return HeadOutput(loss=sum(losses) if losses else None, logits=logits, seq_relationship_logits=nsp_logits,
                          mlm_loss=mlm_loss, nsp_loss=nsp_loss, hidden_states=enc.hidden_states,
                          pooler_output=enc.pooler_output)


class BertForMaskedLM(BertPreTrainedModel):
    """MLM only (fill-mask, the RoBERTa recipe)."""

    def __init__(self, config: BertConfig):
        super().__init__(config)
        self.bert = BertModel(config, add_pooling_layer=False)
        self.cls = BertOnlyMLMHead(config, self.bert.embeddings.word_embeddings)
        self.init_weights()

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, labels=None,
                output_hidden_states=False, reduction: str = "mean") -> HeadOutput:
        enc = self.bert(input_ids, attention_mask, token_type_ids, output_hidden_states)
        logits, loss = _mlm(self.cls.predictions, enc.last_hidden_state, labels, reduction)
        return HeadOutput(loss=loss, logits=logits, mlm_loss=loss, hidden_states=enc.hidden_states)


def _dropout_p(config: BertConfig) -> float:
    return config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob


class BertForSequenceClassification(BertPreTrainedModel):
    """Pooled [CLS] -> dropout -> linear (BERT, ALBERT), or the family's "first_token_mlp" style: h[:, 0] ->
    dropout -> pre_classifier -> activation (tanh RoBERTa, GELU ELECTRA, ReLU DistilBERT) -> dropout -> linear.
    num_labels == 1 (or problem_type 'regression') is regression (MSE); float multi-hot labels (or problem_type
    'multi_label_classification') use BCE; otherwise cross-entropy."""

    def __init__(self, config: BertConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        family = config.family
        mlp = family.classifier_style == "first_token_mlp"
        self.bert = BertModel(config, add_pooling_layer=not mlp)
        self.dropout = nn.Dropout(_dropout_p(config))
        self.pre_classifier = nn.Linear(config.hidden_size, config.hidden_size) if mlp else None
        self.classifier_act = _ACT[family.classifier_act]
        self.input_dropout = family.classifier_input_dropout
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.init_weights()

    def _features(self, enc) -> Tensor:
        if self.pre_classifier is None:
            return self.dropout(enc.pooler_output)
        x = enc.last_hidden_state[:, 0]
        if self.input_dropout:
            x = self.dropout(x)
        return self.dropout(self.classifier_act(self.pre_classifier(x)))

    def problem_type(self, labels: Tensor | None = None) -> str:
        if self.config.problem_type:
            return self.config.problem_type
        if self.num_labels == 1:
            return "regression"
        if labels is not None and labels.is_floating_point():
            return "multi_label_classification"
        return "single_label_classification"

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, labels=None,
                output_hidden_states=False, reduction: str = "mean") -> HeadOutput:
        enc = self.bert(input_ids, attention_mask, token_type_ids, output_hidden_states)
        logits = self.classifier(self._features(enc))  # (B, num_labels)
        loss = None
        if labels is not None:
            kind = self.problem_type(labels)
            if kind == "regression":
                loss = F.mse_loss(logits.squeeze(-1), labels.float().view(-1), reduction=reduction) \
                    if self.num_labels == 1 else F.mse_loss(logits, labels.float(), reduction=reduction)
            elif kind == "single_label_classification":
                loss = F.cross_entropy(logits, labels.view(-1), reduction=reduction)
            else:
                loss = F.binary_cross_entropy_with_logits(logits, labels.float(), reduction=reduction)
        return HeadOutput(loss=loss, logits=logits, hidden_states=enc.hidden_states, pooler_output=enc.pooler_output)


class BertForTokenClassification(BertPreTrainedModel):
    """Each token state -> dropout -> linear; labels -100 (sub-tokens after the first, specials) are ignored."""

    def __init__(self, config: BertConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.bert = BertModel(config, add_pooling_layer=False)
        self.dropout = nn.Dropout(_dropout_p(config))
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.init_weights()

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, labels=None,
                output_hidden_states=False, reduction: str = "mean") -> HeadOutput:
        enc = self.bert(input_ids, attention_mask, token_type_ids, output_hidden_states)
        logits = self.classifier(self.dropout(enc.last_hidden_state))  # (B, T, num_labels)
        loss = F.cross_entropy(logits.view(-1, self.num_labels), labels.view(-1), ignore_index=IGNORE,
                               reduction=reduction) if labels is not None else None
        return HeadOutput(loss=loss, logits=logits, hidden_states=enc.hidden_states)


class BertForQuestionAnswering(BertPreTrainedModel):
    """Span extraction: a start and an end logit per token. Gold positions outside the window (>= T) are ignored,
    as in the reference; the loss is the mean of the start and end cross-entropies over the real tokens."""

    def __init__(self, config: BertConfig):
        super().__init__(config)
        self.bert = BertModel(config, add_pooling_layer=False)
        self.qa_outputs = nn.Linear(config.hidden_size, 2)
        self.init_weights()

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, start_positions=None,
                end_positions=None, output_hidden_states=False, reduction: str = "mean") -> HeadOutput:
        enc = self.bert(input_ids, attention_mask, token_type_ids, output_hidden_states)
        start, end = self.qa_outputs(enc.last_hidden_state).unbind(-1)  # (B, T) each
        if attention_mask is not None:  # a span never starts or ends in padding (the reference lets it)
            pad = attention_mask == 0
            start, end = start.masked_fill(pad, NEG), end.masked_fill(pad, NEG)
        loss = None
        if start_positions is not None and end_positions is not None:
            T = start.shape[1]
            s, e = start_positions.view(-1).clamp(0, T), end_positions.view(-1).clamp(0, T)
            loss = (F.cross_entropy(start, s, ignore_index=T, reduction=reduction)
                    + F.cross_entropy(end, e, ignore_index=T, reduction=reduction)) / 2
        return HeadOutput(loss=loss, start_logits=start.contiguous(), end_logits=end.contiguous(),
                          hidden_states=enc.hidden_states)


class ElectraDiscriminatorPredictions(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.act = _ACT[config.hidden_act]
        self.dense_prediction = nn.Linear(config.hidden_size, 1)

    def forward(self, x: Tensor) -> Tensor:  # (..., H) -> (...)
        return self.dense_prediction(self.act(self.dense(x))).squeeze(-1)


class BertForReplacedTokenDetection(BertPreTrainedModel):
    """ELECTRA's discriminator (Clark et al. 2020) on a BERT encoder: for every real token, the logit that it was
    replaced by the generator. `labels` (B, T): 1 replaced, 0 original, -100 ignored; padding never counts. The
    loss is the binary cross-entropy over the real tokens; `logits` are (N,) over the real tokens in row order."""

    def __init__(self, config: BertConfig):
        super().__init__(config)
        self.bert = BertModel(config, add_pooling_layer=False)
        self.discriminator_predictions = ElectraDiscriminatorPredictions(config)
        self.init_weights()

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, labels=None,
                output_hidden_states=False, reduction: str = "mean") -> HeadOutput:
        enc = self.bert(input_ids, attention_mask, token_type_ids, output_hidden_states)
        real = attention_mask.bool() if attention_mask is not None else torch.ones_like(input_ids, dtype=torch.bool)
        if labels is not None:
            real = real & (labels != IGNORE)
        logits = self.discriminator_predictions(enc.last_hidden_state[real])  # (N,)
        loss = F.binary_cross_entropy_with_logits(logits, labels[real].to(logits.dtype), reduction=reduction) \
            if labels is not None else None
        return HeadOutput(loss=loss, logits=logits, hidden_states=enc.hidden_states)


HEADS: dict[str, type[BertPreTrainedModel]] = {
    cls.__name__: cls
    for cls in (BertModel, BertForPreTraining, BertForMaskedLM, BertForSequenceClassification,
                BertForTokenClassification, BertForQuestionAnswering, BertForReplacedTokenDetection)
}


def head_class(config: BertConfig) -> type[BertPreTrainedModel]:
    """The head that config.json's `architectures` names, in the family's HF names or bertkit's own; BertModel
    when it names none bertkit knows."""
    family = config.family
    for name in config.architectures or []:
        internal = family.internal_class(name)
        if internal in HEADS:
            return HEADS[internal]
    return BertModel


def load_model(path: str | Path, strict: bool = True, **config_overrides) -> BertPreTrainedModel:
    """The class that config.json's `architectures` names (BertModel when it names none bertkit knows), of any
    family: e.g. ElectraForPreTraining -> BertForReplacedTokenDetection, AlbertForPreTraining -> BertForPreTraining."""
    config = BertConfig.from_json_file(Path(path) / "config.json")
    return load_pretrained(head_class(config), path, strict=strict, config=config, **config_overrides)
