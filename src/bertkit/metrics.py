"""Evaluation metrics, each as its official definition computes it.

| metric | used for | definition followed |
|---|---|---|
| accuracy | SST-2, RTE, QNLI, NSMC, KLUE-NLI | fraction correct |
| f1 (binary) | MRPC, QQP | F1 of the positive class, as GLUE |
| matthews_corrcoef | CoLA | (TP·TN − FP·FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)); 0 when undefined |
| pearson, spearman | STS-B, KLUE-STS | Spearman = Pearson of average ranks (ties share their mean rank) |
| squad_em / squad_f1 | SQuAD 1.1 / 2.0 | the official script: lower-case, drop punctuation and articles (a, an, the), squeeze spaces; token F1; best over the gold answers |
| korquad_em / korquad_f1 | KorQuAD 1.0 | the official script: quotes and brackets to spaces, lower-case, drop punctuation, squeeze spaces; F1 over characters (morphology makes word F1 unfair in Korean) |
| entity_f1 | CoNLL-2003, KLUE-NER | conlleval: chunks from IOB1/IOB2/IOBES tags, micro precision/recall/F1 over exact (type, start, end) chunks |
| rouge | summaries | Lin 2004 as Google's `rouge-score` computes it (no stemming): ROUGE-N over n-gram counts, ROUGE-L over the LCS, ROUGE-Lsum over the union LCS of newline-split sentences; its tokenizer (lower-case, runs of a-z0-9) deletes every Hangul character, so `tokens="unicode"` keeps runs of any letters and digits (Korean eojeol) |
| sentence_prf | extractive summaries | precision / recall / F1 of the chosen sentence indices against the human-marked ones |
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from collections.abc import Sequence

# ---- classification and regression ----------------------------------------------------------------------------


def accuracy(pred: Sequence, gold: Sequence) -> float:
    _same_length(pred, gold)
    return sum(p == g for p, g in zip(pred, gold)) / len(gold) if gold else 0.0


def f1_binary(pred: Sequence[int], gold: Sequence[int], positive: int = 1) -> float:
    _same_length(pred, gold)
    tp = sum(p == positive and g == positive for p, g in zip(pred, gold))
    fp = sum(p == positive and g != positive for p, g in zip(pred, gold))
    fn = sum(p != positive and g == positive for p, g in zip(pred, gold))
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def matthews_corrcoef(pred: Sequence[int], gold: Sequence[int]) -> float:
    _same_length(pred, gold)
    tp = sum(p == 1 and g == 1 for p, g in zip(pred, gold))
    tn = sum(p == 0 and g == 0 for p, g in zip(pred, gold))
    fp = sum(p == 1 and g == 0 for p, g in zip(pred, gold))
    fn = sum(p == 0 and g == 1 for p, g in zip(pred, gold))
    denom = math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return (tp * tn - fp * fn) / denom if denom else 0.0


def pearson(x: Sequence[float], y: Sequence[float]) -> float:
    _same_length(x, y)
    n = len(x)
    mx, my = sum(x) / n, sum(y) / n
    cov = sum((a - mx) * (b - my) for a, b in zip(x, y))
    vx = math.sqrt(sum((a - mx) ** 2 for a in x))
    vy = math.sqrt(sum((b - my) ** 2 for b in y))
    return cov / (vx * vy) if vx and vy else 0.0


def _ranks(values: Sequence[float]) -> list[float]:
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):  # ties share the mean of their ranks (1-based)
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    return pearson(_ranks(x), _ranks(y))


def _same_length(a: Sequence, b: Sequence) -> None:
    if len(a) != len(b):
        raise ValueError(f"predictions ({len(a)}) and references ({len(b)}) differ in length")


# ---- span question answering ------------------------------------------------------------------------------------
_PUNCT = set(string.punctuation)


def squad_normalize(text: str) -> str:
    text = "".join(ch for ch in text.lower() if ch not in _PUNCT)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def squad_em(prediction: str, answers: Sequence[str]) -> float:
    return max(float(squad_normalize(prediction) == squad_normalize(a)) for a in answers)


def squad_f1(prediction: str, answers: Sequence[str]) -> float:
    def f1(pred: list[str], gold: list[str]) -> float:
        if not pred or not gold:  # SQuAD 2.0: an empty answer matches only an empty answer
            return float(pred == gold)
        same = sum((Counter(pred) & Counter(gold)).values())
        if same == 0:
            return 0.0
        p, r = same / len(pred), same / len(gold)
        return 2 * p * r / (p + r)

    return max(f1(squad_normalize(prediction).split(), squad_normalize(a).split()) for a in answers)


_KORQUAD_SYMBOLS = re.compile(r"['\"《》<>〈〉()‘’]")


def korquad_normalize(text: str) -> str:
    text = _KORQUAD_SYMBOLS.sub(" ", text).lower()
    text = "".join(ch for ch in text if ch not in _PUNCT)
    return " ".join(text.split())


def korquad_em(prediction: str, answers: Sequence[str]) -> float:
    return max(float(korquad_normalize(prediction) == korquad_normalize(a)) for a in answers)


def korquad_f1(prediction: str, answers: Sequence[str]) -> float:
    def f1(pred: str, gold: str) -> float:
        p_chars, g_chars = list(pred.replace(" ", "")), list(gold.replace(" ", ""))
        same = sum((Counter(p_chars) & Counter(g_chars)).values())
        if same == 0:
            return 0.0
        p, r = same / len(p_chars), same / len(g_chars)
        return 2 * p * r / (p + r)

    return max(f1(korquad_normalize(prediction), korquad_normalize(a)) for a in answers)


# ---- entities (conlleval) ---------------------------------------------------------------------------------------
def _split(label: str) -> tuple[str, str]:
    if label in ("O", "", "."):
        return "O", ""
    tag, _, kind = label.partition("-")
    return (tag, kind) if kind else ("I", tag)  # a bare type is read as inside that type


def _ends(prev_tag: str, tag: str, prev_type: str, kind: str) -> bool:
    return (prev_tag in ("E", "S") or (prev_tag in ("B", "I") and tag in ("B", "S", "O"))
            or (prev_tag != "O" and prev_type != kind))


def _starts(prev_tag: str, tag: str, prev_type: str, kind: str) -> bool:
    return (tag in ("B", "S") or (prev_tag in ("E", "S", "O") and tag in ("E", "I"))
            or (tag != "O" and prev_type != kind))


def chunks(labels: Sequence[str]) -> set[tuple[str, int, int]]:
    """(type, first, last) of every chunk, with conlleval's rules (so IOB1 and IOB2 both work)."""
    found, start = set(), None
    prev_tag, prev_type = "O", ""
    for i, label in enumerate(list(labels) + ["O"]):
        tag, kind = _split(label)
        if start is not None and _ends(prev_tag, tag, prev_type, kind):
            found.add((prev_type, start, i - 1))
            start = None
        if _starts(prev_tag, tag, prev_type, kind):
            start = i
        prev_tag, prev_type = tag, kind
    return found


