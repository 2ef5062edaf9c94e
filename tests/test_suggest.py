"""Word suggestions: the beam equals exhaustive search on a small vocabulary, word scores are PLL-word-l2r computed
by hand, masks are filled jointly best-first, and bad input is named."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from bertkit import BertConfig, BertForMaskedLM, Tokenizer
from bertkit.apps.suggest import SuggestSettings, Suggester
from bertkit.infer.predictor import Predictor

WORDS = ["the", "cat", "sat", "on", "mat", "dog", "play", "ran", "a", "big", ".", ","]
PIECES = ["##s", "##ing", "##ed", "##er", "##y"]
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS + PIECES + ["playing"]


@pytest.fixture(scope="module")
def predictor():
    tok = Tokenizer.from_vocab(VOCAB)
    torch.manual_seed(0)
    # weights 10x BERT's initial spread: the predictions depend on the context (at 0.02 they barely do, and the
    # order in which masks are filled would not show)
    cfg = BertConfig.named("tiny", vocab_size=len(VOCAB), max_position_embeddings=64, initializer_range=0.2)
    model = BertForMaskedLM(cfg).eval()
    with torch.no_grad():
        # "play ##ing" likely, so that the exhaustive test sees the non-canonical spelling of "playing" dropped
        model.cls.predictions.bias[VOCAB.index("play")] = 12.0
        model.cls.predictions.bias[VOCAB.index("##ing")] = 12.0
    return Predictor(model, tok)


def log_probs(predictor, ids: list[int]) -> torch.Tensor:
    """(masks, V) log-softmax at the masks of `ids` (pieces without specials), computed directly."""
    tok = predictor.tok
    full, types = tok.build_inputs(ids)
    with torch.no_grad():
        out = predictor.model(torch.tensor([full]), torch.ones(1, len(full), dtype=torch.long),
                              torch.tensor([types]))
    where = [i for i, t in enumerate(full) if t == tok.mask_id]
    return out.logits[0, where].float().log_softmax(-1)


def l2r(predictor, ids: list[int], pos: int, word: list[int]) -> float:
    """PLL-word-l2r of `word` in the mask at `pos` of `ids`, by hand."""
    mask, total = predictor.tok.mask_id, 0.0
    before = sum(1 for t in ids[:pos] if t == mask)
    for j, piece in enumerate(word):
        row = ids[:pos] + word[:j] + [mask] * (len(word) - j) + ids[pos + 1:]
        total += float(log_probs(predictor, row)[before, piece])
    return total


def canonical_words(tok, max_pieces: int) -> list[list[int]]:
    starts = [tok.vocab[w] for w in WORDS + ["playing"] if any(ch.isalnum() for ch in w)]  # "." is no word
    conts = [tok.vocab[p] for p in PIECES]
    out = []
    for n in range(1, max_pieces + 1):
        for first in starts:
            for rest in itertools.product(conts, repeat=n - 1):
                word = [first, *rest]
                if tok.piece_ids(tok.decode(word)) == word:
                    out.append(word)
    return out


def test_masked_log_probs_of_a_batch_are_each_rows_own(predictor):
    """The MLM head runs once over every mask of a batch: rows with different numbers of masks and lengths get
    their own masks' log-probabilities, in order."""
    m, v = predictor.tok.mask_id, predictor.tok.vocab
    rows = [[v["the"], m, v["sat"]], [m, m, v["on"], v["a"], m], [v["dog"], m, m, v["."]]]
    batched = predictor.masked_log_probs([predictor.tok.build_inputs(r) for r in rows], lambda lp: lp.clone(),
                                         "test-batch")
    for r, got in zip(rows, batched):
        assert torch.allclose(got, log_probs(predictor, r), atol=1e-5)


def test_beam_as_wide_as_the_vocabulary_equals_exhaustive_search(predictor):
    """Every canonical word of one or two pieces scored by hand; the suggester's list is their top, in order."""
    tok = predictor.tok
    text = "the cat [MASK] on the mat ."
    ids = tok.piece_ids(text)
    pos = ids.index(tok.mask_id)
    words = canonical_words(tok, 2)
    assert [tok.vocab["play"], tok.vocab["##ing"]] not in words  # "playing" is one piece in this vocabulary
    by_hand = sorted(((l2r(predictor, ids, pos, w), tok.decode(w)) for w in words), reverse=True)
    spelt = l2r(predictor, ids, pos, [tok.vocab["play"], tok.vocab["##ing"]])
    assert spelt > by_hand[7][0]  # the beam would list it among the top 8 if it kept it
    got = Suggester(predictor, SuggestSettings(max_pieces=2, beam=len(VOCAB), top_k=8)).suggest(text)
    assert [s["words"][0] for s in got["suggestions"]] == [w for _, w in by_hand[:8]]
    for s, (score, _) in zip(got["suggestions"], by_hand):
        assert s["score"] == pytest.approx(score, abs=1e-3)
        assert s["text"] == text.replace("[MASK]", s["words"][0])


