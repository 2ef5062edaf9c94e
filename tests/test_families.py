"""Every family in the one encoder: RoBERTa, XLM-RoBERTa, ELECTRA, ALBERT, DistilBERT, each head transformers has
for it, in both directions (transformers -> bertkit, bertkit -> transformers), outputs equal at real tokens of a
padded batch; the odd layouts (RoBERTa with pad_token_id 1 and a WordPiece-sized vocabulary, ELECTRA with E < H,
ALBERT with 2 groups x 2 inner layers, DistilBERT with sinusoidal positions); bad inputs; and the real MiniLM
weights laid out as each family."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

transformers = pytest.importorskip("transformers")

from bertkit.checkpoint import CheckpointError  # noqa: E402
from bertkit.config import BertConfig, ConfigError  # noqa: E402
from bertkit.families import FAMILIES  # noqa: E402
from bertkit.heads import HEADS, load_model  # noqa: E402

TOL = 1e-5

# Tiny configs in each family's own config.json terms.
CONFIGS = {
    # klue/roberta's layout: RoBERTa weights, a WordPiece vocabulary, pad 1 (positions start at 2)
    "roberta": dict(vocab_size=120, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                    intermediate_size=37, max_position_embeddings=42, type_vocab_size=1, pad_token_id=1,
                    bos_token_id=0, eos_token_id=2),
    "xlm-roberta": dict(vocab_size=150, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=37, max_position_embeddings=42, type_vocab_size=1, pad_token_id=1,
                        bos_token_id=0, eos_token_id=2),
    "electra": dict(vocab_size=99, embedding_size=128, hidden_size=256, num_hidden_layers=2, num_attention_heads=4,
                    intermediate_size=512, max_position_embeddings=40, type_vocab_size=2),
    "electra-generator": dict(vocab_size=99, embedding_size=32, hidden_size=64, num_hidden_layers=2,
                              num_attention_heads=1, intermediate_size=256, max_position_embeddings=40,
                              type_vocab_size=2),
    "albert": dict(vocab_size=99, embedding_size=16, hidden_size=32, num_hidden_layers=4, num_hidden_groups=2,
                   inner_group_num=2, num_attention_heads=4, intermediate_size=37, max_position_embeddings=40,
                   type_vocab_size=2, hidden_act="gelu_new"),
    "distilbert": dict(vocab_size=99, dim=32, n_layers=2, n_heads=4, hidden_dim=37, max_position_embeddings=40,
                       sinusoidal_pos_embds=True, activation="gelu"),
}

# (config name, HF class, bertkit head, num_labels)
CASES = [
    *[(fam, f"{hf}{head}", internal, n)
      for fam, hf in (("roberta", "Roberta"), ("xlm-roberta", "XLMRoberta"))
      for head, internal, n in (("Model", "BertModel", None), ("ForMaskedLM", "BertForMaskedLM", None),
                                ("ForSequenceClassification", "BertForSequenceClassification", 3),
                                ("ForTokenClassification", "BertForTokenClassification", 5),
                                ("ForQuestionAnswering", "BertForQuestionAnswering", None))],
    ("roberta", "RobertaForSequenceClassification", "BertForSequenceClassification", 1),  # regression
    ("electra", "ElectraModel", "BertModel", None),
    ("electra", "ElectraForPreTraining", "BertForReplacedTokenDetection", None),
    ("electra-generator", "ElectraForMaskedLM", "BertForMaskedLM", None),
    ("electra", "ElectraForSequenceClassification", "BertForSequenceClassification", 3),
    ("electra", "ElectraForTokenClassification", "BertForTokenClassification", 5),
    ("electra", "ElectraForQuestionAnswering", "BertForQuestionAnswering", None),
    ("albert", "AlbertModel", "BertModel", None),
    ("albert", "AlbertForPreTraining", "BertForPreTraining", None),
    ("albert", "AlbertForMaskedLM", "BertForMaskedLM", None),
    ("albert", "AlbertForSequenceClassification", "BertForSequenceClassification", 3),
    ("albert", "AlbertForTokenClassification", "BertForTokenClassification", 5),
    ("albert", "AlbertForQuestionAnswering", "BertForQuestionAnswering", None),
    ("distilbert", "DistilBertModel", "BertModel", None),
    ("distilbert", "DistilBertForMaskedLM", "BertForMaskedLM", None),
    ("distilbert", "DistilBertForSequenceClassification", "BertForSequenceClassification", 3),
    ("distilbert", "DistilBertForTokenClassification", "BertForTokenClassification", 5),
    ("distilbert", "DistilBertForQuestionAnswering", "BertForQuestionAnswering", None),
]


def model_type(name: str) -> str:
    return name.removesuffix("-generator")


def hf_config(name: str, num_labels: int | None):
    extra = {} if num_labels is None else {"num_labels": num_labels}
    return transformers.AutoConfig.for_model(model_type(name), **CONFIGS[name], **extra)


def batch(name: str) -> dict[str, torch.Tensor]:
    """Three rows of 9, 6 and 3 real tokens (none of them the pad id), the rest padding."""
    cfg = CONFIGS[name]
    pad = cfg.get("pad_token_id", 0)
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, cfg["vocab_size"], (3, 9), generator=g)
    mask = torch.zeros(3, 9, dtype=torch.long)
    for row, n in enumerate((9, 6, 3)):
        mask[row, :n] = 1
    out = {"input_ids": ids.masked_fill(mask == 0, pad), "attention_mask": mask}
    if cfg.get("type_vocab_size", 0) > 1:
        out["token_type_ids"] = (torch.arange(9) >= 4).long().expand(3, 9) * mask
    elif "type_vocab_size" in cfg:
        out["token_type_ids"] = torch.zeros_like(ids)
    return out


def randomise(model: torch.nn.Module, seed: int) -> None:
    """Every float tensor random (LayerNorms and biases too), so a swapped or dropped tensor cannot go unseen."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "LayerNorm.weight" in name or "layer_norm.weight" in name or name.endswith("norm.weight"):
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))


