"""The handwriting GAN (Alonso, Moysset & Messina, ICDAR 2019)."""
from .word_generator import WordGenerator

__all__ = ["WordGenerator"]
