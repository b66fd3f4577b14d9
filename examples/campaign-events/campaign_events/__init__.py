"""The campaign-events compatibility profile's publisher: ``herald-publisher`` plus one typed method
per event of the profile's catalogue (``events.toml``, generated into ``events.py``).

Sync (Celery tasks, scripts)::

    from campaign_events import ws_publisher

    ws_publisher.campaign_launched(campaign_id=123, campaign_name="Q1 Outreach", total_recipients=500)

Async (FastAPI)::

    from campaign_events import websocket_service

    await websocket_service.campaign_launched(campaign_id=123, campaign_name="Q1 Outreach", total_recipients=500)

``ws_publisher`` and ``websocket_service`` are created from the environment on first use (see
``herald_publisher.HeraldPublisher.from_env``); ``CampaignPublisher.redis(...)`` / ``.http(...)``
build one explicitly.
"""

from __future__ import annotations

import threading
from typing import Any, Dict

from herald_publisher import AsyncHeraldPublisher, HeraldPublisher

from . import events
from .events import AsyncEventMethods, EventMethods

__all__ = [
    "AsyncCampaignPublisher",
    "CampaignPublisher",
    "events",
    "reset_default_publishers",
    "websocket_service",
    "ws_publisher",
]


# The general publisher comes first so that its `publish_event` fills the mixin's abstract one.
class CampaignPublisher(HeraldPublisher, EventMethods):
    """A sync :class:`herald_publisher.HeraldPublisher` with one method per catalogue event."""


class AsyncCampaignPublisher(AsyncHeraldPublisher, AsyncEventMethods):
    """An async :class:`herald_publisher.AsyncHeraldPublisher` with one coroutine per catalogue event."""


_defaults: Dict[str, Any] = {}
_lock = threading.Lock()
_FACTORIES = {"ws_publisher": CampaignPublisher.from_env, "websocket_service": AsyncCampaignPublisher.from_env}


def __getattr__(name: str) -> Any:
    """``ws_publisher`` (sync) and ``websocket_service`` (async), created from the environment on
    first access."""
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
