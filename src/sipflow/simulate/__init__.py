"""Simulated coherent-diffraction scans with a known truth, written as real HDF5 files."""

from ._objects import SHAPES, make_object
from ._scan import Simulation, simulate, write_scan

__all__ = ["SHAPES", "Simulation", "make_object", "simulate", "write_scan"]
