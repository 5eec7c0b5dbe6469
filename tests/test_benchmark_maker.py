"""BenchmarkMaker through jobflow's run_locally on PhononDocs built with real phonopy (NaCl DFT
force sets, force constants scaled to imitate an MLIP) plus summary documents."""

from __future__ import annotations

import math

import numpy as np
import pytest
from _benchmark_data import as_phonon_doc, nacl_phonopy, phonon_doc, synthetic_doc
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.io import write
from jobflow import run_locally

from phonon_flows.errors import InputError
from phonon_flows.makers.benchmark import BenchmarkMaker
from phonon_flows.schemas.benchmark import BenchmarkDoc
from phonon_flows.schemas.training import EpochMetrics, MaceHyperparameters, TrainingDoc
from phonon_flows.store import get_store

KB_MEV = 8.617333262e-2  # Boltzmann constant, meV/K


@pytest.fixture(scope="module")
def docs(shared_data):
    ref1, mlip1 = nacl_phonopy(shared_data, 1.0), nacl_phonopy(shared_data, 1.1)
    ref2, mlip2 = nacl_phonopy(shared_data, 0.8), nacl_phonopy(shared_data, 0.85)
    ref = [
        phonon_doc("nacl-1", ref1, "reference", enthalpy=-3.400),
        phonon_doc("nacl-2", ref2, "reference", enthalpy=-3.395),
        # Si: si-y is 20 meV/atom above si-x and a candidate only at 1000 K, for the reference only
        synthetic_doc("si-x", "reference", "Si", -1.0, {"300": 10.0, "1000": -50.0}, enthalpy=-5.40),
        synthetic_doc("si-y", "reference", "Si", 0.0, {"300": 5.0, "1000": -65.0}, enthalpy=-5.38),
        synthetic_doc("mgo-f", "reference", "MgO", 0.0, {"300": 1.0, "1000": 2.0}),
        synthetic_doc("only-ref", "reference", "Si", 0.0, {"300": 1.0, "1000": 2.0}),
    ]
    mlip = [
        phonon_doc("nacl-1", mlip1, "mlip", enthalpy=-3.400),
        phonon_doc("nacl-2", mlip2, "mlip", enthalpy=-3.395),
        synthetic_doc("si-x", "mlip", "Si", -0.2, {"300": 10.0, "1000": -50.0}),  # false stable
        synthetic_doc("si-y", "mlip", "Si", 0.0, {"300": 5.0, "1000": -55.0}),
        synthetic_doc("mgo-f", "mlip", "MgO", 0.0, {"300": 1.0, "1000": 2.0}, failed=True),
        synthetic_doc("only-mlip", "mlip", "Si", 0.0, {"300": 1.0, "1000": 2.0}),
    ]
    return [as_phonon_doc(d) for d in ref], [as_phonon_doc(d) for d in mlip]


def training_doc() -> TrainingDoc:
    curve = [EpochMetrics(epoch=e, stage="one" if e < 3 else "two", train_loss=5.0 / (e + 1),
                          valid_loss=6.0 / (e + 1), valid_force_mae=100.0 / (e + 1)) for e in range(6)]
    return TrainingDoc(hyperparameters=MaceHyperparameters.preset("small"), mace_version="0.3.16", device="cpu",
                       wall_time=10.0, learning_curve=curve, valid_force_mae=21.3, valid_force_rmse=30.1, n_valid=2)


def labelled_cu(path):
    """Cu supercells with EMT forces shifted by +0.01 eV/Å on every component: MAE of EMT = 10 meV/Å."""
    rng = np.random.default_rng(7)
    frames = []
    for _ in range(2):
        atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
        atoms.positions += rng.uniform(-0.05, 0.05, atoms.positions.shape)
        calc = EMT()
        forces = calc.get_forces(atoms)
        atoms.arrays["REF_forces"] = forces + 0.01
        frames.append(atoms)
    write(path, frames, format="extxyz")
    return frames


