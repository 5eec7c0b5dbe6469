"""MACE training: the recipe's arguments, bad inputs, and a real (small) training through
MaceTrainingMaker + jobflow whose model is stored, fetched by sha256 in a fresh process, and
predicts what the trainer itself computed."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from _mace_data import emt_structures, fcc_supercell, label_emt, perturbed, training_set_dict
from phonon_flows.core import mace_training as core
from phonon_flows.errors import CalculationError, InputError, UnsupportedElementsError
from phonon_flows.schemas.training import EnergyPhase, MaceHyperparameters, TrainingDoc


# the authors' command line (DESIGN.md recipe), flag by flag
RECIPE_ARGS = {
    "--swa", "--start_swa=100", "--swa_forces_weight=100", "--energy_weight=0", "--swa_energy_weight=0",
    "--forces_weight=1000", "--lr=0.01", "--swa_lr=0.001", "--max_num_epochs=200", "--ema",
    "--default_dtype=float64", "--E0s=average", "--num_interactions=2", "--correlation=3", "--r_max=6.0",
    "--batch_size=4", "--valid_batch_size=4", "--seed=123", "--valid_fraction=0.05",
    "--hidden_irreps=64x0e + 64x1o", "--max_L=1",
}  # fmt: skip


def test_paper_preset_gives_exactly_the_recipe_arguments():
    hp = MaceHyperparameters.preset("paper")
    assert hp == MaceHyperparameters()
    args = hp.to_mace_args("train.xyz", "run", device="cpu")
    io_args = {
        "--name=mace", "--train_file=train.xyz", "--work_dir=run", "--device=cpu",
        "--energy_key=REF_energy", "--forces_key=REF_forces",
    }  # fmt: skip
    assert len(args) == len(set(args))
    assert set(args) == RECIPE_ARGS | io_args
    # and mace's own parser reads them as the recipe's values
    from mace.tools import build_default_arg_parser

    parsed = build_default_arg_parser().parse_args(args)
    assert (parsed.swa, parsed.start_swa, parsed.swa_forces_weight, parsed.swa_energy_weight) == (True, 100, 100.0, 0.0)
    assert (parsed.forces_weight, parsed.energy_weight, parsed.lr, parsed.swa_lr) == (1000.0, 0.0, 0.01, 0.001)
    assert (parsed.max_num_epochs, parsed.ema, parsed.default_dtype, parsed.E0s) == (200, True, "float64", "average")
    assert (parsed.num_interactions, parsed.correlation, parsed.r_max, parsed.hidden_irreps) == (2, 3, 6.0, "64x0e + 64x1o")
    assert (parsed.batch_size, parsed.valid_batch_size, parsed.seed, parsed.valid_fraction) == (4, 4, 123, 0.05)


def test_run_options_and_pass_through():
    hp = MaceHyperparameters.preset("small", extra={"patience": 5, "clip_grad": None, "keep_checkpoints": True})
    args = core.build_mace_args(hp, "t.xyz", "w", device="cuda", restart=True, distributed=True)
    d = core.args_to_dict(args)
    assert d["patience"] == "5" and d["clip_grad"] == "None" and d["keep_checkpoints"] is True
    assert d["restart_latest"] is True and d["distributed"] is True and d["launcher"] == "torchrun"
    assert d["save_cpu"] is True and d["device"] == "cuda"
    assert d["hidden_irreps"] == "8x0e + 8x1o"
    cmd = core.mace_command(args, nproc=4)
    assert cmd[1:6] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=4", "-m"]
    no_swa = core.args_to_dict(MaceHyperparameters(swa=False).to_mace_args("t.xyz", "w"))
    assert "swa" not in no_swa and "start_swa" not in no_swa


def test_hyperparameter_validation():
    with pytest.raises(InputError, match="no option --not_a_mace_option"):
        MaceHyperparameters(extra={"not_a_mace_option": 1}).to_mace_args("t.xyz", "w")
    with pytest.raises(ValidationError, match="named field"):
        MaceHyperparameters(extra={"lr": 0.1})
    with pytest.raises(ValidationError, match="max_L"):
        MaceHyperparameters(hidden_irreps="16x0e", max_L=1)
    with pytest.raises(ValidationError, match="same number of channels"):
        MaceHyperparameters(hidden_irreps="64x0e + 32x1o")
    with pytest.raises(ValueError, match="unknown MACE preset"):
        MaceHyperparameters.preset("huge")
    assert MaceHyperparameters(hidden_irreps="16x0e", max_L=0).hidden_irreps == "16x0e"


def test_learning_curve_parser_keeps_the_rerun_after_a_restart(tmp_path):
    rows = [
        {"mode": "eval", "epoch": None, "loss": 9.0, "mae_f": 0.3, "rmse_f": 0.4},
        {"mode": "opt", "epoch": 0, "loss": 8.0, "time": 1.0},
        {"mode": "opt", "epoch": 0, "loss": 6.0, "time": 1.0},
        {"mode": "eval", "epoch": 0, "loss": 5.0, "mae_f": 0.2, "rmse_f": 0.3, "mae_e_per_atom": 0.001},
        {"mode": "opt", "epoch": 1, "loss": 99.0, "time": 1.0},  # killed during epoch 1
        # rerun with --restart_latest from the epoch-0 checkpoint
        {"mode": "eval", "epoch": None, "loss": 5.0, "mae_f": 0.2, "rmse_f": 0.3},
        {"mode": "opt", "epoch": 0, "loss": 4.0, "time": 1.0},
        {"mode": "eval", "epoch": 0, "loss": 3.0, "mae_f": 0.1, "rmse_f": 0.2},
        {"mode": "opt", "epoch": 1, "loss": float("nan"), "time": 1.0},
        {"mode": "eval", "epoch": 1, "loss": float("nan"), "mae_f": None, "rmse_f": None},
    ]
    path = tmp_path / "r.txt"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    curve = core.parse_learning_curve(path, start_swa=1)
    assert [(r["epoch"], r["stage"]) for r in curve] == [(-1, "initial"), (0, "one"), (1, "two")]
    assert curve[0]["valid_force_mae"] == pytest.approx(300.0)
    assert curve[1]["train_loss"] == 4.0 and curve[1]["valid_force_mae"] == pytest.approx(100.0)
    assert core.diverged_epoch(curve) == 1


def test_training_job_is_a_gpu_job_and_serializes():
    from jobflow import Job
    from monty.json import MontyDecoder, MontyEncoder

    from phonon_flows.makers import MaceTrainingMaker

    maker = MaceTrainingMaker(hyperparameters=MaceHyperparameters.preset("small", energy_phase=EnergyPhase()))
    job = maker.make(training_set_dict(emt_structures(n_per_element=1)))
    assert job.name == "mace training" and job.config.manager_config == {"_category": "gpu"}
    back = json.loads(json.dumps(job.as_dict(), cls=MontyEncoder), cls=MontyDecoder)
    assert isinstance(back, Job) and back.maker.hyperparameters == maker.hyperparameters


# ------------------------------------------------------------------------------------------------
# bad inputs: clear errors before mace starts
# ------------------------------------------------------------------------------------------------


def _run_job(ts, tmp_path, monkeypatch, **maker_kwargs):
    from phonon_flows.makers.training import MaceTrainingMaker
    from phonon_flows.store import get_store

    monkeypatch.chdir(tmp_path)
    store = get_store(store_dir=tmp_path / "store", connect=True)
    maker = MaceTrainingMaker(hyperparameters=MaceHyperparameters.preset("small"), device="cpu", **maker_kwargs)
    job = maker.make(ts)
    return job.run(store=store).output


@pytest.mark.parametrize(
    "case, error, message",
    [
        ("empty", InputError, "training set is empty"),
        ("single", InputError, "single structure"),
        ("no forces", InputError, "no forces under key 'REF_forces'"),
        ("nan forces", InputError, "not finite"),
        ("distributed on cpu", InputError, "needs device cuda"),
    ],
)
def test_bad_training_sets(case, error, message, tmp_path, monkeypatch):
    structures = emt_structures(n_per_element=2, seed=1)
    if case == "empty":
        ts = training_set_dict([], material_ids=["mp-1"])
    elif case == "single":
        ts = training_set_dict(structures[:1])
    elif case == "no forces":
        ts = training_set_dict(structures)
        ts["forces_key"] = "REF_forces"
        ts["xyz"] = ts["xyz"].replace("REF_forces", "DFT_forces")
    elif case == "nan forces":
        structures[1].arrays["REF_forces"][3, 1] = np.nan
        ts = training_set_dict(structures)
    else:
        ts = training_set_dict(structures)
    kwargs = {"num_gpus": 2} if case == "distributed on cpu" else {}
    with pytest.raises(error, match=message):
        _run_job(ts, tmp_path, monkeypatch, **kwargs)
    # a campaign can ask for a failed document instead of an exception
    doc = _run_job(ts, tmp_path, monkeypatch, raise_on_failure=False, **kwargs)
    assert isinstance(doc, TrainingDoc) and doc.failed and message.split()[0] in doc.error
    assert doc.model_sha256 is None and doc.model_b64 is None


def test_fine_tuning_set_with_elements_the_foundation_model_lacks(tiny_mace_model, tmp_path):
    rng = np.random.default_rng(3)
    nickel = [label_emt(perturbed(fcc_supercell("Cu"), rng)) for _ in range(3)]
    for atoms in nickel:
        atoms.symbols[:4] = "Ni"  # EMT knows Ni; the tiny model (Al, Cu) does not
    nickel = [label_emt(a) for a in nickel]
    hp = MaceHyperparameters.preset("small", foundation_model=str(tiny_mace_model.path))
    with pytest.raises(UnsupportedElementsError, match="no parameters for element.*Ni"):
        core.train_mace(nickel, hp, tmp_path / "ft")
    assert not (tmp_path / "ft" / core.LOG_NAME).exists()  # refused before mace ran


@pytest.mark.slow
def test_diverging_training_raises_with_the_log_kept(tmp_path):
    hp = MaceHyperparameters.preset("small", lr=1e12, max_num_epochs=1, swa=False,
                                    extra={**MaceHyperparameters.preset("small").extra, "clip_grad": None})  # fmt: skip
    with pytest.raises(CalculationError, match="diverged: NaN/inf loss at epoch 0") as err:
        core.train_mace(emt_structures(n_per_element=2, seed=2), hp, tmp_path / "nan", num_threads=2)
    log = tmp_path / "nan" / core.LOG_NAME
    assert str(log) in str(err.value) and "Epoch 0" in log.read_text()


# ------------------------------------------------------------------------------------------------
# a real training (session fixture: MaceTrainingMaker through jobflow, small preset)
# ------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_training_learns_and_documents_itself(tiny_mace_model):
    doc = tiny_mace_model.doc
    hp = MaceHyperparameters.preset("small")
    assert not doc.failed and doc.hyperparameters == hp
    assert doc.mace_version and doc.device == "cpu" and doc.wall_time > 0
    assert doc.n_train + doc.n_valid == 16 and doc.n_valid == 3 == len(doc.valid_indices)
    assert doc.training_set.elements == ["Al", "Cu"] and sorted(doc.elements) == ["Al", "Cu"]
    assert doc.r_max == pytest.approx(hp.r_max)

    curve = doc.learning_curve
    epochs = [row.epoch for row in curve]
    assert epochs == list(range(-1, hp.max_num_epochs))
    assert [row.stage for row in curve[1:]] == ["one"] * hp.start_swa + ["two"] * (hp.max_num_epochs - hp.start_swa)
    first, last = curve[1], curve[-1]
    assert last.valid_force_mae < 0.8 * first.valid_force_mae  # it learned
    assert all(row.train_loss is not None and np.isfinite(row.train_loss) for row in curve[1:])

    # the stored model is the stage-two checkpoint: our evaluation of it on the validation
    # structures equals mace's own evaluation at that epoch
    assert doc.model_file_name == "mace_stagetwo.model" and doc.final_epoch >= hp.start_swa
    at_final = next(row for row in curve if row.epoch == doc.final_epoch)
    assert doc.valid_force_mae == pytest.approx(at_final.valid_force_mae, rel=1e-8)
    assert doc.valid_force_rmse == pytest.approx(at_final.valid_force_rmse, rel=1e-8)
    assert doc.train_force_mae > 0 and doc.seconds_per_epoch > 0
    print(f"\nsmall preset: {doc.seconds_per_epoch:.2f} s per epoch on CPU "
          f"({doc.n_train} train / {doc.n_valid} valid structures of 32 atoms); "
          f"valid force MAE {first.valid_force_mae:.1f} -> {last.valid_force_mae:.1f} meV/Å")  # fmt: skip


FRESH_PROCESS = """
import json, sys
import ase.io
from phonon_flows.engines.mace import load_mace_engine
from phonon_flows.store import get_store
store = get_store(store_dir=sys.argv[1])
engine = load_mace_engine(model_sha256=sys.argv[2], store=store, cache_dir=sys.argv[3], device="cpu")
atoms = ase.io.read(sys.argv[4], ":")
res = engine.compute(atoms)
print(json.dumps({"path": str(engine.model_path), "info": engine.info.model_dump(),
                  "forces": [r.forces.tolist() for r in res], "energy": [r.energy for r in res]}))
