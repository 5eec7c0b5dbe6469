"""Stores (embedded SQLite-backed and MongoDB + GridFS on the mongoeco wire server) and the query API."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
from jobflow import Flow, job, run_locally

from phonon_flows.errors import InputError
from phonon_flows.results import PhononResults, temperature_key
from phonon_flows.store import (
    DATA_STORE_NAME,
    METADATA_KEY,
    campaign_metadata,
    get_store,
    metadata_criteria,
    tag_metadata,
)


def _force_constants(seed: int, n: int = 200) -> np.ndarray:
    return np.random.default_rng(seed).normal(scale=3.0, size=(n, n))


@job(data=["force_constants"])
def fc_job(seed: int, n: int = 200) -> dict:
    return {"seed": seed, "formula": "Si", "force_constants": _force_constants(seed, n)}


# -- embedded store ---------------------------------------------------------------------------------


def test_embedded_store_survives_restart(tmp_path):
    """A job run in another process is found, with its large array, by a new store object here."""
    store_dir = tmp_path / "store"
    script = textwrap.dedent(
        f"""
        import numpy as np
        from jobflow import job, run_locally
        from phonon_flows.store import get_store

        @job(data=["force_constants"])
        def fc_job(seed, n):
            return {{"seed": seed, "force_constants": np.random.default_rng(seed).normal(scale=3.0, size=(n, n))}}

        j = fc_job(7, 120)
        run_locally(j, store=get_store(store_dir={str(store_dir)!r}), create_folders=False, ensure_success=True)
        print(j.uuid)
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    uuid = out.stdout.strip().splitlines()[-1]

    store = get_store(store_dir=store_dir)  # a fresh store object in a fresh process
    store.connect()
    try:
        ref = store.query_one({"uuid": uuid}, load=False)["output"]["force_constants"]
        assert ref["store"] == DATA_STORE_NAME and "blob_uuid" in ref
        doc = store.query_one({"uuid": uuid}, load=True)
        fc = np.asarray(doc["output"]["force_constants"])
        assert fc.dtype == np.float64 and fc.tobytes() == _force_constants(7, 120).tobytes()
        assert store.additional_stores[DATA_STORE_NAME].count({"blob_uuid": ref["blob_uuid"]}) == 1
    finally:
        store.close()
    assert (store_dir).is_dir() and any(store_dir.iterdir())


def test_get_store_settings_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("PHONON_FLOWS_STORE_DIR", str(tmp_path / "from_env"))
    monkeypatch.delenv("PHONON_FLOWS_MONGO_URI", raising=False)
    store = get_store()
    assert type(store.docs_store).__name__ == "SafeMontyStore"  # maggma MontyStore, safe to open from processes
    assert (tmp_path / "from_env").is_dir()
    monkeypatch.setenv("PHONON_FLOWS_MONGO_URI", "mongodb://127.0.0.1:1/?directConnection=true")
    monkeypatch.setenv("PHONON_FLOWS_DATABASE", "envdb")
    store = get_store()  # not connected: no server needed to build it
    assert type(store.docs_store).__name__ == "MongoStore"
    assert type(store.additional_stores[DATA_STORE_NAME]).__name__ == "GridFSStore"
    assert store.docs_store.database == "envdb" and store.additional_stores[DATA_STORE_NAME].compression


# -- MongoDB + GridFS over the wire protocol ----------------------------------------------------


