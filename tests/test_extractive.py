"""The BertSum-style scorer: its input layout ([CLS] per sentence, alternating segments, windows of whole
sentences), sentence vectors read at each [CLS], trigram blocking, a training run that learns a planted cue, save /
load / resume, and the CLI from training to `summarize --method trained`."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from bertkit import BertConfig, BertModel, Tokenizer
from bertkit.apps.extractive import ExtractiveConfig, ExtractiveScorer
from bertkit.apps.summarize import pick


@pytest.fixture(scope="module")
def tok(minilm_dir):
    return Tokenizer.from_pretrained(minilm_dir)


@pytest.fixture(scope="module")
def encoder_dir(tok, tmp_path_factory):
    torch.manual_seed(0)
    cfg = BertConfig.named("tiny", max_position_embeddings=128, num_hidden_layers=2, vocab_size=tok.vocab_size)
    path = tmp_path_factory.mktemp("enc") / "encoder"
    BertModel(cfg).save_pretrained(path, tokenizer=tok)
    return path


def test_windows_hold_whole_sentences_with_a_cls_each_and_alternating_segments(encoder_dir, tok):
    scorer = ExtractiveScorer.from_pretrained(encoder_dir, ExtractiveConfig(max_length=40, max_sentence_pieces=12))
    sentences = [f"sentence number {i} says something about the weather today and more words" for i in range(7)]
    windows = scorer.windows(sentences)
    assert len(windows) > 1 and sum(len(w[2]) for w in windows) == 7
    k = 0
    for ids, types, starts in windows:
        assert len(ids) <= 40 and len(ids) == len(types)
        for j, start in enumerate(starts):
            end = starts[j + 1] if j + 1 < len(starts) else len(ids)
            unit = ids[start:end]
            assert unit[0] == tok.cls_id and unit[-1] == tok.sep_id and len(unit) <= 14
            assert unit[1:-1] == tok.piece_ids(sentences[k])[:12]
            assert set(types[start:end]) == {k % 2}
            k += 1


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_sentence_vectors_are_the_encoders_outputs_at_cls_or_over_the_sentence(encoder_dir, pooling):
    """With no inter-sentence layer, the logits are the scorer applied to each sentence's vector (its [CLS] output,
    or the mean over its tokens) + its position, whatever window the sentence fell in."""
    scorer = ExtractiveScorer.from_pretrained(encoder_dir, ExtractiveConfig(layers=0, max_length=32,
                                                                            pooling=pooling)).eval()
    article = ["the first sentence is short.", "a second one follows it here with several more words in it.",
               "third.", "and the fourth sentence closes the small article."]
    batch = scorer.batch([article, article[:2]])
    logits = scorer(**batch)
    assert logits.shape == (2, 4) and torch.isinf(logits[1, 2:]).all()
    with torch.no_grad():
        for a, sentences in enumerate([article, article[:2]]):
            flat = [(ids, types, start, end) for ids, types, starts in scorer.windows(sentences)
                    for start, end in zip(starts, starts[1:] + [len(ids)])]
            for s, (ids, types, start, end) in enumerate(flat):
                hidden = scorer.encoder(torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.long),
                                        torch.tensor([types])).last_hidden_state[0]
                vector = hidden[start] if pooling == "cls" else hidden[start:end].mean(0)
                x = scorer.norm(vector + scorer.position.weight[s])
                assert float(scorer.scorer(x)) == pytest.approx(float(logits[a, s]), abs=1e-4)
    with pytest.raises(ValueError, match="pooling 'max': choose one of mean, cls"):
        ExtractiveScorer.from_pretrained(encoder_dir, ExtractiveConfig(pooling="max"))


def test_pick_blocks_sentences_that_repeat_a_trigram():
    sentences = ["the cat sat on the mat", "on the mat the cat sat down", "a dog barked", "birds sang loudly"]
    assert pick(sentences, [3.0, 2.0, 1.0, 0.5], 2) == [0, 2]  # 1 repeats "the cat sat"
    assert pick(sentences, [3.0, 2.0, 1.0, 0.5], 2, block_trigrams=False) == [0, 1]
    assert pick(sentences[:2], [3.0, 2.0], 2) == [0, 1]  # too few unblocked: the blocked one fills in


def articles(n: int, seed: int) -> list[dict]:
    """Articles of 6-9 filler sentences where the summary is the two sentences that carry a planted cue word."""
    rng = random.Random(seed)
    words = ("market city team report water school music budget river policy phone station garden winter train "
             "museum doctor farmer bridge village cinema harbour forest engine").split()
    out = []
    for _ in range(n):
        sentences = [" ".join(rng.choice(words) for _ in range(rng.randint(5, 9))) + "." for _ in range(rng.randint(6, 9))]
        gold = sorted(rng.sample(range(len(sentences)), 2))
        for i, cue in zip(gold, ("breaking news", "official statement")):  # no trigram shared by the two
            sentences[i] = f"{cue} {sentences[i]}"
        out.append({"sentences": sentences, "reference": " ".join(sentences[i] for i in gold), "gold": gold})
    return out


def write(path, rows):
    path.write_text("\n".join(json.dumps({k: v for k, v in r.items() if k != "gold"}) for r in rows) + "\n")


def test_training_learns_the_planted_summary_and_saves_a_scorer_that_reloads(encoder_dir, tmp_path):
    from bertkit.train.extractive import ExtractiveTrainConfig, run_extractive

    write(tmp_path / "train.jsonl", articles(48, 0))
    held = articles(16, 1)
    write(tmp_path / "eval.jsonl", held)
    # the tiny random encoder learns the cue with a high rate and no inter-sentence layer (ROUGE-2 ~81 here; an
    # untrained scorer or wrong labels give 25-40)
    cfg = ExtractiveTrainConfig(model=str(encoder_dir), train_file=str(tmp_path / "train.jsonl"),
                                eval_file=str(tmp_path / "eval.jsonl"), out=str(tmp_path / "run"), label_k=2, k=2,
                                epochs=10, batch_size=8, scorer=ExtractiveConfig(layers=0, max_length=64,
                                                                                 max_sentence_pieces=30))
    cfg.train.lr, cfg.train.threads = 3e-3, 1
    result = run_extractive(cfg, show_progress=False)
    assert result["train_articles"] == 48 and result["rouge2"] > 65
    scorer = ExtractiveScorer.from_pretrained(tmp_path / "run")
    assert scorer.settings.layers == 0 and scorer.settings.max_length == 64
    hits = [pick(a["sentences"], s.tolist(), 2) == a["gold"] for a, s in
            zip(held, scorer.scores([a["sentences"] for a in held]))]
    assert sum(hits) >= 9
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [x["rouge2"] for x in lines if x.get("split") == "eval"]


def test_a_resumed_run_ends_where_an_uninterrupted_one_does(encoder_dir, tmp_path):
    from bertkit.train.extractive import ExtractiveTrainConfig, run_extractive

    write(tmp_path / "train.jsonl", articles(16, 2))

    def config(out, epochs):
        cfg = ExtractiveTrainConfig(model=str(encoder_dir), train_file=str(tmp_path / "train.jsonl"), out=out,
                                    label_k=2, epochs=epochs, batch_size=4, scorer=ExtractiveConfig(layers=1, max_sentence_pieces=30,
                                                                                                    max_length=64))
        cfg.train.lr, cfg.train.threads, cfg.train.save_every, cfg.train.keep_checkpoints = 1e-3, 1, 4, 3
        return cfg

    run_extractive(config(str(tmp_path / "whole"), 2), show_progress=False)
    run_extractive(config(str(tmp_path / "parts"), 2), show_progress=False)
    # as if stopped after the first checkpoint (step 4 of 8): the later one gone, then --resume
    import shutil

    saved = sorted((tmp_path / "parts" / "checkpoints").iterdir())
    assert [p.name for p in saved] == ["step-0000004", "step-0000008"]
    shutil.rmtree(saved[-1])
    run_extractive(config(str(tmp_path / "parts"), 2), resume=True, show_progress=False)
    a = ExtractiveScorer.from_pretrained(tmp_path / "whole").scores([articles(1, 9)[0]["sentences"]])[0]
    b = ExtractiveScorer.from_pretrained(tmp_path / "parts").scores([articles(1, 9)[0]["sentences"]])[0]
    np.testing.assert_allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("graph", [False, True])
def test_a_frozen_encoder_stays_as_loaded_and_its_cached_vectors_train_what_rereading_them_trains(encoder_dir,
                                                                                                 tmp_path, graph):
    """--freeze-encoder: the sentence vectors computed once give the same trained scorer as re-reading every
    article each step (cache 0), the encoder's weights are the loaded ones, and the new layers still learn the cue."""
    from bertkit.checkpoint import read_state_dict
    from bertkit.train.extractive import ExtractiveTrainConfig, run_extractive

    write(tmp_path / "train.jsonl", articles(48, 5))
    held = articles(16, 6)
    write(tmp_path / "eval.jsonl", held)

    def run(name, cache_mb, epochs):
        cfg = ExtractiveTrainConfig(model=str(encoder_dir), train_file=str(tmp_path / "train.jsonl"),
                                    eval_file=str(tmp_path / "eval.jsonl"), out=str(tmp_path / name), label_k=2, k=2,
                                    epochs=epochs, batch_size=8, freeze_encoder=True, cache_mb=cache_mb,
                                    scorer=ExtractiveConfig(layers=1, max_length=64, max_sentence_pieces=30,
                                                            graph_features=graph))
        cfg.train.lr, cfg.train.threads = 3e-3, 1
        return run_extractive(cfg, show_progress=False)

    # equal for an epoch (over many epochs at this rate float noise of ~1e-7 grows to 1e-3: the same run, not the
    # same bits)
    run("cached-1", 64, 1), run("reread-1", 0, 1)
    a, b = (ExtractiveScorer.from_pretrained(tmp_path / n).scores([x["sentences"] for x in held]) for n in
            ("cached-1", "reread-1"))
    np.testing.assert_allclose(np.concatenate(a), np.concatenate(b), atol=1e-5)
    cached = run("cached", 64, 20)
    before, after = read_state_dict(encoder_dir), read_state_dict(tmp_path / "cached")
    assert all(torch.equal(before[k], after[k]) for k in before)
    untrained = ExtractiveScorer.from_pretrained(encoder_dir, ExtractiveConfig(layers=1, max_length=64,
                                                                              max_sentence_pieces=30,
                                                                              graph_features=graph))
    from bertkit.train.extractive import Article, rouge_of

    held_articles = [Article(x["sentences"], x["reference"], []) for x in held]
    base = rouge_of(untrained, held_articles, 2, "rouge-score")
    assert cached["rouge2"] > base["rouge2"] + 15, (cached["rouge2"], base["rouge2"])
    # the evaluation on cached vectors is the saved scorer's, reading the articles
    saved = rouge_of(ExtractiveScorer.from_pretrained(tmp_path / "cached"), held_articles, 2, "rouge-score")
    assert saved["rouge2"] == pytest.approx(cached["rouge2"], abs=1e-6)


