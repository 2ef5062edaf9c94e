"""RoBERTa (Liu et al. 2019) and XLM-RoBERTa (Conneau et al. 2020): BERT's layers, positions counted from
pad_token_id + 1, MLM head `lm_head`, classifier dense -> tanh -> out_proj on <s>, no pooler in the heads."""

from typing import Any

from bertkit.families.base import SEQ_CLS, Family, Rename, renamer

RENAMES = (
    Rename("cls.predictions.transform.dense", "lm_head.dense"),
    Rename("cls.predictions.transform.LayerNorm", "lm_head.layer_norm"),
    Rename("cls.predictions.bias", "lm_head.bias"),
    Rename("cls.predictions.decoder", "lm_head.decoder"),
    Rename("pre_classifier", "classifier.dense", SEQ_CLS),
    Rename("classifier", "classifier.out_proj", SEQ_CLS),
)
to_internal, to_hf = renamer(RENAMES)


def config_from_hf(d: dict[str, Any]) -> dict[str, Any]:
    return {"pad_token_id": 1, **d}  # RobertaConfig's default (positions depend on it) where BERT's is 0


def _family(model_type: str, title: str, hf: str, tokenizer_files: tuple[tuple[str, ...], ...]) -> Family:
    return Family(
        model_type=model_type, title=title, prefix="roberta",
        architectures={"BertModel": f"{hf}Model", "BertForMaskedLM": f"{hf}ForMaskedLM",
                       "BertForSequenceClassification": f"{hf}ForSequenceClassification",
                       "BertForTokenClassification": f"{hf}ForTokenClassification",
                       "BertForQuestionAnswering": f"{hf}ForQuestionAnswering"},
        config_from_hf=config_from_hf, to_internal=to_internal, to_hf=to_hf, tied=("lm_head.decoder.weight", "lm_head.decoder.bias"),
        positions_after_pad=True, classifier_style="first_token_mlp", classifier_act="tanh",
        mlm_act="gelu",  # RobertaLMHead calls gelu whatever hidden_act says
        tokenizer_files=tokenizer_files)


# klue/roberta ships a WordPiece vocab.txt with RoBERTa weights: both legacy layouts are accepted.
FAMILY = _family("roberta", "RoBERTa", "Roberta", (("vocab.json", "merges.txt"), ("vocab.txt",)))
XLM_FAMILY = _family("xlm-roberta", "XLM-RoBERTa", "XLMRoberta", (("sentencepiece.bpe.model",),))
