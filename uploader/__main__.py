"""Command line of the uploader.

    python -m uploader convert MODEL_ID --repository PATH [--max-batch-size 32]
                               [--overwrite] [--model-name NAME]
    python -m uploader serve [--host 127.0.0.1] [--port 8081] --repository PATH
                             [--models-dir DIR ...]

Every flag has an environment variable (uploader.config): MODEL_REPOSITORY, UPLOADER_HOST,
UPLOADER_PORT, UPLOADER_MODELS_DIR (os.pathsep-separated), SMARTROUTING_ADMIN_KEY, ...;
`--help` of each subcommand lists them with their defaults. `convert` prints the result as
JSON and exits 0, or prints `{"error", "detail"}` to stderr and exits 1; a bad setting
exits 2 with one line on stderr.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Mapping, Sequence

from smartrouting import config as toolkit
from uploader.config import ConvertConfig, ServeConfig, UploaderConfig, batch_delay

_COMMANDS: dict[str, tuple[type[ConvertConfig] | type[ServeConfig], str]] = {
    "convert": (ConvertConfig, "convert one model and publish it"),
    "serve": (ServeConfig, "run the HTTP service"),
}


def build_parsers() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The top-level parser and the parser of each subcommand, by name."""
    parser = toolkit.build_parser(
        UploaderConfig, prog="python -m uploader", description=__doc__.split("\n")[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    subparsers = {}
    for name, (cls, summary) in _COMMANDS.items():
        sub = commands.add_parser(name, help=summary, description=cls.__doc__)
        subparsers[name] = toolkit.add_arguments(sub, cls)
    return parser, subparsers


def parse(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> tuple[UploaderConfig, ConvertConfig | ServeConfig]:
    """The shared options and the subcommand's config; exits 2 on a bad setting."""
    parser, subparsers = build_parsers()
    flags = vars(parser.parse_args(argv))
    sub = subparsers[flags["command"]]
    try:
        common = toolkit.load(UploaderConfig, flags, environ)
        command = toolkit.load(_COMMANDS[flags["command"]][0], flags, environ)
    except toolkit.ConfigError as exc:
        toolkit.fail(sub, exc)
    return common, command


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    common, config = parse(argv)
    logging.basicConfig(
        level=common.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if isinstance(config, ConvertConfig):
        return _convert(config)
    import uvicorn

    from uploader.service import create_app

    app = create_app(
        config.repository,
        local_roots=config.models_dir,
        max_concurrent=config.max_concurrent,
        admin_key=config.admin_key,
        batch_delay_ms=batch_delay(config),
    )
    uvicorn.run(app, host=config.host, port=config.port, log_level=common.log_level)
    return 0


def _convert(config: ConvertConfig) -> int:
    from uploader.convert import convert_model
    from uploader.errors import UploaderError

    try:
        result = convert_model(
            config.model_id,
            config.repository,
            model_name=config.model_name,
            max_batch_size=config.max_batch_size,
            overwrite=config.overwrite,
            batch_delay_ms=batch_delay(config),
        )
    except UploaderError as exc:
        print(json.dumps(exc.to_json()), file=sys.stderr)
        return 1
    print(json.dumps({"status": "success", "path": str(result.path), **result.to_json()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
