"""Keep a command running when its output is closed (``lagdpo train ... 2>&1 | head``).

Training prints a log line per step and progress bars on stderr; once ``head`` exits, the next
write raises BrokenPipeError inside TRL's logging callback or a progress bar and would abort the
run before the model is saved. Inside `pipe_safe_output` a closed stdout or stderr is silenced
instead: the work and its files are finished.
"""

from __future__ import annotations

import contextlib
import os
import sys


class _PipeSafeStream:
    def __init__(self, stream):
        self._stream = stream
        self.broken = False

    def write(self, text: str) -> int:
        if not self.broken:
            try:
                return self._stream.write(text)
            except BrokenPipeError:
                self._silence()
        return len(text)

    def flush(self) -> None:
        if not self.broken:
            try:
                self._stream.flush()
            except BrokenPipeError:
                self._silence()

    def _silence(self) -> None:
        self.broken = True
        with contextlib.suppress(OSError, ValueError, AttributeError):
            # Point the descriptor at /dev/null so the interpreter's last flush succeeds too.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._stream.fileno())
            os.close(devnull)

    def __getattr__(self, name):
        return getattr(self._stream, name)


@contextlib.contextmanager
def pipe_safe_output():
    """Within the block, writes to a closed stdout or stderr are dropped rather than raised."""
    original = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = (_PipeSafeStream(s) for s in original)
    try:
        yield
    finally:
        sys.stdout, sys.stderr = original
