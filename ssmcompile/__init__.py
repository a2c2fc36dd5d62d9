"""ssmcompile: shrink state-space models while they train."""

__version__ = "0.1.0"
