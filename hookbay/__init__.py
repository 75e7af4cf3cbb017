"""hookbay: a self-hosted webhook data collector."""

__version__ = "0.1.0"
