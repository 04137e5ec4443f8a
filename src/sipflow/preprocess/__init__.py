"""Preprocessing stages: from raw detector counts to a centred, masked pattern."""

from ..physics import checked_counts, measurement_coherence  # kept here for plugins
from ._standard import Standard, StandardParams, truth_on_grid
from ._validate import precheck_counts

__all__ = ["Standard", "StandardParams", "checked_counts", "measurement_coherence",
           "precheck_counts", "truth_on_grid"]
