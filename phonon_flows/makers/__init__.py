"""jobflow Makers: thin wrappers of ``phonon_flows.core`` plus a force engine.

Imported lazily so that ``import phonon_flows.makers`` does not load torch or atomate2's VASP
machinery until a maker is used.
"""

from __future__ import annotations

import importlib

_WHERE = {
    "PerturbationMaker": "phonon_flows.makers.perturb",
    "VaspRelaxMaker": "phonon_flows.makers.vasp",
    "VaspForceMaker": "phonon_flows.makers.vasp",
    "RecipeBornMaker": "phonon_flows.makers.vasp",
    "ReferenceForceMaker": "phonon_flows.makers.reference",
    "ReferenceRelaxMaker": "phonon_flows.makers.reference",
    "TrainingSetMaker": "phonon_flows.makers.training_set",
    "MaceTrainingMaker": "phonon_flows.makers.training",
    "PhononMaker": "phonon_flows.makers.phonons",
    "BatchedPhononMaker": "phonon_flows.makers.batched_phonons",
    "BenchmarkMaker": "phonon_flows.makers.benchmark",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'phonon_flows.makers' has no attribute {name!r}")


def __dir__():
    return __all__
