"""The modules after the encoder in a sentence-transformers directory: Pooling, Dense, Normalize (`SentenceHead`),
and the reading of the directory's layout (`read_layout`) without loading the encoder.

A sentence-transformers directory is `modules.json` (the modules in order) over folders:
- `sentence_transformers.models.Transformer` (path "" = the root, or a subfolder): an HF encoder directory of any
  family bertkit loads, with `sentence_bert_config.json` (`max_seq_length`: the token window, else the tokenizer's
  `model_max_length` as sentence-transformers 6 saves it; `do_lower_case`: texts are lower-cased before
  tokenising);
- `Pooling` (`1_Pooling/config.json`): cls, max, mean, mean_sqrt_len_tokens, weightedmean, lasttoken, in the old
  boolean keys (`pooling_mode_mean_tokens`, ...) or the new `pooling_mode` (one mode or a list: the vectors of each
  mode are concatenated, in the order given). `include_prompt` only matters when a prompt is prepended
  to the texts, which bertkit never does, so it is read, kept and otherwise ignored;
- `Dense` (`N_Dense/config.json` + `model.safetensors` or `pytorch_model.bin`: `linear.weight`, `linear.bias`):
  in/out features, bias, and the activation as a `torch.nn` class name (`torch.nn.modules.activation.Tanh`);
- `Normalize`: L2 normalisation.
The module types are recognised by their class name under `sentence_transformers.` (the old `models.Pooling` and
the new `sentence_transformer.modules.pooling.Pooling` alike); any other module is an error naming it.

It sits below the Predictor: `Predictor.from_pretrained` reads the layout, so `predict`, `serve` (/v1/embed) and
`bertkit.apps.sentence.SentenceModel` give the same vectors.
"""

from __future__ import annotations

import importlib
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from bertkit.checkpoint import CheckpointError, find_weights, read_state_dict
from bertkit.config import BertConfig
from bertkit.io import read_json

POOLING_MODES = ("cls", "max", "mean", "mean_sqrt_len_tokens", "weightedmean", "lasttoken")
# the old boolean keys of 1_Pooling/config.json, in the order sentence-transformers concatenates them
LEGACY_POOLING_KEYS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}
MODULE_KINDS = ("Transformer", "Pooling", "Dense", "Normalize")


class SentenceFormatError(CheckpointError):
    """A sentence-transformers directory bertkit cannot read: the message names the file and the field."""


# ---- the modules after the encoder ---------------------------------------------------------------------------
def pool(hidden: torch.Tensor, mask: torch.Tensor, mode: str) -> torch.Tensor:
    """(B, T, H), (B, T) -> (B, H), as sentence-transformers' Pooling computes it on a padded batch."""
    if mode == "cls":  # the first real token
        first = mask.to(torch.int).argmax(dim=1)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), first]
    if mode == "max":
        return hidden.masked_fill(mask.unsqueeze(-1) == 0, float("-inf")).max(dim=1).values
    if mode in ("mean", "mean_sqrt_len_tokens"):
        m = mask.unsqueeze(-1).to(hidden.dtype)
        total, count = (hidden * m).sum(dim=1), m.sum(dim=1).clamp(min=1e-9)
        return total / (count if mode == "mean" else torch.sqrt(count))
    if mode == "weightedmean":  # weights 1, 2, ... from the first real token
        m = mask.unsqueeze(-1).to(hidden.dtype)
        weights = torch.arange(1, hidden.shape[1] + 1, device=hidden.device, dtype=hidden.dtype).view(1, -1, 1)
        weights = weights - mask.to(torch.int32).argmax(dim=1).view(-1, 1, 1).to(hidden.dtype)
        w = m * weights
        return (hidden * w).sum(dim=1) / w.sum(dim=1).clamp(min=1e-9)
    if mode == "lasttoken":  # the last real token
        seq_len = hidden.shape[1]
        values, idx = mask.flip(1).max(1)
        idx = torch.where(values == 0, seq_len - 1, idx)
        last = seq_len - idx - 1
        return (hidden * mask.unsqueeze(-1).to(hidden.dtype))[torch.arange(hidden.shape[0], device=hidden.device),
                                                              last]
    raise ValueError(f"pooling mode '{mode}': choose one of {', '.join(POOLING_MODES)}")


