"""Output streams that survive their reader going away (``irtpeer score ... 2>&1 | head``).

When the reader of a pipe exits, the next write raises ``BrokenPipeError``. Raised from a
progress line in the middle of a fit, it would end the command with its work half done and its
files unwritten. :func:`keep_working_when_the_reader_goes` wraps ``sys.stdout`` and
``sys.stderr`` so that such a write sends the stream to ``/dev/null`` instead and the command
finishes its work (what it writes to files is complete; what the reader no longer wants is
dropped).
"""

from __future__ import annotations

import os
import sys


class _ReaderMayGo:
    """A text stream whose writes and flushes go to /dev/null once its reader has gone."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, text):
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            self._to_devnull()
            return len(text)

    def flush(self):
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._to_devnull()

    def _to_devnull(self):
        null = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(null, self._stream.fileno())
        finally:
            os.close(null)

    def __getattr__(self, name):
        return getattr(self._stream, name)


def keep_working_when_the_reader_goes() -> None:
    """Wrap ``sys.stdout`` and ``sys.stderr`` (once) for a process that is the command."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is not None and not isinstance(stream, _ReaderMayGo):
            setattr(sys, name, _ReaderMayGo(stream))