def test_a_narrow_beam_keeps_the_best_words_of_each_length(predictor):
    tok = predictor.tok
    text = "a big [MASK] ran ."
    wide = Suggester(predictor, SuggestSettings(max_pieces=3, beam=len(VOCAB), top_k=3)).suggest(text)
    narrow = Suggester(predictor, SuggestSettings(max_pieces=3, beam=4, top_k=3)).suggest(text)
    # the top of a beam of 4 can only miss words whose prefix fell out: the best words agree here
    assert narrow["suggestions"][0]["words"] == wide["suggestions"][0]["words"]
    assert all(tok.piece_ids(s["words"][0]) for s in narrow["suggestions"])


def joint_by_hand(predictor, text: str) -> tuple[tuple[int, int], list]:
    """(the order the two masks are filled in, every pair of pieces scored that way), best first."""
    tok = predictor.tok
    ids = tok.piece_ids(text)
    first, second = [i for i, t in enumerate(ids) if t == tok.mask_id]
    allowed = [i for i in range(len(VOCAB)) if i not in tok.special_ids()]
    both = log_probs(predictor, ids)
    order = (0, 1) if both[0, allowed].max() >= both[1, allowed].max() else (1, 0)
    slot_a, slot_b = (first, second) if order == (0, 1) else (second, first)
    pairs = []
    for a in allowed:
        filled = list(ids)
        filled[slot_a] = a
        rest = log_probs(predictor, filled)[0]
        for b in allowed:
            words = {slot_a: a, slot_b: b}
            pairs.append((float(both[order[0], a]) + float(rest[b]), (words[first], words[second])))
    return order, sorted(pairs, reverse=True)


def test_two_piece_masks_are_filled_jointly_best_first(predictor):
    """whole_words=False: one piece per mask; the mask whose best piece is likeliest is filled first, then the
    other with it in place: every pair scored that way by hand, the top pairs match, in both orders."""
    tok = predictor.tok
    texts = ["the [MASK] sat on [MASK] mat .", "[MASK] cat [MASK] on the mat .", "a [MASK] dog [MASK] .",
             "[MASK] , [MASK] ran", "the mat [MASK] [MASK] ."]
    seen = set()
    for text in texts:
        order, pairs = joint_by_hand(predictor, text)
        if order in seen:
            continue
        seen.add(order)
        got = Suggester(predictor, SuggestSettings(whole_words=False, beam=len(VOCAB), top_k=5)).suggest(text)
        assert [tuple(tok.vocab[w] for w in s["words"]) for s in got["suggestions"]] == [p for _, p in pairs[:5]]
        assert got["suggestions"][0]["score"] == pytest.approx(pairs[0][0], abs=1e-3)
        assert sum(got["suggestions"][0]["scores"]) == pytest.approx(got["suggestions"][0]["score"], abs=1e-3)
    assert seen == {(0, 1), (1, 0)}


def test_whole_words_in_two_masks(predictor):
    got = Suggester(predictor, SuggestSettings(beam=6, top_k=4)).suggest("the [MASK] sat on the [MASK] .")
    assert len(got["suggestions"]) == 4
    scores = [s["score"] for s in got["suggestions"]]
    assert scores == sorted(scores, reverse=True)
    assert len({tuple(s["words"]) for s in got["suggestions"]}) == 4
    for s in got["suggestions"]:
        assert len(s["words"]) == 2 and "[MASK]" not in s["text"]


def test_targets_are_scored_as_words(predictor):
    tok = predictor.tok
    text = "the cat [MASK] on the mat ."
    ids = tok.piece_ids(text)
    pos = ids.index(tok.mask_id)
    got = Suggester(predictor).suggest(text, targets=["sat", "dogs", "playing", "played"], top_k=4)
    by_hand = {w: l2r(predictor, ids, pos, tok.piece_ids(w)) for w in ["sat", "dogs", "playing", "played"]}
    assert [s["words"][0] for s in got["suggestions"]] == sorted(by_hand, key=lambda w: -by_hand[w])
    for s in got["suggestions"]:
        assert s["score"] == pytest.approx(by_hand[s["words"][0]], abs=1e-3)