def test_graph_features_are_textrank_its_rank_and_the_position_and_the_scorer_adds_them(encoder_dir):
    from bertkit.apps.extractive import sentence_features
    from bertkit.apps.summarize import textrank_scores

    article = ["the council approved the new budget for schools.", "the budget adds money for schools and roads.",
               "a dog was seen in the park.", "schools will get the money next year, the council said.",
               "weather stayed dry."]
    f = sentence_features(article)
    np.testing.assert_allclose(f[:, 0], textrank_scores(article) * 5, rtol=1e-5)
    # Luhn: each content word's count in the text ("schools" 3; "council", "budget", "money" 2; the rest 1; "the",
    # "for", "will", "get", "next", ... are stop words), summed per sentence
    luhn = np.array([2 + 1 + 1 + 2 + 3, 2 + 1 + 2 + 3 + 1, 1 + 1 + 1, 3 + 2 + 1 + 2 + 1, 1 + 1 + 1]) / 3
    np.testing.assert_allclose(f[:, 2], luhn / luhn.mean(), rtol=1e-5)
    for score, rank in ((0, 1), (2, 3)):
        assert f[:, score].mean() == pytest.approx(1.0, abs=1e-5)
        np.testing.assert_allclose(f[:, rank], np.argsort(np.argsort(-f[:, score], kind="stable")) / 5)
    np.testing.assert_allclose(f[:, 4], np.arange(5) / 5)
    assert sentence_features(["one sentence."]).tolist() == [[1.0, 0.0, 1.0, 0.0, 0.0]]
    scorer = ExtractiveScorer.from_pretrained(encoder_dir, ExtractiveConfig(layers=0, max_length=64,
                                                                            graph_features=True)).eval()
    batch = scorer.batch([article, article[:2]])
    assert batch["sentence_features"].shape == (2, 5, 5)
    with torch.no_grad():
        logits = scorer(**batch)
        vectors = scorer.sentence_vectors(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"],
                                          batch["sentence_index"])
        for s in range(5):
            x = scorer.norm(vectors[0, s] + scorer.position.weight[s] + scorer.features(torch.from_numpy(f[s])))
            assert float(scorer.scorer(x)) == pytest.approx(float(logits[0, s]), abs=1e-4)
        with pytest.raises(ValueError, match="reads graph features"):
            scorer.head(vectors, batch["sentence_mask"])


