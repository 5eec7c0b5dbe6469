"""MACE training job: a training set in, a trained model (stored with its metrics) out."""

from __future__ import annotations

import base64
import hashlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jobflow import Job, Maker, job

from phonon_flows.core import mace_training as core
from phonon_flows.engines.mace import load_mace_engine, resolve_device
from phonon_flows.errors import InputError, PhononFlowsError
from phonon_flows.makers.base import set_category
from phonon_flows.schemas.training import EpochMetrics, MaceHyperparameters, TrainingDoc, TrainingSetInfo


def _training_set_fields(training_set: Any) -> dict[str, Any]:
    """xyz text, keys and material ids of a TrainingSetDoc (object or dict)."""
    if hasattr(training_set, "model_dump"):
        training_set = training_set.model_dump()
    if not isinstance(training_set, dict):
        raise TypeError(f"training_set must be a TrainingSetDoc or a dict, not {type(training_set).__name__}")
    return {
        "xyz": training_set.get("xyz") or "",
        "energy_key": training_set.get("energy_key") or "REF_energy",
        "forces_key": training_set.get("forces_key") or "REF_forces",
        "material_ids": [str(m) for m in (training_set.get("material_ids") or [])],
    }


@dataclass
class MaceTrainingMaker(Maker):
    """Train MACE with mace-torch's own training entry point (the paper's recipe by default).

    Parameters
    ----------
    name
        Job name.
    hyperparameters
        :class:`MaceHyperparameters`; ``MaceHyperparameters.preset("small")`` for CPU demos.
    device
        ``auto`` (cuda when present, else cpu), ``cpu`` or ``cuda``.
    num_gpus
        With more than one, mace's ``--distributed`` data-parallel training under torchrun, one
        process per GPU. None: one device.
    work_dir
        Directory to train in. A rerun with the same directory continues from mace's latest
        checkpoint (``--restart_latest``). None: the job's own directory.
    num_threads
        CPU threads of the training process (OMP_NUM_THREADS); None leaves torch's default.
    raise_on_failure
        True: a failed training raises (job failed, log kept). False: returns a TrainingDoc with
        ``failed=True``, the reason and the log tail.
    """

    name: str = "mace training"
    hyperparameters: MaceHyperparameters = field(default_factory=MaceHyperparameters)
    device: str = "auto"
    num_gpus: int | None = None
    work_dir: str | None = None
    num_threads: int | None = None
    raise_on_failure: bool = True

    def make(self, training_set: Any) -> Job:
        """A training job (FireWorks category ``gpu``) whose output is a :class:`TrainingDoc`."""
        train_job = self.train(training_set)
        return set_category(train_job, "gpu")

    @job(data=["model_b64"], output_schema=TrainingDoc)
    def train(self, training_set: Any) -> TrainingDoc:
        import mace
        import torch

        hp = self.hyperparameters
        if isinstance(hp, dict):
            hp = MaceHyperparameters(**hp)
        ts = _training_set_fields(training_set)
        work_dir = Path(self.work_dir or os.getcwd()).resolve()
        try:
            device = resolve_device(self.device)
        except InputError:
            if self.raise_on_failure:
                raise
            device = self.device
        nproc = self.num_gpus if (self.num_gpus and self.num_gpus > 1) else None
        device_label = f"{device} x{nproc}" if nproc else device
        common = {
            "hyperparameters": hp,
            "mace_version": mace.__version__,
            "torch_version": torch.__version__,
            "device": device_label,
            "work_dir": str(work_dir),
        }
        t0 = time.perf_counter()
        try:
            if nproc and not device.startswith("cuda"):
                raise InputError(f"num_gpus={nproc} (--distributed) needs device cuda, not {device}", stage=core.STAGE)
            if nproc and torch.cuda.device_count() < nproc:
                raise InputError(f"num_gpus={nproc} but torch sees {torch.cuda.device_count()} GPU(s)", stage=core.STAGE)
            atoms_list = core.read_xyz(ts["xyz"])
            core.check_training_set(
                atoms_list, ts["energy_key"], ts["forces_key"], name=", ".join(ts["material_ids"][:3]) or None
            )
            run = core.train_mace(
                atoms_list,
                hp,
                work_dir,
                device=device,
                energy_key=ts["energy_key"],
                forces_key=ts["forces_key"],
                nproc=nproc,
                num_threads=self.num_threads,
            )
        except PhononFlowsError as exc:
            if self.raise_on_failure:
                raise
            return TrainingDoc(
                **common,
                wall_time=time.perf_counter() - t0,
                failed=True,
                error=str(exc).splitlines()[0],
                log_tail=core.log_tail(work_dir / core.LOG_NAME),
            )

        # the final model evaluated on its own training and validation structures
        engine = load_mace_engine(model_path=run.model_path, device=device, default_dtype=hp.default_dtype)
        metrics = _self_metrics(engine, atoms_list, run, ts)
        return _trained_doc(common, run, atoms_list, ts, engine, metrics)


