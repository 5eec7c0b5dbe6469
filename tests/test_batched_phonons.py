"""Batching across materials: compute_grouped and BatchedPhononMaker with ASE's EMT (fast),
checked against phonopy driven directly with the EMT calculator and against PhononMaker."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.calculators.emt import EMT
from jobflow import run_locally
from phonopy import Phonopy
from pymatgen.io.ase import AseAtomsAdaptor
from pymatgen.io.phonopy import get_phonopy_structure

from phonon_flows.engines import get_engine
from phonon_flows.engines.batching import compute_grouped
from phonon_flows.errors import UnsupportedElementsError
from phonon_flows.makers import PhononMaker
from phonon_flows.makers.batched_phonons import BatchedPhononMaker, phonons_for_many
from phonon_flows.makers.phonons import phonon_settings
from phonon_flows.store import get_store

SMALL = [[3, 0, 0], [0, 3, 0], [0, 0, 3]]  # 27-atom supercells of the fcc primitive cell: fast


def _structures():
    cu = AseAtomsAdaptor.get_structure(bulk("Cu", "fcc", a=3.6))
    al = AseAtomsAdaptor.get_structure(bulk("Al", "fcc", a=4.05))
    nacl = AseAtomsAdaptor.get_structure(bulk("NaCl", "rocksalt", a=5.64))  # EMT has no Na, Cl
    return {"Cu": cu, "Al": al, "NaCl": nacl}


def _phonopy_emt_frequencies(structure, qpoints):
    """Independent reference: phonopy's API with ASE's EMT calculator, one supercell at a time."""
    phonon = Phonopy(get_phonopy_structure(structure), supercell_matrix=SMALL, primitive_matrix="auto", symprec=1e-5)
    phonon.generate_displacements(distance=0.01)
    forces = []
    for sc in phonon.supercells_with_displacements:
        atoms = Atoms(sc.symbols, cell=sc.cell, scaled_positions=sc.scaled_positions, pbc=True)
        atoms.calc = EMT()
        forces.append(atoms.get_forces())
    phonon.forces = forces
    phonon.produce_force_constants()
    phonon.symmetrize_force_constants(show_drift=False)
    phonon.run_qpoints(qpoints)
    return phonon.qpoints.frequencies


def _doc_frequencies(doc, structure, qpoints):
    phonon = Phonopy(get_phonopy_structure(structure), supercell_matrix=doc.supercell_matrix, primitive_matrix="auto",
                     symprec=1e-5)
    phonon.force_constants = np.array(doc.force_constants.force_constants)
    phonon.run_qpoints(qpoints)
    return phonon.qpoints.frequencies


def test_compute_grouped_keeps_materials_apart():
    engine = get_engine("emt")
    s = _structures()
    groups = [[AseAtomsAdaptor.get_atoms(s[name]) * (2, 2, 2)] for name in ("Cu", "NaCl", "Al")]
    groups[0].append(groups[0][0].copy())
    groups[0][1].positions[0, 0] += 0.02
    out = compute_grouped(engine, groups, ["Cu", "NaCl", "Al"])
    assert isinstance(out[1], UnsupportedElementsError)
    assert "NaCl" in str(out[1]) and "Na" in str(out[1])
    for i in (0, 2):
        alone = engine.compute(groups[i])
        assert len(out[i]) == len(groups[i])
        for got, ref in zip(out[i], alone, strict=True):
            np.testing.assert_allclose(got.forces, ref.forces, atol=1e-12)
            assert got.energy == pytest.approx(ref.energy, abs=1e-10)
    # the displaced copy really has forces (not a trivially zero comparison)
    assert np.abs(out[0][1].forces).max() > 1e-3


def test_batched_maker_equals_phonopy_and_phonon_maker(tmp_path):
    s = _structures()
    names = ["Cu", "NaCl", "Al"]
    maker = BatchedPhononMaker(engine="emt", temperatures=(300.0,))
    job = maker.make([s[n] for n in names], material_ids=names, supercell_matrices=[SMALL] * 3)
    store = get_store(store_dir=tmp_path / "store")
    responses = run_locally(job, store=store, log=False, ensure_success=True)
    docs = responses[job.uuid][1].output
    assert [d.material_id for d in docs] == names

    # a material the engine cannot do fails alone, saying which and why
    assert docs[1].failed and not docs[0].failed and not docs[2].failed
    assert any("NaCl" in e and "Na" in e for e in docs[1].errors)

    q = np.array([[0, 0, 0], [0.5, 0, 0.5], [0.5, 0.5, 0.5], [0.375, 0.375, 0.75]])
    single = PhononMaker(engine="emt", temperatures=(300.0,))
    for doc, name in ((docs[0], "Cu"), (docs[2], "Al")):
        ref = _phonopy_emt_frequencies(s[name], q)
        got = _doc_frequencies(doc, s[name], q)
        assert np.abs(got - ref).max() < 1e-5
        assert ref.max() > 3.0  # EMT metals: a few THz, a real comparison
        j = single.make(s[name], material_id=name, supercell_matrix=SMALL)
        one = run_locally(j, store=get_store(store_dir=tmp_path / f"single_{name}"), log=False,
                          ensure_success=True)[j.uuid][1].output
        assert doc.thermal["300"].A_vib_meV_per_atom == pytest.approx(one.thermal["300"].A_vib_meV_per_atom, abs=1e-9)
        assert doc.min_frequency_THz == pytest.approx(one.min_frequency_THz, abs=1e-9)

    # the store holds the pack: large fields went to the data store
    out = store.query_one({"uuid": job.uuid}, load=False)
    assert "blob_uuid" in str(out["output"][0]["force_constants"])


def test_pipelined_postprocessing_gives_the_same_documents():
    s = _structures()
    names = ["Cu", "NaCl", "Al"]
    engine = get_engine("emt")
    settings = phonon_settings(temperatures=(300.0,))
    serial = phonons_for_many([s[n] for n in names], engine, settings, [SMALL] * 3, names)
    piped = phonons_for_many([s[n] for n in names], engine, settings, [SMALL] * 3, names, postprocess_workers=1)
    assert [d.failed for d in piped] == [d.failed for d in serial] == [False, True, False]
    for a, b in zip(serial, piped, strict=True):
        assert a.material_id == b.material_id
        if a.failed:
            assert a.errors == b.errors
            continue
        np.testing.assert_allclose(a.force_constants.force_constants, b.force_constants.force_constants, atol=1e-12)
        assert a.thermal["300"].S_J_per_K_mol == pytest.approx(b.thermal["300"].S_J_per_K_mol, abs=1e-12)
