"""The vectorised phonopy symmetry setup (core/phonopy_symmetry.py) gives exactly phonopy's own
numbers: atomic permutations, point groups, site symmetries, displacements and force constants of
real phonondb cells (VASP force sets), bit for bit; the fallbacks run where they should; phonopy
is untouched outside the block."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import phonopy.harmonic.force_constants as force_constants
import phonopy.structure.cells as cells
import phonopy.structure.symmetry as symmetry
import pytest
from phonopy import Phonopy

from phonon_flows.core import phonondb as pdb
from phonon_flows.core import phonopy_symmetry as fast

TESTS = Path(__file__).resolve().parent / "data" / "phonondb"
SHIPPED = Path(__file__).resolve().parents[1] / "phonon_flows" / "data" / "phonondb"
ENTRIES = [
    TESTS / "materials-id-1000-bate-fm-3m-225.tar.lzma",  # rock salt (48 x 32 operations)
    TESTS / "materials-id-684580-agi-i-4m2-119.tar.lzma",  # body-centred tetragonal
    TESTS / "materials-id-1285-pto2-pnnm-58.tar.lzma",  # orthorhombic
    TESTS / "materials-id-22967-li2febr4-cmmm-65.tar.lzma",  # base-centred orthorhombic
    TESTS / "materials-id-754326-naago2-c2-m-12.tar.lzma",  # monoclinic
    TESTS / "materials-id-7385-k2be2pbf8-r-3m-166.tar.lzma",  # rhombohedral (hexagonal axes)
    SHIPPED / "materials-id-2133-zno-p6-3mc-186.tar.lzma",  # wurtzite
    SHIPPED / "materials-id-22865-cscl-pm-3m-221.tar.lzma",  # simple cubic
    SHIPPED / "materials-id-149-si-fd-3m-227.tar.lzma",  # diamond
]


def build(entry: pdb.PhonondbEntry, unitcell=None) -> tuple[Phonopy, list]:
    """The entry's Phonopy object with its DFT force constants, by phonopy's own API, and the
    displacements phonopy generates for its supercell (vectorised when called inside the block)."""
    return pdb.phonopy_reference(entry, unitcell)


def assert_same(a: Phonopy, b: Phonopy) -> None:
    for x, y in ((a.symmetry, b.symmetry), (a.primitive_symmetry, b.primitive_symmetry)):
        assert np.array_equal(x.atomic_permutations, y.atomic_permutations)
        assert x.atomic_permutations.dtype == y.atomic_permutations.dtype == np.int64
        assert np.array_equal(x.pointgroup_operations, y.pointgroup_operations)
        assert np.array_equal(x.reciprocal_operations, y.reciprocal_operations)
        assert np.array_equal(x.get_map_operations(), y.get_map_operations())
    assert np.array_equal(a.primitive.atomic_permutations, b.primitive.atomic_permutations)
    assert a.force_constants.shape == b.force_constants.shape
    assert np.array_equal(a.force_constants, b.force_constants)  # bit for bit


@pytest.mark.parametrize("path", ENTRIES, ids=lambda p: p.name.split("-", 3)[3].split(".")[0])
def test_same_as_phonopy_on_real_cells(path):
    if not path.is_file():
        pytest.fail(f"phonondb entry missing: {path}")  # shipped in the repository
    entry = pdb.read_phonondb_entry(path)
    reference, ref_disps = build(entry)  # phonopy's own functions
    before = dict(fast.counters)
    with fast.fast_phonopy_symmetry():
        ours, disps = build(entry)
        site = [ours.symmetry.get_site_symmetry(i) for i in range(len(ours.supercell))]
    assert_same(reference, ours)
    for i, rots in enumerate(site):
        assert np.array_equal(rots, reference.symmetry.get_site_symmetry(i))
    assert disps == ref_disps and len(disps) > 0
    # the fast path did the work: every operation, no fallback
    n_ops = len(reference.symmetry.symmetry_operations["rotations"])
    assert fast.counters["fast_operations"] - before["fast_operations"] >= n_ops
    assert fast.counters["fallback_operations"] == before["fallback_operations"]
    assert fast.counters["fallback_cells"] == before["fallback_cells"]
    assert fast.counters["fast_site_symmetry"] > before["fast_site_symmetry"]


def test_noisy_positions_take_phonopy_s_matcher_for_the_operations_in_doubt():
    """Atoms moved by 3.5e-6 Å (symprec 1e-5 Å): spglib still finds the full group, some
    partners lie beyond 0.9 symprec, and those operations go through phonopy's own matcher;
    the permutations and force constants are still phonopy's."""
    entry = pdb.read_phonondb_entry(ENTRIES[0])
    cell = entry.unitcell.copy()
    rng = np.random.default_rng(7)
    shift = rng.normal(size=(len(cell), 3))
    shift *= 3.5e-6 / np.linalg.norm(shift, axis=1, keepdims=True)
    cell.positions = cell.positions + shift
    reference, ref_disps = build(entry, cell.copy())
    before = dict(fast.counters)
    with fast.fast_phonopy_symmetry():
        ours, disps = build(entry, cell.copy())
    assert len(reference.symmetry.pointgroup_operations) == 48
    assert fast.counters["fallback_operations"] > before["fallback_operations"]
    assert fast.counters["fast_operations"] > before["fast_operations"]
    assert_same(reference, ours)
    assert disps == ref_disps


