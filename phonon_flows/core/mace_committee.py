"""A committee of MACE models as one model file.

``k`` MACE models of the same architecture, trained on the same data with different seeds, are
saved as one torch module (:class:`MaceCommittee`) whose energy, forces and stress are the
members' means. It loads wherever a MACE model file loads (``torch.load``, phonon_flows's MACE
engine, mace's ``MACECalculator(models=...)``) and keeps the one-file, one-sha256 way a model
travels through the store. Its output also holds each member's forces (``member_forces``,
shape ``(k, n_atoms, 3)``), from which the phonon job measures how much the members disagree
on each material's frequencies (:func:`phonon_flows.core.committee.committee_spread`).

Pickled by reference: loading the file needs phonon_flows importable (as a mace model needs mace).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

#: outputs averaged over the members (when every member gives them)
MEAN_KEYS = ("energy", "forces", "stress", "virials", "node_energy")


class MaceCommittee(torch.nn.Module):
    """Mean of several MACE models; ``member_forces`` keeps each member's forces."""

    def __init__(self, members: Sequence[torch.nn.Module]):
        super().__init__()
        if len(members) < 2:
            raise ValueError("a committee needs at least two models")
        first = members[0]
        for m in members[1:]:
            if float(m.r_max) != float(first.r_max) or \
                    [int(z) for z in m.atomic_numbers] != [int(z) for z in first.atomic_numbers]:
                raise ValueError("committee members must share r_max and elements")
        self.members = torch.nn.ModuleList(members)
        # what mace's data pipeline and calculators read of a model
        self.register_buffer("atomic_numbers", first.atomic_numbers.clone())
        self.register_buffer("r_max", first.r_max.clone() if torch.is_tensor(first.r_max)
                             else torch.tensor(float(first.r_max)))
        self.heads = list(getattr(first, "heads", None) or ["Default"])

    @property
    def committee_size(self) -> int:
        return len(self.members)

    def forward(self, data: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        outs = [m(dict(data), **kwargs) for m in self.members]
        out: dict[str, Any] = {}
        for key in MEAN_KEYS:
            vals = [o.get(key) for o in outs]
            if all(v is not None for v in vals):
                out[key] = torch.stack(vals).mean(dim=0)
            else:
                out[key] = None
        if out.get("forces") is not None:
            out["member_forces"] = torch.stack([o["forces"] for o in outs])
        return out


def write_committee(member_paths: Sequence[str | Path], out_path: str | Path) -> Path:
    """Load MACE model files (CPU) and save them as one :class:`MaceCommittee` file."""
    members = [torch.load(str(p), map_location="cpu", weights_only=False) for p in member_paths]
    committee = MaceCommittee(members)
    out_path = Path(out_path)
    torch.save(committee, str(out_path))
    return out_path
