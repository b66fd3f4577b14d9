"""The generated helpers and routing rules, without servers."""

from __future__ import annotations

import datetime as dt
import importlib.util
import inspect
import json
import re
import sys
from pathlib import Path

import pytest

import herald_publisher
from herald_publisher import AsyncHeraldPublisher, HeraldConfigError, HeraldPublisher, HeraldTargetError, events
from herald_publisher.event import to_json
from herald_publisher.routing import Routing, http_publish_body, redis_message

PACKAGE_ROOT = Path(__file__).resolve().parents[1]


def load_generator():
    spec = importlib.util.spec_from_file_location("herald_generate", PACKAGE_ROOT / "generate.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["herald_generate"] = module
    spec.loader.exec_module(module)
    return module


# The publisher methods the campaign document lists, plus every type of its event tables.
DOCUMENT_METHODS = """
campaign_launched campaign_paused campaign_resumed campaign_completed campaign_email_sent
campaign_email_failed campaign_stats_updated email_sent email_delivered email_opened email_clicked
email_bounced email_unsubscribed scraper_started scraper_progress scraper_lead_found
scraper_completed scraper_failed scraper_google_maps_progress scraper_linkedin_progress
scraper_job_board_progress ai_processing ai_response_ready ai_analysis_complete ai_model_trained
ai_email_generated ai_lead_analyzed ai_conversation_processed demo_generating demo_recording
demo_composing demo_uploading demo_completed demo_failed lead_created conversation_new_reply
system_notification
""".split()

ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def test_events_py_is_generated_from_the_current_catalogue():
    generator = load_generator()
    expected = generator.render(generator.load())
    actual = (PACKAGE_ROOT / "src/herald_publisher/events.py").read_text(encoding="utf-8")
    assert actual == expected, "events.py is out of date: run `python generate.py` in clients/python"


def test_every_document_event_has_a_builder_and_sync_and_async_methods():
    assert sorted(events.CATALOGUE) == sorted(DOCUMENT_METHODS)
    for name in DOCUMENT_METHODS:
        builder = getattr(events, name)
        sync_method = getattr(HeraldPublisher, name)
        async_method = getattr(AsyncHeraldPublisher, name)
        assert inspect.iscoroutinefunction(async_method), name
        assert not inspect.iscoroutinefunction(sync_method), name
        builder_params = list(inspect.signature(builder).parameters)
        assert list(inspect.signature(sync_method).parameters)[1:] == builder_params, name
        assert list(inspect.signature(async_method).parameters)[1:] == builder_params, name
        assert builder.__doc__ and sync_method.__doc__, name


def test_campaign_launched_matches_the_documents_example():
    event = events.campaign_launched(campaign_id=123, campaign_name="Q1 Outreach", total_recipients=500)
    assert event.channel == "campaigns"
    assert event.room == "campaign:123"
    payload = dict(event.payload)
    assert ISO_UTC.match(payload.pop("timestamp"))
    assert payload == {
        "type": "campaign:launched",
        "campaign_id": 123,
        "campaign_name": "Q1 Outreach",
        "total_recipients": 500,
        "room": "campaign:123",
    }
    assert list(event.payload)[0] == "type"


def test_helpers_require_their_fields_by_keyword():
    with pytest.raises(TypeError):
        events.campaign_launched(campaign_id=1, campaign_name="x")  # total_recipients missing
    with pytest.raises(TypeError):
        events.campaign_launched(1, "x", 3)  # positional arguments


def test_scraper_progress_derives_percent_unless_given():
    # The document's test call: no percent given.
    event = events.scraper_progress(
        scraper_id="test_123", source="craigslist", current=5, total=10, leads_found=3, message="Testing"
    )
    assert event.payload["percent"] == 50.0
    assert event.room == "scraper:test_123"
    assert events.scraper_progress(scraper_id="s", source="x", current=1, total=0).payload["percent"] == 0.0
    assert (
        events.scraper_progress(scraper_id="s", source="x", current=1, total=3, percent=12.5).payload["percent"] == 12.5
    )
    assert events.scraper_linkedin_progress(scraper_id="s", current=1, total=4).payload["source"] == "linkedin"


def test_rooms_come_from_the_first_template_whose_fields_are_given():
    assert events.email_sent(email_id=1, to_email="a@b.c").room is None
    assert "room" not in events.email_sent(email_id=1, to_email="a@b.c").payload
    assert events.email_sent(email_id=1, to_email="a@b.c", campaign_id=9).room == "campaign:9"
    assert events.ai_processing(task_id=1, task_type="t", conversation_id=7).room == "conversation:7"
    assert events.ai_processing(task_id=1, task_type="t", lead_id=3, conversation_id=7).room == "lead:3"
    assert events.ai_model_trained(model_name="m").room is None


def test_extra_fields_are_added_but_cannot_replace_the_helpers():
    event = events.demo_completed(demo_id="demo_xyz", demo_url="https://d", extra={"theme": "dark"})
    assert event.payload["theme"] == "dark"
    for key in ("type", "room", "timestamp", "demo_id"):
        with pytest.raises(ValueError):
            events.demo_completed(demo_id="d", demo_url="u", extra={key: "x"})


def test_datetimes_are_serialised_as_iso_8601_utc():
    naive = dt.datetime(2024, 1, 15, 10, 30)
    aware = dt.datetime(2024, 1, 15, 12, 30, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    event = events.campaign_launched(campaign_id=1, campaign_name="x", total_recipients=1, scheduled_at=naive)
    body = json.loads(to_json({**event.payload, "at": aware}))
    assert body["scheduled_at"] == "2024-01-15T10:30:00.000Z"
    assert body["at"] == "2024-01-15T10:30:00.000Z"


def test_the_generator_rejects_a_broken_catalogue(tmp_path):
    generator = load_generator()
    bad = tmp_path / "events.toml"
    head = '[[event]]\nname = "x_happened"\ntype = "x:happened"\nchannel = "x"\ndoc = "X."\n'
    cases = [
        ('rooms = ["x:{missing_id}"]\nrequired = [{ name = "other_id", type = "id", doc = "d" }]\n', "missing_id"),
        ('required = [{ name = "room", type = "str", doc = "d" }]\n', "set by the helper"),
        ('required = [{ name = "a", type = "uuid", doc = "d" }]\n', "has type 'uuid'"),
        ('required = [{ name = "a", type = "int" }]\n', "needs a doc"),
        ("fixed = { source = true }\n", "string or a number"),
    ]
    for body, problem in cases:
        bad.write_text(head + body)
        with pytest.raises(generator.CatalogueError, match=problem):
            generator.load(bad)


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


def test_module_level_publishers_are_created_from_the_environment(monkeypatch):
    monkeypatch.setenv("HERALD_URL", "http://127.0.0.1:1")
    monkeypatch.delenv("HERALD_TRANSPORT", raising=False)
    herald_publisher.reset_default_publishers()
    try:
        assert isinstance(herald_publisher.ws_publisher, HeraldPublisher)
        assert herald_publisher.ws_publisher is herald_publisher.ws_publisher
        assert isinstance(herald_publisher.websocket_service, AsyncHeraldPublisher)
    finally:
        herald_publisher.reset_default_publishers()
    with pytest.raises(AttributeError):
        herald_publisher.no_such_thing  # noqa: B018
