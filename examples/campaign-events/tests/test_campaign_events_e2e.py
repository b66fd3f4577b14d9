"""The campaign-events publisher end to end: a real redis-server, a real Herald (the harness of
clients/python), real WebSocket clients; the call sites the profile's users write."""

from __future__ import annotations

import asyncio

import pytest
from harness import API_KEY, PREFIX, AsyncClient, client, unique, wait_for_interest, ws_url
from websockets.asyncio.client import connect as async_connect

import campaign_events
from campaign_events import CampaignPublisher


@pytest.fixture
def redis_publisher(redis_url):
    with CampaignPublisher.redis(redis_url, prefix=PREFIX, require_receiver=True) as publisher:
        yield publisher


def test_ws_publisher_campaign_launched_reaches_the_channel_and_the_room(herald, redis_url, monkeypatch):
    """``ws_publisher.campaign_launched(campaign_id=123, ...)`` "automatically publishes to room
    campaign:123": a client subscribed to ``campaigns`` and a client in the room both get it."""
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("HERALD_REDIS_PREFIX", PREFIX)
    for name in ("HERALD_URL", "HERALD_TRANSPORT", "HERALD_REDIS_URL"):
        monkeypatch.delenv(name, raising=False)
    campaign_events.reset_default_publishers()
    try:
        from campaign_events import ws_publisher

        with client(herald, channels=["campaigns"]) as dashboard, client(herald) as campaign_page:
            campaign_page.join("campaign:123")
            result = ws_publisher.campaign_launched(campaign_id=123, campaign_name="Q1 Outreach", total_recipients=500)
            assert result.transport == "redis"
            for c in (dashboard, campaign_page):
                event = c.expect(type="campaign:launched", campaign_id=123)
                assert event["campaign_name"] == "Q1 Outreach"
                assert event["total_recipients"] == 500
                assert event["room"] == "campaign:123"
            # The Celery task of the document.
            ws_publisher.campaign_email_sent(
                campaign_id=123, recipient_id=7, lead_id=789, to_email="prospect@example.com", subject="Your subject"
            )
            sent = campaign_page.expect(type="campaign:email_sent")
            assert (sent["recipient_id"], sent["to_email"]) == (7, "prospect@example.com")
    finally:
        campaign_events.reset_default_publishers()


def test_websocket_service_campaign_launched_over_http(herald, redis, monkeypatch):
    """``await websocket_service.campaign_launched(...)`` from a FastAPI endpoint, over HTTP."""
    monkeypatch.setenv("HERALD_URL", herald.http_url)
    monkeypatch.setenv("HERALD_API_KEY", API_KEY)
    monkeypatch.delenv("HERALD_TRANSPORT", raising=False)
    campaign_events.reset_default_publishers()
    campaign_id = int(unique("1").split("-")[1], 16)
    room = f"campaign:{campaign_id}"

    async def scenario():
        from campaign_events import websocket_service

        try:
            async with (
                async_connect(ws_url(herald, channels=["campaigns"])) as dashboard_ws,
                async_connect(ws_url(herald)) as page_ws,
            ):
                dashboard, page = AsyncClient(dashboard_ws), AsyncClient(page_ws)
                await dashboard.expect(type="connection")
                await page.expect(type="connection")
                await page.join(room)
                wait_for_interest(redis, "c", "campaigns")
                wait_for_interest(redis, "r", room)
                await websocket_service.campaign_launched(
                    campaign_id=campaign_id, campaign_name="Launch", total_recipients=3
                )
                for c in (dashboard, page):
                    event = await c.expect(type="campaign:launched", campaign_id=campaign_id)
                    assert event["room"] == room
                # A later event to both, then: each got the launch exactly once.
                await websocket_service.campaign_paused(campaign_id=campaign_id, reason="test")
                for c in (dashboard, page):
                    await c.expect(type="campaign:paused", campaign_id=campaign_id)
                    assert sum(1 for m in c.seen if m["type"] == "campaign:launched") == 1
        finally:
            await websocket_service.close()

    try:
        asyncio.run(scenario())
    finally:
        campaign_events.reset_default_publishers()


def test_system_notification_reaches_the_user_it_names(herald, redis_publisher):
    user = unique("user")
    with client(herald, user_id=user) as owner, client(herald, channels=["notifications"]) as everyone:
        redis_publisher.system_notification(title="Export ready", message="Your CSV is ready", user_id=user)
        for c in (owner, everyone):
            event = c.expect(type="notification:system", user_id=user)
            assert event["title"] == "Export ready"