def test_cli_trains_a_scorer_and_summarizes_with_it(encoder_dir, tmp_path, capsys):
    from bertkit.cli import main

    write(tmp_path / "train.jsonl", articles(48, 3))
    held = articles(6, 4)
    (tmp_path / "in.jsonl").write_text("\n".join(json.dumps({"sentences": a["sentences"]}) for a in held) + "\n")
    assert main(["summarize-train", "--model", str(encoder_dir), "--train", str(tmp_path / "train.jsonl"), "--out",
                 str(tmp_path / "scorer"), "--label-k", "2", "--epochs", "10", "--batch-size", "8", "--layers", "0",
                 "--max-length", "64", "--max-sentence-pieces", "30", "--lr", "3e-3", "--threads", "1",
                 "--targets", "rouge"]) == 0
    assert json.loads((tmp_path / "scorer" / "extractive_train_config.json").read_text())["targets"] == "rouge"
    assert main(["summarize", "--model", str(tmp_path / "scorer"), "--method", "trained", "--k", "2", "--input",
                 str(tmp_path / "in.jsonl"), "--output", str(tmp_path / "out.jsonl")]) == 0
    out = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert sum(o["summary_sentences"] == a["gold"] for o, a in zip(out, held)) >= 3
    # a model that is no trained scorer, and a training file without references, are named
    assert main(["summarize", "--model", str(encoder_dir), "--method", "trained", "--input", str(tmp_path / "in.jsonl"),
                 "--output", str(tmp_path / "o2.jsonl")]) == 2
    assert "extractive_config.json" in capsys.readouterr().err
    assert main(["summarize-train", "--model", str(encoder_dir), "--train", str(tmp_path / "in.jsonl"), "--out",
                 str(tmp_path / "s2")]) == 2
    assert "in.jsonl: line 1: needs a field 'reference'" in capsys.readouterr().err
    assert not (tmp_path / "s2").exists()


