"""Routing rules, event building and configuration from the environment, without servers."""

from __future__ import annotations

import datetime as dt
import json
import re

import pytest

from herald_publisher import HeraldConfigError, HeraldPublisher, HeraldTargetError, build_event
from herald_publisher.event import to_json
from herald_publisher.routing import Routing, http_publish_body, redis_message

ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


# --- building events -----------------------------------------------------------------------


def test_build_event_sets_type_room_from_the_first_complete_template_and_timestamp():
    rooms = ["lead:{lead_id}", "order:{order_id}"]
    event = build_event("order:shipped", "orders", rooms, {"order_id": 7, "lead_id": None, "carrier": "x"})
    assert (event.channel, event.room) == ("orders", "order:7")
    payload = dict(event.payload)
    assert ISO_UTC.match(payload.pop("timestamp"))
    assert payload == {"type": "order:shipped", "order_id": 7, "carrier": "x", "room": "order:7"}
    assert build_event("t", "c", rooms, {}).room is None
    with pytest.raises(ValueError):
        build_event("t", "c", [], {"a": 1}, extra={"a": 2})


def test_datetimes_are_serialised_as_iso_8601_utc():
    naive = dt.datetime(2024, 1, 15, 10, 30)
    aware = dt.datetime(2024, 1, 15, 12, 30, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    body = json.loads(to_json({"naive": naive, "aware": aware}))
    assert body == {"naive": "2024-01-15T10:30:00.000Z", "aware": "2024-01-15T10:30:00.000Z"}


# --- routing -------------------------------------------------------------------------------


def test_redis_messages_carry_their_targets_in_fields():
    routing = Routing()
    channel, message = redis_message({"type": "t"}, prefix="fliptechpro", routing=routing, channel="campaigns")
    assert (channel, json.loads(message)) == ("fliptechpro:campaigns", {"type": "t"})
    channel, message = redis_message({"type": "t"}, prefix="p", routing=routing, room="campaign:1", user_id=42)
    assert channel == "p:_direct"
    assert json.loads(message) == {"type": "t", "room": "campaign:1", "user_id": 42}
    custom = Routing(room_field="target_room", user_field="uid", direct_channel="route")
    channel, message = redis_message({"type": "t"}, prefix="p", routing=custom, user_id="u1")
    assert (channel, json.loads(message)) == ("p:route", {"type": "t", "uid": "u1"})


def test_redis_targets_are_checked_locally():
    routing = Routing()
    with pytest.raises(HeraldTargetError) as e:
        redis_message({"type": "t"}, prefix="p", routing=routing)
    assert e.value.code == "NO_TARGET"
    for kwargs in ({"channel": ""}, {"channel": "a\nb"}, {"room": "x" * 201}, {"user_id": ""}):
        with pytest.raises(HeraldTargetError) as e:
            redis_message({"type": "t"}, prefix="p", routing=routing, **kwargs)
        assert e.value.code == "INVALID_NAME"
    with pytest.raises(HeraldTargetError) as e:
        redis_message({"type": "t", "room": "a"}, prefix="p", routing=routing, room="b")
    assert e.value.code == "CONFLICTING_TARGET"
    with pytest.raises(HeraldTargetError) as e:
        redis_message(["not", "an", "object"], prefix="p", routing=routing, channel="c")
    assert e.value.code == "INVALID_EVENT"


def test_http_bodies_route_like_redis():
    routing = Routing()
    body = http_publish_body({"type": "t", "room": "campaign:1"}, routing=routing, channel="campaigns")
    assert body == {"channel": "campaigns", "room": "campaign:1", "event": {"type": "t", "room": "campaign:1"}}
    body = http_publish_body({"type": "t"}, routing=routing, user_id=7)
    assert body == {"user_id": 7, "event": {"type": "t", "user_id": 7}}
    plain = Routing(route_from_fields=False)
    body = http_publish_body({"type": "t", "user_id": "author"}, routing=plain, channel="c")
    assert body == {"channel": "c", "event": {"type": "t", "user_id": "author"}}


# --- configuration from the environment ----------------------------------------------------


def test_from_env_picks_the_transport():
    http = HeraldPublisher.from_env({"HERALD_URL": "http://127.0.0.1:1", "HERALD_API_KEY": "k" * 8})
    assert http.transport.name == "http"
    redis = HeraldPublisher.from_env({"REDIS_URL": "redis://127.0.0.1:1/0", "HERALD_REDIS_PREFIX": "fliptechpro"})
    assert (redis.transport.name, redis.prefix) == ("redis", "fliptechpro")
    both = {"HERALD_URL": "http://h", "REDIS_URL": "redis://r", "HERALD_REDIS_PREFIX": "p", "HERALD_TRANSPORT": "redis"}
    assert HeraldPublisher.from_env(both).transport.name == "redis"
    redis.close()


@pytest.mark.parametrize(
    "env, message",
    [
        ({}, "HERALD_URL"),
        ({"REDIS_URL": "redis://r"}, "HERALD_REDIS_PREFIX"),
        ({"HERALD_TRANSPORT": "http", "REDIS_URL": "redis://r"}, "HERALD_URL"),
        ({"HERALD_TRANSPORT": "carrier-pigeon"}, "must be 'redis' or 'http'"),
    ],
)
def test_from_env_explains_what_is_missing(env, message):
    with pytest.raises(HeraldConfigError, match=message):
        HeraldPublisher.from_env(env)
