"""Smart-routing dispatcher: label-aware routing of inference tasks to workers.

`create_app(config)` builds the Starlette app; `python -m dispatcher` serves it with uvicorn.
"""

from __future__ import annotations

from dispatcher.app import create_app
from dispatcher.config import Config

__all__ = ["Config", "create_app"]
