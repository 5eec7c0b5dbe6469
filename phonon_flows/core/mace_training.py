"""MACE training through mace-torch's own entry point (``mace.cli.run_train``).

Plain functions, no jobflow and no stores: build the ``mace_run_train`` arguments from
:class:`~phonon_flows.schemas.training.MaceHyperparameters` (read through the protocol
:class:`MaceHyperparameters` here), check a training set, run the training
in a subprocess (``torchrun`` for multi-GPU ``--distributed``), and read mace's per-epoch metrics
log (``results/<name>_run-<seed>_train.txt``, JSON lines) into a learning curve.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from ase import Atoms

from phonon_flows.core.metrics import force_metrics
from phonon_flows.errors import CalculationError, InputError, UnsupportedElementsError


class MaceHyperparameters(Protocol):
    """What the functions here read of a set of MACE hyperparameters: the fields of
    :class:`phonon_flows.schemas.training.MaceHyperparameters` (the document), which core does not
    import (core sits below the documents)."""

    name: str
    num_interactions: int
    correlation: int
    r_max: float
    hidden_irreps: str
    max_L: int
    E0s: Any
    batch_size: int
    valid_batch_size: int
    seed: int
    valid_fraction: float
    forces_weight: float
    energy_weight: float
    lr: float
    max_num_epochs: int
    ema: bool
    ema_decay: float
    default_dtype: str
    foundation_model: Any
    swa: bool
    start_swa: int | None
    swa_forces_weight: float
    swa_energy_weight: float
    swa_lr: float
    energy_phase: Any
    extra: dict
    committee: int

    def model_copy(self, *, update: dict[str, Any] | None = None, deep: bool = False) -> MaceHyperparameters: ...

STAGE = "train"
LOG_NAME = "mace_train.log"
TRAIN_FILE = "train.xyz"
VALID_FILE = "valid.xyz"
#: committee members' folders under the training folder: member-0, member-1, ...
MEMBER_DIR = "member-{}"
COMMITTEE_MODEL = "{}_committee.model"
ENERGY_PHASE_DIR = "energy_phase"

# ------------------------------------------------------------------------------------------------
# arguments
# ------------------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def mace_option_kinds() -> dict[str, str]:
    """Every ``mace_run_train`` option name -> ``"true"`` (store_true flag), ``"false"``
    (store_false flag) or ``"value"``, read from mace's own argument parser."""
    import argparse

    from mace.tools import build_default_arg_parser

    kinds: dict[str, str] = {}
    for action in build_default_arg_parser()._actions:
        if isinstance(action, argparse._StoreTrueAction):
            kind = "true"
        elif isinstance(action, argparse._StoreFalseAction):
            kind = "false"
        elif isinstance(action, argparse._HelpAction):
            continue
        else:
            kind = "value"
        for opt in action.option_strings:
            kinds[opt.lstrip("-")] = kind
    return kinds


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (dict, list, tuple)):
        return str(value) if not isinstance(value, tuple) else str(list(value))
    return str(value)


def _fmt_weight(value: float) -> str:
    """Loss weights and learning rates the way people type them: 1000, 0, 0.01."""
    return f"{float(value):g}"


def option_args(options: dict[str, Any], skip_none: bool = True) -> list[str]:
    """``--key=value`` arguments of mace options; flags follow mace's parser (``--swa``, ``--ema``).
    None values are left out (mace's default), or written ``--key=None`` when not ``skip_none``.

    Raises InputError on an option mace does not know.
    """
    kinds = mace_option_kinds()
    out: list[str] = []
    for key, value in options.items():
        if key not in kinds:
            raise InputError(f"mace_run_train has no option --{key}", stage=STAGE)
        kind = kinds[key]
        if kind == "true":
            if value:
                out.append(f"--{key}")
        elif kind == "false":
            if not value:
                out.append(f"--{key}")
        elif value is not None or not skip_none:
            out.append(f"--{key}={_fmt(value)}")
    return out


