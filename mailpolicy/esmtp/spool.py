"""Where the filter keeps a message while it works on it: in memory up to
`limits.filter_spool_threshold` bytes and while fewer than `limits.filter_messages_in_memory`
messages are in memory, else in an unnamed file of the spool directory (O_TMPFILE: nothing is
left behind by a crash), read back through mmap (page cache, not the process's own memory)."""

from __future__ import annotations

import io
import mmap
import os
import tempfile
from pathlib import Path
from typing import BinaryIO

SMALL = 64 * 1024  # a spooled message this small is read back as bytes (no mmap)

Content = bytes | mmap.mmap  # what a filter step sees as the message


class MemoryBudget:
    """How many messages may be held in memory at once (the rest are spooled)."""

    def __init__(self, max_messages: int) -> None:
        self.max_messages = max_messages
        self.in_memory = 0

    def take(self) -> bool:
        if self.in_memory >= self.max_messages:
            return False
        self.in_memory += 1
        return True

    def give_back(self) -> None:
        self.in_memory -= 1


class SpoolBuffer:
    """A write-only sink for one message's DATA (DataDecoder writes to it), then take() for
    the message and release() when done with it (always: it gives back the memory slot)."""

    def __init__(self, directory: Path, threshold: int, budget: MemoryBudget) -> None:
        self.directory = directory
        self.threshold = threshold
        self.budget = budget
        self.holds_slot = budget.take()
        self.memory: io.BytesIO | None = io.BytesIO() if self.holds_slot else None
        self.file: BinaryIO | None = None if self.holds_slot else self._new_file()

    @property
    def spooled(self) -> bool:
        return self.file is not None

    def _new_file(self) -> BinaryIO:
        return tempfile.TemporaryFile(dir=self.directory)  # closed in release()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self.memory is not None:
            self.memory.write(data)
            if self.memory.tell() > self.threshold:
                self._spill()
        else:
            assert self.file is not None
            self.file.write(data)

    def _spill(self) -> None:
        """Too big for memory: to a file from now on, and the memory slot is free again."""
        assert self.memory is not None
        self.file = self._new_file()
        self.file.write(self.memory.getbuffer())
        self.memory = None
        self._give_back()

    def take(self) -> Content:
        """The message: bytes (from memory without a copy, or a small file) or a read-only
        mmap of the spool file."""
        if self.memory is not None:
            data, self.memory = self.memory.getvalue(), io.BytesIO()
            return data
        assert self.file is not None
        self.file.flush()
        size = os.fstat(self.file.fileno()).st_size
        if size <= SMALL:
            self.file.seek(0)
            return self.file.read()
        return mmap.mmap(self.file.fileno(), 0, access=mmap.ACCESS_READ)

    def _give_back(self) -> None:
        if self.holds_slot:
            self.holds_slot = False
            self.budget.give_back()

    def release(self) -> None:
        """Done with the message (an mmap from take() stays readable until dropped)."""
        self._give_back()
        self.memory = None
        if self.file is not None:
            self.file.close()
            self.file = None
