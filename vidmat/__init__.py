"""vidmat: separate people from their background in video, live or offline."""

__version__ = "0.1.0"
