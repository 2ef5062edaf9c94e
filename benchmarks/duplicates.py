"""How well `bertkit.apps.duplicates` finds duplicates, on real data (accuracy figures; timings are incidental).

    python benchmarks/duplicates.py [--model DIR] [--quick] [--only mrpc|news] [--methods minilm tfidf] [--show]

- MRPC dev (408 sentence pairs, 279 paraphrases): the cosine of the two sentences' vectors as a score for the
  "equivalent" label: average precision, and the best F1 over all thresholds (and that threshold). The same for a
  character n-gram TF-IDF baseline (scikit-learn, fitted on the dev sentences themselves).
- Korean news titles (12,006; 262 exact repeats of an earlier title): that every exact repeat is found
  (`exact_duplicates`), how many more the normalisation adds, and the near pairs above `--threshold` among the
  distinct titles (`find_duplicates`): their count at several thresholds, and a seeded random sample of
  `--sample` pairs printed with `--show` for a person to judge. The judgements made for RESULTS.md are in
  `JUDGED` below (pair -> duplicate or not): "duplicate" = the same news event reported twice (same actor, same
  action, same occasion), "not" = a different event, even on the same topic. Their precision is printed.
  The baseline: char (2-4)-gram TF-IDF cosine over the same distinct titles, the same count and sample.

The model is all-MiniLM-L6-v2 (the packaged one by default): an English model with an English uncased vocabulary,
which reads Korean one jamo at a time (its uncased tokenizer decomposes each syllable, "문" -> ᄆ ##ᅮ ##ᆫ, as
Hugging Face's does: no [UNK], but three pieces per syllable and no Korean word in the vocabulary), so its Korean
figures say what an English model does on Korean, not what a Korean model would. `--model` names another
sentence-transformers directory (the Korean SBERT of README "A Korean encoder by transfer", with `--thresholds`
and `--threshold` set for its scores); its results keep the key "minilm" (the model's vectors).
`--quick`: 100 MRPC pairs and 1,000 titles (a check that the script runs).
"""

from __future__ import annotations

import argparse
import functools
import gzip
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("BERTKIT_DATA", ROOT.parent / "shared" / "data"))

# (i, j) of news titles (0-based positions in kpf_newstrust_titles.json.gz) -> judged a duplicate (same event).
# MiniLM >= 0.97, seed 0: the 9 not duplicates are personnel notices ("[인사]") of different organisations (4, scored
# up to 1.0), different winners of one letter contest (3), the weather of two days, and two unrelated titles.
# Borderline, counted a duplicate: (4740, 8617), Gimpo lawmakers' GTX-D campaign told through two of its actions.
JUDGED: dict[tuple[int, int], bool] = {(37, 156): False, (37, 7353): False, (37, 10365): False, (79, 10455): True,
    (108, 2485): True, (134, 3147): True, (140, 10520): True, (156, 7353): False, (244, 4316): True,
    (283, 11044): True, (425, 1036): False, (625, 10572): True, (909, 5482): False, (944, 10033): True,
    (1672, 3582): True, (1760, 3138): True, (1856, 1862): False, (1858, 1904): False, (1862, 1916): False,
    (2283, 8603): True, (2371, 6835): True, (2492, 2903): True, (2903, 3245): True, (2906, 10034): True,
    (3443, 11791): True, (3550, 6588): True, (3574, 5334): True, (3574, 11414): True, (3594, 3816): True,
    (3865, 5634): True, (3998, 6632): True, (4082, 9599): True, (4130, 6218): True, (4299, 5297): True,
    (4579, 7415): True, (4740, 8617): True, (5222, 5627): True, (5334, 11414): True, (5489, 6224): True,
    (5714, 6015): True, (5864, 7414): True, (6252, 9288): True, (6283, 7052): True, (6835, 6836): True,
    (6836, 7063): True, (6991, 8626): True, (7302, 9175): True, (7793, 7865): True, (8548, 10894): True,
    (10682, 10786): True}
