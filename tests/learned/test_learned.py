"""Learned phase retrieval: symmetry breaking makes it learnable; checkpoints; the stage."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml

from sipflow import Context, schema
from sipflow.errors import DataError, PipelineError
from sipflow.io import open_result
from sipflow.learned import (
    LearnedModel,
    TrainConfig,
    gaussian,
    load_checkpoint,
    simulate_pairs,
    train,
)
from sipflow.simulate import Simulation, write_scan

#: a model small enough to train in seconds (only the machinery is tested with it)
TINY = TrainConfig(shape=(32, 32), samples=64, validation=16, epochs=2, width=8, depth=3,
                   batch_size=16)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny")
    result = train(TINY, out)
    return result.path


def test_gaussian_phase_retrieval_learns_only_after_symmetry_breaking():
    """The experiment of SCIENCE.md §3 at 2e4 samples: before breaking the network learns
    the average of x and -x (error near 100 %), after it learns the inverse."""
    problem = gaussian.GaussianPR(dim=5, measurements=20, seed=0)
    y, x = problem.pairs(20_000, seed=0)
    y_test, x_test = problem.pairs(2000, seed=99)
    errors = {}
    for name, targets in (("before", x), ("after", gaussian.break_symmetry(x))):
        net = gaussian.fit_mlp(y, targets, steps=2500, batch_size=256, width=128, seed=0)
        errors[name] = gaussian.relative_error(gaussian.predict_mlp(net, y_test), x_test)
        errors[f"knn {name}"] = gaussian.relative_error(
            gaussian.knn_predict(y, targets, y_test, k=5), x_test)
    assert errors["before"] > 0.6, errors
    assert errors["after"] < 0.25, errors
    assert errors["after"] < errors["before"] / 3, errors
    assert errors["knn after"] < errors["knn before"] / 2, errors


@pytest.fixture(scope="module")
def far_field_models(tmp_path_factory):
    """The same budget and pairs, with and without symmetry breaking (about 40 s on 2 cores)."""
    base = TrainConfig(shape=(32, 32), samples=1200, validation=60, epochs=6, width=16,
                       depth=4, batch_size=32, lr=3e-3, seed=1)
    out = tmp_path_factory.mktemp("far_field")
    return {broken: train(base.model_copy(update={"symmetry_break": broken}),
                          out / str(broken)) for broken in (True, False)}


@pytest.mark.slow
def test_far_field_training_with_symmetry_breaking_beats_training_without(far_field_models):
    """Canonical targets give a far lower validation error (modulo the far-field group) than
    targets left anywhere on their orbit."""
    errors = {k: v.val_error for k, v in far_field_models.items()}
    assert errors[True] < 0.75 * errors[False], errors
    assert errors[True] < 0.7, errors
    # and the unbroken model does not learn as it trains: its error stays high
    assert min(far_field_models[False].history["val_error"]) > 0.8, errors


def test_pairs_are_reproducible_and_targets_canonical():
    a = simulate_pairs(TINY, 8, seed=3)
    b = simulate_pairs(TINY, 8, seed=3)
    assert torch.equal(a.inputs, b.inputs) and torch.equal(a.targets, b.targets)
    from sipflow.symmetry import canonical

    x = torch.complex(a.targets[:, 0], a.targets[:, 1]).numpy()
    for xi in x:  # a canonical target is its own canonical form
        c = canonical(xi.astype(np.complex128)).x
        assert np.linalg.norm(c - xi) / np.linalg.norm(xi) < 1e-3
    # the input is the same for every element of the orbit: only the target moved
    raw = simulate_pairs(TINY.model_copy(update={"symmetry_break": False}), 8, seed=3)
    assert torch.allclose(raw.inputs, a.inputs)


def test_checkpoint_round_trip_and_resume_equals_one_run(tiny_model, tmp_path):
    ckpt = torch.load(tiny_model, weights_only=True)  # plain values and tensors only
    assert ckpt["format"] == "sipflow.learned.farfield" and ckpt["epoch"] == 2
    assert TrainConfig.model_validate(ckpt["config"]) == TINY
    model = LearnedModel.load(tiny_model)
    for k, v in model.net.state_dict().items():
        assert torch.equal(v, ckpt["model"][k])
    # interrupted during epoch 2, then resumed == two epochs at once (data, order, lr seeded)
    def crash(epoch, epochs, step, steps, loss):
        if epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(TINY, tmp_path / "resumed", progress=crash)
    assert load_checkpoint(tmp_path / "resumed" / "model.pt")["epoch"] == 1
    resumed = train(TINY, tmp_path / "resumed")
    assert resumed.resumed_from == 1 and resumed.history["epoch"] == [1, 2]
    again = LearnedModel.load(resumed.path)
    for k, v in again.net.state_dict().items():
        assert torch.allclose(v.float(), model.net.state_dict()[k].float(), atol=1e-5), k
    assert (tmp_path / "resumed" / "history.csv").read_text().count("\n") == 3
    # a different configuration in the same folder is refused, not overwritten
    with pytest.raises(PipelineError, match="width: 8 there, 12 now"):
        train(TINY.model_copy(update={"width": 12}), tmp_path / "resumed")


def test_mismatched_or_foreign_checkpoints_are_refused(tiny_model, tmp_path):
    model = LearnedModel.load(tiny_model)
    with pytest.raises(DataError, match=r"trained on \(32, 32\) patterns"):
        model.reconstruct(np.ones((64, 64)), source="big.h5")
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    with pytest.raises(DataError, match="not a sipflow far-field model"):
        load_checkpoint(foreign)
    old = tmp_path / "old.pt"
    ckpt = torch.load(tiny_model, weights_only=True)
    torch.save(ckpt | {"format_version": 99}, old)
    with pytest.raises(DataError, match="format version 99"):
        load_checkpoint(old)

    class Evil:  # an arbitrary pickled object: weights_only refuses to run it
        def __reduce__(self):
            return (print, ("should never run",))

    evil = tmp_path / "evil.pt"
    torch.save({"format": "sipflow.learned.farfield", "payload": Evil()}, evil)
    with pytest.raises(DataError, match="not a loadable model checkpoint"):
        load_checkpoint(evil)
    edited = tmp_path / "edited.pt"
    ckpt["config"]["width"] = 12
    torch.save(ckpt, edited)
    with pytest.raises(DataError, match="do not match"):
        LearnedModel.load(edited)


@pytest.mark.slow
def test_learned_stage_output_and_warm_start_of_classic(far_field_models, tmp_path):
    from sipflow import load, run_pipeline
    from sipflow.pipeline import Pipeline

    model = far_field_models[True].path
    scan = write_scan(tmp_path / "s.h5", Simulation(shape=(32, 32), kind="cells", extent=0.4,
                                                   photons=1e7, seed=2))

    ds = load(scan)
    pipe = Pipeline.load({"stages": [
        {"use": "phase.learned", "with": {"model": str(model)}},
        {"use": "phase.classic", "with": {"initial_object": "input", "runs": 2,
                                          "schedule": "(sup * ER**5 * HIO**20)**4 * ER**20"}},
        {"use": "symmetry.canonicalize"}, {"use": "analyse.metrics"}]})
    out = run_pipeline(pipe, ds, seed=0)
    info = out.attrs["phase_learned"]
    assert info["trained_epochs"] == 6 and info["symmetry_break"] is True
    assert len(info["sha256"]) == 64 and np.isfinite(info["llk"])
    assert "phase_classic" in out.attrs and "symmetry_canonicalize" in out.attrs
    assert np.isfinite(out.attrs["metrics"]["error"])
    # a scan of another shape is refused with both shapes named
    big = load(write_scan(tmp_path / "b.h5", Simulation(shape=(48, 48), seed=1)))
    with pytest.raises(DataError, match=r"\(48, 48\).*\(32, 32\)"):
        run_pipeline(Pipeline.load({"stages": [
            {"use": "phase.learned", "with": {"model": str(model)}}]}), big)
    with pytest.raises(DataError, match="needs an 'obj'"):
        run_pipeline(Pipeline.load({"stages": [
            {"use": "phase.classic", "with": {"initial_object": "input"}}]}), ds)


@pytest.mark.prefect
def test_learned_pipeline_through_the_prefect_flow(tiny_model, tmp_path, prefect_server,
                                                    capsys):
    from sipflow.cli import main

    scan = write_scan(tmp_path / "s.h5", Simulation(shape=(32, 32), kind="cells", extent=0.4,
                                                   photons=1e7, seed=4))
    spec = {"stages": [{"use": "phase.learned", "with": {"model": str(tiny_model)}},
                       {"use": "phase.double_dip",
                        "with": {"init": "previous", "iterations": 20, "warm_iterations": 5,
                                 "window": 5, "patience": 5, "width": 8, "depth": 2}},
                       {"use": "symmetry.canonicalize"}, {"use": "analyse.metrics"}]}
    path = tmp_path / "learned.yaml"
    path.write_text(yaml.safe_dump(spec))
    out = tmp_path / "learned.zarr"
    assert main(["run", str(path), str(scan), "-o", str(out), "--engine", "prefect",
                 "--seed", "1"]) == 0
    ds = open_result(out, verify=True)
    assert next(s["use"] for s in ds.attrs["provenance"]["stages"]) == "phase.learned"
    assert "phase_double_dip" in ds.attrs and schema.OBJ in ds


def test_train_cli_trains_resumes_and_refuses_bad_settings(tmp_path, capsys):
    from sipflow.cli import main

    out = tmp_path / "m"
    args = ["train", str(out), "--shape", "32", "32", "--samples", "32", "--validation", "8",
            "--width", "8", "--depth", "3", "--epochs", "1"]
    assert main(args) == 0
    assert "validation error" in capsys.readouterr().out
    assert main([*args[:-1], "2"]) == 0
    assert "resumed after 1" in capsys.readouterr().out
    assert LearnedModel.load(out / "model.pt").epoch == 2
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("extent: [0.4, 0.9]\nepochs: 1\n")
    assert main(["train", str(tmp_path / "n"), "--config", str(cfg)]) != 0
    err = capsys.readouterr().err
    assert "bad.yaml" in err and "extent" in err and not (tmp_path / "n" / "model.pt").exists()
    assert main(["train", str(tmp_path / "g"), "--group", "sine", "--epochs", "1"]) != 0
    assert "unknown symmetry group 'sine'" in capsys.readouterr().err


def test_learned_reconstruction_is_reproducible(tiny_model):
    model = LearnedModel.load(tiny_model)
    from sipflow.simulate import simulate

    data = simulate(Simulation(shape=(32, 32), seed=5, photons=1e6))
    a = model.reconstruct(data["intensity"], data["mask"])
    b = model.reconstruct(data["intensity"], data["mask"])
    assert np.array_equal(a, b) and a.dtype == np.complex64
    # the output carries the data's scale: |F x|^2 sums to about the counts
    ctx = Context()
    assert ctx.device == "cpu"
    assert 0.01 < (np.abs(a) ** 2).sum() / data["intensity"].sum() < 100


@pytest.mark.parametrize("engine", ["local", "prefect"])
def test_a_missing_or_foreign_model_fails_before_any_work(engine, tmp_path, capsys):
    from sipflow.cli import main

    scan = write_scan(tmp_path / "s.h5", Simulation(shape=(32, 32), seed=1))
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    for model, expected in ((None, "needs a model"), (tmp_path / "none.pt", "no such model"),
                            (foreign, "not a sipflow far-field model")):
        spec = {"stages": [{"use": "phase.learned",
                            "with": {} if model is None else {"model": str(model)}}]}
        path = tmp_path / "p.yaml"
        path.write_text(yaml.safe_dump(spec))
        out = tmp_path / "out.zarr"
        assert main(["run", str(path), str(scan), "-o", str(out), "--engine", engine]) != 0
        err = capsys.readouterr().err
        assert expected in err, err
        assert not out.exists()


def test_damaged_or_diverged_models_are_refused(tiny_model, tmp_path, capsys):
    """Reliability round 3, defect 6: bytes overwritten inside model.pt gave an object of
    7.5e30 with exit 0; ``train --lr inf`` exited 0 with a NaN loss."""
    from sipflow.cli import main

    ckpt = torch.load(tiny_model, weights_only=True)
    assert "model_sha256" in ckpt
    damaged = tmp_path / "damaged.pt"
    name = next(iter(ckpt["model"]))
    tensor = ckpt["model"][name].clone()
    tensor.view(-1)[0] = 7.5e30  # what overwritten bytes inside the archive look like
    torch.save(ckpt | {"model": ckpt["model"] | {name: tensor}}, damaged)
    with pytest.raises(DataError, match="do not match the checksum written with them"):
        load_checkpoint(damaged)
    diverged = tmp_path / "diverged.pt"
    tensor.view(-1)[0] = float("nan")
    weights = ckpt["model"] | {name: tensor}
    torch.save({k: v for k, v in ckpt.items() if k != "model_sha256"} | {"model": weights},
               diverged)
    with pytest.raises(DataError, match="non-finite weights"):
        load_checkpoint(diverged)
    evil = tmp_path / "evil.pt"

    class Evil:
        def __reduce__(self):
            return (print, ("never",))

    torch.save({"x": Evil()}, evil)
    with pytest.raises(DataError) as info:
        load_checkpoint(evil)
    assert "weights_only=False" not in str(info.value)  # never torch's unsafe advice
    assert main(["train", str(tmp_path / "m"), "--lr", "inf", "--samples", "8"]) == 2
    assert "finite number" in capsys.readouterr().err


def test_a_stage_that_produces_a_non_finite_object_fails_the_run(tmp_path):
    """Defect 6: no stage may hand on or save a non-finite object as a success."""
    import xarray as xr

    import sipflow
    from sipflow import Stage, StageParams, hookimpl
    from sipflow.errors import ReconstructionError
    from sipflow.pipeline import Pipeline
    from sipflow.plugins import build_registry

    class Diverges(Stage):
        """Returns an object with NaN (a diverged method)."""

        name = "phase.diverges"
        version = "1"
        Params = StageParams
        requires = (schema.INTENSITY,)

        def run(self, ds, params, context):
            obj = np.ones(ds[schema.INTENSITY].shape, np.complex64)
            obj[0, 0] = np.nan
            return ds.assign(obj=(ds[schema.INTENSITY].dims, obj))

    class Plugin:
        @hookimpl
        def sipflow_stages(self):
            return [Diverges]

    reg = build_registry(load_entry_points=False, extra=(Plugin(),))
    pipe = Pipeline.load({"stages": [{"use": "phase.diverges"}]}, registry=reg)
    ds = xr.Dataset({"intensity": (("det_y", "det_x"), np.ones((8, 8), np.float32))})
    with pytest.raises(ReconstructionError, match=r"1 non-finite values .* of 64"):
        sipflow.run_pipeline(pipe, ds)
