"""ELECTRA (Clark et al. 2020): embeddings of width embedding_size projected to hidden_size (`embeddings_project`,
only when they differ), no pooler; discriminator `discriminator_predictions`, generator `generator_predictions` +
`generator_lm_head` (GELU), classifier dense -> GELU -> out_proj on [CLS]."""

from typing import Any

from bertkit.families.base import SEQ_CLS, Family, Rename, renamer

RENAMES = (
    Rename("cls.predictions.transform", "generator_predictions"),
    Rename("cls.predictions.bias", "generator_lm_head.bias"),
    Rename("cls.predictions.decoder", "generator_lm_head"),
    Rename("pre_classifier", "classifier.dense", SEQ_CLS),
    Rename("classifier", "classifier.out_proj", SEQ_CLS),
)
to_internal, to_hf = renamer(RENAMES)


def config_from_hf(d: dict[str, Any]) -> dict[str, Any]:
    return {"embedding_size": 128, **d}  # ElectraConfig's default when the file leaves it out


FAMILY = Family(
    model_type="electra", title="ELECTRA", prefix="electra",
    architectures={"BertModel": "ElectraModel", "BertForReplacedTokenDetection": "ElectraForPreTraining",
                   "BertForMaskedLM": "ElectraForMaskedLM",
                   "BertForSequenceClassification": "ElectraForSequenceClassification",
                   "BertForTokenClassification": "ElectraForTokenClassification",
                   "BertForQuestionAnswering": "ElectraForQuestionAnswering"},
    config_from_hf=config_from_hf, to_internal=to_internal, to_hf=to_hf, tied=("generator_lm_head.weight",),
    factorised=True, has_pooler=False, classifier_style="first_token_mlp", classifier_act="gelu",
    mlm_act="gelu",  # ElectraGeneratorPredictions: gelu whatever hidden_act says
)
