"""Test helpers for sipflow and its plugin authors (in the spirit of ``xarray.testing``).

A third-party stage gets the same checks as the built-ins::

    from sipflow.testing import assert_stage_contract
    from my_plugin import MyStage

    def test_contract():
        assert_stage_contract(MyStage)

and groups, constraints and readers theirs: :func:`assert_group_contract`,
:func:`assert_constraint_contract`, :func:`assert_reader_contract`.

Fixtures (registered through the ``pytest11`` entry point): ``sipflow_dataset_2d``,
``sipflow_dataset_3d`` (small simulated datasets, noiseless, with truth) and
``sipflow_registry`` (a freshly built plugin registry).
"""

from ._contracts import (
    assert_constraint_contract,
    assert_group_contract,
    assert_reader_contract,
    refine_problem,
)
from ._datasets import simulated_dataset
from ._stage import assert_outputs, assert_params_contract, assert_stage_contract

__all__ = ["assert_constraint_contract", "assert_group_contract", "assert_outputs",
           "assert_params_contract", "assert_reader_contract", "assert_stage_contract",
           "refine_problem", "simulated_dataset"]
