"""Test harness: a real redis-server and a real Herald binary on loopback ports, and WebSocket
clients (the `websockets` package) to check what Herald delivers.

Which Herald binary: $HERALD_BIN if set (scripts/test sets it to target/debug/herald), otherwise
the first of <repo>/target/debug/herald and <repo>/target/release/herald that exists.

Every wait is for an event (a line printed by a process, a message, a Redis figure); timeouts
only turn a hang into a failure. Every process started here is killed at the end of the session,
also after failures (fixture finalizers, plus an atexit hook for interrupted runs).
"""

from __future__ import annotations

import atexit
import json
import os
import queue
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional

import pytest
import redis as redis_lib
from websockets.sync.client import connect as ws_connect

#: How long any one expected thing may take before a test fails.
WAIT = 15.0
API_KEY = "test-api-key-0123"
PREFIX = "fliptechpro"

REPO = Path(__file__).resolve().parents[3]
_started: List[subprocess.Popen] = []


@atexit.register
def _kill_leftovers() -> None:
    for process in _started:
        if process.poll() is None:
            process.kill()


def herald_binary() -> str:
    env = os.environ.get("HERALD_BIN")
    if env:
        if not Path(env).exists():
            raise RuntimeError(f"HERALD_BIN={env} does not exist")
        return env
    for candidate in (REPO / "target/debug/herald", REPO / "target/release/herald"):
        if candidate.exists():
            return str(candidate)
    raise RuntimeError("no herald binary: run `cargo build --bin herald` in the repository root, or set HERALD_BIN")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(args: List[str], cwd: str, ready: Callable[[str], Optional[str]], what: str, env=None) -> tuple:
    """Starts a process and waits for a stdout line for which ``ready`` returns a value."""
    process = subprocess.Popen(args, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    _started.append(process)
    lines: "queue.Queue[Optional[str]]" = queue.Queue()
    log: List[str] = []

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            log.append(line)
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + WAIT
    while True:
        try:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            line = None
        if line is None:
            _stop(process)
            raise RuntimeError(f"{what} did not start:\n{''.join(log)}")
        value = ready(line)
        if value is not None:
            return process, value, log


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=WAIT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="session")
def tmp_root() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="herald-py-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_url(tmp_root: str) -> Iterator[str]:
    """A throwaway redis-server on a free loopback port."""
    port = _free_port()
    process, _, _ = _start(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            tmp_root,
        ],
        tmp_root,
        lambda line: "ready" if "Ready to accept connections" in line else None,
        "redis-server",
    )
    yield f"redis://127.0.0.1:{port}/0"
    _stop(process)


@pytest.fixture(scope="session")
def redis(redis_url: str) -> Iterator[redis_lib.Redis]:
    client = redis_lib.Redis.from_url(redis_url)
    yield client
    client.close()


def _clean_env() -> Dict[str, str]:
    """The environment without variables that would configure Herald behind the test's back."""
    drop = ("HERALD_", "WEBSOCKET_")
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(drop) and k not in ("REDIS_URL", "REDIS_HOST", "REDIS_PORT", "DATABASE_URL")
    }


class Herald:
    """A running Herald node."""

    def __init__(self, process: subprocess.Popen, addr: str, log: List[str]):
        self.process = process
        self.addr = addr
        self.http_url = f"http://{addr}"
        self.ws_url = f"ws://{addr}/ws"
        self.log = log


@pytest.fixture(scope="session")
def herald(redis_url: str, redis: redis_lib.Redis, tmp_root: str) -> Iterator[Herald]:
    """Herald with Redis, taking publishers' messages on ``fliptechpro:*``."""
    args = [
        herald_binary(),
        "--listen",
        "127.0.0.1:0",
        "--api-key",
        API_KEY,
        "--redis-url",
        redis_url,
        "--set",
        f'redis.prefixes=["{PREFIX}"]',
        "--data-dir",
        tmp_root,
    ]
    prefix = "herald listening on http://"
    process, addr, log = _start(
        args,
        tmp_root,
        lambda line: line[len(prefix) :].split()[0] if line.startswith(prefix) else None,
        "herald",
        env=_clean_env(),
    )
    node = Herald(process, addr, log)
    # Herald's pattern subscription must be in place before anything is published through Redis.
    wait_until(lambda: redis.execute_command("PUBSUB", "NUMPAT") >= 1, "herald to pattern-subscribe", node)
    yield node
    _stop(process)


def wait_until(condition: Callable[[], Any], what: str, node: Optional[Herald] = None) -> Any:
    """Polls ``condition`` until it is truthy; fails after WAIT seconds."""
    deadline = time.monotonic() + WAIT
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            log = "".join(node.log) if node else ""
            pytest.fail(f"timed out waiting for {what}\n{log}")
        time.sleep(0.01)


def unique(stem: str) -> str:
    """A name no other test uses (the Herald node is shared by the session)."""
    return f"{stem}-{uuid.uuid4().hex[:8]}"


