"""Exceptions raised by the publishers."""

from __future__ import annotations

from typing import Any, Mapping, Optional


class HeraldError(Exception):
    """Base class of every error this package raises."""


class HeraldConfigError(HeraldError, ValueError):
    """The publisher is misconfigured (missing URL, prefix or API key; a missing optional dependency)."""


class HeraldConnectionError(HeraldError, ConnectionError):
    """Herald or Redis could not be reached."""


class HeraldHTTPError(HeraldError):
    """Herald answered an API call with an error (4xx or 5xx).

    Attributes:
        status: The HTTP status.
        code: Herald's machine-readable code (``AUTHENTICATION_FAILED``, ``INVALID_NAME``,
            ``NO_TARGET``, ``INVALID_EVENT``, ``UNAVAILABLE``, …), or ``HTTP_<status>`` when the
            body carried none.
        message: Herald's explanation.
        body: The parsed response body, when it was JSON.
    """

    def __init__(self, status: int, code: str, message: str, body: Optional[Mapping[str, Any]] = None):
        super().__init__(f"Herald refused the request ({status} {code}): {message}")
        self.status = status
        self.code = code
        self.message = message
        self.body = body

    @classmethod
    def from_response(cls, status: int, text: str) -> "HeraldHTTPError":
        """Builds the error from a response body, which Herald sends as ``{"success":false,"error":…,"code":…}``."""
        import json

        body: Optional[Mapping[str, Any]] = None
        try:
            parsed = json.loads(text) if text else None
            if isinstance(parsed, dict):
                body = parsed
        except ValueError:
            pass
        code = str(body.get("code")) if body and body.get("code") else f"HTTP_{status}"
        message = str(body.get("error")) if body and body.get("error") else (text.strip() or f"HTTP {status}")
        return cls(status, code, message, body)


class HeraldNotDeliveredError(HeraldError):
    """``PUBLISH`` reached no subscriber: no Herald node is listening on that Redis channel.

    Raised only by Redis publishers created with ``require_receiver=True``.
    """
