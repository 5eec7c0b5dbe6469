"""Progress of long commands where no terminal shows a bar.

rich draws its progress bars only on a terminal: a campaign run in a cluster job, under ``nohup``
or with its stderr sent to a file would say nothing for hours. There, :class:`LineProgress`
writes one plain line at most every :data:`LINE_INTERVAL_S` seconds (and a last one at the end):
``<label>: 12/1033 jobs, 0:41:07 elapsed: <what it is doing now>``.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

#: seconds between two progress lines where no terminal shows a bar
LINE_INTERVAL_S = 30.0


class LineProgress:
    """``k/n`` progress written as plain lines to ``console`` (a rich Console): one line when ``interval`` seconds have passed since the last, and one at the end."""

    def __init__(self, console: Any, label: str, total: int, interval: float | None = None, unit: str = ""):
        self.console = console
        self.label = label
        self.unit = f" {unit}" if unit else ""
        self.total = total
        self.done = 0
        self.text = ""
        self.interval = LINE_INTERVAL_S if interval is None else interval
        self.t0 = time.monotonic()
        self.last: float | None = None

    def line(self) -> str:
        elapsed = timedelta(seconds=round(time.monotonic() - self.t0))
        return f"{self.label}: {self.done}/{self.total}{self.unit}, {elapsed} elapsed" + (f": {self.text}" if self.text else "")

    def write(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or self.last is None or now - self.last >= self.interval:
            self.last = now
            self.console.print(self.line(), markup=False, highlight=False, soft_wrap=True)

    def update(self, text: str | None = None, advance: int = 0, total: int | None = None) -> None:
        if text is not None:
            self.text = text
        self.done += advance
        if total is not None:
            self.total = total
        self.write()

    def close(self) -> None:
        self.text = "done" if self.done >= self.total else self.text
        self.write(force=True)