def test_benchmark_maker_run_locally(docs, tmp_path):
    ref_docs, mlip_docs = docs
    frames = labelled_cu(tmp_path / "cu.xyz")
    maker = BenchmarkMaker(force_engine="emt")
    job = maker.make(mlip_docs, ref_docs, training_doc=training_doc(), labelled_sets={"cu-emt": str(tmp_path / "cu.xyz")})
    store = get_store(store_dir=tmp_path / "store")
    responses = run_locally(job, store=store, create_folders=True, root_dir=tmp_path, ensure_success=True)
    doc: BenchmarkDoc = responses[job.uuid][1].output

    # matching and skipping
    assert doc.material_ids == ["nacl-1", "nacl-2", "si-x", "si-y"] and doc.n_materials == 4
    skipped = {e.material_id: e.reason for e in doc.skipped}
    assert set(skipped) == {"mgo-f", "only-ref", "only-mlip"}
    assert "MLIP phonon document failed" in skipped["mgo-f"] and "NaN forces" in skipped["mgo-f"]
    assert skipped["only-ref"] == "no MLIP phonon document"
    assert doc.reference_is_dft is False and "NOT DFT" in doc.reference_label
    assert doc.mlip_engine.model_sha256.startswith("0123")

    # frequencies: the MLIP's force constants are x1.1 (nacl-1) and x0.85/0.8 (nacl-2) of the
    # reference's, so every MLIP frequency is sqrt of that ratio times the reference's
    f1 = np.sort(np.asarray(ref_docs[0].band_structure.frequencies), axis=1).ravel()
    f2 = np.sort(np.asarray(ref_docs[1].band_structure.frequencies), axis=1).ravel()
    c1, c2 = math.sqrt(1.1), math.sqrt(0.85 / 0.8)
    row1 = doc.materials[0]
    assert row1.frequency.n == f1.size
    assert row1.frequency.mae == pytest.approx((c1 - 1) * np.mean(np.abs(f1)), rel=1e-6)
    assert row1.frequency.r2 == pytest.approx(1 - (c1 - 1) ** 2 * np.sum(f1**2) / np.sum((f1 - f1.mean()) ** 2), rel=1e-6)
    pooled = np.concatenate([(c1 - 1) * np.abs(f1), (c2 - 1) * np.abs(f2)])
    assert doc.frequency.mae == pytest.approx(pooled.mean(), rel=1e-6) and doc.frequency.n == pooled.size
    assert doc.materials[2].frequency is None and "no band structure" in doc.materials[2].frequency_note

    # A_vib: classical limit at 1000 K, scaling all frequencies by c shifts A_vib by 3 kT ln c per atom
    a1 = row1.thermal["1000"]
    assert a1.A_vib_mlip - a1.A_vib_reference == pytest.approx(3 * KB_MEV * 1000 * math.log(c1), rel=0.02)
    assert a1.Cv_reference == pytest.approx(3 * 8.314462618, rel=0.01)  # Dulong-Petit
    diffs = [abs(m.thermal["300"].A_vib_mlip - m.thermal["300"].A_vib_reference) for m in doc.materials]
    assert doc.thermal["300"].A_vib.mae == pytest.approx(np.mean(diffs)) and doc.thermal["300"].A_vib.n == 4

    # stability at -0.5 THz: si-x is unstable in the reference, stable with the MLIP
    assert doc.stability.counts == {"true_stable": 3, "false_stable": 1, "true_unstable": 0, "false_unstable": 0}
    assert doc.stability.accuracy_percent == pytest.approx(75.0)
    assert doc.stability.percentages["false_stable"] == pytest.approx(25.0)

    # polymorphs: NaCl's softer polymorph is a transition in both at both temperatures; Si's only
    # for the reference and only at 1000 K
    p300, p1000 = doc.polymorphs["300"], doc.polymorphs["1000"]
    assert [t.material_id for t in p300.transitions_reference] == ["nacl-2"] and p300.common == ["NaCl"]
    assert {t.material_id for t in p1000.transitions_reference} == {"nacl-2", "si-y"}
    assert p1000.common == ["NaCl"] and p1000.only_reference == ["Si"] and (p1000.n_common, p1000.n_reference) == (1, 2)
    row = next(r for r in p1000.rows if r.material_id == "nacl-2")
    assert row.dH_meV == pytest.approx(5.0)
    assert row.dA_vib_reference_meV == pytest.approx(3 * KB_MEV * 1000 * math.log(math.sqrt(0.8)), rel=0.02)

    # forces: the training's validation metric, and EMT on the shifted-EMT labelled set
    assert doc.forces["validation"].mae_meV_per_A == 21.3 and doc.forces["validation"].source == "training"
    cu = doc.forces["cu-emt"]
    assert cu.mae_meV_per_A == pytest.approx(10.0, rel=1e-6) and cu.rmse_meV_per_A == pytest.approx(10.0, rel=1e-6)
    assert cu.n_components == sum(3 * len(a) for a in frames) and cu.source == "evaluated"

    # figures in the job's folder
    expected = {"parity_frequency", "confusion_stability", "bands_nacl-1", "bands_nacl-2", "polymorphs_300K",
                "polymorphs_1000K", "learning_curve"} | {
        f"parity_{q}_{t}K" for q in ("A_vib", "Cv", "S_vib") for t in (300, 1000)}
    assert set(doc.figures) == expected
    from pathlib import Path

    fig_dir = Path(doc.figure_dir)
    assert fig_dir.is_relative_to(tmp_path.resolve())
    for name in doc.figures.values():
        assert (fig_dir / name).stat().st_size > 5000

    # the document went to the store and reads back
    stored = store.query_one({"uuid": job.uuid}, load=True)
    back = BenchmarkDoc.model_validate(stored["output"])
    assert back.frequency.mae == pytest.approx(doc.frequency.mae)
    assert back.paper.frequency_mae_THz == 0.18 and back.paper.polymorph_agreement["300"] == (16, 19)


