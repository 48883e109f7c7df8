"""The wire protocol: round trips, garbage, and freshness of the generated code."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from proto import FrameDecodeError, decode_dispatcher_message, decode_worker_message, encode, pb
from proto.frames import PROTOCOL_VERSION, body_of
from tests.support import ROOT

WORKER_MESSAGES = [
    pb.WorkerMessage(
        hello=pb.Hello(
            protocol_version=PROTOCOL_VERSION,
            worker_id="gpu-0",
            capacity=2,
            slots=1,
            engine="triton",
            labels_loaded=["a", "b"],
            device="cuda:0",
            label_costs={"a": pb.LabelCost(load_ms=270.0, run_ms=3.0)},
            task_types=["embed_texts"],
        )
    ),
    pb.WorkerMessage(
        task_result=pb.TaskResult(
            task_id="t1",
            ok=False,
            error_code=pb.MODEL_NOT_FOUND,
            error_message="no model 'x'",
            label="x",
            label_miss=True,
            load_ms=1.5,
            queue_ms=0.2,
            run_ms=3.25,
            labels_loaded=["a"],
            labels_evicted=["b"],
            attempt=2,
        )
    ),
    pb.WorkerMessage(
        task_result=pb.TaskResult(task_id="t2", ok=True, result_json='{"x": 1}', model_version="2")
    ),
    pb.WorkerMessage(labels_changed=pb.LabelsChanged(labels_loaded=["a"], labels_loading=["b"])),
    pb.WorkerMessage(goodbye=pb.Goodbye(reason="SIGTERM", returned_task_ids=["t3"])),
    pb.WorkerMessage(
        occupancy=pb.Occupancy(
            slots_in_use=3, slots_in_use_elsewhere=2, slots=4, labels_loaded=["a"]
        )
    ),
    pb.WorkerMessage(task_result=pb.TaskResult(task_id="t4", ok=False, error_code=pb.BUSY)),
]

DISPATCHER_MESSAGES = [
    pb.DispatcherMessage(reload=pb.Reload(label="m", version="2")),
    pb.DispatcherMessage(
        welcome=pb.Welcome(protocol_version=1, dispatcher_id="d", policy="routed")
    ),
    pb.DispatcherMessage(
        task=pb.Task(
            task_id="t1",
            task_type="embed_texts",
            label="m",
            parameters_json='{"texts": ["hi"]}',
            deadline_unix_ms=1_900_000_000_000,
            evict_hint=["old"],
            attempt=1,
        )
    ),
    pb.DispatcherMessage(preload=pb.Preload(label="m", evict_hint=["old"])),
    pb.DispatcherMessage(unload=pb.Unload(label="m")),
    pb.DispatcherMessage(drain=pb.Drain(reason="shutdown")),
    pb.DispatcherMessage(cancel=pb.Cancel(task_id="t1", reason="deadline")),
]


def test_every_worker_message_type_is_covered() -> None:
    """The round-trip table names every field of WorkerMessage's oneof."""
    covered = {m.WhichOneof("body") for m in WORKER_MESSAGES}
    declared = {f.name for f in pb.WorkerMessage.DESCRIPTOR.oneofs_by_name["body"].fields}
    assert covered == declared


def test_every_dispatcher_message_type_is_covered() -> None:
    """The round-trip table names every field of DispatcherMessage's oneof."""
    covered = {m.WhichOneof("body") for m in DISPATCHER_MESSAGES}
    declared = {f.name for f in pb.DispatcherMessage.DESCRIPTOR.oneofs_by_name["body"].fields}
    assert covered == declared


@pytest.mark.parametrize("message", WORKER_MESSAGES, ids=lambda m: m.WhichOneof("body"))
def test_worker_message_round_trips(message: pb.WorkerMessage) -> None:
    """Encoding then decoding a worker message gives an equal message."""
    decoded = decode_worker_message(encode(message))
    assert decoded == message
    assert body_of(decoded) == body_of(message)


@pytest.mark.parametrize("message", DISPATCHER_MESSAGES, ids=lambda m: m.WhichOneof("body"))
def test_dispatcher_message_round_trips(message: pb.DispatcherMessage) -> None:
    """Encoding then decoding a dispatcher message gives an equal message."""
    assert decode_dispatcher_message(encode(message)) == message


@pytest.mark.parametrize(
    "frame",
    [
        b"",  # empty: parses, but has no body
        b"\xff\xff\xff\xff\xff",  # invalid varint / wire type
        b"\x0a\x10only-three",  # length prefix longer than the data (truncated)
        b"\x78\x01",  # a well-formed unknown field only: no body
        "a text frame",  # text frames are not part of the protocol
    ],
    ids=["empty", "garbage", "truncated", "unknown-field-only", "text-frame"],
)
def test_garbage_frame_raises_decode_error(frame: bytes | str) -> None:
    """A frame that is not a protocol message raises FrameDecodeError on both sides."""
    with pytest.raises(FrameDecodeError):
        decode_worker_message(frame)
    with pytest.raises(FrameDecodeError):
        decode_dispatcher_message(frame)


def test_truncated_real_frame_raises_decode_error() -> None:
    """Cutting a real frame short is detected, not silently accepted."""
    frame = encode(WORKER_MESSAGES[1])
    with pytest.raises(FrameDecodeError):
        decode_worker_message(frame[: len(frame) // 2])


def test_encode_refuses_message_without_body() -> None:
    """A message with no body set is a programming error caught at the sender."""
    with pytest.raises(ValueError, match="no body"):
        encode(pb.WorkerMessage())


def _generate(proto_dir_source: Path, out_dir: Path) -> None:
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_proto.py"), str(out_dir)],
        check=True,
        capture_output=True,
        # protoc finds the mypy plugin (protoc-gen-mypy) next to this interpreter.
        env={
            **os.environ,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "SMARTROUTING_PROTO_ROOT": str(proto_dir_source),
        },
    )


def test_generated_code_is_fresh(tmp_path: Path) -> None:
    """The committed *_pb2.py(i) equal what `task proto` generates from the .proto now."""
    _generate(ROOT, tmp_path)
    for name in ("smartrouting_pb2.py", "smartrouting_pb2.pyi"):
        committed = (ROOT / "proto" / name).read_bytes()
        fresh = (tmp_path / "proto" / name).read_bytes()
        assert fresh == committed, f"proto/{name} is stale: run `task proto`"


def test_freshness_check_detects_a_changed_proto(tmp_path: Path) -> None:
    """Changing the .proto without regenerating makes the generated code differ."""
    source = tmp_path / "src"
    (source / "proto").mkdir(parents=True)
    text = (ROOT / "proto" / "smartrouting.proto").read_text()
    changed = text.replace("message Cancel {", "message Cancel {\n  bool urgent = 99;", 1)
    assert changed != text
    (source / "proto" / "smartrouting.proto").write_text(changed)
    out = tmp_path / "out"
    _generate(source, out)
    fresh = (out / "proto" / "smartrouting_pb2.py").read_bytes()
    assert fresh != (ROOT / "proto" / "smartrouting_pb2.py").read_bytes()
