"""The I/O: Redis ``PUBLISH`` and Herald's HTTP API, sync and async.

Dependencies are imported when a transport is created, so the package itself needs none:

- sync HTTP uses the standard library (``urllib``): nothing to install;
- Redis (sync and async) needs ``redis`` (``pip install herald-publisher[redis]``);
- async HTTP needs ``httpx`` (``pip install herald-publisher[httpx]``).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any, Dict, Mapping, Optional

from .errors import HeraldConfigError, HeraldConnectionError, HeraldHTTPError, HeraldNotDeliveredError
from .result import PostedMessage, PublishResult
from .routing import json_body


def _import_redis_sync() -> Any:
    try:
        import redis
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise HeraldConfigError(
            "the Redis transport needs the `redis` package: pip install 'herald-publisher[redis]'"
        ) from e
    return redis


def _import_redis_async() -> Any:
    try:
        import redis.asyncio as redis_asyncio
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise HeraldConfigError(
            "the async Redis transport needs the `redis` package (4.2 or later): pip install 'herald-publisher[redis]'"
        ) from e
    return redis_asyncio


def _import_httpx() -> Any:
    try:
        import httpx
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise HeraldConfigError(
            "the async HTTP transport needs the `httpx` package: pip install 'herald-publisher[httpx]'"
        ) from e
    return httpx


def _redis_errors() -> tuple:
    redis = _import_redis_sync()
    return (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)


def _check_receivers(receivers: int, channel: str, require: bool) -> PublishResult:
    if require and receivers == 0:
        raise HeraldNotDeliveredError(
            f"PUBLISH {channel} reached no subscriber: is a Herald node listening on this prefix?"
        )
    return PublishResult(transport="redis", receivers=receivers)


def _result_from_body(body: Mapping[str, Any]) -> PublishResult:
    return PublishResult(
        transport="http",
        local_only=bool(body.get("local_only", False)),
        warning=body.get("warning") if isinstance(body.get("warning"), str) else None,
    )


def _headers(api_key: Optional[str]) -> Dict[str, str]:
    headers = {"Content-Type": "application/json", "Accept": "application/json", "User-Agent": "herald-publisher"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    return headers


#: Statuses after which a request with an idempotency key is sent again (a proxy or Herald
#: itself could not handle it now); Herald stores a retried key once.
RETRY_STATUSES = frozenset({502, 503, 504})


def _posted(body: Mapping[str, Any]) -> PostedMessage:
    message = body.get("message")
    return PostedMessage(
        message=dict(message) if isinstance(message, dict) else {}, duplicate=body.get("duplicate") is True
    )


def _parse_ok(text: str) -> Mapping[str, Any]:
    try:
        body = json.loads(text) if text else {}
    except ValueError:
        body = {}
    return body if isinstance(body, dict) else {}


class RedisTransport:
    """``PUBLISH`` with redis-py. Pass a URL, or an existing ``redis.Redis`` (left open on close)."""

    name = "redis"

    def __init__(
        self, url: Optional[str] = None, *, client: Any = None, timeout: float = 5.0, require_receiver: bool = False
    ):
        if client is None:
            if not url:
                raise HeraldConfigError("a Redis URL or client is required")
            client = _import_redis_sync().Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
            self._owned = True
        else:
            self._owned = False
        self.client = client
        self.require_receiver = require_receiver

    def publish(self, channel: str, message: str) -> PublishResult:
        try:
            receivers = int(self.client.publish(channel, message))
        except _redis_errors() as e:
            raise HeraldConnectionError(f"Redis is unreachable: {e}") from e
        return _check_receivers(receivers, channel, self.require_receiver)

    def close(self) -> None:
        if self._owned:
            self.client.close()


class AsyncRedisTransport:
    """``PUBLISH`` with ``redis.asyncio``. Pass a URL, or an existing client (left open on close)."""

    name = "redis"

    def __init__(
        self, url: Optional[str] = None, *, client: Any = None, timeout: float = 5.0, require_receiver: bool = False
    ):
        if client is None:
            if not url:
                raise HeraldConfigError("a Redis URL or client is required")
            client = _import_redis_async().Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
            self._owned = True
        else:
            self._owned = False
        self.client = client
        self.require_receiver = require_receiver

    async def publish(self, channel: str, message: str) -> PublishResult:
        try:
            receivers = int(await self.client.publish(channel, message))
        except _redis_errors() as e:
            raise HeraldConnectionError(f"Redis is unreachable: {e}") from e
        return _check_receivers(receivers, channel, self.require_receiver)

    async def close(self) -> None:
        if self._owned:
            close = getattr(self.client, "aclose", None) or self.client.close
            await close()


class HttpTransport:
    """Herald's HTTP API with the standard library (one connection per call)."""

    name = "http"

    def __init__(self, base_url: str, *, api_key: Optional[str] = None, timeout: float = 5.0):
        if not base_url:
            raise HeraldConfigError("Herald's base URL is required (e.g. http://127.0.0.1:8000)")
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout

    def post(self, path: str, body: Mapping[str, Any]) -> PublishResult:
        request = urllib.request.Request(
            f"{self.base_url}{path}", data=json_body(body), headers=_headers(self.api_key), method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                text = response.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as e:
            text = e.read().decode("utf-8", "replace")
            raise HeraldHTTPError.from_response(e.code, text) from None
        except (urllib.error.URLError, OSError) as e:
            raise HeraldConnectionError(f"Herald at {self.base_url} is unreachable: {e}") from e
        return _result_from_body(_parse_ok(text))

    def post_idempotent(self, path: str, body: Mapping[str, Any], key: str, retries: int) -> PostedMessage:
        """POSTs with an ``Idempotency-Key`` header, retrying after a network failure or 502/503/504."""
        headers = {**_headers(self.api_key), "Idempotency-Key": key}
        for attempt in range(retries + 1):
            last = attempt == retries
            request = urllib.request.Request(
                f"{self.base_url}{path}", data=json_body(body), headers=headers, method="POST"
            )
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    return _posted(_parse_ok(response.read().decode("utf-8", "replace")))
            except urllib.error.HTTPError as e:
                text = e.read().decode("utf-8", "replace")
                if last or e.code not in RETRY_STATUSES:
                    raise HeraldHTTPError.from_response(e.code, text) from None
            except (urllib.error.URLError, OSError) as e:
                if last:
                    raise HeraldConnectionError(f"Herald at {self.base_url} is unreachable: {e}") from e
        raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        """Nothing is kept open between calls."""


class AsyncHttpTransport:
    """Herald's HTTP API with ``httpx.AsyncClient`` (connections are pooled)."""

    name = "http"

    def __init__(self, base_url: str, *, api_key: Optional[str] = None, timeout: float = 5.0, client: Any = None):
        if not base_url:
            raise HeraldConfigError("Herald's base URL is required (e.g. http://127.0.0.1:8000)")
        httpx = _import_httpx()
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self._owned = client is None
        self.client = client if client is not None else httpx.AsyncClient(timeout=timeout)
        self._httpx = httpx

    async def post(self, path: str, body: Mapping[str, Any]) -> PublishResult:
        try:
            response = await self.client.post(
                f"{self.base_url}{path}", content=json_body(body), headers=_headers(self.api_key)
            )
        except self._httpx.TransportError as e:
            raise HeraldConnectionError(f"Herald at {self.base_url} is unreachable: {e}") from e
        if response.status_code >= 400:
            raise HeraldHTTPError.from_response(response.status_code, response.text)
        return _result_from_body(_parse_ok(response.text))

    async def post_idempotent(self, path: str, body: Mapping[str, Any], key: str, retries: int) -> PostedMessage:
        """POSTs with an ``Idempotency-Key`` header, retrying after a network failure or 502/503/504."""
        headers = {**_headers(self.api_key), "Idempotency-Key": key}
        for attempt in range(retries + 1):
            last = attempt == retries
            try:
                response = await self.client.post(f"{self.base_url}{path}", content=json_body(body), headers=headers)
            except self._httpx.TransportError as e:
                if last:
                    raise HeraldConnectionError(f"Herald at {self.base_url} is unreachable: {e}") from e
                continue
            if response.status_code < 400:
                return _posted(_parse_ok(response.text))
            if last or response.status_code not in RETRY_STATUSES:
                raise HeraldHTTPError.from_response(response.status_code, response.text)
        raise AssertionError("unreachable")  # pragma: no cover

    async def close(self) -> None:
        if self._owned:
            await self.client.aclose()
