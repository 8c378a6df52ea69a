"""A graceful stop on SIGINT/SIGTERM, shared by the recognizer's and the GAN's training loops."""
from __future__ import annotations

import signal
import threading

import torch

from .distributed import all_reduce_sum


class StopRequest:
    """SIGINT/SIGTERM ask the loop to finish its step, checkpoint and return; a second one
    interrupts at once. Under DDP the ranks agree (all-reduce) on the step to stop after,
    since the final checkpoint is a collective. Handlers are installed only in the main
    thread (Python's rule) and restored on exit."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.requested = False
        self._previous: dict = {}

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def agreed(self) -> bool:
        if torch.distributed.is_available() and torch.distributed.is_initialized() \
                and torch.distributed.get_world_size() > 1:
            return all_reduce_sum([int(self.requested)])[0] > 0
        return self.requested

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
