"""Benchmark of random versus routed dispatch (docs/architecture.md §8).

Modules: `trace` (the seeded traffic), `bounds` (Belady's lower bound on misses),
`summary` (the report in the original system's format), `charts` (PNG charts),
`cluster` (a local dispatcher + workers as child processes), `producers` (the
HTTP load generators), `swarm` (many SIMULATED protocol workers in one process,
for scale runs), `models` (real models prepared for the labels), `runner` (one
benchmark run end to end), `demo` (the project's main command) and `errors`.
"""