def hf_outputs(model, internal: str, inputs) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        out = model(**inputs)
    real = inputs["attention_mask"].bool()
    if internal == "BertModel":
        res = {"hidden": out.last_hidden_state[real]}
        if getattr(out, "pooler_output", None) is not None:
            res["pooled"] = out.pooler_output
        return res
    if internal == "BertForQuestionAnswering":
        return {"start": out.start_logits[real], "end": out.end_logits[real]}
    if internal == "BertForSequenceClassification":
        return {"logits": out.logits}
    if internal == "BertForPreTraining":
        return {"logits": out.prediction_logits[real], "order": out.sop_logits}
    return {"logits": out.logits[real]}  # MLM, tagging, replaced-token detection (B, T[, V])


def bertkit_outputs(model, internal: str, inputs) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        out = model(**inputs)
    real = inputs["attention_mask"].bool()
    if internal == "BertModel":
        res = {"hidden": out.last_hidden_state[real]}
        if out.pooler_output is not None:
            res["pooled"] = out.pooler_output
        return res
    if internal == "BertForQuestionAnswering":
        return {"start": out.start_logits[real], "end": out.end_logits[real]}
    if internal == "BertForSequenceClassification":
        return {"logits": out.logits}
    if internal == "BertForPreTraining":
        return {"logits": out.logits[real], "order": out.seq_relationship_logits}
    if internal == "BertForReplacedTokenDetection":
        return {"logits": out.logits}  # already (N,) over the real tokens in row order
    return {"logits": out.logits[real]}


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].shape == b[k].shape, k
        assert (a[k] - b[k]).abs().max().item() <= TOL, (k, (a[k] - b[k]).abs().max().item())


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("name,hf_cls,internal,num_labels", CASES,
                         ids=[f"{c[1]}-{c[3]}" if c[3] else c[1] for c in CASES])
def test_transformers_to_bertkit(tmp_path, name, hf_cls, internal, num_labels):
    torch.manual_seed(0)
    hf = getattr(transformers, hf_cls)(hf_config(name, num_labels)).eval()
    randomise(hf, 2)
    hf.save_pretrained(tmp_path)
    ours = load_model(tmp_path)
    assert type(ours).__name__ == internal
    assert not ours.load_report.unused and not ours.load_report.newly_initialized, str(ours.load_report)
    inputs = batch(name)
    assert_same(bertkit_outputs(ours, internal, inputs), hf_outputs(hf, internal, inputs))


