"""What every benchmark shares: CPU of process trees, machine load, and one way to present
interleaved repetitions (median [min-max] per target, paired ratios against the anchor)."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int | str) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def tree_cpu(root: int) -> float:
    """CPU seconds (user + system) of `root` and every live descendant, plus what their
    reaped children used (cutime/cstime): the whole server, whatever it forks."""
    parents: dict[int, int] = {}
    times: dict[int, int] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        f = _stat(d.name)
        if f is None:
            continue
        pid = int(d.name)
        parents[pid] = int(f[1])
        times[pid] = int(f[11]) + int(f[12]) + int(f[13]) + int(f[14])
    total = 0
    for pid, t in times.items():
        p = pid
        while p and p != root:
            p = parents.get(p, 0)
        if p == root:
            total += t
    return total / TICK


def rss_mib(root: int) -> float:
    """Resident memory (MiB) of `root` and its live descendants."""
    total = 0
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        f = _stat(d.name)
        if f is None or (int(d.name) != root and int(f[1]) != root):
            continue
        try:
            for line in Path(f"/proc/{d.name}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min) {five:.2f} (5 min) on {os.cpu_count()} CPUs"


def spread(values: Sequence[float], fmt: str = "{:.0f}") -> str:
    """`median [min-max]`."""
    if not values:
        return "-"
    return (f"{fmt.format(statistics.median(values))} "
            f"[{fmt.format(min(values))}-{fmt.format(max(values))}]")


@dataclass
class Cell:
    """The repetitions of one target in one cell: rates and server CPU per unit of work."""

    rates: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)  # ms (or µs) of server CPU per unit
    extra: dict[str, list[float]] = field(default_factory=dict)


class Report:
    """Results of interleaved repetitions: report.add(cell, target, rate, cpu) for each run,
    then print_table(); ratios are per repetition (same rep of target and anchor), then the
    median [min-max] of those."""

    def __init__(self, title: str, anchor: str, unit: str = "msgs/s",
                 cpu_unit: str = "ms/msg") -> None:
        self.title, self.anchor, self.unit, self.cpu_unit = title, anchor, unit, cpu_unit
        self.cells: dict[str, dict[str, Cell]] = {}
        self.targets: list[str] = []
        self.load_before = load()
        self.started = time.monotonic()

    def add(self, cell: str, target: str, rate: float, cpu: float | None = None,
            **extra: float) -> Cell:
        if target not in self.targets:
            self.targets.append(target)
        c = self.cells.setdefault(cell, {}).setdefault(target, Cell())
        c.rates.append(rate)
        if cpu is not None:
            c.cpu.append(cpu)
        for k, v in extra.items():
            c.extra.setdefault(k, []).append(v)
        return c

    def ratios(self, cell: str, target: str, anchor: str | None = None) -> list[float]:
        """target/anchor per repetition (the anchor: the report's own unless given)."""
        a = self.cells[cell].get(anchor or self.anchor)
        t = self.cells[cell].get(target)
        if a is None or t is None:
            return []
        return [x / y for x, y in zip(t.rates, a.rates, strict=False) if y]

    def print_table(self, extra_cols: Sequence[tuple[str, str, str]] = ()) -> None:
        """One Markdown table: per cell and target the rate, the paired ratio to the anchor,
        the server CPU per unit, and `extra_cols` (key, header, format) from Cell.extra."""
        print(f"\n{self.title}\nanchor: {self.anchor}; every figure: median [min-max] of the "
              f"repetitions; ratio: target/anchor per repetition (paired)")
        head = ["cell", "target", self.unit, "ratio", f"server CPU {self.cpu_unit}",
                *(h for _, h, _ in extra_cols)]
        print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
        for cell, by_target in self.cells.items():
            for target in self.targets:
                c = by_target.get(target)
                if c is None:
                    continue
                ratio = "-" if target == self.anchor else spread(self.ratios(cell, target),
                                                                 "{:.2f}") + "x"
                cols = [cell, target, spread(c.rates), ratio, spread(c.cpu, "{:.2f}")]
                cols += [spread(c.extra.get(k, []), fmt) for k, _, fmt in extra_cols]
                print("| " + " | ".join(cols) + " |")
        print(f"machine: before {self.load_before}; after {load()}; "
              f"{time.monotonic() - self.started:.0f} s", flush=True)

    def print_pairs(self, pairs: Sequence[tuple[str, str]]) -> None:
        """A second Markdown table: per cell, each (target, anchor) pair's paired ratio and
        both server CPUs per unit (for a target measured against a second anchor)."""
        print("\nsecond anchors; ratio: target/anchor per repetition (paired), median [min-max]")
        head = ["cell", "target / anchor", "ratio", f"server CPU {self.cpu_unit} target",
                "anchor"]
        print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
        for cell, by_target in self.cells.items():
            for target, anchor in pairs:
                t, a = by_target.get(target), by_target.get(anchor)
                if t is None or a is None:
                    continue
                print(f"| {cell} | {target} / {anchor} | "
                      f"{spread(self.ratios(cell, target, anchor), '{:.2f}')}x | "
                      f"{spread(t.cpu, '{:.2f}')} | {spread(a.cpu, '{:.2f}')} |")


async def serve_filter(flt: Any, port_file: str) -> None:
    """Serve mailpolicy's content filter `flt` on a free loopback port, written to
    `port_file` for the parent, until SIGTERM."""
    import asyncio
    import signal

    from mailpolicy.smtp.server import FilterSMTP

    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: FilterSMTP(flt, loop=loop), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    await asyncio.to_thread(Path(port_file).write_text, str(port))
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    server.close()
