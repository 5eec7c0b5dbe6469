"""The phonon jobs of a campaign: the supercell of each material, the MACE PhononMaker of a model,
and the VASP reference phonons as a static flow."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from jobflow import Flow, Maker, OnMissing
from pymatgen.core import Structure

from phonon_flows.core import phonons as ph_core
from phonon_flows.core.supercells import choose_supercell_matrix
from phonon_flows.makers.phonons import generate_phonon_displacements, phonons_from_forces


def supercell_for(structure: Structure, phonon_maker: Any, material_id: str) -> list[list[int]]:
    """The supercell matrix of ``structure`` in the window of ``phonon_maker`` (integer lists)."""
    m = choose_supercell_matrix(structure, phonon_maker.min_atoms, phonon_maker.max_atoms, material_id=material_id)
    return np.asarray(m).astype(int).tolist()


def n_finite_displacements(structure: Structure, supercell_matrix, settings: dict) -> int:
    """How many displaced supercells phonopy makes for ``structure`` with these settings."""
    phonon = ph_core.make_phonopy(structure, supercell_matrix, symprec=settings["symprec"])
    return len(ph_core.generate_displacements(
        phonon, distance=settings["displacement"], number_of_snapshots=settings.get("random_displacements"),
        random_seed=settings.get("random_seed"), snapshot_factor=settings.get("snapshot_factor", ph_core.DEFAULT_SNAPSHOT_FACTOR),
    ))


def with_model(phonon_maker: Any, model_sha256: Any) -> Any:
    """A copy of a PhononMaker computing forces with the MACE model ``model_sha256`` (a sha256 or
    a reference to a TrainingDoc's ``model_sha256``, resolved when the job runs)."""
    kwargs = {**dict(phonon_maker.engine_kwargs), "model_sha256": model_sha256}
    return dataclasses.replace(phonon_maker, engine="mace", engine_kwargs=kwargs, force_maker=None)


def vasp_phonons(force_maker: Maker, structure, mid, smat, enthalpy, settings, unrelaxed,
                 born_maker: Maker | None = None) -> Flow:
    """Reference phonons with VASP as a STATIC flow: phonopy's displacements, one VASP single
    point per displaced supercell (their number counted on the input structure, whose
    symmetry the relaxation keeps; a mismatch gives a failed PhononDoc saying so), then force
    constants and the PhononDoc. With ``born_maker`` (e.g. ``RecipeBornMaker``), a DFPT run on
    the unit cell gives the Born charges and the PhononDoc records NAC as applied."""
    n = n_finite_displacements(unrelaxed, smat, settings)
    disp = generate_phonon_displacements(structure, settings, smat, mid)
    disp.name = f"phonon displacements {mid}"
    forces = []
    jobs: list = [disp]
    for i in range(n):
        f = force_maker.make(disp.output["supercells"][i], material_id=mid, perturbation_index=i)
        jobs.append(f)
        forces.append(f.output)
    nac = None
    if born_maker is not None:
        from phonon_flows.makers.vasp import born_nac_params, guarded_vasp_job  # atomate2's VASP: heavy

        born = guarded_vasp_job(born_maker, structure, None, mid)
        born.name = f"{born_maker.name} {mid}"
        nac_job = born_nac_params(born.output, structure, smat, mid, settings["symprec"])
        nac_job.name = f"born charges {mid}"
        jobs += [born, nac_job]
        nac = nac_job.output
    collect = phonons_from_forces(structure, disp.output["supercells"], forces, settings,
                                  disp.output["supercell_matrix"], None, mid, enthalpy, nac)
    collect.config.on_missing_references = OnMissing.NONE
    collect.name = f"phonons vasp {mid}"
    jobs.append(collect)
    return Flow(jobs, output=collect.output, name=f"vasp phonons {mid}")
