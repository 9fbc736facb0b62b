"""The console is best effort: results never depend on it.

    with console.guarded() as streams:     # run_cli: a command's body runs inside
        ...                                # print() as usual
    streams.lost                           # why output was dropped (None: all of it shown)

Inside, sys.stdout and sys.stderr are streams that never raise: a closed stdout (`>&-`, None),
a broken pipe (`| head -1`), a full device (`>/dev/full`) or an encoding the text does not fit
(an ASCII locale, a path with non-UTF-8 bytes: shown with backslash escapes) drop or escape
the text instead of ending the command in a traceback; control characters (ESC sequences, a
carriage return in a path) are shown escaped (printable), never sent to the terminal. Once a stream has failed its file
descriptor is pointed at /dev/null, so that nothing fails again at interpreter exit. This
module imports nothing from the project.
"""
from __future__ import annotations

import contextlib
import io
import os
import re
import sys

_SGR = re.compile(r"\\x1b(\[[0-9;]*m)")


def printable(text, keep=""):
    """text safe for any medium's one line: control characters (ESC, newline, carriage
    return ...) as backslash escapes, bytes a path could not decode (surrogates) as \\xNN;
    keep: characters left as they are (e.g. newline and tab for a whole document)."""
    text = str(text)
    if text.isprintable():
        return text
    out = []
    for ch in text:
        o = ord(ch)
        if ch in keep or ch.isprintable():
            out.append(ch)
        elif 0xDC80 <= o <= 0xDCFF:
            out.append(f"\\x{o - 0xDC00:02x}")
        elif o <= 0xFF:
            out.append({"\n": "\\n", "\t": "\\t", "\r": "\\r"}.get(ch, f"\\x{o:02x}"))
        else:
            out.append(f"\\u{o:04x}")
    return "".join(out)


class _BestEffort(io.TextIOBase):
    """A text stream that forwards to `stream` while it can take the text, then drops it."""

    def __init__(self, stream, name):
        super().__init__()
        self.stream, self.name = stream, name
        self.lost = None if stream is not None else "closed"

    def write(self, text):
        """Forward text (escaped where the stream's encoding cannot hold it); never raises."""
        if self.lost is None:
            try:
                try:
                    self.stream.write(self._safe(text))
                except UnicodeEncodeError:
                    enc = getattr(self.stream, "encoding", None) or "ascii"
                    self.stream.write(text.encode(enc, "backslashreplace").decode(enc))
            except (OSError, ValueError) as e:
                self._fail(e)
        return len(text)

    def _safe(self, text):
        """text with control characters escaped; on a terminal the tool's own colour codes
        (SGR: ESC [ digits m) stay, nothing else (no screen clearing, no window title)."""
        text = printable(text, keep="\n\t")
        return _SGR.sub(lambda m: "\x1b" + m.group(1), text) if self.isatty() else text

    def flush(self):
        """Flush; never raises."""
        if self.lost is None:
            try:
                self.stream.flush()
            except (OSError, ValueError) as e:
                self._fail(e)

    def _fail(self, e):
        """Remember why, and point the descriptor at /dev/null (nothing fails at exit)."""
        self.lost = getattr(e, "strerror", None) or str(e) or type(e).__name__
        with contextlib.suppress(OSError, ValueError, AttributeError):
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, self.stream.fileno())
            os.close(null)

    def isatty(self):
        """Whether the stream is a terminal."""
        return self.lost is None and bool(getattr(self.stream, "isatty", lambda: False)())

    def fileno(self):
        """The stream's descriptor (OSError when it has none)."""
        if self.stream is None:
            raise io.UnsupportedOperation("no console")
        return self.stream.fileno()

    @property
    def encoding(self):
        """The stream's encoding."""
        return getattr(self.stream, "encoding", None) or "utf-8"

    def writable(self):
        """Always writable (text may be dropped)."""
        return True


class Streams:
    """The guarded stdout and stderr of a command."""

    def __init__(self):
        self.out = _BestEffort(sys.stdout, "stdout")
        self.err = _BestEffort(sys.stderr, "stderr")

    @property
    def lost(self):
        """Why console output was dropped ('stdout: Broken pipe'), or None."""
        why = [f"{s.name}: {s.lost}" for s in (self.out, self.err) if s.lost]
        return "; ".join(why) or None


@contextlib.contextmanager
def guarded():
    """sys.stdout / sys.stderr best effort for the block (restored after)."""
    old = sys.stdout, sys.stderr
    streams = Streams()
    sys.stdout, sys.stderr = streams.out, streams.err
    try:
        yield streams
    finally:
        streams.out.flush()
        streams.err.flush()
        sys.stdout, sys.stderr = old
