"""Listeners and bounded async iterators, the two ways an application receives things."""

from __future__ import annotations

import asyncio
import inspect
import logging
from typing import Any, Callable, Dict, Generic, List, Optional, TypeVar, cast

log = logging.getLogger("herald_publisher.client")

T = TypeVar("T")

_END = object()


class Emitter:
    """Named events with callbacks. A callback may be a plain function or a coroutine function;
    callbacks run in the client's reader, in order, one after the other: a slow callback holds back
    the connection (and Herald disconnects a consumer that falls far behind)."""

    def __init__(self) -> None:
        self._listeners: Dict[str, List[Callable[..., Any]]] = {}

    def on(self, event: str, callback: Callable[..., Any]) -> Callable[[], None]:
        """Calls ``callback`` on every ``event``; returns a function that removes it."""
        self._listeners.setdefault(event, []).append(callback)
        return lambda: self.off(event, callback)

    def off(self, event: str, callback: Callable[..., Any]) -> None:
        """Removes a callback added with :meth:`on` (nothing if it is not there)."""
        callbacks = self._listeners.get(event, [])
        if callback in callbacks:
            callbacks.remove(callback)

    async def _emit(self, event: str, *args: Any) -> None:
        for callback in list(self._listeners.get(event, ())):
            try:
                result = callback(*args)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                # An application's callback must not take the connection down with it.
                log.exception("a %r callback raised", event)


class Feed(Generic[T]):
    """A bounded queue read with ``async for``. A full feed makes the reader wait (back-pressure
    reaches Herald, which closes a consumer that stays behind; the client then reconnects and
    resumes). The feed ends with ``StopAsyncIteration``, or with the error that ended it."""

    def __init__(self, maxsize: int, on_close: Optional[Callable[["Feed[T]"], None]] = None):
        self._queue: "asyncio.Queue[Any]" = asyncio.Queue(maxsize)
        self._ended = False
        self._error: Optional[BaseException] = None
        self._on_close = on_close
        #: True once someone started reading (``async for``).
        self.iterated = False

    def full(self) -> bool:
        """Whether a push would wait."""
        return self._queue.full()

    @property
    def ended(self) -> bool:
        """True once :meth:`end` was called."""
        return self._ended

    async def push(self, item: T) -> None:
        if not self._ended:
            await self._queue.put(item)

    def end(self, error: Optional[BaseException] = None) -> None:
        """Ends the feed after what it holds; ``error`` is raised to the reader instead of
        ``StopAsyncIteration``."""
        if self._ended:
            return
        self._ended = True
        self._error = error
        if self._queue.empty():
            # Wakes a reader waiting on an empty queue; a full queue is drained first.
            self._queue.put_nowait(_END)

    def __aiter__(self) -> "Feed[T]":
        self.iterated = True
        return self

    async def __anext__(self) -> T:
        if self._ended and self._queue.empty():
            self._finish()
        item = await self._queue.get()
        if item is _END:
            self._finish()
        return cast(T, item)

    def _finish(self) -> None:
        if self._on_close is not None:
            self._on_close(self)
            self._on_close = None
        if self._error is not None:
            raise self._error
        raise StopAsyncIteration

    async def aclose(self) -> None:
        """Stops reading: the feed is dropped and receives nothing more."""
        self._ended = True
        if self._on_close is not None:
            self._on_close(self)
            self._on_close = None
