"""Task documents of the training stage: MACE hyperparameters and the trained-model document.

The defaults of :class:`MaceHyperparameters` are the paper's recipe (see the design notes): forces
only (forces weight 1000, energy weight 0), two stages (stage two from epoch 100 with forces
weight 100 and lr 0.001), 200 epochs, EMA, float64. Every other ``mace_run_train`` option can be
passed through ``extra``.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from phonon_flows.core.mace_training import build_mace_args

#: hyperparameter fields that map one to one to a ``mace_run_train`` option of the same name
MACE_OPTION_FIELDS = (
    "num_interactions",
    "correlation",
    "r_max",
    "hidden_irreps",
    "max_L",
    "E0s",
    "batch_size",
    "valid_batch_size",
    "seed",
    "valid_fraction",
    "forces_weight",
    "energy_weight",
    "lr",
    "swa",
    "start_swa",
    "swa_forces_weight",
    "swa_energy_weight",
    "swa_lr",
    "max_num_epochs",
    "ema",
    "ema_decay",
    "default_dtype",
    "foundation_model",
)

_IRREP = re.compile(r"^\s*(\d+)x(\d+)([eo])\s*$")


class EnergyPhase(BaseModel):
    """Optional second training phase that adds energies (the paper's MACE-FE).

    It fine-tunes the force-only model (as ``--foundation_model``) with energy and force weights.
    """

    model_config = ConfigDict(extra="forbid")

    forces_weight: float = Field(default=100.0, ge=0, description="Weight of the force loss (dimensionless)")
    energy_weight: float = Field(default=50.0, ge=0, description="Weight of the energy loss (dimensionless)")
    max_num_epochs: int = Field(default=100, ge=1, description="Number of epochs of this phase")
    lr: float | None = Field(default=None, gt=0, description="Learning rate; None: the first phase's lr")
    E0s: str = Field(default="foundation", description="Atomic energies: 'foundation' keeps phase one's E0s")
    extra: dict[str, Any] = Field(default_factory=dict, description="Other mace_run_train options of this phase")


class MaceHyperparameters(BaseModel):
    """MACE training settings. Defaults: the paper's recipe (``preset("paper")``)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(default="mace", pattern=r"^[A-Za-z0-9_.-]+$", description="Run name (model file stem)")
    num_interactions: int = Field(default=2, ge=1, description="Number of message-passing layers")
    correlation: int = Field(default=3, ge=1, description="Correlation order of each layer")
    r_max: float = Field(default=6.0, gt=0, description="Radial cutoff, Å")
    hidden_irreps: str = Field(default="64x0e + 64x1o", description="Irreps of the hidden node features")
    max_L: int = Field(default=1, ge=0, description="Highest L of the hidden equivariant features")
    E0s: str = Field(default="average", description="Isolated-atom energies: 'average', 'foundation' or a dict")
    batch_size: int = Field(default=4, ge=1, description="Training batch size (structures)")
    valid_batch_size: int = Field(default=4, ge=1, description="Validation batch size (structures)")
    seed: int = Field(default=123, description="Random seed (also of the train/validation split)")
    valid_fraction: float = Field(default=0.05, gt=0, lt=1, description="Fraction of structures for validation")
    forces_weight: float = Field(default=1000.0, ge=0, description="Force loss weight, stage one")
    energy_weight: float = Field(default=0.0, ge=0, description="Energy loss weight, stage one")
    lr: float = Field(default=0.01, gt=0, description="Learning rate, stage one")
    swa: bool = Field(default=True, description="Use stage two (mace's --swa) from epoch start_swa")
    start_swa: int | None = Field(default=100, ge=0, description="First epoch of stage two")
    swa_forces_weight: float = Field(default=100.0, ge=0, description="Force loss weight, stage two")
    swa_energy_weight: float = Field(default=0.0, ge=0, description="Energy loss weight, stage two")
    swa_lr: float = Field(default=0.001, gt=0, description="Learning rate, stage two")
    max_num_epochs: int = Field(default=200, ge=1, description="Total number of epochs")
    ema: bool = Field(default=True, description="Exponential moving average of the weights")
    ema_decay: float | None = Field(default=None, gt=0, lt=1, description="EMA decay; None: mace's default (0.99)")
    default_dtype: Literal["float64", "float32"] = Field(default="float64", description="Training precision")
    foundation_model: str | None = Field(
        default=None, description="Path of a MACE model file to fine-tune from (its architecture and r_max win)"
    )
    energy_phase: EnergyPhase | None = Field(
        default=None, description="Optional second phase adding energies (MACE-FE: forces 100, energy 50, 100 epochs)"
    )
    extra: dict[str, Any] = Field(
        default_factory=dict, description="Any other mace_run_train option, e.g. {'max_ell': 2, 'patience': 50}"
    )
    committee: int = Field(
        default=1, ge=1, le=16,
        description="Number of MACE models trained with seeds seed, seed + 1, ... on the same data and validation "
        "structures, saved as one committee model (their mean force). The phonons then carry the members' "
        "frequency spread (PhononDoc.committee_spread_THz, THz), a flag for materials outside the training data",
    )

    @field_validator("hidden_irreps")
    @classmethod
    def _check_irreps(cls, value: str) -> str:
        parts = [p for p in value.split("+")]
        muls = set()
        for part in parts:
            m = _IRREP.match(part)
            if not m:
                raise ValueError(f"hidden_irreps {value!r}: cannot read {part.strip()!r} (want e.g. '64x0e + 64x1o')")
            muls.add(int(m.group(1)))
        if len(muls) != 1:
            raise ValueError(f"hidden_irreps {value!r}: all irreps need the same number of channels")
        return " + ".join(p.strip() for p in parts)

    @model_validator(mode="after")
    def _check_consistency(self) -> "MaceHyperparameters":
        lmax = max(int(_IRREP.match(p).group(2)) for p in self.hidden_irreps.split("+"))
        if lmax != self.max_L:
            raise ValueError(f"max_L={self.max_L} does not match hidden_irreps {self.hidden_irreps!r} (L up to {lmax})")
        clash = sorted(set(self.extra) & (set(MACE_OPTION_FIELDS) | {"name", "train_file", "work_dir", "device"}))
        if clash:
            raise ValueError(f"set {', '.join(clash)} with the named field(s), not through extra")
        return self

    def as_dict(self) -> dict[str, Any]:
        """monty's JSON form (``@module``, ``@class`` and the fields). A Maker holding these settings
        keeps them through serialisers that only know ``as_dict``: FireWorks re-serialises each
        job with a non-strict ``jsanitize``, which would write a bare pydantic model as ``str()``."""
        return {"@module": type(self).__module__, "@class": type(self).__name__, **self.model_dump(mode="json")}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "MaceHyperparameters":
        return cls.model_validate({k: v for k, v in d.items() if not k.startswith("@")})

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> "MaceHyperparameters":
        """Named settings: ``paper`` (the recipe) or ``small`` (tiny fast model for CPU demos and tests)."""
        try:
            base = PRESETS[name]
        except KeyError:
            raise ValueError(f"unknown MACE preset {name!r}; choose one of {sorted(PRESETS)}") from None
        return cls(**{**base, **overrides})

    def to_mace_args(
        self,
        train_file: str,
        work_dir: str,
        device: str = "cpu",
        energy_key: str = "REF_energy",
        forces_key: str = "REF_forces",
    ) -> list[str]:
        """The ``mace_run_train`` arguments of these settings (see :func:`phonon_flows.core.mace_training.build_mace_args`)."""
        return build_mace_args(self, train_file, work_dir, device=device, energy_key=energy_key, forces_key=forces_key)


#: named hyperparameter sets
PRESETS: dict[str, dict[str, Any]] = {
    "paper": {},
    "small": {
        "num_interactions": 2,
        "correlation": 2,
        "r_max": 4.5,
        "hidden_irreps": "8x0e + 8x1o",
        "max_L": 1,
        "batch_size": 2,
        "valid_batch_size": 4,
        "valid_fraction": 0.2,
        "lr": 0.01,
        "start_swa": 6,
        "swa_lr": 0.002,
        "max_num_epochs": 8,
        "extra": {"max_ell": 2, "num_radial_basis": 6, "MLP_irreps": "8x0e", "radial_MLP": "[16, 16]"},
    },
}


class EpochMetrics(BaseModel):
    """One epoch of a learning curve (mace's own per-epoch evaluation of the validation set)."""

    epoch: int = Field(description="Epoch, counted from 0; -1 is the evaluation before any training")
    stage: Literal["initial", "one", "two", "energy"] = Field(description="Training stage of this epoch")
    train_loss: float | None = Field(default=None, description="Mean loss of the training batches (dimensionless)")
    valid_loss: float | None = Field(default=None, description="Validation loss (dimensionless)")
    valid_force_mae: float | None = Field(default=None, description="Validation force MAE, meV/Å")
    valid_force_rmse: float | None = Field(default=None, description="Validation force RMSE, meV/Å")
    valid_energy_mae: float | None = Field(default=None, description="Validation energy MAE, meV/atom")
    valid_energy_rmse: float | None = Field(default=None, description="Validation energy RMSE, meV/atom")
    time: float | None = Field(default=None, description="Seconds spent in this epoch's training steps")


class TrainingSetInfo(BaseModel):
    """What the model was trained on."""

    n_structures: int = Field(description="Number of structures in the training set (train + validation)")
    n_atoms: int = Field(description="Total number of atoms")
    elements: list[str] = Field(description="Chemical symbols present")
    material_ids: list[str] = Field(default_factory=list, description="Materials the structures come from")
    energy_key: str = Field(description="extxyz key of the reference energies")
    forces_key: str = Field(description="extxyz key of the reference forces")
    xyz_sha256: str = Field(description="sha256 of the extxyz text the model was trained on")


class TrainingDoc(BaseModel):
    """A trained MACE model, its metrics and its learning curve.

    The model file itself is ``model_b64`` (base64), which the training job declares as data: it
    goes to the job store's ``data`` store (GridFS with MongoDB) and is fetched by ``model_sha256``
    (see :func:`phonon_flows.engines.mace.fetch_model`).
    """

    hyperparameters: MaceHyperparameters = Field(description="Settings of the run")
    mace_version: str = Field(description="mace-torch version")
    torch_version: str | None = Field(default=None, description="torch version")
    command: list[str] = Field(default_factory=list, description="mace_run_train arguments of phase one")
    device: str = Field(description="Device the model was trained on: cpu, cuda, or cuda xN (distributed)")
    wall_time: float = Field(description="Wall time of the training, s")
    seconds_per_epoch: float | None = Field(default=None, description="Mean wall time of an epoch (training + validation), s")
    training_set: TrainingSetInfo | None = Field(default=None, description="The training set")
    n_train: int = Field(default=0, description="Structures used for training")
    n_valid: int = Field(default=0, description="Structures used for validation")
    valid_indices: list[int] = Field(default_factory=list, description="Indices (in the training set) of the validation structures")
    learning_curve: list[EpochMetrics] = Field(default_factory=list, description="Per-epoch metrics, all phases")
    final_epoch: int | None = Field(default=None, description="Epoch of the checkpoint the model comes from (best validation loss of its stage)")
    train_force_mae: float | None = Field(default=None, description="Final model's force MAE on the training structures, meV/Å")
    train_force_rmse: float | None = Field(default=None, description="Final model's force RMSE on the training structures, meV/Å")
    valid_force_mae: float | None = Field(default=None, description="Final model's force MAE on the validation structures, meV/Å")
    valid_force_rmse: float | None = Field(default=None, description="Final model's force RMSE on the validation structures, meV/Å")
    train_energy_mae: float | None = Field(default=None, description="Final model's energy MAE on training structures, meV/atom")
    valid_energy_mae: float | None = Field(default=None, description="Final model's energy MAE on validation structures, meV/atom")
    elements: list[str] = Field(default_factory=list, description="Elements the model knows")
    r_max: float | None = Field(default=None, description="Cutoff of the model, Å")
    model_sha256: str | None = Field(default=None, description="sha256 of the model file")
    committee_seeds: list[int] = Field(
        default_factory=list, description="Seeds of a committee's members (empty for one model); the learning "
        "curve, command and log are the first member's, the force errors the committee's")
    committee_valid_force_rmse: list[float] = Field(
        default_factory=list, description="Each committee member's own final validation force RMSE, meV/Å")
    model_file_name: str | None = Field(default=None, description="File name of the model as mace wrote it")
    model_size_bytes: int | None = Field(default=None, description="Size of the model file, bytes")
    model_b64: str | None = Field(default=None, description="The model file, base64 (stored in the data store)")
    work_dir: str | None = Field(default=None, description="Directory where mace ran (logs, checkpoints)")
    failed: bool = Field(default=False, description="True when the training failed; see error and log_tail")
    error: str | None = Field(default=None, description="One-line reason of a failure")
    log_tail: str | None = Field(default=None, description="Last lines of mace's log")
