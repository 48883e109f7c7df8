"""Publishing an entry: layout, 409 semantics, overwrite, failures, the per-model lock.

These use a fake builder (no torch): they test the staging, renaming and locking logic.
"""

from __future__ import annotations

import json
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.uploader.fixtures import fake_builder
from uploader import PublishResult, convert_model
from uploader import repository as entries
from uploader.convert import Builder
from uploader.errors import ConversionError, InvalidRequest, ModelExists, UploadInProgress

METADATA_KEYS = {
    "model_id",
    "model_name",
    "dimension",
    "max_batch_size",
    "max_seq_length",
    "inputs",
    "outputs",
    "source",
    "created_unix",
    "validation_max_abs_diff",
    "onnx_bytes",
}


def _convert(models_dir: Path, repo: Path, builder: Builder, **kwargs: Any) -> PublishResult:
    return convert_model("acme/tiny", repo, local_roots=[models_dir], builder=builder, **kwargs)


def _visible(repo: Path) -> list[str]:
    return sorted(p.name for p in repo.iterdir() if p.name != entries.LOCK_DIR)


def test_publish_writes_the_contract_layout(tmp_path: Path, models_dir: Path) -> None:
    """The entry has exactly the files of docs/interfaces.md section 1 and its metadata."""
    repo = tmp_path / "repo"
    result = _convert(models_dir, repo, fake_builder(dimension=4), max_batch_size=8)
    entry = repo / "acme--tiny"
    assert result.path == entry and result.model_name == "acme--tiny"
    files = sorted(str(p.relative_to(entry)) for p in entry.rglob("*") if p.is_file())
    assert files == [
        "1/model.onnx",
        "1/model.py",
        "1/tokenizer/tokenizer.json",
        "config.pbtxt",
        "configs/onnxruntime.pbtxt",
        "configs/python.pbtxt",
        "smartrouting.json",
        "tokenizer/tokenizer.json",
    ]
    metadata = json.loads((entry / "smartrouting.json").read_text())
    assert METADATA_KEYS <= set(metadata)
    assert metadata["model_name"] == "acme--tiny" and metadata["max_batch_size"] == 8
    assert metadata["onnx_bytes"] == (entry / "1" / "model.onnx").stat().st_size
    assert _visible(repo) == ["acme--tiny"], "staging directories were left behind"
    assert entries.list_models(repo)[0]["model_id"] == "acme/tiny"


