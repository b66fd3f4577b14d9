#!/usr/bin/env python3
"""Generates ``campaign_events/events.py`` from the catalogue ``events.toml``.

    python generate.py           # rewrite campaign_events/events.py
    python generate.py --check   # exit 1 if it is not what the catalogue produces

For every catalogue event it writes a typed builder function (returning a ``herald_publisher.Event``)
and a method of the same name on the sync and async publisher mixins, so that
``ws_publisher.campaign_launched(campaign_id=123, ...)`` and
``await websocket_service.campaign_launched(...)`` work. The catalogue format is described at the
top of ``events.toml``.
"""

from __future__ import annotations

import argparse
import json
import keyword
import re
import string
import sys
from pathlib import Path
from typing import Any, Dict, List

try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11
    import tomli as tomllib  # type: ignore[no-redef]

HERE = Path(__file__).resolve().parent
CATALOGUE = HERE / "events.toml"
OUTPUT = HERE / "campaign_events" / "events.py"

TYPES = {
    "str": "str",
    "int": "int",
    "float": "float",
    "bool": "bool",
    "id": "Union[int, str]",
    "datetime": "Union[datetime, str]",
    "list[str]": "List[str]",
    "dict": "Dict[str, Any]",
    "any": "Any",
}
RESERVED = {"type", "timestamp", "room", "extra", "self"}
DERIVATIONS = {"percent": 2}
LINE = 100


def q(value: Any) -> str:
    """A Python literal for a catalogue string or number, with double quotes for strings."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise CatalogueError(f"unsupported literal {value!r}")
    return json.dumps(value, ensure_ascii=False) if isinstance(value, str) else repr(value)


def tup(values: List[Any]) -> str:
    """A tuple literal."""
    inner = ", ".join(q(v) for v in values)
    return f"({inner},)" if len(values) == 1 else f"({inner})"


class CatalogueError(ValueError):
    pass


def load(path: Path = CATALOGUE) -> List[Dict[str, Any]]:
    """Reads and checks the catalogue; raises ``CatalogueError`` naming the event and the problem."""
    with path.open("rb") as f:
        data = tomllib.load(f)
    unknown = set(data) - {"event"}
    if unknown:
        raise CatalogueError(f"unknown top-level keys: {sorted(unknown)}")
    events = data.get("event", [])
    seen_names, seen_types = set(), set()
    for event in events:
        validate(event, seen_names, seen_types)
    return events


def validate(event: Dict[str, Any], seen_names: set, seen_types: set) -> None:
    name = event.get("name", "?")

    def fail(message: str) -> None:
        raise CatalogueError(f"event {name!r}: {message}")

    allowed = {"name", "type", "channel", "rooms", "doc", "required", "optional", "fixed", "derived"}
    if set(event) - allowed:
        fail(f"unknown keys {sorted(set(event) - allowed)}")
    for key in ("name", "type", "channel", "doc"):
        if not isinstance(event.get(key), str) or not event[key]:
            fail(f"{key!r} must be a non-empty string")
    if not name.isidentifier() or keyword.iskeyword(name) or name.startswith("_"):
        fail("name must be a public Python identifier")
    if name in seen_names or event["type"] in seen_types:
        fail("duplicate name or type")
    seen_names.add(name)
    seen_types.add(event["type"])
    fields: Dict[str, Dict[str, Any]] = {}
    for group in ("required", "optional"):
        for field in event.get(group, []):
            fname = field.get("name")
            if not isinstance(fname, str) or not fname.isidentifier() or keyword.iskeyword(fname):
                fail(f"field name {fname!r} is not a Python identifier")
            if fname in RESERVED:
                fail(f"field {fname!r} is set by the helper")
            if fname in fields:
                fail(f"field {fname!r} is declared twice")
            if field.get("type") not in TYPES:
                fail(f"field {fname!r} has type {field.get('type')!r}; known: {sorted(TYPES)}")
            if not isinstance(field.get("doc"), str) or not field["doc"]:
                fail(f"field {fname!r} needs a doc")
            if set(field) - {"name", "type", "doc"}:
                fail(f"field {fname!r} has unknown keys {sorted(set(field) - {'name', 'type', 'doc'})}")
            fields[fname] = field
    rooms = event.get("rooms", [])
    if not isinstance(rooms, list) or not all(isinstance(r, str) and r for r in rooms):
        fail("rooms must be a list of templates")
    for template in rooms:
        for _, placeholder, spec, conv in string.Formatter().parse(template):
            if placeholder is None:
                continue
            if placeholder not in fields or spec or conv:
                fail(f"room template {template!r} uses {placeholder!r}, which is not a plain declared field")
    for key, value in event.get("fixed", {}).items():
        if key in fields or key in RESERVED:
            fail(f"fixed field {key!r} collides with a field")
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            fail(f"fixed field {key!r} must be a string or a number")
    for d in event.get("derived", []):
        if d.get("rule") not in DERIVATIONS or len(d.get("of", [])) != DERIVATIONS[d.get("rule")]:
            fail(f"derived field {d.get('name')!r} has an unknown rule or wrong sources")
        if d.get("name") not in fields or any(s not in fields for s in d["of"]):
            fail(f"derived field {d.get('name')!r} and its sources must be declared fields")


def annotation(field: Dict[str, Any], optional: bool) -> str:
    t = TYPES[field["type"]]
    return f"Optional[{t}]" if optional else t


def wrap(text: str, indent: str) -> List[str]:
    """Wraps prose to the line length."""
    words, lines, current = text.split(), [], ""
    for word in words:
        candidate = f"{current} {word}" if current else word
        if len(indent) + len(candidate) > LINE and current:
            lines.append(indent + current)
            current = word
        else:
            current = candidate
    if current:
        lines.append(indent + current)
    return lines


def docstring(event: Dict[str, Any], indent: str, returns: str) -> List[str]:
    where = f"Type ``{event['type']}`` on channel ``{event['channel']}``"
    rooms = event.get("rooms", [])
    if len(rooms) == 1:
        where += f", room ``{rooms[0]}``"
    elif rooms:
        where += ", room the first of " + ", ".join(f"``{r}``" for r in rooms) + " whose fields are given"
    lines = [f'{indent}"""{event["doc"]}', ""]
    lines += wrap(where + ".", indent)
    fixed = event.get("fixed", {})
    if fixed:
        lines += wrap("Always carries " + ", ".join(f"``{k}={v!r}``" for k, v in fixed.items()) + ".", indent)
    lines += ["", f"{indent}Args:"]
    for group in ("required", "optional"):
        for field in event.get(group, []):
            lines += wrap(f"{field['name']}: {field['doc']}", indent + "    ")
    lines += wrap("extra: Further fields to include in the event.", indent + "    ")
    lines += ["", f"{indent}Returns:"]
    lines += wrap(returns, indent + "    ")
    lines.append(f'{indent}"""')
    return lines