def _self_metrics(engine: Any, atoms_list: list, run: Any, ts: dict[str, Any]) -> dict[str, float | None]:
    """Force (and, with reference energies, energy) errors of the trained model on its own
    training and validation structures."""
    predictions = engine.compute(atoms_list)
    ref_forces = [core.reference_forces(a, ts["forces_key"]) for a in atoms_list]
    ref_energy = [a.info.get(ts["energy_key"]) for a in atoms_list]
    metrics: dict[str, float | None] = {}
    for label, idx in (("train", run.train_indices), ("valid", run.valid_indices)):
        mae, rmse = core.force_errors([predictions[i].forces for i in idx], [ref_forces[i] for i in idx])
        metrics[f"{label}_force_mae"], metrics[f"{label}_force_rmse"] = mae, rmse
        if all(ref_energy[i] is not None for i in idx):
            metrics[f"{label}_energy_mae"] = core.energy_mae_per_atom(
                [predictions[i].energy for i in idx], [float(ref_energy[i]) for i in idx], [len(atoms_list[i]) for i in idx]
            )
    return metrics


def _trained_doc(common: dict[str, Any], run: Any, atoms_list: list, ts: dict[str, Any], engine: Any,
                 metrics: dict[str, float | None]) -> TrainingDoc:
    """The TrainingDoc of a finished training, with the model file (base64) and its sha256."""
    raw = run.model_path.read_bytes()
    return TrainingDoc(
        **common,
        command=run.args,
        wall_time=run.wall_time,
        seconds_per_epoch=run.seconds_per_epoch,
        training_set=TrainingSetInfo(
            n_structures=len(atoms_list),
            n_atoms=sum(len(a) for a in atoms_list),
            elements=core.elements_of(atoms_list),
            material_ids=ts["material_ids"],
            energy_key=ts["energy_key"],
            forces_key=ts["forces_key"],
            xyz_sha256=hashlib.sha256(ts["xyz"].encode()).hexdigest(),
        ),
        n_train=len(run.train_indices),
        n_valid=len(run.valid_indices),
        valid_indices=run.valid_indices,
        final_epoch=run.final_epoch,
        learning_curve=[EpochMetrics(**row) for row in run.learning_curve],
        **metrics,
        elements=sorted(engine.supported_elements),
        r_max=engine.r_max,
        model_sha256=hashlib.sha256(raw).hexdigest(),
        committee_seeds=[int(core.args_to_dict(m.args)["seed"]) for m in run.members],
        committee_valid_force_rmse=[c["valid_force_rmse"] for m in run.members
                                    for c in m.learning_curve[-1:] if c.get("valid_force_rmse") is not None],
        model_file_name=run.model_path.name,
        model_size_bytes=len(raw),
        model_b64=base64.b64encode(raw).decode("ascii"),
        log_tail=core.log_tail(run.log_path, 20),
    )
