"""Everything downstream, for every model family (RoBERTa with byte-level BPE, RoBERTa with WordPiece as
klue/roberta, ELECTRA with E < H, ALBERT with a Unigram vocabulary and 2 x 2 shared layers, DistilBERT without
segments, XLM-RoBERTa), on a tiny random model and a tokenizer learned here from a corpus written here:
- through the CLI: `finetune` (sentence-pair classification) -> `evaluate` -> `quantize` -> `export --onnx` (parity
  with PyTorch) -> `predict` -> `serve` one request -> the directory loads in transformers with the same logits and
  its tokenizer gives the same ids; `finetune` / `evaluate` / `predict` for tagging and span QA; `encode`;
- the QA and tagging features in the family's template (RoBERTa's pair is `<s> A </s></s> B </s>`);
- the Predictor: fill-mask with the family's mask token, embeddings, tagging, QA, windows of a long text, explain,
  and the service's token costs, which count the template's specials."""

from __future__ import annotations

import json
import math
import random
import re

import numpy as np
import pytest
import torch

from bertkit import BertConfig, Tokenizer
from bertkit.cli import main
from bertkit.data.features import IGNORE, QASettings, qa_features, tag_features, windows
from bertkit.data.tasks import QAExample, TagExample
from bertkit.heads import (BertForMaskedLM, BertForQuestionAnswering, BertForSequenceClassification,
                           BertForTokenClassification, load_model)
from bertkit.apps.suggest import SuggestSettings, Suggester
from bertkit.infer.predictor import Predictor, PredictorSettings
from bertkit.vocab import learn_vocab

transformers = pytest.importorskip("transformers")

GOOD = ["great", "fine", "lovely", "superb", "좋은", "훌륭한"]
BAD = ["awful", "dull", "boring", "poor", "나쁜", "지루한"]
FILLER = ["the", "movie", "was", "a", "story", "with", "actors", "and", "music", "영화", "배우", "음악", "정말",
          "plot", "scenes", "ending", "director", "Seoul", "Paris", "Peter"]

# name -> (the config fields of a tiny model in its family's own terms, the tokenizer kind); vocab_size and the
# special ids come from the tokenizer
FAMILIES = {
    "roberta": (dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
                     max_position_embeddings=66, type_vocab_size=1), "bpe"),
    # klue/roberta's layout: RoBERTa weights with a WordPiece vocabulary
    "roberta-wordpiece": (dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
                               max_position_embeddings=66, type_vocab_size=1), "wordpiece"),
    "electra": (dict(embedding_size=16, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=37, max_position_embeddings=64, type_vocab_size=2), "wordpiece"),
    "albert": (dict(embedding_size=16, hidden_size=32, num_hidden_layers=4, num_hidden_groups=2, inner_group_num=2,
                    num_attention_heads=4, intermediate_size=37, max_position_embeddings=64, type_vocab_size=2,
                    hidden_act="gelu_new"), "unigram"),
    "distilbert": (dict(dim=32, n_layers=2, n_heads=4, hidden_dim=37, max_position_embeddings=64,
                        activation="gelu"), "wordpiece"),
    "xlm-roberta": (dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
                         max_position_embeddings=66, type_vocab_size=1), "unigram"),
}


def model_type(name: str) -> str:
    return name.removesuffix("-wordpiece")