def signature(event: Dict[str, Any], indent: str, self_arg: bool) -> List[str]:
    params = ["self,"] if self_arg else []
    params.append("*,")
    for field in event.get("required", []):
        params.append(f"{field['name']}: {annotation(field, False)},")
    for field in event.get("optional", []):
        params.append(f"{field['name']}: {annotation(field, True)} = None,")
    params.append("extra: Optional[Mapping[str, Any]] = None,")
    return [indent + "    " + p for p in params]


def call_args(event: Dict[str, Any]) -> str:
    names = [f["name"] for g in ("required", "optional") for f in event.get(g, [])] + ["extra"]
    return ", ".join(f"{n}={n}" for n in names)


def builder(event: Dict[str, Any]) -> List[str]:
    out = [f"def {event['name']}("]
    out += signature(event, "", False)
    out.append(") -> Event:")
    out += docstring(event, "    ", "The event, ready for ``publish_event``.")
    out.append("    return build_event(")
    out.append(f"        {q(event['type'])},")
    out.append(f"        {q(event['channel'])},")
    out.append(f"        {tup(event.get('rooms', []))},")
    out.append("        {")
    for group in ("required", "optional"):
        for field in event.get(group, []):
            out.append(f"            {q(field['name'])}: {field['name']},")
    out.append("        },")
    if event.get("fixed"):
        fixed = ", ".join(f"{q(k)}: {q(v)}" for k, v in event["fixed"].items())
        out.append(f"        fixed={{{fixed}}},")
    if event.get("derived"):
        derived = ", ".join(f"({q(d['name'])}, {q(d['rule'])}, {tup(d['of'])})" for d in event["derived"])
        out.append(f"        derived=({derived},),")
    out.append("        extra=extra,")
    out.append("    )")
    return out