def build_mace_args(
    hp: MaceHyperparameters,
    train_file: str | Path,
    work_dir: str | Path,
    device: str = "cpu",
    energy_key: str = "REF_energy",
    forces_key: str = "REF_forces",
    restart: bool = False,
    distributed: bool = False,
) -> list[str]:
    """``mace_run_train`` arguments of ``hp`` (recipe order), the data and run options, then ``extra``.

    With the default hyperparameters this is the paper's command: ``--swa --start_swa=100
    --swa_forces_weight=100 --energy_weight=0 --swa_energy_weight=0 --forces_weight=1000 ...``.
    """
    weights = {"forces_weight", "energy_weight", "swa_forces_weight", "swa_energy_weight", "lr", "swa_lr"}
    args = [
        f"--name={hp.name}",
        f"--train_file={train_file}",
        f"--work_dir={work_dir}",
        f"--device={device}",
        f"--energy_key={energy_key}",
        f"--forces_key={forces_key}",
    ]
    recipe: dict[str, Any] = {
        "num_interactions": hp.num_interactions,
        "correlation": hp.correlation,
        "r_max": float(hp.r_max),
        "hidden_irreps": hp.hidden_irreps,
        "max_L": hp.max_L,
        "E0s": hp.E0s,
        "batch_size": hp.batch_size,
        "valid_batch_size": hp.valid_batch_size,
        "seed": hp.seed,
        "valid_fraction": float(hp.valid_fraction),
        "forces_weight": hp.forces_weight,
        "energy_weight": hp.energy_weight,
        "lr": hp.lr,
        "max_num_epochs": hp.max_num_epochs,
        "ema": hp.ema,
        "ema_decay": hp.ema_decay,
        "default_dtype": hp.default_dtype,
        "foundation_model": hp.foundation_model,
    }
    if hp.swa:
        recipe.update(
            swa=True,
            start_swa=hp.start_swa,
            swa_forces_weight=hp.swa_forces_weight,
            swa_energy_weight=hp.swa_energy_weight,
            swa_lr=hp.swa_lr,
        )
    for key, value in recipe.items():
        if key in weights:
            args.append(f"--{key}={_fmt_weight(value)}")
        else:
            args.extend(option_args({key: value}))
    run_options: dict[str, Any] = {"restart_latest": restart}
    if distributed:
        run_options.update(distributed=True, launcher="torchrun")
    if device.startswith("cuda"):
        run_options["save_cpu"] = True  # the stored model loads on CPU-only machines too
    args.extend(option_args(run_options))
    args.extend(option_args(dict(hp.extra), skip_none=False))
    return args


def args_to_dict(args: Sequence[str]) -> dict[str, str | bool]:
    """``["--a=1", "--swa"]`` -> ``{"a": "1", "swa": True}`` (for checks and documents)."""
    out: dict[str, str | bool] = {}
    for arg in args:
        key, sep, value = arg.lstrip("-").partition("=")
        out[key] = value if sep else True
    return out


# ------------------------------------------------------------------------------------------------
# training set
# ------------------------------------------------------------------------------------------------


def read_xyz(text: str) -> list[Atoms]:
    """Structures of an extxyz text (the training-set format)."""
    import ase.io

    if not text or not text.strip():
        return []
    try:
        return list(ase.io.read(io.StringIO(text), format="extxyz", index=":"))
    except Exception as exc:  # ase raises many kinds
        raise InputError(f"training set is not readable extxyz: {exc}", stage=STAGE) from exc


def reference_forces(atoms: Atoms, key: str = "REF_forces") -> np.ndarray | None:
    """The reference forces (N, 3) of a structure stored under ``key``, or None. (ase's extxyz
    reader moves a plain ``forces`` key into a single-point calculator: read from there too.)"""
    if key in atoms.arrays:
        return np.asarray(atoms.arrays[key], dtype=float)
    results = getattr(atoms.calc, "results", {}) if atoms.calc is not None else {}
    if key == "forces" and "forces" in results:
        return np.asarray(results["forces"], dtype=float)
    return None