def sentence(rng: random.Random, label: int) -> str:
    words = rng.sample(FILLER, 5) + [rng.choice(GOOD if label else BAD)]
    rng.shuffle(words)
    return " ".join(words)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    rng = random.Random(0)
    d = tmp_path_factory.mktemp("corpus")
    path = d / "corpus.txt"
    path.write_text("\n".join(sentence(rng, i % 2) + "." for i in range(600)) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def task_data(tmp_path_factory):
    """A custom pair-classification task: the label says whether the pair's second text is the positive one."""
    rng = random.Random(1)
    d = tmp_path_factory.mktemp("task")
    for split, n in (("train", 64), ("dev", 24)):
        rows = ["text\ttext_pair\tlabel"]
        for i in range(n):
            label = i % 2
            rows.append(f"{sentence(rng, 1 - label)}\t{sentence(rng, label)}\t{label}")
        (d / f"{split}.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return d


@pytest.fixture(scope="module")
def tokenizers(corpus):
    return {kind: learn_vocab([corpus], size=300 if kind == "bpe" else 120, min_frequency=1, held_out_every=1000,
                              show_progress=False, kind=kind)[0]
            for kind in ("wordpiece", "bpe", "unigram")}


def build(name: str, tok: Tokenizer, architecture: str = "BertModel") -> BertConfig:
    fields, _ = FAMILIES[name]
    special = {"pad_token_id": tok.pad_id}
    if model_type(name) != "distilbert":
        special.update(bos_token_id=tok.cls_id, eos_token_id=tok.sep_id)
    return BertConfig.from_dict({"model_type": model_type(name), "vocab_size": tok.vocab_size, **fields, **special})


@pytest.fixture(scope="module")
def saved(tmp_path_factory, tokenizers):
    """name -> an HF directory of a tiny random encoder of that family with its learned tokenizer."""
    out = {}
    for name, (_, kind) in FAMILIES.items():
        torch.manual_seed(0)
        d = tmp_path_factory.mktemp(name)
        tok = tokenizers[kind]
        model = BertForMaskedLM(build(name, tok))
        model.save_pretrained(d, tokenizer=tok)
        if name == "roberta-wordpiece":
            # klue/roberta's files: BERT's pair template (segment 1 for B) and no model_input_names, for a model
            # with one token type: segment ids must not reach it
            cfg = json.loads((d / "tokenizer_config.json").read_text())
            cfg.pop("model_input_names", None)
            (d / "tokenizer_config.json").write_text(json.dumps(cfg))
            assert not Tokenizer.from_pretrained(d).uses_token_types
        out[name] = d
    return out


def logits_of(model, batch) -> np.ndarray:
    with torch.inference_mode():
        return model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]).logits.numpy()


