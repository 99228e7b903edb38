"""The streaming engine of ``segvn.predict``: decode, infer in batches and consume, all overlapped.

Three kinds of thread share the work, linked by bounded queues (``queue_size`` batches each), so memory
stays constant however long the video is::

    decode thread --batches of frames--> main thread: Predictor (batched model) --+--> writer thread
                                                                                  +--> TC thread

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

from segvn.inference.predictor import BatchPrediction, Predictor


class Item(NamedTuple):
    """One frame to predict: index in its input, timestamp (s; ``None`` for images), RGB, output name, source."""

    index: int
    timestamp: float | None
    rgb: np.ndarray
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
                if batch and item.rgb.shape != batch[0].rgb.shape:
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
) -> BaseException | None:
    """Push ``items`` through decode thread -> ``predictor`` (this thread) -> one thread per consumer.

    ``consumers`` are ``(name, handle(batch, prediction), close())``; every consumer's ``close`` runs
    whatever happens (so a video file is always finalised). Returns the input's error (the exception
    the item iterator raised, after every item before it went through), or ``None``; errors of the
    predictor or of a consumer are raised.
    """
    producer = _Producer(items, batch_size, queue_size)
    stages = [
        _Stage(f"segvn-{name}", lambda m, h=handle: h(*m), close, queue_size)
        for name, handle, close in consumers
    ]
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
            prediction = predictor([item.rgb for item in msg])
            for stage in stages:
                stage.put((msg, prediction))
            if advance is not None:
                advance(len(msg))
    finally:
        producer.stop.set()
        errors = [stage.finish() for stage in stages]
        producer.join()
    for err in errors:
        if err is not None:
            raise err
    return input_error
