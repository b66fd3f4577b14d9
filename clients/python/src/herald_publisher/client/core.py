"""The consumer client: one WebSocket to Herald, kept open, with subscriptions on it."""

from __future__ import annotations

import asyncio
import itertools
import json
import uuid
from typing import Any, Awaitable, Callable, Dict, List, Optional, Set, Tuple, Union
from urllib.parse import urlencode, urlsplit, urlunsplit

from .. import __version__ as VERSION
from ._feed import Emitter, Feed, log
from .backoff import Backoff
from .errors import HeraldAuthError, HeraldClientError, HeraldClosedError, HeraldServerError, HeraldTimeoutError
from .types import (
    ChatAck,
    ClientState,
    Disconnect,
    Gap,
    HistoryPage,
    Kind,
    Presence,
    PresenceMember,
    Publication,
    StreamPosition,
    SubscriptionState,
)

#: A coroutine function returning a fresh token (called on ``token_expiring``, and to reconnect
#: after the token was refused or expired).
GetToken = Callable[[], Awaitable[str]]

#: Which subscription a message belongs to: ``(Kind.CHANNEL, name)``, ``(Kind.ROOM, name)`` or None.
StreamOf = Callable[[Dict[str, Any]], Optional[Tuple[Kind, str]]]

#: Close codes after which reconnecting would be refused again, or would override a deliberate
#: decision: protocol disagreements (1002, 1003, 1007, 1010), refused credentials or policy (1008,
#: 3000, 3003), and an operator's disconnect (4001). 4003 (token expired) reconnects only with
#: ``get_token``.
NO_RECONNECT_CODES = frozenset({1002, 1003, 1007, 1008, 1010, 3000, 3003, 4001})

TOKEN_EXPIRED = 4003
_WELCOMES = ("connection", "connection_established")
_PRESENCE = ("room_state", "user_joined", "user_left")


def default_stream_of(message: Dict[str, Any]) -> Optional[Tuple[Kind, str]]:
    """Herald's ``stream`` field (``c:<channel>`` / ``r:<room>``, on events of streams with
    history), else a string ``channel``, ``room`` or ``room_id`` field the event carries."""
    stream = message.get("stream")
    if isinstance(stream, str) and len(stream) > 2 and stream[1] == ":":
        if stream[0] == "c":
            return (Kind.CHANNEL, stream[2:])
        if stream[0] == "r":
            return (Kind.ROOM, stream[2:])
    channel = message.get("channel")
    if isinstance(channel, str) and channel:
        return (Kind.CHANNEL, channel)
    for field in ("room", "room_id"):
        room = message.get(field)
        if isinstance(room, str) and room:
            return (Kind.ROOM, room)
    return None


class _Lost(HeraldClosedError):
    """The connection ended while a request waited for its answer (a :class:`HeraldClosedError`
    to applications; the client itself retries)."""


class _Fatal(Exception):
    """Ends the client for good."""

    def __init__(self, error: HeraldClientError, code: int = 0):
        super().__init__(str(error))
        self.error = error
        self.code = code


def _position(report: Any) -> Optional[StreamPosition]:
    if not isinstance(report, dict) or not isinstance(report.get("seq"), int):
        return None
    epoch = report.get("epoch")
    return StreamPosition(report["seq"], epoch if isinstance(epoch, str) else "")


def _import_msgpack() -> Any:
    try:
        import msgpack  # type: ignore[import-untyped,unused-ignore]
    except ImportError as e:  # pragma: no cover - depends on the environment
        from ..errors import HeraldConfigError

        raise HeraldConfigError(
            "encoding='msgpack' needs the `msgpack` package: pip install 'herald-publisher[client,msgpack]'"
        ) from e
    return msgpack


def _import_websockets() -> Any:
    try:
        import websockets
        from websockets.asyncio.client import connect
    except ImportError as e:  # pragma: no cover - depends on the environment
        from ..errors import HeraldConfigError

        raise HeraldConfigError(
            "the consumer client needs the `websockets` package (13 or later): pip install 'herald-publisher[client]'"
        ) from e
    return websockets, connect