def test_an_encoder_with_one_segment_gets_segment_ids_of_zero(tok, tmp_path):
    torch.manual_seed(0)
    cfg = BertConfig.named("tiny", max_position_embeddings=128, num_hidden_layers=1, vocab_size=tok.vocab_size,
                           type_vocab_size=1)
    BertModel(cfg).save_pretrained(tmp_path / "enc", tokenizer=tok)
    scorer = ExtractiveScorer.from_pretrained(tmp_path / "enc")
    (_, types, starts), = scorer.windows(["one sentence.", "two sentences here.", "three."])
    assert len(starts) == 3 and set(types) == {0}
    assert scorer.scores([["one sentence.", "two sentences here.", "three."]])[0].shape == (3,)


def test_the_new_layers_can_learn_faster_than_the_encoder(encoder_dir):
    from bertkit.train.optim import adamw

    scorer = ExtractiveScorer.from_pretrained(encoder_dir, ExtractiveConfig(layers=1, max_length=64))
    scorer.head_lr_scale = 20.0
    opt = adamw(scorer, 5e-5)
    rate = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    assert all(rate[id(p)] == pytest.approx(5e-5) for p in scorer.encoder.parameters())
    assert all(rate[id(p)] == pytest.approx(1e-3) for n, p in scorer.named_parameters() if not n.startswith("encoder."))
    plain = adamw(scorer.encoder, 5e-5)  # a model without lr_multiplier: the two decay groups, one rate
    assert len(plain.param_groups) == 2 and {g["lr"] for g in plain.param_groups} == {5e-5}