def _activation(name: str | None, where: str) -> nn.Module:
    """`torch.nn.modules.activation.Tanh` -> Tanh(); only torch.nn Module classes (what sentence-transformers
    restores without trust_remote_code)."""
    if name is None:
        return nn.Tanh()  # sentence-transformers' default
    module, _, cls = name.rpartition(".")
    if not module.startswith("torch"):
        raise SentenceFormatError(f"{where}: activation_function '{name}': only torch.nn classes are supported")
    try:
        found = getattr(importlib.import_module(module), cls)
    except (ImportError, AttributeError):
        raise SentenceFormatError(f"{where}: activation_function '{name}': no such class") from None
    if not (isinstance(found, type) and issubclass(found, nn.Module)):
        raise SentenceFormatError(f"{where}: activation_function '{name}': not a torch.nn.Module class")
    return found()


def activation_name(act: nn.Module) -> str:
    return f"{type(act).__module__}.{type(act).__name__}"


class Dense(nn.Module):
    """sentence-transformers' Dense: activation(linear(x))."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, activation: nn.Module | None = None):
        super().__init__()
        self.in_features, self.out_features, self.bias = in_features, out_features, bias
        self.linear = nn.Linear(in_features, out_features, bias=bias)
        self.activation = activation if activation is not None else nn.Tanh()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.linear(x))


class SentenceHead(nn.Module):
    """Pooling -> Dense* / Normalize, in modules.json order. Called as `head(last_hidden_state, attention_mask)`:
    the pooling argument of `Predictor.embed`."""

    def __init__(self, dim: int, modes: Sequence[str] = ("mean",), after: Sequence[nn.Module | str] = (),
                 include_prompt: bool = True):
        super().__init__()
        for m in modes:
            if m not in POOLING_MODES:
                raise ValueError(f"pooling mode '{m}': choose one of {', '.join(POOLING_MODES)}")
        if not modes:
            raise ValueError("pooling: no mode given")
        self.dim, self.modes, self.include_prompt = dim, tuple(modes), include_prompt
        self.steps: list[nn.Module | str] = list(after)  # Dense modules and "normalize"
        self.dense = nn.ModuleList([s for s in self.steps if isinstance(s, nn.Module)])

    @property
    def output_dim(self) -> int:
        dim = self.dim * len(self.modes)
        for s in self.steps:
            if isinstance(s, Dense):
                dim = s.out_features
        return dim

    @property
    def normalizes(self) -> bool:
        return bool(self.steps) and self.steps[-1] == "normalize"

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.dense and self.dense[0].linear.weight.device != hidden.device:  # the encoder's device (a GPU)
            self.to(hidden.device)
        x = torch.cat([pool(hidden, mask, m) for m in self.modes], dim=-1)
        for s in self.steps:
            x = nn.functional.normalize(x, p=2, dim=-1) if s == "normalize" else s(x.to(s.linear.weight.dtype))
        return x


# ---- reading ---------------------------------------------------------------------------------------------------
def _kind(entry: object, file: Path, i: int) -> str:
    if not isinstance(entry, dict):
        raise SentenceFormatError(f"{file}: entry {i}: expected an object with 'type' and 'path'")
    for field in ("type", "path"):
        if field not in entry:
            raise SentenceFormatError(f"{file}: entry {i}: missing field '{field}'")
        if not isinstance(entry[field], str):
            raise SentenceFormatError(f"{file}: entry {i}: field '{field}' must be a string")
    name = entry["type"]
    cls = name.rpartition(".")[2]
    if not name.startswith("sentence_transformers.") or cls not in MODULE_KINDS:
        raise SentenceFormatError(f"{file}: entry {i}: unknown module type '{name}' (bertkit reads "
                                  f"{', '.join(MODULE_KINDS)} of sentence_transformers)")
    path = Path(entry["path"])
    if path.is_absolute() or ".." in path.parts:
        raise SentenceFormatError(f"{file}: entry {i}: field 'path' '{entry['path']}' must be inside the directory")
    return cls


def _read_pooling(folder: Path, hidden: int) -> tuple[tuple[str, ...], bool]:
    file = folder / "config.json"
    config = read_json(file, "pooling config")
    if not isinstance(config, dict):
        raise SentenceFormatError(f"{file}: expected a JSON object")
    dim = config.get("embedding_dimension", config.get("word_embedding_dimension"))
    if dim is not None and dim != hidden:
        raise SentenceFormatError(f"{file}: word_embedding_dimension {dim} but the encoder's hidden size is {hidden}")
    if "pooling_mode" in config:
        mode = config["pooling_mode"]
        modes = (mode,) if isinstance(mode, str) else tuple(mode) if isinstance(mode, list) else None
        if not modes or any(m not in POOLING_MODES for m in modes):
            raise SentenceFormatError(f"{file}: pooling_mode {mode!r}: choose one or a list of "
                                      f"{', '.join(POOLING_MODES)}")
    else:
        modes = tuple(m for k, m in LEGACY_POOLING_KEYS.items() if config.get(k, False)) or ("mean",)
    return modes, bool(config.get("include_prompt", True))


def _read_dense(folder: Path) -> Dense:
    file = folder / "config.json"
    config = read_json(file, "Dense config")
    if not isinstance(config, dict):
        raise SentenceFormatError(f"{file}: expected a JSON object")
    for field in ("in_features", "out_features"):
        if not isinstance(config.get(field), int) or config[field] <= 0:
            raise SentenceFormatError(f"{file}: field '{field}' missing or not a positive integer")
    if config.get("use_residual", False):
        raise SentenceFormatError(f"{file}: use_residual: not supported by bertkit")
    for field in ("module_input_name", "module_output_name"):
        if config.get(field) not in (None, "sentence_embedding"):
            raise SentenceFormatError(f"{file}: {field} '{config[field]}': bertkit's Dense runs on the sentence "
                                      f"embedding only")
    dense = Dense(config["in_features"], config["out_features"], bool(config.get("bias", True)),
                  _activation(config.get("activation_function"), str(file)))
    weights_file = find_weights(folder)  # model.safetensors or pytorch_model.bin, read as checkpoints are
    state = read_state_dict(weights_file)
    expected = dict(dense.state_dict())
    missing, extra = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or extra:
        raise SentenceFormatError(f"{weights_file}: keys missing {missing}, unexpected {extra}")
    for k, v in expected.items():
        if tuple(state[k].shape) != tuple(v.shape):
            raise SentenceFormatError(f"{weights_file}: {k} has shape {tuple(state[k].shape)}, config.json says "
                                      f"{tuple(v.shape)} (in_features {dense.in_features}, out_features "
                                      f"{dense.out_features})")
    dense.load_state_dict({k: v.float() for k, v in state.items()})
    return dense



# ---- reading the layout --------------------------------------------------------------------------------------
def _read_modules(file: Path) -> list[dict]:
    """modules.json, checked: Transformer first, then Pooling, then Dense / Normalize modules."""
    entries = read_json(file, "modules.json")
    if not isinstance(entries, list) or not entries:
        raise SentenceFormatError(f"{file}: expected a non-empty list of modules")
    kinds = [_kind(e, file, i) for i, e in enumerate(entries)]
    if kinds[0] != "Transformer" or kinds.count("Transformer") != 1:
        raise SentenceFormatError(f"{file}: the first module, and only it, must be a Transformer (got "
                                  f"{', '.join(kinds)})")
    if len(kinds) < 2 or kinds[1] != "Pooling" or kinds.count("Pooling") != 1:
        raise SentenceFormatError(f"{file}: one Pooling module must follow the Transformer (got "
                                  f"{', '.join(kinds)})")
    return [{**e, "kind": k} for e, k in zip(entries, kinds)]


def _read_head(directory: Path, entries: list[dict], hidden: int) -> SentenceHead:
    """Pooling, Dense and Normalize of a checked modules.json, for an encoder of `hidden` features."""
    modes, include_prompt = _read_pooling(directory / entries[1]["path"], hidden)
    steps: list[nn.Module | str] = []
    dim = hidden * len(modes)
    for entry in entries[2:]:
        if entry["kind"] == "Normalize":
            steps.append("normalize")
            continue
        dense = _read_dense(directory / entry["path"])
        if dense.in_features != dim:
            raise SentenceFormatError(f"{directory / entry['path'] / 'config.json'}: in_features "
                                      f"{dense.in_features}, but the module before gives {dim}")
        dim = dense.out_features
        steps.append(dense)
    return SentenceHead(hidden, modes, steps, include_prompt)


@dataclass
class SentenceLayout:
    """What a sentence-transformers directory says besides the encoder's own weights."""
    encoder_dir: Path  # the Transformer module's folder: an HF encoder directory
    head: SentenceHead
    max_seq_length: int | None  # None: sentence_bert_config.json does not say (then the tokenizer's limit)
    do_lower_case: bool


