"""CTC handwriting recognizer (CRNN after Retsinas et al. 2022): model, augmentation, decoding, training."""
from .augment import AugmentedDataset, Augmenter
from .config import DEFAULTS, load_recognizer_config, make_config
from .decoding import greedy_decode
from .model import CRNN, RecognizerOutput, load_recognizer

__all__ = ["CRNN", "DEFAULTS", "AugmentedDataset", "Augmenter", "RecognizerOutput", "greedy_decode",
           "load_recognizer", "load_recognizer_config", "make_config"]
