"""The default screening path: packs of materials in one job each (one model load), one PhononDoc
per material in the store (seen by PhononResults and ``status``), failures isolated per material,
and a rerun that finishes only what is missing."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk
from jobflow import run_locally
from pymatgen.io.ase import AseAtomsAdaptor

from phonon_flows import engines
from phonon_flows.engines.base import ForceResult
from phonon_flows.flows import ScreeningMaker
from phonon_flows.makers.batched_phonons import BatchedPhononMaker
from phonon_flows.results import PhononResults
from phonon_flows.runner import campaign_status, run_campaign
from phonon_flows.schemas.batch import PHONON_BATCH_KIND
from phonon_flows.store import KEYED_ID_PREFIX, campaign_metadata, get_store

SMALL = [[3, 0, 0], [0, 3, 0], [0, 0, 3]]


def _s(*args, **kwargs):
    return AseAtomsAdaptor.get_structure(bulk(*args, **kwargs))


class _NaNFor:
    """An engine that gives NaN forces for the supercells of one element (a run-time failure)."""

    def __init__(self, engine, element):
        self.engine, self.element = engine, element

    def compute(self, structures):
        out = self.engine.compute(structures)
        return [ForceResult(r.energy, np.full_like(r.forces, np.nan)) if self.element in a.get_chemical_symbols() else r
                for a, r in zip(structures, out, strict=True)]

    def __getattr__(self, name):
        return getattr(self.engine, name)


def test_pack_writes_one_document_per_material_and_isolates_failures(tmp_path, monkeypatch):
    real = engines.get_engine
    loads = []

    def get_engine(name, **kwargs):
        loads.append(name)
        return _NaNFor(real(name, **kwargs), "Au")

    monkeypatch.setattr(engines, "get_engine", get_engine)
    names = ["Cu", "NaCl", "Au", "Al"]
    structures = [_s("Cu", "fcc", a=3.6), _s("NaCl", "rocksalt", a=5.64), _s("Au", "fcc", a=4.08),
                  _s("Al", "fcc", a=4.05)]
    uuids = [f"doc-{n}" for n in names]
    meta = [campaign_metadata("pack", n, "phonon-mlip") for n in names]
    maker = BatchedPhononMaker(engine="emt", temperatures=(300.0,))
    job = maker.make_documents(structures, names, uuids, meta, [SMALL] * 4, chunk_materials=3)
    store = get_store(store_dir=tmp_path / "store")
    batch = run_locally(job, store=store, log=False, ensure_success=True)[job.uuid][1].output
    assert loads == ["emt"]  # one engine for the pack
    assert batch.failed and batch.n_failed == 2 and batch.n_computed == 2
    reasons = {e.material_id: e.reason for e in batch.failed_materials}
    assert set(reasons) == {"NaCl", "Au"}
    assert "Na" in reasons["NaCl"] and "NaN" in reasons["Au"]
    assert 0 < batch.timings.forces_s < batch.timings.total_s and batch.n_supercells > 0

    res = PhononResults(store)
    ok = res.find(campaign="pack", sort="material_id")
    assert [d["material_id"] for d in ok] == ["Al", "Cu"]
    assert [d["_job"]["uuid"] for d in ok] == ["doc-Al", "doc-Cu"]
    assert ok[0]["thermal"]["T300"]["Cv_J_per_K_mol"] > 0
    assert res.force_constants(ok[1]).shape[-2:] == (3, 3)  # large data went to the data store, fetched back
    assert "blob_uuid" in str(store.query_one({"uuid": "doc-Cu"}, load=False)["output"]["force_constants"])
    bad = res.find(campaign="pack", failed=True, sort="material_id")
    assert [d["material_id"] for d in bad] == ["Au", "NaCl"]
    assert store.docs_store.count({"output.kind": PHONON_BATCH_KIND}) == 1
    # the job's own output is a small record, never a PhononDoc a query would see
    assert res.count(campaign="pack", failed=None) == 4

    # the same job again: the finished materials are not recomputed, the failed ones are retried
    monkeypatch.setattr(engines, "get_engine", real)  # the run-time fault is gone
    job2 = maker.make_documents(structures, names, uuids, meta, [SMALL] * 4, chunk_materials=3)
    again = run_locally(job2, store=store, log=False, ensure_success=True)[job2.uuid][1].output
    assert again.n_reused == 2 and again.n_computed == 1 and [e.material_id for e in again.failed_materials] == ["NaCl"]
    assert sorted(d["material_id"] for d in res.find(campaign="pack")) == ["Al", "Au", "Cu"]
    assert store.docs_store.count({"uuid": {"$in": uuids}}) == 4  # nothing duplicated


def test_default_screening_is_batched_and_equals_per_material_jobs(tiny_mace_model, tmp_path):
    tiny = tiny_mace_model
    mats = {"Cu-fcc": _s("Cu", "fcc", a=3.6), "Al-fcc": _s("Al", "fcc", a=4.05), "Cu-bcc": _s("Cu", "bcc", a=2.87),
            "NaCl": _s("NaCl", "rocksalt", a=5.64)}  # the model knows no Na/Cl: fails at run time, alone
    kwargs = dict(model=tiny.sha256, relax=False, min_atoms=8, max_atoms=40,
                  engine_kwargs={"model_path": str(tiny.path), "device": "cpu"})
    maker = ScreeningMaker(name="batched", batch_size=3, **kwargs)
    assert ScreeningMaker().batch_size > 0  # the batched path is the default
    flow = maker.make(mats)
    stages = sorted(j.metadata["phonon_flows"]["stage"] for j in flow.jobs)
    assert stages == ["campaign", "phonon-batch", "phonon-batch"]
    doc = flow.jobs[0].function_args[0]
    assert sorted(j.material_id for j in doc.jobs if j.stage == "phonon-mlip") == sorted(mats)

    store = get_store(store_dir=tmp_path / "store")
    summary = run_campaign(flow, store, progress=False, work_dir=tmp_path / "runs")
    assert summary.count("done") == 2 and summary.count("failed") == 1, summary.render()  # the pack with NaCl
    status = campaign_status(store, "batched")[0]
    assert status.by_stage["phonon-mlip"] == {"done": 3, "failed": 1, "skipped": 0, "running": 0, "pending": 0}
    named = [f for f in status.failures if f["stage"] == "phonon-mlip"]
    assert [f["material_id"] for f in named] == ["NaCl"] and "Na" in named[0]["reason"]

    res = PhononResults(store)
    docs = {d["material_id"]: d for d in res.find(campaign="batched")}
    assert sorted(docs) == ["Al-fcc", "Cu-bcc", "Cu-fcc"]
    frame = res.to_dataframe(campaign="batched")
    assert sorted(frame["material_id"]) == sorted(docs) and (frame["Cv_J_per_K_mol_300K"] > 0).all()

    # same numbers as the per-material jobs (batch_size=0), and the same document uuids
    single = ScreeningMaker(name="batched", batch_size=0, **kwargs).make({"Cu-bcc": mats["Cu-bcc"]})
    other = get_store(store_dir=tmp_path / "single")
    assert run_campaign(single, other, progress=False, work_dir=tmp_path / "runs1").ok
    one = PhononResults(other).find(campaign="batched")[0]
    assert one["_job"]["uuid"] == docs["Cu-bcc"]["_job"]["uuid"]
    assert one["min_frequency_THz"] == pytest.approx(docs["Cu-bcc"]["min_frequency_THz"], abs=1e-8)
    assert one["thermal"]["T300"]["A_vib_meV_per_atom"] == pytest.approx(
        docs["Cu-bcc"]["thermal"]["T300"]["A_vib_meV_per_atom"], abs=1e-8)

    # a rerun redoes only the pack with the failure, and inside it only the failed material
    again = run_campaign(maker.make(mats), store, progress=False, work_dir=tmp_path / "runs")
    assert again.n_run == 1
    assert store.docs_store.count({"output.material_id": {"$in": list(mats)}, "output.@class": "PhononDoc"}) == 4
    # every write of the campaign (documents, running marks, failures, large data) took the
    # embedded store's keyed upsert, whose cost does not grow with the store
    for s in (store.docs_store, *store.additional_stores.values()):
        assert all(d["_id"].startswith(KEYED_ID_PREFIX) for d in s.query({}, properties=["_id"])), s.collection_name
