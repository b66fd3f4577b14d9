"""The campaign-events catalogue's generated helpers and publishers, without servers."""

from __future__ import annotations

import datetime as dt
import importlib.util
import inspect
import json
import re
import sys
from pathlib import Path

import pytest
from herald_publisher import AsyncHeraldPublisher, HeraldPublisher
from herald_publisher.event import to_json

import campaign_events
from campaign_events import AsyncCampaignPublisher, CampaignPublisher, events

EXAMPLE_ROOT = Path(__file__).resolve().parents[1]


def load_generator():
    spec = importlib.util.spec_from_file_location("herald_generate", EXAMPLE_ROOT / "generate.py")
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
    actual = (EXAMPLE_ROOT / "campaign_events/events.py").read_text(encoding="utf-8")
    assert actual == expected, "events.py is out of date: run `python generate.py` in examples/campaign-events"


def test_every_document_event_has_a_builder_and_sync_and_async_methods():
    assert sorted(events.CATALOGUE) == sorted(DOCUMENT_METHODS)
    for name in DOCUMENT_METHODS:
        builder = getattr(events, name)
        sync_method = getattr(CampaignPublisher, name)
        async_method = getattr(AsyncCampaignPublisher, name)
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


def test_module_level_publishers_are_created_from_the_environment(monkeypatch):
    monkeypatch.setenv("HERALD_URL", "http://127.0.0.1:1")
    monkeypatch.delenv("HERALD_TRANSPORT", raising=False)
    campaign_events.reset_default_publishers()
    try:
        assert isinstance(campaign_events.ws_publisher, CampaignPublisher)
        assert isinstance(campaign_events.ws_publisher, HeraldPublisher)
        assert campaign_events.ws_publisher is campaign_events.ws_publisher
        assert isinstance(campaign_events.websocket_service, AsyncCampaignPublisher)
        assert isinstance(campaign_events.websocket_service, AsyncHeraldPublisher)
    finally:
        campaign_events.reset_default_publishers()
    with pytest.raises(AttributeError):
        campaign_events.no_such_thing  # noqa: B018


def test_the_general_package_has_no_catalogue():
    import herald_publisher

    assert not hasattr(HeraldPublisher, "campaign_launched")
    assert not hasattr(herald_publisher, "events")
