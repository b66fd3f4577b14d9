"""What a publish returns."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional


@dataclass(frozen=True)
class PublishResult:
    """The outcome of one publish.

    Attributes:
        transport: ``"redis"`` or ``"http"``.
        receivers: Redis only: how many subscribers received the ``PUBLISH`` (each Herald node
            pattern-subscribes once, so this is the number of nodes listening; 0 means none).
        local_only: HTTP only: Herald's broker was down, so only the connections of the node
            that answered were reached.
        warning: Herald's explanation when ``local_only`` is set.
    """

    transport: str
    receivers: Optional[int] = None
    local_only: bool = False
    warning: Optional[str] = None


@dataclass(frozen=True)
class PostedMessage:
    """Herald's answer to ``post_message``.

    Attributes:
        message: The stored message as Herald returns it (``id``, ``room``, ``content``, …).
        duplicate: True when the idempotency key had been used: nothing new was stored or sent.
    """

    message: Dict[str, Any]
    duplicate: bool
