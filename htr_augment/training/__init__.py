"""Trainer plumbing shared by the recognizer and the GAN: checkpoints, distribution, seeding, logging."""
from .checkpoint import (CHECKPOINT_FORMAT, CheckpointError, check_alphabet, load_checkpoint, make_checkpoint,
                         save_checkpoint)
from .distributed import (DistInfo, all_gather_objects, all_reduce_sum, barrier, broadcast_object,
                          cleanup_distributed, get_rank, get_world_size, init_distributed, is_distributed,
                          is_main_process, select_device)
from .metrics_logger import MetricsLogger, read_metrics_csv
from .seeding import rng_state, seed_everything, set_rng_state
from .stop import StopRequest, ignore_sigint

__all__ = [
    "CHECKPOINT_FORMAT", "CheckpointError", "DistInfo", "MetricsLogger", "all_gather_objects", "all_reduce_sum",
    "barrier", "broadcast_object", "check_alphabet", "cleanup_distributed", "get_rank", "get_world_size",
    "init_distributed", "is_distributed", "is_main_process", "load_checkpoint", "make_checkpoint",
    "StopRequest", "ignore_sigint", "read_metrics_csv", "rng_state", "save_checkpoint", "seed_everything",
    "select_device", "set_rng_state",
]
