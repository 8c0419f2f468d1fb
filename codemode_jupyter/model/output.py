"""Output kept within a cap: the head and the tail, and a count of what was dropped between."""

from __future__ import annotations

from collections import deque


class CappedText:
    """Keeps the first and the last `limit // 2` characters of a stream of text."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._half = max(limit // 2, 1)
        self._head: list[str] = []
        self._head_size = 0
        self._tail: deque[str] = deque()
        self._tail_size = 0
        self.dropped = 0

    def append(self, text: str) -> None:
        if self._head_size < self._half:
            room = self._half - self._head_size
            self._head.append(text[:room])
            self._head_size += min(len(text), room)
            text = text[room:]
            if not text:
                return
        self._tail.append(text)
        self._tail_size += len(text)
        while self._tail_size - len(self._tail[0]) >= self._half:
            self.dropped += len(self._tail[0])
            self._tail_size -= len(self._tail.popleft())
        if self._tail_size > self._half:
            cut = self._tail_size - self._half
            self._tail[0] = self._tail[0][cut:]
            self._tail_size -= cut
            self.dropped += cut

    @property
    def size(self) -> int:
        """Characters written so far, kept or dropped."""
        return self._head_size + self._tail_size + self.dropped

    def text(self) -> str:
        head = "".join(self._head)
        tail = "".join(self._tail)
        if not self.dropped:
            return head + tail
        return f"{head}\n[... {self.dropped} characters dropped ...]\n{tail}"
