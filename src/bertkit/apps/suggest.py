"""Word suggestions from a masked LM: whole words for each `[MASK]`, several masks jointly, and "is there a better
word here?" for a word the user selects.

A mask stands for one word (an English word, a Korean eojeol: what the tokenizer's pre-tokenizer calls a word;
it has a letter or a digit, so punctuation is never suggested for one), which may take several pieces. For each length n = 1 .. `max_pieces` the mask becomes n mask tokens and the
pieces are chosen left to right by beam search, a word-start piece first and continuation pieces after it (WordPiece
`##`, BPE without `Ġ`). A word's score is the sum of the log-probabilities of its pieces, each read with the
pieces to its right still masked: Kauf & Ivanova's (2023) PLL-word-l2r, which compares words of different lengths
without the inflation that scoring each piece with its neighbours visible gives multi-piece words. A candidate
whose pieces are not the tokenizer's own segmentation of its text (`play ##ing` where the vocabulary has
`playing`) is dropped: the same word would otherwise be counted twice.

Several masks are filled jointly and best-first: of the masks left, the one whose best word-start piece is most
likely is filled next, with the others still masked; hypotheses (a word per filled mask, the sum of their scores)
are kept by beam. `targets` restricts every mask to the given words (each scored the same way).
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

TARGET_PIECES = 8  # a target word may take this many pieces (generation stops at `max_pieces`)


@dataclass(frozen=True)
class SuggestSettings:
    top_k: int = 5  # suggestions returned
    whole_words: bool = True  # a mask stands for a word; False: for one piece (the classic fill-mask, jointly)
    max_pieces: int = 3  # the longest word generated, in pieces
    beam: int = 5  # partial words kept per length, and joint hypotheses kept per step (at least top_k)
    max_masks: int = 5  # masks allowed in one text

    def check(self) -> None:
        for name, low, high in (("top_k", 1, 100), ("max_pieces", 1, 8), ("beam", 1, 64), ("max_masks", 1, 20)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
                raise ValueError(f"{name}: expected an integer between {low} and {high}, got {value!r}")


@dataclass
class _Hypothesis:
    ids: list[int]  # the text's pieces without specials; unfilled masks are one mask token each
    open: list[int]  # positions of the masks still to fill, in text order
    slots: list[int]  # position of each mask in text order (filled or not), kept up to date
    words: list[list[int] | None]  # the pieces chosen for each mask in text order
    scores: list[float | None]
    score: float = 0.0


class Suggester:
    """Suggestions from a fill-mask `Predictor` (a masked-LM head)."""

    def __init__(self, predictor, settings: SuggestSettings = SuggestSettings()):
        predictor._require("fill_mask", "word suggestions (they need an MLM head)")
        settings.check()
        self.p, self.tok, self.settings = predictor, predictor.tok, settings
        self.mask = self.tok.mask_id
        specials = self.tok.added_token_mask()
        continues = self.tok.continuation_mask() if settings.whole_words else np.zeros_like(specials)
        if settings.whole_words:  # a word has a letter or a digit: punctuation pieces do not start one
            wordless = np.ones_like(specials)
            for token, i in self.tok.vocab.items():
                wordless[i] = not any(ch.isalnum() for ch in self.tok.piece_text(token))
            specials = specials | (wordless & ~continues)
        self.allowed_start = torch.from_numpy(~specials & ~continues)
        self.allowed_next = torch.from_numpy(~specials & continues)
        # byte-level BPE marks a word start by the space before it: the first word of a text has none, so there
        # a word may start with any piece
        self.first_any = settings.whole_words and self.tok.word_markers()[1] == "Ġ"
        self.allowed_first = torch.from_numpy(~specials) if self.first_any else self.allowed_start
        # the three sets as one additive mask (0 where allowed, -inf elsewhere): one add and one topk a row
        allowed = torch.stack([self.allowed_start, self.allowed_next, self.allowed_first])
        self._bias = torch.zeros(allowed.shape).masked_fill_(~allowed, -math.inf)
        self._sizes = allowed.sum(1).tolist()
        # the room a text has for its words: the window less the template's specials
        self.room = predictor.max_length - self.tok.num_special_tokens()

    _shared: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    @classmethod
    def default_for(cls, predictor) -> Suggester:
        """The default-settings suggester of `predictor`, made once (its vocabulary masks cost a pass over the
        vocabulary): what the HTTP service uses per request."""
        if predictor not in cls._shared:
            cls._shared[predictor] = cls(predictor)
        return cls._shared[predictor]

    # ---- the model -----------------------------------------------------------------------------------------------
    def _read(self, rows: list[list[int]], width: int, target_ids: tuple[int, ...] = ()) -> list:
        """For each row (pieces without specials), per mask in order: (the `width` best word-start pieces, the
        `width` best continuation pieces, the `width` best pieces that may begin a text's first word, the
        log-probabilities of `target_ids`), the first three as (ids, log-probs) lists."""
        targets = torch.tensor(target_ids, dtype=torch.long)

        k = min(width, max(self._sizes))
        sizes = [min(width, n) for n in self._sizes]  # a set smaller than the width gives all it has

        def reduce(lp):  # (masks, vocab) -> per mask: best of each set, then the targets
            values, ids = (lp[:, None, :] + self._bias).topk(k, dim=-1)  # (masks, 3, k)
            values, ids = values.tolist(), ids.tolist()
            chosen = lp[:, targets].tolist() if len(targets) else [[] for _ in values]
            return [(*((i[:n], v[:n]) for i, v, n in zip(ids[m], values[m], sizes)), chosen[m])
                    for m in range(len(values))]

        inputs = [self.tok.build_inputs(r) for r in rows]
        return self.p.masked_log_probs(inputs, reduce, ("suggest", width, self.settings.whole_words, target_ids))

    # ---- one mask --------------------------------------------------------------------------------------------------
    def _canonical(self, pieces: list[int], at_start: bool) -> bool:
        """Whether the tokenizer writes the word these pieces spell as exactly these pieces (a byte-level piece that
        is part of a character's UTF-8 bytes spells no word)."""
        if not self.settings.whole_words:
            return True
        text = self.tok.decode(pieces)
        if not text.strip():  # a lone word mark (`Ġ`, `▁`)
            return False
        again = self.tok.piece_ids(text)
        if not at_start and again != pieces:  # BPE marks a word start with the space before it
            again = self.tok.piece_ids(" " + text)
        return again == pieces

    def _words(self, h: _Hypothesis, slot: int, width: int) -> list[tuple[list[int], float]]:
        """The `width` best words for mask `slot` of `h` (its other open masks stay masked), best first.

        A partial word is only read further while it could still enter the list: a score only falls as pieces are
        added (log-probabilities are at most 0), so one already below the `width`-th best whole word found is
        dropped. That bound is exact (the list is what the unpruned beam gives) and skips most of the rows for
        longer words when a short word is likely."""
        pos, at_start = h.slots[slot], h.slots[slot] == 0
        here = sum(1 for q in h.open if q < pos)  # this slot's first mask, in a row's masks
        lengths = range(1, (self.settings.max_pieces if self.settings.whole_words else 1) + 1)
        partial = [(n, [], 0.0) for n in lengths if len(h.ids) + n - 1 <= self.room]
        done: list[tuple[list[int], float]] = []
        while partial:
            rows = [h.ids[:pos] + pieces + [self.mask] * (n - len(pieces)) + h.ids[pos + 1:] for n, pieces, _ in partial]
            grown: dict[int, list] = {}
            for (n, pieces, base), masks in zip(partial, self._read(rows, width)):
                ids, lps = masks[here][1] if pieces else masks[here][2 if at_start else 0]
                for t, lp in zip(ids, lps):
                    word = pieces + [t]
                    if len(word) < n:
                        grown.setdefault(n, []).append((n, word, base + lp))
                    elif self._canonical(word, at_start):
                        done.append((word, base + lp))
            done = sorted(done, key=lambda d: -d[1])[:width]
            bar = done[-1][1] if len(done) == width else -math.inf
            partial = [x for words in grown.values() for x in sorted(words, key=lambda x: -x[2])[:width]
                       if x[2] > bar]
        return done

    def _target_scores(self, h: _Hypothesis, slot: int, targets: list[list[int]]) -> list[float]:
        """Each target word's score (PLL-word-l2r) in mask `slot` of `h`."""
        pos = h.slots[slot]
        here = sum(1 for q in h.open if q < pos)
        rows, owner = [], []
        for t, pieces in enumerate(targets):
            for j in range(len(pieces)):
                rows.append(h.ids[:pos] + pieces[:j] + [self.mask] * (len(pieces) - j) + h.ids[pos + 1:])
                owner.append((t, pieces[j]))
        wanted = tuple(sorted({p for pieces in targets for p in pieces}))
        column = {p: i for i, p in enumerate(wanted)}
        out = [0.0] * len(targets)
        for (t, piece), masks in zip(owner, self._read(rows, 1, wanted)):
            out[t] += masks[here][3][column[piece]]
        return out

    # ---- texts -------------------------------------------------------------------------------------------------
    def _pieces(self, text: str, field: str) -> tuple[list[int], list[int]]:
        """The text's pieces (window cut around its masks when it is longer) and the mask positions."""
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"{field}: empty text")
        ids = self.tok.piece_ids(text)
        where = [i for i, t in enumerate(ids) if t == self.mask]
        name = self.tok.specials["mask"]
        if not where:
            raise ValueError(f"{field}: no {name} token to fill")
        if len(where) > self.settings.max_masks:
            raise ValueError(f"{field}: {len(where)} {name} tokens; at most {self.settings.max_masks}")
        room = self.room - (self.settings.max_pieces - 1) * len(where)
        if where[-1] - where[0] + 1 > room:
            raise ValueError(f"{field}: its {name} tokens are {where[-1] - where[0] + 1} pieces apart; the model "
                             f"reads {room} around them")
        if len(ids) > room:  # a window centred on the masks
            first = max(0, min((where[0] + where[-1] + 1) // 2 - room // 2, len(ids) - room))
            ids = ids[first:first + room]
            where = [w - first for w in where]
        return ids, where

    def _fill(self, text: str, field: str, targets: list[list[int]] | None, top_k: int) -> list[_Hypothesis]:
        ids, where = self._pieces(text, field)
        beam = max(self.settings.beam, top_k)
        hyps = [_Hypothesis(ids, list(where), list(where), [None] * len(where), [None] * len(where))]
        for _ in where:
            grown = []
            for h in hyps:
                slot = self._next_slot(h) if len(h.open) > 1 else h.slots.index(h.open[0])
                if targets is not None:
                    options = list(zip(targets, self._target_scores(h, slot, targets)))
                else:
                    options = self._words(h, slot, beam)
                grown.extend(self._filled(h, slot, w, s) for w, s in options)
            unique = {}
            for h in sorted(grown, key=lambda h: -h.score):
                unique.setdefault(tuple(tuple(w) if w else () for w in h.words), h)
            hyps = list(unique.values())[:beam]
        return hyps

    def _next_slot(self, h: _Hypothesis) -> int:
        """Best-first: the open mask whose best word-start piece is the most likely."""
        masks = self._read([h.ids], 1)[0]
        best = max(range(len(h.open)), key=lambda m: masks[m][2 if h.open[m] == 0 else 0][1][0]
                   if masks[m][0][1] else -math.inf)
        return h.slots.index(h.open[best])

    @staticmethod
    def _filled(h: _Hypothesis, slot: int, word: list[int], score: float) -> _Hypothesis:
        pos, grow = h.slots[slot], len(word) - 1
        shift = [p + grow if p > pos else p for p in h.slots]
        words, scores = list(h.words), list(h.scores)
        words[slot], scores[slot] = word, score
        return _Hypothesis(h.ids[:pos] + word + h.ids[pos + 1:], [p + grow if p > pos else p for p in h.open
                                                                   if p != pos], shift, words, scores,
                           h.score + score)

    def _word_text(self, pieces: list[int]) -> str:
        return self.tok.decode(pieces).strip()

    def word_pieces(self, word: str) -> list[int]:
        """A word's pieces as it reads after a space (byte-level BPE marks a word start by the space before it)."""
        pieces = self.tok.piece_ids(word)
        if pieces and self.settings.whole_words and not bool(self.allowed_start[pieces[0]]):
            pieces = self.tok.piece_ids(" " + word)
        return pieces

    def _target_pieces(self, targets: Sequence[str], field: str) -> list[list[int]]:
        if isinstance(targets, str) or not targets:
            raise ValueError(f"{field}: expected a non-empty list of words")
        out = []
        for i, word in enumerate(targets):
            if not isinstance(word, str) or not word.strip():
                raise ValueError(f"{field}[{i}]: expected a word")
            pieces = self.word_pieces(word.strip())
            if not self.settings.whole_words and len(pieces) != 1:
                raise ValueError(f"{field}[{i}]: '{word}' is {len(pieces)} pieces; a piece mask takes one")
            if len(pieces) > TARGET_PIECES:
                raise ValueError(f"{field}[{i}]: '{word}' is {len(pieces)} pieces; at most {TARGET_PIECES}")
            out.append(pieces)
        return out

    def suggest(self, text: str, targets: Sequence[str] | None = None, top_k: int | None = None,
                field: str = "text") -> dict:
        """The best fillings of the text's masks: `{"suggestions": [{"words": [...], "scores": [...], "score",
        "text"}, ...]}` best first; `words` in the order the masks appear, `score` the summed log-probability
        (natural log), `text` the text with its masks replaced."""
        top_k = self.settings.top_k if top_k is None else top_k
        pieces = self._target_pieces(targets, "targets") if targets is not None else None
        name = self.tok.specials["mask"]
        out = []
        for h in self._fill(text, field, pieces, top_k)[:top_k]:
            words = [self._word_text(w) for w in h.words]
            parts = text.split(name)
            filled = parts[0] + "".join(w + rest for w, rest in zip(words, parts[1:]))
            out.append({"words": words, "scores": [round(s, 4) for s in h.scores], "score": round(h.score, 4),
                        "text": filled})
        return {"suggestions": out}

    def _selection(self, text: str, start: int, end: int, field: str = "text") -> tuple[str, str]:
        """(the text with the selected word masked, the word) for the selection `text[start:end]`."""
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"{field}: empty text")
        for name, value in (("start", start), ("end", end)):
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= len(text):
                raise ValueError(f"{name}: expected a character offset between 0 and {len(text)}")
        word = text[start:end].strip()
        if not word:
            raise ValueError(f"start, end: [{start}, {end}) selects no word")
        mask = self.tok.specials["mask"]
        if mask in text:
            raise ValueError(f"{field}: has a {mask} token already; select a word instead")
        return text[:start] + mask + text[end:], word

    def check_word(self, text: str, start: int, end: int, top_k: int | None = None, flag_rank: int = 10,
                   field: str = "text") -> dict:
        """"Is there a better word here?": the word at `text[start:end]` masked, alternatives ranked, and the
        original's rank among them (1 = the model's first choice; None when at least `flag_rank` others score
        higher). `flagged` when `flag_rank` or more words score higher than the original."""
        top_k = self.settings.top_k if top_k is None else top_k
        masked, word = self._selection(text, start, end, field)
        original = self._target_pieces([word], "word")
        ids, where = self._pieces(masked, field)
        h = _Hypothesis(ids, list(where), list(where), [None], [None])
        mine = self._target_scores(h, 0, original)[0]
        others = [(self._word_text(w), s) for w, s in self._words(h, 0, max(top_k, flag_rank, self.settings.beam))
                  if w != original[0]]
        above = sum(1 for _, s in others if s > mine)
        rank = above + 1 if above < flag_rank else None
        return {"word": word, "start": start, "end": end, "score": round(mine, 4), "rank": rank,
                "flagged": rank is None,
                "suggestions": [{"word": w, "score": round(s, 4)} for w, s in others[:top_k]]}

    def model_rows(self, masks: int, top_k: int, target_pieces: Sequence[int] | None = None) -> int:
        """At most how many rows (texts of the window) the model reads to answer: for each mask filled, each
        hypothesis kept reads one row to choose the mask (when more than one is open) and, per word length n, one
        row for its first piece and `beam` rows for each later one (or one row per piece of each target)."""
        beam = max(self.settings.beam, top_k)
        n = self.settings.max_pieces if self.settings.whole_words else 1
        per_mask = sum(target_pieces) if target_pieces is not None else n + beam * n * (n - 1) // 2
        return sum((1 if i == 0 else beam) * (per_mask + (1 if masks - i > 1 else 0)) for i in range(masks))

    def plan(self, item, field: str = "") -> tuple[int, int]:
        """(model rows at most, tokens per row at most) for the request `item` (`answer`'s), checked as `answer`
        checks it, without running the model."""
        text, top_k, flag_rank = self._request(item, field)
        try:
            if flag_rank is not None:
                text, word = self._selection(text, item.get("start"), item.get("end"))
                extra = len(self._target_pieces([word], "word")[0])  # the original word, scored
                top_k, targets = max(top_k, flag_rank), None
            else:
                targets, extra = item.get("targets"), 0
            ids, where = self._pieces(text, "text")
            lengths = [len(p) for p in self._target_pieces(targets, "targets")] if targets is not None else None
        except ValueError as e:
            raise ValueError(f"{field}{e}") from None
        width = len(ids) + (self.settings.max_pieces - 1) * len(where) + self.tok.num_special_tokens()
        return self.model_rows(len(where), top_k, lengths) + extra, min(width, self.p.max_length)

    def _request(self, item, field: str) -> tuple[str, int, int | None]:
        """(text, top_k, flag_rank: None for suggestions) of a request."""
        if not isinstance(item, dict) or not isinstance(item.get("text"), str):
            raise ValueError(f"{field}expected a JSON object with a field 'text' (a string)")
        numbers = {"top_k": item.get("top_k", self.settings.top_k)}
        if "start" in item or "end" in item:
            numbers["flag_rank"] = item.get("flag_rank", 10)
        for name, value in numbers.items():
            if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 100:
                raise ValueError(f"{field}{name}: expected an integer between 1 and 100")
        return item["text"], numbers["top_k"], numbers.get("flag_rank")

    def answer(self, item, field: str = "") -> dict:
        """One request, as the CLI's lines and the HTTP body give it: `{"text": "... [MASK] ...", "targets"?,
        "top_k"?}` -> `suggest`; `{"text", "start", "end", "top_k"?, "flag_rank"?}` -> `check_word`. Errors name
        the field (prefixed by `field`)."""
        text, top_k, flag_rank = self._request(item, field)
        try:
            if flag_rank is not None:
                return self.check_word(text, item.get("start"), item.get("end"), top_k, flag_rank)
            return self.suggest(text, item.get("targets"), top_k)
        except ValueError as e:
            raise ValueError(f"{field}{e}") from None
