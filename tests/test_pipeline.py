"""Pipeline files are validated before any data is read, with helpful messages."""

import pytest

import sipflow
from sipflow.errors import PipelineError
from sipflow.pipeline import Pipeline


def test_templates_are_addressable_by_name():
    for name in ("default", "cdi", "bcdi"):
        pipe = Pipeline.load(name)
        assert pipe.name == name
        assert "analyse.metrics" in [s.stage.name for s in pipe.steps]
    # Bragg CDI ends with the crystal's physics, after the figures of merit of phasing
    assert [s.stage.name for s in Pipeline.load("bcdi").steps][-3:] == [
        "analyse.metrics", "bragg.orthogonalize", "bragg.strain"]


def test_yaml_file_and_dict(tmp_path):
    p = tmp_path / "p.yaml"
    p.write_text("stages:\n  - use: prep.standard\n    with: {threshold: 2}\n")
    pipe = Pipeline.load(p)
    assert pipe.steps[0].params.threshold == 2
    assert Pipeline.load({"stages": ["prep.standard"]}).steps[0].stage.name == "prep.standard"


def test_invalid_yaml_names_the_line(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("stages:\n  - use: prep.standard\n    with: {threshold: [\n")
    with pytest.raises(PipelineError, match=r"bad\.yaml: invalid YAML at line \d"):
        Pipeline.load(p)


def test_unknown_stage_suggests_nearest():
    with pytest.raises(PipelineError, match=r"unknown stage 'phase.clasic'.*'phase.classic'"):
        Pipeline.load({"stages": [{"use": "phase.clasic"}]})


def test_unknown_parameter_suggests_nearest():
    with pytest.raises(PipelineError, match=r"unknown parameter 'rusn'.*'runs'"):
        Pipeline.load({"stages": [{"use": "phase.classic", "with": {"rusn": 3}}]})


@pytest.mark.parametrize("params, message", [
    ({"runs": 0}, r"runs: Input should be greater than or equal to 1 \(got 0\)"),
    ({"beta": 1.5}, "beta: Input should be less than 1"),
    ({"schedule": "HIO**"}, "whole number"),
    ({"support_threshold": [0.5, 0.2]}, "low <= high"),
])
def test_parameters_out_of_range(params, message):
    with pytest.raises(PipelineError, match=message):
        Pipeline.load({"stages": [{"use": "phase.classic", "with": params}]})


def test_unknown_template_and_keys():
    with pytest.raises(PipelineError, match=r"unknown pipeline template 'defualt'.*'default'"):
        Pipeline.load("defualt")
    with pytest.raises(PipelineError, match=r"unknown top-level key\(s\) \['stage'\]"):
        Pipeline.load({"stage": []})
    with pytest.raises(PipelineError, match="non-empty list"):
        Pipeline.load({"stages": []})


def test_pipeline_is_checked_before_data_is_read(tmp_path):
    with pytest.raises(PipelineError, match="unknown stage"):
        sipflow.run_pipeline({"stages": ["nope.stage"]}, tmp_path / "does-not-exist.h5")
