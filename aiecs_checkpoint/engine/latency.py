"""Running latency figures of the engine's storage calls (this process)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field


@dataclass
class Latency:
    """Count, mean and worst of the storage calls this process made."""

    count: int = 0
    total_s: float = 0.0
    max_s: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, seconds: float) -> None:
        with self._lock:
            self.count += 1
            self.total_s += seconds
            self.max_s = max(self.max_s, seconds)

    def snapshot(self) -> dict[str, float]:
        with self._lock:
            mean = self.total_s / self.count if self.count else 0.0
            return {
                "operations": self.count,
                "avg_response_time": mean,
                "max_response_time": self.max_s,
            }