def wait_for_interest(redis: redis_lib.Redis, kind: str, name: str) -> None:
    """Waits until Herald has subscribed to its internal Redis key for a channel (``c``), room (``r``)
    or user (``u``). HTTP publishes travel through those keys (see README, "Server notes")."""
    key = f"herald:{kind}:{name}"

    def subscribed() -> bool:
        result = redis.execute_command("PUBSUB", "NUMSUB", key)
        return int(result[1]) >= 1

    wait_until(subscribed, f"Herald's subscription to {key}")


class Client:
    """A WebSocket client (sync `websockets`) that reads messages until the one a test expects."""

    def __init__(self, ws: Any):
        self.ws = ws
        self.seen: List[Dict[str, Any]] = []

    def expect(self, **fields: Any) -> Dict[str, Any]:
        """The next message whose fields equal ``fields`` (heartbeats and others are skipped)."""
        deadline = time.monotonic() + WAIT
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                pytest.fail(f"no message with {fields}; saw {self.seen}")
            try:
                message = json.loads(self.ws.recv(timeout=remaining))
            except TimeoutError:
                pytest.fail(f"no message with {fields}; saw {self.seen}")
            self.seen.append(message)
            if all(message.get(k) == v for k, v in fields.items()):
                return message

    def request(self, message: Dict[str, Any], reply_type: str) -> Dict[str, Any]:
        request_id = uuid.uuid4().hex
        self.ws.send(json.dumps({**message, "id": request_id}))
        return self.expect(type=reply_type, id=request_id)

    def join(self, room: str) -> None:
        self.request({"type": "join_room", "room": room}, "room_joined")


@contextmanager
def client(node: Herald, *, channels: Optional[List[str]] = None, user_id: Optional[str] = None) -> Iterator[Client]:
    """Connects, waits for the welcome (the connection and its URL channels are registered)."""
    with ws_connect(ws_url(node, channels=channels, user_id=user_id), open_timeout=WAIT) as ws:
        c = Client(ws)
        c.expect(type="connection")
        yield c


class AsyncClient:
    """The asyncio counterpart of :class:`Client` (`websockets.asyncio`)."""

    def __init__(self, ws: Any):
        self.ws = ws
        self.seen: List[Dict[str, Any]] = []

    async def expect(self, **fields: Any) -> Dict[str, Any]:
        import asyncio

        async def read() -> Dict[str, Any]:
            while True:
                message = json.loads(await self.ws.recv())
                self.seen.append(message)
                if all(message.get(k) == v for k, v in fields.items()):
                    return message

        try:
            return await asyncio.wait_for(read(), WAIT)
        except asyncio.TimeoutError:
            pytest.fail(f"no message with {fields}; saw {self.seen}")

    async def join(self, room: str) -> None:
        request_id = uuid.uuid4().hex
        await self.ws.send(json.dumps({"type": "join_room", "room": room, "id": request_id}))
        await self.expect(type="room_joined", id=request_id)


def ws_url(node: Herald, *, channels: Optional[List[str]] = None, user_id: Optional[str] = None) -> str:
    query = [f"client_id={unique('pytest')}"]
    if channels:
        query.append("channels=" + ",".join(channels))
    if user_id:
        query.append(f"user_id={user_id}")
    return f"{node.ws_url}?{'&'.join(query)}"


def start_node(
    tmp_root: str,
    config: str,
    *,
    listen: str = "127.0.0.1:0",
    redis_url: Optional[str] = None,
    data_dir: Optional[str] = None,
) -> Herald:
    """Starts a Herald node with a TOML configuration (and the test API key); stop it with
    :func:`stop_node`. ``data_dir`` defaults to a fresh directory under ``tmp_root``."""
    directory = data_dir or tempfile.mkdtemp(prefix="node-", dir=tmp_root)
    config_path = Path(directory) / "herald.toml"
    config_path.write_text(config)
    args = [herald_binary(), "--config", str(config_path), "--listen", listen, "--api-key", API_KEY]
    args += ["--data-dir", directory]
    if redis_url:
        args += ["--redis-url", redis_url]
    prefix = "herald listening on http://"
    process, addr, log = _start(
        args,
        directory,
        lambda line: line[len(prefix) :].split()[0] if line.startswith(prefix) else None,
        "herald",
        env=_clean_env(),
    )
    return Herald(process, addr, log)


def stop_node(node: Herald) -> None:
    """Stops a node started by :func:`start_node` (SIGTERM: a graceful shutdown, clients get 1001)."""
    _stop(node.process)


def free_port() -> int:
    """A loopback port nothing listens on (for a node that must come back on the same address)."""
    return _free_port()


def hs256(claims: Dict[str, Any], secret: str) -> str:
    """A JWT signed with HS256 (the standard library is enough for tests)."""
    import base64
    import hashlib
    import hmac

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = b64(json.dumps(claims).encode())
    signature = hmac.new(secret.encode(), f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{b64(signature)}"
