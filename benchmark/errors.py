"""Exceptions of the benchmark package.

Tree::

    BenchmarkError
     ├── ClusterError            a child process failed to start, died, or never got ready
     │    └── ClusterNotReady    /health or /workers did not answer as expected in time
     ├── ModelPrepError          converting or registering the real models failed
     ├── RunError                a benchmark run could not produce results
     └── DemoError               a step of `python -m benchmark demo` failed
"""

from __future__ import annotations


class BenchmarkError(Exception):
    """Base of every error the benchmark raises."""


class ClusterError(BenchmarkError):
    """A child process of the local cluster failed to start, died, or never got ready."""


class ClusterNotReady(ClusterError):
    """The cluster did not become ready (health, all workers registered) in time."""


class ModelPrepError(BenchmarkError):
    """Converting the real model or registering it under the labels failed."""


class RunError(BenchmarkError):
    """A benchmark run could not produce results."""


class DemoError(BenchmarkError):
    """A step of the demo failed; the message says which and why."""
