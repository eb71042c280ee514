"""SIGTERM handled as Ctrl-C.

What schedulers send (``scancel``, ``kill``, ``docker stop``) must run the same cleanup
(``finally`` blocks, context managers) as an interactive stop.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator


def signal_name(signum: int) -> str:
    """``SIGTERM`` for 15; ``signal 99`` for a number with no name."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def in_main_thread() -> bool:
    """Signal handlers can only be set from the main thread."""
    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def sigterm_as_keyboard_interrupt() -> Iterator[None]:
    """While inside, SIGTERM raises KeyboardInterrupt("received SIGTERM"); restored after."""
    if not in_main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"received {signal_name(signum)}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
