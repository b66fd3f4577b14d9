"""Exceptions raised by the consumer client. All derive from :class:`~herald_publisher.HeraldError`."""

from __future__ import annotations

from typing import Any, Dict, Optional

from ..errors import HeraldError


class HeraldClientError(HeraldError):
    """Base class of the consumer client's errors."""


class HeraldClosedError(HeraldClientError):
    """The client is closed (by :meth:`HeraldClient.close`, or for good after a refusal)."""


class HeraldServerError(HeraldClientError):
    """Herald answered a request with ``{"type":"error",…}``.

    Attributes:
        code: Herald's code (``PERMISSION_DENIED``, ``INVALID_NAME``, ``ROOM_NOT_FOUND``, …).
        message: Herald's explanation.
        raw: The whole error message.
    """

    def __init__(self, code: str, message: str, raw: Optional[Dict[str, Any]] = None):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.raw = raw or {}

    @classmethod
    def from_message(cls, message: Dict[str, Any]) -> "HeraldServerError":
        """Builds the error from Herald's error message."""
        code = message.get("code")
        text = message.get("error") or message.get("message") or "refused"
        return cls(str(code) if code else "ERROR", str(text), message)


class HeraldAuthError(HeraldServerError):
    """Herald refused the credentials (a bad or expired token; close code 1008 or 4003, or HTTP
    401/403 at the upgrade). Reconnecting with the same token would be refused again."""


class HeraldTimeoutError(HeraldClientError, TimeoutError):
    """A request got no answer within ``request_timeout``."""
