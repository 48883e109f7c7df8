"""Reference cache policies on ONE pooled cache, replayed over a label sequence.

Plain objects, no I/O: each cache answers `access(label) -> hit` and evolves its
state; `miss_flags` replays a whole sequence. They are the references a routed
cluster's misses are compared with (see `benchmark.references`), not the worker's
own cache.

Modules: `base` (the `Cache` protocol and `miss_flags`), `lru` (least recently
used), `lfu` (least frequently used, counts of resident labels only), `sketch`
(TinyLFU's count-min frequency sketch with halving, and its doorkeeper) and
`wtinylfu` (Window TinyLFU).
"""

from __future__ import annotations

from benchmark.caches.base import Cache, miss_flags
from benchmark.caches.lfu import LfuCache
from benchmark.caches.lru import LruCache
from benchmark.caches.sketch import FrequencySketch
from benchmark.caches.wtinylfu import WTinyLfuCache

__all__ = ["Cache", "FrequencySketch", "LfuCache", "LruCache", "WTinyLfuCache", "miss_flags"]
