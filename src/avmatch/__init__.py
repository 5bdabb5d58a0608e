"""avmatch: find which audio belongs to which silent video."""

__version__ = "0.1.0"