def test_mongo_gridfs_round_trip(mongo_uri, mongo_db_name):
    store = get_store(mongo_uri=mongo_uri, database=mongo_db_name)
    j = fc_job(11)
    responses = run_locally(Flow([j]), store=store, create_folders=False, ensure_success=True)
    assert j.uuid in responses

    store = get_store(mongo_uri=mongo_uri, database=mongo_db_name, connect=True)  # new client
    try:
        doc = store.query_one({"uuid": j.uuid}, load=False)
        ref = doc["output"]["force_constants"]
        assert ref["store"] == DATA_STORE_NAME and doc["output"]["formula"] == "Si"
        loaded = store.query_one({"uuid": j.uuid}, load=True)["output"]["force_constants"]
        fc = np.asarray(loaded)
        assert fc.shape == (200, 200) and fc.tobytes() == _force_constants(11).tobytes()  # bit-identical

        # the array really is in GridFS, compressed, and not in the documents collection
        db = store.docs_store._collection.database
        files = list(db["phonon_flows_data.files"].find({"metadata.blob_uuid": ref["blob_uuid"]}))
        assert len(files) == 1
        assert files[0]["metadata"]["job_uuid"] == j.uuid and files[0]["metadata"]["compression"] == "zlib"
        assert db["phonon_flows_data.chunks"].count_documents({"files_id": files[0]["_id"]}) >= 1
        assert "force_constants" not in str(db["outputs"].find_one({"uuid": j.uuid})["output"]["force_constants"])
        assert isinstance(db["outputs"].find_one({"uuid": j.uuid})["output"]["force_constants"], dict)
    finally:
        store.close()


# -- campaign metadata ---------------------------------------------------------------------------


def test_tag_metadata_merges_and_filters():
    j1, j2 = fc_job(1, n=2), fc_job(2, n=2)
    flow = Flow([j1, j2])
    tag_metadata(flow, campaign="c1")
    tag_metadata(j1, material_id="mp-149", stage="phonon")
    assert j1.metadata[METADATA_KEY] == {"campaign": "c1", "material_id": "mp-149", "stage": "phonon"}
    assert j2.metadata[METADATA_KEY] == {"campaign": "c1"}
    assert campaign_metadata(campaign="c1", stage=None) == {METADATA_KEY: {"campaign": "c1"}}
    assert metadata_criteria(campaign="c1", stage="label") == {
        f"metadata.{METADATA_KEY}.campaign": "c1",
        f"metadata.{METADATA_KEY}.stage": "label",
    }
    assert temperature_key(300) == "T300" and temperature_key(300.0) == "T300" and temperature_key(298.15) == "T298_15"


# -- the query API ----------------------------------------------------------------------------------

SHA = "0123456789abcdef" * 4

# material_id, formula, chemsys, engine, kind, A_vib(300), C_v(300), S_vib(300), min freq, failed
MATERIALS = [
    ("mp-149", "Si", "Si", "mace", "mlip", 5.1, 19.6, 18.9, 0.0, False),
    ("mp-149", "Si", "Si", "chgnet", "reference", 5.3, 19.7, 18.5, 0.0, False),
    ("mp-10695", "ZnS", "S-Zn", "mace", "mlip", -8.2, 23.1, 37.4, 0.01, False),
    ("mp-560588", "ZnS", "S-Zn", "mace", "mlip", -8.4, 23.0, 38.0, -0.9, False),
    ("mp-804", "GaN", "Ga-N", "mace", "mlip", 12.0, 16.2, 14.1, -0.1, False),
    ("mp-1", "Cs", "Cs", "mace", "mlip", None, None, None, None, True),
]


@job(data=["force_constants", "band_structure"])
def fake_phonon_doc(material_id, formula, chemsys, engine, kind, a, cv, s, fmin, failed, seed):
    """The serialised form of a PhononDoc, as a PhononMaker job outputs it."""
    rng = np.random.default_rng(seed)
    doc = {
        "@module": "phonon_flows.schemas.phonon",
        "@class": "PhononDoc",
        "material_id": material_id,
        "formula": formula,
        "chemsys": chemsys,
        "engine": {"name": engine, "kind": kind, "model_sha256": SHA if kind == "mlip" else None},
        "failed": failed,
    }
    if not failed:
        doc |= {
            "thermal": {
                "T300": {"A_vib_meV_per_atom": a, "Cv_J_per_K_mol": cv, "S_J_per_K_mol": s},
                "T1000": {"A_vib_meV_per_atom": a - 100.0, "Cv_J_per_K_mol": cv + 4.0, "S_J_per_K_mol": s + 30.0},
            },
            "min_frequency_THz": fmin,
            "dynamically_stable": fmin >= -0.5,
            "force_constants": rng.normal(size=(8, 8, 3, 3)),
            "band_structure": {"distances": np.linspace(0, 1, 5), "frequencies": rng.normal(size=(5, 6))},
        }
    return doc


