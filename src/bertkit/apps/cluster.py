"""Clustering sentence vectors: HDBSCAN after a reduction, keywords per cluster by class-based TF-IDF, pictures.

Python API
- `cluster(vectors, texts=None, *, by=None, min_cluster_size=15, min_samples=2, reduce="pca", n_components=5,
  assign_noise=False, keywords=10, seed=0) -> Clustering`: `labels` (N,) with -1 for noise, HDBSCAN's
  `probabilities`, `keywords` per cluster, `projection` (N, 2) for pictures, `noise_share`.
- `ctfidf_keywords(texts, labels, top=10)` -> {cluster: [(word, score), ...]}; `ctfidf(counts)` is the formula.
- `words(text)`: the tokenisation the keywords use.
- `scores(labels, gold)` -> {"ari", "nmi", "v_measure"} (sklearn.metrics; noise, -1, counts as one cluster).
- `write_jsonl`, `write_png`, `write_html`; `cluster_file` is `bertkit cluster` (read, encode or read the vectors
  of `bertkit embed`, cluster, write).

The pipeline and why
1. Vectors are L2-normalised, so Euclidean distance orders pairs as cosine similarity does (the model's own score).
2. Reduction to `n_components=5` (BERTopic's choice for UMAP) before HDBSCAN: density estimates degrade with the
   dimension, and on raw 384-d MiniLM vectors HDBSCAN leaves most points as noise (445 BBC articles: 60 % noise,
   ARI 0.19). `reduce="pca"` (the default: deterministic, no extra dependency), `"umap"` (cosine UMAP, min_dist 0,
   15 neighbours, as BERTopic and KPF's example; `pip install 'bertkit[umap]'`) or `"none"`.
3. HDBSCAN (scikit-learn, excess of mass) with `min_samples=2`: little smoothing of the density, so far fewer
   points are left as noise than with scikit-learn's default min_samples = min_cluster_size (BBC: 14 % vs 42 %).
   benchmarks/cluster.py has the sweep these defaults come from, and where they fail: on some 90 % subsamples of
   the BBC articles excess of mass keeps the tree's first split (two clusters) instead of the five topics below.
   Capping the cluster size fixed that there but broke clean data (a 300-point blob became three pieces and
   noise), so it is not done.
4. `by`: one clustering per group (e.g. a news category, as KPF's example does), labels numbered on across groups.
   A group with fewer rows than `min_cluster_size` cannot hold a cluster: it stays noise and is listed in
   `Clustering.too_small`.
5. `assign_noise`: each noise point joins the cluster of its group whose centroid (of the normalised vectors) is
   nearest by cosine. Not HDBSCAN's approximate_predict: scikit-learn's HDBSCAN has none (the separate `hdbscan`
   package has), and the full embedding space, not the reduced one, is where cosine is the model's similarity.
   `Clustering.hdbscan_labels` keeps the labels before assignment, `assigned_labels` the labels after.

Keywords (c-TF-IDF, as BERTopic defines it): the documents of a cluster are one class; the weight of word t in
class c is tf(t, c) / words(c) * log(1 + A / f(t)), where tf(t, c) counts t in c, words(c) all words of c (the
L1 normalisation BERTopic applies), f(t) counts t in all classes, and A is the average number of words per class.
Noise is not a class. Words: lower-cased runs of letters and digits (Unicode `\\w` without `_`), so Korean words
stay whole (no WordPiece pieces, no jamo); English stop words (scikit-learn's list), numbers and one-letter words
other than CJK/Hangul are dropped. Korean particles are not stripped (정부가 and 정부 are two words): a suffix
list both strips real particles and cuts real words (여의도, 어린이), and the keywords read well without it.
"""

from __future__ import annotations

import gzip
import html
import json
import math
import re
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits  # scikit-learn's own dependency

from bertkit.apps.embed import BATCH_SIZE, MAX_TOKENS
from bertkit.data.corpus import json_objects
from bertkit.infer.batchio import InputError
from bertkit.io import atomic_path, atomic_write_text

