"""The optimum_depth version (read by packaging and recorded in every saved artifact)."""

__version__ = "0.3.0"
