"""Pydantic task documents, one module per stage. Units are in the field descriptions."""

from phonon_flows.schemas.benchmark import BenchmarkDoc
from phonon_flows.schemas.common import EngineInfo, MaterialError
from phonon_flows.schemas.forces import ForceDoc, RelaxDoc
from phonon_flows.schemas.perturbation import PerturbationDoc
from phonon_flows.schemas.phonon import PhononDoc, ThermalProperties
from phonon_flows.schemas.training import EnergyPhase, MaceHyperparameters, TrainingDoc
from phonon_flows.schemas.training_set import TrainingSetDoc

__all__ = [
    "BenchmarkDoc",
    "EnergyPhase",
    "EngineInfo",
    "ForceDoc",
    "MaceHyperparameters",
    "MaterialError",
    "PerturbationDoc",
    "PhononDoc",
    "RelaxDoc",
    "ThermalProperties",
    "TrainingDoc",
    "TrainingSetDoc",
]
