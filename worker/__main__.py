"""`python -m worker`: a thin CLI over worker.config and worker.runtime."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Sequence

from smartrouting.logs import configure_logging
from worker.config import parse_config
from worker.errors import ConfigError, EngineUnavailableError
from worker.runtime import serve


def main(argv: Sequence[str] | None = None) -> int:
    """Parse flags (over environment variables), run the worker, return its exit code.

    A bad setting exits 2 with one line on stderr (worker.config.parse_config).
    """
    config = parse_config(argv)
    configure_logging(config.log_level, config.log_format)
    # Health probes of tritonserver would flood the log at INFO.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        return asyncio.run(serve(config))
    except EngineUnavailableError as exc:
        logging.getLogger("worker").error("engine failed to start: %s", exc)
        return 3
    except ConfigError as exc:  # e.g. --http-port already taken
        logging.getLogger("worker").error("%s", exc)
        return 2


if __name__ == "__main__":
    sys.exit(main())