REDUCTIONS = ("pca", "umap", "none")
NOISE_COLOR = "#b0b0b0"
UMAP_EXTRA = "reduce='umap' needs umap-learn: pip install 'bertkit[umap]'"


@dataclass
class Clustering:
    labels: np.ndarray  # (N,) the clusters given out: -1 noise (none left with assign_noise but in too-small groups)
    hdbscan_labels: np.ndarray  # (N,) HDBSCAN's labels, -1 noise
    assigned_labels: np.ndarray  # (N,) noise moved to the nearest cluster of its group
    probabilities: np.ndarray  # (N,) HDBSCAN's membership strength, 0 for noise
    projection: np.ndarray  # (N, 2) for pictures
    keywords: dict[int, list[tuple[str, float]]] = field(default_factory=dict)
    groups: dict[int, str] = field(default_factory=dict)  # cluster -> its group (with `by`)
    too_small: dict[str, int] = field(default_factory=dict)  # group -> rows, groups left as noise

    @property
    def noise_share(self) -> float:
        """The share of rows HDBSCAN left as noise (before any assignment)."""
        return float((self.hdbscan_labels < 0).mean()) if len(self.hdbscan_labels) else 0.0

    @property
    def n_clusters(self) -> int:
        return int(self.hdbscan_labels.max()) + 1 if len(self.hdbscan_labels) else 0

    def sizes(self) -> dict[int, int]:
        """Rows per cluster of `labels`, biggest first (noise, -1, included when there is some)."""
        values, counts = np.unique(self.labels, return_counts=True)
        return {int(v): int(c) for v, c in sorted(zip(values, counts), key=lambda vc: (-vc[1], vc[0]))}


# ---- words and c-TF-IDF ------------------------------------------------------------------------------------------
_WORD = re.compile(r"[^\W_]+")


def _stop_words() -> frozenset[str]:
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    return ENGLISH_STOP_WORDS


def words(text: str, stop_words: frozenset[str] | None = None) -> list[str]:
    """Lower-cased words of `text` for keywords: runs of letters/digits (Korean words whole), without stop words,
    numbers and one-letter words other than CJK/Hangul (文, 檢 are words in Korean titles; "s" of "it's" is not)."""
    stop = _stop_words() if stop_words is None else stop_words
    return [w for w in _WORD.findall(text.lower())
            if w not in stop and not w.isdigit() and (len(w) > 1 or w >= "\u2e80")]  # one letter: CJK/Hangul only


def ctfidf(counts: dict[int, Counter]) -> dict[int, dict[str, float]]:
    """c-TF-IDF: weight[c][t] = tf(t, c) / words(c) * log(1 + A / f(t)) (see the module docstring)."""
    totals = {c: sum(counter.values()) for c, counter in counts.items()}
    if not totals:
        return {}
    average = sum(totals.values()) / len(totals)
    across: Counter = Counter()
    for counter in counts.values():
        across.update(counter)
    return {c: {t: n / totals[c] * math.log(1 + average / across[t]) for t, n in counter.items()}
            for c, counter in counts.items()}


def ctfidf_keywords(texts: Sequence[str], labels: Sequence[int] | np.ndarray, top: int = 10
                    ) -> dict[int, list[tuple[str, float]]]:
    """The `top` words of each cluster (label >= 0) by c-TF-IDF, best first (ties: alphabetical)."""
    if len(texts) != len(labels):
        raise ValueError(f"{len(texts)} texts but {len(labels)} labels")
    stop = _stop_words()
    counts: dict[int, Counter] = {}
    for text, label in zip(texts, labels):
        if label >= 0:
            counts.setdefault(int(label), Counter()).update(words(text, stop))
    weights = ctfidf(counts)
    return {c: sorted(w.items(), key=lambda tw: (-tw[1], tw[0]))[:top] for c, w in sorted(weights.items())}


