"""Encode and decode websocket frames of the smart-routing protocol.

A frame is one serialized `WorkerMessage` or `DispatcherMessage` with exactly one
field of its `body` oneof set. Anything else raises `FrameDecodeError`, and the
receiving side closes that connection with `POLICY_VIOLATION_CLOSE_CODE`.
"""

from __future__ import annotations

from typing import TypeVar

from google.protobuf.message import DecodeError, Message

from proto import smartrouting_pb2 as pb

#: Bumped when a change is not backward compatible; sent in Hello and Welcome.
PROTOCOL_VERSION = 1

#: Websocket close code for a frame that breaks the protocol (RFC 6455 1008).
POLICY_VIOLATION_CLOSE_CODE = 1008

#: Largest frame either side accepts; results of big embedding batches fit well.
MAX_FRAME_BYTES = 16 * 1024 * 1024

_M = TypeVar("_M", pb.WorkerMessage, pb.DispatcherMessage)


class FrameDecodeError(ValueError):
    """A frame is not a valid protocol message (garbage, truncated, empty body)."""


def encode(message: pb.WorkerMessage | pb.DispatcherMessage) -> bytes:
    """Serialize a top-level message; refuses one whose `body` is not set."""
    if message.WhichOneof("body") is None:
        raise ValueError(f"{type(message).__name__} has no body set")
    return message.SerializeToString()


def _decode(message_type: type[_M], data: bytes | str) -> _M:
    if isinstance(data, str):
        raise FrameDecodeError("text frame received; the protocol uses binary frames")
    if len(data) > MAX_FRAME_BYTES:
        raise FrameDecodeError(f"frame of {len(data)} bytes exceeds {MAX_FRAME_BYTES}")
    message = message_type()
    try:
        message.ParseFromString(data)
    except (DecodeError, RuntimeWarning) as exc:
        raise FrameDecodeError(f"cannot parse {message_type.__name__}: {exc}") from exc
    # Random bytes can parse as unknown fields only; a frame must carry a body.
    if message.WhichOneof("body") is None:
        raise FrameDecodeError(f"{message_type.__name__} frame has no body")
    return message


def decode_worker_message(data: bytes | str) -> pb.WorkerMessage:
    """Parse a frame sent by a worker."""
    return _decode(pb.WorkerMessage, data)


def decode_dispatcher_message(data: bytes | str) -> pb.DispatcherMessage:
    """Parse a frame sent by the dispatcher."""
    return _decode(pb.DispatcherMessage, data)


def body_of(message: Message) -> Message:
    """The message inside the `body` oneof (Hello, Task, ...)."""
    field = message.WhichOneof("body")
    if field is None:
        raise FrameDecodeError(f"{type(message).__name__} has no body")
    inner: Message = getattr(message, field)
    return inner
