"""Publishing end to end: a real redis-server, a real Herald, real WebSocket clients.

Herald takes publishers' Redis messages on ``fliptechpro:*`` and its HTTP API with an API key.
Names are unique per test because the Herald node is shared by the session.
"""

from __future__ import annotations

import asyncio
import json
import socket
import urllib.request

import pytest
from harness import API_KEY, PREFIX, AsyncClient, client, unique, wait_for_interest, ws_url
from websockets.asyncio.client import connect as async_connect

from herald_publisher import (
    AsyncHeraldPublisher,
    HeraldConnectionError,
    HeraldHTTPError,
    HeraldNotDeliveredError,
    HeraldPublisher,
    HeraldTargetError,
)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def redis_publisher(redis_url):
    with HeraldPublisher.redis(redis_url, prefix=PREFIX, require_receiver=True) as publisher:
        yield publisher


@pytest.fixture
def http_publisher(herald):
    with HeraldPublisher.http(herald.http_url, api_key=API_KEY) as publisher:
        yield publisher


# --- sync, Redis ---------------------------------------------------------------------------


def test_sync_redis_publish_to_a_channel(herald, redis_publisher):
    channel = unique("campaigns")
    with client(herald, channels=[channel]) as subscriber, client(herald) as bystander:
        result = redis_publisher.publish({"type": "campaign:paused", "campaign_id": 1}, channel=channel)
        assert result.transport == "redis" and result.receivers >= 1
        assert subscriber.expect(type="campaign:paused") == {"type": "campaign:paused", "campaign_id": 1}
        # The bystander, subscribed to nothing, gets a later event but not that one.
        marker = unique("marker")
        bystander.join(marker)
        redis_publisher.publish_to_room(marker, {"type": "marker"})
        bystander.expect(type="marker")
        assert not any(m.get("type") == "campaign:paused" for m in bystander.seen)


def test_sync_redis_publish_to_a_room_and_a_user_only(herald, redis_publisher):
    room, user, channel = unique("campaign"), unique("user"), unique("campaigns")
    with (
        client(herald, channels=[channel]) as channel_only,
        client(herald) as member,
        client(herald, user_id=user) as owner,
    ):
        member.join(room)
        redis_publisher.publish_to_room(room, {"type": "room:event"})
        assert member.expect(type="room:event") == {"type": "room:event", "room": room}
        redis_publisher.notify_user(user, {"type": "user:event"})
        assert owner.expect(type="user:event") == {"type": "user:event", "user_id": user}
        # Room-only and user-only events travel on the direct channel, which no client subscribes
        # to: a channel subscriber receives neither.
        redis_publisher.publish({"type": "last"}, channel=channel)
        channel_only.expect(type="last")
        assert [m["type"] for m in channel_only.seen if m["type"] != "heartbeat"] == ["connection", "last"]


def test_sync_redis_channel_and_room_reach_each_connection_once(herald, redis_publisher):
    channel, room = unique("campaigns"), unique("campaign")
    with client(herald, channels=[channel]) as both:
        both.join(room)
        redis_publisher.publish({"type": "first", "n": 1}, channel=channel, room=room)
        redis_publisher.publish({"type": "second"}, channel=channel)
        both.expect(type="second")
        assert sum(1 for m in both.seen if m["type"] == "first") == 1


def test_redis_errors_surface_as_exceptions(herald, redis_url):
    with HeraldPublisher.redis(f"redis://127.0.0.1:{closed_port()}/0", prefix=PREFIX, timeout=2) as down:
        with pytest.raises(HeraldConnectionError):
            down.publish({"type": "t"}, channel="c")
    with HeraldPublisher.redis(redis_url, prefix="nobody-listens", require_receiver=True) as unheard:
        with pytest.raises(HeraldNotDeliveredError):
            unheard.publish({"type": "t"}, channel="c")
    with HeraldPublisher.redis(redis_url, prefix=PREFIX) as publisher:
        with pytest.raises(HeraldTargetError) as e:
            publisher.publish({"type": "t"})
        assert e.value.code == "NO_TARGET"


# --- sync, HTTP ----------------------------------------------------------------------------


def test_sync_http_publish_to_channel_room_and_user(herald, redis, http_publisher):
    channel, room, user = unique("emails"), unique("campaign"), unique("user")
    with client(herald, channels=[channel]) as subscriber, client(herald, user_id=user) as owner:
        subscriber.join(room)
        # HTTP publishes travel through Herald's Redis keys; wait until they are subscribed.
        for kind, name in (("c", channel), ("r", room), ("u", user)):
            wait_for_interest(redis, kind, name)
        result = http_publisher.publish({"type": "email:opened", "email_id": 456}, channel=channel)
        assert (result.transport, result.local_only) == ("http", False)
        assert subscriber.expect(type="email:opened")["email_id"] == 456
        http_publisher.publish_to_room(room, {"type": "in:room"})
        assert subscriber.expect(type="in:room") == {"type": "in:room", "room": room}
        http_publisher.notify_user(user, {"type": "for:user"})
        assert owner.expect(type="for:user") == {"type": "for:user", "user_id": user}