def test_check_word_ranks_the_original_among_the_alternatives(predictor):
    tok = predictor.tok
    text = "the cat sat on the mat ."
    sug = Suggester(predictor, SuggestSettings(max_pieces=2, beam=len(VOCAB)))
    for word in ("sat", "mat"):
        start = text.index(word)
        got = sug.check_word(text, start, start + len(word), flag_rank=3)
        masked = text[:start] + "[MASK]" + text[start + len(word):]
        ids = tok.piece_ids(masked)
        pos = ids.index(tok.mask_id)
        mine = l2r(predictor, ids, pos, tok.piece_ids(word))
        assert got["score"] == pytest.approx(mine, abs=1e-3)
        higher = sum(1 for w in canonical_words(tok, 2) if tok.decode(w) != word and l2r(predictor, ids, pos, w) > mine)
        assert got["rank"] == (higher + 1 if higher < 3 else None)
        assert got["flagged"] == (higher >= 3)
        assert got["word"] == word and word not in [s["word"] for s in got["suggestions"]]


@pytest.mark.parametrize("call, message", [
    (lambda s: s.suggest("no mask here"), "text: no \\[MASK\\] token to fill"),
    (lambda s: s.suggest("   "), "text: empty text"),
    (lambda s: s.suggest(" ".join(["[MASK]"] * 6)), "text: 6 \\[MASK\\] tokens; at most 5"),
    (lambda s: s.suggest("the [MASK] .", targets=[]), "targets: expected a non-empty list"),
    (lambda s: s.suggest("the [MASK] .", targets=["cat", ""]), "targets\\[1\\]: expected a word"),
    (lambda s: s.check_word("the cat sat", 4, 4), "selects no word"),
    (lambda s: s.check_word("the cat sat", 4, 99), "end: expected a character offset between 0 and 11"),
    (lambda s: s.check_word("the [MASK] sat", 0, 3), "has a \\[MASK\\] token already"),
    (lambda s: s.suggest("[MASK] " + "the " * 70 + "[MASK]"), "pieces apart; the model reads"),
])
def test_bad_input_is_named(predictor, call, message):
    with pytest.raises(ValueError, match=message):
        call(Suggester(predictor))


def test_a_text_longer_than_the_window_is_read_around_its_masks(predictor):
    text = "the cat " * 100 + "[MASK] on the mat ." + " the dog" * 100
    got = Suggester(predictor, SuggestSettings(top_k=2)).suggest(text)
    assert len(got["suggestions"]) == 2 and got["suggestions"][0]["text"].count("the cat") == 100


def test_settings_are_checked(predictor):
    with pytest.raises(ValueError, match="beam: expected an integer between 1 and 64"):
        Suggester(predictor, SuggestSettings(beam=0))
    assert math.isfinite(Suggester(predictor).suggest("the [MASK] .")["suggestions"][0]["score"])


# ---- the CLI and the HTTP service ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def saved(predictor, tmp_path_factory):
    path = tmp_path_factory.mktemp("mlm") / "model"
    predictor.model.save_pretrained(path, tokenizer=predictor.tok)
    return path


def test_cli_suggests_and_checks_words_line_by_line(saved, tmp_path):
    import json

    from bertkit.cli import main

    lines = [{"text": "the cat [MASK] on the mat .", "id": 7}, {"text": "the cat sat on the mat .", "start": 8,
                                                                 "end": 11},
             {"text": "the [MASK] sat on the [MASK] .", "targets": ["dog", "cats"]}]
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
    assert main(["suggest", "--model", str(saved), "--input", str(src), "--output", str(tmp_path / "out.jsonl"),
                 "--top-k", "3", "--max-pieces", "2"]) == 0
    out = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    p = Predictor.from_pretrained(saved)
    sug = Suggester(p, SuggestSettings(top_k=3, max_pieces=2))
    assert out[0] == {**lines[0], **sug.suggest(lines[0]["text"])}
    assert out[1] == {**lines[1], **sug.check_word(lines[1]["text"], 8, 11)} and out[1]["word"] == "sat"
    assert out[2] == {**lines[2], **sug.suggest(lines[2]["text"], targets=["dog", "cats"])}
    assert len(out[2]["suggestions"]) == 3 and all(set(s["words"]) <= {"dog", "cats"} for s in out[2]["suggestions"])


