"""Test helpers for sipflow and its plugin authors (in the spirit of ``xarray.testing``).

A third-party stage gets the same checks as the built-ins::

    from sipflow.testing import assert_stage_contract
    from my_plugin import MyStage

    def test_contract():
        assert_stage_contract(MyStage)

and groups, constraints and readers theirs: :func:`assert_group_contract`,
:func:`assert_constraint_contract`, :func:`assert_reader_contract`; a beamline preset is
checked against xrayutilities by :func:`assert_beamline`, and :func:`write_spec_scan`
writes a SPEC scan with its frame folder as a beamline does.

Fixtures (registered through the ``pytest11`` entry point): ``sipflow_dataset_2d``,
``sipflow_dataset_3d`` (small simulated datasets, noiseless, with truth) and
``sipflow_registry`` (a freshly built plugin registry).
"""

from ._beamline import assert_beamline, write_spec_scan
from ._contracts import (
    assert_constraint_contract,
    assert_group_contract,
    assert_reader_contract,
    refine_problem,
)
from ._datasets import simulated_dataset
from ._stage import assert_outputs, assert_params_contract, assert_stage_contract

__all__ = ["assert_beamline", "assert_constraint_contract", "assert_group_contract",
           "assert_outputs", "assert_params_contract", "assert_reader_contract",
           "assert_stage_contract", "refine_problem", "simulated_dataset", "write_spec_scan"]
