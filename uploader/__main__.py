"""Command line of the uploader.

    python -m uploader convert MODEL_ID --repository PATH [--max-batch-size 32]
                               [--overwrite] [--model-name NAME]
    python -m uploader serve [--host 127.0.0.1] [--port 8081] --repository PATH
                             [--models-dir DIR ...]

Environment variables mirror the flags: MODEL_REPOSITORY, UPLOADER_HOST, UPLOADER_PORT,
UPLOADER_MODELS_DIR (os.pathsep-separated). `convert` prints the result as JSON and exits 0,
or prints `{"error", "detail"}` to stderr and exits 1.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m uploader", description=__doc__.split("\n")[0])
    parser.add_argument("--log-level", default=os.environ.get("UPLOADER_LOG_LEVEL", "info"))
    commands = parser.add_subparsers(dest="command", required=True)
    repository = os.environ.get("MODEL_REPOSITORY")

    convert = commands.add_parser("convert", help="convert one model and publish it")
    convert.add_argument("model_id", help="model id, alias or local directory")
    convert.add_argument("--repository", type=Path, default=repository, required=not repository)
    convert.add_argument("--max-batch-size", type=int, default=32)
    convert.add_argument("--overwrite", action="store_true")
    convert.add_argument("--model-name", default=None)

    serve = commands.add_parser("serve", help="run the HTTP service")
    serve.add_argument("--host", default=os.environ.get("UPLOADER_HOST", "127.0.0.1"))
    serve.add_argument("--port", type=int, default=int(os.environ.get("UPLOADER_PORT", "8081")))
    serve.add_argument("--repository", type=Path, default=repository, required=not repository)
    dirs = os.environ.get("UPLOADER_MODELS_DIR", "")
    serve.add_argument(
        "--models-dir",
        type=Path,
        action="append",
        default=[Path(d) for d in dirs.split(os.pathsep) if d],
        help="a directory of local models offered by id (repeatable)",
    )
    serve.add_argument("--max-concurrent", type=int, default=1)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.command == "convert":
        from uploader.convert import convert_model
        from uploader.errors import UploaderError

        try:
            result = convert_model(
                args.model_id,
                args.repository,
                model_name=args.model_name,
                max_batch_size=args.max_batch_size,
                overwrite=args.overwrite,
            )
        except UploaderError as exc:
            print(json.dumps(exc.to_json()), file=sys.stderr)
            return 1
        print(json.dumps({"status": "success", "path": str(result.path), **result.to_json()}))
        return 0

    import uvicorn

    from uploader.service import create_app

    app = create_app(
        args.repository,
        local_roots=args.models_dir,
        max_concurrent=args.max_concurrent,
        admin_key=os.environ.get("SMARTROUTING_ADMIN_KEY") or None,
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level.lower())
    return 0


if __name__ == "__main__":
    sys.exit(main())
