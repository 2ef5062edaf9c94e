"""Sentence-embedding training (bertkit.train.sentence, bertkit.data.pairs): each loss against its formula and
against sentence-transformers' own loss class on the same vectors; the readers on the real KorSTS / KorNLI / STS-B
files and on JSONL (bad rows named by line); the recipe over the one loop on a tiny random model (its output read by
`SentenceTransformer(dir)` with the same vectors, a resumed run equal to an uninterrupted one, the CLI)."""

from __future__ import annotations

import gzip
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bertkit.data.corpus import CorpusError
from bertkit.data.pairs import PairSet, for_loss, nli_triplets, read_jsonl, read_pairs
from bertkit.train.sentence import (SbertConfig, cosent_loss, cosine_loss, mnrl_loss, mse_loss, run_sbert,
                                    softmax_loss)
from conftest import DATA, need_data

st_losses = pytest.importorskip("sentence_transformers.sentence_transformer.losses")


def vectors(n: int, d: int = 8, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# ---- losses ------------------------------------------------------------------------------------------------------
def test_cosent_formula_and_sentence_transformers():
    u, v = vectors(6), vectors(6, seed=1)
    scores = torch.tensor([0.2, 0.9, 0.5, 0.5, 0.0, 1.0], dtype=torch.float64)
    cos = F.cosine_similarity(u, v).tolist()
    terms = [math.exp(20 * (cos[j] - cos[i])) for i in range(6) for j in range(6) if scores[i] > scores[j]]
    expected = math.log(1 + sum(terms))  # tied pairs (0.5, 0.5) add nothing
    got = cosent_loss(u, v, scores)
    assert got.item() == pytest.approx(expected, rel=1e-9)
    theirs = st_losses.CoSENTLoss(None).compute_loss_from_embeddings([u, v], scores)
    assert got.item() == pytest.approx(theirs.item(), rel=1e-9)


def test_cosine_loss_formula_and_sentence_transformers():
    u, v = vectors(5), vectors(5, seed=1)
    scores = torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0])
    expected = float(((F.cosine_similarity(u, v) - scores.double()) ** 2).mean())
    got = cosine_loss(u, v, scores)
    assert got.item() == pytest.approx(expected, rel=1e-6)
    theirs = st_losses.CosineSimilarityLoss(None).compute_loss_from_embeddings([u.float(), v.float()], scores)
    assert got.item() == pytest.approx(theirs.item(), rel=1e-5)


@pytest.mark.parametrize("negatives", [False, True])
@pytest.mark.parametrize("symmetric", [False, True])
def test_mnrl_formula_and_sentence_transformers(negatives, symmetric):
    a, p, n = vectors(4), vectors(4, seed=1), vectors(4, seed=2)
    docs = torch.cat([p, n]) if negatives else p
    sim = 20 * F.normalize(a, dim=-1) @ F.normalize(docs, dim=-1).T
    forward = float(np.mean([-(sim[i, i] - torch.logsumexp(sim[i], 0)).item() for i in range(4)]))
    back = sim[:, :4].T
    backward = float(np.mean([-(back[i, i] - torch.logsumexp(back[i], 0)).item() for i in range(4)]))
    expected = (forward + backward) / 2 if symmetric else forward
    got = mnrl_loss(a, p, n if negatives else None, symmetric=symmetric)
    assert got.item() == pytest.approx(expected, rel=1e-9)
    kwargs = {"directions": ("query_to_doc", "doc_to_query"), "partition_mode": "per_direction"} if symmetric else {}
    theirs = st_losses.MultipleNegativesRankingLoss(None, **kwargs).compute_loss_from_embeddings(
        [a, p, n] if negatives else [a, p], None)
    assert got.item() == pytest.approx(theirs.item(), rel=1e-6)


