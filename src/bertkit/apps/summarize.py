"""Extractive summaries: the k sentences of a text that stand for it, in the text's order.

BERT does not generate, so a BERT summary is a choice of sentences (KPF's kpfbertsum picks three). Methods
(`METHODS`; `summarize(sentences, k, method, ...)` returns the chosen indices, ascending):

- `lead`: the first k sentences: news puts the gist first, and this is the baseline to beat.
- `textrank`: TextRank (Mihalcea & Tarau 2004) as usually implemented: PageRank over the cosine graph of the
  sentences' TF-IDF vectors (scikit-learn's, over words of any script, fitted on the text itself).
- `frequency`: Luhn's (1958) word-frequency score: each sentence scores the sum of its content words'
  frequencies in the text (scaled by the most frequent word's), English stop words left out. Favours long
  sentences of the text's main words; on BBC it beats TextRank (the references look chosen that way).
- `centroid`: the k sentences whose vectors are nearest the mean of the text's sentence vectors.
- `centrality` (the default): PageRank over a graph of both: each edge `lexical` x the TF-IDF cosine of two
  sentences plus (1 - `lexical`) x the cosine of their sentence vectors (LexRank at 0, TextRank at 1); the picks
  optionally made with maximal marginal relevance (Carbonell & Goldstein 1998): `mmr` of the score against
  (1 - `mmr`) of the highest similarity to a sentence already picked. On BBC the mixed graph beat both of its
  halves (benchmarks/RESULTS.md, "Extractive summaries"); PACSUM's position-aware directed centrality (Zheng &
  Lapata 2019) was measured too and fell below the plain centroid there.
- `oracle`: greedy ROUGE against a reference (Nallapati et al. 2017; BertSum's labels): add the sentence that
  raises ROUGE-1 + ROUGE-2 F most, until k or no gain. An upper bound, and training labels.

Sentence vectors are given (`vectors=`, one row per sentence: `Predictor.embed(sentences)`; the CLI and the
service embed with the model they serve). `split_text` cuts a text into sentences (paragraphs at blank lines, then
`data.corpus.split_sentences`; an all-lower-case text, such as the BBC articles here, is cut at every full stop
followed by a space, since no capital says where a sentence starts).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

import numpy as np

from bertkit.data.corpus import split_sentences
from bertkit.metrics import rouge_tokens

METHODS = ("centrality", "lead", "textrank", "frequency", "centroid", "oracle", "trained")


def split_text(text: str) -> list[str]:
    """The sentences of `text`: paragraphs at blank lines (or single newlines), then sentences."""
    cased = text != text.lower()
    out = []
    for paragraph in text.replace("\r\n", "\n").split("\n"):
        paragraph = paragraph.strip()
        if paragraph:
            out.extend(split_sentences(paragraph, lowercase_continues=cased))
    return out


def sentence_offsets(text: str, sentences: Sequence[str]) -> list[list[int] | None]:
    """Each sentence's [start, end) in `text` (found in order; None for one that is not there verbatim)."""
    out, cursor = [], 0
    for s in sentences:
        at = text.find(s, cursor)
        out.append(None if at < 0 else [at, at + len(s)])
        cursor = cursor if at < 0 else at + len(s)
    return out


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.clip(np.linalg.norm(v, axis=1, keepdims=True), 1e-12, None)


def _pagerank(weights: np.ndarray, damping: float = 0.85, steps: int = 100) -> np.ndarray:
    n = len(weights)
    out = weights.sum(1, keepdims=True)
    walk = np.where(out > 0, weights / np.where(out > 0, out, 1), 1.0 / n)  # a sentence with no edge: jump anywhere
    rank = np.full(n, 1.0 / n)
    for _ in range(steps):
        new = (1 - damping) / n + damping * rank @ walk
        if np.abs(new - rank).sum() < 1e-9:
            return new
        rank = new
    return rank


def tfidf_vectors(sentences: Sequence[str]):
    """TF-IDF rows (scikit-learn's: smoothed idf over the text's own sentences, L2-normalised; sparse) of the words of
    any script (`rouge_tokens`); one all-zero column when no sentence has a word."""
    from scipy.sparse import csr_matrix
    from sklearn.feature_extraction.text import TfidfVectorizer

    vectorizer = TfidfVectorizer(tokenizer=lambda x: rouge_tokens(x, "unicode"), lowercase=False, token_pattern=None)
    try:
        return vectorizer.fit_transform(sentences)
    except ValueError:  # an empty vocabulary: punctuation or digits-free symbols only
        return csr_matrix((len(sentences), 1))


