"""`python -m benchmark throughput`: options, repositories, the table and the checks; one
short real cell (onnxruntime worker, real MiniLM) end to end."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest

from benchmark.__main__ import ThroughputArgs, parse
from benchmark.throughput import (
    CPU_PARTS,
    LABEL,
    Cell,
    Setup,
    ThroughputConfig,
    checks,
    cpu_seconds,
    prepare_repository,
    render_table,
    run_setup,
)
from tests.support import scaled


def test_options_default_to_the_issue_matrix_and_flags_repeat() -> None:
    """Defaults: both engines, slots 1 and 64, batching off and on, 1/8/32/64 callers,
    1 and 8 texts; repeated flags replace a default."""
    args = parse(["throughput"], {})
    assert isinstance(args, ThroughputArgs)
    assert args.engines == ("triton", "onnxruntime") and args.slots == (1, 64)
    assert args.batching == ("off", "on") and args.callers == (1, 8, 32, 64)
    assert args.texts == (1, 8) and args.duration_s == 5.0
    args = parse(["throughput", "--engine", "onnxruntime", "--callers", "2", "--callers", "4"])
    assert args.engines == ("onnxruntime",) and args.callers == (2, 4)
    assert len(list(ThroughputConfig().setups())) == 8


def _fake_entry(path: Path) -> Path:
    (path / "1").mkdir(parents=True)
    (path / "1" / "model.onnx").write_bytes(b"fake")
    meta = {"model_name": "x", "dimension": 5, "max_batch_size": 16}
    (path / "smartrouting.json").write_text(json.dumps(meta))
    return path


@pytest.mark.parametrize(("delay_ms", "batched"), [(None, False), (2.0, True)])
def test_prepare_repository_writes_the_batching_config(
    tmp_path: Path, delay_ms: float | None, batched: bool
) -> None:
    """The label's config has dynamic_batching exactly when a delay is given."""
    target = prepare_repository(_fake_entry(tmp_path / "entry"), tmp_path / "repo", delay_ms)
    assert target == tmp_path / "repo" / LABEL
    config = (target / "config.pbtxt").read_text()
    assert ("dynamic_batching" in config) is batched
    assert ("max_queue_delay_microseconds: 2000" in config) is batched
    assert (target / "1" / "model.py").is_file()


def _cell(batching: str, callers: int, tasks: int, p99: float, slots: int = 64) -> Cell:
    return Cell("triton", slots, batching, callers, 1, tasks=tasks, seconds=1.0, p99_ms=p99)


def test_checks_compare_batching_on_with_off_and_the_single_caller() -> None:
    """The two questions of the issue are answered from the cells, with the right sign."""
    cells = [
        _cell("on", 1, 50, 20.0),
        _cell("off", 32, 100, 300.0),
        _cell("on", 32, 250, 30.0),
        _cell("on", 32, 10, 900.0, slots=1),  # fewer slots: not the compared setup
    ]
    (line,) = checks(cells)
    assert "2.50x the texts/s of off (>= 2x)" in line
    assert "1.5x the single-caller p99 20 ms (<= 2x)" in line
    assert "CPU per text" not in line  # no CPU measured in these cells
    cells[1].cpu_ms_per_text = {"worker": 4.0, "engine": 6.0}
    cells[2].cpu_ms_per_text = {"worker": 3.0, "engine": 2.0}
    assert "CPU per text 10.0 ms off, 5.0 ms on (2.00x less)" in checks(cells)[0]
    assert "| 3.0 / nan / 3.0 / 2.0 = 5.0 |" not in render_table(cells)
    assert "| nan / nan / 3.0 / 2.0 = 5.0 |" in render_table(cells)
    cells[2] = _cell("on", 32, 150, 100.0)
    assert "(< 2x)" in checks(cells)[0] and "(> 2x)" in checks(cells)[0]
    table = render_table(cells)
    assert table.count("\n") == 1 + len(cells) and "| triton | 64 | on | 32 | 1 |" in table


def test_cell_rates() -> None:
    """tasks/s and texts/s come from the answers in the window; no window, no rate."""
    cell = Cell("onnxruntime", 1, "off", 8, 8, tasks=30, seconds=3.0)
    assert (cell.tasks_per_s, cell.texts_per_s) == (10.0, 80.0)
    assert Cell("onnxruntime", 1, "off", 8, 8).tasks_per_s == 0.0
    assert math.isnan(cell.to_json()["p99_ms"])


def test_cpu_seconds_counts_a_process_and_the_descendants_of_the_worker() -> None:
    """The 'worker' part is the process itself, 'engine' its children (tritonserver and its
    stubs): a child that burns CPU shows up there, not in 'worker'."""
    import subprocess
    import sys
    import time

    burn = "import sys,time\nwhile time.process_time() < 0.3: pass\nsys.stdin.read()"
    child = subprocess.Popen([sys.executable, "-c", burn], stdin=subprocess.PIPE)
    try:
        deadline = time.monotonic() + scaled(20)
        while True:
            used = cpu_seconds(None, child.pid)
            if used["engine"] == 0.0 and used.get("worker", 0.0) >= 0.25:  # clock ticks
                break
            assert time.monotonic() < deadline, used
            time.sleep(0.05)
        assert set(used) == {"callers", "worker", "engine"}
        mine = cpu_seconds(None, os.getpid())  # this process has the child
        assert mine["engine"] >= 0.25 and mine["callers"] > 0
    finally:
        child.communicate(b"")


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_one_real_cell_end_to_end(tmp_path: Path) -> None:
    """A dispatcher and one onnxruntime worker (slots 4, batching on) serve 4 callers for a
    second: answers come back, none fail, the percentiles are ordered."""
    from tests.uploader.fixtures import MINILM_NAME, minilm_repository

    entry = minilm_repository() / MINILM_NAME
    cfg = ThroughputConfig(
        callers=(4,), texts=(2,), duration_s=1.0, warmup_s=0.5, ready_timeout_s=scaled(120)
    )
    repository = prepare_repository(entry, tmp_path / "models", cfg.batch_delay_ms).parent
    (cell,) = run_setup(Setup("onnxruntime", 4, "on"), cfg, repository, tmp_path / "run")
    assert cell.failed == 0, cell.errors
    assert cell.tasks > 0 and cell.texts_per_s == 2 * cell.tasks_per_s
    assert 0 < cell.p50_ms <= cell.p99_ms
    # CPU per text of every part (the onnxruntime engine runs inside the worker: engine ~0).
    assert set(cell.cpu_ms_per_text) == set(CPU_PARTS)
    assert cell.cpu_ms_per_text["worker"] > 0 and cell.cpu_ms_per_text["callers"] > 0