def test_softmax_loss_formula_and_sentence_transformers(monkeypatch):
    from sentence_transformers.sentence_transformer.losses import softmax as st_softmax

    from bertkit.train.sentence import SentenceTrainee

    u, v = vectors(5).float(), vectors(5, seed=1).float()
    labels = torch.tensor([0, 2, 1, 1, 0])

    class Fake:  # what SoftmaxLoss reads of a model
        device = torch.device("cpu")

    theirs = st_softmax.SoftmaxLoss(Fake(), 8, 3)
    monkeypatch.setattr(st_softmax, "embed_columns", lambda model, features: [u, v])
    trainee = SentenceTrainee.__new__(SentenceTrainee)
    torch.nn.Module.__init__(trainee)
    trainee.classifier = torch.nn.Linear(24, 3)
    trainee.classifier.load_state_dict(theirs.classifier.state_dict())
    logits = trainee.classify(u, v)
    W, b = theirs.classifier.weight, theirs.classifier.bias
    by_hand = torch.cat([u, v, (u - v).abs()], 1) @ W.T + b
    torch.testing.assert_close(logits, by_hand)
    got = softmax_loss(logits, labels)
    assert got.item() == pytest.approx(F.cross_entropy(by_hand, labels).item(), rel=1e-6)
    assert got.item() == pytest.approx(theirs([{}, {}], labels).item(), rel=1e-6)


def test_mse_loss_formula_and_sentence_transformers():
    student, teacher = vectors(6).float(), vectors(6, seed=1).float()
    got = mse_loss(student, teacher)
    assert got.item() == pytest.approx(float(((student - teacher) ** 2).mean()), rel=1e-6)
    # a bilingual row: student(source) and student(translation) both aim at teacher(source)
    theirs = st_losses.MSELoss(None).compute_loss_from_embeddings([student[:3], student[3:]], [teacher[:3]] * 2)
    ours = mse_loss(student, teacher[:3].repeat(2, 1))
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-6)


# ---- readers -----------------------------------------------------------------------------------------------------
def test_korsts_korean_dev_and_stsb():
    need_data("kornlu", "sts-train.tsv.gz")
    train = read_pairs("korsts", "train", DATA)
    dev = read_pairs("korsts", "dev", DATA)
    assert train.kind == dev.kind == "score" and len(train) == 5749 and len(dev) == 1500
    assert train.columns[0] == ("비행기가 이륙하고 있다.", "비행기가 이륙하고 있다.") and train.labels[0] == 1.0
    assert train.labels[1] == pytest.approx(3.8 / 5)
    assert all(0 <= s <= 1 for s in train.labels + dev.labels)
    stsb = read_pairs("stsb", "dev", DATA)
    assert len(stsb) == 1500 and stsb.columns[0][0] == "A man with a hard hat is dancing."


def test_korsts_bad_line_named(tmp_path):
    bad = tmp_path / "sts.tsv"
    bad.write_text("genre\tfilename\tyear\tid\tscore\tsentence1\tsentence2\n"
                   "a\tb\t2012\t1\t4.0\t\"따옴표로 시작하는 문장\tsecond\n"
                   "a\tb\t2012\t2\t3.0\tonly one sentence\n", encoding="utf-8")
    with pytest.raises(CorpusError, match=r"sts.tsv: line 3: 6 fields, expected 7"):
        read_pairs(f"korsts:{bad}")
    bad.write_text("genre\tfilename\tyear\tid\tscore\tsentence1\tsentence2\na\tb\t2012\t1\tfour\tx\ty\n")
    with pytest.raises(CorpusError, match=r"line 2: score 'four' is not a number"):
        read_pairs(f"korsts:{bad}")
    # quotes are text (QUOTE_NONE), not a field that swallows the next lines
    bad.write_text("genre\tfilename\tyear\tid\tscore\tsentence1\tsentence2\na\tb\t2012\t1\t5\t\"hi\tthere\"\n")
    assert read_pairs(f"korsts:{bad}").columns == [('"hi', 'there"')]


