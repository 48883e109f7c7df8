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
import os
import sys
from collections.abc import Mapping, Sequence

from smartrouting import config as toolkit
from smartrouting.logs import configure_logging
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
    configure_logging(common.log_level, common.log_format)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    quiet_progress_bars()
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
    # log_config=None: uvicorn's lines go through the handler configure_logging installed.
    uvicorn.run(
        app, host=config.host, port=config.port, log_level=common.log_level, log_config=None
    )
    return 0


def quiet_progress_bars() -> None:
    """No tqdm bars (downloads, shards, batches): their `\r` redraws garble a log file and a
    log collector. The variables are read when huggingface_hub, transformers and tqdm are
    imported, which happens later (the conversion imports them lazily)."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")
    if "huggingface_hub" in sys.modules:  # imported already: switch its bars off directly
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()


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
