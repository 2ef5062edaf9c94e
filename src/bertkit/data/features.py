"""Examples -> model features, and model outputs -> answers in the original text. Each task family's encoding and
its inverse live side by side, so that what training saw and what prediction returns cannot drift apart.

Span QA (SQuAD, KorQuAD), as Google's `run_squad.py` does it:
- the question is cut to `max_query_length` tokens; the context is tokenised once, with character offsets;
- windows: the family's pair template around the question and a window of the context (BERT's
  `[CLS] question [SEP] context [SEP]`, RoBERTa's `<s> question </s></s> context </s>`), each at most
  `max_length` tokens. **`doc_stride` is the step** between the first context tokens of two consecutive
  windows (Google's meaning; Hugging Face's fast tokenizers call the *overlap* `stride`: overlap = window
  length - doc_stride);
- a token seen by several windows is scored only in the window where it has the most context on both sides
  (`max_context`), and an answer may only start at such a token;
- training targets: the answer's first and last tokens when the whole answer lies in the window, else
  the first token (`[CLS]`, `<s>`: index 0), as for unanswerable SQuAD 2.0 questions;
- decoding: the `n_best` highest start and end logits of each window, every pair with start <= end and at most
  `max_answer_length` tokens, scored by the sum of the two logits; the best over all windows wins and is
  mapped back to the characters of the context. SQuAD 2.0: the null score is the lowest `[CLS]` start + end over
  the windows, and the answer is empty when null score - best span score > `null_threshold`.

Token tagging (CoNLL-2003 words, KLUE-NER characters): the text is tokenised with offsets; the label of a word
goes on the token where the word starts, other tokens get -100 (ignored). A prediction goes back to every word
that starts a token; a word inside a token (a KLUE-NER character in the middle of a WordPiece) takes the entity of
the token it lies in, as an I- tag (O stays O); a word no token covers (a space) is inside an entity when the
entity goes on after it. Sentences longer than the model window are cut into overlapping
windows, and each word is read from the window where it has the most context.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from bertkit.data.tasks import QAExample, TagExample
from bertkit.tokenizer import Tokenizer

IGNORE = -100


def framed(tokenizer: Tokenizer, a: Sequence[int], b: Sequence[int] | None = None
           ) -> tuple[list[int], list[int], list[int | None]]:
    """The family's template around pieces `a` (and `b`): (ids, segment ids, source), where `source[i]` is the
    index in `a + b` of the piece at position i, None where the template put a special token. Placeholders go
    through `build_inputs`, so the layout is the tokenizer's own whatever its template."""
    n = len(a)
    ids, types = tokenizer.build_inputs([-1 - i for i in range(n)],
                                        None if b is None else [-1 - n - j for j in range(len(b))])
    pieces = list(a) + list(b or ())
    source = [-1 - t if t < 0 else None for t in ids]
    return [t if k is None else pieces[k] for t, k in zip(ids, source)], types, source


def windows(n: int, room: int, step: int, align_end: bool = False) -> list[tuple[int, int]]:
    """(start, length) of the windows of at most `room` pieces, `step` apart, that read `n` pieces: QA contexts,
    tagged sentences, texts classified in windows and the service's token budget all cut them here. When the
    steps do not land on the end, one more window reaches it: `step` further, or with `align_end` the last
    `room` pieces (so that every window is full). A step longer than a window is cut to the window (as Google's
    `run_squad.py` does), so that no piece falls between two windows."""
    step = max(1, min(step, room))
    starts = list(range(0, max(n - room, 0) + 1, step))
    if starts[-1] + room < n:
        starts.append(n - room if align_end else starts[-1] + step)
    return [(b, min(room, n - b)) for b in starts]


# ---- span question answering -------------------------------------------------------------------------------------
@dataclass
class QAFeature:
    example: int  # index into the examples list
    input_ids: list[int]
    token_type_ids: list[int]
    offsets: list[tuple[int, int] | None]  # character span in the context for context tokens, None otherwise
    max_context: list[bool]  # True where this window is the best one for the token
    start_position: int = 0  # training target; 0 ([CLS]) when the answer is not (wholly) in this window
    end_position: int = 0


@dataclass
class QASettings:
    max_length: int = 384
    doc_stride: int = 128  # the step between windows (see the module docstring)
    max_query_length: int = 64
    n_best: int = 20
    max_answer_length: int = 30  # in tokens
    null_threshold: float = 0.0  # SQuAD 2.0: answer "" when null score - best span score > this


