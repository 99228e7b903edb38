"""The streaming engine of ``segvn.predict``: decode, infer in batches and consume, all overlapped.

Three kinds of thread share the work, linked by bounded queues (``queue_size`` batches each), so memory
stays constant however long the video is::

    decode thread --batches of frames--> main thread: Predictor (batched model) --+--> writer thread
                                                                                  +--> TC thread

With ``workers > 1`` (``segvn.predict``'s ``model_workers``) that many model threads take consecutive
batches and the main thread hands their predictions on in order.

Decoding (PyAV/decord), the network (torch), OpenCV, PNG and H.264 encoding all release the GIL, so
these stages run in parallel. Frames keep their order through every stage. What the consumers do
(draw, encode, measure) is up to the caller: :mod:`segvn.inference.video` wires them.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

import numpy as np

from segvn.data.yuv import I420Frame, image_size
from segvn.inference.predictor import BatchPrediction, Predictor


class Item(NamedTuple):
    """One frame to predict: index in its input, timestamp (s; ``None`` for images), picture, output name,
    source. The picture is RGB uint8 ``(H, W, 3)`` or an :class:`~segvn.data.yuv.I420Frame` (videos)."""

    index: int
    timestamp: float | None
    image: np.ndarray | I420Frame
    name: str
    source: str


Consumer = tuple[str, Callable[[list[Item], BatchPrediction], None], Callable[[], None]]
"""``(name, handle(batch, prediction), close())``: one thread of :func:`run_stream`."""

_END = object()


class _Failure(NamedTuple):
    error: BaseException


class _Stage(threading.Thread):
    """A consumer thread: ``handle(msg)`` for every message in order, then ``close()``; keeps the first error.

    After an error it keeps draining its queue (so the main thread never blocks on it) until :meth:`finish`.
    """

    def __init__(self, name: str, handle: Callable[[Any], None], close: Callable[[], None], size: int):
        super().__init__(name=name, daemon=True)
        self.queue: queue.Queue = queue.Queue(maxsize=size)
        self._handle, self._close = handle, close
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while (msg := self.queue.get()) is not _END:
                if self.error is None:
                    try:
                        self._handle(msg)
                    except BaseException as err:  # reported to the main thread
                        self.error = err
        finally:
            try:
                self._close()
            except BaseException as err:
                self.error = self.error or err

    def put(self, msg: Any) -> None:
        if self.error is not None:
            raise self.error
        self.queue.put(msg)

    def finish(self) -> BaseException | None:
        self.queue.put(_END)
        self.join()
        return self.error


class _Producer(threading.Thread):
    """Decode thread: groups items into batches of one frame size; ends with ``_END`` or a ``_Failure``."""

    def __init__(self, items: Iterator[Item], batch_size: int, size: int) -> None:
        super().__init__(name="segvn-decode", daemon=True)
        self.items, self.batch_size = items, batch_size
        self.queue: queue.Queue = queue.Queue(maxsize=size)
        self.stop = threading.Event()

    def _put(self, msg: Any) -> bool:
        while not self.stop.is_set():
            try:
                self.queue.put(msg, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def run(self) -> None:
        batch: list[Item] = []
        try:
            for item in self.items:
                if batch and image_size(item.image) != image_size(batch[0].image):
                    if not self._put(batch):
                        return
                    batch = []
                batch.append(item)
                if len(batch) >= self.batch_size:
                    if not self._put(batch):
                        return
                    batch = []
            if not batch or self._put(batch):
                self._put(_END)
        except BaseException as err:
            if not batch or self._put(batch):
                self._put(_Failure(err))
        finally:
            close = getattr(self.items, "close", None)
            if close is not None:
                close()


def run_stream(
    items: Iterator[Item],
    predictor: Predictor,
    consumers: Sequence[Consumer],
    batch_size: int,
    queue_size: int = 2,
    advance: Callable[[int], None] | None = None,
    workers: int = 1,
) -> BaseException | None:
    """Push ``items`` through decode thread -> ``predictor`` (this thread) -> one thread per consumer.

    ``consumers`` are ``(name, handle(batch, prediction), close())``; every consumer's ``close`` runs
    whatever happens (so a video file is always finalised). Returns the input's error (the exception
    the item iterator raised, after every item before it went through), or ``None``; errors of the
    predictor or of a consumer are raised.

    ``workers > 1`` calls ``predictor`` from that many threads at once, on consecutive batches, and
    hands the predictions on in order; only for a predictor without memory across batches (no temporal
    smoothing) whose model runs concurrently (an ONNX Runtime session of one thread each: a stalled
    thread then delays its own batch only, not a parallel region of both cores).
    """
    if workers > 1:
        return _run_parallel(items, predictor, consumers, batch_size, queue_size, advance, workers)
    producer = _Producer(items, batch_size, queue_size)
    stages = _stages(consumers, queue_size)
    for stage in stages:
        stage.start()
    producer.start()
    input_error: BaseException | None = None
    try:
        while True:
            msg = producer.queue.get()
            if msg is _END:
                break
            if isinstance(msg, _Failure):
                input_error = msg.error
                break
            _hand_on(stages, msg, predictor([item.image for item in msg]), advance)
    finally:
        producer.stop.set()
        errors = [stage.finish() for stage in stages]
        producer.join()
    _raise_first(errors)
    return input_error


def _stages(consumers: Sequence[Consumer], size: int) -> list[_Stage]:
    return [
        _Stage(f"segvn-{name}", lambda m, h=handle: h(*m), close, size) for name, handle, close in consumers
    ]


def _hand_on(stages: list[_Stage], batch: list[Item], prediction: BatchPrediction, advance) -> None:
    for stage in stages:
        stage.put((batch, prediction))
    if advance is not None:
        advance(len(batch))


def _raise_first(errors: list[BaseException | None]) -> None:
    for err in errors:
        if err is not None:
            raise err


def _run_parallel(
    items: Iterator[Item],
    predictor: Predictor,
    consumers: Sequence[Consumer],
    batch_size: int,
    queue_size: int,
    advance: Callable[[int], None] | None,
    workers: int,
) -> BaseException | None:
    """:func:`run_stream` with ``workers`` model threads; batches are numbered as they are taken."""
    if getattr(predictor, "smoother", None) is not None:
        raise ValueError("workers > 1 needs a predictor without temporal smoothing (temporal.ema=0)")
    producer = _Producer(items, batch_size, max(queue_size, workers))
    stages = _stages(consumers, queue_size)
    done: queue.Queue = queue.Queue()  # (number, batch, prediction | _Failure | _END marker)
    # batches taken but not yet handed on: bounded, so a slow writer holds the workers back too
    slots = threading.Semaphore(workers + queue_size)
    take = threading.Lock()
    taken = [0]
    stop = threading.Event()

    def work() -> None:
        while not stop.is_set():
            if not slots.acquire(timeout=0.1):
                continue
            with take:  # the number follows the order of the batches
                try:
                    msg = producer.queue.get(timeout=0.1)
                except queue.Empty:
                    slots.release()
                    continue
                number = taken[0]  # for the end: the number of batches before it
                if msg is _END or isinstance(msg, _Failure):
                    producer.queue.put(msg)  # the other workers end too (its slot was just freed)
                else:
                    taken[0] += 1
            if msg is _END or isinstance(msg, _Failure):
                slots.release()
                done.put((number, None, msg))
                return
            try:
                done.put((number, msg, predictor([item.image for item in msg])))
            except BaseException as err:  # raised in the main thread
                done.put((number, msg, _Failure(err)))
                return

    threads = [threading.Thread(target=work, name=f"segvn-model-{i}", daemon=True) for i in range(workers)]
    for thread in stages + [producer] + threads:
        thread.start()
    input_error: BaseException | None = None
    ready: dict[int, tuple[Any, Any]] = {}
    following, end = 0, None
    try:
        while end is None or following < end:
            number, msg, result = done.get()
            if msg is None:  # the end of the input (or its error) after ``number`` batches
                end = number if end is None else min(end, number)
                if isinstance(result, _Failure):
                    input_error = result.error
                continue
            if isinstance(result, _Failure):
                raise result.error
            ready[number] = (msg, result)
            while following in ready:
                _hand_on(stages, *ready.pop(following), advance)
                following += 1
                slots.release()
    finally:
        stop.set()
        producer.stop.set()
        errors = [stage.finish() for stage in stages]
        producer.join()
        for thread in threads:
            thread.join()
    _raise_first(errors)
    return input_error