def test_atoms_closer_than_four_symprec_use_phonopy_for_the_whole_cell():
    lattice = np.eye(3) * 5.0
    positions = np.array([[0.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, 0.5, 0.5 + 3e-5 / 5.0]])
    rotations = np.array([np.eye(3, dtype="int64")])
    translations = np.array([[0.0, 0.0, 0.0]])
    types = [1, 2, 2]
    before = fast.counters["fallback_cells"]
    got = fast.compute_all_sg_permutations(positions, rotations, translations, lattice.T, 1e-5, types)
    assert fast.counters["fallback_cells"] == before + 1
    want = fast._PHONOPY_ALL_PERMUTATIONS(positions, rotations, translations, lattice.T, 1e-5, types)
    assert np.array_equal(got, want)


@pytest.mark.filterwarnings("ignore:Crystal structure is distorted")
def test_an_operation_that_is_no_symmetry_is_left_to_phonopy():
    """An operation that maps atoms onto nothing: the fast path refuses it and phonopy's own
    matcher raises its own error, as without the block."""
    lattice = np.eye(3) * 4.0
    positions = np.array([[0.0, 0.0, 0.0], [0.5, 0.5, 0.5]])
    rotations = np.array([np.eye(3, dtype="int64"), np.eye(3, dtype="int64")])
    translations = np.array([[0.0, 0.0, 0.0], [0.25, 0.0, 0.0]])
    with pytest.raises(ValueError):
        fast._PHONOPY_ALL_PERMUTATIONS(positions, rotations, translations, lattice.T, 1e-5, [1, 1])
    with pytest.raises(ValueError):
        fast.compute_all_sg_permutations(positions, rotations, translations, lattice.T, 1e-5, [1, 1])


def test_unique_rotations_keep_phonopy_s_order():
    rng = np.random.default_rng(3)
    pool = rng.integers(-2, 3, size=(7, 3, 3))
    rotations = pool[rng.integers(0, 7, size=200)]
    assert np.array_equal(fast.collect_unique_rotations(rotations), fast._PHONOPY_UNIQUE_ROTATIONS(rotations))
    big = rotations * 40  # entries beyond the packed-key range: numpy's row-wise unique
    assert np.array_equal(fast.collect_unique_rotations(big), fast._PHONOPY_UNIQUE_ROTATIONS(big))


def test_phonopy_is_restored_after_the_block():
    original = (cells.compute_all_sg_permutations, symmetry.compute_all_sg_permutations,
                symmetry.collect_unique_rotations, symmetry.Symmetry._get_site_symmetry,
                force_constants.similarity_transformation)
    with fast.fast_phonopy_symmetry():
        with fast.fast_phonopy_symmetry():  # re-entrant
            assert symmetry.compute_all_sg_permutations is fast.compute_all_sg_permutations
        assert cells.compute_all_sg_permutations is fast.compute_all_sg_permutations  # still inside
    assert (cells.compute_all_sg_permutations, symmetry.compute_all_sg_permutations,
            symmetry.collect_unique_rotations, symmetry.Symmetry._get_site_symmetry,
            force_constants.similarity_transformation) == original
    assert fast._similarity_cache == {}
    with pytest.raises(RuntimeError), fast.fast_phonopy_symmetry():
        raise RuntimeError("restored on errors too")
    assert symmetry.collect_unique_rotations is original[2]
