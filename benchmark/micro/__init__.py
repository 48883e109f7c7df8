"""The dispatcher micro-benchmark, one module per part; `benchmark.dispatcher_micro` is its CLI.

- `peers`: no-op protocol workers that answer every Task at once, over real websockets.
- `clients`: a bare keep-alive HTTP/1.1 client, beside httpx, to see past the client's cost.
- `load`: concurrent (or paced) callers and the latency figures they measure.
- `decisions`: the cost of one routing decision of the pure policy (timeit).
- `runner`: the dispatcher child process and the measurement plan over it.
- `report`: tables and the JSON report.
"""
