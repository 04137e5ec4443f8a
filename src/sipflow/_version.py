"""The version of sipflow (one place; the package and provenance read it)."""

__version__ = "0.1.0"
