"""Run an iterator one item ahead in a background thread.

The trainer's look-ahead prefetcher: while minibatch ``i`` trains on the main thread, this
thread samples minibatch ``i+1`` and pulls its features. The work it overlaps with is torch
compute and DistDGL RPC, both of which release the GIL. Errors in the producer are re-raised
on the consumer's side; ``close()`` stops the producer without waiting for the iterator to end.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Generic, TypeVar

T = TypeVar("T")
_DONE = object()


class _Failure:
    def __init__(self, error: BaseException):
        self.error = error


class LookAhead(Generic[T]):
    """Iterate ``items`` with up to ``depth`` items prepared ahead of the consumer."""

    def __init__(self, items: Iterator[T], depth: int = 1, name: str = "rudder-lookahead"):
        if depth < 1:
            raise ValueError(f"look-ahead depth must be >= 1, got {depth}")
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(items,), name=name, daemon=True)
        self._thread.start()

    def _put(self, item: object) -> bool:
        # Poll the stop flag so a consumer that went away never leaves us blocked forever.
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, items: Iterator[T]) -> None:
        try:
            for item in items:
                if not self._put(item):
                    return
            self._put(_DONE)
        except BaseException as e:
            self._put(_Failure(e))

    def __iter__(self) -> LookAhead[T]:
        return self

    def __next__(self) -> T:
        item = self._queue.get()
        if item is _DONE:
            self._queue.put(_DONE)  # stay exhausted
            raise StopIteration
        if isinstance(item, _Failure):
            raise item.error
        return item

    def close(self, timeout_s: float = 30.0) -> None:
        """Stop the producer and wait for its thread (it finishes its current item first)."""
        self._stop.set()
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        self._thread.join(timeout=timeout_s)

    def __enter__(self) -> LookAhead[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
