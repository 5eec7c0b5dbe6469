"""Shared pieces of the task documents."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, Field

from phonon_flows.core.polymorphs import ByTemperature

__all__ = ["ByTemperature", "EngineInfo", "MaterialError", "by_temperature", "get_field"]

EngineKind = Literal["dft", "reference", "mlip", "imported"]


def get_field(obj: Any, key: str, default: Any = None) -> Any:
    """``obj[key]`` of a mapping, ``obj.key`` of an object (a task document either way), ``default``
    if absent."""
    if obj is None:
        return default
    if isinstance(obj, Mapping):
        return obj.get(key, default)
    return getattr(obj, key, default)


class EngineInfo(BaseModel):
    """Which force engine made a result, and with what settings.

    ``kind="reference"`` marks a pretrained universal potential (CHGNet) or ASE EMT standing in
    for DFT on machines without VASP: such results are *not* DFT and say so in ``label``.
    """

    name: str = Field(description="Engine name, e.g. 'vasp', 'chgnet', 'emt', 'mace', 'phonopy-import'")
    kind: EngineKind = Field(description="dft, reference (stand-in for DFT), mlip (trained MACE) or imported")
    version: str | None = Field(default=None, description="Version of the engine's package or code")
    settings: dict[str, Any] = Field(default_factory=dict, description="Settings that change the result")
    model_sha256: str | None = Field(default=None, description="sha256 of the model file, for MLIPs")
    provenance: str | None = Field(default=None, description="Where the data came from (path, task id, database)")

    @property
    def is_dft(self) -> bool:
        return self.kind == "dft"

    @property
    def label(self) -> str:
        """Human-readable name used in tables and plots."""
        if self.kind == "reference":
            return f"{self.name} (reference potential, NOT DFT)"
        if self.kind == "dft" and self.settings.get("label"):  # e.g. "DFT (PBEsol, phonondb)"
            return str(self.settings["label"])
        if self.kind == "mlip" and self.model_sha256:
            return f"{self.name} [{self.model_sha256[:10]}]"
        return self.name


class MaterialError(BaseModel):
    """A failure of one material in one stage; campaigns record these and carry on."""

    material_id: str = Field(description="The material's id in the campaign")
    stage: str = Field(description="Stage that failed: input, relax, perturb, label, train, phonon, benchmark")
    reason: str = Field(description="One-line reason")
    directory: str | None = Field(default=None, description="Job directory with logs, when there is one")


def _temperature_keys(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {ByTemperature._key(k): v for k, v in value.items()}
    return value


def by_temperature(value_type: Any) -> Any:
    """The annotated type of a dict keyed by temperature: keys normalised to ``"T300"`` on
    validation (old documents keyed ``"300"`` read too), lookups by number allowed."""
    return Annotated[dict[str, value_type], BeforeValidator(_temperature_keys), AfterValidator(ByTemperature)]
