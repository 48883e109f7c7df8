"""The wire protocol between dispatcher and workers (docs/architecture.md §2).

`smartrouting.proto` is the source; `smartrouting_pb2` is generated from it by
`task proto` and committed. Use `proto.frames` to turn messages into websocket
frames and back.
"""

from __future__ import annotations

from proto import smartrouting_pb2 as pb
from proto.frames import (
    PROTOCOL_VERSION,
    FrameDecodeError,
    decode_dispatcher_message,
    decode_worker_message,
    encode,
)

__all__ = [
    "PROTOCOL_VERSION",
    "FrameDecodeError",
    "decode_dispatcher_message",
    "decode_worker_message",
    "encode",
    "pb",
]