def method(event: Dict[str, Any], asynchronous: bool) -> List[str]:
    out = [f"    {'async ' if asynchronous else ''}def {event['name']}("]
    out += signature(event, "    ", True)
    out.append("    ) -> PublishResult:")
    out += docstring(event, "        ", "The :class:`~herald_publisher.result.PublishResult` of the publish.")
    call = f"{event['name']}({call_args(event)})"
    head = "        return await self.publish_event(" if asynchronous else "        return self.publish_event("
    if len(head) + len(call) + 1 <= LINE:
        out.append(f"{head}{call})")
    else:
        out.append(head)
        out.append(f"            {event['name']}(")
        for part in call_args(event).split(", "):
            out.append(f"                {part},")
        out.append("            )")
        out.append("        )")
    return out


def render(events: List[Dict[str, Any]]) -> str:
    lines = [
        '"""Typed helpers for the events of the campaign-events catalogue.',
        "",
        "GENERATED by examples/campaign-events/generate.py from examples/campaign-events/events.toml:",
        "do not edit; change the catalogue and run ``python generate.py``.",
        "",
        "Each event has a builder function returning a :class:`herald_publisher.Event`, and a",
        "method of the same name on :class:`EventMethods` (sync publishers) and",
        ":class:`AsyncEventMethods` (async publishers) that builds and publishes it.",
        '"""',
        "",
        "from __future__ import annotations",
        "",
        "import abc",
        "from datetime import datetime",
        "from typing import Any, Dict, List, Mapping, Optional, Tuple, Union",
        "",
        "from herald_publisher import Event, PublishResult, build_event",
        "",
        "#: Every catalogue event: name → (type, channel, room templates).",
        "CATALOGUE: Dict[str, Tuple[str, str, Tuple[str, ...]]] = {",
    ]
    for e in events:
        entry = f"    {q(e['name'])}: ({q(e['type'])}, {q(e['channel'])}, {tup(e.get('rooms', []))}),"
        if len(entry) <= LINE:
            lines.append(entry)
        else:
            lines.append(f"    {q(e['name'])}: (")
            lines += [f"        {q(e['type'])},", f"        {q(e['channel'])},", f"        {tup(e.get('rooms', []))},"]
            lines.append("    ),")
    lines += ["}", ""]
    for e in events:
        lines += ["", *builder(e), ""]
    for asynchronous in (False, True):
        cls = "AsyncEventMethods" if asynchronous else "EventMethods"
        kind = "async" if asynchronous else "sync"
        lines += [
            "",
            f"class {cls}(abc.ABC):",
            f'    """One {kind} method per catalogue event; mixed into the {kind} campaign publisher."""',
            "",
            "    @abc.abstractmethod",
            f"    {'async ' if asynchronous else ''}def publish_event(self, event: Event) -> PublishResult:",
            '        """Publishes a built event to its channel and room."""',
        ]
        for e in events:
            lines += ["", *method(e, asynchronous)]
        lines.append("")
    text = "\n".join(lines).rstrip("\n") + "\n"
    too_long = [i + 1 for i, line in enumerate(text.splitlines()) if len(line) > LINE]
    if too_long:
        raise CatalogueError(f"generated lines too long: {too_long[:5]}")
    return re.sub(r"\n{4,}", "\n\n\n", text)


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if events.py is out of date")
    args = parser.parse_args(argv)
    try:
        text = render(load())
    except CatalogueError as e:
        print(f"catalogue error: {e}", file=sys.stderr)
        return 2
    if args.check:
        current = OUTPUT.read_text(encoding="utf-8") if OUTPUT.exists() else ""
        if current != text:
            print(f"{OUTPUT.relative_to(HERE)} is out of date: run python generate.py", file=sys.stderr)
            return 1
        return 0
    OUTPUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUTPUT.relative_to(HERE)} ({len(load())} events)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