"""


@pytest.mark.slow
def test_model_fetched_by_sha256_in_a_fresh_process_predicts_what_the_trainer_computed(tiny_mace_model, tmp_path):
    import ase.io
    from mace.calculators import MACECalculator

    from phonon_flows.engines.mace import MODEL_BLOB_PREFIX, sha256_file

    doc, store = tiny_mace_model.doc, tiny_mace_model.store
    assert sha256_file(tiny_mace_model.path) == doc.model_sha256
    # the model went to the data store, not into the output document
    store.connect()
    out = store.query_one({"output.model_sha256": doc.model_sha256}, properties=["output"])
    assert "blob_uuid" in out["output"]["model_b64"]
    assert store.additional_stores["data"].count() >= 1
    assert store.additional_stores["data"].query_one({"blob_uuid": MODEL_BLOB_PREFIX + doc.model_sha256}) is None

    valid = [tiny_mace_model.structures[i] for i in doc.valid_indices]
    configs = tmp_path / "valid.xyz"
    ase.io.write(configs, valid, format="extxyz")
    valid = ase.io.read(configs, ":")  # the positions as written (8 decimals), as mace read them
    store_dir = Path(store.docs_store.database_path)
    store.close()
    proc = subprocess.run(
        [sys.executable, "-c", FRESH_PROCESS, str(store_dir), doc.model_sha256, str(tmp_path / "cache"), str(configs)],
        capture_output=True, text=True, cwd=tmp_path, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    fresh = json.loads(proc.stdout.strip().splitlines()[-1])
    assert Path(fresh["path"]).parent == tmp_path / "cache" and sha256_file(fresh["path"]) == doc.model_sha256
    assert fresh["info"]["model_sha256"] == doc.model_sha256 and fresh["info"]["kind"] == "mlip"

    # the trainer's side: mace's own ASE calculator on the file mace wrote
    calc = MACECalculator(model_paths=str(tiny_mace_model.path), device="cpu", default_dtype="float64")
    trainer_forces = []
    for atoms, forces in zip(valid, fresh["forces"]):
        atoms = atoms.copy()
        atoms.calc = calc
        trainer_forces.append(atoms.get_forces())
        np.testing.assert_allclose(np.array(forces), trainer_forces[-1], rtol=0, atol=1e-8)
    # and mace's validation error at the saved epoch, recomputed from the fresh predictions
    mae, _ = core.force_errors([np.array(f) for f in fresh["forces"]], [a.arrays["REF_forces"] for a in valid])
    at_final = next(row for row in doc.learning_curve if row.epoch == doc.final_epoch)
    assert mae == pytest.approx(at_final.valid_force_mae, rel=1e-8)


@pytest.mark.slow
def test_rerun_restarts_from_the_checkpoint_then_adds_the_energy_phase(tmp_path):
    structures = emt_structures(n_per_element=4, seed=4)
    small = MaceHyperparameters.preset("small")
    work = tmp_path / "run"
    first = core.train_mace(structures, small.model_copy(update={"max_num_epochs": 2, "swa": False}), work, num_threads=2)
    assert [r["epoch"] for r in first.learning_curve] == [-1, 0, 1]

    longer = small.model_copy(
        update={"max_num_epochs": 3, "swa": False, "energy_phase": EnergyPhase(max_num_epochs=2)}
    )
    second = core.train_mace(structures, longer, work, num_threads=2)
    rerun = (work / core.LOG_NAME).read_text().split("# phonon_flows: running")[2]
    assert rerun.index("Loading checkpoint") < rerun.index("Started training")  # --restart_latest
    curve = second.learning_curve
    assert [(r["epoch"], r["stage"]) for r in curve] == [
        (-1, "initial"), (0, "one"), (1, "one"), (2, "one"), (3, "energy"), (4, "energy"),
    ]  # fmt: skip
    phase = core.args_to_dict(second.energy_phase_args)
    assert (phase["forces_weight"], phase["energy_weight"], phase["max_num_epochs"]) == ("100", "50", "2")
    assert phase["foundation_model"] == str(work / "mace.model") and phase["E0s"] == "foundation"
    assert second.model_path == work / core.ENERGY_PHASE_DIR / "mace_fe.model" and second.model_path.is_file()
    assert all(r["valid_energy_mae"] is not None for r in curve if r["stage"] == "energy")


def test_latest_epoch_reads_the_last_evaluation_of_the_metrics_file(tmp_path):
    (tmp_path / "results").mkdir()
    rows = [{"mode": "eval", "epoch": None, "rmse_f": 0.5},  # mace's evaluation before training
            {"mode": "opt", "epoch": 0, "loss": 1.0}, {"mode": "eval", "epoch": 0, "rmse_f": 0.040},
            {"mode": "opt", "epoch": 1, "loss": 0.5}, {"mode": "eval", "epoch": 1, "rmse_f": 0.021}]
    text = "\n".join(json.dumps(r) for r in rows) + '\n{"mode": "eval", "epo'  # a line mace is still writing
    metrics = core.metrics_file(tmp_path, "mace", 123)
    assert core.latest_epoch(metrics) is None
    metrics.write_text(text)
    latest = core.latest_epoch(metrics)
    assert latest["epoch"] == 2 and latest["rmse_f_meV_A"] == pytest.approx(21.0)


def test_a_campaign_shows_the_epochs_of_its_training(tmp_path, monkeypatch):
    """`phonon-flows run` (run_campaign) with its stderr in a file: while mace trains (a subprocess),
    the progress lines say which epoch it has reached and its validation force RMSE."""
    import io
    import re

    from rich.console import Console

    from phonon_flows import progress, runner
    from phonon_flows.makers.training import MaceTrainingMaker
    from phonon_flows.store import get_store

    monkeypatch.setattr(progress, "LINE_INTERVAL_S", 0.0)
    monkeypatch.setattr(core, "PROGRESS_POLL_S", 0.2)
    hp = MaceHyperparameters.preset("small").model_copy(update={"max_num_epochs": 3, "swa": False})
    job = MaceTrainingMaker(hyperparameters=hp, device="cpu", num_threads=2).make(
        training_set_dict(emt_structures(n_per_element=2, seed=3)))
    out = io.StringIO()
    store = get_store(store_dir=tmp_path / "store")
    # the CLI's console: rich looks up sys.stderr at each write, and a running job redirects it to job.log
    monkeypatch.setattr(sys, "stderr", out)
    summary = runner.run_campaign(job, store, progress=True, console=Console(stderr=True, width=200),
                                  work_dir=tmp_path / "runs")
    assert summary.ok
    shown = [re.search(rf"{job.name}: epoch (\d+)/3, validation force RMSE ([\d.]+) meV/Å", x)
             for x in out.getvalue().splitlines()]
    shown = [(int(m.group(1)), float(m.group(2))) for m in shown if m]
    assert shown and [e for e, _ in shown] == sorted({e for e, _ in shown}) and shown[-1][0] == 3, out.getvalue()
    store.connect()
    doc = store.query_one({"uuid": job.uuid}, load=True)
    last = next(r for r in doc["output"]["learning_curve"] if r["epoch"] == 2)
    assert shown[-1][1] == pytest.approx(last["valid_force_rmse"], abs=0.05)


def test_a_training_past_its_timeout_is_stopped_with_its_log_kept(tmp_path, monkeypatch):
    monkeypatch.setattr(core, "PROGRESS_POLL_S", 0.1)
    hp = MaceHyperparameters.preset("small").model_copy(update={"max_num_epochs": 500, "swa": False})
    with pytest.raises(CalculationError, match="ran past 1 s") as err:
        core.train_mace(emt_structures(n_per_element=2, seed=3), hp, tmp_path / "run", num_threads=1, timeout=1)
    log = tmp_path / "run" / core.LOG_NAME
    assert str(log) in str(err.value) and log.read_text().startswith("# phonon_flows: running")