def test_summary_dicts_without_bands(docs):
    """Documents as plain dicts from a store listing (no band structures): no frequency metrics."""
    ref_docs, mlip_docs = docs
    ref = [d.model_dump(exclude={"band_structure"}) for d in ref_docs[:4]]
    mlip = [d.model_dump(exclude={"band_structure"}) for d in mlip_docs[:4]]
    doc = BenchmarkMaker(write_figures=False, temperatures=[300, 500]).benchmark(mlip, ref)  # no 500 K data
    assert doc.frequency is None and doc.temperatures == ["T300"] and list(doc.thermal) == ["T300"]
    assert all("no band structure" in m.frequency_note for m in doc.materials)
    assert doc.figures == {} and doc.forces == {}
    # an enthalpy override makes nacl-2 the ground state: nacl-1 then has ΔH = 50 meV/atom
    doc2 = BenchmarkMaker(write_figures=False, temperatures=[300]).benchmark(
        mlip, ref, enthalpies={"nacl-1": -3.345})
    (row,) = [r for r in doc2.polymorphs["300"].rows if r.composition == "NaCl"]
    assert row.material_id == "nacl-1" and row.ground_state_id == "nacl-2" and row.dH_meV == pytest.approx(50.0)


def test_bad_inputs(docs):
    ref_docs, mlip_docs = docs
    maker = BenchmarkMaker(write_figures=False)
    with pytest.raises(InputError, match="no material could be benchmarked.*mgo-f"):
        maker.benchmark([mlip_docs[4]], [ref_docs[4]])
    with pytest.raises(InputError, match="nacl-1.*two MLIP"):
        maker.benchmark([mlip_docs[0], mlip_docs[0]], ref_docs)
    with pytest.raises(InputError, match="no force engine"):
        maker.benchmark(mlip_docs, ref_docs, labelled_sets={"x": []})


def test_a_material_with_every_mode_imaginary_has_no_free_energy_to_compare(shared_data):
    """Force constants of the wrong sign (every mode imaginary): phonopy's thermal sums are empty
    (A_vib = C_v = 0); the benchmark leaves that material out of the thermal metrics and says why,
    instead of counting phonopy's 0 as the MLIP's free energy."""
    ref = [phonon_doc("nacl-1", nacl_phonopy(shared_data, 1.0), "reference"),
           phonon_doc("nacl-2", nacl_phonopy(shared_data, 0.8), "reference")]
    mlip = [phonon_doc("nacl-1", nacl_phonopy(shared_data, -1.0), "mlip"),
            phonon_doc("nacl-2", nacl_phonopy(shared_data, 0.85), "mlip")]
    assert mlip[0]["thermal"]["300"]["Cv_J_per_K_mol"] == 0 and mlip[0]["thermal"]["300"]["A_vib_meV_per_atom"] == 0
    doc = BenchmarkMaker(write_figures=False).benchmark([as_phonon_doc(d) for d in mlip],
                                                       [as_phonon_doc(d) for d in ref])
    rows = {r.material_id: r for r in doc.materials}
    assert not rows["nacl-1"].thermal and "all imaginary" in rows["nacl-1"].thermal_note
    assert rows["nacl-2"].thermal and rows["nacl-2"].thermal_note is None
    assert doc.thermal["T300"].A_vib.n == 1
    assert doc.thermal["T300"].A_vib.mae == pytest.approx(
        abs(rows["nacl-2"].thermal["T300"].A_vib_mlip - rows["nacl-2"].thermal["T300"].A_vib_reference))
    assert not rows["nacl-1"].stable_mlip  # the stability metrics still count it