def _cosines(rows) -> np.ndarray:
    """A graph's edges: the rows' cosines (dense or sparse rows), negative ones cut to 0."""
    if hasattr(rows, "toarray"):  # TF-IDF rows: already unit length
        return np.clip((rows @ rows.T).toarray(), 0, None)
    u = _unit(np.asarray(rows, dtype=np.float64))
    return np.clip(u @ u.T, 0, None)


def textrank_scores(sentences: Sequence[str]) -> np.ndarray:
    sim = _cosines(tfidf_vectors(sentences))
    np.fill_diagonal(sim, 0.0)
    return _pagerank(sim)


def frequency_scores(sentences: Sequence[str]) -> np.ndarray:
    """Each sentence's sum of its content words' frequencies in the whole text over the most frequent word's
    (words of any script, `rouge_tokens`'s unicode runs; scikit-learn's English stop words dropped)."""
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    words = [[w for w in rouge_tokens(x, "unicode") if w not in ENGLISH_STOP_WORDS] for x in sentences]
    counts = Counter(w for ws in words for w in ws)
    top = max(counts.values(), default=1)
    return np.array([sum(counts[w] for w in ws) / top for ws in words], dtype=np.float64)


def centrality_scores(sentences: Sequence[str], vectors: np.ndarray, lexical: float = 0.7) -> np.ndarray:
    """PageRank over a graph whose edge between two sentences is `lexical` x their TF-IDF cosine plus
    (1 - `lexical`) x their sentence vectors' cosine: shared words and shared meaning. `lexical` 0 is LexRank over
    sentence vectors, 1 is TextRank."""
    sim = lexical * _cosines(tfidf_vectors(sentences)) + (1 - lexical) * _cosines(vectors)
    np.fill_diagonal(sim, 0.0)
    return _pagerank(sim)


def mmr_pick(scores: np.ndarray, vectors: np.ndarray | None, k: int, mmr: float = 1.0) -> list[int]:
    """k indices chosen greedily by `mmr` x score - (1 - mmr) x the highest cosine to one already chosen (scores
    scaled to [0, 1] first, so the two terms are comparable); `mmr` 1: the top k by score."""
    k = min(k, len(scores))
    s = np.asarray(scores, dtype=np.float64)
    if s.max() > s.min():
        s = (s - s.min()) / (s.max() - s.min())
    if mmr >= 1.0 or vectors is None:
        return sorted(np.argsort(-s, kind="stable")[:k].tolist())
    v = _unit(np.asarray(vectors, dtype=np.float64))
    sim = v @ v.T
    chosen: list[int] = []
    for _ in range(k):
        redundancy = sim[:, chosen].max(1) if chosen else np.zeros(len(s))
        value = mmr * s - (1 - mmr) * redundancy
        value[chosen] = -np.inf
        chosen.append(int(np.argmax(value)))
    return sorted(chosen)


def oracle(sentences: Sequence[str], reference: str, k: int, tokens: str = "rouge-score") -> list[int]:
    """Greedy ROUGE-1 + ROUGE-2 F against `reference`: add the best sentence while it raises the sum, at most k.
    (The chosen sentences are read in article order, joined by spaces, as `rouge` would read them; only ROUGE-1
    and -2 are computed, from token counts.)"""
    words = [rouge_tokens(x, tokens) for x in sentences]
    ref = rouge_tokens(reference, tokens)
    ref_grams = [Counter(tuple(ref[i:i + n]) for i in range(len(ref) - n + 1)) for n in (1, 2)]

    def gain(chosen: list[int]) -> float:
        toks = [t for j in sorted(chosen) for t in words[j]]
        total = 0.0
        for n, want in zip((1, 2), ref_grams):
            got = Counter(tuple(toks[i:i + n]) for i in range(len(toks) - n + 1))
            hits = sum((got & want).values())
            p, r = hits / max(sum(got.values()), 1), hits / max(sum(want.values()), 1)
            total += 2 * p * r / (p + r) if p + r > 0 else 0.0
        return total

    chosen: list[int] = []
    best = 0.0
    for _ in range(min(k, len(sentences))):
        candidates = [(gain([*chosen, i]), -i) for i in range(len(sentences)) if i not in chosen]
        if not candidates:
            break
        score, neg = max(candidates)
        if score <= best:
            break
        best = score
        chosen.append(-neg)
    return sorted(chosen)


