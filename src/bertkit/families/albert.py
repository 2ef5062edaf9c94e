"""ALBERT (Lan et al. 2020): factorised embeddings (`encoder.embedding_hidden_mapping_in`, always present),
num_hidden_groups x inner_group_num distinct layers shared across depth, ALBERT's own layer names, MLM head
`predictions`, sentence-order head `sop_classifier`, a pooler that is a bare Linear."""

import re
from typing import Any

from bertkit.families.base import Family, Rename, renamer

LAYER = (  # inside one layer: internal (BERT) suffix -> ALBERT suffix
    Rename("attention.self.query", "attention.query"),
    Rename("attention.self.key", "attention.key"),
    Rename("attention.self.value", "attention.value"),
    Rename("attention.output.dense", "attention.dense"),
    Rename("attention.output.LayerNorm", "attention.LayerNorm"),
    Rename("intermediate.dense", "ffn"),
    Rename("output.dense", "ffn_output"),
    Rename("output.LayerNorm", "full_layer_layer_norm"),
)
OTHER = (
    Rename("embeddings_project", "encoder.embedding_hidden_mapping_in"),
    Rename("pooler.dense", "pooler"),
    Rename("cls.predictions.transform.dense", "predictions.dense"),
    Rename("cls.predictions.transform.LayerNorm", "predictions.LayerNorm"),
    Rename("cls.predictions.bias", "predictions.bias"),
    Rename("cls.predictions.decoder", "predictions.decoder"),
    Rename("cls.seq_relationship", "sop_classifier.classifier"),
)
_layer_in, _layer_out = renamer(LAYER)
_other_in, _other_out = renamer(OTHER)
_INTERNAL = re.compile(r"encoder\.layer\.(\d+)\.(.+)")
_HF = re.compile(r"encoder\.albert_layer_groups\.(\d+)\.albert_layers\.(\d+)\.(.+)")


def to_hf(key: str, config: Any, head: str = "") -> str:
    """`encoder.layer.{g * inner_group_num + k}` is group g's inner layer k."""
    if m := _INTERNAL.fullmatch(key):
        g, k = divmod(int(m.group(1)), config.inner_group_num)
        return f"encoder.albert_layer_groups.{g}.albert_layers.{k}.{_layer_out(m.group(2))}"
    return _other_out(key)


def to_internal(key: str, config: Any, head: str = "") -> str:
    if m := _HF.fullmatch(key):
        g, k = int(m.group(1)), int(m.group(2))
        if k >= config.inner_group_num:  # left as it is: reported as a key this model does not have
            return key
        return f"encoder.layer.{g * config.inner_group_num + k}.{_layer_in(m.group(3))}"
    return _other_in(key)


def config_from_hf(d: dict[str, Any]) -> dict[str, Any]:
    d = {"embedding_size": 128, "hidden_act": "gelu_new", **d}  # AlbertConfig's defaults where BERT's differ
    if "classifier_dropout_prob" in d:
        d["classifier_dropout"] = d.pop("classifier_dropout_prob")
    return d


def config_to_hf(d: dict[str, Any]) -> dict[str, Any]:
    d = dict(d)
    if "classifier_dropout" in d:
        d["classifier_dropout_prob"] = d.pop("classifier_dropout")
    return d


FAMILY = Family(
    model_type="albert", title="ALBERT", prefix="albert",
    architectures={"BertModel": "AlbertModel", "BertForPreTraining": "AlbertForPreTraining",
                   "BertForMaskedLM": "AlbertForMaskedLM",
                   "BertForSequenceClassification": "AlbertForSequenceClassification",
                   "BertForTokenClassification": "AlbertForTokenClassification",
                   "BertForQuestionAnswering": "AlbertForQuestionAnswering"},
    config_from_hf=config_from_hf, config_to_hf=config_to_hf, to_internal=to_internal, to_hf=to_hf,
    tied=("predictions.decoder.weight", "predictions.decoder.bias"),
    shared_layers=True, factorised=True, always_project=True, tokenizer_files=(("spiece.model",),),
)
