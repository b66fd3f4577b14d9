"""The publishers: ``HeraldPublisher`` (sync, e.g. Celery tasks) and ``AsyncHeraldPublisher``
(asyncio, e.g. FastAPI endpoints). Both have the same methods; the async ones are coroutines.

Both have ``publish``, ``publish_to_room``, ``notify_user`` and ``publish_event``; an application
with an event catalogue can subclass them with one typed method per event (the campaign-events
example in the repository generates such a subclass).
"""

from __future__ import annotations

import os
import uuid
from typing import Any, Dict, Mapping, Optional, Union
from urllib.parse import quote

from .errors import HeraldConfigError
from .event import Event
from .result import PostedMessage, PublishResult
from .routing import Routing, UserId, http_publish_body, redis_message
from .transports import AsyncHttpTransport, AsyncRedisTransport, HttpTransport, RedisTransport

SyncTransport = Union[RedisTransport, HttpTransport]
AsyncTransport = Union[AsyncRedisTransport, AsyncHttpTransport]


def _settings_from_env(environ: Optional[Mapping[str, str]]) -> dict:
    """Reads the publisher's settings from the environment (see README, "Configuration")."""
    env = os.environ if environ is None else environ
    transport = (env.get("HERALD_TRANSPORT") or "").strip().lower()
    http_url = env.get("HERALD_URL")
    redis_url = env.get("HERALD_REDIS_URL") or env.get("REDIS_URL")
    if not transport:
        transport = "http" if http_url else "redis" if redis_url else ""
    routing = Routing(
        room_field=env.get("HERALD_ROOM_FIELD", "room"),
        user_field=env.get("HERALD_USER_FIELD", "user_id"),
        direct_channel=env.get("HERALD_DIRECT_CHANNEL", "_direct"),
    )
    timeout = float(env.get("HERALD_TIMEOUT", "5"))
    if transport == "http":
        if not http_url:
            raise HeraldConfigError("HERALD_TRANSPORT=http needs HERALD_URL (e.g. http://127.0.0.1:8000)")
        return {
            "transport": "http",
            "url": http_url,
            "api_key": env.get("HERALD_API_KEY"),
            "routing": routing,
            "timeout": timeout,
        }
    if transport == "redis":
        if not redis_url:
            raise HeraldConfigError("HERALD_TRANSPORT=redis needs REDIS_URL (or HERALD_REDIS_URL)")
        prefix = env.get("HERALD_REDIS_PREFIX")
        if not prefix:
            raise HeraldConfigError(
                "publishing through Redis needs HERALD_REDIS_PREFIX: one of Herald's redis.prefixes (e.g. fliptechpro)"
            )
        return {"transport": "redis", "url": redis_url, "prefix": prefix, "routing": routing, "timeout": timeout}
    if transport:
        raise HeraldConfigError(f"HERALD_TRANSPORT must be 'redis' or 'http', not {transport!r}")
    raise HeraldConfigError(
        "set HERALD_URL (and HERALD_API_KEY) to publish over HTTP, or REDIS_URL and HERALD_REDIS_PREFIX for Redis"
    )


def _message_body(
    content: str,
    message_type: Optional[str],
    user_id: Optional[UserId],
    username: Optional[str],
    metadata: Optional[Mapping[str, Any]],
    sensitive: Optional[bool],
) -> Dict[str, Any]:
    body: Dict[str, Any] = {"content": content}
    for key, value in (
        ("message_type", message_type),
        ("user_id", user_id),
        ("username", username),
        ("metadata", dict(metadata) if metadata is not None else None),
        ("sensitive", sensitive),
    ):
        if value is not None:
            body[key] = value
    return body


def _messages_path(room: str) -> str:
    return f"/api/rooms/{quote(room, safe='')}/messages"