@pytest.mark.parametrize("name,hf_cls,internal,num_labels", CASES,
                         ids=[f"{c[1]}-{c[3]}" if c[3] else c[1] for c in CASES])
def test_bertkit_to_transformers(tmp_path, name, hf_cls, internal, num_labels):
    d = {"model_type": model_type(name), **CONFIGS[name]}
    if num_labels is not None:
        d["num_labels"] = num_labels
    ours = HEADS[internal](BertConfig.from_dict(d)).eval()
    randomise(ours, 3)
    ours.save_pretrained(tmp_path)
    written = json.loads((tmp_path / "config.json").read_text())
    assert written["model_type"] == model_type(name) and written["architectures"] == [hf_cls]
    hf, info = getattr(transformers, hf_cls).from_pretrained(tmp_path, output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    inputs = batch(name)
    assert_same(hf_outputs(hf.eval(), internal, inputs), bertkit_outputs(ours, internal, inputs))


# ---- configs, layouts and bad inputs ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["gpt2", "deberta-v2", "xlm-roberta-xl"])
def test_unsupported_model_type_names_itself_and_lists_the_supported(tmp_path, name):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": name, "hidden_size": 32}))
    with pytest.raises(ConfigError) as err:
        BertConfig.from_json_file(tmp_path)
    msg = str(err.value)
    assert str(tmp_path / "config.json") in msg and f"'model_type' = '{name}'" in msg
    assert all(t in msg for t in FAMILIES) and len(FAMILIES) == 6
    if name == "xlm-roberta-xl":
        assert "pre-LayerNorm" in msg


def test_config_json_round_trips_in_each_familys_own_terms():
    for name, d in CONFIGS.items():
        d = {"model_type": model_type(name), **d, "transformers_version": "5.0", "some_future_key": [1]}
        cfg = BertConfig.from_dict(d)
        back = cfg.to_dict()
        assert BertConfig.from_dict(back).to_dict() == back
        assert {k: back[k] for k in d} == d, name  # nothing lost, nothing renamed
    distil = BertConfig.from_dict({"model_type": "distilbert", **CONFIGS["distilbert"]})
    assert (distil.hidden_size, distil.num_hidden_layers, distil.type_vocab_size) == (32, 2, 0)
    assert not {"hidden_size", "type_vocab_size", "layer_norm_eps"} & set(distil.to_dict())
    bert = BertConfig(hidden_size=32, num_attention_heads=4, intermediate_size=37).to_dict()
    assert not {"embedding_size", "num_hidden_groups", "inner_group_num"} & set(bert)  # BERT's file as before


def test_sizes_and_positions_follow_the_layout():
    albert = BertConfig.from_dict({"model_type": "albert", **CONFIGS["albert"]})
    model = HEADS["BertModel"](albert)
    assert len(model.encoder.layer) == 4 and model.encoder.schedule == [0, 1, 0, 1, 2, 3, 2, 3]
    assert sum(p.numel() for p in model.parameters()) == albert.num_parameters()
    electra = BertConfig.from_dict({"model_type": "electra", **CONFIGS["electra"]})
    assert sum(p.numel() for p in HEADS["BertModel"](electra).parameters()) == electra.num_parameters()
    roberta = BertConfig.from_dict({"model_type": "roberta", **CONFIGS["roberta"]})
    assert (roberta.position_offset, roberta.max_length) == (2, 40)
    with pytest.raises(ValueError, match="exceeds max_position_embeddings 42 less the position offset 2"):
        HEADS["BertModel"](roberta)(torch.full((1, 41), 5))
    distil = BertConfig.from_dict({"model_type": "distilbert", **CONFIGS["distilbert"]})
    ours = HEADS["BertModel"](distil)
    theirs = transformers.DistilBertModel(hf_config("distilbert", None))
    assert ours.embeddings.token_type_embeddings is None
    assert not ours.embeddings.position_embeddings.weight.requires_grad  # fixed, as in DistilBERT
    assert torch.allclose(ours.embeddings.position_embeddings.weight, theirs.embeddings.position_embeddings.weight,
                          atol=1e-6)


def test_weights_of_another_family_are_listed_by_name(tmp_path):
    transformers.DistilBertModel(hf_config("distilbert", None)).save_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "roberta", "architectures": ["RobertaModel"],
                                                      **{**CONFIGS["roberta"], "pad_token_id": 0, "vocab_size": 99,
                                                         "max_position_embeddings": 40}}))
    with pytest.raises(CheckpointError) as err:
        load_model(tmp_path)
    msg = str(err.value)
    assert "unknown keys (not part of any RoBERTa class)" in msg
    assert "transformer.layer.0.attention.q_lin.weight" in msg and "transformer.layer.1.ffn.lin2.bias" in msg
    assert "missing encoder weights: " in msg and "encoder.layer.0.attention.self.query.weight" in msg


