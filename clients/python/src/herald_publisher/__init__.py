"""Publish events to Herald, the real-time WebSocket gateway, from Python backends.

Sync (Celery tasks, scripts)::

    from herald_publisher import HeraldPublisher

    ws_publisher = HeraldPublisher.redis("redis://localhost:6379/0", prefix="fliptechpro")
    ws_publisher.campaign_launched(campaign_id=123, campaign_name="Q1 Outreach", total_recipients=500)

Async (FastAPI)::

    from herald_publisher import AsyncHeraldPublisher

    websocket_service = AsyncHeraldPublisher.http("http://127.0.0.1:8000", api_key="...")
    await websocket_service.campaign_launched(campaign_id=123, campaign_name="Q1 Outreach", total_recipients=500)

``herald_publisher.ws_publisher`` and ``herald_publisher.websocket_service`` are created from the
environment on first use (see ``HeraldPublisher.from_env``).
"""

from __future__ import annotations

import threading
from typing import Any, Dict

from . import events
from .errors import (
    HeraldConfigError,
    HeraldConnectionError,
    HeraldError,
    HeraldHTTPError,
    HeraldNotDeliveredError,
)
from .event import Event, build_event, utc_timestamp
from .publisher import AsyncHeraldPublisher, HeraldPublisher
from .result import PublishResult
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
    "PublishResult",
    "Routing",
    "build_event",
    "events",
    "reset_default_publishers",
    "utc_timestamp",
    "websocket_service",
    "ws_publisher",
]

__version__ = "0.1.0"

_defaults: Dict[str, Any] = {}
_lock = threading.Lock()
_FACTORIES = {"ws_publisher": HeraldPublisher.from_env, "websocket_service": AsyncHeraldPublisher.from_env}


def __getattr__(name: str) -> Any:
    """``ws_publisher`` (sync) and ``websocket_service`` (async), created from the environment on
    first access, as the campaign document imports them."""
    factory = _FACTORIES.get(name)
    if factory is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    with _lock:
        if name not in _defaults:
            _defaults[name] = factory()
        return _defaults[name]


def reset_default_publishers() -> None:
    """Forgets ``ws_publisher`` and ``websocket_service`` (they are re-created from the environment on
    next access). The sync one is closed; close the async one yourself (``await ….close()``) first
    if its event loop is still running."""
    with _lock:
        sync = _defaults.pop("ws_publisher", None)
        _defaults.pop("websocket_service", None)
    if sync is not None:
        sync.close()
