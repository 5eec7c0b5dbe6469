"""Force engines behind one interface (see :mod:`phonon_flows.engines.base`).

Jobs carry an engine *spec* (a name plus keyword arguments, serializable), and build the engine
inside the job with :func:`get_engine`, so that a model is loaded once per job on the machine that
runs it.
"""

from __future__ import annotations

from typing import Any

from phonon_flows.engines.harmonic import HARMONIC_DFT_NAME
from phonon_flows.engines.mace import load_mace_engine
from phonon_flows.engines.reference import get_reference_engine
from phonon_flows.schemas.common import EngineInfo

REFERENCE_ENGINES = ("chgnet", "emt", HARMONIC_DFT_NAME)
#: engines whose labels are DFT (the harmonic DFT labels of phonondb, VASP)
DFT_ENGINES = (HARMONIC_DFT_NAME, "vasp")
MLIP_ENGINES = ("mace",)


def get_engine(name: str, **kwargs: Any):
    """Build a :class:`~phonon_flows.engines.base.ForceEngine` from its name and settings.

    - ``"chgnet"``: CHGNet 0.3.0 pretrained potential (weights ship in the chgnet wheel): a
      *reference stand-in for DFT*, not DFT.
    - ``"emt"``: ASE's EMT (fast, metals Al Cu Ag Au Ni Pd Pt and H C N O), for tests.
    - ``"harmonic-dft"``: harmonic DFT labels (PBEsol, phonondb) of displaced copies of phonondb
      supercells, ``entries={material_id: path}`` or ``folder=...`` (DFT, kind ``dft``).
    - ``"mace"``: a trained MACE model, ``model_sha256=...`` (from the store) or ``model_path=...``;
      ``device`` (auto/cpu/cuda), ``default_dtype`` (float64/float32), ``batch_size``.
    """
    key = name.lower()
    if key in REFERENCE_ENGINES:
        return get_reference_engine(key, **kwargs)
    if key in MLIP_ENGINES:
        return load_mace_engine(**kwargs)
    raise ValueError(f"unknown force engine {name!r}; choose one of {REFERENCE_ENGINES + MLIP_ENGINES}")


def engine_category(name: str) -> str:
    """FireWorks category of jobs using this engine: ``gpu`` for MLIPs, ``cpu`` otherwise."""
    return "gpu" if name.lower() in MLIP_ENGINES else "cpu"


def guess_engine_info(name: str, kwargs: dict) -> EngineInfo:
    """The EngineInfo of an engine spec before the engine is built (for a document saying why it
    could not be): its kind from the name, the model's sha256 and the plain settings."""
    kind = "mlip" if name.lower() in MLIP_ENGINES else ("dft" if name.lower() in DFT_ENGINES else "reference")
    sha = kwargs.get("model_sha256") if isinstance(kwargs.get("model_sha256"), str) else None
    settings = {k: v for k, v in kwargs.items() if isinstance(v, (str, int, float, bool, type(None)))}
    return EngineInfo(name=name, kind=kind, settings=settings, model_sha256=sha)
