"""The package version (one place; read by the face, cards and the builder)."""

__version__ = "0.1.0"