@job
def not_a_phonon_doc():
    return {"formula": "Si", "thermal": {"T300": {"A_vib_meV_per_atom": 0.0}}}


@pytest.fixture(params=["embedded", "mongoeco"])
def results(request, tmp_path):
    if request.param == "embedded":
        store = get_store(store_dir=tmp_path / "store")
    else:
        uri = request.getfixturevalue("mongo_uri")
        store = get_store(mongo_uri=uri, database=request.getfixturevalue("mongo_db_name"))
    jobs = [fake_phonon_doc(*m, seed=i) for i, m in enumerate(MATERIALS)]
    for j, m in zip(jobs, MATERIALS):
        tag_metadata(j, material_id=m[0], stage="phonon")
    flow = Flow(jobs)
    tag_metadata(flow, campaign="test-campaign")
    other = not_a_phonon_doc()
    tag_metadata(other, campaign="another")
    run_locally(Flow([flow, other]), store=store, create_folders=False, ensure_success=True)
    res = PhononResults(store)
    res.job_uuids = {(m[0], m[3]): j.uuid for j, m in zip(jobs, MATERIALS)}
    yield res
    res.close()


def _ids(docs):
    return [(d["material_id"], d["engine"]["name"]) for d in docs]


def test_results_filters(results):
    assert results.count() == 5  # failed one left out, the non-PhononDoc never counted
    assert results.count(failed=None) == 6
    assert _ids(results.find(failed=True)) == [("mp-1", "mace")]
    assert sorted(_ids(results.find(formula="Si2"))) == [("mp-149", "chgnet"), ("mp-149", "mace")]
    assert sorted(d["material_id"] for d in results.find(chemsys="Zn-S")) == ["mp-10695", "mp-560588"]
    assert sorted(d["material_id"] for d in results.find(chemsys=["N-Ga", "Si"], engine="mace")) == [
        "mp-149",
        "mp-804",
    ]
    assert _ids(results.find(engine_kind="reference")) == [("mp-149", "chgnet")]
    assert len(results.find(model_sha256=SHA)) == 4
    assert len(results.find(model_sha256=SHA[:10].upper())) == 4
    assert results.find(model_sha256="ffff") == []
    assert sorted(d["material_id"] for d in results.find(stable=False)) == ["mp-560588"]
    assert len(results.find(stable=True, material_id=["mp-149", "mp-804"])) == 3
    assert len(results.find(campaign="test-campaign", failed=None)) == 6
    assert results.find(campaign="another") == []
    rec = results.find_one(material_id="mp-804")
    assert rec["_job"]["metadata"][METADATA_KEY] == {
        "campaign": "test-campaign",
        "material_id": "mp-804",
        "stage": "phonon",
    }
    assert rec["_job"]["uuid"] == results.job_uuids[("mp-804", "mace")]


