"""Events as published: a JSON object plus where it goes (channel, room).

`build_event` is what typed helpers generated from an event catalogue call: it sets `type`, the room from
the first room template whose fields were given, derived fields, and `timestamp`.
"""

from __future__ import annotations

import datetime as _dt
import decimal
import enum
import json
import string
import uuid
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, Mapping, Optional, Sequence, Tuple

#: Fields every helper sets itself; callers cannot pass them as event fields or `extra`.
RESERVED_FIELDS = frozenset({"type", "timestamp", "room"})


@dataclass(frozen=True)
class Event:
    """One event ready to publish.

    Attributes:
        type: The event's ``type`` (also in ``payload``).
        channel: The Herald channel it is published to, if any.
        room: The room it also reaches, if any (also in ``payload["room"]``).
        payload: The JSON object clients receive.
    """

    type: str
    channel: Optional[str]
    room: Optional[str]
    payload: Dict[str, Any] = field(default_factory=dict)


def utc_timestamp(now: Optional[_dt.datetime] = None) -> str:
    """ISO 8601 in UTC with milliseconds and a ``Z``: ``2024-01-15T10:30:00.123Z``."""
    moment = now if now is not None else _dt.datetime.now(_dt.timezone.utc)
    return _iso_utc(moment)


def _iso_utc(moment: _dt.datetime) -> str:
    if moment.tzinfo is None:
        # Naive datetimes are taken to be UTC, as `datetime.utcnow()` produces them.
        moment = moment.replace(tzinfo=_dt.timezone.utc)
    moment = moment.astimezone(_dt.timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def render_room(templates: Sequence[str], fields: Mapping[str, Any]) -> Optional[str]:
    """The first template whose placeholders all have a value in ``fields`` (not None), filled in.

    >>> render_room(["lead:{lead_id}", "conversation:{conversation_id}"], {"conversation_id": 7})
    'conversation:7'
    """
    for template in templates:
        names = [name for _, name, _, _ in string.Formatter().parse(template) if name]
        if all(fields.get(name) is not None for name in names):
            return template.format(**{name: fields[name] for name in names})
    return None


def _percent(current: Any, total: Any) -> float:
    if not total:
        return 0.0
    return round(float(current) / float(total) * 100.0, 1)


_DERIVATIONS = {"percent": _percent}


def build_event(
    type: str,
    channel: Optional[str],
    rooms: Sequence[str],
    fields: Mapping[str, Any],
    *,
    fixed: Optional[Mapping[str, Any]] = None,
    derived: Iterable[Tuple[str, str, Sequence[str]]] = (),
    extra: Optional[Mapping[str, Any]] = None,
    now: Optional[_dt.datetime] = None,
) -> Event:
    """Builds an event: ``type``, the given fields (None left out), fixed and derived fields,
    ``extra``, ``room`` (from ``rooms``), then ``timestamp``.

    Raises:
        ValueError: ``extra`` sets a reserved field or one the helper already has.
    """
    payload: Dict[str, Any] = {"type": type}
    payload.update((k, v) for k, v in fields.items() if v is not None)
    for key, value in (fixed or {}).items():
        payload.setdefault(key, value)
    for name, rule, sources in derived:
        if payload.get(name) is None:
            payload[name] = _DERIVATIONS[rule](*(fields.get(s) for s in sources))
    for key, value in (extra or {}).items():
        if key in RESERVED_FIELDS or key in payload:
            raise ValueError(f"extra field {key!r} would replace a field the helper sets")
        payload[key] = value
    room = render_room(rooms, fields)
    if room is not None:
        payload["room"] = room
    payload["timestamp"] = utc_timestamp(now)
    return Event(type=type, channel=channel, room=room, payload=payload)


def _json_default(value: Any) -> Any:
    if isinstance(value, _dt.datetime):
        return _iso_utc(value)
    if isinstance(value, _dt.date):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=repr)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def to_json(payload: Mapping[str, Any]) -> str:
    """Compact JSON; datetimes become ISO 8601 UTC, Decimals numbers, UUIDs and Enums their value."""
    return json.dumps(payload, default=_json_default, separators=(",", ":"), ensure_ascii=False)
