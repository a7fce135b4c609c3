"""One generation as the service runs it: a place in the engine, the stream's
chunks, and the two ways a request ends early (the client left, or the
request ran past ``server.request_timeout``).

Waiting (for a place, for the engine to take the request, for the next
chunk) happens on the session's threads; every wait here also watches the
deadline and, where given, the client's connection, and whatever the
request held in the engine is closed at once when it ends early.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from .._core import ChatChunk, ChatStream
from ..errors import RequestError
from ..session import Session
from .api_error import api_error

T = TypeVar("T")
# The ASGI channel a request's messages arrive on (body parts, then http.disconnect).
Receive = Callable[[], Awaitable[Mapping[str, Any]]]


class RequestTimedOut(Exception):
    """The request ran past ``server.request_timeout``."""


class ClientDisconnected(Exception):
    """The client closed the connection before the answer was complete."""


async def client_gone(receive: Receive) -> None:
    """Return when the client has closed the connection (the body is already
    read); ``receive`` is the request's ASGI receive channel."""
    while (await receive())["type"] != "http.disconnect":
        pass


@dataclass
class Limits:
    """When a request must stop waiting: its deadline and its client's connection."""

    deadline: float | None
    gone: asyncio.Task[None] | None = None

    @classmethod
    def start(cls, timeout: float | None, receive: Receive | None) -> Limits:
        """Limits from now; ``receive`` is watched for a disconnect (not needed
        for a streaming response, which Starlette cancels when the client leaves)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        gone = asyncio.ensure_future(client_gone(receive)) if receive is not None else None
        return cls(deadline, gone)

    def stop(self) -> None:
        if self.gone is not None:
            self.gone.cancel()

    async def wait(self, awaitable: Awaitable[T], *, on_abandon: Callable[[T], Any] | None = None) -> T:
        """``await awaitable`` unless the deadline passes or the client leaves
        first; then raise, and hand a result that arrives later to ``on_abandon``."""
        task = asyncio.ensure_future(awaitable)
        waits: set[asyncio.Future[Any]] = {task} if self.gone is None else {task, self.gone}
        timeout = None if self.deadline is None else max(0.0, self.deadline - time.monotonic())
        done, _ = await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            return task.result()
        if on_abandon is not None:
            task.add_done_callback(lambda t: on_abandon(t.result()) if not t.cancelled() and t.exception() is None else None)
        if self.gone is not None and self.gone in done:
            raise ClientDisconnected
        raise RequestTimedOut


async def run_generation(session: Session, start: Callable[[], ChatStream], limits: Limits) -> AsyncIterator[ChatChunk]:
    """The chunks of one generation (`Session.achunks`, within ``limits``),
    the session's request errors answered as `APIError`s."""
    try:
        async for chunk in session.achunks(start, limits.wait):
            yield chunk
    except RequestError as e:
        raise api_error(e) from None


async def run_choices(session: Session, starts: Sequence[Callable[[], ChatStream]], limits: Limits) -> AsyncIterator[tuple[int, ChatChunk]]:
    """The chunks of several generations of one request (``n`` answers), as
    (answer index, chunk) in the order they come: each runs as
    `run_generation` does, all at once in the engine. The first error ends
    them all."""
    if len(starts) == 1:
        async for chunk in run_generation(session, starts[0], limits):
            yield 0, chunk
        return
    arrived: asyncio.Queue[tuple[int, ChatChunk | Exception | None]] = asyncio.Queue()

    async def pump(index: int, start: Callable[[], ChatStream]) -> None:
        try:
            async for chunk in run_generation(session, start, limits):
                await arrived.put((index, chunk))
            await arrived.put((index, None))
        except Exception as e:
            await arrived.put((index, e))

    pumps = [asyncio.ensure_future(pump(index, start)) for index, start in enumerate(starts)]
    try:
        running = len(pumps)
        while running:
            index, item = await arrived.get()
            if item is None:
                running -= 1
            elif isinstance(item, Exception):
                raise item
            else:
                yield index, item
    finally:
        for task in pumps:
            task.cancel()
        await asyncio.gather(*pumps, return_exceptions=True)
