"""The consumer client (``herald_publisher.client``) against real Herald nodes and a real Redis.

Every test runs its own event loop (``asyncio.run``). Waits are for events (a publication, a state,
a reconnect); ``WAIT`` only turns a hang into a failure.
"""

from __future__ import annotations

import asyncio
import time
import urllib.request
from typing import Any, Awaitable, Callable, Dict, List, Optional, Set, TypeVar

import pytest
from harness import WAIT, Herald, free_port, hs256, start_node, stop_node, unique, wait_until

from herald_publisher import AsyncHeraldPublisher
from herald_publisher.client import (
    Backoff,
    ClientState,
    Disconnect,
    Gap,
    HeraldAuthError,
    HeraldClient,
    HeraldClientError,
    HeraldServerError,
    Kind,
    Publication,
    Subscription,
    SubscriptionState,
    default_stream_of,
)

SECRET = "python-client-test-secret-0123456789"

CONFIG = f"""
[auth]
mode = "required"
jwt_secret = "{SECRET}"
on_expiry = "refresh"

[websocket]
heartbeat_interval = "100ms"

[presence]
enabled = true

[access]
default = "allow"

[[access.rules]]
pattern = "secret*"
deny = true

[[access.rules]]
pattern = "vip*"
roles = ["vip"]

[[history]]
channels = "jobs:*"
size = 1000
max_age = "10m"

[[history]]
channels = "short:*"
size = 2
max_age = "10m"

[[history]]
rooms = "room-*"
size = 1000
max_age = "10m"
"""

T = TypeVar("T")

#: Reconnect quickly in tests; the delays are still random (full jitter).
FAST = Backoff(initial_delay=0.05, max_delay=0.3)


def token(user: str, ttl: float = 3600, roles: Optional[List[str]] = None) -> str:
    claims: Dict[str, Any] = {"sub": user, "name": user.title(), "exp": int(time.time() + ttl)}
    if roles is not None:
        claims["roles"] = roles
    return hs256(claims, SECRET)


def run(coroutine: Awaitable[T]) -> T:
    async def bounded() -> T:
        # Generous: a hang fails the test instead of the suite.
        return await asyncio.wait_for(coroutine, 6 * WAIT)

    return asyncio.run(bounded())


async def until(condition: Callable[[], Any], what: str) -> Any:
    """Waits for ``condition`` in the event loop (it changes as the client reads)."""
    deadline = time.monotonic() + WAIT
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def take(sub: Subscription, n: int) -> List[Publication]:
    """The next ``n`` publications of ``sub``."""
    out: List[Publication] = []

    async def read() -> None:
        async for publication in sub:
            out.append(publication)
            if len(out) == n:
                return

    try:
        await asyncio.wait_for(read(), WAIT)
    except asyncio.TimeoutError:
        pytest.fail(f"got {[p.data for p in out]}, expected {n} publications on {sub}")
    return out


def ready(node: Herald) -> bool:
    """Herald's readiness (its broker connected): an HTTP publish then goes through Redis."""
    try:
        with urllib.request.urlopen(f"{node.http_url}/readyz", timeout=WAIT) as response:
            return response.status == 200
    except OSError:
        return False


@pytest.fixture(scope="module")
def node(tmp_root: str, redis_url: str, redis) -> Herald:
    herald = start_node(tmp_root, CONFIG, redis_url=redis_url)
    wait_until(lambda: ready(herald), "the node to be ready", herald)
    yield herald
    stop_node(herald)


