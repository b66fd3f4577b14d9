"""An asyncio client that consumes events from Herald (``pip install 'herald-publisher[client]'``).

::

    import asyncio
    from herald_publisher.client import HeraldClient

    async def main():
        async with HeraldClient("ws://127.0.0.1:8000/ws", token="…") as client:
            jobs = await client.subscribe("jobs:1")
            async for publication in jobs:
                print(publication.data)

    asyncio.run(main())

Built on the ``websockets`` package. See :class:`HeraldClient` and :class:`Subscription`.
"""

from __future__ import annotations

from .backoff import Backoff
from .core import NO_RECONNECT_CODES, GetToken, HeraldClient, StreamOf, Subscription, default_stream_of
from .errors import HeraldAuthError, HeraldClientError, HeraldClosedError, HeraldServerError, HeraldTimeoutError
from .types import (
    ChatAck,
    ClientState,
    Disconnect,
    Gap,
    HistoryPage,
    Kind,
    Presence,
    PresenceMember,
    Publication,
    StreamPosition,
    SubscriptionState,
)

__all__ = [
    "NO_RECONNECT_CODES",
    "Backoff",
    "ChatAck",
    "ClientState",
    "Disconnect",
    "Gap",
    "GetToken",
    "HeraldAuthError",
    "HeraldClient",
    "HeraldClientError",
    "HeraldClosedError",
    "HeraldServerError",
    "HeraldTimeoutError",
    "HistoryPage",
    "Kind",
    "Presence",
    "PresenceMember",
    "Publication",
    "StreamOf",
    "StreamPosition",
    "Subscription",
    "SubscriptionState",
    "default_stream_of",
]