def test_results_thermal_ranges_sort_limit(results):
    # 300 K: A_vib 5.1, 5.3, -8.2, -8.4, 12.0
    assert sorted(d["thermal"]["T300"]["A_vib_meV_per_atom"] for d in results.find(A_vib=(0, 6))) == [5.1, 5.3]
    assert len(results.find(A_vib=(None, 0))) == 2
    # 1000 K: A_vib is 100 lower: -94.9, -94.7, -108.2, -108.4, -88.0
    assert sorted(d["material_id"] for d in results.find(A_vib=(None, -100), temperature=1000)) == [
        "mp-10695",
        "mp-560588",
    ]
    assert len(results.find(A_vib=(-100, None), temperature=1000.0)) == 3
    assert len(results.find(A_vib=(-100, None), temperature=300)) == 5
    assert _ids(results.find(C_v=(23.05, 30), S_vib=(37, 37.5))) == [("mp-10695", "mace")]
    assert sorted(d["material_id"] for d in results.find(S_vib=(50, None), temperature=1000)) == ["mp-10695", "mp-560588"]
    by_s = [d["thermal"]["T1000"]["S_J_per_K_mol"] for d in results.find(sort="-S_vib", temperature=1000)]
    assert by_s == sorted(by_s, reverse=True) and len(by_s) == 5
    asc = [d["thermal"]["T300"]["A_vib_meV_per_atom"] for d in results.find(sort="A_vib")]
    assert asc == [-8.4, -8.2, 5.1, 5.3, 12.0]
    two = results.find(sort=[("A_vib", -1)], limit=2)
    assert [d["material_id"] for d in two] == ["mp-804", "mp-149"]
    assert [d["material_id"] for d in results.find(sort=["formula", "-min_frequency"], limit=3)] == [
        "mp-804",
        "mp-149",
        "mp-149",
    ]
    with pytest.raises(InputError, match="empty"):
        results.find(A_vib=(5, 1))
    with pytest.raises(InputError, match="chemical system"):
        results.find(chemsys="Zn+S")
    with pytest.raises(InputError, match="formula"):
        results.find(formula="not a formula!")


def test_results_dataframe(results):
    df = results.to_dataframe(sort="A_vib")
    assert len(df) == 5
    assert list(df["material_id"]) == ["mp-560588", "mp-10695", "mp-149", "mp-149", "mp-804"]
    assert list(df["A_vib_meV_per_atom_300K"]) == [-8.4, -8.2, 5.1, 5.3, 12.0]
    assert list(df["A_vib_meV_per_atom_1000K"]) == pytest.approx([-108.4, -108.2, -94.9, -94.7, -88.0])
    assert set(df["campaign"]) == {"test-campaign"}
    assert list(df["dynamically_stable"]) == [False, True, True, True, True]
    assert set(df["engine_kind"]) == {"mlip", "reference"}
    only_300 = results.to_dataframe(temperatures=[300], chemsys="Si")
    assert "S_J_per_K_mol_300K" in only_300 and "S_J_per_K_mol_1000K" not in only_300
    empty = results.to_dataframe(formula="NaCl")
    assert len(empty) == 0 and "material_id" in empty.columns


def test_results_large_data_on_demand(results):
    rec = results.find_one(material_id="mp-10695")
    # the record only holds a reference; the array is fetched when asked for
    assert set(rec["force_constants"]) >= {"blob_uuid", "store"}
    fc = results.get_data(rec, "force_constants")
    assert isinstance(fc, np.ndarray) and fc.shape == (8, 8, 3, 3)
    assert fc.tobytes() == np.random.default_rng(2).normal(size=(8, 8, 3, 3)).tobytes()
    bands = results.get_data(rec["_job"]["uuid"], "band_structure")
    assert np.allclose(bands["distances"], np.linspace(0, 1, 5))
    raw = results.get_data(rec, "band_structure.frequencies", decode=False)
    assert isinstance(raw, list) and len(raw) == 5
    loaded = results.find(material_id="mp-10695", load=True)[0]
    assert np.asarray(loaded["force_constants"]).tobytes() == fc.tobytes()
    with pytest.raises(InputError, match="no field"):
        results.get_data(rec, "dielectric")


def test_results_indexes(results):
    done = results.ensure_indexes()
    assert "output.thermal.T300.A_vib_meV_per_atom" in done and "output.formula" in done
    if type(results.store.docs_store).__name__ == "MongoStore":
        assert all(done.values()), done
        names = results.store.docs_store._collection.index_information()
        keys = {k for spec in names.values() for k, _ in spec["key"]}
        assert {"output.formula", "output.chemsys", "output.thermal.T1000.S_J_per_K_mol"} <= keys
    # queries still work after indexing
    assert results.count(formula="ZnS", A_vib=(None, -8.3)) == 1