class Proxy:
    """A TCP proxy in front of Herald that can cut its connections, refuse new ones, or freeze
    the ones it has (forwarding nothing, closing nothing: a dead network path)."""

    def __init__(self, upstream: str):
        host, port = upstream.rsplit(":", 1)
        self.upstream = (host, int(port))
        self.refuse = False
        self.hold = False
        self.pairs: Set[asyncio.Task] = set()
        self.writers: List[asyncio.StreamWriter] = []
        self.frozen: Set[int] = set()
        self.server: Optional[asyncio.base_events.Server] = None
        self.accepted = 0

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"127.0.0.1:{port}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if self.refuse:
            writer.close()
            return
        if self.hold:
            self.writers.append(writer)
            return
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        self.writers += [writer, up_writer]
        pair = self.accepted

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while True:
                    data = await src.read(65536)
                    if not data:
                        break
                    if pair in self.frozen:
                        continue  # swallowed: the path is dead
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))

    def cut(self) -> None:
        """Closes every proxied connection (both sides), as a network failure would."""
        for writer in self.writers:
            transport = writer.transport
            transport.abort()
        self.writers.clear()

    def freeze(self) -> None:
        """Stops forwarding on every current connection, without closing anything."""
        self.frozen.update(range(1, self.accepted + 1))

    async def stop(self) -> None:
        self.cut()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


async def publish_jobs(node: Herald, channel: str, numbers: range) -> None:
    async with AsyncHeraldPublisher.http(node.http_url, api_key="test-api-key-0123") as publisher:
        for n in numbers:
            await publisher.publish({"type": "job_update", "n": n}, channel=channel)


# --- unit ------------------------------------------------------------------------------------


