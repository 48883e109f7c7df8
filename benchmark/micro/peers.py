"""No-op workers: they speak the worker protocol and answer every Task at once."""

from __future__ import annotations

import websockets

from proto import frames
from proto import smartrouting_pb2 as pb


async def noop_worker(url: str, worker_id: str, labels: list[str], slots: int) -> None:
    """A worker answering each Task at once (a hit when it holds the label)."""
    async with websockets.connect(url, additional_headers={"Worker-Id": worker_id}) as ws:
        hello = pb.Hello(
            protocol_version=frames.PROTOCOL_VERSION,
            worker_id=worker_id,
            capacity=len(labels),
            slots=slots,
            engine="noop",
            labels_loaded=labels,
            task_types=["sample_task"],
        )
        await ws.send(frames.encode(pb.WorkerMessage(hello=hello)))
        loaded = list(labels)
        async for data in ws:
            message = frames.decode_dispatcher_message(data)
            if message.WhichOneof("body") != "task":
                continue
            task = message.task
            result = pb.TaskResult(
                task_id=task.task_id,
                ok=True,
                result_json="{}",
                label=task.label,
                label_miss=task.label not in loaded,
                labels_loaded=loaded,
                attempt=task.attempt,
            )
            await ws.send(frames.encode(pb.WorkerMessage(task_result=result)))