class HeraldPublisher:
    """Publishes events to Herald, synchronously.

    Create one with :meth:`redis`, :meth:`http` or :meth:`from_env`; share it (it is safe to use
    from several threads: redis-py pools connections, and the HTTP transport opens one per call).
    """

    def __init__(self, transport: SyncTransport, *, prefix: Optional[str] = None, routing: Optional[Routing] = None):
        if isinstance(transport, RedisTransport) and not prefix:
            raise HeraldConfigError("a Redis publisher needs the prefix Herald pattern-subscribes (redis.prefixes)")
        self.transport = transport
        self.prefix = prefix
        self.routing = routing or Routing()

    @classmethod
    def redis(
        cls,
        url: Optional[str] = None,
        *,
        prefix: str,
        client: Any = None,
        direct_channel: str = "_direct",
        room_field: str = "room",
        user_field: str = "user_id",
        timeout: float = 5.0,
        require_receiver: bool = False,
    ) -> "HeraldPublisher":
        """Publishes with ``PUBLISH <prefix>:<channel>``.

        Args:
            url: The Redis URL (or pass ``client``, an existing ``redis.Redis``).
            prefix: One of Herald's ``redis.prefixes`` (``fliptechpro``).
            direct_channel: The channel that carries room-only and user-only events.
            room_field: Herald's ``redis.room_field``.
            user_field: Herald's ``redis.user_field``.
            require_receiver: Raise ``HeraldNotDeliveredError`` when no Herald node received it.
        """
        transport = RedisTransport(url, client=client, timeout=timeout, require_receiver=require_receiver)
        routing = Routing(room_field=room_field, user_field=user_field, direct_channel=direct_channel)
        return cls(transport, prefix=prefix, routing=routing)

    @classmethod
    def http(
        cls,
        base_url: str,
        *,
        api_key: Optional[str] = None,
        timeout: float = 5.0,
        room_field: str = "room",
        user_field: str = "user_id",
        route_from_fields: bool = True,
    ) -> "HeraldPublisher":
        """Publishes with ``POST /api/publish`` (``Authorization: Bearer <api_key>``)."""
        routing = Routing(room_field=room_field, user_field=user_field, route_from_fields=route_from_fields)
        return cls(HttpTransport(base_url, api_key=api_key, timeout=timeout), routing=routing)

    @classmethod
    def from_env(cls, environ: Optional[Mapping[str, str]] = None) -> "HeraldPublisher":
        """From ``HERALD_URL`` + ``HERALD_API_KEY`` (HTTP) or ``REDIS_URL`` + ``HERALD_REDIS_PREFIX``
        (Redis); ``HERALD_TRANSPORT`` chooses when both are set."""
        s = _settings_from_env(environ)
        if s["transport"] == "http":
            return cls(HttpTransport(s["url"], api_key=s["api_key"], timeout=s["timeout"]), routing=s["routing"])
        return cls(RedisTransport(s["url"], timeout=s["timeout"]), prefix=s["prefix"], routing=s["routing"])

    def publish(
        self,
        event: Mapping[str, Any],
        *,
        channel: Optional[str] = None,
        room: Optional[str] = None,
        user_id: Optional[UserId] = None,
    ) -> PublishResult:
        """Publishes ``event`` (a JSON object, delivered as is) to a channel's subscribers, a
        room's members and a user's connections (any combination; each connection once).

        Raises:
            HeraldTargetError: no target, an invalid name (checked locally for Redis), or an
                explicit room/user contradicting the event's own field.
            HeraldHTTPError: Herald refused the request (with Herald's ``code``).
            HeraldConnectionError: Herald or Redis is unreachable.
        """
        if isinstance(self.transport, RedisTransport):
            redis_channel, message = redis_message(
                event, prefix=self.prefix or "", routing=self.routing, channel=channel, room=room, user_id=user_id
            )
            return self.transport.publish(redis_channel, message)
        body = http_publish_body(event, routing=self.routing, channel=channel, room=room, user_id=user_id)
        return self.transport.post("/api/publish", body)

    def publish_to_room(self, room: str, event: Mapping[str, Any]) -> PublishResult:
        """Publishes ``event`` to the members of ``room`` only."""
        return self.publish(event, room=room)

    def notify_user(self, user_id: UserId, event: Mapping[str, Any]) -> PublishResult:
        """Publishes ``event`` to every connection of ``user_id`` only."""
        return self.publish(event, user_id=user_id)

    def publish_event(self, event: Event) -> PublishResult:
        """Publishes a built :class:`Event` (see :func:`build_event`) to its channel and room."""
        return self.publish(event.payload, channel=event.channel, room=event.room)

    def post_message(
        self,
        room: str,
        content: str,
        *,
        message_type: Optional[str] = None,
        user_id: Optional[UserId] = None,
        username: Optional[str] = None,
        metadata: Optional[Mapping[str, Any]] = None,
        sensitive: Optional[bool] = None,
        idempotency_key: Optional[str] = None,
        retries: int = 2,
    ) -> PostedMessage:
        """HTTP only: posts a chat message to a room's history (``POST /api/rooms/{room}/messages``,
        a ``system`` notice by default), answered once stored. It carries an ``Idempotency-Key`` (a
        random one unless given), so it is retried after a network failure or 502/503/504 and
        stored once (``duplicate`` is True on an answer that found it already stored)."""
        if not isinstance(self.transport, HttpTransport):
            raise HeraldConfigError("post_message needs the HTTP transport")
        body = _message_body(content, message_type, user_id, username, metadata, sensitive)
        key = idempotency_key or uuid.uuid4().hex
        return self.transport.post_idempotent(_messages_path(room), body, key, retries)

    def close(self) -> None:
        """Releases connections the publisher opened."""
        self.transport.close()

    def __enter__(self) -> "HeraldPublisher":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncHeraldPublisher:
    """Publishes events to Herald from asyncio code; the methods of :class:`HeraldPublisher`, as
    coroutines. Use one per event loop (its connections belong to the loop that opened them)."""

    def __init__(self, transport: AsyncTransport, *, prefix: Optional[str] = None, routing: Optional[Routing] = None):
        if isinstance(transport, AsyncRedisTransport) and not prefix:
            raise HeraldConfigError("a Redis publisher needs the prefix Herald pattern-subscribes (redis.prefixes)")
        self.transport = transport
        self.prefix = prefix
        self.routing = routing or Routing()

    @classmethod
    def redis(
        cls,
        url: Optional[str] = None,
        *,
        prefix: str,
        client: Any = None,
        direct_channel: str = "_direct",
        room_field: str = "room",
        user_field: str = "user_id",
        timeout: float = 5.0,
        require_receiver: bool = False,
    ) -> "AsyncHeraldPublisher":
        """Like :meth:`HeraldPublisher.redis`, with ``redis.asyncio`` (``client``: a ``redis.asyncio.Redis``)."""
        transport = AsyncRedisTransport(url, client=client, timeout=timeout, require_receiver=require_receiver)
        routing = Routing(room_field=room_field, user_field=user_field, direct_channel=direct_channel)
        return cls(transport, prefix=prefix, routing=routing)

    @classmethod
    def http(
        cls,
        base_url: str,
        *,
        api_key: Optional[str] = None,
        timeout: float = 5.0,
        room_field: str = "room",
        user_field: str = "user_id",
        route_from_fields: bool = True,
        client: Any = None,
    ) -> "AsyncHeraldPublisher":
        """Like :meth:`HeraldPublisher.http`, with ``httpx`` (``client``: an ``httpx.AsyncClient``)."""
        routing = Routing(room_field=room_field, user_field=user_field, route_from_fields=route_from_fields)
        return cls(AsyncHttpTransport(base_url, api_key=api_key, timeout=timeout, client=client), routing=routing)

    @classmethod
    def from_env(cls, environ: Optional[Mapping[str, str]] = None) -> "AsyncHeraldPublisher":
        """Like :meth:`HeraldPublisher.from_env`."""
        s = _settings_from_env(environ)
        if s["transport"] == "http":
            return cls(AsyncHttpTransport(s["url"], api_key=s["api_key"], timeout=s["timeout"]), routing=s["routing"])
        return cls(AsyncRedisTransport(s["url"], timeout=s["timeout"]), prefix=s["prefix"], routing=s["routing"])

    async def publish(
        self,
        event: Mapping[str, Any],
        *,
        channel: Optional[str] = None,
        room: Optional[str] = None,
        user_id: Optional[UserId] = None,
    ) -> PublishResult:
        """Like :meth:`HeraldPublisher.publish`."""
        if isinstance(self.transport, AsyncRedisTransport):
            redis_channel, message = redis_message(
                event, prefix=self.prefix or "", routing=self.routing, channel=channel, room=room, user_id=user_id
            )
            return await self.transport.publish(redis_channel, message)
        body = http_publish_body(event, routing=self.routing, channel=channel, room=room, user_id=user_id)
        return await self.transport.post("/api/publish", body)

    async def publish_to_room(self, room: str, event: Mapping[str, Any]) -> PublishResult:
        """Publishes ``event`` to the members of ``room`` only."""
        return await self.publish(event, room=room)

    async def notify_user(self, user_id: UserId, event: Mapping[str, Any]) -> PublishResult:
        """Publishes ``event`` to every connection of ``user_id`` only."""
        return await self.publish(event, user_id=user_id)

    async def publish_event(self, event: Event) -> PublishResult:
        """Publishes a built :class:`Event` (see :func:`build_event`) to its channel and room."""
        return await self.publish(event.payload, channel=event.channel, room=event.room)

    async def post_message(
        self,
        room: str,
        content: str,
        *,
        message_type: Optional[str] = None,
        user_id: Optional[UserId] = None,
        username: Optional[str] = None,
        metadata: Optional[Mapping[str, Any]] = None,
        sensitive: Optional[bool] = None,
        idempotency_key: Optional[str] = None,
        retries: int = 2,
    ) -> PostedMessage:
        """Like :meth:`HeraldPublisher.post_message`."""
        if not isinstance(self.transport, AsyncHttpTransport):
            raise HeraldConfigError("post_message needs the HTTP transport")
        body = _message_body(content, message_type, user_id, username, metadata, sensitive)
        key = idempotency_key or uuid.uuid4().hex
        return await self.transport.post_idempotent(_messages_path(room), body, key, retries)

    async def close(self) -> None:
        """Releases connections the publisher opened."""
        await self.transport.close()

    async def __aenter__(self) -> "AsyncHeraldPublisher":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
