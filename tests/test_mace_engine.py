"""The MACE force engine: batched forward passes equal mace's own ASE calculator, the model's way
in and out of the store by sha256, and the engine's checks."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from _mace_data import emt_structures, fcc_supercell, perturbed
from phonon_flows.engines import get_engine
from phonon_flows.engines.mace import (
    MODEL_BLOB_PREFIX,
    MaceEngine,
    fetch_model,
    load_mace_engine,
    sha256_file,
    store_model,
)
from phonon_flows.errors import CalculationError, InputError, UnsupportedElementsError
from phonon_flows.store import get_store


@pytest.fixture(scope="module")
def structures():
    """Cells of different sizes and elements: 32-atom Cu and Al, a sparse 4-atom Cu cell, a 64-atom Al cell."""
    rng = np.random.default_rng(11)
    cells = [s.copy() for s in emt_structures(n_per_element=2, seed=7)]
    cells.append(perturbed(fcc_supercell("Cu")[:4], rng))
    big = fcc_supercell("Al").repeat((1, 1, 1))
    cells.append(perturbed(big.repeat((2, 1, 1)), rng))
    for atoms in cells:
        atoms.calc = None
    return cells


def _calculator_results(model_path, structures, dtype="float64"):
    from mace.calculators import MACECalculator

    calc = MACECalculator(model_paths=str(model_path), device="cpu", default_dtype=dtype)
    out = []
    for atoms in structures:
        atoms = atoms.copy()
        atoms.calc = calc
        out.append((atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress()))
    return out


@pytest.mark.parametrize("batch_size", [1, 3, "auto"])
def test_batched_engine_equals_mace_calculator_structure_by_structure(tiny_mace_model, structures, batch_size):
    engine = MaceEngine(tiny_mace_model.path, device="cpu", batch_size=batch_size)
    results = engine.compute(structures)
    reference = _calculator_results(tiny_mace_model.path, structures)
    assert len(results) == len(structures)
    for atoms, res, (energy, forces, stress) in zip(structures, results, reference):
        assert res.forces.shape == (len(atoms), 3)
        np.testing.assert_allclose(res.forces, forces, rtol=0, atol=1e-8)
        assert res.energy == pytest.approx(energy, abs=1e-8)
        np.testing.assert_allclose(res.stress, stress, rtol=0, atol=1e-10)
    # forces are not all zero, so the comparison means something
    assert max(np.abs(r.forces).max() for r in results) > 1e-3


def test_float32_engine_is_close_to_float64(tiny_mace_model, structures):
    f64 = MaceEngine(tiny_mace_model.path, device="cpu").compute(structures[:3])
    eng32 = MaceEngine(tiny_mace_model.path, device="cpu", default_dtype="float32")
    f32 = eng32.compute(structures[:3])
    assert next(eng32.model.parameters()).dtype.is_floating_point and eng32.info.settings["default_dtype"] == "float32"
    for a, b in zip(f64, f32):
        np.testing.assert_allclose(b.forces, a.forces, atol=1e-4)
        assert b.forces.dtype == np.float64  # results are always float64 arrays


def test_engine_info_elements_and_calculator(tiny_mace_model, structures):
    engine = get_engine("mace", model_path=str(tiny_mace_model.path), device="cpu")
    info = engine.info
    assert (info.name, info.kind, info.model_sha256) == ("mace", "mlip", tiny_mace_model.sha256)
    assert info.settings == {"default_dtype": "float64", "device": "cpu"} and info.version
    assert engine.supported_elements == frozenset({"Al", "Cu"})
    nickel = structures[0].copy()
    nickel.symbols[0] = "Ni"
    with pytest.raises(UnsupportedElementsError, match="Ni"):
        engine.compute([nickel], material_id="NiCu31")
    atoms = structures[1].copy()
    atoms.calc = engine.calculator()
    np.testing.assert_allclose(atoms.get_forces(), engine.compute([structures[1]])[0].forces, atol=1e-12)


def test_out_of_memory_halves_the_batch_and_retries(tiny_mace_model, structures, monkeypatch):
    import torch

    engine = MaceEngine(tiny_mace_model.path, device="cpu", batch_size=8)
    expected = MaceEngine(tiny_mace_model.path, device="cpu", batch_size=1).compute(structures)
    real_forward = engine._forward
    sizes = []

    def forward(graphs, batch_size):
        sizes.append(batch_size)
        if batch_size > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_forward(graphs, batch_size)

    monkeypatch.setattr(engine, "_forward", forward)
    results = engine.compute(structures)
    assert sizes[:3] == [8, 4, 2] and set(sizes[3:]) == {2}
    for a, b in zip(results, expected):
        np.testing.assert_allclose(a.forces, b.forces, atol=1e-10)

    def always_oom(graphs, batch_size):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(engine, "_forward", always_oom)
    with pytest.raises(CalculationError, match="out of memory on a single structure"):
        engine.compute(structures[:1])


def test_store_and_fetch_by_sha256(tiny_mace_model, tmp_path, structures):
    store = get_store(store_dir=tmp_path / "store")
    sha = store_model(store, tiny_mace_model.path)
    assert sha == tiny_mace_model.sha256 == sha256_file(tiny_mace_model.path)
    assert store_model(store, tiny_mace_model.path) == sha  # idempotent
    assert store.additional_stores["data"].count({"blob_uuid": MODEL_BLOB_PREFIX + sha}) == 1

    cache = tmp_path / "cache"
    path = fetch_model(store, sha, cache_dir=cache)
    assert path.parent == cache and sha256_file(path) == sha
    # a corrupted cache file is replaced by a fresh, verified copy
    path.write_bytes(b"garbage")
    assert sha256_file(fetch_model(store, sha, cache_dir=cache)) == sha

    engine = load_mace_engine(model_sha256=sha, store=store, cache_dir=cache, device="cpu")
    assert engine.model_sha256 == sha
    with pytest.raises(InputError, match="no MACE model with sha256"):
        fetch_model(store, "0" * 64, cache_dir=cache)

    # corrupted bytes in the store are refused
    bad = dict(store.additional_stores["data"].query_one({"blob_uuid": MODEL_BLOB_PREFIX + sha}))
    bad["data"] = base64.b64encode(b"not a model").decode()
    bad.pop("_id", None)
    store.additional_stores["data"].update([bad], key="blob_uuid")
    with pytest.raises(CalculationError, match="store corrupted"):
        fetch_model(store, sha, cache_dir=tmp_path / "cache2")


def test_load_from_training_doc_and_hash_checks(tiny_mace_model, tmp_path):
    doc = tiny_mace_model.doc
    engine = load_mace_engine(doc, cache_dir=tmp_path, device="cpu")  # bytes inline, no store
    assert engine.model_sha256 == doc.model_sha256 and engine.model_path.parent == tmp_path
    engine = load_mace_engine(training_doc=doc.model_dump(), cache_dir=tmp_path, device="cpu")
    assert sha256_file(engine.model_path) == doc.model_sha256
    # the training job's own output in its store: model_b64 lives in the data store
    engine = load_mace_engine(model_sha256=doc.model_sha256, store=tiny_mace_model.store, cache_dir=tmp_path / "c")
    assert sha256_file(engine.model_path) == doc.model_sha256
    with pytest.raises(InputError, match="expected"):
        load_mace_engine(model_sha256="f" * 64, model_path=tiny_mace_model.path)
    with pytest.raises(InputError, match="training failed"):
        load_mace_engine(training_doc={"failed": True, "error": "NaN loss"})
    with pytest.raises(InputError, match="needs model_sha256"):
        load_mace_engine()
    with pytest.raises(InputError, match="batch_size"):
        MaceEngine(tiny_mace_model.path, batch_size=0)


def test_model_through_mongodb_and_gridfs(tiny_mace_model, mongo_uri, mongo_db_name, tmp_path):
    store = get_store(mongo_uri=mongo_uri, database=mongo_db_name)
    sha = store_model(store, tiny_mace_model.path)
    path = fetch_model(store, sha, cache_dir=tmp_path)
    assert sha256_file(path) == sha == tiny_mace_model.sha256
