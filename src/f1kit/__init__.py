"""f1kit: composition of the blocks into F1, recipes and the command line."""

__version__ = "0.1.0"

__all__ = ["__version__"]