def test_a_document_is_never_stored_before_its_data(tmp_path):
    """A run killed between writing a job's document and its blob left a document whose data was
    missing, and every later ``query(load=True)`` failed (seen after kill -9). The blob goes first."""
    from phonon_flows.store import OrderedJobStore

    store = get_store(store_dir=tmp_path / "store", connect=True)
    assert isinstance(store, OrderedJobStore)
    data = store.additional_stores["data"]

    def killed(*args, **kwargs):  # the process dies while the blob is being written
        raise KeyboardInterrupt("killed")

    real_update = data.update
    data.update = killed
    response_doc = {"uuid": "job-1", "index": 1, "output": {"phonopy": {"@module": "x", "big": [1.0] * 10}},
                    "metadata": {}, "hosts": [], "name": "j", "completed_at": "now"}
    with pytest.raises(KeyboardInterrupt):
        store.update(response_doc, key=["uuid", "index"], save={"data": ["phonopy"]})
    assert store.docs_store.count({"uuid": "job-1"}) == 0  # nothing half-written

    data.update = real_update
    store.update(response_doc, key=["uuid", "index"], save={"data": ["phonopy"]})
    (doc,) = list(store.query({"uuid": "job-1"}, load=True))
    assert doc["output"]["phonopy"]["big"] == [1.0] * 10
    store.close()


def test_a_rerun_removes_the_data_a_killed_write_left_without_its_document(tmp_path):
    """Blobs go first, so a process killed after a job's blob and before its document leaves a blob
    nothing points at; the rerun writes the job again with a new blob. remove_orphan_blobs (called
    when a campaign or a pack starts again) leaves one data object per stored document."""
    from phonon_flows.store import remove_orphan_blobs

    store = get_store(store_dir=tmp_path / "store", connect=True)
    data = store.additional_stores["data"]

    def doc(uuid):
        return {"uuid": uuid, "index": 1, "output": {"phonopy": {"@module": "x", "big": [2.0] * 10}},
                "metadata": {}, "hosts": [], "name": "j", "completed_at": "now"}

    store.update(doc("job-0"), key=["uuid", "index"], save={"data": ["phonopy"]})  # a finished job
    real_docs_update = store.docs_store.update

    def killed(*args, **kwargs):  # the process dies after the blob, before the document
        raise KeyboardInterrupt("killed")

    store.docs_store.update = killed
    with pytest.raises(KeyboardInterrupt):
        store.update(doc("job-1"), key=["uuid", "index"], save={"data": ["phonopy"]})
    store.docs_store.update = real_docs_update
    assert store.docs_store.count({"uuid": "job-1"}) == 0 and data.count({"job_uuid": "job-1"}) == 1

    store.update(doc("job-1"), key=["uuid", "index"], save={"data": ["phonopy"]})  # the rerun
    assert data.count({"job_uuid": "job-1"}) == 2
    assert remove_orphan_blobs(store, ["job-0", "job-1", "job-never-run"]) == 1
    assert data.count({"job_uuid": "job-1"}) == 1 and data.count({"job_uuid": "job-0"}) == 1
    for uuid in ("job-0", "job-1"):  # every document still loads its data
        (d,) = list(store.query({"uuid": uuid}, load=True))
        assert d["output"]["phonopy"]["big"] == [2.0] * 10
    assert remove_orphan_blobs(store, ["job-0", "job-1"]) == 0
    store.close()


def _no_scan(monkeypatch):
    """Make any scan of a montydb collection (what maggma's upsert and query do) an error."""
    from montydb.collection import MontyCollection
    from montydb.cursor import MontyCursor

    def scan(self, query_spec):
        raise AssertionError(f"collection scanned for {query_spec}")
        yield  # pragma: no cover

    monkeypatch.setattr(MontyCollection, "_internal_scan_query", scan)

    def cursor(self, *args, **kwargs):  # what a find() reads the collection with
        raise AssertionError("collection scanned by a query")

    monkeypatch.setattr(MontyCursor, "_refresh", cursor)


