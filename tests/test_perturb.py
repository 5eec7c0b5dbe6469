"""Random perturbation (phonon_flows.core.perturb) and the PerturbationMaker."""

from __future__ import annotations

import numpy as np
import pytest
from jobflow import run_locally
from pymatgen.core import Lattice, Structure
from scipy import stats

from phonon_flows.core.perturb import (
    derive_seed,
    displacements_between,
    perturb_supercell,
    random_displacements,
)
from phonon_flows.core.supercells import make_supercell
from phonon_flows.errors import InputError
from phonon_flows.makers.perturb import PerturbationMaker
from phonon_flows.schemas.perturbation import PerturbationDoc
from phonon_flows.store import get_store


def nacl(a: float = 5.69) -> Structure:
    h = a / 2
    return Structure(Lattice([[0, h, h], [h, 0, h], [h, h, 0]]), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])


def supercell() -> Structure:
    return make_supercell(nacl(), np.diag([3, 3, 3]))  # 54 atoms


def test_every_atom_moved_within_bounds():
    sc = supercell()
    res = perturb_supercell(sc, n_structures=6, min_displacement=0.01, max_displacement=0.05, seed=7)
    assert len(res.structures) == 6 and res.displacements.shape == (6, 54, 3)
    for k, s in enumerate(res.structures):
        assert s.lattice == sc.lattice and s.species == sc.species
        disp = displacements_between(sc, s)
        assert np.allclose(disp, res.displacements[k], atol=1e-10)
        lengths = np.linalg.norm(disp, axis=1)
        assert np.all(lengths >= 0.01 - 1e-12) and np.all(lengths <= 0.05 + 1e-12)
    st = res.statistics
    assert st.n_atoms_moved == 6 * 54 and st.n_atoms == 54 and st.n_structures == 6
    lengths = np.linalg.norm(res.displacements, axis=-1)
    assert st.min == pytest.approx(lengths.min()) and st.max == pytest.approx(lengths.max())
    assert st.mean == pytest.approx(lengths.mean()) and st.std == pytest.approx(lengths.std())
    assert 0.01 <= st.min < st.mean < st.max <= 0.05


def test_reproducible_with_seed():
    sc = supercell()
    a = perturb_supercell(sc, seed=42)
    b = perturb_supercell(sc.copy(), seed=42)
    c = perturb_supercell(sc, seed=43)
    assert np.array_equal(a.displacements, b.displacements)
    assert all(np.array_equal(x.cart_coords, y.cart_coords) for x, y in zip(a.structures, b.structures, strict=True))
    assert not np.allclose(a.displacements, c.displacements)
    # the structures differ from one another
    assert not np.allclose(a.displacements[0], a.displacements[1])


def test_directions_uniform_on_sphere_and_lengths_uniform():
    rng = np.random.default_rng(2024)
    disp = random_displacements(40000, rng, 0.01, 0.05)
    lengths = np.linalg.norm(disp, axis=1)
    unit = disp / lengths[:, None]
    # isotropy: mean direction ~ 0, second moment ~ I/3 (statistical error ~ 1/sqrt(N) = 0.005)
    assert np.linalg.norm(unit.mean(axis=0)) < 0.02
    assert np.allclose(unit.T @ unit / len(unit), np.eye(3) / 3, atol=0.01)
    # uniform on the sphere: z = cos(theta) is uniform on [-1, 1]
    assert stats.kstest(unit[:, 2], stats.uniform(loc=-1, scale=2).cdf).pvalue > 1e-3
    # lengths uniform on [0.01, 0.05]
    assert stats.kstest(lengths, stats.uniform(loc=0.01, scale=0.04).cdf).pvalue > 1e-3


def test_site_properties_are_kept():
    sc = supercell()
    sc.add_site_property("magmom", [0.5] * len(sc))
    res = perturb_supercell(sc, n_structures=1, seed=1)
    assert res.structures[0].site_properties["magmom"] == [0.5] * len(sc)


@pytest.mark.parametrize(("lo", "hi", "n"), [(0.05, 0.01, 6), (0.0, 0.05, 6), (0.01, 0.05, 0)])
def test_invalid_settings(lo, hi, n):
    with pytest.raises(InputError):
        perturb_supercell(supercell(), n_structures=n, min_displacement=lo, max_displacement=hi, material_id="NaCl")


def test_derived_seeds():
    assert derive_seed(123, "NaCl-1") == derive_seed(123, "NaCl-1")
    assert derive_seed(123, "NaCl-1") != derive_seed(123, "NaCl-2")
    assert derive_seed(123, "NaCl-1") != derive_seed(124, "NaCl-1")
    assert 0 <= derive_seed(0, "x") < 2**32


# --- maker ----------------------------------------------------------------------------------------
def test_perturbation_maker_document():
    doc = PerturbationMaker(n_structures=3, seed=5).perturb(nacl(), "NaCl-test")
    assert isinstance(doc, PerturbationDoc)
    assert doc.material_id == "NaCl-test" and doc.formula == "NaCl"
    assert doc.supercell_matrix == [[4, 0, 0], [0, 4, 0], [0, 0, 4]] and doc.n_atoms_supercell == 128
    assert len(doc.structures) == 3 and np.array(doc.displacements).shape == (3, 128, 3)
    assert doc.statistics.n_atoms_moved == 3 * 128
    assert 0.01 <= doc.statistics.min and doc.statistics.max <= 0.05
    assert doc.base_seed == 5 and doc.seed == derive_seed(5, "NaCl-test")
    # the recorded seed reproduces the structures
    again = perturb_supercell(doc.supercell, n_structures=3, seed=doc.seed)
    assert np.allclose(again.displacements, np.array(doc.displacements))
    # the same input gives the same output
    doc2 = PerturbationMaker(n_structures=3, seed=5).perturb(nacl(), "NaCl-test")
    assert np.allclose(np.array(doc2.displacements), np.array(doc.displacements))


def test_perturbation_maker_errors_name_the_material():
    maker = PerturbationMaker(min_atoms=101, max_atoms=101)
    with pytest.raises(InputError, match="no supercell") as err:
        maker.perturb(nacl(), "NaCl-window")
    assert str(err.value).startswith("NaCl-window: perturb")
    overlapping = Structure(Lattice.cubic(4.0), ["Cu", "Cu"], [[0, 0, 0], [0.02, 0, 0]])
    with pytest.raises(InputError, match="overlapping") as err:
        PerturbationMaker().perturb(overlapping, "Cu-overlap")
    assert err.value.material_id == "Cu-overlap"


def test_perturbation_job_stores_structures_in_data_store(tmp_path):
    store = get_store(store_dir=tmp_path / "store")
    job = PerturbationMaker(n_structures=2, min_atoms=8, max_atoms=20).make(nacl(), material_id="NaCl-job")
    responses = run_locally(job, store=store, root_dir=tmp_path, log=False, ensure_success=True)
    doc = responses[job.uuid][1].output
    assert doc.n_atoms_supercell in range(8, 21)
    store.connect()
    raw = store.query_one({"uuid": job.uuid}, load=False)
    # the large fields are references into the data store, not inline
    assert "blob_uuid" in raw["output"]["structures"]
    loaded = store.get_output(job.uuid, load=True)
    assert len(loaded["structures"]) == 2