def test_configs_parse_as_complete_triton_configs(tmp_path: Path, models_dir: Path) -> None:
    """Both configs parse with Triton's ModelConfig schema and carry no `name`."""
    model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2")
    from google.protobuf import text_format

    repo = tmp_path / "repo"
    _convert(models_dir, repo, fake_builder(dimension=7), max_batch_size=16)
    entry = repo / "acme--tiny"
    assert (entry / "config.pbtxt").read_text() == (entry / "configs/python.pbtxt").read_text()
    python = text_format.Parse((entry / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    onnx = text_format.Parse(
        (entry / "configs/onnxruntime.pbtxt").read_text(), model_config_pb2.ModelConfig()
    )
    assert python.backend == "python" and onnx.platform == "onnxruntime_onnx"
    for config, kind in ((python, "KIND_CPU"), (onnx, "KIND_GPU")):
        assert config.name == ""
        assert config.max_batch_size == 16
        assert [(i.name, i.data_type, list(i.dims)) for i in config.input] == [
            ("input_ids", model_config_pb2.TYPE_INT64, [-1]),
            ("attention_mask", model_config_pb2.TYPE_INT64, [-1]),
        ]
        assert [(o.name, o.data_type, list(o.dims)) for o in config.output] == [
            ("embedding", model_config_pb2.TYPE_FP32, [7]),
            ("pooled", model_config_pb2.TYPE_FP32, [7]),
        ]
        assert model_config_pb2.ModelInstanceGroup.Kind.Name(config.instance_group[0].kind) == kind
    assert python.parameters["intra_op_num_threads"].string_value == "1"
    # Dynamic batching in both, 2 ms by default; the Python backend takes ragged inputs.
    for config in (python, onnx):
        assert config.HasField("dynamic_batching")
        assert config.dynamic_batching.max_queue_delay_microseconds == 2000
    assert [i.allow_ragged_batch for i in python.input] == [True, True]
    assert [i.allow_ragged_batch for i in onnx.input] == [False, False]


@pytest.mark.parametrize(("delay_ms", "want_us"), [(None, None), (0.0, 0), (7.5, 7500)])
def test_batch_delay_is_configurable_or_off(
    tmp_path: Path, models_dir: Path, delay_ms: float | None, want_us: int | None
) -> None:
    """batch_delay_ms sets Triton's queue delay in both configs; None leaves batching out."""
    model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2")
    from google.protobuf import text_format

    repo = tmp_path / "repo"
    _convert(models_dir, repo, fake_builder(), batch_delay_ms=delay_ms)
    for name in ("config.pbtxt", "configs/onnxruntime.pbtxt"):
        text = (repo / "acme--tiny" / name).read_text()
        config = text_format.Parse(text, model_config_pb2.ModelConfig())
        if want_us is None:
            assert not config.HasField("dynamic_batching")
            assert not any(i.allow_ragged_batch for i in config.input)
        else:
            assert config.dynamic_batching.max_queue_delay_microseconds == want_us


def test_negative_batch_delay_is_refused(tmp_path: Path, models_dir: Path) -> None:
    """A negative delay is an InvalidRequest before anything is built."""
    with pytest.raises(InvalidRequest, match="batch_delay_ms"):
        _convert(models_dir, tmp_path / "repo", fake_builder(), batch_delay_ms=-1.0)
    assert not (tmp_path / "repo").exists()


def test_existing_model_without_overwrite_is_refused(tmp_path: Path, models_dir: Path) -> None:
    """A second upload without overwrite raises ModelExists and leaves the entry as it was."""
    repo = tmp_path / "repo"
    _convert(models_dir, repo, fake_builder())
    before = (repo / "acme--tiny" / "smartrouting.json").read_text()
    with pytest.raises(ModelExists, match="overwrite"):
        _convert(models_dir, repo, fake_builder(dimension=9))
    assert (repo / "acme--tiny" / "smartrouting.json").read_text() == before


def test_overwrite_replaces_the_entry(tmp_path: Path, models_dir: Path) -> None:
    """overwrite=True swaps in the new entry and removes the old one completely."""
    repo = tmp_path / "repo"
    _convert(models_dir, repo, fake_builder(dimension=4))
    result = _convert(models_dir, repo, fake_builder(dimension=9), overwrite=True)
    assert result.replaced is True
    assert json.loads((repo / "acme--tiny" / "smartrouting.json").read_text())["dimension"] == 9
    assert _visible(repo) == ["acme--tiny"]


def test_failed_build_leaves_nothing_and_keeps_the_old_entry(
    tmp_path: Path, models_dir: Path
) -> None:
    """A build that fails midway publishes nothing and an existing entry survives."""
    repo = tmp_path / "repo"
    with pytest.raises(ConversionError):
        _convert(models_dir, repo, fake_builder(fail=ConversionError("boom")))
    assert _visible(repo) == []
    _convert(models_dir, repo, fake_builder(dimension=4))
    with pytest.raises(ConversionError):
        _convert(models_dir, repo, fake_builder(fail=ConversionError("boom")), overwrite=True)
    assert json.loads((repo / "acme--tiny" / "smartrouting.json").read_text())["dimension"] == 4
    assert _visible(repo) == ["acme--tiny"]


def test_concurrent_upload_of_one_model_is_refused(tmp_path: Path, models_dir: Path) -> None:
    """While one upload builds, a second one of the same model gets UploadInProgress."""
    repo = tmp_path / "repo"
    entered, release = threading.Event(), threading.Event()
    with ThreadPoolExecutor(1) as pool:
        slow = fake_builder(entered=entered, release=release)
        first = pool.submit(_convert, models_dir, repo, slow)
        assert entered.wait(30)
        with pytest.raises(UploadInProgress):
            _convert(models_dir, repo, fake_builder(), overwrite=True)
        release.set()
        assert first.result(30).model_name == "acme--tiny"
    assert _visible(repo) == ["acme--tiny"]


@pytest.mark.parametrize("size", [0, 1025, -1, True, "32", 3.5])
def test_batch_size_out_of_range_is_refused(tmp_path: Path, models_dir: Path, size: object) -> None:
    """max_batch_size must be an int in 1..1024."""
    with pytest.raises(InvalidRequest, match="max_batch_size"):
        _convert(models_dir, tmp_path / "repo", fake_builder(), max_batch_size=size)


def test_local_path_sources_are_named_after_their_directory(
    tmp_path: Path, models_dir: Path
) -> None:
    """An absolute local path publishes under its directory name unless a name is given."""
    repo = tmp_path / "repo"
    source = models_dir / "acme" / "tiny"
    assert convert_model(source, repo, builder=fake_builder()).model_name == "tiny"
    named = convert_model(str(source), repo, model_name="tiny-b", builder=fake_builder())
    assert named.model_name == "tiny-b" and named.model_id == str(source)
    assert _visible(repo) == ["tiny", "tiny-b"]


def test_leftovers_of_a_killed_upload_are_swept(tmp_path: Path, models_dir: Path) -> None:
    """Staging/retired dirs of this model from a dead upload go; other models' stay."""
    repo = tmp_path / "repo"
    mine = [".staging-acme--tiny-deadbeef", ".retired-acme--tiny-0badf00d"]
    theirs = [".staging-acme--tiny-x-deadbeef", ".staging-other-deadbeef"]
    for name in mine + theirs:
        (repo / name / "1").mkdir(parents=True)
    _convert(models_dir, repo, fake_builder())
    assert _visible(repo) == sorted([*theirs, "acme--tiny"])


def test_overwrite_never_hides_the_entry_from_readers(tmp_path: Path, models_dir: Path) -> None:
    """During repeated overwrites a reader always finds a complete entry."""
    repo = tmp_path / "repo"
    _convert(models_dir, repo, fake_builder())
    entry = repo / "acme--tiny"
    done, missing = threading.Event(), []

    def read() -> None:
        while not done.is_set():
            if not (entry / "smartrouting.json").is_file():
                missing.append(1)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads often, so the reader can hit a gap
    try:
        with ThreadPoolExecutor(1) as pool:
            reader = pool.submit(read)
            for dimension in range(5, 45):
                _convert(models_dir, repo, fake_builder(dimension=dimension), overwrite=True)
            done.set()
            reader.result(10)
    finally:
        sys.setswitchinterval(interval)
    assert missing == []
    assert json.loads((entry / "smartrouting.json").read_text())["dimension"] == 44
    assert _visible(repo) == ["acme--tiny"]
