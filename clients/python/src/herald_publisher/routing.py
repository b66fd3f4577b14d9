"""Where an event goes, for each transport. Pure functions: no I/O.

Herald routes an event to the union of a channel's subscribers, a room's members and a user's
connections, each connection once.

- Over **Redis** the target is encoded the way Herald's ingest reads it: ``PUBLISH
  <prefix>:<channel> <json>``, and the event's ``room`` / ``user_id`` fields (names configurable,
  matching Herald's ``redis.room_field`` / ``redis.user_field``) add the room and the user. A
  Redis message always names a channel, so an event for a room or a user only goes to the
  *direct channel* (``_direct`` by default): a channel no client subscribes to, used only to
  carry routing fields.
- Over **HTTP** the target is explicit in ``POST /api/publish``. So that both transports deliver
  the same event to the same connections, the routing fields are written into the event here too,
  and (unless ``route_from_fields`` is off) fields already in the event route it as Redis would.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Tuple, Union

from .errors import HeraldConfigError, HeraldError
from .event import to_json

#: A user id: Herald accepts strings and numbers.
UserId = Union[str, int]

#: Longest channel, room or user name Herald accepts, in UTF-8 bytes.
MAX_NAME_BYTES = 200

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


class HeraldTargetError(HeraldError, ValueError):
    """The event cannot be routed: no target, an invalid name, or contradictory rooms.

    ``code`` uses Herald's codes where they exist (``NO_TARGET``, ``INVALID_NAME``,
    ``INVALID_EVENT``), plus ``CONFLICTING_TARGET``.
    """

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Routing:
    """How events are routed; must match the Herald configuration.

    Attributes:
        room_field: Herald's ``redis.room_field`` (default ``room``); empty disables room routing
            through Redis.
        user_field: Herald's ``redis.user_field`` (default ``user_id``); empty disables user
            routing through Redis.
        direct_channel: Redis only: the channel that carries room-only and user-only events.
        route_from_fields: HTTP only: route by ``room_field`` / ``user_field`` found in the event,
            as Herald's Redis ingest does.
    """

    room_field: str = "room"
    user_field: str = "user_id"
    direct_channel: str = "_direct"
    route_from_fields: bool = True


def check_name(kind: str, name: Any) -> str:
    """Returns the name as text, or raises ``INVALID_NAME`` for one Herald would refuse."""
    if isinstance(name, bool) or not isinstance(name, (str, int)):
        raise HeraldTargetError("INVALID_NAME", f"{kind} must be a string, not {type(name).__name__}")
    text = str(name)
    if not text:
        raise HeraldTargetError("INVALID_NAME", f"{kind} name must not be empty")
    size = len(text.encode("utf-8"))
    if size > MAX_NAME_BYTES:
        raise HeraldTargetError("INVALID_NAME", f"{kind} name is {size} bytes; the limit is {MAX_NAME_BYTES}")
    if _CONTROL.search(text):
        raise HeraldTargetError("INVALID_NAME", f"{kind} name must not contain control characters")
    return text


def _field_target(payload: Mapping[str, Any], field: str) -> Optional[Union[str, int]]:
    """The value of a routing field as Herald's ingest reads it: a non-empty string or a number."""
    if not field:
        return None
    value = payload.get(field)
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and value:
        return value
    if isinstance(value, (int, float)):
        return value
    return None


def _with_target(payload: Dict[str, Any], field: str, value: Union[str, int], kind: str) -> None:
    """Writes an explicit target into the event, refusing to contradict what is already there."""
    if not field:
        raise HeraldConfigError(f"cannot route to a {kind} through fields: its field name is empty")
    existing = payload.get(field)
    if existing is not None and str(existing) != str(value):
        raise HeraldTargetError(
            "CONFLICTING_TARGET", f"the event's {field!r} is {existing!r} but {kind} {value!r} was given"
        )
    payload[field] = value


def _as_object(event: Mapping[str, Any]) -> Dict[str, Any]:
    if not isinstance(event, Mapping):
        raise HeraldTargetError(
            "INVALID_EVENT", f"an event must be a mapping (a JSON object), not {type(event).__name__}"
        )
    return dict(event)


def redis_message(
    event: Mapping[str, Any],
    *,
    prefix: str,
    routing: Routing,
    channel: Optional[str] = None,
    room: Optional[str] = None,
    user_id: Optional[UserId] = None,
) -> Tuple[str, str]:
    """The Redis channel and message for an event: ``("<prefix>:<channel>", json)``."""
    payload = _as_object(event)
    if room is not None:
        _with_target(payload, routing.room_field, check_name("room", room), "room")
    if user_id is not None:
        check_name("user", user_id)
        _with_target(payload, routing.user_field, user_id, "user")
    room_target = _field_target(payload, routing.room_field)
    user_target = _field_target(payload, routing.user_field)
    if room_target is not None:
        check_name("room", str(room_target))
    if user_target is not None:
        check_name("user", str(user_target))
    if channel is None:
        if room_target is None and user_target is None:
            raise HeraldTargetError("NO_TARGET", "give at least one of channel, room or user_id")
        channel = routing.direct_channel
    check_name("channel", channel)
    return f"{prefix}:{channel}", to_json(payload)


def http_publish_body(
    event: Mapping[str, Any],
    *,
    routing: Routing,
    channel: Optional[str] = None,
    room: Optional[str] = None,
    user_id: Optional[UserId] = None,
) -> Dict[str, Any]:
    """The body of ``POST /api/publish`` for an event. Names are left for Herald to check."""
    payload = _as_object(event)
    if room is not None and routing.room_field:
        _with_target(payload, routing.room_field, room, "room")
    if user_id is not None and routing.user_field:
        _with_target(payload, routing.user_field, user_id, "user")
    if routing.route_from_fields:
        if room is None:
            found = _field_target(payload, routing.room_field)
            room = None if found is None else str(found)
        if user_id is None:
            user_id = _field_target(payload, routing.user_field)
    body: Dict[str, Any] = {}
    if channel is not None:
        body["channel"] = channel
    if room is not None:
        body["room"] = room
    if user_id is not None:
        body["user_id"] = user_id
    body["event"] = payload
    return body


def json_body(body: Mapping[str, Any]) -> bytes:
    """The request body as UTF-8 JSON."""
    return to_json(body).encode("utf-8")
