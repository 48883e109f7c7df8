"""Toolkits shared by the dispatcher, the worker, the uploader and the benchmark.

Nothing here knows about routing: typed configuration from flags and environment
(`smartrouting.config`), child processes and ports (`smartrouting.processes`), the rules of
task parameters that both the dispatcher and the worker apply (`smartrouting.texts`).
See docs/architecture.md.
"""