def qa_features(tokenizer: Tokenizer, examples: Sequence[QAExample], settings: QASettings = QASettings(),
                train: bool = False) -> list[QAFeature]:
    """Windows over every example's context (see the module docstring)."""
    s = settings
    questions = tokenizer.encode_batch([e.question for e in examples], add_special_tokens=False)
    contexts = tokenizer.encode_batch([e.context for e in examples], add_special_tokens=False)
    features = []
    for n, (ex, q, c) in enumerate(zip(examples, questions, contexts)):
        q_ids = q.ids[: s.max_query_length]
        room = s.max_length - len(q_ids) - tokenizer.num_special_tokens(pair=True)
        if room < 1:
            raise ValueError(f"max_length {s.max_length} leaves no room for the context after a "
                             f"{len(q_ids)}-token question")
        c_ids, c_off = c.ids, c.offsets
        spans = windows(len(c_ids), room, s.doc_stride)
        answer = _answer_tokens(ex, c_off) if train else None
        nq = len(q_ids)
        for b, length in spans:
            ids, types, source = framed(tokenizer, q_ids, c_ids[b:b + length])
            context = [None if k is None or k < nq else b + k - nq for k in source]  # context piece at each position
            offsets = [None if p is None else tuple(c_off[p]) for p in context]
            best = [p is not None and _is_max_context(spans, (b, length), p) for p in context]
            feature = QAFeature(n, ids, types, offsets, best)
            if answer is not None and answer[0] >= b and answer[1] < b + length:
                first = context.index(b)  # where the window's first context piece sits in the template
                feature.start_position = answer[0] - b + first
                feature.end_position = answer[1] - b + first
            features.append(feature)
    return features


def _answer_tokens(ex: QAExample, offsets) -> tuple[int, int] | None:
    """First and last context tokens of the (first) answer; None for unanswerable questions."""
    if ex.is_impossible or not ex.answers:
        return None
    text, start = ex.answers[0]
    end = start + len(text)
    first = next((i for i, (a, b) in enumerate(offsets) if b > start), None)
    last = next((i for i in range(len(offsets) - 1, -1, -1) if offsets[i][0] < end), None)
    if first is None or last is None or last < first:
        return None  # the answer is whitespace only, or lies in characters the tokenizer drops
    return first, last


def _is_max_context(spans: list[tuple[int, int]], span: tuple[int, int], position: int) -> bool:
    """Google's rule: a token's context in a window is min(tokens left, tokens right) + 0.01 * window length;
    it belongs to the window where that is largest (the first such window on ties)."""
    best, best_score = None, None
    for b, length in spans:
        if not b <= position < b + length:
            continue
        score = min(position - b, b + length - 1 - position) + 0.01 * length
        if best_score is None or score > best_score:
            best, best_score = (b, length), score
    return best == span


@dataclass
class Answer:
    text: str
    start: int  # characters in the context
    end: int
    score: float  # start + end logit; for an empty answer the null score
    null_score: float | None = None
    candidates: list[tuple[str, int, int, float]] = field(default_factory=list)  # the n-best, best first


def qa_decode(example: QAExample, features: Sequence[QAFeature], start_logits: Sequence[np.ndarray],
              end_logits: Sequence[np.ndarray], settings: QASettings = QASettings(),
              allow_empty: bool = False) -> Answer:
    """The best answer to one example over all its windows (see the module docstring)."""
    s = settings
    found: dict[tuple[int, int], float] = {}
    null = None
    for f, st, en in zip(features, start_logits, end_logits):
        st, en = np.asarray(st, dtype=np.float64), np.asarray(en, dtype=np.float64)
        null = st[0] + en[0] if null is None else min(null, st[0] + en[0])
        n = len(f.input_ids)
        for i in np.argsort(-st[:n])[: s.n_best]:
            if f.offsets[i] is None or not f.max_context[i]:
                continue
            for j in np.argsort(-en[:n])[: s.n_best]:
                if f.offsets[j] is None or j < i or j - i + 1 > s.max_answer_length:
                    continue
                span = (f.offsets[i][0], f.offsets[j][1])
                score = float(st[i] + en[j])
                if score > found.get(span, -np.inf):
                    found[span] = score
    ranked = sorted(found.items(), key=lambda kv: -kv[1])[: s.n_best]
    candidates = [(example.context[a:b], a, b, score) for (a, b), score in ranked]
    if not candidates:
        return Answer("", 0, 0, float(null if null is not None else 0.0), null, [])
    text, a, b, score = candidates[0]
    if allow_empty and null is not None and null - score > s.null_threshold:
        return Answer("", 0, 0, float(null), float(null), candidates)
    return Answer(text, a, b, score, None if null is None else float(null), candidates)