# ---- clustering --------------------------------------------------------------------------------------------------
def _normalise(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


def _umap(n_neighbors: int, n_components: int, seed: int):
    try:
        import umap
    except ImportError:
        raise ImportError(UMAP_EXTRA) from None
    # a seed makes UMAP single-threaded anyway; saying so silences its warning
    return umap.UMAP(n_neighbors=n_neighbors, n_components=n_components, min_dist=0.0, metric="cosine",
                     random_state=seed, n_jobs=1)


def reduce_vectors(x: np.ndarray, reduce: str, n_components: int, seed: int) -> np.ndarray:
    """`x` (normalised) in `n_components` dimensions; `x` itself when it has no more, or reduce == "none"."""
    n, dim = x.shape
    if reduce == "none" or n_components >= min(n, dim):
        return x
    if reduce == "pca":
        from sklearn.decomposition import PCA

        with np.errstate(invalid="ignore", divide="ignore"):  # identical rows: a variance ratio of 0 / 0
            return PCA(n_components, random_state=seed).fit_transform(x.astype(np.float64))  # float32 eigh: slower
    return _umap(min(15, n - 1), n_components, seed).fit_transform(x)


def _hdbscan(x: np.ndarray, min_cluster_size: int, min_samples: int | None) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.cluster import HDBSCAN

    n = len(x)
    model = HDBSCAN(min_cluster_size=min_cluster_size, min_samples=min(min_samples or min_cluster_size, n),
                    copy=True).fit(x)
    return model.labels_.astype(np.int64), model.probabilities_.astype(np.float32)


def _assign(x: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Noise (-1) -> the cluster whose centroid of `x` (normalised rows) is nearest by cosine."""
    out = labels.copy()
    clusters = np.unique(labels[labels >= 0])
    noise = labels < 0
    if len(clusters) and noise.any():
        centroids = _normalise(np.stack([x[labels == c].mean(0) for c in clusters]))
        out[noise] = clusters[(x[noise] @ centroids.T).argmax(1)]
    return out


def _project(x: np.ndarray, reduce: str, seed: int) -> np.ndarray:
    if len(x) < 3:
        return np.pad(x[:, :2], ((0, 0), (0, max(0, 2 - x.shape[1])))).astype(np.float32)
    if reduce == "umap":
        return _umap(min(15, len(x) - 1), 2, seed).fit_transform(x).astype(np.float32)
    from sklearn.decomposition import PCA

    with np.errstate(invalid="ignore", divide="ignore"):
        return PCA(2, random_state=seed).fit_transform(x.astype(np.float64)).astype(np.float32)


def _group_keys(by: Sequence, n: int) -> list[str]:
    if len(by) != n:
        raise ValueError(f"by: {len(by)} groups for {n} vectors")
    return [v if isinstance(v, str) else json.dumps(v, ensure_ascii=False) for v in by]


def cluster(vectors: np.ndarray, texts: Sequence[str] | None = None, *, by: Sequence | None = None,
            min_cluster_size: int = 15, min_samples: int | None = 2, reduce: str = "pca", n_components: int = 5,
            assign_noise: bool = False, keywords: int = 10, seed: int = 0) -> Clustering:
    """HDBSCAN clusters of `vectors` (N, D), within each group of `by` when given; keywords need `texts`."""
    x = np.asarray(vectors, dtype=np.float32)
    if x.ndim != 2 or len(x) == 0:
        raise ValueError(f"vectors: expected a non-empty (N, D) array, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("vectors: not all values are finite")
    if reduce not in REDUCTIONS:
        raise ValueError(f"reduce={reduce!r}: expected one of {REDUCTIONS}")
    if min_cluster_size < 2:
        raise ValueError(f"min_cluster_size={min_cluster_size}: must be at least 2")
    if min_samples is not None and min_samples < 1:
        raise ValueError(f"min_samples={min_samples}: must be at least 1")
    if texts is not None and len(texts) != len(x):
        raise ValueError(f"{len(texts)} texts for {len(x)} vectors")
    if reduce == "umap":
        _umap(2, 2, seed)  # a missing extra fails before any work
    x = _normalise(x)
    n = len(x)
    keys = _group_keys(by, n) if by is not None else [""] * n
    order: dict[str, list[int]] = {}
    for i, key in enumerate(keys):
        order.setdefault(key, []).append(i)
    labels = np.full(n, -1, dtype=np.int64)
    probabilities = np.zeros(n, dtype=np.float32)
    assigned = labels.copy()
    groups: dict[int, str] = {}
    too_small: dict[str, int] = {}
    next_label = 0
    # one BLAS thread: these matrices are small, and two threads next to a busy core made PCA 40x slower
    # (4 s instead of 0.1 s for the 11 news categories)
    with threadpool_limits(1):
        for key, rows in order.items():
            idx = np.asarray(rows)
            if len(idx) < min_cluster_size:
                too_small[key] = len(idx)
                continue
            part = x[idx]
            local, prob = _hdbscan(reduce_vectors(part, reduce, n_components, seed), min_cluster_size, min_samples)
            found = int(local.max()) + 1
            shift = np.where(local >= 0, next_label, 0)
            labels[idx], probabilities[idx] = local + shift, prob
            local_assigned = _assign(part, local)
            assigned[idx] = local_assigned + np.where(local_assigned >= 0, next_label, 0)
            if by is not None:
                groups.update({next_label + c: key for c in range(found)})
            next_label += found
        final = assigned if assign_noise else labels
        result = Clustering(final, labels, assigned, probabilities, _project(x, reduce, seed), groups=groups,
                            too_small=too_small)
    if texts is not None and keywords > 0:
        result.keywords = ctfidf_keywords(texts, final, keywords)
    return result


def scores(labels: Sequence[int] | np.ndarray, gold: Sequence) -> dict[str, float]:
    """ARI, NMI and V-measure of `labels` against `gold`; noise (-1) counts as one cluster of its own."""
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score, v_measure_score

    gold = [json.dumps(g) if isinstance(g, (list, dict)) else g for g in gold]  # JSON lists/objects: hashable
    return {"ari": float(adjusted_rand_score(gold, labels)), "nmi": float(normalized_mutual_info_score(gold, labels)),
            "v_measure": float(v_measure_score(gold, labels))}


# ---- input -------------------------------------------------------------------------------------------------------
def read_records(path: str | Path, fields: Sequence[str]) -> list[dict]:
    """The JSON objects of a JSON-lines file (.gz read too), each checked for `fields`; errors name file:line."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    records = []
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        try:
            for where, item in json_objects(path, f, InputError):
                for name in fields:
                    if name not in item:
                        raise InputError(f"{where}: missing field '{name}'")
                records.append(item)
        except UnicodeDecodeError:
            raise InputError(f"{path}: line {len(records) + 1} or after: not valid UTF-8") from None
    if not records:
        raise InputError(f"{path}: no input (the file holds no JSON objects)")
    return records


def _texts(records: list[dict], field_name: str, path) -> list[str]:
    out = []
    for i, r in enumerate(records):
        if not isinstance(r[field_name], str):
            raise InputError(f"{path}: object {i + 1}: '{field_name}' must be a string")
        out.append(r[field_name])
    return out


# ---- output ------------------------------------------------------------------------------------------------------
def _colors(n: int) -> list[str]:
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    cmap = colormaps["tab20"]
    return [to_hex(cmap(i % 20)) for i in range(n)]


def _keyword_text(result: Clustering, label: int, n: int = 6) -> str:
    return ", ".join(w for w, _ in result.keywords.get(label, [])[:n])


def write_jsonl(records: Sequence[dict], result: Clustering, path: str | Path) -> None:
    """Each record with "cluster" (-1 for noise) and "keywords" (its cluster's words) added."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as out:
        for record, label in zip(records, result.labels):
            words_ = [w for w, _ in result.keywords.get(int(label), [])]
            out.write(json.dumps({**record, "cluster": int(label), "keywords": words_}, ensure_ascii=False) + "\n")


def write_png(result: Clustering, path: str | Path, title: str = "") -> None:
    """The 2-D projection, coloured by cluster, noise grey, cluster numbers at their medians. Keywords are left to
    the HTML view: matplotlib's default font has no Hangul."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xy, labels = result.projection, result.labels
    colors = _colors(max(int(labels.max()) + 1, 1))
    fig, ax = plt.subplots(figsize=(9, 7), dpi=110)
    noise = labels < 0
    size = 4 if len(labels) > 2000 else 10
    ax.scatter(xy[noise, 0], xy[noise, 1], s=size, c=NOISE_COLOR, alpha=0.5, linewidths=0, label="noise")
    ax.scatter(xy[~noise, 0], xy[~noise, 1], s=size, c=[colors[c] for c in labels[~noise]], alpha=0.8, linewidths=0)
    for label in [c for c in result.sizes() if c >= 0][:40]:  # the 40 biggest: more numbers are unreadable
        mx, my = np.median(xy[labels == label], axis=0)
        ax.annotate(str(label), (mx, my), fontsize=8, ha="center", va="center", weight="bold")
    ax.set_title(title or f"{len(labels)} points, {result.n_clusters} clusters, "
                          f"{result.noise_share:.0%} noise (grey)")
    ax.set_xticks([])
    ax.set_yticks([])
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def write_html(result: Clustering, path: str | Path, texts: Sequence[str], title: str = "clusters") -> None:
    """A standalone page: an inline SVG scatter of the projection (each text on hover) and a legend of clusters
    with their sizes and keywords. No script, no external resource."""
    xy, labels = result.projection, result.labels
    width, height, pad = 900, 640, 12
    lo, hi = xy.min(0), xy.max(0)
    span = np.where(hi - lo > 0, hi - lo, 1.0)
    px = pad + (xy[:, 0] - lo[0]) / span[0] * (width - 2 * pad)
    py = height - pad - (xy[:, 1] - lo[1]) / span[1] * (height - 2 * pad)
    colors = _colors(max(int(labels.max()) + 1, 1))
    radius = 2.5 if len(labels) > 2000 else 4
    points = []
    for i in np.argsort(labels >= 0, kind="stable"):  # noise first, so clusters are drawn over it
        label = int(labels[i])
        color = colors[label] if label >= 0 else NOISE_COLOR
        text = texts[i] if len(texts[i]) <= 200 else texts[i][:200] + "…"
        tip = html.escape(f"[{label}] {text}" if label >= 0 else f"[noise] {text}")
        points.append(f'<circle cx="{px[i]:.1f}" cy="{py[i]:.1f}" r="{radius}" fill="{color}"><title>{tip}'
                      f"</title></circle>")
    legend = []
    for label, count in result.sizes().items():
        color = colors[label] if label >= 0 else NOISE_COLOR
        name = f"cluster {label}" if label >= 0 else "noise"
        group = f' <span class="g">{html.escape(result.groups[label])}</span>' if label in result.groups else ""
        legend.append(f'<li><span class="sw" style="background:{color}"></span><b>{name}</b> ({count}){group} '
                      f"{html.escape(_keyword_text(result, label, 10))}</li>")
    summary = (f"{len(labels)} texts, {result.n_clusters} clusters, {result.noise_share:.1%} left as noise by "
               f"HDBSCAN")
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{font-family: system-ui, sans-serif; margin: 16px; display: flex; gap: 16px; align-items: flex-start}}
svg {{border: 1px solid #ddd; flex: none}} circle {{fill-opacity: .8}} circle:hover {{stroke: #000; stroke-width: 2}}
ul {{list-style: none; padding: 0; margin: 0; max-height: 640px; overflow-y: auto; font-size: 13px}}
li {{margin: 2px 0}} .sw {{display: inline-block; width: 10px; height: 10px; margin-right: 4px}}
.g {{color: #666}}
</style></head>
<body><svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}">
{chr(10).join(points)}
</svg>
<div><h3>{html.escape(title)}</h3><p>{html.escape(summary)}; hover a point for its text.</p><ul>
{chr(10).join(legend)}
</ul></div></body></html>
"""
    atomic_write_text(path, page)


# ---- the CLI job -------------------------------------------------------------------------------------------------
def encode_texts(model: str | Path, texts: Sequence[str], batch_size: int = BATCH_SIZE, max_tokens: int = MAX_TOKENS,
                 backend: str = "auto", int8: bool = False, threads: int = 0, bf16: bool = False) -> np.ndarray:
    """Unit sentence vectors through the Predictor with these settings (`bertkit.apps.sentence.encode_texts`)."""
    from bertkit.apps.sentence import encode_texts as encode
    from bertkit.apps.embed import predictor_settings
    from bertkit.infer.predictor import Predictor

    predictor = Predictor.from_pretrained(model, predictor_settings(batch_size, max_tokens, backend, int8, threads,
                                                                    bf16))
    return encode(predictor, texts, batch_size, show_progress=sys.stderr.isatty())


def read_vectors(directory: str | Path, count: int) -> np.ndarray:
    """The rows of a `bertkit embed` vectors directory as float32; row i must be input object i."""
    from bertkit.apps.vectors import open_vectors

    stored = open_vectors(directory)
    if len(stored) != count:
        raise InputError(f"{directory}: {len(stored)} vectors for {count} input objects; embed the same input file "
                         "(row i is the vector of object i)")
    return np.asarray(stored.dequantize(0, None), dtype=np.float32)


def cluster_file(model: str | Path | None, input: str | Path, output: str | Path, *, text_field: str = "text",
                 by: str | None = None, labels: str | None = None, min_cluster_size: int = 15,
                 min_samples: int | None = 2, reduce: str = "pca", assign_noise: bool = False, keywords: int = 10,
                 plot: str | Path | None = None, html_path: str | Path | None = None, batch_size: int = BATCH_SIZE,
                 max_tokens: int = MAX_TOKENS, backend: str = "auto", int8: bool = False, bf16: bool = False,
                 seed: int = 0, vectors: str | Path | None = None) -> dict:
    """`bertkit cluster`: read JSON lines, encode `text_field` with `model` (or read the rows of a `bertkit embed`
    `vectors` directory of the same file), cluster, write; a summary (with scores against the `labels` field,
    before and after noise assignment, when it is given)."""
    if (model is None) == (vectors is None):
        raise InputError("give either a model to encode the texts with, or a vectors directory (not both)")
    for out in (output, plot, html_path):
        if out is not None and Path(out).resolve() == Path(input).resolve():
            raise InputError(f"{out}: is the input file; write the output elsewhere")
    fields = [text_field] + [f for f in (by, labels) if f]
    records = read_records(input, fields)
    texts = _texts(records, text_field, input)
    t0 = time.perf_counter()
    if vectors is not None:
        rows = read_vectors(vectors, len(texts))
    else:
        rows = encode_texts(model, texts, batch_size, max_tokens, backend, int8, bf16=bf16)
    t1 = time.perf_counter()
    result = cluster(rows, texts, by=[r[by] for r in records] if by else None, min_cluster_size=min_cluster_size,
                     min_samples=min_samples, reduce=reduce, assign_noise=assign_noise, keywords=keywords, seed=seed)
    t2 = time.perf_counter()
    write_jsonl(records, result, output)
    if plot:
        write_png(result, plot)
    if html_path:
        write_html(result, html_path, texts, title=f"{Path(input).name}: clusters")
    summary = {"texts": len(texts), "clusters": result.n_clusters, "noise_share": round(result.noise_share, 4),
               "too_small_groups": result.too_small,
               "seconds": {"encode": round(t1 - t0, 2), "cluster": round(t2 - t1, 2),
                           "total": round(time.perf_counter() - t0, 2)}}
    if labels:
        gold = [r[labels] for r in records]
        summary["scores"] = {"noise_as_cluster": scores(result.hdbscan_labels, gold),
                             "noise_assigned": scores(result.assigned_labels, gold)}
    return summary
