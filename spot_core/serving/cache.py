"""What a served prompt costs to compute once, kept across batches in a cache bounded in bytes.

A decoder-only prompt's keys and values at every layer depend on the prompt alone (prompt once,
`spot_core.prompted`): computed once, they serve every later request of that prompt. The cache keeps them per
prompt id and evicts the least recently used when the bytes it holds would pass its bound. T5 keeps the prompt
itself, on the model's device.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

import torch

from spot_core.prompted import PromptStates

V = TypeVar("V", PromptStates, torch.Tensor)


def size_of(value: PromptStates | torch.Tensor) -> int:
    """Bytes the value's tensors hold."""
    tensors = [*value.keys, *value.values] if isinstance(value, PromptStates) else [value]
    return sum(t.numel() * t.element_size() for t in tensors)


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    evictions: int = 0

    @property
    def hit_rate(self) -> float:
        """Hits over lookups; 0 before the first."""
        lookups = self.hits + self.misses
        return self.hits / lookups if lookups else 0.0


class PromptCache(Generic[V]):
    """Values by key, least recently used first out, their bytes (`size_of`) at most `max_bytes`.

    A value larger than the bound on its own is computed and returned, and not kept. `max_bytes` 0 keeps nothing.
    """

    def __init__(self, max_bytes: int):
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        self.max_bytes = max_bytes
        self.bytes = 0
        self.stats = CacheStats()
        self._items: OrderedDict[str, tuple[V, int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: str) -> bool:
        return key in self._items

    def keys(self) -> list[str]:
        """The keys held, least recently used first."""
        return list(self._items)

    def get(self, key: str, compute: Callable[[], V]) -> V:
        """The value of `key`: kept, or computed now (and kept, evicting the least recently used as needed)."""
        if key in self._items:
            self._items.move_to_end(key)
            self.stats.hits += 1
            return self._items[key][0]
        self.stats.misses += 1
        value = compute()
        size = size_of(value)
        if size > self.max_bytes:
            return value
        while self.bytes + size > self.max_bytes:
            _, (_, freed) = self._items.popitem(last=False)
            self.bytes -= freed
            self.stats.evictions += 1
        self._items[key] = (value, size)
        self.bytes += size
        return value
