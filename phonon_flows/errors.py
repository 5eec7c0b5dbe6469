"""Errors that name the material and the problem."""

from __future__ import annotations


class PhononFlowsError(Exception):
    """Base error. ``str(err)`` is one line: ``<material>: <stage>: <reason>``."""

    def __init__(self, reason: str, material_id: str | None = None, stage: str | None = None):
        self.reason = reason
        self.material_id = material_id
        self.stage = stage
        parts = [p for p in (material_id, stage, reason) if p]
        super().__init__(": ".join(parts))

    def with_material(self, material_id: str, stage: str | None = None) -> "PhononFlowsError":
        """Same error, naming the material (and stage) when it did not yet."""
        return type(self)(self.reason, material_id=self.material_id or material_id, stage=self.stage or stage)


class InputError(PhononFlowsError, ValueError):
    """Bad input: unreadable file, disordered structure, overlapping atoms, no supercell fits..."""


class UnsupportedElementsError(InputError):
    """The engine or model has no parameters for some elements."""


class CalculationError(PhononFlowsError, RuntimeError):
    """A calculation failed: NaN/huge forces, VASP failure, diverging training."""