def _check(method: str, k: int) -> None:
    if method not in METHODS:
        raise ValueError(f"method {method!r}: choose one of {', '.join(METHODS)}")
    if k < 1:
        raise ValueError(f"k {k}: at least one sentence")


def _trigrams(sentence: str) -> set[tuple[str, ...]]:
    words = re.findall(r"\w+", sentence.lower())
    return set(zip(words, words[1:], words[2:]))


def pick(sentences: Sequence[str], scores: Sequence[float], k: int, block_trigrams: bool = True) -> list[int]:
    """The indices (ascending) of up to `k` sentences by score, skipping one that shares a trigram with those chosen
    (`block_trigrams`); when blocking leaves fewer than `k`, the best blocked ones fill the rest."""
    order = sorted(range(len(sentences)), key=lambda i: -scores[i])
    chosen, seen, blocked = [], set(), []
    for i in order:
        if len(chosen) == k:
            break
        grams = _trigrams(sentences[i])
        if block_trigrams and grams & seen:
            blocked.append(i)
            continue
        chosen.append(i)
        seen |= grams
    chosen += blocked[:k - len(chosen)]
    return sorted(chosen)


def summarize(sentences: Sequence[str], k: int = 3, method: str = "centrality", vectors: np.ndarray | None = None,
              reference: str | None = None, lexical: float = 0.7, mmr: float = 1.0,
              scores: Sequence[float] | None = None) -> list[int]:
    """The indices (ascending) of the k sentences `method` picks; `vectors` (one row per sentence) for the methods
    that read sentence vectors, `reference` for the oracle, `scores` (a trained scorer's, `apps.extractive`) for
    `trained` (picked with trigram blocking)."""
    _check(method, k)
    n = len(sentences)
    if n <= k:
        return list(range(n))
    if method == "lead":
        return list(range(k))
    if method == "textrank":
        return mmr_pick(textrank_scores(sentences), None, k)
    if method == "frequency":
        return mmr_pick(frequency_scores(sentences), None, k)
    if method == "trained":
        if scores is None or len(scores) != n:
            raise ValueError(f"trained: needs one score per sentence ({n}), got "
                             f"{'none' if scores is None else len(scores)}")
        return pick(sentences, list(scores), k)
    if method == "oracle":
        if reference is None:
            raise ValueError("oracle: needs the reference summary")
        return oracle(sentences, reference, k)
    if vectors is None or len(vectors) != n:
        raise ValueError(f"{method}: needs one sentence vector per sentence ({n}), got "
                         f"{'none' if vectors is None else len(vectors)}")
    if method == "centroid":
        v = _unit(np.asarray(vectors, dtype=np.float64))
        return mmr_pick(v @ _unit(v.mean(0, keepdims=True))[0], None, k)
    return mmr_pick(centrality_scores(sentences, vectors, lexical), vectors, k, mmr)


# ---- the file job (`bertkit summarize`) ------------------------------------------------------------------------------
MAX_SENTENCES = 2000  # sentences of one article at most: the graph is n x n
CHUNK_SENTENCES = 512  # articles are read until this many sentences, then embedded in one call (memory bounded)


def _article(item, path: str, lineno: int) -> tuple[list[str], str | None]:
    """(sentences, reference) of one JSON line: `{"text": ...}` (split here) or `{"sentences": [...]}`, and an
    optional `"reference"` (the oracle's)."""
    where = f"{path}: line {lineno}"
    if not isinstance(item, dict):
        raise ValueError(f"{where}: expected a JSON object with \"text\" or \"sentences\"")
    if "sentences" in item:
        sentences = item["sentences"]
        if not isinstance(sentences, list) or not all(isinstance(x, str) for x in sentences):
            raise ValueError(f"{where}: field 'sentences': expected a list of strings")
        sentences = [x.strip() for x in sentences if x.strip()]
    elif isinstance(item.get("text"), str):
        sentences = split_text(item["text"])
    else:
        raise ValueError(f"{where}: expected a field 'text' (a string) or 'sentences' (a list of strings)")
    if not sentences:
        raise ValueError(f"{where}: no sentence in it (empty 'text' or 'sentences')")
    if len(sentences) > MAX_SENTENCES:
        raise ValueError(f"{where}: {len(sentences)} sentences, more than {MAX_SENTENCES}: split the article")
    reference = item.get("reference")
    if reference is not None and not isinstance(reference, str):
        raise ValueError(f"{where}: field 'reference': expected a string")
    return sentences, reference
