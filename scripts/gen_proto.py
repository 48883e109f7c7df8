"""Generate proto/smartrouting_pb2.py and its .pyi stub from proto/smartrouting.proto.

Usage: python scripts/gen_proto.py [OUT_DIR]   (default: the repository root)

The generated module lands at OUT_DIR/proto/smartrouting_pb2.py(i). The freshness
test calls this with a temporary OUT_DIR and compares the bytes.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from grpc_tools import protoc

# The tree that holds proto/smartrouting.proto; the freshness test points it elsewhere.
ROOT = Path(os.environ.get("SMARTROUTING_PROTO_ROOT") or Path(__file__).resolve().parent.parent)


def generate(out_dir: Path) -> None:
    (out_dir / "proto").mkdir(parents=True, exist_ok=True)
    args = [
        "protoc",
        f"-I{ROOT}",
        f"--python_out={out_dir}",
        f"--mypy_out={out_dir}",
        "proto/smartrouting.proto",
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed; see the message above")


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT)
