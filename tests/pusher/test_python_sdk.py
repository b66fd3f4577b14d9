"""The Pusher Channels face of Herald with the `pusher` server SDK from PyPI: publishing (one
channel, several channels, batches, socket exclusion) and querying channels and users, against
the real herald binary, with a plain protocol-7 WebSocket client (`websockets`) as subscriber.

Run by scripts/test in the project venv; HERALD_BIN names the binary (default target/debug/herald).
"""

import asyncio
import json
import os
import pathlib
import re
import subprocess
import tempfile

import pusher
import pytest
import websockets

REPO = pathlib.Path(__file__).resolve().parents[2]
APP_ID, KEY, SECRET = "4242", "py-key", "py-secret-0123"
WAIT = 15  # seconds: only turns a hang into a failure

CONFIG = f"""
[[pusher.apps]]
id = "{APP_ID}"
key = "{KEY}"
secret = "{SECRET}"
"""


@pytest.fixture(scope="module")
def herald():
    binary = os.environ.get("HERALD_BIN", str(REPO / "target/debug/herald"))
    with tempfile.TemporaryDirectory() as tmp:
        config = pathlib.Path(tmp, "herald.toml")
        config.write_text(CONFIG)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HERALD_", "REDIS_", "WEBSOCKET_"))}
        child = subprocess.Popen(
            [binary, "--listen", "127.0.0.1:0", "--config", str(config)],
            cwd=tmp,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        try:
            for line in child.stdout:
                match = re.match(r"herald listening on http://(\S+)", line)
                if match:
                    host, port = match.group(1).rsplit(":", 1)
                    yield host, int(port)
                    break
            else:
                raise RuntimeError("herald exited before listening")
        finally:
            child.terminate()
            child.wait(WAIT)


def sdk(herald, secret=SECRET):
    host, port = herald
    return pusher.Pusher(app_id=APP_ID, key=KEY, secret=secret, host=host, port=port, ssl=False)


async def subscriber(herald, *channels):
    """A protocol-7 connection subscribed to `channels`; returns (socket, socket_id)."""
    host, port = herald
    ws = await websockets.connect(f"ws://{host}:{port}/app/{KEY}?protocol=7&client=py&version=1")
    established = json.loads(await asyncio.wait_for(ws.recv(), WAIT))
    assert established["event"] == "pusher:connection_established"
    socket_id = json.loads(established["data"])["socket_id"]
    for channel in channels:
        await ws.send(json.dumps({"event": "pusher:subscribe", "data": {"channel": channel}}))
        reply = json.loads(await asyncio.wait_for(ws.recv(), WAIT))
        assert reply == {"event": "pusher_internal:subscription_succeeded", "channel": channel, "data": "{}"}
    return ws, socket_id


async def next_event(ws, name):
    while True:
        message = json.loads(await asyncio.wait_for(ws.recv(), WAIT))
        if message["event"] == name:
            return message


def test_trigger_batch_and_exclusion_reach_subscribers(herald):
    async def run():
        a, a_id = await subscriber(herald, "orders", "audit")
        b, _ = await subscriber(herald, "orders")
        client = sdk(herald)
        await asyncio.to_thread(client.trigger, ["orders", "audit"], "created", {"id": 1})
        for ws, channel in [(a, "orders"), (a, "audit"), (b, "orders")]:
            message = await next_event(ws, "created")
            assert message["channel"] in ("orders", "audit")
            assert json.loads(message["data"]) == {"id": 1}
        await asyncio.to_thread(client.trigger, "orders", "not-for-a", "x", socket_id=a_id)
        await asyncio.to_thread(
            client.trigger_batch, [{"channel": "orders", "name": "batched", "data": json.dumps({"n": 2})}]
        )
        # Events of one channel arrive in order: `a` sees "batched" without "not-for-a" before it.
        first_for_a = json.loads(await asyncio.wait_for(a.recv(), WAIT))
        assert first_for_a["event"] == "batched", first_for_a
        assert (await next_event(b, "not-for-a"))["data"] == "x"
        assert json.loads((await next_event(b, "batched"))["data"]) == {"n": 2}
        await a.close()
        await b.close()

    asyncio.run(run())


def test_channel_queries(herald):
    async def run():
        ws, _ = await subscriber(herald, "stock-1", "stock-2", "other")
        client = sdk(herald)
        listed = await asyncio.to_thread(client.channels_info, "stock-", ["subscription_count"])
        assert listed == {"channels": {"stock-1": {"subscription_count": 1}, "stock-2": {"subscription_count": 1}}}
        one = await asyncio.to_thread(client.channel_info, "other", ["subscription_count"])
        assert one == {"occupied": True, "subscription_count": 1}
        empty = await asyncio.to_thread(client.channel_info, "nobody-here")
        assert empty == {"occupied": False}
        users = await asyncio.to_thread(client.users_info, "presence-empty")
        assert users == {"users": []}
        await ws.close()

    asyncio.run(run())


def test_wrong_secret_is_refused_with_401(herald):
    with pytest.raises(pusher.errors.PusherBadAuth):
        sdk(herald, secret="not-the-secret").trigger("orders", "x", {})