class Subscription(Emitter):
    """A channel or a room the client follows, across reconnects.

    Read its events with ``async for publication in subscription`` (every event from
    :meth:`subscribe` on, in order; the iteration ends at :meth:`unsubscribe`, or raises the error
    that ended the subscription), or with callbacks: ``on("publication", cb)``. Other events:
    ``state`` (:class:`SubscriptionState`), ``subscribing``, ``subscribed`` (Herald's reply),
    ``unsubscribed``, ``error`` (:class:`HeraldServerError` for a refusal or a revocation,
    :class:`HeraldTimeoutError` when Herald did not answer), ``gap`` (:class:`Gap`), and for rooms
    ``presence`` (:class:`Presence`), ``join`` and ``leave`` (Herald's ``user_joined`` /
    ``user_left``).
    """

    def __init__(self, client: "HeraldClient", kind: Kind, name: str, buffer: bool):
        super().__init__()
        self.client = client
        self.kind = kind
        self.name = name
        self.state = SubscriptionState.UNSUBSCRIBED
        #: The last position seen in the stream (streams with history only).
        self.position: Optional[StreamPosition] = None
        self._presence = Presence(name)
        self._wanted = False
        self._buffer = buffer
        self._feed: Optional[Feed[Publication]] = None
        self._waiters: List["asyncio.Future[None]"] = []

    def __repr__(self) -> str:
        return f"<Subscription {self.kind.value} {self.name!r} {self.state.value}>"

    # --- what applications call -------------------------------------------------------------

    async def subscribe(self) -> "Subscription":
        """Subscribes (channel) or joins (room) and waits for Herald's acknowledgement; while the
        client is disconnected, waits for the next connection (and opens the first one if
        ``connect()`` was not called). Raises :class:`HeraldServerError`
        when Herald refuses (``PERMISSION_DENIED``, ``INVALID_NAME``, ``LIMIT_EXCEEDED``, …)."""
        if self.client.state is ClientState.CLOSED:
            raise HeraldClosedError("the client is closed")
        if self.state is SubscriptionState.SUBSCRIBED:
            return self
        waiter: "asyncio.Future[None]" = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        if not self._wanted:
            self._wanted = True
            if self._buffer and (self._feed is None or self._feed.ended):
                self._feed = Feed(self.client.queue_size)
            await self._set_state(SubscriptionState.SUBSCRIBING)
            self.client._start_subscribe(self)
        await waiter
        return self

    async def unsubscribe(self) -> None:
        """Stops following: ``unsubscribe`` / ``leave_room``, the iteration ends, the position is
        forgotten."""
        was_live = self.state is SubscriptionState.SUBSCRIBED
        self._wanted = False
        self.position = None
        self._fail_waiters(HeraldClientError("unsubscribed before Herald acknowledged"))
        await self._set_state(SubscriptionState.UNSUBSCRIBED)
        if self._feed is not None:
            self._feed.end()
        self.client._forget(self)
        if was_live and self.client.state is ClientState.CONNECTED:
            try:
                await self.client.request(self._leave_request())
            except (HeraldServerError, HeraldClosedError, HeraldTimeoutError):
                # Already gone on Herald's side (a revocation, a lost connection): nothing to undo.
                pass

    def presence(self) -> Presence:
        """Who is in the room now (rooms only): a copy of what Herald reported."""
        if self.kind is not Kind.ROOM:
            raise HeraldClientError("presence is kept for rooms only")
        return Presence(self.name, dict(self._presence.members))

    async def history(self, *, limit: Optional[int] = None, since: Optional[StreamPosition] = None) -> HistoryPage:
        """The stream's recent events (Herald's ``history`` request; streams with history only)."""
        return await self.client.history(**{self.kind.value: self.name}, limit=limit, since=since)

    async def publish(
        self,
        content: str,
        *,
        message_type: str = "text",
        metadata: Optional[Dict[str, Any]] = None,
        idempotency_key: Optional[str] = None,
    ) -> ChatAck:
        """Posts a chat message to the room (rooms only), where the access rules allow it. See
        :meth:`HeraldClient.publish`."""
        if self.kind is not Kind.ROOM:
            raise HeraldClientError("clients publish to rooms (chat_message); channels are published by backends")
        return await self.client.publish(
            self.name, content, message_type=message_type, metadata=metadata, idempotency_key=idempotency_key
        )

    def __aiter__(self) -> Feed[Publication]:
        if not self._buffer:
            raise HeraldClientError("this subscription was created with buffer=False: use on('publication', …)")
        if self._feed is None:
            self._feed = Feed(self.client.queue_size)
        return self._feed.__aiter__()

    # --- the client's side ---------------------------------------------------------------------

    async def _set_state(self, state: SubscriptionState, *args: Any) -> None:
        if state is self.state:
            return
        self.state = state
        if state is SubscriptionState.UNSUBSCRIBED and not args:
            args = ({"type": "unsubscribed", self.kind.value: self.name},)
        await self._emit("state", state)
        await self._emit(state.value, *args)

    def _leave_request(self) -> Dict[str, Any]:
        if self.kind is Kind.CHANNEL:
            return {"type": "unsubscribe", "channels": [self.name]}
        return {"type": "leave_room", "room": self.name}

    def _resolve_waiters(self) -> None:
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._waiters.clear()

    def _fail_waiters(self, error: BaseException) -> None:
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_exception(error)
        self._waiters.clear()

    def _request(self) -> Dict[str, Any]:
        """The subscribe / join request, with the position to resume from when there is one."""
        if self.kind is Kind.CHANNEL:
            request: Dict[str, Any] = {"type": "subscribe", "channels": [self.name]}
        else:
            request = {"type": "join_room", "room": self.name}
        if self.client.recover:
            request["seq"] = True
            if self.position is not None:
                resume = {"seq": self.position.seq, "epoch": self.position.epoch}
                request["recover"] = {self.name: resume} if self.kind is Kind.CHANNEL else resume
        return request

    def _on_reply(self, reply: Dict[str, Any]) -> Optional[Gap]:
        """Reads the position report of ``subscribed`` / ``room_joined``, synchronously in the reader
        (the replayed events follow the reply at once). Returns a gap to report, if any."""
        if self.kind is Kind.CHANNEL:
            streams = reply.get("streams")
            report = streams.get(self.name) if isinstance(streams, dict) else None
        else:
            report = reply.get("stream")
        current = _position(report)
        if current is None:
            return None
        recovered = report.get("recovered") if isinstance(report, dict) else None
        if recovered is True:
            return None  # the replay that follows moves the position event by event
        previous = self.position
        if recovered is False and previous is not None:
            self.position = current
            return Gap(since=previous, current=current)
        if previous is None or previous.epoch != current.epoch or previous.seq < current.seq:
            self.position = current
        return None

    def _accept(self, message: Dict[str, Any]) -> Optional[Publication]:
        """A publication for this subscription, or None for a duplicate already delivered."""
        seq = message.get("seq")
        position = None
        if isinstance(seq, int) and not isinstance(seq, bool) and isinstance(message.get("stream"), str):
            epoch = message.get("epoch")
            position = StreamPosition(seq, epoch if isinstance(epoch, str) else "")
            last = self.position
            if last is not None and last.epoch == position.epoch and position.seq <= last.seq:
                return None
            self.position = position
        channel = self.name if self.kind is Kind.CHANNEL else None
        room = self.name if self.kind is Kind.ROOM else None
        return Publication(message, channel=channel, room=room, position=position)

    async def _deliver(self, publication: Publication) -> None:
        feed = self._feed
        if feed is not None:
            if feed.full() and not feed.iterated:
                # Nobody reads it with `async for` (callbacks only): waiting for a reader that
                # never comes would stop the connection. Stop buffering instead.
                log.warning(
                    "%s %r: the async-for buffer is full and unread; buffering stops (buffer=False for callbacks only)",
                    self.kind.value,
                    self.name,
                )
                self._feed = None
            else:
                await feed.push(publication)
        await self._emit("publication", publication)

    async def _on_presence(self, message: Dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "room_state":
            members: Dict[str, PresenceMember] = {}
            for user in message.get("users") or ():
                if isinstance(user, dict) and user.get("user_id") is not None:
                    members[str(user["user_id"])] = PresenceMember(**user)  # type: ignore[typeddict-item]
            self._presence.members = members
            await self._emit("presence", self.presence())
            return
        user_id = message.get("user_id")
        if user_id is None:
            return
        if kind == "user_joined":
            user = message.get("user")
            member = PresenceMember(**user) if isinstance(user, dict) else PresenceMember(user_id=str(user_id))  # type: ignore[typeddict-item]
            self._presence.members[str(user_id)] = member
            await self._emit("join", message)
        else:
            self._presence.members.pop(str(user_id), None)
            await self._emit("leave", message)

    async def _ended(self, error: BaseException) -> None:
        """Herald took the subscription away (revoked), or the client closed for good."""
        self._wanted = False
        self._fail_waiters(error)
        await self._set_state(SubscriptionState.UNSUBSCRIBED)
        if self._feed is not None:
            self._feed.end(error if isinstance(error, HeraldServerError) or self.client._fatal else None)


class HeraldClient(Emitter):
    """An asyncio client that consumes events from Herald over one WebSocket.

    ::

        async with HeraldClient("ws://127.0.0.1:8000/ws", get_token=fetch_token) as client:
            jobs = await client.subscribe("jobs:1")
            async for publication in jobs:
                print(publication.data)

    It sends the token in the ``Authorization`` header (never in the URL), reconnects with
    exponential backoff and jitter, subscribes again to everything after a reconnect and resumes
    streams with history from the last position seen (no loss, no duplicates while Herald still
    holds the missed events; a ``gap`` event otherwise), answers ``token_expiring`` with a token
    from ``get_token`` without reconnecting, and treats a connection that stops sending Herald's
    heartbeats as dead.

    Client events (``on(name, callback)``): ``state`` (:class:`ClientState`), ``connecting``,
    ``connected`` (the welcome message), ``disconnected`` (:class:`Disconnect`), ``closed`` (the
    error that ended the client, or None), ``message`` (every message, as a dict), ``error`` (an
    unsolicited error message, as :class:`HeraldServerError`), ``token_refreshed``.
    ``async for message in client`` reads every message from then on.
    """

    def __init__(
        self,
        url: str,
        *,
        token: Optional[str] = None,
        get_token: Optional[GetToken] = None,
        client_id: Optional[str] = None,
        params: Optional[Dict[str, str]] = None,
        headers: Optional[Dict[str, str]] = None,
        reconnect: bool = True,
        backoff: Optional[Backoff] = None,
        recover: bool = True,
        heartbeat_timeout: Optional[float] = 75.0,
        request_timeout: float = 15.0,
        open_timeout: float = 10.0,
        queue_size: int = 1024,
        expect_welcome: bool = True,
        stream_of: StreamOf = default_stream_of,
        encoding: str = "json",
        connect_options: Optional[Dict[str, Any]] = None,
    ):
        """
        Args:
            url: A WebSocket endpoint, e.g. ``ws://127.0.0.1:8000/ws`` (query parameters kept).
            token: A JWT, sent as ``Authorization: Bearer <token>``.
            get_token: A coroutine function returning a fresh JWT; called when there is no
                token yet, on ``token_expiring``, and before reconnecting after the token was
                refused or expired.
            client_id: Added to the URL as ``client_id``.
            params: More query parameters (e.g. an endpoint's template parameters).
            headers: More HTTP headers for the upgrade request.
            reconnect: False ends the client at the first lost connection.
            backoff: Reconnect delays (default: 0.5 s doubling to 20 s, full jitter).
            recover: Follow streams with history with positions and resume them after a
                reconnect (``seq`` / ``recover`` on subscribe and join).
            heartbeat_timeout: Once a connection carried Herald's ``heartbeat`` messages (every
                ``websocket.heartbeat_interval``, 30 s by default), nothing arriving on it for
                this long (seconds) means it is dead: it is dropped and replaced. Keep it well
                above the interval; None turns the check off. Nodes that send no heartbeat
                messages (``websocket.heartbeat_message = false``) never arm it, and the
                WebSocket pings of ``websockets`` still detect a dead peer.
            request_timeout: Seconds to wait for the answer to a request.
            open_timeout: Seconds for the opening handshake.
            queue_size: Bound of each ``async for`` buffer.
            expect_welcome: Wait for Herald's welcome (``connection``) before counting a
                connection as open; False for endpoints configured with ``welcome = "none"``.
            stream_of: Which subscription an event belongs to (see :func:`default_stream_of`).
            encoding: ``"json"`` (text frames), or ``"msgpack"``: the ``herald.msgpack``
                subprotocol, every message a MessagePack map in a binary frame (needs the
                ``msgpack`` package: ``pip install 'herald-publisher[client,msgpack]'``).
            connect_options: More keyword arguments for ``websockets.asyncio.client.connect``.
        """
        super().__init__()
        self._websockets, self._connect = _import_websockets()
        parts = urlsplit(url)
        if parts.scheme not in ("ws", "wss"):
            raise ValueError(f"a Herald WebSocket URL starts with ws:// or wss://, not {url!r}")
        query = parts.query
        extra = dict(params or {})
        if client_id is not None:
            extra["client_id"] = client_id
        if extra:
            query = "&".join(q for q in (query, urlencode(extra)) if q)
        self.url = urlunsplit((parts.scheme, parts.netloc, parts.path, query, ""))
        self.token = token
        self.get_token = get_token
        self.headers = dict(headers or {})
        self.reconnect = reconnect
        self.backoff = backoff or Backoff()
        self.recover = recover
        self.heartbeat_timeout = heartbeat_timeout
        self.request_timeout = request_timeout
        self.open_timeout = open_timeout
        self.queue_size = queue_size
        self.expect_welcome = expect_welcome
        self.stream_of = stream_of
        self.connect_options = dict(connect_options or {})
        if encoding not in ("json", "msgpack"):
            raise ValueError(f"encoding is 'json' or 'msgpack', not {encoding!r}")
        self.encoding = encoding
        self._msgpack: Any = _import_msgpack() if encoding == "msgpack" else None
        self.state = ClientState.DISCONNECTED
        #: Herald's id for the current connection (from the welcome).
        self.connection_id: Optional[str] = None
        #: How many connections were opened (1 after the first).
        self.connections = 0
        self._subs: Dict[Tuple[Kind, str], Subscription] = {}
        self._pending: Dict[str, Tuple["asyncio.Future[Dict[str, Any]]", Optional[Callable[[Dict[str, Any]], Any]]]]
        self._pending = {}
        self._ids = itertools.count(1)
        self._feeds: Set[Feed[Dict[str, Any]]] = set()
        self._ws: Any = None
        self._run_task: Optional["asyncio.Task[None]"] = None
        self._tasks: Set["asyncio.Task[Any]"] = set()
        self._closing = False
        self._fatal: Optional[HeraldClientError] = None
        self._connected_waiters: List["asyncio.Future[None]"] = []
        self._wake: Optional[asyncio.Event] = None
        self._last_error: Optional[Dict[str, Any]] = None
        self._token_refused = False

    # --- lifecycle ------------------------------------------------------------------------------

    async def connect(self) -> "HeraldClient":
        """Opens the connection and waits until Herald welcomed it (retrying with backoff while
        Herald is unreachable). Raises :class:`HeraldAuthError` when the token is refused, and
        :class:`HeraldClosedError` after :meth:`close`."""
        if self._fatal is not None:
            raise self._fatal
        if self.state is ClientState.CLOSED:
            raise HeraldClosedError("the client is closed")
        if self.state is ClientState.CONNECTED:
            return self
        waiter: "asyncio.Future[None]" = asyncio.get_running_loop().create_future()
        self._connected_waiters.append(waiter)
        self._ensure_running()
        await waiter
        return self

    @property
    def subprotocol(self) -> Optional[str]:
        """The WebSocket subprotocol of the current connection (``herald.msgpack`` with
        ``encoding="msgpack"``), None when not connected or none was negotiated."""
        ws = self._ws
        return getattr(ws, "subprotocol", None) if ws is not None else None

    def _ensure_running(self) -> None:
        """Starts the connection loop once (``connect()``, or a first ``subscribe()``)."""
        if self._run_task is None and self.state is not ClientState.CLOSED:
            self._wake = asyncio.Event()
            self._run_task = asyncio.get_running_loop().create_task(self._run())
            self._run_task.add_done_callback(self._run_done)

    def _run_done(self, task: "asyncio.Task[None]") -> None:
        """A connection loop that died of a defect must not leave ``connect()`` waiting forever."""
        if task.cancelled() or task.exception() is None:
            return
        error = HeraldClientError(f"the connection loop failed: {task.exception()!r}")
        log.error("%s", error)
        for waiter in self._connected_waiters:
            if not waiter.done():
                waiter.set_exception(error)
        self._connected_waiters.clear()

    async def close(self) -> None:
        """Closes the connection for good (code 1000); every iteration ends. A handshake in
        progress or a wait between attempts is abandoned at once."""
        if self.state is ClientState.CLOSED and self._run_task is None:
            return
        self._closing = True
        if self._wake is not None:
            self._wake.set()
        ws, task = self._ws, self._run_task
        if ws is not None and self.state is ClientState.CONNECTED:
            await ws.close(1000, "client closed")  # the loop sees the close and ends
        elif task is not None:
            task.cancel()  # opening, or not yet welcomed: nothing to close gracefully
        if task is not None:
            # wait() neither raises the loop's error (_run_done logged it) nor swallows a
            # cancellation of close() itself.
            await asyncio.wait([task])
            self._run_task = None
        if ws is not None:
            await ws.close(1000, "client closed")
        await self._finish(None)

    async def __aenter__(self) -> "HeraldClient":
        return await self.connect()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __aiter__(self) -> Feed[Dict[str, Any]]:
        feed: Feed[Dict[str, Any]] = Feed(self.queue_size, on_close=self._feeds.discard)
        self._feeds.add(feed)
        if self.state is ClientState.CLOSED:
            feed.end(self._fatal)
        return feed

    # --- subscriptions ---------------------------------------------------------------------------

    def channel(self, name: str, *, buffer: bool = True) -> Subscription:
        """The subscription object for a channel (created once, not yet subscribed).

        ``buffer=False`` for callback-only use: nothing is queued for ``async for``."""
        return self._sub(Kind.CHANNEL, name, buffer)

    def room(self, name: str, *, buffer: bool = True) -> Subscription:
        """The subscription object for a room (created once, not yet joined)."""
        return self._sub(Kind.ROOM, name, buffer)

    async def subscribe(self, channel: str, *, buffer: bool = True) -> Subscription:
        """Subscribes to a channel and waits for Herald's acknowledgement."""
        return await self.channel(channel, buffer=buffer).subscribe()

    async def join(self, room: str, *, buffer: bool = True) -> Subscription:
        """Joins a room and waits for Herald's acknowledgement."""
        return await self.room(room, buffer=buffer).subscribe()

    @property
    def subscriptions(self) -> List[Subscription]:
        """Every subscription object the client holds."""
        return list(self._subs.values())

    def _sub(self, kind: Kind, name: str, buffer: bool) -> Subscription:
        if not isinstance(name, str) or not name:
            raise ValueError(f"a {kind.value} name is a non-empty string")
        sub = self._subs.get((kind, name))
        if sub is None:
            sub = Subscription(self, kind, name, buffer)
            self._subs[(kind, name)] = sub
        return sub

    def _forget(self, sub: Subscription) -> None:
        if self._subs.get((sub.kind, sub.name)) is sub:
            del self._subs[(sub.kind, sub.name)]

    def _start_subscribe(self, sub: Subscription) -> None:
        if self.state is ClientState.CONNECTED:
            self._spawn(self._send_subscribe(sub))
        else:
            # The next connection subscribes everything wanted (_restore); start one if need be.
            self._ensure_running()

    async def _send_subscribe(self, sub: Subscription) -> None:
        gap: List[Gap] = []

        def on_reply(reply: Dict[str, Any]) -> None:
            if reply.get("type") != "error" and sub._wanted:
                found = sub._on_reply(reply)
                if found is not None:
                    gap.append(found)
                sub.state = SubscriptionState.SUBSCRIBED

        try:
            reply = await self.request(sub._request(), on_reply=on_reply)
        except HeraldClosedError:
            return  # lost, or not connected yet: the next connection subscribes again (_restore)
        except HeraldServerError as e:
            sub._wanted = False
            sub._fail_waiters(e)
            await sub._set_state(SubscriptionState.UNSUBSCRIBED)
            await sub._emit("error", e)
            return
        except HeraldClientError as e:  # no answer in time: say so; the next connection retries
            log.warning("subscribing to %s %r: %s", sub.kind.value, sub.name, e)
            sub._fail_waiters(e)
            await sub._emit("error", e)
            return
        if not sub._wanted:
            # Unsubscribed while the request was on its way: undo it on Herald's side too.
            if self.state is ClientState.CONNECTED:
                self._spawn(self._quietly(sub._leave_request()))
            return
        # The state changed in the reader (so replayed events found it subscribed); tell now.
        await sub._emit("state", SubscriptionState.SUBSCRIBED)
        await sub._emit("subscribed", reply)
        for found in gap:
            await sub._emit("gap", found)
        sub._resolve_waiters()

    async def _quietly(self, request: Dict[str, Any]) -> None:
        try:
            await self.request(request)
        except HeraldClientError as e:
            log.debug("%s: %s", request.get("type"), e)

    # --- requests ----------------------------------------------------------------------------------

    async def send(self, message: Dict[str, Any]) -> None:
        """Sends one message as is (no answer awaited). Raises :class:`HeraldClosedError` when
        not connected."""
        ws = self._ws
        if ws is None or self.state is not ClientState.CONNECTED:
            raise HeraldClosedError("not connected")
        if self._msgpack is not None:
            frame: Union[str, bytes] = self._msgpack.packb(message, use_bin_type=True)
        else:
            frame = json.dumps(message, separators=(",", ":"))
        try:
            await ws.send(frame)
        except self._websockets.exceptions.ConnectionClosed as e:
            raise _Lost(str(e)) from e

    async def request(
        self, message: Dict[str, Any], *, on_reply: Optional[Callable[[Dict[str, Any]], Any]] = None
    ) -> Dict[str, Any]:
        """Sends a request with a fresh ``id`` and returns Herald's answer (the message carrying
        the same ``id``). Raises :class:`HeraldServerError` for an error answer,
        :class:`HeraldTimeoutError` after ``request_timeout``."""
        # A text id with a prefix: events may carry an `id` of their own (a chat message's id).
        request_id = f"hc-{next(self._ids)}"
        future: "asyncio.Future[Dict[str, Any]]" = asyncio.get_running_loop().create_future()
        self._pending[request_id] = (future, on_reply)
        try:
            await self.send({**message, "id": request_id})
            return await asyncio.wait_for(future, self.request_timeout)
        except asyncio.TimeoutError:
            raise HeraldTimeoutError(f"no answer to {message.get('type')!r} within {self.request_timeout} s") from None
        finally:
            self._pending.pop(request_id, None)

    async def history(
        self,
        *,
        channel: Optional[str] = None,
        room: Optional[str] = None,
        limit: Optional[int] = None,
        since: Optional[StreamPosition] = None,
    ) -> HistoryPage:
        """The recent events of a channel's or room's stream (streams with history), guarded by
        the access rules like a subscription."""
        if (channel is None) == (room is None):
            raise ValueError("give a channel or a room")
        request: Dict[str, Any] = {"type": "history"}
        if channel is not None:
            request["channel"] = channel
        else:
            request["room"] = room
        if limit is not None:
            request["limit"] = limit
        if since is not None:
            request["since"] = {"seq": since.seq, "epoch": since.epoch}
        reply = await self.request(request)
        events = reply.get("events")
        recovered = reply.get("recovered")
        return HistoryPage(
            stream=str(reply.get("stream", "")),
            position=_position(reply) or StreamPosition(0),
            events=[e for e in events if isinstance(e, dict)] if isinstance(events, list) else [],
            recovered=recovered if isinstance(recovered, bool) else None,
        )

    async def publish(
        self,
        room: str,
        content: str,
        *,
        message_type: str = "text",
        metadata: Optional[Dict[str, Any]] = None,
        idempotency_key: Optional[str] = None,
    ) -> ChatAck:
        """Posts a chat message to a room (``chat_message``): stored, delivered to the room, and
        acknowledged once durable. It carries an idempotency key (a random one unless given), so a
        retry after a lost connection is stored once; the call retries once itself after a
        reconnect."""
        request: Dict[str, Any] = {
            "type": "chat_message",
            "room": room,
            "content": content,
            "message_type": message_type,
            "idempotency_key": idempotency_key or uuid.uuid4().hex,
        }
        if metadata is not None:
            request["metadata"] = metadata
        for attempt in (1, 2):
            try:
                reply = await self.request(request)
                break
            except (_Lost, HeraldClosedError):
                if attempt == 2 or self.state is ClientState.CLOSED:
                    raise HeraldClosedError("the connection was lost before Herald acknowledged") from None
                await self.connect()
        return ChatAck(
            message_id=reply.get("message_id"),
            room=str(reply.get("room", room)),
            duplicate=bool(reply.get("duplicate", False)),
            raw=reply,
        )

    async def set_status(self, status: str) -> Dict[str, Any]:
        """Sets the user's presence status (``status_update``: ``online``, ``away``, ``busy``, …)."""
        return await self.request({"type": "status_update", "status": status})

    # --- the connection loop ------------------------------------------------------------------------

    def _spawn(self, coroutine: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _set_state(self, state: ClientState, *args: Any) -> None:
        if state is self.state:
            return
        self.state = state
        await self._emit("state", state)
        await self._emit(state.value, *args)

    async def _fresh_token(self) -> None:
        if self.get_token is not None:
            self.token = await self.get_token()

    async def _run(self) -> None:
        attempt = 0
        while not self._closing:
            await self._set_state(ClientState.CONNECTING)
            disconnect: Disconnect
            try:
                if self.token is None or self._token_refused:
                    await self._fresh_token()
                ws = await self._open()
            except _Fatal as e:
                await self._finish(e.error)
                return
            except Exception as e:  # unreachable, refused handshake, timeout: retry
                if self._closing:
                    break
                status = getattr(getattr(e, "response", None), "status_code", None)
                if status in (401, 403):
                    error = HeraldAuthError("AUTHENTICATION_FAILED", f"Herald refused the upgrade with HTTP {status}")
                    if self._token_refused or self.get_token is None:
                        await self._finish(error)
                        return
                    self._token_refused = True
                else:
                    self._token_refused = False
                disconnect = Disconnect(0, f"{type(e).__name__}: {e}", self.reconnect)
            else:
                if self._closing:  # close() was called while the handshake ran
                    await ws.close(1000, "client closed")
                    break
                try:
                    disconnect, welcomed = await self._serve(ws)
                except _Fatal as e:
                    await self._finish(e.error)
                    return
                if welcomed:  # a connection that worked: the backoff starts over
                    attempt = 0
            if self._closing:
                break
            if not self.reconnect:
                await self._emit("disconnected", Disconnect(disconnect.code, disconnect.reason, False))
                await self._finish(HeraldClosedError(f"connection lost ({disconnect.code} {disconnect.reason})"))
                return
            await self._set_state(ClientState.DISCONNECTED, disconnect)
            attempt += 1
            delay = self.backoff.delay(attempt)
            assert self._wake is not None
            try:
                await asyncio.wait_for(self._wake.wait(), delay)
            except asyncio.TimeoutError:
                pass

    async def _open(self) -> Any:
        headers = dict(self.headers)
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        options: Dict[str, Any] = {
            "additional_headers": headers,
            "user_agent_header": f"herald-publisher-client/{VERSION}",
            "open_timeout": self.open_timeout,
            "max_size": 2**24,
        }
        if self._msgpack is not None:
            options["subprotocols"] = ["herald.msgpack"]
        options.update(self.connect_options)
        ws = await self._connect(self.url, **options)
        if self._msgpack is not None and ws.subprotocol != "herald.msgpack":
            await ws.close(1000, "no msgpack")
            raise _Fatal(HeraldClientError("the endpoint did not accept the herald.msgpack subprotocol"))
        return ws

    async def _serve(self, ws: Any) -> Tuple[Disconnect, bool]:
        """Reads one connection until it ends. Returns how it ended, and whether it had been
        welcomed."""
        self._ws = ws
        self._last_error = None
        welcomed = not self.expect_welcome
        # Armed by the first `heartbeat` message: a node configured without them
        # (websocket.heartbeat_message = false) must not look dead when a channel is quiet.
        heartbeats = False
        restore: Optional["asyncio.Task[None]"] = None
        if welcomed:
            restore = await self._opened({})
        closed_by = self._websockets.exceptions.ConnectionClosed
        code, reason = 1006, "connection lost"
        try:
            while True:
                try:
                    raw = await asyncio.wait_for(ws.recv(), self.heartbeat_timeout if heartbeats else None)
                except asyncio.TimeoutError:
                    code, reason = 1006, f"no heartbeat from Herald for {self.heartbeat_timeout} s"
                    log.info("%s; reconnecting", reason)
                    # No close handshake: the path is dead, a close frame would wait for nothing.
                    ws.transport.abort()
                    break
                message = self._parse(raw)
                if message is None:
                    continue
                kind = message.get("type")
                if kind == "heartbeat":
                    heartbeats = True
                if not welcomed:
                    if kind == "error" and message.get("code") == "AUTHENTICATION_FAILED":
                        self._last_error = message
                        continue  # the 1008 close follows
                    welcomed = True
                    restore = await self._opened(message)
                    if kind in _WELCOMES:
                        continue
                await self._dispatch(message)
        except closed_by as e:
            rcvd = getattr(e, "rcvd", None)
            if rcvd is not None:
                code, reason = rcvd.code, rcvd.reason
        finally:
            self._ws = None
            if restore is not None and not restore.done():
                restore.cancel()
            for future, _ in list(self._pending.values()):
                if not future.done():
                    future.set_exception(_Lost("the connection was lost"))
        if self._closing:
            return Disconnect(code, reason, False), welcomed
        await self._lost(code, reason)
        return Disconnect(code, reason, self.reconnect), welcomed

    async def _opened(self, welcome: Dict[str, Any]) -> "asyncio.Task[None]":
        self.connections += 1
        self._token_refused = False
        connection_id = welcome.get("connection_id")
        self.connection_id = connection_id if isinstance(connection_id, str) else None
        # Taken before anything can yield: a subscription asked for from now on (state
        # CONNECTED) sends its own request, so none is sent twice.
        wanted = [sub for sub in self._subs.values() if sub._wanted]
        task = asyncio.ensure_future(self._restore(wanted))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        await self._set_state(ClientState.CONNECTED, welcome)
        for waiter in self._connected_waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._connected_waiters.clear()
        return task

    async def _restore(self, wanted: List[Subscription]) -> None:
        """Subscribes again to everything wanted, resuming from the known positions."""
        await asyncio.gather(*(self._send_subscribe(sub) for sub in wanted))

    async def _lost(self, code: int, reason: str) -> None:
        """A connection ended: decides whether to reconnect; subscriptions wait for the next one."""
        error = self._last_error
        refused = code == 1008 and error is not None and error.get("code") == "AUTHENTICATION_FAILED"
        if code == TOKEN_EXPIRED or refused:
            auth = HeraldAuthError.from_message(error) if error else HeraldAuthError("TOKEN_EXPIRED", reason)
            if self.get_token is None or self._token_refused:
                raise _Fatal(HeraldAuthError(auth.code, auth.message, auth.raw), code)
            self._token_refused = True
        elif code in NO_RECONNECT_CODES:
            raise _Fatal(HeraldClosedError(f"Herald closed the connection ({code} {reason})"), code)
        for sub in list(self._subs.values()):
            if sub._wanted and sub.state is SubscriptionState.SUBSCRIBED:
                await sub._set_state(SubscriptionState.SUBSCRIBING)

    async def _finish(self, error: Optional[HeraldClientError]) -> None:
        if self.state is ClientState.CLOSED:
            return
        self._fatal = error
        self._closing = True
        for waiter in self._connected_waiters:
            if not waiter.done():
                waiter.set_exception(error or HeraldClosedError("the client was closed"))
        self._connected_waiters.clear()
        for sub in list(self._subs.values()):
            await sub._ended(error or HeraldClosedError("the client was closed"))
        for feed in list(self._feeds):
            feed.end(error)
        for task in list(self._tasks):
            task.cancel()
        await self._set_state(ClientState.CLOSED, error)

    def _parse(self, raw: Union[str, bytes]) -> Optional[Dict[str, Any]]:
        try:
            if isinstance(raw, bytes) and self._msgpack is not None:
                message = self._msgpack.unpackb(raw, raw=False)
            else:
                message = json.loads(raw)
        except ValueError:
            log.warning("ignoring a message that is neither JSON nor MessagePack")
            return None
        return message if isinstance(message, dict) else None

    async def _dispatch(self, message: Dict[str, Any]) -> None:
        kind = message.get("type")
        request_id = message.get("id")
        if isinstance(request_id, str) and request_id in self._pending:
            future, on_reply = self._pending.pop(request_id)
            if on_reply is not None:
                on_reply(message)
            if not future.done():
                if kind == "error":
                    future.set_exception(HeraldServerError.from_message(message))
                else:
                    future.set_result(message)
            await self._to_app(message)
            return
        if kind == "token_expiring":
            self._spawn(self._refresh_token())
        elif kind == "error":
            self._last_error = message
            await self._emit("error", HeraldServerError.from_message(message))
        elif kind in ("unsubscribed", "room_left") and message.get("revoked"):
            await self._revoked(message)
        else:
            target = self.stream_of(message)
            sub = self._subs.get(target) if target is not None else None
            if sub is not None and sub._wanted:
                publication = sub._accept(message)
                if publication is None:
                    return  # a duplicate: already delivered
                if kind in _PRESENCE and sub.kind is Kind.ROOM:
                    await sub._on_presence(message)
                else:
                    await sub._deliver(publication)
        await self._to_app(message)

    async def _to_app(self, message: Dict[str, Any]) -> None:
        for feed in list(self._feeds):
            await feed.push(message)
        await self._emit("message", message)

    async def _revoked(self, message: Dict[str, Any]) -> None:
        reason = str(message.get("reason") or "access revoked")
        names: List[Tuple[Kind, str]] = []
        if message.get("type") == "unsubscribed":
            names = [(Kind.CHANNEL, c) for c in message.get("channels") or () if isinstance(c, str)]
        elif isinstance(message.get("room"), str):
            names = [(Kind.ROOM, message["room"])]
        for key in names:
            sub = self._subs.get(key)
            if sub is not None:
                error = HeraldServerError("PERMISSION_DENIED", reason, message)
                await sub._emit("error", error)
                await sub._ended(error)
                self._forget(sub)

    async def _refresh_token(self) -> None:
        """Answers ``token_expiring``: a new token from ``get_token``, sent in band."""
        if self.get_token is None:
            log.info("Herald asked for a new token, but there is no get_token; the connection will close at expiry")
            return
        try:
            self.token = await self.get_token()
            reply = await self.request({"type": "refresh_token", "token": self.token})
        except (HeraldClientError, _Lost) as e:
            await self._emit("error", e)
            return
        except Exception as e:  # get_token is the application's code
            log.exception("get_token failed")
            await self._emit("error", e)
            return
        await self._emit("token_refreshed", reply)
