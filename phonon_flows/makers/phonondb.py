"""phonondb entries in: DFT reference PhononDocs, DFT ForceDocs of the finite-displacement
supercells (training data), and the import of a folder of thousands of entries (progress, one
failure per bad entry, reuse of what a store already holds).

The numbers are Togo's (phonondb 2018-04-17, VASP, PBEsol, CC-BY-4.0): every document says so
in its ``engine`` (kind ``dft``, provenance with the mp id and the credit the license asks for).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from jobflow import job

from phonon_flows.core import phonondb as pdb
from phonon_flows.errors import PhononFlowsError
from phonon_flows.makers.phonons import (
    phonon_settings,
    phonondb_engine_info,
    phonondb_phonon_doc,
    store_phonon_doc,
)
from phonon_flows.progress import LineProgress
from phonon_flows.schemas.common import MaterialError
from phonon_flows.schemas.forces import FORCE_DATA_FIELDS, ForceDoc
from phonon_flows.schemas.phonon import PhononDoc


def phonondb_force_docs(path: str | Path, material_id: str | None = None) -> list[ForceDoc]:
    """The DFT ForceDocs of an entry's finite-displacement supercells (one displaced atom each):
    real VASP PBEsol forces. phonondb has no total energies: ``energy`` is the harmonic energy
    ½ uᵀΦu relative to the undisplaced supercell (the same convention as the harmonic DFT labels)."""
    imp, entry = pdb.load_phonondb_entry(path, use_born=False)
    mid = material_id or entry.mp_id or entry.name
    info = phonondb_engine_info(entry, imp, kind_of_labels="finite-displacement")
    info.settings["energy"] = "harmonic energy relative to the undisplaced supercell (phonondb has no total energies)"
    fc = pdb.full_force_constants(imp.phonon)
    docs = []
    for i, (s, forces, u) in enumerate(pdb.finite_displacement_supercells(imp.phonon, entry.force_sets)):
        energy, _ = pdb.harmonic_labels(fc, u)
        docs.append(ForceDoc(
            material_id=mid, formula=s.composition.reduced_formula, structure=s, n_atoms=len(s),
            energy=energy, energy_per_atom=energy / len(s), forces=forces.tolist(),
            max_force=float(np.linalg.norm(forces, axis=1).max()), engine=info, perturbation_index=i,
            dir_name=str(entry.source),
        ))
    return docs


@job(data=list(FORCE_DATA_FIELDS))
def phonondb_forces(path: str, material_id: str | None = None) -> list[ForceDoc]:
    """Job: the DFT ForceDocs of an entry's finite-displacement supercells."""
    return phonondb_force_docs(path, material_id)


# --------------------------------------------------------------------------------------------
# a folder of entries
# --------------------------------------------------------------------------------------------
@dataclass
class PhonondbImport:
    """What importing a set of entries did: documents made (or their summaries), ids reused from
    the store, and one failure per bad entry (named)."""

    imported: list[Any] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    failed: list[MaterialError] = field(default_factory=list)
    uuids: dict[str, str] = field(default_factory=dict)


def stored_phonondb_ids(store) -> set[str]:
    """material ids of the phonondb reference PhononDocs a JobStore holds."""
    store.connect()
    crit = {"output.engine.name": pdb.PHONONDB_NAME, "output.engine.kind": "dft", "output.failed": {"$ne": True}}
    return {d["output"]["material_id"] for d in store.docs_store.query(crit, properties=["output.material_id"])
            if d.get("output", {}).get("material_id")}


def import_phonondb_entries(
    paths: Sequence[str | Path],
    settings: dict | None = None,
    store=None,
    reuse: bool = True,
    summarize: Callable[[PhononDoc], Any] | None = None,
    progress: bool = True,
) -> PhonondbImport:
    """Import phonondb entries as DFT reference PhononDocs, one by one, with a progress bar.

    ``store``: a JobStore to put each document into as it is made (a job per document, as the
    ``import`` command does); with ``reuse``, entries whose material id it already holds are
    skipped (a rerun picks up where the last one stopped). A bad entry is recorded in
    ``failed`` with its name and the reason, and the others carry on. ``summarize`` turns each
    document into what is kept in ``imported`` (default: the document itself).
    """
    settings = dict(settings or phonon_settings())
    result = PhonondbImport()
    done = stored_phonondb_ids(store) if (store is not None and reuse) else set()
    for path in _progress(list(paths), progress, "importing phonondb entries"):
        name = pdb.entry_name(path)
        mid = pdb.mp_id_of(name) or name
        if mid in done:
            result.reused.append(mid)
            continue
        try:
            doc = phonondb_phonon_doc(path, settings, material_id=mid)
        except PhononFlowsError as exc:
            result.failed.append(MaterialError(material_id=mid, stage="import", reason=f"{name}: {exc.reason}",
                                               directory=str(path)))
            continue
        except Exception as exc:  # noqa: BLE001 - one bad entry never sinks the others
            result.failed.append(MaterialError(material_id=mid, stage="import",
                                               reason=f"{name}: {type(exc).__name__}: {exc}", directory=str(path)))
            continue
        if store is not None:
            result.uuids[mid] = _store(doc, store)
            done.add(mid)
        result.imported.append(summarize(doc) if summarize else doc)
    return result


def _store(doc: PhononDoc, store) -> str:
    from jobflow import run_locally

    j = store_phonon_doc(doc)
    j.name = f"phonondb import {doc.material_id}"
    run_locally(j, store=store, log=False, ensure_success=True)
    return j.uuid


def _progress(items: list, show: bool, description: str) -> Iterable:
    """``items``, with a progress bar on stderr when ``show``."""
    if not show or not items:
        yield from items
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(file=sys.stderr)
    if not console.is_terminal:  # a log file: plain lines
        lines = LineProgress(console, description, len(items))
        for item in items:
            yield item
            lines.update(advance=1)
        lines.close()
        return
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=False) as bar:
        task = bar.add_task(description, total=len(items))
        for item in items:
            yield item
            bar.advance(task)
