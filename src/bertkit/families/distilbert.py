"""DistilBERT (Sanh et al. 2019): BERT's layers under other names (`transformer.layer.N.attention.q_lin`, ...),
no token types, no pooler, optional fixed sinusoidal positions, MLM head `vocab_transform` / `vocab_layer_norm` /
`vocab_projector`, classifier `pre_classifier` -> ReLU -> dropout -> `classifier` on [CLS]."""

from typing import Any

from bertkit.families.base import Family, Rename, renamer

RENAMES = (
    Rename("encoder.layer.{L}.attention.self.query", "transformer.layer.{L}.attention.q_lin"),
    Rename("encoder.layer.{L}.attention.self.key", "transformer.layer.{L}.attention.k_lin"),
    Rename("encoder.layer.{L}.attention.self.value", "transformer.layer.{L}.attention.v_lin"),
    Rename("encoder.layer.{L}.attention.output.dense", "transformer.layer.{L}.attention.out_lin"),
    Rename("encoder.layer.{L}.attention.output.LayerNorm", "transformer.layer.{L}.sa_layer_norm"),
    Rename("encoder.layer.{L}.intermediate.dense", "transformer.layer.{L}.ffn.lin1"),
    Rename("encoder.layer.{L}.output.dense", "transformer.layer.{L}.ffn.lin2"),
    Rename("encoder.layer.{L}.output.LayerNorm", "transformer.layer.{L}.output_layer_norm"),
    Rename("cls.predictions.transform.dense", "vocab_transform"),
    Rename("cls.predictions.transform.LayerNorm", "vocab_layer_norm"),
    Rename("cls.predictions.bias", "vocab_projector.bias"),
    Rename("cls.predictions.decoder", "vocab_projector"),
)
to_internal, to_hf = renamer(RENAMES)

FIELDS = (  # common field <-> DistilBertConfig's
    ("hidden_size", "dim"), ("num_hidden_layers", "n_layers"), ("num_attention_heads", "n_heads"),
    ("intermediate_size", "hidden_dim"), ("hidden_dropout_prob", "dropout"),
    ("attention_probs_dropout_prob", "attention_dropout"), ("hidden_act", "activation"),
)
FIXED = {"type_vocab_size": 0, "layer_norm_eps": 1e-12}  # no token types; DistilBERT's LayerNorms use 1e-12


def config_from_hf(d: dict[str, Any]) -> dict[str, Any]:
    d = {"n_layers": 6, **d}  # DistilBertConfig's default where BERT's differs
    for ours, theirs in FIELDS:
        if theirs in d:
            d[ours] = d.pop(theirs)
    return {**d, **FIXED}


def config_to_hf(d: dict[str, Any]) -> dict[str, Any]:
    d = {k: v for k, v in d.items() if k not in FIXED and k != "position_embedding_type"}
    for ours, theirs in FIELDS:
        if ours in d:
            d[theirs] = d.pop(ours)
    return d


FAMILY = Family(
    model_type="distilbert", title="DistilBERT", prefix="distilbert",
    architectures={"BertModel": "DistilBertModel", "BertForMaskedLM": "DistilBertForMaskedLM",
                   "BertForSequenceClassification": "DistilBertForSequenceClassification",
                   "BertForTokenClassification": "DistilBertForTokenClassification",
                   "BertForQuestionAnswering": "DistilBertForQuestionAnswering"},
    config_from_hf=config_from_hf, config_to_hf=config_to_hf, to_internal=to_internal, to_hf=to_hf,
    tied=("vocab_projector.weight",), token_types=False, sinusoidal_key="sinusoidal_pos_embds", has_pooler=False,
    classifier_style="first_token_mlp", classifier_act="relu", classifier_input_dropout=False,
)
