"""`python -m worker`: a thin CLI over worker.config and worker.runtime."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Sequence

from worker.config import parse_config
from worker.errors import EngineUnavailableError
from worker.runtime import serve


def main(argv: Sequence[str] | None = None) -> int:
    """Parse flags (over environment variables), run the worker, return its exit code.

    A bad setting exits 2 with one line on stderr (worker.config.parse_config).
    """
    config = parse_config(argv)
    logging.basicConfig(
        level=config.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # Health probes of tritonserver would flood the log at INFO.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        return asyncio.run(serve(config))
    except EngineUnavailableError as exc:
        logging.getLogger("worker").error("engine failed to start: %s", exc)
        return 3


if __name__ == "__main__":
    sys.exit(main())