def check_training_set(
    atoms_list: Sequence[Atoms],
    energy_key: str = "REF_energy",
    forces_key: str = "REF_forces",
    need_energy: bool = False,
    name: str | None = None,
) -> None:
    """Raise InputError unless ``atoms_list`` can train a model: two structures or more, each with
    finite reference forces under ``forces_key`` (and energies under ``energy_key`` if needed)."""
    n = len(atoms_list)
    if n == 0:
        raise InputError("training set is empty", material_id=name, stage=STAGE)
    if n < 2:
        raise InputError(
            "training set has a single structure; MACE needs at least two (training + validation)",
            material_id=name,
            stage=STAGE,
        )
    for i, atoms in enumerate(atoms_list):
        forces = reference_forces(atoms, forces_key)
        if forces is None:
            found = sorted(k for k in atoms.arrays if k not in ("numbers", "positions"))
            raise InputError(
                f"structure {i} has no forces under key {forces_key!r} (per-atom arrays: {found or 'none'})",
                material_id=name,
                stage=STAGE,
            )
        if forces.shape != (len(atoms), 3) or not np.all(np.isfinite(forces)):
            raise InputError(f"structure {i}: forces {forces_key!r} are not finite (N, 3) numbers", name, STAGE)
        if need_energy:
            energy = atoms.info.get(energy_key)
            if energy is None or not math.isfinite(float(energy)):
                raise InputError(f"structure {i} has no finite energy under key {energy_key!r}", name, STAGE)


def elements_of(atoms_list: Sequence[Atoms]) -> list[str]:
    """Chemical symbols present, sorted by atomic number."""
    from ase.data import atomic_numbers

    return sorted({s for a in atoms_list for s in a.get_chemical_symbols()}, key=atomic_numbers.get)


def model_elements(model_path: str | Path) -> list[str]:
    """Elements a MACE model file has parameters for."""
    import torch
    from ase.data import chemical_symbols

    model = torch.load(str(model_path), map_location="cpu", weights_only=False)
    return [chemical_symbols[int(z)] for z in model.atomic_numbers]


def check_foundation_elements(foundation_model: str | Path, elements: Sequence[str], name: str | None = None) -> None:
    """Raise UnsupportedElementsError when the fine-tuning set has elements the foundation model lacks."""
    path = Path(foundation_model)
    if not path.is_file():
        raise InputError(f"foundation model file {foundation_model} not found", material_id=name, stage=STAGE)
    known = set(model_elements(path))
    missing = sorted(set(elements) - known)
    if missing:
        raise UnsupportedElementsError(
            f"foundation model {path.name} has no parameters for element(s) {', '.join(missing)} "
            f"(it knows {', '.join(sorted(known))})",
            material_id=name,
            stage=STAGE,
        )


