"""The README's MongoDB schema, run as written with plain pymongo on real PhononDocs (EMT phonons
of two copper cells) stored in MongoDB + GridFS through the wire protocol."""

from __future__ import annotations

import json
import zlib

import gridfs
import numpy as np
from ase.build import bulk
from jobflow import Flow, run_locally
from pymatgen.io.ase import AseAtomsAdaptor
from pymongo import MongoClient

from phonon_flows.makers.phonons import PhononMaker
from phonon_flows.store import get_store, tag_metadata


def test_readme_pymongo_examples(mongo_uri, mongo_db_name):
    store = get_store(mongo_uri=mongo_uri, database=mongo_db_name)
    maker = PhononMaker(engine="emt", band_npoints=11)
    jobs = []
    for mid, a in (("cu-a", 3.61), ("cu-b", 3.70)):
        cu = AseAtomsAdaptor.get_structure(bulk("Cu", "fcc", a=a))
        j = maker.make(cu, material_id=mid, supercell_matrix=[[-2, 2, 2], [2, -2, 2], [2, 2, -2]])
        jobs.append(tag_metadata(j, campaign="metals", material_id=mid, stage="phonon"))
    run_locally(Flow(jobs), store=store, create_folders=False, ensure_success=True)

    db = MongoClient(mongo_uri)[mongo_db_name]
    # 1. stable phonons of a chemical system, lowest A_vib at 300 K first (a plain dotted path)
    rows = list(db.outputs.find(
        {"output.@class": "PhononDoc", "output.chemsys": "Cu", "output.engine.kind": "reference",
         "output.dynamically_stable": True, "output.failed": False},
        {"output.material_id": 1, "output.thermal.T300.A_vib_meV_per_atom": 1},
    ).sort("output.thermal.T300.A_vib_meV_per_atom", 1))
    values = [r["output"]["thermal"]["T300"]["A_vib_meV_per_atom"] for r in rows]
    assert len(rows) == 2 and values == sorted(values)
    assert rows[0]["output"]["material_id"] == "cu-b"  # the expanded cell is softer: lower A_vib

    # 2. a range on a per-cell quantity at 1000 K within one campaign
    s_cell = sorted(r["output"]["thermal"]["T1000"]["S_J_per_K_mol_cell"] for r in db.outputs.find(
        {"metadata.phonon_flows.campaign": "metals", "output.@class": "PhononDoc"}))
    hot = list(db.outputs.find({"metadata.phonon_flows.campaign": "metals",
                                "output.thermal.T1000.S_J_per_K_mol_cell": {"$gt": np.mean(s_cell)}}))
    assert [h["output"]["material_id"] for h in hot] == ["cu-b"]

    # 3. the band structure of a document, from GridFS, as the README says
    doc = db.outputs.find_one({"output.material_id": "cu-a", "output.@class": "PhononDoc"})
    ref = doc["output"]["band_structure"]
    f = gridfs.GridFS(db, "phonon_flows_data").find_one({"metadata.blob_uuid": ref["blob_uuid"]})
    assert f.metadata["job_uuid"] == doc["uuid"] and f.metadata["compression"] == "zlib"
    assert f.metadata["job_index"] == doc["index"]
    blob = json.loads(zlib.decompress(f.read()))
    bands = np.asarray(blob["data"]["frequencies"])
    assert blob["job_uuid"] == doc["uuid"] and bands.shape[1] == 3
    assert bands.min() == doc["output"]["min_frequency_band_THz"]
