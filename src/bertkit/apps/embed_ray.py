"""`bertkit embed --ray`: the same job (`bertkit.apps.embed`) on Ray Data (`pip install 'bertkit[ray]'`):
`embed_corpus_ray(model_dir, inputs, output, address, **embed_corpus_options)`.

The driver does the first pass (validation, counts, where each chunk starts) and writes the vectors directory;
Ray runs the chunks. The dataset is one row per chunk still to do (`ray.data.from_items`, one block each);
`map_batches` hands them, one at a time, to a pool of `ChunkEmbedder` actors, each holding one Predictor, which
read their chunk from the input files (seeking to its start) and embed it exactly as a single process does
(`embed_chunk`). The rows come back in input order (`preserve_order`), one row per text, and the driver commits
each chunk as soon as it is whole, so `--resume` works as for a local run and the vectors are the same.

Pointing it at a cluster: `--ray ray://head:10001` (Ray Client), or `RAY_ADDRESS=...` with `--ray` (the default
`auto` also finds a cluster started with `ray start` on this machine, else starts a local one). Every worker needs
bertkit installed, and the model directory and the input files readable at the same paths as on the driver (a
shared filesystem); the driver needs write access to the output. Actors: one per `threads` CPUs (default 1) that
the cluster has, each running torch (or ONNX Runtime) with that many threads.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterator, Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np

from bertkit.apps.embed import Job, embed_chunk, embed_corpus, load_predictor
from bertkit.apps.vectors import Vectors


class ChunkEmbedder:
    """A Ray Data actor: one Predictor, loaded once; each call embeds the chunks named in the batch."""

    def __init__(self, model_dir: str, settings, job: Job, normalize: bool):
        self.predictor = load_predictor(model_dir, settings)
        self.job, self.normalize = job, normalize

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from bertkit.infer.batchio import bulk_job  # as in a local run

        chunks, ids, vectors = [], [], []
        for k in batch["chunk"].tolist():
            with bulk_job(self.predictor):
                chunk_ids, chunk_vectors = embed_chunk(self.predictor, self.job, k, self.normalize)
            chunks += [k] * len(chunk_ids)
            ids += [json.dumps(i, ensure_ascii=False) for i in chunk_ids]
            vectors.append(chunk_vectors)
        return {"chunk": np.array(chunks, dtype=np.int64), "id": np.array(ids, dtype=object),
                "vector": np.concatenate(vectors)}


def _connect(address: str) -> bool:
    """Connect to (or start) Ray; True if this call started it (and should shut it down)."""
    try:
        import ray
    except ImportError:
        raise ImportError("--ray needs Ray: pip install 'bertkit[ray]'") from None
    if ray.is_initialized():
        return False
    kwargs = {"log_to_driver": False, "include_dashboard": False}
    if address == "auto":
        ray.init(**kwargs)  # RAY_ADDRESS, else a cluster started on this machine, else a new local one
    else:
        ray.init(address=address, **kwargs)
    return True


def embed_corpus_ray(model_dir: str | Path, inputs: Sequence[str | Path], output: str | Path,
                     address: str = "auto", **options) -> Vectors:
    """`embed_corpus` with the chunks computed on Ray Data. address: "auto" (RAY_ADDRESS, else a cluster started on
    this machine, else a new local one), "local", or "ray://head:10001"."""
    if importlib.util.find_spec("ray") is None:  # before the output directory is made
        raise ImportError("--ray needs Ray: pip install 'bertkit[ray]'")
    return embed_corpus(model_dir, inputs, output, runner=partial(ray_chunks, address=address), **options)


def ray_chunks(predictor, model_dir: str | Path, job: Job, first: int, normalize: bool,
               address: str = "auto") -> Iterator[tuple[list, np.ndarray]]:
    """(ids, vectors) of chunks first.. in input order, computed by Ray Data actors (each loads its own Predictor
    with the driver's settings)."""
    settings = predictor.settings
    started = _connect(address)
    import ray

    try:
        todo = list(range(first, len(job.chunks)))
        if not todo:
            return
        threads = max(1, settings.threads)
        cpus = int(ray.cluster_resources().get("CPU", 1))
        actors = max(1, min(len(todo), cpus // threads))
        context = ray.data.DataContext.get_current()
        context.execution_options.preserve_order = True
        context.enable_progress_bars = False  # the driver shows its own
        ds = ray.data.from_items([{"chunk": k} for k in todo], override_num_blocks=len(todo))
        ds = ds.map_batches(ChunkEmbedder, batch_size=1, batch_format="numpy",
                            compute=ray.data.ActorPoolStrategy(size=actors), num_cpus=threads,
                            fn_constructor_kwargs={"model_dir": str(Path(model_dir).resolve()),
                                                   "settings": replace(settings, threads=threads), "job": job,
                                                   "normalize": normalize})
        pending_ids: list = []
        pending: list[np.ndarray] = []
        k = todo[0]
        want = sum(seg[3] for seg in job.chunks[k])
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            if len(batch["chunk"]) and (batch["chunk"] < k).any():
                raise RuntimeError("Ray Data returned chunks out of order")
            pending_ids += [json.loads(i) for i in batch["id"]]
            pending.append(np.asarray(batch["vector"], dtype=np.float32))
            while len(pending_ids) >= want:  # chunk k is whole: hand it to the writer
                rows = np.concatenate(pending)
                yield pending_ids[:want], rows[:want]
                pending_ids, pending = pending_ids[want:], [rows[want:]]
                k += 1
                if k == len(job.chunks):
                    break
                want = sum(seg[3] for seg in job.chunks[k])
        if k != len(job.chunks):
            raise RuntimeError(f"Ray Data returned {k - first} of {len(todo)} chunks")
    finally:
        if started:
            ray.shutdown()