def valid_split(n: int, valid_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Train and validation indices exactly as mace splits ``n`` structures (its own function)."""
    from mace.data.utils import random_train_valid_split

    with tempfile.TemporaryDirectory() as tmp:
        train, valid = random_train_valid_split(list(range(n)), valid_fraction, seed, tmp)
    return list(train), list(valid)


# ------------------------------------------------------------------------------------------------
# running
# ------------------------------------------------------------------------------------------------


def mace_command(args: Sequence[str], nproc: int | None = None) -> list[str]:
    """The command line: ``python -m mace.cli.run_train ...``, under ``torchrun`` when ``nproc`` > 1."""
    if nproc and nproc > 1:
        return [
            sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
            "-m", "mace.cli.run_train", *args,
        ]  # fmt: skip
    return [sys.executable, "-m", "mace.cli.run_train", *args]


def log_tail(path: str | Path, lines: int = 40) -> str:
    path = Path(path)
    if not path.is_file():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def _die_with_parent() -> None:
    """In the child: ask Linux to SIGKILL it when the parent dies (a killed campaign must not
    leave a training running that a rerun would race with). No-op elsewhere."""
    try:
        import ctypes
        import signal

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


#: extra attribute of the INFO records :func:`run_mace_train` logs while mace trains (``{"epoch": k,
#: "epochs": n or None, "rmse_f_meV_A": x}``, k counted from 1): the campaign runner shows them on its
#: progress bar or progress lines
TRAINING_PROGRESS = "training_progress"
#: seconds between two looks at mace's metrics file while it trains
PROGRESS_POLL_S = 10.0
#: bytes read from the end of the metrics file for the latest epoch
_TAIL_BYTES = 65536

logger = logging.getLogger(__name__)


def latest_epoch(metrics: str | Path) -> dict[str, Any] | None:
    """The last epoch mace has evaluated, from its JSON-lines metrics file (:func:`metrics_file`; only
    its last 64 kB are read): ``{"epoch": k (from 1), "rmse_f_meV_A": validation force RMSE}``, or
    None before the first evaluation."""
    try:
        with open(metrics, "rb") as fh:
            fh.seek(max(0, fh.seek(0, os.SEEK_END) - _TAIL_BYTES))
            lines = fh.read().decode(errors="replace").splitlines()
    except OSError:  # not written yet
        return None
    for line in reversed(lines):
        try:
            row = json.loads(line)
        except ValueError:
            continue  # a line cut by the tail or still being written
        if isinstance(row, dict) and row.get("mode") == "eval" and row.get("epoch") is not None and row["epoch"] >= 0:
            return {"epoch": int(row["epoch"]) + 1, "rmse_f_meV_A": _milli(row.get("rmse_f"))}
    return None


def _log_epoch(latest: dict[str, Any], epochs: int | None) -> None:
    rmse = latest.get("rmse_f_meV_A")
    logger.info("mace epoch %d%s%s", latest["epoch"], f"/{epochs}" if epochs else "",
                f", validation force RMSE {rmse:.1f} meV/Å" if rmse is not None else "",
                extra={TRAINING_PROGRESS: {**latest, "epochs": epochs}})


def run_mace_train(
    args: Sequence[str],
    work_dir: str | Path,
    nproc: int | None = None,
    num_threads: int | None = None,
    log_name: str = LOG_NAME,
    timeout: float | None = None,
) -> Path:
    """Run mace's training entry point in a subprocess in ``work_dir``; stdout+stderr appended to
    ``work_dir/log_name``. Returns the log path; raises CalculationError (log kept) on failure."""
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    log_path = work_dir / log_name
    env = dict(os.environ)
    if num_threads:
        env["OMP_NUM_THREADS"] = str(num_threads)
        env["MKL_NUM_THREADS"] = str(num_threads)
    cmd = mace_command(args, nproc)
    given = args_to_dict(args)
    epochs = int(given["max_num_epochs"]) if isinstance(given.get("max_num_epochs"), str) else None
    # mace requires --name; 123 is its own default seed
    metrics = metrics_file(work_dir, str(given.get("name")), int(given.get("seed", 123)))
    with open(log_path, "a") as log:
        log.write(f"# phonon_flows: running {' '.join(cmd[1:])}\n")
        log.flush()
        proc = subprocess.Popen(cmd, cwd=work_dir, stdout=log, stderr=subprocess.STDOUT, env=env,
                                preexec_fn=_die_with_parent)
        t0, reported = time.monotonic(), None
        try:
            while True:  # wait, and say which epoch mace has reached (its metrics file) while it trains
                try:
                    proc.wait(timeout=PROGRESS_POLL_S)
                    break
                except subprocess.TimeoutExpired:
                    pass
                if timeout is not None and time.monotonic() - t0 > timeout:
                    raise CalculationError(f"mace training ran past {timeout} s; log: {log_path}", stage=STAGE)
                latest = latest_epoch(metrics)
                if latest is not None and latest != reported:
                    reported = latest
                    _log_epoch(latest, epochs)
        except BaseException:  # a timeout, Ctrl-C, a killed job: no training left running behind it
            proc.kill()
            proc.wait()
            raise
    latest = latest_epoch(metrics) if proc.returncode == 0 else None
    if latest is not None and latest != reported:  # the last epoch, however fast it came
        _log_epoch(latest, epochs)
    if proc.returncode != 0:
        tail = log_tail(log_path, 15)
        raise CalculationError(
            f"mace training failed (exit code {proc.returncode}); log kept in {log_path}:\n{tail}", stage=STAGE
        )
    return log_path


# ------------------------------------------------------------------------------------------------
# results
# ------------------------------------------------------------------------------------------------


def metrics_file(work_dir: str | Path, name: str, seed: int) -> Path:
    return Path(work_dir) / "results" / f"{name}_run-{seed}_train.txt"


def _num(value: Any) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _milli(value: Any) -> float | None:
    v = _num(value)
    return None if v is None else 1000.0 * v


def parse_learning_curve(
    path: str | Path,
    start_swa: int | None = None,
    stage: str | None = None,
    epoch_offset: int = 0,
    include_initial: bool = True,
) -> list[dict[str, Any]]:
    """Per-epoch metrics from mace's JSON-lines log (``results/*_train.txt``).

    Training rows (``mode == "opt"``, one per batch) give the mean ``train_loss`` of an epoch;
    evaluation rows give validation loss and errors (forces in meV/Å, energies in meV/atom).
    After a restart mace appends: the last row of an epoch wins. Epoch -1 is the evaluation
    before training. ``stage``: label of all epochs, else "one"/"two" split at ``start_swa``.
    """
    path = Path(path)
    if not path.is_file():
        return []
    opt_losses: dict[int, list[float]] = {}
    opt_times: dict[int, float] = {}
    evals: dict[int, dict[str, Any]] = {}
    restarted = False
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        epoch = row.get("epoch")
        if row.get("mode") == "eval" and epoch is None:
            if -1 in evals:
                restarted = True  # a rerun (--restart_latest) starts with a new initial evaluation
            else:
                evals[-1] = row
            continue
        if epoch is None:
            continue
        epoch = int(epoch)
        if restarted:
            # the rerun continues from its checkpoint epoch: drop what the first run logged from there on
            for table in (opt_losses, opt_times, evals):
                for e in [e for e in table if e >= epoch]:
                    del table[e]
            restarted = False
        if row.get("mode") == "opt":
            loss = _num(row.get("loss"))
            opt_losses.setdefault(epoch, []).append(loss if loss is not None else float("nan"))
            opt_times[epoch] = opt_times.get(epoch, 0.0) + (_num(row.get("time")) or 0.0)
        elif row.get("mode") == "eval":
            evals[epoch] = row
    curve = []
    for epoch in sorted(set(evals) | set(opt_losses)):
        if epoch == -1 and not include_initial:
            continue
        row = evals.get(epoch, {})
        losses = opt_losses.get(epoch)
        if epoch == -1:
            label = "initial"
        elif stage is not None:
            label = stage
        elif start_swa is not None and epoch >= start_swa:
            label = "two"
        else:
            label = "one"
        curve.append(
            {
                "epoch": epoch + (epoch_offset if epoch >= 0 else 0),
                "stage": label,
                "train_loss": float(np.mean(losses)) if losses else None,
                "valid_loss": _num(row.get("loss")),
                "valid_force_mae": _milli(row.get("mae_f")),
                "valid_force_rmse": _milli(row.get("rmse_f")),
                "valid_energy_mae": _milli(row.get("mae_e_per_atom")),
                "valid_energy_rmse": _milli(row.get("rmse_e_per_atom")),
                "time": opt_times.get(epoch),
            }
        )
    return curve


_LOG_TIME = r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}) INFO: "


def epoch_seconds(log_path: str | Path) -> list[float]:
    """Wall time of each epoch (training plus validation), s, from the timestamps of mace's
    ``Initial:``/``Epoch N:`` log lines; runs after a restart are counted too."""
    import re
    from datetime import datetime

    path = Path(log_path)
    if not path.is_file():
        return []
    pattern = re.compile(_LOG_TIME + r"(?:Initial|Epoch (\d+)): head")
    out: list[float] = []
    prev: tuple[datetime, int] | None = None
    for line in path.read_text(errors="replace").splitlines():
        m = pattern.match(line)
        if not m:
            continue
        stamp = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S.%f")
        epoch = int(m.group(2)) if m.group(2) is not None else -1
        if prev is not None and epoch == prev[1] + 1 and epoch >= 0:
            out.append((stamp - prev[0]).total_seconds())
        elif prev is not None and epoch > prev[1] + 1:
            pass  # epochs without evaluation in between (eval_interval > 1): not counted
        prev = (stamp, epoch)
    return out


def logged_run_facts(log_path: str | Path) -> dict[str, Any]:
    """What mace's log says: ``n_train``/``n_valid`` and ``final_epoch`` (epoch of the checkpoint
    the saved model comes from; the last one logged)."""
    import re

    path = Path(log_path)
    text = path.read_text(errors="replace") if path.is_file() else ""
    facts: dict[str, Any] = {}
    counts = re.findall(r"Total number of configurations: train=(\d+), valid=(\d+)", text)
    if counts:
        facts["n_train"], facts["n_valid"] = int(counts[-1][0]), int(counts[-1][1])
    loaded = re.findall(r"Loaded Stage (?:one|two) model from epoch (\d+)", text)
    if loaded:
        facts["final_epoch"] = int(loaded[-1])
    return facts


def diverged_epoch(curve: Sequence[dict[str, Any]]) -> int | None:
    """First epoch whose training or validation loss is NaN/inf, or None."""
    for row in curve:
        for key in ("train_loss", "valid_loss"):
            value = row.get(key)
            if value is not None and not math.isfinite(value):
                return row["epoch"]
    return None


def swa_active(hp: MaceHyperparameters) -> bool:
    """Whether mace runs stage two (it skips it when start_swa >= max_num_epochs)."""
    if not hp.swa:
        return False
    start = hp.start_swa if hp.start_swa is not None else max(1, hp.max_num_epochs // 4 * 3)
    return start < hp.max_num_epochs


def final_model_path(work_dir: str | Path, name: str, stage_two: bool) -> Path:
    """The model file mace writes at the end: ``<name>_stagetwo.model`` after stage two."""
    return Path(work_dir) / (f"{name}_stagetwo.model" if stage_two else f"{name}.model")


def force_errors(predicted: Sequence[np.ndarray], reference: Sequence[np.ndarray]) -> tuple[float, float]:
    """Force MAE and RMSE over all components, meV/Å (:func:`phonon_flows.core.metrics.force_metrics`)."""
    m = force_metrics(list(reference), list(predicted))
    return m.mae_meV_per_A, m.rmse_meV_per_A


def energy_mae_per_atom(predicted: Sequence[float], reference: Sequence[float], n_atoms: Sequence[int]) -> float:
    """Energy MAE per atom, meV/atom."""
    diff = [(p - r) / n for p, r, n in zip(predicted, reference, n_atoms)]
    return 1000.0 * float(np.mean(np.abs(diff))) if diff else float("nan")


@dataclass
class MaceTrainingRun:
    """What a training run left behind."""

    model_path: Path
    work_dir: Path
    log_path: Path
    args: list[str]
    learning_curve: list[dict[str, Any]]
    train_indices: list[int]
    valid_indices: list[int]
    wall_time: float
    seconds_per_epoch: float | None
    final_epoch: int | None = None
    energy_phase_args: list[str] = field(default_factory=list)
    #: a committee's member runs (``model_path`` is then the committee file)
    members: list[MaceTrainingRun] = field(default_factory=list)


def _write_xyz(atoms_list: Sequence[Atoms], path: Path) -> None:
    import ase.io

    ase.io.write(str(path), list(atoms_list), format="extxyz")


def train_mace(
    atoms_list: Sequence[Atoms],
    hp: MaceHyperparameters,
    work_dir: str | Path,
    device: str = "cpu",
    energy_key: str = "REF_energy",
    forces_key: str = "REF_forces",
    nproc: int | None = None,
    num_threads: int | None = None,
    restart: bool = True,
    name: str | None = None,
    timeout: float | None = None,
    valid_indices: Sequence[int] | None = None,
) -> MaceTrainingRun:
    """Train a MACE model on labelled structures with mace's own training entry point.

    Writes ``train.xyz`` into ``work_dir`` and runs there; with ``restart`` a rerun in the same
    ``work_dir`` continues from mace's latest checkpoint (``--restart_latest``). ``nproc`` > 1 runs
    ``--distributed`` under torchrun, one process per GPU. Then the optional energy phase.
    ``valid_indices``: validate on these structures (written to ``valid.xyz``, ``--valid_file``)
    instead of mace's seeded split. ``hp.committee`` > 1 trains a committee (:func:`train_committee`).
    Raises InputError on a bad training set, CalculationError (log kept) when mace fails or the
    loss turns NaN.
    """
    if getattr(hp, "committee", 1) > 1:
        return train_committee(atoms_list, hp, work_dir, device=device, energy_key=energy_key, forces_key=forces_key,
                               nproc=nproc, num_threads=num_threads, restart=restart, name=name, timeout=timeout)
    work_dir = Path(work_dir).resolve()
    work_dir.mkdir(parents=True, exist_ok=True)
    need_energy = hp.energy_weight > 0 or (hp.swa and hp.swa_energy_weight > 0) or hp.energy_phase is not None
    check_training_set(atoms_list, energy_key, forces_key, need_energy=need_energy, name=name)
    if hp.foundation_model:
        check_foundation_elements(hp.foundation_model, elements_of(atoms_list), name=name)
    train_file = work_dir / TRAIN_FILE
    distributed = bool(nproc and nproc > 1)
    if valid_indices is None:
        _write_xyz(atoms_list, train_file)
        train_idx, valid_idx = valid_split(len(atoms_list), hp.valid_fraction, hp.seed)
    else:
        valid_idx = sorted({int(i) for i in valid_indices})
        train_idx = sorted(set(range(len(atoms_list))) - set(valid_idx))
        _write_xyz([atoms_list[i] for i in train_idx], train_file)
        _write_xyz([atoms_list[i] for i in valid_idx], work_dir / VALID_FILE)
    args = build_mace_args(hp, train_file, work_dir, device, energy_key, forces_key, restart=restart, distributed=distributed)
    if valid_indices is not None:
        args.append(f"--valid_file={work_dir / VALID_FILE}")

    t0 = time.perf_counter()
    log_path = run_mace_train(args, work_dir, nproc=nproc, num_threads=num_threads, timeout=timeout)
    stage_two = swa_active(hp)
    start_swa = hp.start_swa if hp.start_swa is not None else max(1, hp.max_num_epochs // 4 * 3)
    curve = parse_learning_curve(metrics_file(work_dir, hp.name, hp.seed), start_swa=start_swa if stage_two else None)
    _raise_if_diverged(curve, log_path, name)
    facts = logged_run_facts(log_path)
    if facts.get("n_valid") is not None and facts["n_valid"] != len(valid_idx):
        raise CalculationError(
            f"mace validated on {facts['n_valid']} structures, expected {len(valid_idx)}; log: {log_path}", name, STAGE
        )
    final_epoch = facts.get("final_epoch")
    seconds = epoch_seconds(log_path)
    model_path = final_model_path(work_dir, hp.name, stage_two)
    if not model_path.is_file():
        raise CalculationError(f"mace finished without writing {model_path.name}; log kept in {log_path}", name, STAGE)

    phase_args: list[str] = []
    if hp.energy_phase is not None:
        phase = _energy_phase(hp, model_path, train_file, work_dir / ENERGY_PHASE_DIR, device, energy_key, forces_key,
                              restart, distributed, nproc, num_threads, timeout, name)
        phase_args = phase.args
        curve = curve + phase.learning_curve
        if phase.final_epoch is not None:
            final_epoch = phase.final_epoch
        seconds += phase.seconds
        model_path = phase.model_path
    wall = time.perf_counter() - t0
    return MaceTrainingRun(
        model_path=model_path,
        work_dir=work_dir,
        log_path=log_path,
        args=args,
        learning_curve=curve,
        train_indices=train_idx,
        valid_indices=valid_idx,
        wall_time=wall,
        seconds_per_epoch=float(np.mean(seconds)) if seconds else None,
        final_epoch=final_epoch,
        energy_phase_args=phase_args,
    )


def train_committee(atoms_list: Sequence[Atoms], hp: MaceHyperparameters, work_dir: str | Path, device: str = "cpu",
                    nproc: int | None = None, num_threads: int | None = None, **run_kwargs: Any) -> MaceTrainingRun:
    """Train ``hp.committee`` MACE models (seeds ``hp.seed``, ``hp.seed + 1``, ...) on the same
    structures, all validated on the same structures (the split of ``hp.seed``), each in its own
    folder ``member-<i>``; then save them as one committee model file (their mean force, see
    :mod:`phonon_flows.core.mace_committee`). ``run_kwargs``: :func:`train_mace`'s other options
    (keys, ``restart``, ``name``, ``timeout``), for each member.

    With ``num_threads`` set (CPU: each member's process gets that many threads) or on CUDA, the
    members train at the same time; otherwise one after the other (each would take every core).
    The run's learning curve, command and log are member 0's; ``members`` lists every member's run.
    """
    from concurrent.futures import ThreadPoolExecutor

    from phonon_flows.core.mace_committee import write_committee

    k = int(hp.committee)
    name = run_kwargs.get("name")
    if hp.energy_phase is not None:
        raise InputError("a committee is trained on forces only: energy_phase is not supported with committee > 1",
                         name, STAGE)
    if nproc and nproc > 1:
        raise InputError("a committee trains one member per process: use num_gpus 1 with committee > 1", name, STAGE)
    work_dir = Path(work_dir).resolve()
    work_dir.mkdir(parents=True, exist_ok=True)
    _, valid_idx = valid_split(len(atoms_list), hp.valid_fraction, hp.seed)
    members_hp = [hp.model_copy(update={"committee": 1, "seed": hp.seed + i}) for i in range(k)]

    def one(i: int) -> MaceTrainingRun:
        return train_mace(atoms_list, members_hp[i], work_dir / MEMBER_DIR.format(i), device=device,
                          num_threads=num_threads, valid_indices=valid_idx, **run_kwargs)

    t0 = time.perf_counter()
    parallel = num_threads is not None or device.startswith("cuda")
    with ThreadPoolExecutor(max_workers=k if parallel else 1) as pool:
        runs = list(pool.map(one, range(k)))
    model_path = write_committee([r.model_path for r in runs], work_dir / COMMITTEE_MODEL.format(hp.name))
    first = runs[0]
    seconds = [r.seconds_per_epoch for r in runs if r.seconds_per_epoch is not None]
    return MaceTrainingRun(
        model_path=model_path,
        work_dir=work_dir,
        log_path=first.log_path,
        args=first.args,
        learning_curve=first.learning_curve,
        train_indices=first.train_indices,
        valid_indices=first.valid_indices,
        wall_time=time.perf_counter() - t0,
        seconds_per_epoch=float(np.mean(seconds)) if seconds else None,
        final_epoch=first.final_epoch,
        members=runs,
    )


@dataclass
class _EnergyPhase:
    args: list[str]
    learning_curve: list[dict[str, Any]]
    final_epoch: int | None
    seconds: list[float]
    model_path: Path


def _energy_phase(hp, model_path, train_file, phase_dir, device, energy_key, forces_key, restart, distributed,
                  nproc, num_threads, timeout, name) -> _EnergyPhase:
    """The optional energy phase: a second mace run from the force model (``foundation_model``)
    with the energy phase's weights, epochs and learning rate; its epochs count on from the
    first run's."""
    ep = hp.energy_phase
    phase_hp = hp.model_copy(
        update={
            "name": f"{hp.name}_fe",
            "forces_weight": ep.forces_weight,
            "energy_weight": ep.energy_weight,
            "max_num_epochs": ep.max_num_epochs,
            "lr": ep.lr if ep.lr is not None else hp.lr,
            "swa": False,
            "E0s": ep.E0s,
            "foundation_model": str(model_path),
            "energy_phase": None,
            "extra": {**hp.extra, **ep.extra},
        }
    )
    phase_args = build_mace_args(
        phase_hp, train_file, phase_dir, device, energy_key, forces_key, restart=restart, distributed=distributed
    )
    phase_log = run_mace_train(phase_args, phase_dir, nproc=nproc, num_threads=num_threads, timeout=timeout)
    phase_curve = parse_learning_curve(
        metrics_file(phase_dir, phase_hp.name, hp.seed),
        stage="energy",
        epoch_offset=hp.max_num_epochs,
        include_initial=False,
    )
    _raise_if_diverged(phase_curve, phase_log, name)
    phase_facts = logged_run_facts(phase_log)
    final_epoch = None
    if phase_facts.get("final_epoch") is not None:
        final_epoch = phase_facts["final_epoch"] + hp.max_num_epochs
    phase_model = final_model_path(phase_dir, phase_hp.name, False)
    if not phase_model.is_file():
        raise CalculationError(f"energy phase finished without writing {phase_model.name}; log: {phase_log}", name, STAGE)
    return _EnergyPhase(phase_args, phase_curve, final_epoch, epoch_seconds(phase_log), phase_model)


def _raise_if_diverged(curve: Sequence[dict[str, Any]], log_path: Path, name: str | None) -> None:
    epoch = diverged_epoch(curve)
    if epoch is not None:
        raise CalculationError(
            f"training diverged: NaN/inf loss at epoch {epoch}; lower the learning rate (lr) "
            f"or check the training set; log kept in {log_path}",
            material_id=name,
            stage=STAGE,
        )