def group_by_example(features) -> dict[int, list[int]]:
    """example index -> the indices of its features (windows), in order."""
    grouped: dict[int, list[int]] = {}
    for i, f in enumerate(features):
        grouped.setdefault(f.example, []).append(i)
    return grouped


# ---- token tagging -------------------------------------------------------------------------------------------------
@dataclass
class TagFeature:
    example: int
    input_ids: list[int]
    token_type_ids: list[int]
    labels: list[int]  # label id on the token where a word starts, IGNORE elsewhere
    token_words: list[int | None]  # the word a token starts, or None (specials, continuation pieces)
    best_words: set[int]  # words whose prediction is read from this window
    inside: dict[int, int]  # word -> the word whose token it lies in, for words that start no token


def word_spans(example: TagExample) -> tuple[str, list[tuple[int, int]]]:
    """The text and each word's character span: KLUE-NER's words are the characters of its text; CoNLL words are
    joined by single spaces."""
    if example.text is not None:
        return example.text, [(i, i + 1) for i in range(len(example.text))]
    spans, pos = [], 0
    for w in example.words:
        spans.append((pos, pos + len(w)))
        pos += len(w) + 1
    return " ".join(example.words), spans


def tag_features(tokenizer: Tokenizer, examples: Sequence[TagExample], label_ids: dict[str, int],
                 max_length: int = 128, train: bool = True) -> list[TagFeature]:
    texts_spans = [word_spans(e) for e in examples]
    encodings = tokenizer.encode_batch([t for t, _ in texts_spans], add_special_tokens=False)
    room = max_length - tokenizer.num_special_tokens()
    step = max(room // 2, 1)
    features = []
    for n, (ex, (text, spans), enc) in enumerate(zip(examples, texts_spans, encodings)):
        word_at = np.full(len(text) + 1, -1)
        for w, (a, b) in enumerate(spans):
            word_at[a:b] = w
        token_words: list[int | None] = []
        inside: dict[int, int] = {}
        labelled = set()  # a word gets its label on its first token only
        for a, b in enc.offsets:
            w = int(word_at[a])
            first = w >= 0 and w not in labelled
            token_words.append(w if first else None)
            if first:
                labelled.add(w)
                for c in range(a + 1, b):  # further words covered by this token (KLUE characters)
                    if word_at[c] >= 0 and word_at[c] != w:
                        inside.setdefault(int(word_at[c]), w)
        ids = enc.ids
        bounds = windows(len(ids), room, step)
        for b, length in bounds:
            words = token_words[b:b + length]
            best = {w for i, w in enumerate(words) if w is not None and _is_max_context(bounds, (b, length), b + i)}
            row, types, source = framed(tokenizer, ids[b:b + length])
            at = [None if k is None else words[k] for k in source]  # the word each position starts
            labels = [label_ids.get(ex.tags[w], IGNORE) if (w is not None and train) else IGNORE for w in at]
            features.append(TagFeature(n, row, types, labels, at, best, inside))
    return features


def tag_decode(example: TagExample, features: Sequence[TagFeature], predictions: Sequence[Sequence[int]],
               id2label: dict[int, str]) -> list[str]:
    """One tag per word of `example` from the windows' predicted label ids (see the module docstring)."""
    tags = ["O"] * len(example.words)
    for f, pred in zip(features, predictions):
        for i, w in enumerate(f.token_words):
            if w is not None and w in f.best_words:
                tags[w] = id2label[int(pred[i])]
    covered = set(features[0].inside) if features else set()
    for f in features:
        covered.update(w for w in f.token_words if w is not None)
    for w, owner in (features[0].inside.items() if features else ()):
        tags[w] = "O" if tags[owner] == "O" else "I-" + tags[owner][2:]
    # Words no token covers (KLUE-NER's spaces): inside an entity when the entity goes on after them.
    for w in range(1, len(tags) - 1):
        if w not in covered and tags[w - 1] != "O" and tags[w + 1] == "I-" + tags[w - 1][2:]:
            tags[w] = tags[w + 1]
    return tags
