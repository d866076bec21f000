"""Run a blocking token loop on a thread and stream its tokens to asyncio, cancellably."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncGenerator, Callable
from concurrent.futures import Executor

from orpheus_tts.engines.base import EngineError
from orpheus_tts.engines.orpheus.backends.base import BackendError

__all__ = ["BlockingLoop", "ThreadedGenerations"]

BlockingLoop = Callable[[Callable[[int], None], threading.Event], None]
"""``loop(emit, cancelled)``: calls ``emit(token_id)`` per token; returns when done or ``cancelled`` is set."""

_END = object()


class _Failure:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class ThreadedGenerations:
    """Bridges blocking generation loops into async iterators of token id batches."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.active = 0
        """Loops running right now (a cancelled loop counts until its thread returns)."""

    async def stream(self, executor: Executor, loop_fn: BlockingLoop) -> AsyncGenerator[list[int], None]:
        """Run ``loop_fn`` on ``executor``; yield the tokens it emits; closing sets its cancel flag."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[object] = asyncio.Queue()
        cancelled = threading.Event()

        def put(item: object) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the event loop is gone: nobody is listening any more
                cancelled.set()

        def run() -> None:
            with self._lock:
                self.active += 1
            try:
                loop_fn(put, cancelled)
            except BaseException as exc:
                put(_Failure(exc))
            else:
                put(_END)
            finally:
                with self._lock:
                    self.active -= 1

        try:
            loop.run_in_executor(executor, run)
        except RuntimeError as exc:  # the executor was shut down by close()
            raise BackendError("the backend is closed") from exc
        try:
            while True:
                batch: list[int] = []
                item = await queue.get()
                while True:
                    if item is _END:
                        if batch:
                            yield batch
                        return
                    if isinstance(item, _Failure):
                        if batch:
                            yield batch
                        if isinstance(item.exc, EngineError):
                            raise item.exc
                        raise BackendError(f"generation failed: {item.exc!r}") from item.exc
                    batch.append(item)  # type: ignore[arg-type]
                    if queue.empty():
                        break
                    item = queue.get_nowait()
                yield batch
        finally:
            cancelled.set()