def test_kornli_to_triplets():
    need_data("kornlu", "xnli.dev.ko.tsv.gz")
    nli = read_pairs(f"kornli:{DATA / 'kornlu' / 'xnli.dev.ko.tsv.gz'}")
    assert nli.kind == "label" and len(nli) == 2490 and nli.label_names == ["entailment", "neutral", "contradiction"]
    triplets = for_loss(nli, "mnrl")
    assert triplets.kind == "triplet" and triplets.width == 3 and len(triplets) == 830  # one per premise
    anchors = [t[0] for t in triplets.columns]
    assert len(set(anchors)) == len(anchors)
    gold = {(a, b): nli.label_names[y] for (a, b), y in zip(nli.columns, nli.labels)}
    for a, p, n in triplets.columns[:50]:
        assert gold[(a, p)] == "entailment" and gold[(a, n)] == "contradiction"
    assert for_loss(nli, "softmax") is nli
    with pytest.raises(CorpusError, match="cosent loss needs scored pairs"):
        for_loss(nli, "cosent")


def test_klue_mrpc_qnli_read_as_pairs():
    klue = read_pairs("klue-sts", "dev", DATA) if (DATA / "klue").exists() else pytest.skip("no KLUE data")
    assert klue.kind == "score" and len(klue) == 519
    mrpc = read_pairs("mrpc", "dev", DATA)
    assert mrpc.kind == "label" and mrpc.label_names == ["not_equivalent", "equivalent"]
    positives = for_loss(mrpc, "mnrl")
    assert len(positives) == sum(y == 1 for y in mrpc.labels) and positives.width == 2
    qnli = read_pairs("qnli", "dev", DATA)
    assert qnli.kind == "label" and len(qnli) == 5463


def test_jsonl_kinds_and_errors(tmp_path):
    f = tmp_path / "t.jsonl"
    f.write_text('{"anchor": "a", "positive": "b", "negative": "c"}\n\n{"anchor": "d", "positive": "e", '
                 '"negative": "f", "id": 7}\n')
    assert read_jsonl(f).columns == [("a", "b", "c"), ("d", "e", "f")]
    f.write_text('{"sentence1": "a", "sentence2": "b", "score": 0.5}\n')
    s = read_pairs(str(f))
    assert s.kind == "score" and s.labels == [0.5]
    f.write_text('{"sentence1": "a", "sentence2": "b", "label": "yes"}\n{"sentence1": "c", "sentence2": "d", '
                 '"label": "no"}\n')
    assert read_jsonl(f).labels == [1, 0] and read_jsonl(f).label_names == ["no", "yes"]
    f.write_text('{"source": "Hello", "translation": "안녕"}\n')
    assert read_jsonl(f).kind == "text"
    for text, message in [
        ('{"anchor": "a", "positive": "b"}\n{"anchor": "a", "positive": "b", "negative": "c"}\n',
         r"line 2: fields .* differ from the first row's"),
        ('{"anchor": "a"}\n', r"line 1: fields \['anchor'\]: expected"),
        ('{"sentence1": "a", "sentence2": "b", "score": 4.2}\n', r"line 1: score 4.2: expected a number in \[-1, 1\]"),
        ('{"anchor": "a", "positive": ""}\n', r"line 1: 'positive' must be a non-empty string"),
        ('[1]\n', r"line 1: expected a JSON object"),
        ('{"anchor": \n', r"line 1: malformed JSON"),
    ]:
        f.write_text(text)
        with pytest.raises(CorpusError, match=message):
            read_jsonl(f)
    with pytest.raises(CorpusError, match="neither a dataset"):
        read_pairs(str(tmp_path / "missing.tsv"))
    with pytest.raises(CorpusError, match="give --data DIR"):
        read_pairs("stsb", "train", tmp_path)


def test_for_loss_conversions():
    scored = PairSet("score", [("a", "b"), ("c", "d"), ("a", "e")], [0.9, 0.1, 0.8])
    assert for_loss(scored, "mnrl").columns == [("a", "b"), ("a", "e")]
    assert for_loss(scored, "mse").columns == [("a",), ("b",), ("c",), ("d",), ("e",)]
    with pytest.raises(CorpusError, match="softmax loss needs labelled pairs"):
        for_loss(scored, "softmax")
    with pytest.raises(CorpusError, match="NLI triplets need labels"):
        nli_triplets(scored)