def test_backoff_grows_caps_and_jitters():
    backoff = Backoff(initial_delay=0.5, max_delay=4.0)
    assert [backoff.window(n) for n in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert backoff.window(10_000) == 4.0
    assert backoff.delay(3, rand=lambda: 0.25) == 0.5
    assert Backoff(jitter=False).delay(2) == 1.0
    with pytest.raises(ValueError):
        Backoff(multiplier=0.5)


def test_default_stream_of():
    assert default_stream_of({"stream": "c:jobs:1", "channel": "x"}) == (Kind.CHANNEL, "jobs:1")
    assert default_stream_of({"stream": "r:room-1"}) == (Kind.ROOM, "room-1")
    assert default_stream_of({"channel": "news"}) == (Kind.CHANNEL, "news")
    assert default_stream_of({"room_id": "r"}) == (Kind.ROOM, "r")
    assert default_stream_of({"type": "x"}) is None


def test_url_never_carries_the_token():
    client = HeraldClient("ws://127.0.0.1:1/ws?a=1", token="secret-token", client_id="me")
    assert client.url == "ws://127.0.0.1:1/ws?a=1&client_id=me"
    with pytest.raises(ValueError):
        HeraldClient("http://127.0.0.1:1/ws")


# --- end to end ------------------------------------------------------------------------------


def test_subscribe_and_iterate_with_positions(node):
    channel = unique("jobs:iter")

    async def main() -> None:
        states: List[SubscriptionState] = []
        unsubscribed: List[Dict[str, Any]] = []
        async with HeraldClient(node.ws_url, token=token("alice")) as client:
            assert client.state is ClientState.CONNECTED and client.connection_id
            sub = client.channel(channel)
            sub.on("state", states.append)
            sub.on("unsubscribed", unsubscribed.append)
            await sub.subscribe()
            assert sub.state is SubscriptionState.SUBSCRIBED
            await publish_jobs(node, channel, range(1, 4))
            got = await take(sub, 3)
            assert [p.data["n"] for p in got] == [1, 2, 3]
            assert [p.position.seq for p in got] == [1, 2, 3]
            assert all(p.channel == channel and p.type == "job_update" for p in got)
            assert sub.position == got[-1].position
            await sub.unsubscribe()
            assert sub.state is SubscriptionState.UNSUBSCRIBED
        assert states == [SubscriptionState.SUBSCRIBING, SubscriptionState.SUBSCRIBED, SubscriptionState.UNSUBSCRIBED]
        assert unsubscribed == [{"type": "unsubscribed", "channel": channel}]
        assert client.state is ClientState.CLOSED

    run(main())


def test_callbacks_alone_are_not_held_back_by_an_unread_buffer(node):
    channel = unique("jobs:callbacks")

    async def main() -> None:
        got: List[int] = []
        async with HeraldClient(node.ws_url, token=token("noah"), queue_size=2) as client:
            sub = client.channel(channel)
            sub.on("publication", lambda p: got.append(p.data["n"]))
            await sub.subscribe()
            await publish_jobs(node, channel, range(1, 6))
            await until(lambda: len(got) == 5, "five callbacks")
            assert got == [1, 2, 3, 4, 5]

    run(main())


def test_messagepack_encoding(node):
    """``encoding="msgpack"``: binary frames both ways, the same messages."""
    channel = unique("jobs:msgpack")

    async def main() -> None:
        async with HeraldClient(node.ws_url, token=token("olga"), encoding="msgpack") as client:
            assert client.subprotocol == "herald.msgpack"
            sub = await client.subscribe(channel)
            await publish_jobs(node, channel, range(1, 3))
            got = await take(sub, 2)
            assert [p.data["n"] for p in got] == [1, 2] and got[1].position.seq == 2
            page = await client.history(channel=channel)
            assert [e["n"] for e in page.events] == [1, 2]

    run(main())


def test_subscribing_first_opens_the_connection(node):
    async def main() -> None:
        client = HeraldClient(node.ws_url, token=token("mia"))
        sub = await client.subscribe(unique("jobs:first"))
        assert sub.state is SubscriptionState.SUBSCRIBED and client.state is ClientState.CONNECTED
        await client.close()

        refused = HeraldClient(node.ws_url, token="not-a-jwt")
        with pytest.raises(HeraldAuthError):
            await refused.subscribe(unique("jobs:never"))

    run(main())


def test_a_cut_connection_resumes_without_loss_or_duplicates(node):
    channel = unique("jobs:cut")

    async def main() -> None:
        proxy = Proxy(node.addr)
        addr = await proxy.start()
        disconnects: List[Disconnect] = []
        gaps: List[Any] = []
        client = HeraldClient(f"ws://{addr}/ws", token=token("bob"), backoff=FAST)
        client.on("disconnected", disconnects.append)
        await client.connect()
        sub = await client.subscribe(channel)
        sub.on("gap", gaps.append)
        await publish_jobs(node, channel, range(1, 4))
        first = await take(sub, 3)

        proxy.refuse = True
        proxy.cut()
        await until(lambda: client.state is not ClientState.CONNECTED, "the client to notice the cut")
        # Published while the client cannot reach Herald: replayed after the reconnect.
        await publish_jobs(node, channel, range(4, 7))
        proxy.refuse = False
        await until(lambda: client.connections == 2 and sub.state is SubscriptionState.SUBSCRIBED, "the resume")
        await publish_jobs(node, channel, range(7, 10))
        rest = await take(sub, 6)

        assert [p.data["n"] for p in first + rest] == list(range(1, 10))
        assert [p.position.seq for p in first + rest] == list(range(1, 10))
        assert gaps == []
        assert disconnects and disconnects[0].reconnect
        await client.close()
        await proxy.stop()

    run(main())


def test_a_gap_history_no_longer_covers_is_reported(node):
    """History keeps 2 events; 4 are published while the client is away: the resume reports a
    gap (from the last position seen to Herald's), and live events carry on."""
    channel = unique("short:gap")

    async def main() -> None:
        proxy = Proxy(node.addr)
        addr = await proxy.start()
        gaps: List[Gap] = []
        client = HeraldClient(f"ws://{addr}/ws", token=token("kim"), backoff=FAST)
        sub = await (await client.connect()).subscribe(channel)
        sub.on("gap", gaps.append)
        await publish_jobs(node, channel, range(1, 3))
        first = await take(sub, 2)
        proxy.refuse = True
        proxy.cut()
        await until(lambda: client.state is not ClientState.CONNECTED, "the client to notice the cut")
        await publish_jobs(node, channel, range(3, 7))
        proxy.refuse = False
        await until(lambda: gaps, "the gap")
        assert gaps[0].since == first[-1].position and gaps[0].current.seq == 6
        await publish_jobs(node, channel, range(7, 8))
        (live,) = await take(sub, 1)
        assert live.data["n"] == 7 and live.position.seq == 7
        await client.close()
        await proxy.stop()

    run(main())


def test_a_restarted_server_resumes_from_redis_history(tmp_root, redis_url, redis):
    """The node goes away (graceful shutdown: 1001), events are published meanwhile on another
    node, and the client resumes from Redis history on the restarted node: 1..9, once each."""
    channel = unique("jobs:restart")
    addr = f"127.0.0.1:{free_port()}"
    a = start_node(tmp_root, CONFIG, listen=addr, redis_url=redis_url)
    b = start_node(tmp_root, CONFIG, redis_url=redis_url)
    try:
        wait_until(lambda: ready(a) and ready(b), "both nodes to be ready", a)

        async def main() -> None:
            nonlocal a
            codes: List[int] = []
            client = HeraldClient(f"ws://{addr}/ws", token=token("carol"), backoff=FAST)
            client.on("disconnected", lambda d: codes.append(d.code))
            sub = await (await client.connect()).subscribe(channel)
            await publish_jobs(b, channel, range(1, 4))
            first = await take(sub, 3)

            await asyncio.get_running_loop().run_in_executor(None, stop_node, a)
            await until(lambda: 1001 in codes, "the going-away close")
            await publish_jobs(b, channel, range(4, 7))
            a = await asyncio.get_running_loop().run_in_executor(
                None, lambda: start_node(tmp_root, CONFIG, listen=addr, redis_url=redis_url)
            )
            await until(lambda: client.connections >= 2 and sub.state is SubscriptionState.SUBSCRIBED, "the resume")
            await publish_jobs(b, channel, range(7, 10))
            rest = await take(sub, 6)
            assert [p.data["n"] for p in first + rest] == list(range(1, 10))
            await client.close()

        run(main())
    finally:
        stop_node(a)
        stop_node(b)


def test_a_silent_connection_is_replaced(node):
    """Heartbeats every 100 ms; a path that stops carrying them is dropped and reopened."""
    channel = unique("jobs:silent")

    async def main() -> None:
        proxy = Proxy(node.addr)
        addr = await proxy.start()
        reasons: List[str] = []
        heartbeats: List[Dict[str, Any]] = []
        client = HeraldClient(f"ws://{addr}/ws", token=token("dora"), backoff=FAST, heartbeat_timeout=1.0)
        client.on("disconnected", lambda d: reasons.append(d.reason))
        client.on("message", lambda m: heartbeats.append(m) if m.get("type") == "heartbeat" else None)
        sub = await (await client.connect()).subscribe(channel)
        # The check is armed by the first heartbeat message.
        await until(lambda: heartbeats, "a heartbeat")
        proxy.freeze()
        await until(lambda: client.connections == 2 and sub.state is SubscriptionState.SUBSCRIBED, "a new connection")
        assert any("heartbeat" in r for r in reasons), reasons
        await publish_jobs(node, channel, range(1, 2))
        assert [p.data["n"] for p in await take(sub, 1)] == [1]
        await client.close()
        await proxy.stop()

    run(main())


def test_token_is_refreshed_in_band(node):
    """The token expires within ``auth.refresh_ahead``: Herald sends ``token_expiring`` at once;
    the client answers with ``get_token``'s token on the same connection."""
    channel = unique("jobs:refresh")
    calls: List[float] = []

    async def get_token() -> str:
        calls.append(time.time())
        # The first token is about to expire; the refreshed one is good for an hour.
        return token("erin", ttl=10 if len(calls) == 1 else 3600)

    async def main() -> None:
        refreshed: List[Dict[str, Any]] = []
        client = HeraldClient(node.ws_url, get_token=get_token, backoff=FAST)
        client.on("token_refreshed", refreshed.append)
        sub = await (await client.connect()).subscribe(channel)
        connection = client.connection_id
        await until(lambda: refreshed, "token_refreshed")
        assert len(calls) == 2
        assert refreshed[0]["expires_at"] > time.time() + 3000
        assert client.connections == 1 and client.connection_id == connection
        await publish_jobs(node, channel, range(1, 2))
        assert [p.data["n"] for p in await take(sub, 1)] == [1]
        await client.close()

    run(main())


def test_a_refreshed_token_with_fewer_rights_ends_the_subscriptions_it_no_longer_allows(node):
    """The first token holds the `vip` role; the refreshed one does not: Herald revokes the `vip*`
    channel (``unsubscribed`` with ``revoked``), and its iteration ends with the refusal."""
    vip, plain = unique("vip-lounge"), unique("jobs:plain")
    calls: List[int] = []

    async def main() -> None:
        subscribed = asyncio.Event()

        async def get_token() -> str:
            calls.append(1)
            if len(calls) == 1:
                return token("judy", ttl=10, roles=["vip"])
            # Herald asks at once (the token expires within refresh_ahead); answer once subscribed.
            await subscribed.wait()
            return token("judy", roles=[])

        errors: List[HeraldServerError] = []
        client = HeraldClient(node.ws_url, get_token=get_token, backoff=FAST)
        await client.connect()
        lounge = client.channel(vip)
        lounge.on("error", errors.append)
        await lounge.subscribe()
        other = await client.subscribe(plain)
        subscribed.set()
        with pytest.raises(HeraldServerError) as revoked:
            async for _ in lounge:
                pass
        assert revoked.value.code == "PERMISSION_DENIED"
        assert lounge.state is SubscriptionState.UNSUBSCRIBED and [e.code for e in errors] == ["PERMISSION_DENIED"]
        assert other.state is SubscriptionState.SUBSCRIBED and client.connections == 1
        await client.close()

    run(main())


def test_a_forbidden_channel_is_refused_and_the_connection_carries_on(node):
    async def main() -> None:
        errors: List[HeraldServerError] = []
        async with HeraldClient(node.ws_url, token=token("frank")) as client:
            secret = client.channel("secret-plans")
            secret.on("error", errors.append)
            with pytest.raises(HeraldServerError) as refused:
                await secret.subscribe()
            assert refused.value.code == "PERMISSION_DENIED"
            assert secret.state is SubscriptionState.UNSUBSCRIBED
            assert [e.code for e in errors] == ["PERMISSION_DENIED"]
            fine = await client.subscribe(unique("jobs:fine"))
            assert fine.state is SubscriptionState.SUBSCRIBED and client.connections == 1

    run(main())


def test_a_bad_token_is_refused_without_reconnecting(node):
    async def main() -> None:
        states: List[ClientState] = []
        client = HeraldClient(node.ws_url, token="not-a-jwt", backoff=FAST)
        client.on("state", states.append)
        with pytest.raises(HeraldAuthError) as refused:
            await client.connect()
        assert refused.value.code == "AUTHENTICATION_FAILED"
        assert client.state is ClientState.CLOSED
        assert states.count(ClientState.CONNECTING) == 1
        with pytest.raises(HeraldAuthError):
            await client.connect()

        wrong = HeraldClient(node.ws_url, token=hs256({"sub": "x", "exp": int(time.time()) + 60}, "another-secret"))
        with pytest.raises(HeraldAuthError):
            await wrong.connect()

    run(main())


def test_room_presence_history_and_publish(node):
    room = unique("room-chat")

    async def main() -> None:
        async with (
            HeraldClient(node.ws_url, token=token("gina")) as gina,
            HeraldClient(node.ws_url, token=token("hugo")) as hugo,
        ):
            joins: List[Dict[str, Any]] = []
            leaves: List[Dict[str, Any]] = []
            g_room = gina.room(room)
            g_room.on("join", joins.append)
            g_room.on("leave", leaves.append)
            await g_room.subscribe()
            await until(lambda: g_room.presence().user_ids == ["gina"], "gina's room_state")
            h_room = await hugo.join(room)
            await until(lambda: joins, "hugo's user_joined")
            assert joins[0]["user_id"] == "hugo"
            assert g_room.presence().user_ids == ["gina", "hugo"]
            await until(lambda: h_room.presence().user_ids == ["gina", "hugo"], "hugo's room_state")

            ack = await h_room.publish("hello", idempotency_key="k-1")
            assert ack.room == room and not ack.duplicate
            again = await h_room.publish("hello", idempotency_key="k-1")
            assert again.duplicate and again.message_id == ack.message_id
            got = await take(g_room, 1)
            assert got[0].type == "chat_message" and got[0].data["content"] == "hello"
            # The room's stream also carries the presence events (hugo's user_joined, …).
            assert got[0].room == room and got[0].position == g_room.position

            page = await g_room.history(limit=10)
            assert page.stream == f"r:{room}" and page.position == g_room.position
            assert [e["content"] for e in page.events if e["type"] == "chat_message"] == ["hello"]
            later = await gina.history(room=room, since=page.position)
            assert later.events == [] and later.recovered is True

            with pytest.raises(HeraldClientError):
                await gina.channel(unique("jobs:x")).publish("nope")

            await h_room.unsubscribe()
            await until(lambda: leaves, "hugo's user_left")
            assert g_room.presence().user_ids == ["gina"]

    run(main())


STRICT = f"""
[auth]
mode = "required"
jwt_secret = "{SECRET}"
leeway = 0
on_expiry = "disconnect"
reject = "http"

[websocket]
heartbeat_interval = "100ms"

[[history]]
channels = "jobs:*"
size = 1000
max_age = "10m"
"""


@pytest.fixture(scope="module")
def strict(tmp_root: str) -> Herald:
    """No refresh in band, no leeway, refusals as HTTP 401 before the upgrade."""
    herald = start_node(tmp_root, STRICT)
    yield herald
    stop_node(herald)


def test_an_expired_token_reconnects_with_a_fresh_one_and_resumes(strict):
    channel = unique("jobs:expired")
    calls: List[int] = []

    async def get_token() -> str:
        calls.append(1)
        # The first token expires in two seconds (Herald closes with 4003); the next lasts.
        return token("ivan", ttl=2 if len(calls) == 1 else 3600)

    async def main() -> None:
        codes: List[int] = []
        client = HeraldClient(strict.ws_url, get_token=get_token, backoff=FAST)
        client.on("disconnected", lambda d: codes.append(d.code))
        sub = await (await client.connect()).subscribe(channel)
        await publish_jobs(strict, channel, range(1, 3))
        first = await take(sub, 2)
        await until(lambda: 4003 in codes, "the 4003 close")
        await until(lambda: client.connections == 2 and sub.state is SubscriptionState.SUBSCRIBED, "the reconnect")
        assert len(calls) == 2
        await publish_jobs(strict, channel, range(3, 5))
        rest = await take(sub, 2)
        assert [p.data["n"] for p in first + rest] == [1, 2, 3, 4]
        await client.close()

    run(main())


def test_a_token_refused_before_the_upgrade_is_not_retried(strict):
    async def main() -> None:
        client = HeraldClient(strict.ws_url, token="not-a-jwt", backoff=FAST)
        with pytest.raises(HeraldAuthError) as refused:
            await client.connect()
        assert "401" in str(refused.value)
        assert client.state is ClientState.CLOSED and client.connections == 0

    run(main())


def test_close_during_the_handshake_and_during_the_backoff(node):
    async def main() -> None:
        proxy = Proxy(node.addr)
        addr = await proxy.start()
        proxy.hold = True  # accepts, and answers nothing: the handshake hangs
        states: List[ClientState] = []
        client = HeraldClient(f"ws://{addr}/ws", token=token("liam"))
        client.on("state", states.append)
        connecting = asyncio.ensure_future(client.connect())
        await until(lambda: proxy.accepted == 1, "the handshake to start")
        await client.close()
        assert client.state is ClientState.CLOSED
        with pytest.raises(HeraldClientError):
            await connecting

        port = free_port()  # nothing listens: the client waits between attempts
        waiting = HeraldClient(f"ws://127.0.0.1:{port}/ws", backoff=Backoff(initial_delay=60, max_delay=60))
        waiting.on("state", states.append)
        pending = asyncio.ensure_future(waiting.connect())
        await until(lambda: waiting.state is ClientState.DISCONNECTED, "the first refusal")
        await waiting.close()
        assert waiting.state is ClientState.CLOSED
        with pytest.raises(HeraldClientError):
            await pending
        await proxy.stop()

    run(main())
