"""A user's own MACE model file, screened the way the README says: `phonon-flows model add FILE`,
`model list` / `model show`, `run FILES --screen --model FILE` (phonons on the structures as given:
no relaxation by default; a cell relaxation with a forces-only model is refused with the reason),
and the same screening made from Python has the same jobs (keys without device settings)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from ase.build import bulk
from typer.testing import CliRunner

from phonon_flows.cli import app
from phonon_flows.flows import ScreeningMaker, TrainingCampaignMaker
from phonon_flows.results import PhononResults
from phonon_flows.store import get_store
from test_fireworks_failures import write_cifs


def _invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.mark.slow
def test_user_model_file_screened_as_given(tiny_mace_model, tmp_path, monkeypatch):
    monkeypatch.setenv("PHONON_FLOWS_MODEL_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("JOBFLOW_CONFIG_FILE", raising=False)
    monkeypatch.chdir(tmp_path)
    store_dir = tmp_path / "store"
    model = tmp_path / "my.model"
    model.write_bytes(tiny_mace_model.path.read_bytes())
    sha = tiny_mace_model.sha256

    added = _invoke("model", "add", model, "--store-dir", store_dir)
    assert added.exit_code == 0 and sha in added.stdout and str(store_dir) in added.stdout, added.output
    listed = json.loads(_invoke("model", "list", "--store-dir", store_dir, "--json").stdout)
    assert [(m["model_sha256"], m["elements"]) for m in listed] == [(sha, ["Al", "Cu"])]
    shown = _invoke("model", "show", sha[:8], "--store-dir", store_dir)
    assert json.loads(shown.stdout)["model_sha256"] == sha

    a = 3.70  # not the model's equilibrium: a relaxation would move it
    cif = write_cifs(tmp_path / "structures", {"Cu-fcc": bulk("Cu", "fcc", a=a)})
    common = ["--name", "mine", "--min-atoms", 8, "--max-atoms", 40, "--store-dir", store_dir, "--no-progress"]
    refused = _invoke("run", *cif, "--screen", "--model", model, "--screen-relax", "cell", *common)
    assert refused.exit_code == 1 and "stress means nothing" in refused.stderr, refused.output
    res = _invoke("run", *cif, "--screen", "--model", model, "--device", "cpu", *common)
    assert res.exit_code == 0, res.output

    store = get_store(store_dir=store_dir)
    (doc,) = PhononResults(store).find(campaign="mine")
    assert doc["engine"]["model_sha256"] == sha and not doc["failed"]
    st = json.loads(_invoke("status", "mine", "--store-dir", store_dir, "--json").stdout)["campaigns"][0]
    assert "relax" not in st["by_stage"]  # no relaxation: phonons on the structure as given
    volume = doc["structure"]["lattice"]["volume"] / len(doc["structure"]["sites"])
    assert volume == pytest.approx(a**3 / 4, rel=1e-6)

    # a query mixing the MACE row with an imported (no model) row labels each engine plainly
    si = Path(__file__).resolve().parent / "data" / "dft-phonons" / "Si"
    assert _invoke("import", si, "--store-dir", store_dir).exit_code == 0
    table = _invoke("query", "--store-dir", store_dir).stdout
    assert f"mace [{sha[:8]}]" in table and "phonopy-import" in table and "nan" not in table

    # the screening's report: table with units, stability, figures; no reference yet
    rep = _invoke("report", "mine", "--store-dir", store_dir, "--out", tmp_path / "rep")
    assert rep.exit_code == 0, rep.output
    summary = (tmp_path / "rep" / "summary.md").read_text()
    assert "# Screening mine" in summary and ("1 stable" in summary or "1 unstable" in summary)
    assert "A_vib_300K_meV_per_atom" in (tmp_path / "rep" / "materials.csv").read_text()
    assert (tmp_path / "rep" / "figures" / "stability.png").is_file()
    assert (tmp_path / "rep" / "figures" / "bands_Cu-fcc.png").is_file()
    assert "Benchmark against" not in summary

    # a phonopy calculation of the same cell and supercell (EMT forces), imported as the reference:
    # the report benchmarks the screening against it
    _emt_phonopy_folder(doc, tmp_path / "cu_ref")
    assert _invoke("import", tmp_path / "cu_ref", "--material-id", "Cu-fcc", "--store-dir", store_dir).exit_code == 0
    rep = _invoke("report", "mine", "--store-dir", store_dir, "--out", tmp_path / "rep2")
    assert rep.exit_code == 0, rep.output
    summary = (tmp_path / "rep2" / "summary.md").read_text()
    assert "Benchmark against 1 imported/DFT reference(s) in the store: Cu-fcc" in summary, summary
    assert (tmp_path / "rep2" / "figures" / "parity_frequency.png").is_file()

    # the same screening from Python (a model file too): the same jobs, so nothing is redone
    flow = ScreeningMaker(name="mine", model=str(model), store=store, min_atoms=8, max_atoms=40).make(cif)
    assert sorted(j.uuid for j in flow.jobs[0].function_args[0].jobs) == sorted(
        j["uuid"] for j in _campaign_jobs(store, "mine"))
    store.close()


def _emt_phonopy_folder(doc, folder: Path) -> None:
    """phonopy_params.yaml of the PhononDoc's cell and supercell, forces from ASE's EMT."""
    import numpy as np
    from ase import Atoms
    from ase.calculators.emt import EMT
    from phonopy import Phonopy
    from phonopy.structure.atoms import PhonopyAtoms
    from pymatgen.core import Structure

    s = Structure.from_dict(doc["structure"])
    unit = PhonopyAtoms(symbols=[str(x.specie) for x in s], cell=s.lattice.matrix, scaled_positions=s.frac_coords)
    ph = Phonopy(unit, supercell_matrix=np.array(doc["supercell_matrix"]), primitive_matrix="auto")
    ph.generate_displacements(distance=0.01)
    forces = []
    for sc in ph.supercells_with_displacements:
        atoms = Atoms(sc.symbols, cell=sc.cell, scaled_positions=sc.scaled_positions, pbc=True)
        atoms.calc = EMT()
        forces.append(atoms.get_forces())
    ph.forces = np.array(forces)
    folder.mkdir()
    ph.save(folder / "phonopy_params.yaml")


def _campaign_jobs(store, name):
    store.connect()
    doc = store.query_one({"output.kind": "phonon_flows.campaign", "output.campaign": name}, properties=["output"])
    return doc["output"]["jobs"]


def test_training_campaign_keys_do_not_depend_on_the_device(tmp_path):
    """`phonon-flows run` passes --device to every MACE job; Python usually does not: same keys."""
    from phonon_flows.cli import _campaign_flow

    cif = write_cifs(tmp_path, {"Cu-fcc": bulk("Cu", "fcc", a=3.6), "Cu-hcp": bulk("Cu", "hcp", a=2.56, c=4.18)})
    flow, _ = _campaign_flow(cif, "same", ["Cu-fcc"], "emt", "small", None, 6, 8, 40, True, None, "cpu", False,
                             None, None)
    py = TrainingCampaignMaker(name="same", engine="emt", preset="small", min_atoms=8, max_atoms=40).make(
        cif, holdout=["Cu-fcc"])
    uuids = lambda f: sorted(j.uuid for j in f.jobs[0].function_args[0].jobs)  # noqa: E731
    assert uuids(flow) == uuids(py)


@pytest.mark.slow
def test_rerun_finishes_a_local_campaign_once_the_cause_is_fixed(tiny_mace_model, tmp_path, monkeypatch):
    """A screening run before its model was in the store fails each material (recorded, with the
    job's log); `model add` then `phonon-flows rerun NAME` runs the saved flow again and finishes."""
    from phonon_flows.runner import run_campaign

    monkeypatch.setenv("PHONON_FLOWS_MODEL_CACHE", str(tmp_path / "cache"))  # empty: the model is nowhere
    monkeypatch.delenv("JOBFLOW_CONFIG_FILE", raising=False)
    monkeypatch.chdir(tmp_path)
    store_dir = tmp_path / "store"
    cif = write_cifs(tmp_path / "structures", {"Cu-fcc": bulk("Cu", "fcc", a=3.6), "Al-fcc": bulk("Al", "fcc", a=4.05)})
    flow = ScreeningMaker(name="early", model=tiny_mace_model.sha256, model_elements=["Al", "Cu"], min_atoms=8,
                          max_atoms=40, engine_kwargs={"device": "cpu"}).make(cif)
    first = run_campaign(flow, get_store(store_dir=store_dir), progress=False)
    assert not first.ok and first.failed_materials() == ["Al-fcc", "Cu-fcc"], first.render()
    st = _invoke("status", "early", "--store-dir", store_dir)
    assert "no MACE model with sha256" in st.stdout and "job.log" in st.stdout and "phonon-flows rerun early" in st.stdout

    assert _invoke("model", "add", tiny_mace_model.path, "--store-dir", store_dir).exit_code == 0
    rerun = _invoke("rerun", "early", "--store-dir", store_dir, "--no-progress")
    assert rerun.exit_code == 0, rerun.output
    assert "reused from the store" in rerun.stderr  # the campaign record was not redone
    counts = json.loads(_invoke("status", "early", "--store-dir", store_dir, "--json").stdout)["campaigns"][0]["counts"]
    assert counts["failed"] == counts["pending"] == 0 and counts["done"] == 4  # record, batch, 2 PhononDocs
    missing = _invoke("rerun", "nope", "--store-dir", store_dir)
    assert missing.exit_code == 1 and "no saved flow of campaign 'nope'" in missing.stderr