# ---- the recipe on a tiny random model ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_st(tmp_path_factory, tiny_dir):
    """A tiny sentence-transformers directory: mean pooling, a Tanh Dense layer (trained too), Normalize."""
    from bertkit.apps.sentence import SentenceModel
    from bertkit.infer.sentence_head import Dense, SentenceHead

    base = SentenceModel.from_pretrained(tiny_dir)
    head = SentenceHead(128, ("mean",), [Dense(128, 32), "normalize"])
    d = tmp_path_factory.mktemp("tiny-st") / "model"
    SentenceModel(base.encoder, base.tokenizer, head, 64).save(d)
    return d


def sts_jsonl(path, n: int, seed: int = 0):
    words = "man woman dog cat plays runs guitar piano street park sings eats bread apple".split()
    rng = np.random.default_rng(seed)
    with open(path, "w") as f:
        for _ in range(n):
            a = " ".join(rng.choice(words, 5))
            b = " ".join(rng.choice(words, int(rng.integers(2, 8))))
            f.write(json.dumps({"sentence1": a, "sentence2": b, "score": round(float(rng.random()), 2)}) + "\n")
    return path


def small_config(tiny_st, tmp_path, **kw) -> SbertConfig:
    cfg = SbertConfig(model=str(tiny_st), train_data=str(sts_jsonl(tmp_path / "train.jsonl", 40)),
                      eval_data=str(sts_jsonl(tmp_path / "dev.jsonl", 24, seed=1)), epochs=2, batch_size=8,
                      out=str(tmp_path / "out"), **kw)
    cfg.train.threads, cfg.train.log_every, cfg.train.lr = 1, 1, 1e-3
    return cfg


def test_recipe_saves_a_directory_sentence_transformers_reads(tiny_st, tmp_path):
    st = pytest.importorskip("sentence_transformers")
    from bertkit.apps.sentence import SentenceModel

    cfg = small_config(tiny_st, tmp_path)
    summary = run_sbert(cfg, show_progress=False)
    out = tmp_path / "out"
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if r["split"] == "eval"]
    assert [r["step"] for r in evals] == [5, 10]  # after every epoch of 40 rows / 8
    assert summary["cosine_spearman"] == max(r["cosine_spearman"] for r in evals)
    assert summary["best_step"] in (5, 10) and "before" in summary
    trained = SentenceModel.from_pretrained(out)
    before = SentenceModel.from_pretrained(tiny_st)
    assert not torch.equal(trained.head.dense[0].linear.weight, before.head.dense[0].linear.weight)  # Dense trained
    texts = ["man plays guitar", "a dog eats bread in the park", "고양이"]
    ours = trained.encode(texts)
    theirs = st.SentenceTransformer(str(out), device="cpu").encode(texts)
    np.testing.assert_allclose(ours, theirs, atol=1e-5)
    # the evaluator's figure is what the saved directory gives
    from bertkit.train.sentence import sts_scores

    assert sts_scores(trained, read_pairs(cfg.eval_data))["cosine_spearman"] == pytest.approx(
        summary["cosine_spearman"], abs=1e-6)


def test_resume_equals_uninterrupted(tiny_st, tmp_path):
    """MNRL with hard negatives, stopped after its first checkpoint and resumed: the same weights as one run."""
    import bertkit.train.loop as loop
    from bertkit.apps.sentence import SentenceModel

    triplets = tmp_path / "t.jsonl"
    triplets.write_text("".join(json.dumps({"anchor": f"a {i} man", "positive": f"b {i} dog", "negative": f"c {i} cat"})
                                + "\n" for i in range(24)))

    def config(name: str) -> SbertConfig:
        (tmp_path / name).mkdir(exist_ok=True)
        cfg = small_config(tiny_st, tmp_path / name, loss="mnrl-symmetric")
        cfg.train_data, cfg.train.save_every = str(triplets), 3
        return cfg

    run_sbert(config("whole"), show_progress=False)
    original = loop.save_checkpoint

    def crash(*args, **kwargs):
        original(*args, **kwargs)
        raise KeyboardInterrupt  # killed right after the checkpoint of step 3

    with pytest.MonkeyPatch.context() as m:
        m.setattr(loop, "save_checkpoint", crash)
        with pytest.raises(KeyboardInterrupt):
            run_sbert(config("cut"), show_progress=False)
    resumed = run_sbert(config("cut"), resume=True, show_progress=False)
    texts = ["a 1 man", "c 7 cat"]
    np.testing.assert_allclose(SentenceModel.from_pretrained(tmp_path / "cut" / "out").encode(texts),
                               SentenceModel.from_pretrained(tmp_path / "whole" / "out").encode(texts), atol=1e-5)
    assert resumed["best_step"] in (3, 6)