@pytest.mark.parametrize("name", list(FAMILIES))
def test_cli_end_to_end(name, saved, task_data, tmp_path, capsys, monkeypatch):
    torch.set_num_threads(1)
    monkeypatch.setenv("BERTKIT_CACHE", str(tmp_path / "cache"))  # where `--backend onnx` keeps its export
    tuned, int8 = tmp_path / "tuned", tmp_path / "int8"
    assert main(["finetune", "--task", "custom", "--model", str(saved[name]), "--data", str(task_data), "--out",
                 str(tuned), "--epochs", "1", "--batch-size", "16", "--lr", "1e-3", "--max-length", "48",
                 "--threads", "1"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["train_examples"] == 64 and summary["eval_examples"] == 24
    config = json.loads((tuned / "config.json").read_text())
    assert config["model_type"] == model_type(name)
    assert main(["evaluate", "--model", str(tuned), "--task", "custom", "--data", str(task_data), "--output",
                 str(tmp_path / "eval.json")]) == 0
    assert json.loads((tmp_path / "eval.json").read_text())["accuracy"] == pytest.approx(summary["accuracy"])

    texts = ["the movie was great", "a dull story with 배우"]
    pairs = ["awful music", "훌륭한 영화 ending"]
    tok = Tokenizer.from_pretrained(tuned)
    batch = tok.batch(texts, pairs)
    model = load_model(tuned).eval()
    want = logits_of(model, batch)

    # quantize: an int8 directory that predicts
    assert main(["quantize", "--model", str(tuned), "--out", str(int8)]) == 0
    q = Predictor.from_pretrained(int8, PredictorSettings(threads=1))
    assert [r["label"] for r in q.classify(texts, pairs)] and q.config.model_type == model_type(name)

    # export --onnx: the graph gives PyTorch's logits
    onnx_path = tmp_path / "model.onnx"
    assert main(["export", "--model", str(tuned), "--onnx", "--output", str(onnx_path)]) == 0
    from bertkit.infer.onnxrt import OnnxModel

    onnx = OnnxModel(onnx_path, model.config, type(model), threads=1)
    got = onnx(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]).logits.numpy()
    np.testing.assert_allclose(got, want, atol=1e-4)
    # DistilBERT reads no segment ids: its graph takes transformers' two inputs
    segments = set() if model_type(name) == "distilbert" else {"token_type_ids"}
    assert onnx.inputs == {"input_ids", "attention_mask"} | segments

    # predict: the CLI's answers are the model's
    inputs = tmp_path / "in.txt"
    inputs.write_text("".join(f"{a}\t{b}\n" for a, b in zip(texts, pairs)), encoding="utf-8")
    assert main(["predict", "--model", str(tuned), "--input", str(inputs), "--output", str(tmp_path / "p.jsonl"),
                 "--pairs"]) == 0
    lines = [json.loads(x) for x in (tmp_path / "p.jsonl").read_text(encoding="utf-8").splitlines()]
    names = [config["id2label"][str(i)] for i in range(2)]
    assert [r["label"] for r in lines] == [names[int(i)] for i in want.argmax(-1)]
    probs = torch.tensor(want).softmax(-1).numpy()
    np.testing.assert_allclose([[r["probs"][n] for n in names] for r in lines], probs, atol=1e-5)
    assert main(["predict", "--model", str(tuned), "--input", str(inputs), "--output", str(tmp_path / "o.jsonl"),
                 "--pairs", "--backend", "onnx"]) == 0
    lines = [json.loads(x) for x in (tmp_path / "o.jsonl").read_text(encoding="utf-8").splitlines()]
    np.testing.assert_allclose([[r["probs"][n] for n in names] for r in lines], probs, atol=1e-4)

    # serve: one request over real HTTP (a uvicorn server on loopback, as test_serve starts it)
    pytest.importorskip("uvicorn")
    from test_serve import Server

    from bertkit.serve.app import create_app

    server = Server(create_app({"m": Predictor.from_pretrained(tuned, PredictorSettings(threads=1))}))
    try:
        status, out, _ = server.post("/v1/classify", {"pairs": [[texts[0], pairs[0]]]})
    finally:
        server.stop()
    assert status == 200
    np.testing.assert_allclose([out["results"][0]["probs"][n] for n in names], probs[0], atol=1e-5)

    # transformers reads the directory: same logits, same ids
    hf = transformers.AutoModelForSequenceClassification.from_pretrained(tuned).eval()
    hf_tok = transformers.AutoTokenizer.from_pretrained(tuned)
    enc = hf_tok(texts, pairs, padding=True, return_tensors="pt")
    assert enc["input_ids"].tolist() == batch["input_ids"].tolist()
    assert enc["attention_mask"].tolist() == batch["attention_mask"].tolist()
    feed = {k: v for k, v in enc.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
    with torch.inference_mode():
        np.testing.assert_allclose(hf(**feed).logits.numpy(), want, atol=1e-5)


def family_tokenizer(name, saved) -> Tokenizer:
    return Tokenizer.from_pretrained(saved[name])


@pytest.mark.parametrize("name", list(FAMILIES))
def test_qa_and_tagging_features_use_the_family_template(name, saved):
    tok = family_tokenizer(name, saved)
    context = "Peter visited the movie 영화 in Paris with actors and music " * 3
    ex = QAExample("q0", "who visited Paris", context, [("Peter", 0), ("Peter", 0)])
    s = QASettings(max_length=24, doc_stride=8, max_query_length=6)
    q_ids = tok.encode_batch([ex.question], add_special_tokens=False)[0].ids[:6]
    c_enc = tok.encode_batch([context], add_special_tokens=False)[0]
    features = qa_features(tok, [ex], s, train=True)
    assert len(features) > 1
    pair_specials = tok.num_special_tokens(pair=True)
    for k, f in enumerate(features):
        n_ctx = sum(o is not None for o in f.offsets)
        assert len(f.input_ids) == len(q_ids) + n_ctx + pair_specials <= s.max_length
        window = c_enc.ids[k * s.doc_stride:][:n_ctx]  # windows start doc_stride pieces apart
        want_ids, want_types = tok.build_inputs(q_ids, window)
        assert (f.input_ids, f.token_type_ids) == (want_ids, want_types)
        assert f.input_ids[0] == tok.cls_id and f.input_ids[-1] == tok.sep_id
    # the pair encoding of the engine is the same layout (RoBERTa: <s> A </s></s> B </s>, zero segment ids)
    first = features[0]
    n_ctx = sum(o is not None for o in first.offsets)
    enc = tok.encode(tok.decode(q_ids), tok.decode(c_enc.ids[:n_ctx]))
    assert [i for i, t in enumerate(enc.ids) if t in tok.special_ids()] == \
        [i for i, t in enumerate(first.input_ids) if t in tok.special_ids()]
    assert (enc.type_ids == first.token_type_ids) or not tok.uses_token_types
    assert features[0].start_position > 0 and first.input_ids[first.start_position] == c_enc.ids[0]

    tag = TagExample("Peter visited Paris with actors".split(), ["B-PER", "O", "B-LOC", "O", "O"])
    labels = {"O": 0, "B-PER": 1, "B-LOC": 2}
    feats = tag_features(tok, [tag], labels, max_length=7)
    words = tok.encode_batch([" ".join(tag.words)], add_special_tokens=False)[0].ids
    specials = set(tok.special_ids())
    assert len(feats) > 1
    seen = []
    for f in feats:
        window = [t for t in f.input_ids if t not in specials]
        assert len(f.input_ids) == len(window) + tok.num_special_tokens() <= 7
        assert (f.input_ids, f.token_type_ids) == tok.build_inputs(window)
        for t, label, word in zip(f.input_ids, f.labels, f.token_words):
            if t in specials:
                assert label == IGNORE and word is None
        seen.append(window)
    assert seen[0] == words[:len(seen[0])] and seen[-1] == words[len(words) - len(seen[-1]):]
    labelled = {w: lab for f in feats for lab, w in zip(f.labels, f.token_words) if w is not None}
    assert labelled == {w: labels[t] for w, t in enumerate(tag.tags)}


@pytest.mark.parametrize("name", list(FAMILIES))
def test_predictor_tags_answers_fills_and_embeds_in_every_family(name, saved, tmp_path):
    torch.set_num_threads(1)
    tok = family_tokenizer(name, saved)
    settings = PredictorSettings(threads=1)
    config = BertConfig.from_json_file(saved[name] / "config.json")
    # fill-mask through the MLM head the directory holds, with the family's own mask token
    p = Predictor.from_pretrained(saved[name], settings)
    mask = tok.inv_vocab[tok.mask_id]
    out = p.fill_mask([f"the movie was {mask} fun", f"{mask} 영화"], top_k=3)
    assert [len(r["masks"]) for r in out] == [1, 1] and all(len(m[0]) == 3 for m in (r["masks"] for r in out))
    with pytest.raises(ValueError, match=f"texts\\[0\\]: no {re.escape(mask)} token to fill"):
        p.fill_mask(["no mask here"])
    ids = tok.encode(f"the movie was {mask} fun").ids
    model = load_model(saved[name]).eval()
    with torch.inference_mode():
        logits = model(torch.tensor([ids])).logits[0, ids.index(tok.mask_id)]
    top = logits.softmax(-1).topk(3)
    assert [x["token"] for x in out[0]["masks"][0]] == tok.convert_ids_to_tokens(top.indices.tolist())
    np.testing.assert_allclose([x["score"] for x in out[0]["masks"][0]], top.values.numpy(), atol=1e-5)
    # whole-word suggestions read the family's word marks (##, Ġ, ▁): words are text, of at most max_pieces pieces
    # (the continuation "s" made likely, so that words of two pieces compete with the random model's single pieces)
    plural = next(i for t, i in tok.vocab.items() if tok.continuation_mask()[i] and tok.piece_text(t) == "s")
    with torch.no_grad():
        p.model.cls.predictions.bias[plural] += 20.0
    suggester = Suggester(p, SuggestSettings(max_pieces=2, beam=8, top_k=12))
    got = suggester.suggest(f"the movie was {mask} fun")["suggestions"]
    assert len(got) == 12 and any(len(tok.piece_ids(" " + s["words"][0])) == 2 for s in got)
    for s in got:
        word = s["words"][0]
        assert word and not any(m in word for m in ("##", "Ġ", "▁")) and len(tok.piece_ids(" " + word)) <= 2
    scored = suggester.suggest(f"the movie was {mask} fun", targets=[s["words"][0] for s in got])["suggestions"]
    assert {s["words"][0]: s["score"] for s in scored} == pytest.approx({s["words"][0]: s["score"] for s in got},
                                                                        abs=1e-3)
    if tok.word_markers()[1] == "Ġ":  # byte-level BPE: a text's first word has no space before it
        first = Suggester(p, SuggestSettings(max_pieces=1, beam=64, top_k=64)).suggest(f"{mask} movie was fun")
        pieces = p.fill_mask([f"{mask} movie was fun"], top_k=tok.vocab_size)[0]["masks"][0]
        bare = {tok.piece_text(x["token"]): math.log(x["score"]) for x in pieces if not x["token"].startswith("Ġ")}
        assert any(abs(bare.get(s["words"][0], 1.0) - s["score"]) < 1e-3 for s in first["suggestions"])
    p = Predictor.from_pretrained(saved[name], settings)
    # embeddings of the task model's encoder
    vectors = p.embed(["a fine film", "나쁜 영화"], normalize=True)
    assert vectors.shape == (2, config.hidden_size) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)

    # tagging and QA heads of the family: answers lie in the input, entities at their own characters
    config.id2label, config.label2id = {0: "O", 1: "B-PER", 2: "I-PER"}, {"O": 0, "B-PER": 1, "I-PER": 2}
    config.num_labels = 3
    torch.manual_seed(0)
    tagger = Predictor(BertForTokenClassification(config).eval(), tok, settings)
    text = "Peter visited Paris with actors and music " * 4
    for e in tagger.tag([text])[0]["entities"]:
        assert text[e["start"]:e["end"]] == e["text"]
    config.num_labels = 2
    reader = Predictor(BertForQuestionAnswering(config).eval(), tok, settings)
    context = "The movie was shot in Paris by Peter. " * 6
    a = reader.answer(["where was the movie shot"], [context])[0]
    assert context[a["start"]:a["end"]] == a["answer"] and a["answer"]
    # the service's token budget counts what the model reads: the template's specials in every window
    nq, nc = (len(e) for e in tok.encode_batch(["where was the movie shot", context], add_special_tokens=False))
    read = qa_features(tok, [QAExample("0", "where was the movie shot", context, [])],
                       QASettings(max_length=reader.config.max_length))
    assert reader.task_family.cost(reader, "answer", (nq, nc), "x")[0] == sum(len(f.input_ids) for f in read)
    n_tag = len(tok.encode_batch([text], add_special_tokens=False)[0])
    read = tag_features(tok, [TagExample(list(text), ["O"] * len(text), text=text)], {}, tagger.max_length, False)
    assert tagger.task_family.cost(tagger, "tag", (n_tag,), "x")[0] == sum(len(f.input_ids) for f in read)

    # a text longer than the window is classified in windows of the family's template; explained word by word
    torch.manual_seed(0)
    clf = Predictor(BertForSequenceClassification(config).eval(), tok, settings)
    long_text = " ".join(["the movie was superb with lovely music"] * 12)
    body = tok.encode_batch([long_text], add_special_tokens=False)[0].ids
    room = clf.max_length - tok.num_special_tokens()
    spans = windows(len(body), room, room // 2, align_end=True)
    result = clf.classify([long_text])[0]
    assert result["windows"] == len(spans) > 1
    rows = [tok.build_inputs(body[b:b + n]) for b, n in spans]
    want = np.mean(logits_of(clf.model, tok.collate([r[0] for r in rows], [r[1] for r in rows])), axis=0)
    np.testing.assert_allclose(list(result["probs"].values()), torch.tensor(want).softmax(-1).numpy(), atol=1e-5)
    short = "the superb movie with lovely music 영화"
    assert [w["text"] for w in clf.explain(short)["words"]] == short.split()


@pytest.mark.parametrize("name", ["roberta", "albert", "distilbert"])
def test_encode_cli(name, saved, tmp_path):
    src = tmp_path / "in.txt"
    lines = ["the movie was great", "정말 좋은 영화"]
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "v.npz"
    assert main(["encode", "--model", str(saved[name]), "--input", str(src), "--output", str(out)]) == 0
    got = np.load(out)
    tok = family_tokenizer(name, saved)
    from bertkit.model import BertModel

    encoder = BertModel.from_pretrained(saved[name]).eval()
    with torch.inference_mode():
        for i, line in enumerate(lines):
            b = tok.batch([line])
            want = encoder(b["input_ids"], b["attention_mask"], b["token_type_ids"]).last_hidden_state[0].numpy()
            np.testing.assert_allclose(got["last_hidden_state"][got["offsets"][i]:got["offsets"][i + 1]], want,
                                       atol=1e-5)


@pytest.fixture(scope="module")
def span_data(tmp_path_factory):
    """Tiny CoNLL-2003 and SQuAD v1.1 files (train and evaluation splits) written here."""
    rng = random.Random(2)
    conll, squad = tmp_path_factory.mktemp("conll"), tmp_path_factory.mktemp("squad")
    people, places = ["Peter", "Anna", "Minsu"], ["Paris", "Seoul", "London"]

    def sentences(n):
        out = []
        for _ in range(n):
            p, c = rng.choice(people), rng.choice(places)
            out.append([(p, "B-PER"), ("visited", "O"), (c, "B-LOC"), ("with", "O"), ("actors", "O")])
        return out

    def squad_file(n):
        paragraphs = []
        for i in range(n):
            p, c = rng.choice(people), rng.choice(places)
            context = f"The movie was shot in {c} by {p} with lovely music and actors. " * 2
            paragraphs.append({"context": context, "qas": [
                {"id": f"q{i}", "question": "who shot the movie", "answers": [
                    {"text": p, "answer_start": context.index(p)}]}]})
        return json.dumps({"version": "1.1", "data": [{"title": "t", "paragraphs": paragraphs}]})

    for stem, n in (("eng.train", 48), ("eng.testb", 16)):
        (conll / stem).write_text("-DOCSTART- -X- -X- O\n\n" + "\n\n".join(
            "\n".join(f"{w} NN O {t}" for w, t in s) for s in sentences(n)) + "\n", encoding="utf-8")
    for stem, n in (("train-v1.1", 48), ("dev-v1.1", 16)):
        (squad / f"{stem}.json").write_text(squad_file(n), encoding="utf-8")
    return {"conll2003": conll, "squad": squad}


@pytest.mark.parametrize("name", list(FAMILIES))
@pytest.mark.parametrize("task", ["conll2003", "squad"])
def test_cli_tagging_and_qa(task, name, saved, span_data, tmp_path, capsys):
    torch.set_num_threads(1)
    out = tmp_path / "tuned"
    assert main(["finetune", "--task", task, "--model", str(saved[name]), "--data", str(span_data[task]), "--out",
                 str(out), "--epochs", "1", "--batch-size", "16", "--lr", "1e-3", "--max-length", "40",
                 "--doc-stride", "16", "--threads", "1"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["metric"] == "f1" and 0.0 <= summary["f1"] <= 1.0
    config = json.loads((out / "config.json").read_text())
    hf_class = {"conll2003": "ForTokenClassification", "squad": "ForQuestionAnswering"}[task]
    assert config["model_type"] == model_type(name) and config["architectures"][0].endswith(hf_class)
    assert main(["evaluate", "--model", str(out), "--task", task, "--data", str(span_data[task]), "--output",
                 str(tmp_path / "m.json")]) == 0
    evaluated = json.loads((tmp_path / "m.json").read_text())["f1"]
    # QA: `evaluate` reads with its own window settings (384 tokens, stride 128), not the ones fine-tuning used
    assert evaluated == pytest.approx(summary["f1"]) if task == "conll2003" else 0.0 <= evaluated <= 1.0
    inputs = tmp_path / "in.txt"
    if task == "squad":
        context = "The movie was shot in Paris by Anna with lovely music and actors. " * 4
        inputs.write_text(json.dumps({"question": "who shot the movie", "context": context}) + "\n", encoding="utf-8")
    else:
        context = "Anna visited Seoul with actors"
        inputs.write_text(context + "\n", encoding="utf-8")
    assert main(["predict", "--model", str(out), "--input", str(inputs), "--output", str(tmp_path / "p.jsonl")]) == 0
    row = json.loads((tmp_path / "p.jsonl").read_text(encoding="utf-8"))
    spans = [row] if task == "squad" else row["entities"]
    assert all(context[s["start"]:s["end"]] == s.get("answer", s.get("text")) for s in spans)
