"""htr-augment: synthetic handwriting for HTR training."""
from .alphabet import Alphabet, AlphabetError
from .data import CTCCollate, LmdbWordDataset, WordSample

__version__ = "0.1.0"
__all__ = ["Alphabet", "AlphabetError", "CTCCollate", "LmdbWordDataset", "WordSample", "__version__"]