@pytest.mark.parametrize("line, message", [
    ('{"text": "no mask"}', "in.jsonl: line 1: text: no \\[MASK\\] token to fill"),
    ('["a list"]', "in.jsonl: line 1: expected a JSON object with a field 'text'"),
    ('{"text": "the cat sat", "start": 3}', "in.jsonl: line 1: end: expected a character offset"),
    ('{"text": "[MASK] .", "top_k": 0}', "in.jsonl: line 1: top_k: expected an integer between 1 and 100"),
    ('{"text": "a [MASK]"', "in.jsonl: line 1: not a JSON object"),
])
def test_cli_names_the_bad_line_and_writes_nothing(saved, tmp_path, capsys, line, message):
    import re

    from bertkit.cli import main

    (tmp_path / "in.jsonl").write_text(line + "\n")
    assert main(["suggest", "--model", str(saved), "--input", str(tmp_path / "in.jsonl"), "--output",
                 str(tmp_path / "out.jsonl")]) == 2
    assert re.search(message, capsys.readouterr().err) and not (tmp_path / "out.jsonl").exists()


@pytest.fixture(scope="module")
def server(saved):
    pytest.importorskip("uvicorn")
    from bertkit.serve.app import ServeSettings, create_app
    from test_serve import Server

    s = Server(create_app({"mlm": Predictor.from_pretrained(saved)}, ServeSettings(max_tokens=4096)))
    yield s
    s.stop()


def test_http_suggest_answers_as_the_library_does(server, saved):
    p = Predictor.from_pretrained(saved)
    sug = Suggester(p)
    status, out, _ = server.post("/v1/suggest", {"text": "the cat [MASK] on the mat .", "top_k": 4})
    assert status == 200 and out == sug.suggest("the cat [MASK] on the mat .", top_k=4)
    status, out, _ = server.post("/v1/suggest", {"text": "the cat sat on the mat .", "start": 4, "end": 7,
                                                 "flag_rank": 2})
    assert status == 200 and out == sug.check_word("the cat sat on the mat .", 4, 7, flag_rank=2)
    status, out, _ = server.post("/v1/suggest", {"text": "the [MASK] sat .", "targets": ["dog", "mat"]})
    assert status == 200 and [s["words"] for s in out["suggestions"]] in ([["dog"], ["mat"]], [["mat"], ["dog"]])


@pytest.mark.parametrize("body, status, message", [
    ({"text": "no mask here"}, 400, "text: no \\[MASK\\] token to fill"),
    ({"text": " ".join(["[MASK]"] * 6)}, 400, "text: 6 \\[MASK\\] tokens; at most 5"),
    ({"texts": ["a [MASK]"]}, 400, "text: expected a string"),
    ({"text": ""}, 400, "text: empty text"),
    ({"text": "a [MASK] .", "top_k": "5"}, 400, "top_k: expected an integer between 1 and 100"),
    ({"text": "a cat", "start": 2, "end": 99}, 400, "end: expected a character offset between 0 and 5"),
    ({"text": "a [MASK] .", "targets": "cat"}, 400, "targets: expected a non-empty list of words"),
    # five masks and a long context: every row the search reads is charged
    ({"text": "the cat sat " * 30 + "[MASK] " * 5, "top_k": 100}, 413, "model rows of up to"),
])
def test_http_suggest_bad_input_is_a_4xx_naming_the_field(server, body, status, message):
    import re

    got, out, _ = server.post("/v1/suggest", body)
    assert got == status and re.search(message, out["error"]), out


@pytest.mark.parametrize("item", [
    {"text": "the cat [MASK] on the mat ."},
    {"text": "the [MASK] sat on the [MASK] .", "top_k": 7},
    {"text": "[MASK] [MASK] [MASK] dog ."},
    {"text": "the [MASK] sat .", "targets": ["cat", "dogs", "playing"]},
    {"text": "the cat sat on the mat .", "start": 8, "end": 11, "flag_rank": 12},
])
def test_the_admission_charge_bounds_the_rows_the_search_reads(predictor, item):
    """`plan` is what the HTTP service charges before running: it must never be below what `answer` reads."""
    sug = Suggester(predictor, SuggestSettings(max_pieces=3))
    rows_bound, width = sug.plan(item)
    seen = []
    real = predictor.masked_log_probs

    def counting(rows, *args, **kw):
        seen.extend(len(r[0]) for r in rows)
        return real(rows, *args, **kw)

    predictor.masked_log_probs = counting
    try:
        sug.answer(item)
    finally:
        del predictor.masked_log_probs
    assert 0 < len(seen) <= rows_bound and max(seen) <= width
