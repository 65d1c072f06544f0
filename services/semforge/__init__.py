"""semforge: particle size and shape statistics from electron micrographs."""

__version__ = "0.1.0"