# TF-IDF >= 0.7, seed 0: the 4 not duplicates are different winners of one letter contest (3) and two people
# photographed with the same caption
JUDGED_TFIDF: dict[tuple[int, int], bool] = {(18, 5693): True, (31, 6358): True, (72, 8143): True, (131, 712): True,
    (149, 10263): True, (203, 5901): True, (217, 777): True, (232, 10092): True, (414, 438): True, (575, 828): True,
    (691, 1219): True, (694, 5156): True, (944, 10033): True, (1578, 9647): True, (1579, 11796): True,
    (1627, 9597): True, (1642, 3132): True, (1706, 4182): True, (1706, 7747): True, (1754, 4596): True,
    (1856, 1862): False, (1862, 1916): False, (1916, 1921): False, (2233, 9654): True, (2371, 6835): True,
    (2588, 3180): True, (2826, 3830): True, (2902, 2942): True, (2954, 3025): True, (3173, 5380): True,
    (3627, 8327): True, (3851, 5466): True, (4064, 9082): True, (4194, 6960): True, (5321, 8405): True,
    (5381, 9082): True, (5750, 6129): True, (5765, 10734): True, (5952, 10358): True, (5980, 6294): True,
    (6868, 9421): True, (7057, 7357): True, (7164, 7563): True, (7361, 11439): True, (8405, 10657): True,
    (8613, 10589): True, (9043, 10056): True, (9153, 9475): True, (9415, 10019): True, (11599, 11618): False}

# The Korean SBERT of the transferred encoder (runs/sbert-ko-thawed) >= 0.97, seed 0 (the pair already in JUDGED left
# out): the 3 not duplicates are two provinces' entries in one contest, two winners of the letter contest and the
# morning and afternoon weather. Borderline, counted duplicates: (47, 6963) an agreement and the support it brings,
# (2743, 5714) two photographs of one inauguration, (11502, 11601) two captions of one actor's photo call.
JUDGED_SBERT_KO: dict[tuple[int, int], bool] = {(17, 4366): True, (25, 5904): True, (47, 6963): True,
    (73, 11613): True, (127, 3733): True, (131, 3530): True, (176, 11220): True, (492, 9786): True,
    (571, 3018): True, (625, 9635): True, (793, 3096): False, (1091, 11635): True, (1227, 6988): True,
    (1917, 1921): False, (2147, 4088): True, (2260, 4582): True, (2260, 9043): True, (2557, 6081): True,
    (2743, 5714): True, (2805, 3263): True, (3245, 9333): True, (3389, 11407): True, (3443, 8547): True,
    (3661, 10475): True, (3665, 5707): True, (3692, 8231): True, (3733, 7084): True, (3740, 6230): True,
    (4046, 6988): True, (4183, 4322): False, (4298, 6463): True, (4342, 8515): True, (4440, 9635): True,
    (4947, 8397): True, (5115, 11124): True, (5247, 9043): True, (5532, 5719): True, (5566, 11742): True,
    (5979, 11902): True, (6453, 6860): True, (6645, 10612): True, (6964, 10657): True, (7169, 8551): True,
    (7329, 11111): True, (7587, 7877): True, (8233, 10359): True, (8587, 11320): True, (9489, 11497): True,
    (11502, 11601): True}


def best_f1(scores: np.ndarray, gold: np.ndarray) -> tuple[float, float]:
    """(best F1, its threshold) over every threshold "score >= t" with t a score of the data."""
    order = np.argsort(-scores, kind="stable")
    s, g = scores[order], gold[order].astype(np.int64)
    tp = np.cumsum(g)
    predicted = np.arange(1, len(s) + 1)
    last = np.r_[s[1:] != s[:-1], True]  # only cut between distinct scores
    f1 = np.where(last, 2 * tp / (predicted + g.sum()), -1.0)
    k = int(np.argmax(f1))
    return float(f1[k]), float(s[k])