def test_rouge_targets_rank_the_reference_sentences_by_the_share_of_it_they_carry(tmp_path):
    """--targets rouge: each sentence's ROUGE-2 recall against the reference over the article's best; the oracle's
    set labels give a long and a short summary sentence the same 1."""
    from bertkit.train.extractive import ExtractiveTask, read_articles

    sentences = ["the council approved a new budget for the schools of the city on monday.", "it rained.",
                 "schools will get the money next year.", "a dog was seen in the park."]
    reference = "the council approved a new budget for the schools of the city on monday. schools will get the money"
    (tmp_path / "a.jsonl").write_text(json.dumps({"sentences": sentences, "reference": reference}) + "\n" +
                                      json.dumps({"sentences": sentences, "labels": [1]}) + "\n")
    oracle, marked = read_articles(str(tmp_path / "a.jsonl"), 2, "rouge-score")
    assert oracle.labels == [0, 2] and oracle.targets is None
    soft, marked = read_articles(str(tmp_path / "a.jsonl"), 2, "rouge-score", targets="rouge")
    # the reference's bigrams: 13 of its first sentence, 4 of its second, "monday schools": sentence 0 carries 13,
    # sentence 2 the 4 of "schools will get the money" ("money next", "next year" are not in it), the others none
    assert soft.targets == pytest.approx([1.0, 0.0, 4 / 13, 0.0])
    assert marked.targets is None and marked.labels == [1]  # people's marks stay 1s

    class Frozen:  # what ExtractiveTask reads of a scorer whose vectors are not cached
        encoder_frozen = False

        @staticmethod
        def batch(articles):
            n = max(len(a) for a in articles)
            return {"sentence_mask": torch.tensor([[i < len(a) for i in range(n)] for a in articles])}

    task = ExtractiveTask(Frozen(), [soft, marked], 2, 0, None, 3, "rouge-score")
    labels = task.collate([0, 1])["labels"]
    assert labels[0].tolist() == pytest.approx([1.0, 0.0, 4 / 13, 0.0]) and labels[1].tolist() == [0, 1, 0, 0]


def test_rouge_targets_do_not_run_the_greedy_oracle(tmp_path, monkeypatch):
    """--targets rouge reads no oracle labels (they were computed for every article and only counted)."""
    import bertkit.apps.summarize as summarize
    from bertkit.train.extractive import read_articles

    def refuse(*a, **kw):
        raise AssertionError("the oracle ran")

    monkeypatch.setattr(summarize, "oracle", refuse)
    (tmp_path / "a.jsonl").write_text(json.dumps({"sentences": ["the budget passed.", "it rained."],
                                                  "reference": "the budget passed on monday."}) + "\n")
    (article,) = read_articles(str(tmp_path / "a.jsonl"), 1, "rouge-score", targets="rouge")
    assert article.labels == [] and article.targets == pytest.approx([1.0, 0.0])