@pytest.mark.parametrize("loss", ["cosine", "softmax", "mse"])
def test_each_loss_trains_through_the_cli(loss, tiny_st, tmp_path):
    from bertkit.cli import main

    train = tmp_path / "train.jsonl"
    if loss == "softmax":
        train.write_text("".join(json.dumps({"sentence1": f"s {i}", "sentence2": f"t {i % 5}", "label": "ent" if i % 2
                                             else "con"}) + "\n" for i in range(12)))
    elif loss == "mse":
        train.write_text("".join(json.dumps({"source": f"the man {i}", "translation": f"남자 {i}"}) + "\n"
                                 for i in range(12)))
    else:
        sts_jsonl(train, 12)
    args = ["sbert", "--model", str(tiny_st), "--train", str(train), "--loss", loss, "--output", str(tmp_path / "o"),
            "--epochs", "1", "--batch-size", "4", "--threads", "1"]
    if loss == "mse":
        args += ["--teacher", str(tiny_st)]
    assert main(args) == 0
    rows = [json.loads(line) for line in (tmp_path / "o" / "metrics.jsonl").read_text().splitlines()]
    assert rows and math.isfinite(rows[-1]["loss"]) and (tmp_path / "o" / "modules.json").is_file()
    if loss == "mse":  # the teacher is the student's starting point: only dropout makes the loss non-zero
        assert rows[-1]["loss"] < 0.05
    assert main(args) == 2  # a non-empty --output is never clobbered


def test_bad_flags_named(tiny_st, tmp_path, capsys):
    from bertkit.cli import main

    train = sts_jsonl(tmp_path / "t.jsonl", 4)
    base = ["sbert", "--model", str(tiny_st), "--train", str(train), "--output", str(tmp_path / "o")]
    assert main(base + ["--loss", "mse"]) == 2
    assert "--teacher DIR goes with --loss mse" in capsys.readouterr().err
    assert main(base + ["--batch-size", "1"]) == 2
    assert "--batch-size 1: must be at least 2" in capsys.readouterr().err
    assert main(base + ["--loss", "softmax"]) == 2
    assert "softmax loss needs labelled pairs" in capsys.readouterr().err
    assert main(base + ["--eval", f"korsts:{tmp_path / 'nope.tsv'}"]) == 2
    assert "nope.tsv: file not found" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_minilm_stsb_dev_before_training(minilm_dir):
    """The evaluator on the untouched all-MiniLM-L6-v2: 86.7 Spearman x 100 on STS-B dev (sentence-transformers'
    EmbeddingSimilarityEvaluator gives the same)."""
    from bertkit.apps.sentence import SentenceModel
    from bertkit.train.sentence import sts_scores

    need_data("glue", "STS-B", "dev.tsv.gz")
    scores = sts_scores(SentenceModel.from_pretrained(minilm_dir), read_pairs("stsb", "dev", DATA))
    assert scores["cosine_spearman"] == pytest.approx(86.72, abs=0.05)


def test_gzip_jsonl(tmp_path):
    f = tmp_path / "p.jsonl.gz"
    with gzip.open(f, "wt") as g:
        g.write('{"anchor": "a", "positive": "b"}\n')
    assert read_pairs(str(f)).columns == [("a", "b")]
