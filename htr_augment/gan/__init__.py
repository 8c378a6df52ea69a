"""The handwriting GAN (Alonso, Moysset & Messina, ICDAR 2019)."""