def entity_scores(pred: Sequence[Sequence[str]], gold: Sequence[Sequence[str]]) -> dict[str, float]:
    """Micro precision, recall and F1 over the chunks of every sentence, and F1 per entity type."""
    _same_length(pred, gold)
    tp = n_pred = n_gold = 0
    per: dict[str, list[int]] = {}
    for p_seq, g_seq in zip(pred, gold):
        _same_length(p_seq, g_seq)
        p, g = chunks(p_seq), chunks(g_seq)
        tp += len(p & g)
        n_pred += len(p)
        n_gold += len(g)
        for kind, *_ in p | g:
            per.setdefault(kind, [0, 0, 0])
        for c in p & g:
            per[c[0]][0] += 1
        for c in p:
            per[c[0]][1] += 1
        for c in g:
            per[c[0]][2] += 1
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_gold if n_gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if tp else 0.0
    out = {"precision": precision, "recall": recall, "f1": f1}
    for kind, (t, np_, ng) in sorted(per.items()):
        out[f"f1_{kind}"] = 2 * t / (np_ + ng) if t else 0.0
    return out


# ---- summaries (ROUGE) ---------------------------------------------------------------------------------------------
_ROUGE_NON_ALNUM = re.compile(r"[^a-z0-9]+")
_UNICODE_WORD = re.compile(r"[^\W_]+")
ROUGE_TOKENS = ("rouge-score", "unicode")


