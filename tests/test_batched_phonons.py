"""Batching across materials: compute_grouped and BatchedPhononMaker with ASE's EMT (fast),
checked against phonopy driven directly with the EMT calculator and against PhononMaker."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT
from jobflow import run_locally
from phonopy import Phonopy
from pymatgen.io.ase import AseAtomsAdaptor
from pymatgen.io.phonopy import get_phonopy_structure

from _phonopy_reference import phonopy_with_calculator

from phonon_flows.engines import get_engine
from phonon_flows.engines.batching import compute_grouped
from phonon_flows.errors import UnsupportedElementsError
from phonon_flows.makers import PhononMaker
from phonon_flows.makers.batched_phonons import BatchedPhononMaker, phonons_for_many
from phonon_flows.makers.phonons import phonon_settings
from phonon_flows.schemas.batch import PACK_PROGRESS
from phonon_flows.store import get_store

SMALL = [[3, 0, 0], [0, 3, 0], [0, 0, 3]]  # 27-atom supercells of the fcc primitive cell: fast


def _structures():
    cu = AseAtomsAdaptor.get_structure(bulk("Cu", "fcc", a=3.6))
    al = AseAtomsAdaptor.get_structure(bulk("Al", "fcc", a=4.05))
    nacl = AseAtomsAdaptor.get_structure(bulk("NaCl", "rocksalt", a=5.64))  # EMT has no Na, Cl
    return {"Cu": cu, "Al": al, "NaCl": nacl}


def _phonopy_emt_frequencies(structure, qpoints):
    """Independent reference: phonopy's API with ASE's EMT calculator, one supercell at a time."""
    phonon = phonopy_with_calculator(structure, SMALL, EMT())
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


@pytest.mark.parametrize("workers", [0, 1], ids=["serial", "pipelined"])
def test_each_finished_material_of_a_pack_logs_one_line(caplog, workers):
    """One INFO line per material (id, displaced supercells, seconds, k of n), in both paths; a
    failed material is counted and said to have failed."""
    s = _structures()
    names = ["Cu", "NaCl", "Al"]
    caplog.set_level(logging.INFO, logger="phonon_flows.makers.batched_phonons")
    docs = phonons_for_many([s[n] for n in names], get_engine("emt"), phonon_settings(temperatures=(300.0,)),
                            [SMALL] * 3, names, postprocess_workers=workers, progress=(4, 10))
    lines = [r for r in caplog.records if hasattr(r, PACK_PROGRESS)]
    assert len(lines) == 3
    got = {r.pack_progress["material_id"]: (r.pack_progress, r.getMessage()) for r in lines}
    assert set(got) == set(names)
    assert sorted(p["k"] for p, _ in got.values()) == [5, 6, 7] and {p["n"] for p, _ in got.values()} == {10}
    assert got["NaCl"][0]["failed"] and "NaCl failed" in got["NaCl"][1]
    cu, msg = got["Cu"]
    assert not cu["failed"] and cu["n_supercells"] == docs[0].n_displacements > 0 and cu["seconds"] > 0
    assert msg.startswith("phonons of Cu done:") and f"{cu['n_supercells']} displaced supercells" in msg
    assert f"({cu['k']}/10 materials of the pack)" in msg


def _cu_al_pack():
    """One pack job of Cu and Al (EMT), with the campaign metadata the runner's progress reads."""
    from phonon_flows.store import campaign_metadata

    s = _structures()
    names = ["Cu", "Al"]
    maker = BatchedPhononMaker(engine="emt", temperatures=(300.0,))
    return maker.make_documents([s[n] for n in names], names, [f"doc-{n}" for n in names],
                                [campaign_metadata("pack", n, "phonon-mlip") for n in names], [SMALL] * 2)


def test_run_without_a_terminal_writes_progress_lines(tmp_path, monkeypatch):
    """A campaign whose stderr is a file (a cluster job, nohup) gets plain progress lines, with the
    pack's materials as they finish and a last line at the end, instead of a bar it cannot draw."""
    import io

    from rich.console import Console

    from phonon_flows import progress, runner

    monkeypatch.setattr(progress, "LINE_INTERVAL_S", 0.0)
    out = io.StringIO()
    console = Console(file=out, width=200)
    assert not console.is_terminal
    job = _cu_al_pack()
    store = get_store(store_dir=tmp_path / "store")
    summary = runner.run_campaign(job, store, progress=True, console=console, work_dir=tmp_path / "runs")
    assert summary.ok
    lines = out.getvalue().splitlines()
    assert any(x.startswith("campaign: 0/1 jobs, 0:00:") and "1/2 materials, last Cu done" in x for x in lines), lines
    assert lines[-1].startswith("campaign: 1/1 jobs, 0:00:") and lines[-1].endswith("elapsed: done"), lines
    assert "\x1b[" not in out.getvalue()  # no bar's escape codes in a log file


def test_lines_are_rate_limited():
    import io

    from rich.console import Console

    from phonon_flows.progress import LineProgress

    out = io.StringIO()
    lines = LineProgress(Console(file=out), "import", total=1000, interval=3600)
    for _ in range(1000):
        lines.update("entry", advance=1)
    lines.close()
    assert out.getvalue().splitlines() == ["import: 1/1000, 0:00:00 elapsed: entry", "import: 1000/1000, 0:00:00 elapsed: done"]


def test_run_shows_each_finished_material_of_a_pack(tmp_path, monkeypatch):
    """`phonon-flows run` (run_campaign): the progress bar's text follows the pack material by
    material, and the job's log has one line per material."""
    from phonon_flows import runner

    seen: list[str] = []

    class Bar(runner._Progress):
        def describe(self, text: str) -> None:
            seen.append(text)

    monkeypatch.setattr(runner, "_Progress", Bar)
    job = _cu_al_pack()
    store = get_store(store_dir=tmp_path / "store")
    summary = runner.run_campaign(job, store, progress=False, work_dir=tmp_path / "runs")
    assert summary.ok
    pack = [t for t in seen if "materials, last" in t]
    assert len(pack) == 2
    assert pack[0].startswith(f"{job.name}: 1/2 materials, last Cu done (")
    assert pack[1].startswith(f"{job.name}: 2/2 materials, last Al done (")
    (log,) = (tmp_path / "runs").rglob("job.log")
    text = log.read_text()
    assert "phonons of Cu done" in text and "phonons of Al done" in text and "(2/2 materials of the pack)" in text
    # the pack's logger is as it was
    assert logging.getLogger("phonon_flows.makers.batched_phonons").handlers == []
