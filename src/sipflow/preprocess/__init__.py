"""Preprocessing stages: from raw detector counts to a centred, masked pattern."""

from ._standard import Standard, StandardParams
from ._validate import checked_counts

__all__ = ["Standard", "StandardParams", "checked_counts"]