def read_sentence_config(folder: Path) -> tuple[int | None, bool]:
    """`sentence_bert_config.json` of an encoder folder: (max_seq_length or None, do_lower_case)."""
    file = folder / "sentence_bert_config.json"
    if not file.exists():
        return None, False
    sb = read_json(file, "sentence_bert_config")
    if not isinstance(sb, dict):
        raise SentenceFormatError(f"{file}: expected a JSON object")
    max_seq_length = sb.get("max_seq_length")
    if max_seq_length is not None and (isinstance(max_seq_length, bool) or not isinstance(max_seq_length, int)
                                       or max_seq_length <= 0):
        raise SentenceFormatError(f"{file}: max_seq_length {max_seq_length!r}: expected a positive integer")
    return max_seq_length, bool(sb.get("do_lower_case", False))


def read_layout(directory: str | Path) -> SentenceLayout | None:
    """The layout of a sentence-transformers directory; None when it has no modules.json (a plain encoder, which
    sentence-transformers mean-pools without normalising: the Predictor's default)."""
    directory = Path(directory)
    file = directory / "modules.json"
    if not file.exists():
        return None
    entries = _read_modules(file)
    folder = directory / entries[0]["path"]
    # the small modules first: a bad one is named before the encoder's weights are read
    head = _read_head(directory, entries, BertConfig.from_json_file(folder / "config.json").hidden_size)
    max_seq_length, lower = read_sentence_config(folder)
    return SentenceLayout(folder, head, max_seq_length, lower)


