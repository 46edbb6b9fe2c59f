"""A shrinker-aware cache for applications: chunk-sized entries given back on request.

    cache = ChunkCache(k, task, "/app", chunk_size=1 << 20)
    cache.put("a")          # allocates a chunk (task.touch_anon) and reports it (+1)
    cache.get("a")          # a hit makes the entry most recently used
    ...                     # when /app reclaims and falls short, the kernel asks the
                            # cache to free chunks; it drops its least recently used ones

It speaks only the `Kernel` interface: registration with k.event(<group>/mempressure.shrinker,
<chunk size>), reports with k.write(<group>/mempressure.shrinker, "<efd> +N"), requests
through the eventfd (read by a watcher, like the shrinker thread of the 2013 test program).
"""

from __future__ import annotations

from collections import OrderedDict

from .kernel import Kernel, Task

__all__ = ["ChunkCache"]


class ChunkCache:
    """An LRU cache whose entries are chunks of the task's anonymous memory."""

    def __init__(self, kernel: Kernel, task: Task, group: str, chunk_size: int = 1 << 20,
                 shrinker: bool = True, report_every: int = 1):
        self.kernel = kernel
        self.task = task
        self.group = group.rstrip("/")
        self.chunk_size = chunk_size
        self.report_every = report_every
        self.entries: OrderedDict = OrderedDict()  # least recently used first
        self.unreported = 0
        self.requested = 0  # chunks the kernel asked for
        self.freed = 0  # chunks given back
        self.event = None
        if shrinker:
            self.event = kernel.event(f"{self.group}/mempressure.shrinker", str(chunk_size))
            self.event.watch(self.shrink)

    def __len__(self) -> int:
        return len(self.entries)

    def put(self, key) -> bool:
        """Add an entry (allocating its chunk); False if the task could not (killed)."""
        if key in self.entries:
            self.entries.move_to_end(key)
            return True
        if self.task.state != "running":
            return False
        self.task.touch_anon(self.chunk_size)
        if self.task.state != "running":
            return False
        self.entries[key] = None
        self.unreported += 1
        if self.unreported >= self.report_every:
            self.report()
        return True

    def get(self, key) -> bool:
        """Look an entry up; a hit makes it the most recently used."""
        if key not in self.entries:
            return False
        self.entries.move_to_end(key)
        return True

    def report(self) -> None:
        """Tell the kernel about chunks added since the last report ("<efd> +N")."""
        if self.event is not None and self.unreported:
            self.kernel.write(f"{self.group}/mempressure.shrinker",
                              f"{self.event.fileno()} +{self.unreported}")
        self.unreported = 0

    def shrink(self, n: int) -> None:
        """The kernel asks for n chunks: drop the least recently used entries.

        The chunk memory goes back with free_anon (the task's oldest mappings: the bytes
        are what counts for the group).  Chunks asked for but still unreported are
        simply not reported; none is re-added, as every reported chunk can be freed.
        """
        self.requested += n
        for _ in range(min(n, len(self.entries))):
            self.entries.popitem(last=False)
            if self.unreported:
                self.unreported -= 1
            self.task.free_anon(self.chunk_size, oldest_first=True)
            self.freed += 1

    def close(self) -> None:
        """Close the shrinker eventfd: the kernel unregisters the cache."""
        if self.event is not None:
            self.event.close()
            self.event = None
