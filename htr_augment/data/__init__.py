"""The data layer: LMDB format, input readers, the dataset and its collate function."""
from .dataset import CTCCollate, LmdbWordDataset, WordSample

__all__ = ["CTCCollate", "LmdbWordDataset", "WordSample"]
