"""Publish events to Herald, the real-time WebSocket gateway, from Python backends.

Sync (Celery tasks, scripts)::

    from herald_publisher import HeraldPublisher

    publisher = HeraldPublisher.redis("redis://localhost:6379/0", prefix="myapp")
    publisher.publish({"type": "order:shipped", "order_id": 7}, channel="orders", room="order:7")

Async (FastAPI)::

    from herald_publisher import AsyncHeraldPublisher

    publisher = AsyncHeraldPublisher.http("http://127.0.0.1:8000", api_key="...")
    await publisher.notify_user(42, {"type": "export:ready"})

``HeraldPublisher.from_env()`` reads the settings from the environment.
"""

from __future__ import annotations

from .errors import (
    HeraldConfigError,
    HeraldConnectionError,
    HeraldError,
    HeraldHTTPError,
    HeraldNotDeliveredError,
)
from .event import Event, build_event, utc_timestamp
from .publisher import AsyncHeraldPublisher, HeraldPublisher
from .result import PostedMessage, PublishResult
from .routing import HeraldTargetError, Routing

__all__ = [
    "AsyncHeraldPublisher",
    "Event",
    "HeraldConfigError",
    "HeraldConnectionError",
    "HeraldError",
    "HeraldHTTPError",
    "HeraldNotDeliveredError",
    "HeraldPublisher",
    "HeraldTargetError",
    "PostedMessage",
    "PublishResult",
    "Routing",
    "build_event",
    "utc_timestamp",
]

__version__ = "0.1.0"
