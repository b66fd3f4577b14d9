"""The values the consumer client hands to applications: states, positions, publications."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, TypedDict


class ClientState(str, enum.Enum):
    """Where a :class:`~herald_publisher.client.HeraldClient` is."""

    #: Not started, or between connections (waiting for the backoff delay).
    DISCONNECTED = "disconnected"
    #: Opening a WebSocket.
    CONNECTING = "connecting"
    #: Open and welcomed; subscriptions are (re)established.
    CONNECTED = "connected"
    #: Closed for good: by :meth:`HeraldClient.close`, or a refusal that reconnecting cannot fix.
    CLOSED = "closed"


class SubscriptionState(str, enum.Enum):
    """Where a :class:`~herald_publisher.client.Subscription` is."""

    #: Not subscribed (never, after :meth:`Subscription.unsubscribe`, or refused).
    UNSUBSCRIBED = "unsubscribed"
    #: Asked for, or waiting for the connection to come back.
    SUBSCRIBING = "subscribing"
    #: Herald acknowledged it: events flow.
    SUBSCRIBED = "subscribed"


class Kind(str, enum.Enum):
    """What a subscription follows."""

    CHANNEL = "channel"
    ROOM = "room"


@dataclass(frozen=True)
class StreamPosition:
    """A position in a stream with history: the last ``seq`` seen and the stream's ``epoch``.

    A new epoch means Herald lost the stream's history; positions of an old epoch are void.
    """

    seq: int
    epoch: str = ""


@dataclass(frozen=True)
class Publication:
    """One event delivered to a subscription, exactly as published.

    Attributes:
        data: The event object (Herald's ``seq`` / ``epoch`` / ``stream`` fields included when
            the stream has history).
        channel: The subscription's channel, for a channel subscription.
        room: The subscription's room, for a room subscription.
        position: The event's stream position, when it has one.
    """

    data: Dict[str, Any]
    channel: Optional[str] = None
    room: Optional[str] = None
    position: Optional[StreamPosition] = None

    @property
    def type(self) -> Optional[str]:
        """The event's ``type`` field, if it is a string."""
        value = self.data.get("type")
        return value if isinstance(value, str) else None


@dataclass(frozen=True)
class Gap:
    """After a reconnect, Herald could not replay what was missed (history expired, or the stream
    was reset): the application should reload its state, then carry on with the live events.

    Attributes:
        since: The position the client asked to resume from.
        current: Herald's position for the stream now.
    """

    since: StreamPosition
    current: StreamPosition


@dataclass(frozen=True)
class Disconnect:
    """Why a connection ended.

    Attributes:
        code: The WebSocket close code (1006 when there was no close frame; 0 when the
            connection was never opened).
        reason: The close reason, or the error that ended the connection.
        reconnect: Whether the client will reconnect.
    """

    code: int
    reason: str
    reconnect: bool


class PresenceMember(TypedDict, total=False):
    """A user in a room, as Herald's ``room_state`` lists them."""

    user_id: str
    username: Optional[str]
    email: Optional[str]
    status: str


@dataclass
class Presence:
    """Who is in a room: from the ``room_state`` Herald sends on join, kept current by
    ``user_joined`` / ``user_left`` events.

    Attributes:
        room: The room.
        members: The users in it by ``user_id``.
    """

    room: str
    members: Dict[str, PresenceMember] = field(default_factory=dict)

    @property
    def user_ids(self) -> List[str]:
        """The members' ids, sorted."""
        return sorted(self.members)


@dataclass(frozen=True)
class HistoryPage:
    """The answer to a ``history`` request.

    Attributes:
        stream: ``c:<channel>`` or ``r:<room>``.
        position: The stream's latest position.
        events: The recent events, oldest first, each with its ``seq``.
        recovered: With ``since``: whether every event after it is still in history.
    """

    stream: str
    position: StreamPosition
    events: List[Dict[str, Any]]
    recovered: Optional[bool] = None


@dataclass(frozen=True)
class ChatAck:
    """Herald's acknowledgement of a stored chat message (``chat_message_ack``).

    Attributes:
        message_id: The stored message's id.
        room: The room.
        duplicate: True when the idempotency key had been used: nothing new was stored or sent.
        raw: The whole acknowledgement.
    """

    message_id: Any
    room: str
    duplicate: bool
    raw: Dict[str, Any]
