"""Dynamic micro-batching: concurrent requests for the same model and operation are run together.

Requests wait at most `max_wait_ms` for company, and a batch holds at most `max_batch` items (texts, pairs,
questions) across requests; the Predictor then orders the items by length and pads only within its own batches,
so mixing short and long requests costs nothing extra. One worker thread runs the model (one thread per core is
the CPU serving rule: several processes, each with its own worker, use several cores).

The queue is bounded in items: a request that does not fit raises `QueueFull` at once (the service answers 503
with Retry-After) instead of growing memory without limit. A request that waits longer than its timeout is
answered with `TimeoutError` and dropped from the queue if it has not started. `close()` stops accepting new
requests and finishes the ones already queued (graceful shutdown).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


class QueueFull(RuntimeError):
    """The queue holds `max_queue` items already; retry later."""


class ShuttingDown(RuntimeError):
    """The batcher is closing and accepts no new requests."""


@dataclass
class BatcherSettings:
    max_batch: int = 32  # items per model call
    max_wait_ms: float = 5.0  # how long the first request of a batch waits for others
    max_queue: int = 1024  # items waiting, across requests; beyond it: QueueFull


@dataclass
class _Request:
    key: tuple[str, str]  # (model name, operation)
    items: list
    options: dict
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    arrived: float = field(default_factory=time.perf_counter)
    started: bool = False
    cancelled: bool = False


@dataclass
class BatchStats:
    batches: int = 0
    items: int = 0
    sizes: list[int] = field(default_factory=list)  # recent batch sizes (bounded), for the metrics histogram


class MicroBatcher:
    """`await submit(model, op, items, **options)` -> one result per item, computed by `run(model, op, items,
    options)` in the worker thread together with other requests' items of the same (model, op, options)."""

    def __init__(self, run: Callable[[str, str, list, dict], list], settings: BatcherSettings | None = None):
        self.run_fn, self.settings = run, settings or BatcherSettings()
        self._queue: deque[_Request] = deque()
        self._queued_items = 0
        self._cond = threading.Condition()
        self._closing = False
        self.stats = BatchStats()
        self._worker = threading.Thread(target=self._loop, name="bertkit-batcher", daemon=True)
        self._worker.start()

    # ---- the caller's side (event loop) -----------------------------------------------------------------------
    @property
    def depth(self) -> int:
        """Items waiting (the queue-depth gauge)."""
        return self._queued_items

    async def submit(self, model: str, op: str, items: list, timeout: float | None = None, **options) -> list:
        loop = asyncio.get_running_loop()
        request = _Request((model, op), list(items), options, loop.create_future(), loop)
        with self._cond:
            if self._closing:
                raise ShuttingDown("the service is shutting down")
            if self._queued_items + len(items) > self.settings.max_queue:
                raise QueueFull(f"queue full ({self._queued_items} items waiting, limit {self.settings.max_queue})")
            self._queue.append(request)
            self._queued_items += len(items)
            self._cond.notify()
        try:
            return await asyncio.wait_for(asyncio.shield(request.future), timeout)
        except asyncio.TimeoutError:
            with self._cond:
                if not request.started:  # never ran: take it out so that it costs nothing
                    request.cancelled = True
                    self._queue.remove(request)
                    self._queued_items -= len(request.items)
            raise TimeoutError(f"no answer within {timeout:g} s") from None

    def close(self, wait: bool = True) -> None:
        """Accept nothing more; with `wait`, return once everything queued has been answered."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if wait:
            self._worker.join()

    # ---- the worker thread ------------------------------------------------------------------------------------
    def _take_batch(self) -> list[_Request] | None:
        """The next batch: the oldest request and later ones with the same key and options, up to max_batch items,
        once max_wait has passed since the oldest arrived or the batch is full."""
        s = self.settings
        with self._cond:
            while True:
                if not self._queue:
                    if self._closing:
                        return None
                    self._cond.wait()
                    continue
                head = self._queue[0]
                same = [r for r in self._queue if r.key == head.key and r.options == head.options]
                n = sum(len(r.items) for r in same)
                waited = time.perf_counter() - head.arrived
                if n >= s.max_batch or waited * 1000 >= s.max_wait_ms or self._closing:
                    batch, total = [], 0
                    for r in same:
                        if batch and total + len(r.items) > s.max_batch:
                            break
                        batch.append(r)
                        total += len(r.items)
                    for r in batch:
                        r.started = True
                        self._queue.remove(r)
                        self._queued_items -= len(r.items)
                    return batch
                self._cond.wait(timeout=s.max_wait_ms / 1000 - waited)

    def _loop(self) -> None:
        while (batch := self._take_batch()) is not None:
            items = [x for r in batch for x in r.items]
            model, op = batch[0].key
            try:
                results = self.run_fn(model, op, items, batch[0].options)
                error = None
            except Exception as e:  # answered to every request of the batch; the worker goes on
                results, error = None, e
            self.stats.batches += 1
            self.stats.items += len(items)
            self.stats.sizes.append(len(items))
            del self.stats.sizes[:-4096]
            start = 0
            for r in batch:
                n = len(r.items)
                if error is None:
                    r.loop.call_soon_threadsafe(_resolve, r.future, results[start:start + n], None)
                else:
                    r.loop.call_soon_threadsafe(_resolve, r.future, None, error)
                start += n


def _resolve(future: asyncio.Future, value: Any, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(value)
