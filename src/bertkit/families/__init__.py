"""The registry of model families: `model_type` of config.json -> its `Family` (see `families.base`).

Adding a family: its own module defining `FAMILY`, one import here and one entry in `FAMILIES`."""

from bertkit.families import albert, bert, distilbert, electra, roberta
from bertkit.families.base import BUFFERS, ConfigError, Family

FAMILIES: dict[str, Family] = {f.model_type: f for f in (
    bert.FAMILY, roberta.FAMILY, roberta.XLM_FAMILY, electra.FAMILY, albert.FAMILY, distilbert.FAMILY,
)}

# Near misses that deserve a reason, not just the list.
WHY_NOT = {
    "xlm-roberta-xl": "its layers are pre-LayerNorm (LayerNorm before attention and feed-forward), "
                      "not this post-LayerNorm encoder",
    "deberta-v2": "its attention is disentangled (relative positions inside attention), not BERT's",
    "deberta": "its attention is disentangled (relative positions inside attention), not BERT's",
}


def family(model_type: str, source: str = "config") -> Family:
    """The family of a `model_type`; an unknown one raises ConfigError naming it and listing the supported."""
    try:
        return FAMILIES[model_type]
    except (KeyError, TypeError):
        why = f" ({WHY_NOT[model_type]})" if model_type in WHY_NOT else ""
        raise ConfigError(f"{source}: field 'model_type' = {model_type!r} is not supported{why}; bertkit reads "
                            f"{', '.join(FAMILIES)}") from None


__all__ = ["BUFFERS", "FAMILIES", "ConfigError", "Family", "family"]
