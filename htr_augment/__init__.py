"""htr-augment: synthetic handwriting for HTR training."""
__version__ = "0.1.0"

from .alphabet import Alphabet, AlphabetError  # noqa: E402
from .data import CTCCollate, LmdbWordDataset, WordSample  # noqa: E402
from .fonts import FontWordDataset  # noqa: E402
from .lines import FontLineDataset, SyntheticLineDataset  # noqa: E402
from .mixing import InterleavedDataset, MixedDataset, MixingBatchSampler  # noqa: E402
from .synthetic import SyntheticWordDataset  # noqa: E402

__all__ = ["Alphabet", "AlphabetError", "CTCCollate", "FontLineDataset", "FontWordDataset", "InterleavedDataset",
           "LmdbWordDataset", "MixedDataset", "MixingBatchSampler", "SyntheticLineDataset", "SyntheticWordDataset",
           "WordSample", "__version__"]
