#!/usr/bin/env python3
"""Writes the hand-made seed inputs of the fuzz targets into fuzz/seeds/<target>/.

The seeds are committed; run this again after changing it. The frame_decoder layout is
described in fuzz/fuzz_targets/frame_decoder.rs. Seeds found by the fuzzer that reproduced a
bug are committed beside these under a `regression-` name and are not written here.
"""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
KEY = b"\x37\xfa\x21\x3d"


def frame(first_byte, payload, mask=True):
    """One frame with an explicit first byte (FIN, RSV bits, opcode)."""
    n = len(payload)
    head = bytes([first_byte])
    bit = 0x80 if mask else 0
    if n < 126:
        head += bytes([bit | n])
    elif n <= 0xFFFF:
        head += bytes([bit | 126]) + struct.pack(">H", n)
    else:
        head += bytes([bit | 127]) + struct.pack(">Q", n)
    if not mask:
        return head + payload
    return head + KEY + bytes(b ^ KEY[i % 4] for i, b in enumerate(payload))


def decoder_case(stream, limit=32892, cuts=(), client=False):
    code = limit - 125
    assert 0 <= code < 0x8000
    flags = len(cuts) | (0x80 if client else 0)
    return struct.pack("<HB", code, flags) + b"".join(struct.pack("<H", c) for c in cuts) + stream


FIN = 0x80
TEXT, BINARY, CONT, CLOSE, PING, PONG = 0x1, 0x2, 0x0, 0x8, 0x9, 0xA

frame_decoder = {
    "text": decoder_case(frame(FIN | TEXT, b"Hello")),
    "text-byte-by-byte": decoder_case(frame(FIN | TEXT, b"Hello"), cuts=range(1, 11)),
    "fragments-with-ping": decoder_case(
        frame(TEXT, b"Hel") + frame(FIN | PING, b"p") + frame(FIN | CONT, b"lo"), cuts=(3, 9, 17)
    ),
    "utf8-split-across-fragments": decoder_case(
        frame(TEXT, "κό".encode()[:3]) + frame(FIN | CONT, "κό".encode()[3:]), cuts=(5,)
    ),
    "invalid-utf8-fragment": decoder_case(frame(TEXT, b"\xce\xba\xf4\x90\x80\x80") + frame(FIN | CONT, b"x")),
    "binary-16bit-length": decoder_case(frame(FIN | BINARY, bytes(range(256)) * 2), cuts=(2, 4, 8, 300)),
    "binary-64bit-length": decoder_case(frame(FIN | BINARY, b"z" * 70000), cuts=(10, 40000)),
    "too-large": decoder_case(frame(FIN | TEXT, b"a" * 200), limit=150),
    "ping-pong-close": decoder_case(
        frame(FIN | PING, b"ping") + frame(FIN | PONG, b"") + frame(FIN | CLOSE, struct.pack(">H", 1000) + b"bye")
    ),
    "close-bad-code": decoder_case(frame(FIN | CLOSE, struct.pack(">H", 1005))),
    "rsv2-after-text": decoder_case(frame(FIN | TEXT, b"ok") + frame(FIN | 0x20 | TEXT, b"x")),
    "unmasked-from-client": decoder_case(frame(FIN | TEXT, b"x", mask=False)),
    "server-frames-as-client": decoder_case(
        frame(FIN | TEXT, b"welcome", mask=False) + frame(FIN | PING, b"", mask=False), cuts=(4,), client=True
    ),
}

client_message = {
    "ping": b'{"type":"ping"}',
    "ping-with-id": b'{"type":"ping","id":42}',
    "subscribe": b'{"type":"subscribe","channels":["campaigns","emails"],"id":"r1"}',
    "subscribe-comma-list": b'{"type":"subscribe","channels":"a, b,,c"}',
    "subscribe-one": b'{"type":"subscribe","channel":"jobs"}',
    "unsubscribe": b'{"type":"unsubscribe","channels":["b"]}',
    "join-room": b'{"type":"join_room","room":"campaign:456","request_id":7}',
    "join-room-id": b'{"type":"join_room","room_id":"workspace_123"}',
    "leave-room": b'{"type":"leave_room","room":"campaign:456"}',
    "order-id": b'{"type":"track","order_id":12345678901234567890}',
    "unicode-room": '{"type":"join_room","room":"комната/🎉"}'.encode(),
    "control-char-room": b'{"type":"join_room","room":"a\\u0000b"}',
    "wrong-types": b'{"type":"subscribe","channels":[1,null],"room":5,"id":{"x":1}}',
    "not-an-object": b"[1,2,3]",
    "nested": b'{"type":"x","data":{"a":[{"b":[[[]]]}]}}',
}


def config_seeds():
    seeds = {}
    for name in ("campaign-events.toml", "job-updates.toml"):
        with open(os.path.join(ROOT, "examples", name), "rb") as f:
            seeds["example-" + name[:-5]] = f.read()
    seeds["autobahn-echo"] = b"""[websocket]
heartbeat_interval = "10m"
idle_timeout = "10m"
outbound_queue_bytes = 67108864

[[endpoints]]
path = "/echo"
kind = "echo"
max_message_size = 20000000
"""
    seeds["every-section"] = b"""[server]
listen = "[::1]:0"
mounts = ["/ws", "/api/v1/ws"]
shards = 2
node_id = "node-1"
shutdown_timeout = 5

[websocket]
heartbeat_interval = 0.5
heartbeat_message = false
ping_frames = true
idle_timeout = "1h 30m"
max_message_size = 125
outbound_queue = 1
outbound_queue_bytes = 1024
welcome = "connection_established"
main_endpoint = false

[[endpoints]]
path = ""
channels = ["user:{user_id}"]
rooms = ["campaign:{campaign_id}"]
query_channels = false
welcome = "none"

[[endpoints]]
path = "/live-stats"
kind = "stats"

[[channels]]
name = "campaign:*"
default_type = "campaign_update"

[[channels]]
name = "jobs"
broadcast = true

[api]
key = 12345678
max_body_size = 1048576

[limits]
max_connections = 10
max_channels_per_connection = 5
max_rooms_per_connection = 5

[redis]
url = "redis://127.0.0.1:6379/0"

[database]
url = "sqlite://herald.db"

[log]
format = "json"
level = "herald=debug,info"
"""
    seeds["empty"] = b""
    return seeds


def write(target, seeds):
    directory = os.path.join(HERE, target)
    os.makedirs(directory, exist_ok=True)
    for name, data in seeds.items():
        with open(os.path.join(directory, name), "wb") as f:
            f.write(data)


write("frame_decoder", frame_decoder)
write("client_message", client_message)
write("config_loader", config_seeds())
