"""Campaigns end to end: TrainingCampaignMaker / ScreeningMaker flows (static, deterministic job
uuids), run with jobflow's run_locally and with phonon_flows.runner.run_campaign (resume, failures),
and the results found again with PhononResults. EMT stands in for the reference (fast)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from ase.build import bulk
from jobflow import Flow, OnMissing, job, run_locally
from pymatgen.io.ase import AseAtomsAdaptor

from phonon_flows.errors import InputError
from phonon_flows.flows import ScreeningMaker, TrainingCampaignMaker, key_uuid
from phonon_flows.makers.benchmark import BenchmarkMaker
from phonon_flows.results import PhononResults
from phonon_flows.runner import campaign_status, failure_records, run_campaign, running_records, write_running
from phonon_flows.schemas.campaign import CAMPAIGN_KIND, FAILURE_KIND, RUNNING_UUID_PREFIX
from phonon_flows.store import get_store

R_GAS = 8.314462618  # J/(K mol)


def _s(*args, **kwargs):
    return AseAtomsAdaptor.get_structure(bulk(*args, **kwargs))


def materials() -> dict:
    """Two training materials (Cu hcp, Au fcc) and a held-out one (Cu fcc), all EMT elements."""
    return {
        "Cu-hcp": _s("Cu", "hcp", a=2.56, c=4.18),
        "Au-fcc": _s("Au", "fcc", a=4.08),
        "Cu-fcc": _s("Cu", "fcc", a=3.61),
    }


def campaign_maker(name: str = "emt-campaign", **overrides) -> TrainingCampaignMaker:
    """A tiny campaign: EMT reference, supercells of 8-40 atoms (64 for one-atom cells), the small
    MACE preset for 2 epochs, no figures."""
    settings = dict(
        name=name,
        engine="emt",
        n_perturbations=4,
        min_atoms=8,
        max_atoms=40,
        relax_kwargs={"fmax": 0.01},
        preset="small",
        hyperparameters={"max_num_epochs": 2, "start_swa": 1},
        training_kwargs={"num_threads": 1, "device": "cpu"},
        mlip_engine_kwargs={"device": "cpu"},
        benchmark_maker=BenchmarkMaker(write_figures=False),
        holdout=("Cu-fcc",),
    )
    settings.update(overrides)
    return TrainingCampaignMaker(**settings)


def _stages(flow: Flow) -> dict[str, str]:
    return {j.uuid: j.metadata["phonon_flows"]["stage"] for j in flow.jobs}


# -- flows: static, deterministic, recorded -------------------------------------------------------


def test_campaign_flow_is_static_keyed_and_records_the_split():
    flow = campaign_maker().make(materials())
    again = campaign_maker().make(materials())
    names = [j.name for j in flow.jobs]
    assert [j.uuid for j in flow.jobs] == [j.uuid for j in again.jobs]  # deterministic uuids
    assert len(set(j.uuid for j in flow.jobs)) == len(flow.jobs)
    stages = sorted(_stages(flow).values())
    assert stages == sorted(
        ["campaign"] + ["relax"] * 3 + ["perturb", "label"] * 2
        + ["training-set", "train", "phonon-reference", "phonon-mlip", "benchmark"]
    ), names
    # every job's output reference points at its (new) uuid, and inputs point at jobs of the flow
    uuids = {j.uuid for j in flow.jobs}
    for j in flow.jobs:
        assert j.output.uuid == j.uuid
        assert set(j.input_uuids) <= uuids, j.name
    # the split, recorded in the campaign document and in every job's metadata
    doc = flow.jobs[0].function_args[0]
    assert doc.kind == CAMPAIGN_KIND
    assert doc.training_material_ids == ["Cu-hcp", "Au-fcc"] and doc.holdout_material_ids == ["Cu-fcc"]
    assert {j.uuid for j in doc.jobs} == uuids
    assert "NOT DFT" in doc.reference_note and doc.reference_is_dft is False
    meta = {j.metadata["phonon_flows"].get("material_id"): j.metadata["phonon_flows"].get("split") for j in flow.jobs}
    assert meta["Cu-fcc"] == "holdout" and meta["Cu-hcp"] == "train" and meta["Au-fcc"] == "train"
    # both phonon calculations of the held-out material use the same supercell matrix
    phonon_jobs = [j for j in flow.jobs if j.metadata["phonon_flows"]["stage"].startswith("phonon")]
    assert len(phonon_jobs) == 2
    assert phonon_jobs[0].function_args[4] == phonon_jobs[1].function_args[4] == doc.materials[-1].supercell_matrix


def test_keys_change_with_what_they_depend_on():
    base = _stages(campaign_maker().make(materials()))
    other = _stages(campaign_maker(n_perturbations=5).make(materials()))
    same = set(base) & set(other)
    # relaxations do not depend on the perturbations; everything downstream of them does
    assert {base[u] for u in same} == {"relax", "phonon-reference"}
    renamed = campaign_maker(name="another").make(materials())
    assert not set(base) & {j.uuid for j in renamed.jobs}


def test_campaign_flow_goes_to_fireworks_with_categories():
    from phonon_flows.fireworks import flow_to_workflow

    flow = campaign_maker().make(materials())
    wf = flow_to_workflow(flow)
    by_stage = {}
    for fw in wf.fws:
        by_stage.setdefault(fw.spec["phonon_flows"]["stage"], set()).add(fw.spec["_category"])
    assert by_stage["train"] == {"gpu"} and by_stage["phonon-mlip"] == {"gpu"}
    for stage in ("relax", "perturb", "label", "training-set", "phonon-reference", "benchmark", "campaign"):
        assert by_stage[stage] == {"cpu"}, stage
    assert len(wf.fws) == len(flow.jobs)


def test_bad_inputs_are_recorded_and_the_rest_goes_on(tmp_path):
    bad = tmp_path / "broken.cif"
    bad.write_text("this is not a crystal\n")
    si = _s("Si", "diamond", a=5.43)  # EMT has no Si
    mats = [*materials().values(), si, str(bad)]
    flow = campaign_maker().make(mats, holdout=["Cu-fcc", "broken"], material_ids=["Cu-hcp", "Au-fcc", "Cu-fcc", "Si", None])
    doc = flow.jobs[0].function_args[0]
    refused = {e.material_id: e.reason for e in doc.input_failures}
    assert set(refused) == {"Si", "broken"}
    assert "Si" in refused["Si"] and "emt" in refused["Si"]
    assert "broken.cif" in refused["broken"]
    assert doc.holdout_material_ids == ["Cu-fcc"] and doc.training_material_ids == ["Cu-hcp", "Au-fcc"]
    # an unknown held-out name is an error naming it; so is a held-out element nobody trains on
    with pytest.raises(InputError, match="Cu-bcc"):
        campaign_maker().make(materials(), holdout=["Cu-bcc"])
    pt = {"Pt-fcc": _s("Pt", "fcc", a=3.92), **materials()}
    doc = campaign_maker().make(pt, holdout=["Pt-fcc", "Cu-fcc"]).jobs[0].function_args[0]
    assert [e.material_id for e in doc.input_failures] == ["Pt-fcc"]
    assert "Pt" in doc.input_failures[0].reason
    with pytest.raises(InputError, match="no training material"):
        campaign_maker().make({"Cu-fcc": materials()["Cu-fcc"]}, holdout=["Cu-fcc"])


def test_screening_flow():
    sha = "ab" * 32
    flow = ScreeningMaker(name="screen", model=sha, model_elements=["Cu"], min_atoms=8, max_atoms=40).make(
        {"Cu-fcc": materials()["Cu-fcc"], "Au-fcc": materials()["Au-fcc"]}
    )
    doc = flow.jobs[0].function_args[0]
    assert doc.campaign_type == "screening" and doc.screen_material_ids == ["Cu-fcc"]
    assert [e.material_id for e in doc.input_failures] == ["Au-fcc"]  # the model knows no Au
    stages = sorted(j.metadata["phonon_flows"]["stage"] for j in flow.jobs)
    assert stages == ["campaign", "phonon-batch"]  # default: phonons on the structures as given, batched
    assert sorted(j.stage for j in doc.jobs) == ["campaign", "phonon-batch", "phonon-mlip"]
    flow = ScreeningMaker(name="screen", model=sha, model_elements=["Cu"], min_atoms=8, max_atoms=40,
                          relax="positions").make({"Cu-fcc": materials()["Cu-fcc"]})
    assert sorted(j.metadata["phonon_flows"]["stage"] for j in flow.jobs) == ["campaign", "phonon-batch", "relax"]
    relax = next(j for j in flow.jobs if j.metadata["phonon_flows"]["stage"] == "relax")
    assert relax.function.__self__.relax_cell is False
    with pytest.raises(InputError, match="stress means nothing"):  # unknown training: no cell relaxation
        ScreeningMaker(model=sha, model_elements=["Cu"], relax="cell").make([materials()["Cu-fcc"]])
    for j in flow.jobs[1:]:
        assert j.config.manager_config["_category"] == "gpu"
        assert j.config.expose_store  # the model is fetched from the job's store
    with pytest.raises(InputError, match="sha256"):
        ScreeningMaker(model="not-a-sha").make([materials()["Cu-fcc"]])


# -- the runner on small jobs: failures stay local, resume redoes only what is missing ----------


@job
def _value(x: float) -> float:
    return x


@job
def _maybe_fail(x: float, flag: str) -> float:
    from pathlib import Path

    if not Path(flag).exists():
        raise RuntimeError(f"no flag file {Path(flag).name}")
    return 2 * x


@job
def _double(x: float) -> float:
    return 2 * x


@job
def _collect(values: list) -> dict:
    return {"n": len(values), "missing": sum(v is None for v in values)}


def _toy_flow(flag: str) -> Flow:
    from phonon_flows.flows import assign_key
    from phonon_flows.store import tag_metadata

    a = assign_key(_value(1.0), "a")
    b = assign_key(_maybe_fail(a.output, flag), "b")
    c = assign_key(_double(b.output), "c")
    d = assign_key(_collect([a.output, b.output, c.output]), "d")
    d.config.on_missing_references = OnMissing.NONE
    for j, mid, stage in ((a, "m1", "one"), (b, "m1", "two"), (c, "m1", "three"), (d, None, "collect")):
        tag_metadata(j, campaign="toy", material_id=mid, stage=stage)
    return Flow([a, b, c, d], name="toy")


def test_runner_records_failures_skips_downstream_and_resumes(tmp_path):
    store = get_store(store_dir=tmp_path / "store")
    flag = tmp_path / "flag"
    first = run_campaign(_toy_flow(str(flag)), store, progress=False, work_dir=tmp_path / "runs")
    assert first.counts == {"done": 2, "reused": 0, "failed": 1, "skipped": 1}
    failed = {o.stage: o for o in first.failures}
    assert "RuntimeError: no flag file flag" in failed["two"].reason
    assert "needs the output of a job that failed" in failed["three"].reason
    assert (tmp_path / "runs" / "toy").is_dir() and "job.log" in {p.name for p in (tmp_path / "runs" / "toy").rglob("*")}
    records = {r["stage"]: r for r in failure_records(store, campaign="toy")}
    assert records["two"]["state"] == "failed" and records["three"]["state"] == "skipped"
    assert records["two"]["material_id"] == "m1" and records["two"]["directory"]
    store.connect()
    out = store.get_output(key_uuid("d"))
    assert out == {"n": 3, "missing": 2}  # the collecting job ran with what was there
    # the failure records never stand in for the outputs
    assert store.query_one({"uuid": key_uuid("b")}) is None

    # nothing changed: the failed job fails again, the others are reused
    again = run_campaign(_toy_flow(str(flag)), store, progress=False, work_dir=tmp_path / "runs")
    # the failed job fails again: nothing its collector sees changed, so the collector is reused
    assert again.counts == {"done": 0, "reused": 2, "failed": 1, "skipped": 1}

    flag.touch()  # "fixed": the failed job and everything downstream of it run, nothing else
    fixed = run_campaign(_toy_flow(str(flag)), store, progress=False, work_dir=tmp_path / "runs")
    assert fixed.counts == {"done": 3, "reused": 1, "failed": 0, "skipped": 0}
    assert store.get_output(key_uuid("d")) == {"n": 3, "missing": 0}
    assert failure_records(store, campaign="toy") == []
    assert store.docs_store.count({"uuid": {"$in": [key_uuid(k) for k in "abcd"]}}) == 4  # no duplicates
    last = run_campaign(_toy_flow(str(flag)), store, progress=False, work_dir=tmp_path / "runs")
    assert last.n_run == 0 and last.count("reused") == 4


# -- a whole campaign -----------------------------------------------------------------------------


def _check_results(store, name):
    results = PhononResults(store)
    found = results.find(campaign=name, material_id="Cu-fcc")
    assert sorted(r["engine"]["name"] for r in found) == ["emt", "mace"]
    ref = next(r for r in found if r["engine"]["name"] == "emt")
    mlip = next(r for r in found if r["engine"]["name"] == "mace")
    assert ref["engine"]["kind"] == "reference" and mlip["engine"]["kind"] == "mlip"
    assert not ref["failed"] and not mlip["failed"]
    # fcc Cu with EMT: stable, and C_v at 1000 K at the Dulong-Petit limit 3R (harmonic)
    assert ref["dynamically_stable"] is True
    assert ref["thermal"]["T1000"]["Cv_J_per_K_mol"] == pytest.approx(3 * R_GAS, rel=0.01)
    assert ref["supercell_matrix"] == mlip["supercell_matrix"]
    df = results.to_dataframe(campaign=name)
    assert len(df) == 2 and set(df["material_id"]) == {"Cu-fcc"}
    # the model used is the campaign's, and the benchmark compares the two
    store.connect()
    train = store.query_one({"metadata.phonon_flows.campaign": name, "metadata.phonon_flows.stage": "train"})
    assert mlip["engine"]["model_sha256"] == train["output"]["model_sha256"]
    bench = store.query_one({"metadata.phonon_flows.campaign": name, "metadata.phonon_flows.stage": "benchmark"})
    assert bench["output"]["material_ids"] == ["Cu-fcc"] and bench["output"]["reference_is_dft"] is False
    assert "NOT DFT" in bench["output"]["reference_label"]
    return ref, mlip


@pytest.mark.slow
def test_campaign_run_locally_then_resumed_by_the_runner(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    store = get_store(store_dir=tmp_path / "store")
    flow = campaign_maker().make(materials())
    responses = run_locally(flow, store=store, log=False, ensure_success=True)
    assert set(responses) == {j.uuid for j in flow.jobs}
    _check_results(store, "emt-campaign")
    n_docs = store.docs_store.count({})

    # the runner finds everything run_locally stored: the same deterministic uuids
    rerun = run_campaign(campaign_maker().make(materials()), store, progress=False, work_dir=tmp_path / "runs")
    assert rerun.n_run == 0 and rerun.count("reused") == len(flow.jobs)
    assert store.docs_store.count({}) == n_docs

    # an interrupted campaign: the MACE phonons and the benchmark are missing
    stages = _stages(flow)
    lost = [u for u, s in stages.items() if s in ("phonon-mlip", "benchmark")]
    store.docs_store.remove_docs({"uuid": {"$in": lost}})
    resumed = run_campaign(campaign_maker().make(materials()), store, progress=False, work_dir=tmp_path / "runs")
    assert resumed.counts == {"done": 2, "reused": len(flow.jobs) - 2, "failed": 0, "skipped": 0}
    assert sorted(o.stage for o in resumed.outcomes if o.state == "done") == ["benchmark", "phonon-mlip"]
    assert store.docs_store.count({}) == n_docs  # nothing twice
    _check_results(store, "emt-campaign")

    status = campaign_status(store, "emt-campaign")[0]
    assert status.counts == {"done": len(flow.jobs), "failed": 0, "skipped": 0, "running": 0, "pending": 0}
    assert status.by_stage["train"]["done"] == 1


@pytest.mark.slow
def test_campaign_with_the_runner_then_a_screening_with_its_model(tmp_path):
    store = get_store(store_dir=tmp_path / "store")
    flow = campaign_maker(name="runner-campaign").make(materials())
    summary = run_campaign(flow, store, progress=False, work_dir=tmp_path / "runs")
    assert summary.ok and summary.count("done") == len(flow.jobs), summary.render()
    # each job ran in its own directory: the training one holds mace's files
    dirs = {p.name.split("_")[0] for p in (tmp_path / "runs" / "runner-campaign").iterdir() if p.is_dir()}
    assert {"train", "relax", "label", "phonon-mlip", "benchmark"} <= dirs
    ref, mlip = _check_results(store, "runner-campaign")
    again = run_campaign(campaign_maker(name="runner-campaign").make(materials()), store, progress=False,
                         work_dir=tmp_path / "runs")
    assert again.n_run == 0

    # screen a new material (Cu bcc) with the trained model, fetched by its sha256 from the store
    sha = mlip["engine"]["model_sha256"]
    screening = ScreeningMaker(name="screen", model=sha, store=store, relax=False, min_atoms=8, max_atoms=40,
                               engine_kwargs={"device": "cpu"})
    sflow = screening.make({"Cu-bcc": _s("Cu", "bcc", a=2.87), "Pt-fcc": _s("Pt", "fcc", a=3.92)})
    sdoc = sflow.jobs[0].function_args[0]
    assert [e.material_id for e in sdoc.input_failures] == ["Pt-fcc"]  # not in the model
    s = run_campaign(sflow, store, progress=False, work_dir=tmp_path / "runs")
    assert s.ok, s.render()
    docs = PhononResults(store).find(campaign="screen")
    assert [d["material_id"] for d in docs] == ["Cu-bcc"]
    assert docs[0]["engine"]["model_sha256"] == sha and docs[0]["thermal"]["T300"]["Cv_J_per_K_mol"] > 0
    assert np.isfinite(docs[0]["min_frequency_THz"])


def _all_jobs(flow):
    out = []
    for item in flow.jobs:
        out += _all_jobs(item) if isinstance(item, Flow) else [item]
    return out


def test_vasp_campaign_flow_is_static_too():
    """With VASP as the reference the makers return sub-flows (relax chain, static + parse, and
    the reference phonons: displacements -> one static per displaced supercell -> phonopy): they
    get deterministic uuids too, with their internal references rewired."""
    from phonon_flows.fireworks import flow_to_workflow

    mats = {"Cu-hcp": materials()["Cu-hcp"], "Cu-fcc": materials()["Cu-fcc"]}
    maker = campaign_maker(engine="vasp", n_perturbations=2, relax_kwargs={})
    flow = maker.make(mats)
    jobs = _all_jobs(flow)
    assert [j.uuid for j in jobs] == [j.uuid for j in _all_jobs(maker.make(mats))]
    uuids = {j.uuid for j in jobs}
    assert len(uuids) == len(jobs)
    for j in jobs:
        assert set(j.input_uuids) <= uuids, j.name
        assert j.output.uuid == j.uuid
    by_stage = {}
    for j in jobs:
        by_stage.setdefault(j.metadata["phonon_flows"]["stage"], []).append(j.name)
    # fcc Cu: one symmetry-inequivalent displacement -> one VASP static (+ its parsing job)
    assert sorted(by_stage["phonon-reference"]) == sorted(
        ["phonon displacements Cu-fcc", "recipe static Cu-fcc #0", "vasp forces Cu-fcc #0", "phonons vasp Cu-fcc"]
    )
    assert len(by_stage["label"]) == 2 * 2  # two perturbed supercells: static + parsing each
    doc = flow.jobs[0].function_args[0]
    assert doc.reference_is_dft is True and "DFT" in doc.reference_note and "NOT" not in doc.reference_note
    wf = flow_to_workflow(flow)
    assert len(wf.fws) == len(jobs)
    assert {fw.spec["_category"] for fw in wf.fws if fw.spec["phonon_flows"]["stage"] == "label"} == {"cpu"}


def test_the_python_campaign_defaults_to_dft_like_the_command_line():
    """No entry point labels with a stand-in unless it is named: Python's default is VASP, as run/submit's."""
    import inspect

    from phonon_flows import cli

    assert TrainingCampaignMaker().engine == "vasp"
    run_default = inspect.signature(cli.run).parameters["engine"].default
    assert getattr(run_default, "default", run_default) == "vasp"


def test_a_rerun_clears_the_running_marker_a_killed_run_left_on_a_stored_job(tmp_path):
    """A kill after a job's output is stored but before its running marker is removed leaves the
    marker behind; the rerun reuses the output and removes the marker (no extra document)."""
    store = get_store(store_dir=tmp_path / "store")
    flag = tmp_path / "flag"
    flag.touch()
    flow = _toy_flow(str(flag))
    assert run_campaign(flow, store, progress=False, work_dir=tmp_path / "runs").counts["done"] == 4
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()
    store.connect()
    a = flow.jobs[0]
    write_running(store, a, tmp_path / "runs" / "a", "toy")
    marker = store.docs_store.query_one({"uuid": RUNNING_UUID_PREFIX + a.uuid})
    marker["output"]["pid"] = int(dead)
    store.docs_store.update(marker, key=["uuid", "index"])
    assert running_records(store, [a.uuid]) == {}  # not running: its process is gone
    assert store.docs_store.count({"uuid": RUNNING_UUID_PREFIX + a.uuid}) == 1

    again = run_campaign(_toy_flow(str(flag)), store, progress=False, work_dir=tmp_path / "runs")
    assert again.count("reused") == 4
    store.connect()
    assert store.docs_store.count({"uuid": RUNNING_UUID_PREFIX + a.uuid}) == 0
