"""Dynamic micro-batching for ONE model: concurrent requests for the same operation are run together.

The service gives every model its own `MicroBatcher` (its own queue and worker thread) rather than one scheduler
shared by all models: a long batch of one model then cannot delay another model's requests at all, there is no
cross-model fairness policy to get wrong, and a stalled worker names its model. The cost is one thread per model,
which the OS schedules across cores like the worker processes of `--workers N`.

Requests wait at most `max_wait_ms` for company, and a batch holds at most `max_batch` items (texts, pairs,
questions) across requests; the Predictor then orders the items by length and pads only within its own batches,
so mixing short and long requests costs nothing extra. Work is bounded in tokens as well as items: each item
carries its cost (the tokens the model will read, windows included, counted by the caller at admission), and one
model call holds at most `max_batch_tokens` (an item larger than that runs alone). A batch larger than that (one
big request, or several) is run as several model calls, and between calls the worker drops requests that were
cancelled (the client went away) or whose deadline passed, so abandoned work stops within one model call.

The queue is bounded in items: a request that does not fit raises `QueueFull` at once (the service answers 503
with Retry-After) instead of growing memory without limit. A request that waits longer than its timeout is
answered with `TimeoutError` and dropped from the queue if it has not started. `busy_for()` says how long the
current model call has been running (the service's /healthz reports a stall from it). `close()` stops accepting
new requests and finishes the ones already queued (graceful shutdown).
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
    max_batch_tokens: int = 2048  # tokens per model call (~0.5 s of MiniLM on one core)


@dataclass
class _Request:
    op: str
    items: list
    costs: list[int]
    options: dict
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    deadline: float  # perf_counter time after which nobody waits for the answer
    arrived: float = field(default_factory=time.perf_counter)
    started: bool = False
    cancelled: bool = False
    results: list = field(default_factory=list)

    def abandoned(self) -> bool:
        return self.cancelled or time.perf_counter() > self.deadline


@dataclass
class BatchStats:
    batches: int = 0  # model calls
    items: int = 0
    dropped: int = 0  # started requests abandoned between model calls
    sizes: list[int] = field(default_factory=list)  # recent batch sizes (bounded), for the metrics histogram


class MicroBatcher:
    """`await submit(op, items, costs, timeout, **options)` -> one result per item, computed by
    `run(op, items, options)` in this batcher's worker thread together with other requests' items of the same
    (op, options)."""

    def __init__(self, run: Callable[[str, list, dict], list], settings: BatcherSettings | None = None,
                 name: str = "model"):
        self.run_fn, self.settings, self.name = run, settings or BatcherSettings(), name
        self._queue: deque[_Request] = deque()
        self._queued_items = 0
        self._cond = threading.Condition()
        self._closing = False
        self._call_started: float | None = None  # perf_counter time the running model call began
        self.stats = BatchStats()
        self._worker = threading.Thread(target=self._loop, name=f"bertkit-batcher-{name}", daemon=True)
        self._worker.start()

    # ---- the caller's side (event loop) -----------------------------------------------------------------------
    @property
    def depth(self) -> int:
        """Items waiting (the queue-depth gauge)."""
        return self._queued_items

    def busy_for(self) -> float:
        """Seconds the current model call has been running (0 when idle)."""
        started = self._call_started
        return 0.0 if started is None else time.perf_counter() - started

    @property
    def alive(self) -> bool:
        return self._worker.is_alive()

    async def submit(self, op: str, items: list, costs: list[int] | None = None, timeout: float | None = None,
                     **options) -> list:
        """Cancelling the awaiting task (a client that went away) cancels the work: dropped from the queue if it
        has not started, stopped at the next model call if it has."""
        loop = asyncio.get_running_loop()
        costs = list(costs) if costs is not None else [1] * len(items)
        deadline = time.perf_counter() + (timeout if timeout is not None else float("inf"))
        request = _Request(op, list(items), costs, options, loop.create_future(), loop, deadline)
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
            self._cancel(request)
            raise TimeoutError(f"no answer within {timeout:g} s") from None
        except asyncio.CancelledError:
            self._cancel(request)
            raise

    def _cancel(self, request: _Request) -> None:
        with self._cond:
            request.cancelled = True
            if not request.started:  # never ran: take it out so that it costs nothing
                self._queue.remove(request)
                self._queued_items -= len(request.items)

    def close(self, wait: bool = True) -> None:
        """Accept nothing more; with `wait`, return once everything queued has been answered."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if wait:
            self._worker.join()

    # ---- the worker thread ------------------------------------------------------------------------------------
    def _take_batch(self) -> list[_Request] | None:
        """The next batch: the oldest request and later ones with the same op and options, up to max_batch items
        and max_batch_tokens (the oldest is always taken, whatever its size), once max_wait has passed since it
        arrived or the batch is full."""
        s = self.settings
        with self._cond:
            while True:
                if not self._queue:
                    if self._closing:
                        return None
                    self._cond.wait()
                    continue
                head = self._queue[0]
                same = [r for r in self._queue if r.op == head.op and r.options == head.options]
                n = sum(len(r.items) for r in same)
                tokens = sum(sum(r.costs) for r in same)
                waited = time.perf_counter() - head.arrived
                if n >= s.max_batch or tokens >= s.max_batch_tokens or waited * 1000 >= s.max_wait_ms \
                        or self._closing:
                    batch, total, total_tokens = [], 0, 0
                    for r in same:
                        if batch and (total + len(r.items) > s.max_batch
                                      or total_tokens + sum(r.costs) > s.max_batch_tokens):
                            break
                        batch.append(r)
                        total += len(r.items)
                        total_tokens += sum(r.costs)
                    for r in batch:
                        r.started = True
                        self._queue.remove(r)
                        self._queued_items -= len(r.items)
                    return batch
                self._cond.wait(timeout=s.max_wait_ms / 1000 - waited)

    def _chunks(self, batch: list[_Request]):
        """(requests' item ranges) for one model call at a time: up to max_batch items and max_batch_tokens
        (at least one item), skipping requests abandoned since the previous call."""
        s = self.settings
        cursor = {id(r): 0 for r in batch}
        while True:
            live = []
            for r in batch:
                if cursor[id(r)] < len(r.items) and r.abandoned():
                    if cursor[id(r)] > 0:
                        self.stats.dropped += 1
                    cursor[id(r)] = len(r.items)
                elif cursor[id(r)] < len(r.items):
                    live.append(r)
            if not live:
                return
            chunk, n, tokens = [], 0, 0
            for r in live:
                a = b = cursor[id(r)]
                while b < len(r.items) and (n == 0 or (n < s.max_batch and tokens + r.costs[b] <= s.max_batch_tokens)):
                    n += 1
                    tokens += r.costs[b]
                    b += 1
                if b > a:
                    chunk.append((r, a, b))
                    cursor[id(r)] = b
                if b < len(r.items):
                    break  # the call is full
            yield chunk

    def _loop(self) -> None:
        while (batch := self._take_batch()) is not None:
            op, options = batch[0].op, batch[0].options
            for chunk in self._chunks(batch):
                items = [x for r, a, b in chunk for x in r.items[a:b]]
                self._call_started = time.perf_counter()
                try:
                    results, error = self.run_fn(op, items, options), None
                except Exception as e:  # answered to every request of the call; the worker goes on
                    results, error = None, e
                finally:
                    self._call_started = None
                self.stats.batches += 1
                self.stats.items += len(items)
                self.stats.sizes.append(len(items))
                del self.stats.sizes[:-4096]
                start = 0
                for r, a, b in chunk:
                    if error is not None:
                        r.cancelled = True  # no further calls for it
                        r.loop.call_soon_threadsafe(_resolve, r.future, None, error)
                        continue
                    r.results.extend(results[start:start + b - a])
                    start += b - a
                    if b == len(r.items):
                        r.loop.call_soon_threadsafe(_resolve, r.future, r.results, None)


def _resolve(future: asyncio.Future, value: Any, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(value)