def rouge_tokens(text: str, tokens: str = "rouge-score") -> list[str]:
    """`rouge-score`: rouge-score's tokenizer without stemming (lower-case, anything but a-z0-9 a separator);
    `unicode`: lower-cased runs of letters and digits of any script, so Hangul words count."""
    if tokens == "rouge-score":
        return [t for t in _ROUGE_NON_ALNUM.sub(" ", text.lower()).split() if t]
    if tokens == "unicode":
        return _UNICODE_WORD.findall(text.lower())
    raise ValueError(f"tokens {tokens!r}: choose one of {', '.join(ROUGE_TOKENS)}")


def _prf(hits: int, predicted: int, target: int) -> dict[str, float]:
    p, r = hits / max(predicted, 1), hits / max(target, 1)
    return {"precision": p, "recall": r, "f": 2 * p * r / (p + r) if p + r > 0 else 0.0}


def _lcs_table(a: Sequence[str], b: Sequence[str]) -> list[list[int]]:
    table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i, x in enumerate(a, 1):
        row, above = table[i], table[i - 1]
        for j, y in enumerate(b, 1):
            row[j] = above[j - 1] + 1 if x == y else max(above[j], row[j - 1])
    return table


def _lcs_positions(a: Sequence[str], b: Sequence[str]) -> list[int]:
    """Positions in `a` of one longest common subsequence with `b`, backtracked as the reference does (on a tie,
    step back in `a`), which decides the union LCS of ROUGE-Lsum."""
    table, i, j, out = _lcs_table(a, b), len(a), len(b), []
    while i > 0 and j > 0:
        if a[i - 1] == b[j - 1]:
            out.append(i - 1)
            i, j = i - 1, j - 1
        elif table[i][j - 1] > table[i - 1][j]:
            j -= 1
        else:
            i -= 1
    return out[::-1]


def rouge(prediction: str, reference: str, tokens: str = "rouge-score") -> dict[str, dict[str, float]]:
    """ROUGE-1, ROUGE-2, ROUGE-L and ROUGE-Lsum (precision, recall, f) of `prediction` against `reference`; for
    ROUGE-Lsum both are split into sentences at newlines."""
    pred, ref = rouge_tokens(prediction, tokens), rouge_tokens(reference, tokens)
    out = {}
    for n in (1, 2):
        p = Counter(tuple(pred[i:i + n]) for i in range(len(pred) - n + 1))
        r = Counter(tuple(ref[i:i + n]) for i in range(len(ref) - n + 1))
        out[f"rouge{n}"] = _prf(sum((p & r).values()), sum(p.values()), sum(r.values()))
    lcs = _lcs_table(ref, pred)[-1][-1] if pred and ref else 0
    out["rougeL"] = _prf(lcs, len(pred), len(ref))
    pred_sents = [t for t in (rouge_tokens(s, tokens) for s in prediction.split("\n")) if t]
    ref_sents = [t for t in (rouge_tokens(s, tokens) for s in reference.split("\n")) if t]
    left_pred = Counter(t for s in pred_sents for t in s)
    left_ref = Counter(t for s in ref_sents for t in s)
    hits = 0
    for r in ref_sents:  # each reference sentence's union LCS with the prediction's sentences, counted once
        union = sorted({i for c in pred_sents for i in _lcs_positions(r, c)})
        for t in (r[i] for i in union):
            if left_pred[t] > 0 and left_ref[t] > 0:
                hits += 1
                left_pred[t] -= 1
                left_ref[t] -= 1
    out["rougeLsum"] = _prf(hits, sum(len(s) for s in pred_sents), sum(len(s) for s in ref_sents))
    return out


def sentence_prf(chosen: Sequence[int], gold: Sequence[int]) -> dict[str, float]:
    """Precision, recall and F1 of chosen sentence indices against the marked ones (each counted once)."""
    c, g = set(chosen), set(gold)
    return _prf(len(c & g), len(c), len(g))
