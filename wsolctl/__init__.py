"""wsolctl: weakly-supervised object localization in histology."""
__version__ = "0.1.0"
