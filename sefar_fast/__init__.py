"""sefar: semi-supervised fine-grained action recognition (SeFAR), fast."""

__version__ = "0.1.0"
