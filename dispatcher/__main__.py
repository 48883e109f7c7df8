"""`python -m dispatcher`: serve the dispatcher with uvicorn (flags mirror DISPATCHER_* vars)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from dispatcher.config import config_from_args, open_workers_refusal
from dispatcher.server import DispatcherServer, absorb_exit_signals, tune_garbage_collector
from smartrouting.logs import configure_logging


def main(argv: Sequence[str] | None = None) -> int:
    """Parse flags, build the app and serve it until SIGINT/SIGTERM."""
    config = config_from_args(argv)
    refusal = open_workers_refusal(config)
    if refusal is not None:
        print(f"python -m dispatcher: error: {refusal}", file=sys.stderr)
        return 2
    configure_logging(config.log_level, config.log_format)
    server = DispatcherServer(config)
    absorb_exit_signals()
    tune_garbage_collector()
    server.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
