"""dlsetup: turn a box of parts into a verified deep-learning machine."""

__version__ = "0.1.0"
