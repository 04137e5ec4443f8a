"""Reliability round 3: the defects fixed so far, each with the test that failed before."""

from __future__ import annotations

import subprocess
import sys

import pytest

from sipflow._watch import candidates
from sipflow.pipeline import Pipeline


def test_a_scan_named_with_data_in_it_is_watched_but_eiger_data_files_are_not(tmp_path):
    """Defect 5: any file with ``_data_`` in its name was silently ignored."""
    for name in ("run_data_scan.h5", "my_data_7.h5", "scan_data_000001.h5", "scan_master.h5"):
        (tmp_path / name).write_bytes(b"")
    found = [p.name for p in candidates(tmp_path, "*.h5")]
    assert found == ["my_data_7.h5", "run_data_scan.h5", "scan_master.h5"]


def test_a_closed_reader_of_the_output_is_not_an_error(tmp_path):
    """Defect 22: ``sipflow ... --json | head -c 10`` exited 2 with "Broken pipe"."""
    proc = subprocess.Popen([sys.executable, "-m", "sipflow.cli", "stages", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader goes away before sipflow writes
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()
    assert b"Broken pipe" not in err and b"Traceback" not in err and b"Exception" not in err


def test_a_pipeline_file_whose_name_holds_a_newline_is_read_as_a_file(tmp_path):
    """Defect 25: such a path was parsed as YAML text."""
    path = tmp_path / "two\nlines.yaml"
    path.write_text("name: odd\nstages:\n  - use: prep.standard\n")
    pipe = Pipeline.load(str(path))
    assert pipe.name == "odd" and pipe.origin == str(path.resolve())
    text = Pipeline.load("name: inline\nstages:\n  - use: prep.standard\n")
    assert text.name == "inline" and text.origin == "<memory>"
    with pytest.raises(Exception, match="pipeline file not found"):
        Pipeline.load(str(tmp_path / "missing.yaml"))