def test_sync_http_errors_carry_the_server_code(herald):
    with HeraldPublisher.http(herald.http_url, api_key="wrong-key-123") as wrong:
        with pytest.raises(HeraldHTTPError) as e:
            wrong.publish({"type": "t"}, channel="c")
    assert (e.value.status, e.value.code) == (401, "AUTHENTICATION_FAILED")
    with HeraldPublisher.http(herald.http_url, api_key=API_KEY) as publisher:
        with pytest.raises(HeraldHTTPError) as e:
            publisher.publish({"type": "t"}, channel="bad\u0001name")
        assert (e.value.status, e.value.code) == (400, "INVALID_NAME")
        with pytest.raises(HeraldHTTPError) as e:
            publisher.publish({"type": "t"})
        assert (e.value.status, e.value.code) == (400, "NO_TARGET")
        assert "target" in e.value.message
    with HeraldPublisher.http(f"http://127.0.0.1:{closed_port()}", api_key=API_KEY) as down:
        with pytest.raises(HeraldConnectionError):
            down.publish({"type": "t"}, channel="c")


# --- async ---------------------------------------------------------------------------------


def test_async_redis_publish_to_channel_room_and_user(herald, redis_url):
    channel, room, user = unique("scrapers"), unique("scraper"), unique("user")

    async def scenario():
        async with AsyncHeraldPublisher.redis(redis_url, prefix=PREFIX, require_receiver=True) as publisher:
            async with async_connect(ws_url(herald, channels=[channel], user_id=user)) as ws:
                c = AsyncClient(ws)
                await c.expect(type="connection")
                await c.join(room)
                result = await publisher.publish({"type": "on:channel"}, channel=channel)
                assert result.receivers >= 1
                await c.expect(type="on:channel")
                await publisher.publish_to_room(room, {"type": "on:room"})
                await c.expect(type="on:room", room=room)
                await publisher.notify_user(user, {"type": "on:user"})
                await c.expect(type="on:user", user_id=user)

    asyncio.run(scenario())


def test_async_http_publish_and_errors(herald, redis):
    channel, room = unique("ai"), unique("lead")

    async def scenario():
        async with AsyncHeraldPublisher.http(herald.http_url, api_key=API_KEY) as publisher:
            async with async_connect(ws_url(herald, channels=[channel])) as ws:
                c = AsyncClient(ws)
                await c.expect(type="connection")
                await c.join(room)
                wait_for_interest(redis, "c", channel)
                wait_for_interest(redis, "r", room)
                await publisher.publish({"type": "ai:processing", "task_id": 1}, channel=channel)
                await c.expect(type="ai:processing", task_id=1)
                await publisher.publish_to_room(room, {"type": "ai:lead_analyzed", "lead_id": 789})
                await c.expect(type="ai:lead_analyzed", room=room)
            with pytest.raises(HeraldHTTPError) as e:
                await publisher.publish({"type": "t"}, room="")
            assert e.value.code in ("INVALID_NAME", "NO_TARGET")
        async with AsyncHeraldPublisher.http(herald.http_url, api_key="wrong-key-123") as wrong:
            with pytest.raises(HeraldHTTPError) as e:
                await wrong.publish({"type": "t"}, channel="c")
            assert (e.value.status, e.value.code) == (401, "AUTHENTICATION_FAILED")
        async with AsyncHeraldPublisher.http(f"http://127.0.0.1:{closed_port()}") as down:
            with pytest.raises(HeraldConnectionError):
                await down.publish({"type": "t"}, channel="c")

    asyncio.run(scenario())


# --- chat messages with an idempotency key ---------------------------------------------------


def test_post_message_is_stored_once_per_idempotency_key(herald, http_publisher):
    room = unique("support")
    first = http_publisher.post_message(room, "ticket opened", idempotency_key="key-1", username="Ops")
    again = http_publisher.post_message(room, "ticket opened", idempotency_key="key-1", username="Ops")
    assert not first.duplicate and again.duplicate
    assert again.message["id"] == first.message["id"] and first.message["content"] == "ticket opened"

    async def main() -> None:
        async with AsyncHeraldPublisher.http(herald.http_url, api_key=API_KEY) as publisher:
            other = await publisher.post_message(room, "second", message_type="text")
            assert not other.duplicate and other.message["message_type"] == "text"

    asyncio.run(main())
    request = urllib.request.Request(
        f"{herald.http_url}/api/rooms/{room}/messages", headers={"Authorization": f"Bearer {API_KEY}"}
    )
    with urllib.request.urlopen(request) as response:
        contents = [m["content"] for m in json.load(response)["messages"]]
    assert contents == ["ticket opened", "second"]