def test_embedded_writes_replace_by_key_without_scanning_the_store(tmp_path, monkeypatch):
    """The embedded store's update writes each document with one SQLite upsert on an _id made from
    its key: same result as maggma's replace-or-insert, no read of the other documents; a query by
    the whole key reads by that _id."""
    from phonon_flows.store import KEYED_ID_PREFIX

    store = get_store(store_dir=tmp_path / "store")
    store.connect()
    docs = store.docs_store
    docs.update([{"uuid": f"u{i}", "index": 1, "output": {"x": i}} for i in range(50)], key=["uuid", "index"])
    _no_scan(monkeypatch)
    docs.update({"uuid": "u7", "index": 1, "output": {"x": 700}}, key=["uuid", "index"])  # replaces
    docs.update({"uuid": "u7", "index": 2, "output": {"x": 7002}}, key=["uuid", "index"])  # a new index: inserted
    data = store.additional_stores[DATA_STORE_NAME]
    data.update({"blob_uuid": "b1", "data": [1.0, 2.0]}, key="blob_uuid")
    data.update({"blob_uuid": "b1", "data": [3.0]}, key="blob_uuid")
    # reads by the whole key go by primary key too (a material's force constants, its document)
    assert data.query_one({"blob_uuid": "b1"}, properties=["blob_uuid", "data"]) == {
        "_id": 'pf-key:["blob_uuid"]:["b1"]', "blob_uuid": "b1", "data": [3.0]}
    assert docs.query_one({"index": 2, "uuid": "u7"})["output"]["x"] == 7002  # any order of the key fields
    assert docs.query_one({"uuid": "u7", "index": 1}, properties=["output.x"]) == {
        "_id": 'pf-key:["uuid", "index"]:["u7", 1]', "output": {"x": 700}}
    assert data.query_one({"blob_uuid": "missing"}) is None
    assert len(list(data.query({"blob_uuid": {"$in": ["b1", "missing"]}}))) == 1
    monkeypatch.undo()
    assert docs.count() == 51
    assert [d["output"]["x"] for d in docs.query({"uuid": "u7"}, sort={"index": 1})] == [700, 7002]
    assert data.count() == 1 and data.query_one({"blob_uuid": "b1"})["data"] == [3.0]
    ids = [d["_id"] for d in docs.query({}, properties=["_id"])]
    assert all(i.startswith(KEYED_ID_PREFIX) for i in ids) and len(set(ids)) == 51
    # a job's output with its large data, written through the JobStore and read back
    responses = run_locally(fc_job(3, n=20), store=store, log=False, ensure_success=True)
    (out,) = [r[1].output for r in responses.values()]
    assert np.allclose(out["force_constants"], _force_constants(3, 20))


def test_embedded_store_written_otherwise_keeps_maggma_s_update(tmp_path, monkeypatch):
    """A collection holding a document whose _id is not made from the key (an older store, another
    key) is updated the maggma way: still one document per key, never a duplicate."""
    store = get_store(store_dir=tmp_path / "store")
    store.connect()
    docs = store.docs_store
    docs._collection.insert_one({"uuid": "old", "index": 1, "output": {"x": 0}})  # an ObjectId _id
    docs.update({"uuid": "old", "index": 1, "output": {"x": 1}}, key=["uuid", "index"])
    docs.update({"uuid": "new", "index": 1, "output": {"x": 2}}, key=["uuid", "index"])
    assert docs.count() == 2 and docs.query_one({"uuid": "old"})["output"]["x"] == 1
    docs.update({"uuid": "new", "index": 1, "output": {"x": 3}}, key="uuid")  # another key: maggma's path
    assert docs.count({"uuid": "new"}) == 1 and docs.query_one({"uuid": "new"})["output"]["x"] == 3
    _no_scan(monkeypatch)
    with pytest.raises(AssertionError, match="scanned"):
        docs.update({"uuid": "x", "index": 1}, key=["uuid", "index"])
    with pytest.raises(AssertionError, match="scanned"):  # the old document has no keyed _id: maggma reads
        docs.query_one({"uuid": "old", "index": 1})
