"""A graceful stop on SIGINT/SIGTERM or a time limit, shared by the recognizer's and the GAN's training loops."""
from __future__ import annotations

import signal
import threading
import time

import torch

from .distributed import all_reduce_sum


def check_time_limit(seconds: float | None, name: str = "time limit") -> None:
    """None (no limit) or a positive number of seconds; a clear error otherwise."""
    if seconds is not None and seconds <= 0:
        raise ValueError(f"{name} {seconds}: give a positive number of seconds")


class StopRequest:
    """SIGINT/SIGTERM ask the loop to finish its step, checkpoint and return; a second one
    interrupts at once. Under DDP the ranks agree (all-reduce) on the step to stop after,
    since the final checkpoint is a collective. Handlers are installed only in the main
    thread (Python's rule) and restored on exit. time_limit (seconds from now) asks for the same
    stop once it has passed (a lease or a job slot that ends: the run stops with a checkpoint
    instead of being killed between two)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, time_limit: float | None = None):
        check_time_limit(time_limit)
        self.requested = False
        self.deadline = None if time_limit is None else time.monotonic() + time_limit
        self._previous: dict = {}

    @property
    def timed_out(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def agreed(self) -> bool:
        local = self.requested or self.timed_out
        if torch.distributed.is_available() and torch.distributed.is_initialized() \
                and torch.distributed.get_world_size() > 1:
            return all_reduce_sum([int(local)])[0] > 0
        return local

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            for s in self.SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)


def ignore_sigint(worker_id: int) -> None:
    """DataLoader worker_init_fn: Ctrl-C reaches the whole process group; workers keep serving
    batches while the main process finishes its step and checkpoints."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