def sentence_window(max_seq_length: int | None, model_max_length: int, max_positions: int) -> int | None:
    """The token window: sentence_bert_config's max_seq_length, else (as sentence-transformers 6 saves it) the
    tokenizer's model_max_length when it is below the model's positions; None: the model's own limit."""
    if max_seq_length is not None:
        return max_seq_length
    return model_max_length if 0 < model_max_length < max_positions else None


def copy_sentence_modules(source: str | Path, target: str | Path) -> bool:
    """Copy the sentence-transformers files of `source` (modules.json, the module folders after the encoder,
    sentence_bert_config.json, config_sentence_transformers.json) into `target`, a rewrite of its root encoder
    (`bertkit quantize`), so the new directory keeps the model's pooling and window. False: nothing to copy."""
    source, target = Path(source), Path(target)
    layout = read_layout(source)
    if layout is None or layout.encoder_dir.resolve() != source.resolve():
        return False
    for entry in _read_modules(source / "modules.json")[1:]:
        if (source / entry["path"]).is_dir():  # Normalize's folder may be absent: it has no files
            shutil.copytree(source / entry["path"], target / entry["path"], dirs_exist_ok=True)
    for name in ("modules.json", "sentence_bert_config.json", "config_sentence_transformers.json"):
        if (source / name).exists():
            shutil.copy2(source / name, target / name)
    return True