def mrpc(encode, quick: bool) -> dict:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.metrics import average_precision_score

    from bertkit.data.tasks import find_split, read_task

    examples, _ = read_task(find_split(DATA / "glue" / "MRPC", "dev"), "mrpc")
    examples = examples[:100] if quick else examples
    gold = np.array([str(e.label) in ("1", "equivalent") for e in examples])
    a, b = [e.text for e in examples], [e.text_pair for e in examples]
    out = {"pairs": len(examples), "positives": int(gold.sum())}
    t = time.perf_counter()
    va, vb = encode(a), encode(b)
    out["encode_s"] = round(time.perf_counter() - t, 1)
    cos = np.einsum("ij,ij->i", va, vb)
    tfidf = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4)).fit(a + b)
    ta, tb = tfidf.transform(a), tfidf.transform(b)
    cos_tfidf = np.asarray(ta.multiply(tb).sum(axis=1)).ravel()
    for name, s in (("minilm", cos), ("tfidf", cos_tfidf)):
        f1, thr = best_f1(s, gold)
        out[name] = {"average_precision": round(float(average_precision_score(gold, s)), 4),
                     "best_f1": round(f1, 4), "at_threshold": round(thr, 4)}
        for t in (0.8, 0.9, 0.95):  # what a near-duplicate threshold keeps of the paraphrases
            hit = s >= t
            out[name][f">={t}"] = {"pairs": int(hit.sum()), "precision": round(float(gold[hit].mean()), 3)
                                   if hit.any() else None, "recall": round(float(gold[hit].sum() / gold.sum()), 3)}
    return out


# A judgement belongs to the pair, not to the score that sampled it: every method's sample is read against all of them.
ALL_JUDGED = {**JUDGED, **JUDGED_TFIDF, **JUDGED_SBERT_KO}


def judged_precision(pairs: list[tuple[int, int]]) -> dict:
    known = [ALL_JUDGED[p] for p in pairs if p in ALL_JUDGED]
    return {"judged": len(known), "duplicates": sum(known),
            "precision": round(sum(known) / len(known), 3) if known else None}


def sample_pairs(pairs: list[tuple[float, int, int]], threshold: float, n: int, rng) -> list[tuple[int, int]]:
    chosen = sorted((i, j) for s, i, j in pairs if s >= threshold)
    return [chosen[k] for k in sorted(rng.choice(len(chosen), min(n, len(chosen)), replace=False))]