def test_old_position_ids_buffers_are_ignored(tmp_path):
    hf = transformers.RobertaForMaskedLM(hf_config("roberta", None)).eval()
    hf.save_pretrained(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    state["roberta.embeddings.position_ids"] = torch.arange(42)[None]
    state["roberta.embeddings.token_type_ids"] = torch.zeros(1, 42, dtype=torch.long)
    save_file(state, tmp_path / "model.safetensors")
    ours = load_model(tmp_path)
    assert not ours.load_report.unused
    inputs = batch("roberta")
    assert_same(bertkit_outputs(ours, "BertForMaskedLM", inputs), hf_outputs(hf, "BertForMaskedLM", inputs))


# ---- real scale: all-MiniLM-L6-v2 laid out as each family -----------------------------------------------------------
SENTENCES = ["A man is playing a guitar on the stage.", "The new movie is awesome!",
             "Seoul is the capital of South Korea, and its subway is vast.", "Two dogs run."]


def _minilm_as(family: str, minilm_dir, out) -> None:
    """The MiniLM BERT checkpoint rewritten in `family`'s layout with the same function."""
    config = json.loads((minilm_dir / "config.json").read_text())
    state = {k: v for k, v in load_file(minilm_dir / "model.safetensors").items() if not k.endswith("position_ids")}
    if family == "roberta":  # positions start at pad + 1 = 2: two rows in front
        config.update(model_type="roberta", architectures=["RobertaModel"], pad_token_id=1,
                      max_position_embeddings=config["max_position_embeddings"] + 2)
        pos = state["embeddings.position_embeddings.weight"]
        state["embeddings.position_embeddings.weight"] = torch.cat([torch.zeros(2, pos.shape[1]), pos])
        state = {f"roberta.{k}": v for k, v in state.items()}
    elif family == "electra":  # no pooler
        config.update(model_type="electra", architectures=["ElectraModel"], embedding_size=config["hidden_size"])
        state = {f"electra.{k}": v for k, v in state.items() if not k.startswith("pooler.")}
    else:  # DistilBERT adds word + position only: the type-0 row goes into every position row
        state["embeddings.position_embeddings.weight"] += state.pop("embeddings.token_type_embeddings.weight")[0]
        from bertkit.families import distilbert
        state = {f"distilbert.{distilbert.to_hf(k, None)}": v for k, v in state.items() if not k.startswith("pooler.")}
        config = {"model_type": "distilbert", "architectures": ["DistilBertModel"], "vocab_size": config["vocab_size"],
                  "dim": 384, "n_layers": 6, "n_heads": 12, "hidden_dim": 1536, "activation": "gelu",
                  "max_position_embeddings": 512, "pad_token_id": 0, "sinusoidal_pos_embds": False}
    out.mkdir()
    save_file({k: v.contiguous() for k, v in state.items()}, out / "model.safetensors")
    (out / "config.json").write_text(json.dumps(config))


def _mean_pooled(model, inputs) -> torch.Tensor:
    with torch.no_grad():
        h = model(**inputs).last_hidden_state
    m = inputs["attention_mask"].unsqueeze(-1).to(h.dtype)
    return (h * m).sum(1) / m.sum(1)


def test_real_minilm_in_every_family_layout(tmp_path, minilm_dir):
    from bertkit.tokenizer import Tokenizer

    inputs = Tokenizer.from_pretrained(minilm_dir).batch(SENTENCES)
    reference = _mean_pooled(load_model(minilm_dir), inputs)
    for family, hf_cls in (("roberta", "RobertaModel"), ("electra", "ElectraModel"),
                           ("distilbert", "DistilBertModel")):
        _minilm_as(family, minilm_dir, tmp_path / family)
        ours = load_model(tmp_path / family)
        assert not ours.load_report.unused and not ours.load_report.newly_initialized
        theirs = getattr(transformers, hf_cls).from_pretrained(tmp_path / family).eval()
        x = dict(inputs)
        if family == "roberta":  # RoBERTa counts positions from the pad id: padding must carry it
            x["input_ids"] = x["input_ids"].masked_fill(x["attention_mask"] == 0, 1)
        if family == "distilbert":
            del x["token_type_ids"]
        a, b = _mean_pooled(ours, x), _mean_pooled(theirs, x)
        assert (a - b).abs().max().item() <= TOL, (family, (a - b).abs().max().item())
        assert (a - reference).abs().max().item() <= TOL, (family, (a - reference).abs().max().item())


# ---- distillation and int8 for every family --------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["roberta", "electra", "albert", "distilbert"])
def test_distilled_student_and_int8_model_of_every_family(tmp_path, name):
    from bertkit.infer.quantize import load_int8, quantize_int8, save_int8
    from bertkit.train.distill import every_other, student_from_teacher

    config = BertConfig.from_dict({"model_type": name, **CONFIGS[name], "num_labels": 3})
    teacher = HEADS["BertForSequenceClassification"](config).eval()
    randomise(teacher, 4)
    inputs = batch(name)
    # the student keeps the family: it saves as the family's class and transformers agrees with it
    student = student_from_teacher(teacher, every_other(config.num_hidden_layers)).eval()
    assert student.config.num_hidden_layers == config.num_hidden_layers // 2
    if name == "albert":  # shared layers: all kept, applied half as often
        assert len(student.bert.encoder.layer) == 4 and student.bert.encoder.schedule == [0, 1, 2, 3]
    else:
        assert torch.equal(student.bert.encoder.layer[0].output.dense.weight,
                           teacher.bert.encoder.layer[0].output.dense.weight)
    student.save_pretrained(tmp_path / "student")
    hf_cls = FAMILIES[name].architectures["BertForSequenceClassification"]
    hf = getattr(transformers, hf_cls).from_pretrained(tmp_path / "student").eval()
    assert_same(hf_outputs(hf, "BertForSequenceClassification", inputs),
                bertkit_outputs(student, "BertForSequenceClassification", inputs))
    # int8: saved and loaded back through the family's config, outputs identical to the in-memory model
    q = quantize_int8(teacher)
    save_int8(q, tmp_path / "q")
    again = load_int8(tmp_path / "q")
    assert type(again).__name__ == "BertForSequenceClassification" and again.config.model_type == name
    with torch.inference_mode():
        assert torch.equal(q(**inputs).logits, again(**inputs).logits)


def test_a_head_the_family_lacks_is_refused_by_name():
    config = BertConfig.from_dict({"model_type": "electra", **CONFIGS["electra"]})
    with pytest.raises(ConfigError, match="BertForPreTraining: the ELECTRA family has no such model"):
        HEADS["BertForPreTraining"](config)


def test_every_familys_tied_aliases_land_on_the_internal_aliases():
    from bertkit.checkpoint import TIED

    for fam in FAMILIES.values():
        config = BertConfig.from_dict({"model_type": fam.model_type, **CONFIGS.get(fam.model_type, {})})
        assert fam.tied and {fam.to_internal(k, config, "BertForMaskedLM") for k in fam.tied} <= set(TIED), fam.name


def test_load_report_names_keys_as_the_file_does(tmp_path):
    """A RoBERTa MLM checkpoint fine-tuned as a classifier: the report (what the user reads in the warning) names the
    unused head and the new classifier by RoBERTa's names, not by bertkit's internal BERT names."""
    transformers.RobertaForMaskedLM(hf_config("roberta", None)).save_pretrained(tmp_path)
    report = HEADS["BertForSequenceClassification"].from_pretrained(tmp_path, num_labels=2).load_report
    assert "lm_head.dense.weight" in report.unused and "lm_head.layer_norm.bias" in report.unused, report
    assert set(report.newly_initialized) == {"classifier.dense.weight", "classifier.dense.bias",
                                             "classifier.out_proj.weight", "classifier.out_proj.bias"}, report
    assert "cls.predictions" not in str(report) and "pre_classifier" not in str(report)
