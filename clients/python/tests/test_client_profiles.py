"""The consumer client against two compatibility profiles, their example configurations unchanged
(only the address): what their own Python consumers receive, it receives too."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from typing import Any, Dict, List

from harness import API_KEY, REPO, WAIT, Herald, start_node, stop_node, unique, wait_until
from test_client import ready, run, until

from herald_publisher import AsyncHeraldPublisher, HeraldPublisher
from herald_publisher.client import HeraldClient, SubscriptionState


def connections(node: Herald) -> int:
    request = urllib.request.Request(f"{node.http_url}/api/connections", headers={"Authorization": f"Bearer {API_KEY}"})
    with urllib.request.urlopen(request, timeout=WAIT) as response:
        return int(json.load(response)["total"])


def profile(name: str) -> str:
    return (REPO / "examples" / f"{name}.toml").read_text()


def test_campaign_events_profile(tmp_root):
    """URL channels, a `subscribe`, and a dedicated endpoint filled from its query parameter."""
    node = start_node(tmp_root, profile("campaign-events"))
    try:

        async def main() -> None:
            messages: List[Dict[str, Any]] = []
            client = HeraldClient(
                f"ws://{node.addr}/ws/campaigns", params={"campaign_id": "123", "channels": "emails"}, client_id="py"
            )
            client.on("message", messages.append)
            await client.connect()
            scrapers = await client.subscribe("scrapers")
            assert scrapers.state is SubscriptionState.SUBSCRIBED
            async with AsyncHeraldPublisher.http(node.http_url, api_key="test-api-key-0123") as publisher:
                await publisher.publish({"type": "campaign:launched", "campaign_name": "Q1"}, channel="campaigns")
                await publisher.publish({"type": "email:opened", "email_id": 7}, channel="emails")
                await publisher.publish({"type": "scraper:progress", "percent": 50}, channel="scrapers")
                await publisher.publish_to_room("campaign:123", {"type": "campaign:stats_updated", "sent": 10})
            wanted = {"campaign:launched", "email:opened", "scraper:progress", "campaign:stats_updated"}
            await until(lambda: wanted <= {m.get("type") for m in messages}, f"{wanted}")
            await client.close()

        run(main())
    finally:
        stop_node(node)


def test_job_updates_profile_without_welcome_or_heartbeat_messages(tmp_root, redis_url):
    """The profile sends no welcome and no heartbeat messages, and broadcasts `jobs:updates`,
    published through Redis on its prefix and shaped into `job_update`."""
    node = start_node(tmp_root, profile("job-updates"), redis_url=redis_url)
    try:
        # Ready once its Redis subscriptions (the `botrix:*` pattern among them) are live.
        wait_until(lambda: ready(node), "the node to be ready", node)

        async def main() -> None:
            updates: List[Dict[str, Any]] = []
            client = HeraldClient(f"ws://{node.addr}/ws", expect_welcome=False)
            client.on("message", lambda m: updates.append(m) if m.get("type") == "job_update" else None)
            await client.connect()
            # Without a welcome nothing says when the node has registered the connection; its
            # admin listing does (a broadcast published before that would miss it).
            await until(lambda: connections(node) >= 1, "the node to list the connection")
            job = unique("job")
            publisher = HeraldPublisher.redis(redis_url, prefix="botrix", require_receiver=True)
            await asyncio.get_running_loop().run_in_executor(
                None,
                lambda: publisher.publish(
                    {"event": "job_update", "data": {"job_id": job, "status": "completed"}}, channel="jobs:updates"
                ),
            )
            await until(lambda: updates, "the job update")
            assert updates[0]["job_id"] == job and updates[0]["status"] == "completed"
            assert client.connections == 1
            await client.close()
            publisher.close()

        run(main())
    finally:
        stop_node(node)
