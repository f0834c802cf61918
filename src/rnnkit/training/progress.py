"""The trainer's status line: redrawn in place on a terminal, a line now and then in a log."""

from __future__ import annotations

import math
import sys
import time


class Progress:
    """One status line, redrawn in place on a terminal, printed now and then otherwise."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.interval = 0.5 if self.tty else 30.0
        self.shown = -math.inf

    def show(self, text: str) -> None:
        now = time.monotonic()
        if now - self.shown >= self.interval:
            self.shown = now
            self.stream.write(f"\r{text}\033[K" if self.tty else text + "\n")
            self.stream.flush()

    def line(self, text: str) -> None:
        self.stream.write(("\r\033[K" if self.tty else "") + text + "\n")
        self.stream.flush()


def clock(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