def news(predictor, args) -> dict:
    from sklearn.feature_extraction.text import TfidfVectorizer

    from bertkit.apps.duplicates import exact_duplicates, iter_pairs
    from bertkit.apps.sentence import encode_texts as embed_texts

    with gzip.open(DATA / "news" / "kpf_newstrust_titles.json.gz", "rt", encoding="utf-8") as f:
        titles = [r["title"] for r in json.load(f)]
    titles = titles[:1000] if args.quick else titles
    out: dict = {"titles": len(titles)}

    # exact repeats: every raw repeat (the README's 262) must be in the group of its first occurrence
    raw, norm = exact_duplicates(titles, normalize=None), exact_duplicates(titles)
    group_of = {i: k for k, g in enumerate(norm) for i in g}
    missed = [g for g in raw if len({group_of.get(i, -1 - i) for i in g}) != 1]
    out["exact"] = {"raw_repeats": sum(len(g) - 1 for g in raw), "raw_groups": len(raw),
                    "normalised_repeats": sum(len(g) - 1 for g in norm), "normalised_groups": len(norm),
                    "raw_repeats_missed": len(missed)}

    # near pairs among the distinct titles (the first occurrence of each), as find_duplicates mines them
    repeat = {i for g in norm for i in g[1:]}
    distinct = [i for i in range(len(titles)) if i not in repeat]
    out["distinct"] = len(distinct)
    methods = {}
    if "minilm" in args.methods:
        cache = Path(os.environ.get("TMPDIR", "/tmp")) / f"bertkit-dups-news-{len(titles)}.npy"
        if args.news_vectors:  # every title's vectors computed elsewhere: checked against the model on a sample
            given = np.load(args.news_vectors, mmap_mode="r")
            if given.shape[0] != len(titles):
                raise SystemExit(f"{args.news_vectors}: {given.shape[0]} rows for {len(titles)} titles")
            rows = np.random.default_rng(args.seed).choice(len(titles), 48, replace=False)
            drift = np.abs(embed_texts(predictor(), [titles[i] for i in rows], 64) - given[rows]).max()
            if drift > 1e-4:
                raise SystemExit(f"{args.news_vectors}: not this model's vectors (differ by {drift:.2g})")
            out["vectors_checked_rows"] = {"rows": len(rows), "max_abs_difference": float(drift)}
            vectors = np.asarray(given[distinct], dtype=np.float32)
        elif args.model is None and cache.is_file():  # the packaged model's vectors, from an earlier run
            vectors = np.load(cache)
        else:
            t = time.perf_counter()
            vectors = embed_texts(predictor(), [titles[i] for i in distinct], 64, show_progress=sys.stderr.isatty())
            out["encode_s"] = round(time.perf_counter() - t, 1)
            if args.model is None:
                np.save(cache, vectors)
        methods["minilm"] = (vectors, args.thresholds, args.threshold)
    if "tfidf" in args.methods:
        x = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), sublinear_tf=True).fit_transform(
            [titles[i] for i in distinct])
        methods["tfidf"] = (x, args.tfidf_thresholds, args.tfidf_threshold)
    shown, found = {}, {}
    for name, (v, thresholds, at) in methods.items():
        t = time.perf_counter()
        pairs = [(s, distinct[a], distinct[b]) for s, a, b in iter_pairs(v, threshold=min(thresholds))]
        out[name] = {"mine_s": round(time.perf_counter() - t, 1),
                     **{f"pairs>={t}": sum(s >= t for s, _, _ in pairs) for t in thresholds}}
        rng = np.random.default_rng([args.seed, ("minilm", "tfidf").index(name)])  # one stream per method
        sample = sample_pairs(pairs, at, args.sample, rng)
        out[name][f"sample>={at}"] = judged_precision(sample)
        score = {(i, j): s for s, i, j in pairs}
        found[name] = {p for p, s in score.items() if s >= at}
        shown[name] = [{"i": i, "j": j, "score": round(score[(i, j)], 3), "judged": ALL_JUDGED.get((i, j)),
                        "a": titles[i], "b": titles[j]} for i, j in sample]
    if len(found) == 2:  # how much the two agree at their sampled thresholds
        a, b = found["minilm"], found["tfidf"]
        out["overlap"] = {"both": len(a & b), "model_only": len(a - b), "tfidf_only": len(b - a)}
    if args.show:
        for name, rows in shown.items():
            print(f"--- {name} sample")
            for row in rows:
                print(json.dumps(row, ensure_ascii=False))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="sentence-transformers directory (default: the packaged all-MiniLM-L6-v2)")
    ap.add_argument("--threshold", type=float, default=0.97, help="near pairs sampled above this (MiniLM)")
    ap.add_argument("--tfidf-threshold", type=float, default=0.7, help="near pairs sampled above this (TF-IDF)")
    ap.add_argument("--thresholds", type=float, nargs="+", default=[0.9, 0.95, 0.97, 0.98, 0.99],
                    help="MiniLM near pairs counted at each (Korean read by an English model: scores run high)")
    ap.add_argument("--tfidf-thresholds", type=float, nargs="+", default=[0.5, 0.6, 0.7, 0.8, 0.9])
    ap.add_argument("--sample", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--show", action="store_true", help="print the sampled pairs (to judge them)")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", choices=["mrpc", "news"])
    ap.add_argument("--news-vectors", help="an .npy of the model's vectors of all 12,006 titles (in file order), "
                                           "checked against the model on 48 random rows, instead of embedding them")
    ap.add_argument("--methods", nargs="+", choices=["minilm", "tfidf"], default=["minilm", "tfidf"],
                    help="news: which scores to mine (tfidf alone needs no model)")
    args = ap.parse_args()

    from bertkit import packaged_model_dir
    from bertkit.apps.sentence import encode_texts as embed_texts
    from bertkit.infer.predictor import Predictor, PredictorSettings

    model = args.model or packaged_model_dir()

    @functools.cache
    def predictor():
        return Predictor.from_pretrained(model, PredictorSettings(batch_size=64))

    result = {"model": str(model), "quick": args.quick}
    if args.only in (None, "mrpc"):
        result["mrpc_dev"] = mrpc(lambda texts: embed_texts(predictor(), texts, 64), args.quick)
    if args.only in (None, "news"):
        result["news"] = news(predictor, args)
    print(json.dumps(result, ensure_ascii=False, indent=1))


if __name__ == "__main__":
    main()
