"""The ``phonon-flows`` command.

Each command prints one line with the reason and exits non-zero on failure; no traceback reaches
the user unless ``PHONON_FLOWS_DEBUG=1``.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path

import typer
from rich.markup import escape

from phonon_flows import __version__
from phonon_flows.core.phonondb import is_phonondb_entry, list_phonondb_entries
from phonon_flows.core.phonondb import PHONONDB_ATTRIBUTION
from phonon_flows.demo import (
    DFT_DEMO_CAMPAIGN,
    DFT_DEMO_EPOCHS,
    demo_campaign_maker,
    demo_structures,
    dft_demo_table,
    run_dft_demo,
)
from phonon_flows.engines.harmonic import HARMONIC_DFT_LABEL
from phonon_flows.errors import InputError
from phonon_flows.fireworks import (
    category_counts,
    ensure_launchpad_ready,
    get_launchpad,
    launchpad_campaign_docs,
    launchpad_jobs,
    rerun_campaign_fireworks,
)
from phonon_flows.fireworks import submit as fw_submit
from phonon_flows.engines.mace import add_model_file, is_model_file, stored_models
from phonon_flows.flows import ScreeningMaker, TrainingCampaignMaker
from phonon_flows.flows.keys import key_uuid, settings_payload
from phonon_flows.flows.screening import SCREEN_RELAX
from phonon_flows.makers.phonondb import import_phonondb_entries
from phonon_flows.makers.phonons import import_phonopy_doc, phonon_settings, store_phonon_doc
from phonon_flows.report.campaign import load_benchmark, write_campaign_report
from phonon_flows.report.figures import render_paper_metrics
from phonon_flows.core.polymorphs import temperature_label
from phonon_flows.results import PhononResults, sort_fields
from phonon_flows.runner import campaign_status, load_saved_flow, run_campaign
from phonon_flows.settings import get_settings
from phonon_flows.store import get_store

app = typer.Typer(
    name="phonon-flows",
    help="High-throughput phonons with MACE potentials trained on perturbed DFT supercells.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def fail(message: str, code: int = 1) -> None:
    """Print a one-line reason to stderr and exit with ``code``."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def friendly(func):
    """Turn any exception from a command into a one-line reason and a non-zero exit code."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except (typer.Exit, typer.Abort, SystemExit, KeyboardInterrupt):
            raise
        except Exception as exc:  # noqa: BLE001 - the whole point is a clean message
            if os.environ.get("PHONON_FLOWS_DEBUG"):
                raise
            msg = " ".join(str(exc).split()) or type(exc).__name__
            fail(f"{type(exc).__name__}: {msg}")

    return wrapper


@app.callback()
def main() -> None:
    """phonon-flows: train MACE on perturbed supercells, then screen phonons."""


@app.command()
def version() -> None:
    """Print the package version."""
    typer.echo(__version__)


# --- commands are added below, one section per command --------------------------------------


# --- import: a phonopy calculation folder as a reference PhononDoc ---------------------------
def _parse_temperatures(text: str) -> list[float]:
    try:
        values = [float(t) for t in text.replace(",", " ").split()]
    except ValueError:
        raise typer.BadParameter(f"temperatures must be numbers in K separated by commas, not {text!r}") from None
    if not values or min(values) < 0:
        raise typer.BadParameter(f"temperatures must be a non-empty list of values >= 0 K, not {text!r}")
    return values


def import_summary(doc) -> dict:
    """The ``phonon-flows import --json`` summary of a PhononDoc."""
    return {
        "formula": doc.formula,
        "natom_primitive": doc.natom_primitive,
        "thermal": {
            temperature_label(key): {
                "A_vib_meV_per_atom": tp.A_vib_meV_per_atom,
                "Cv_J_per_K_mol": tp.Cv_J_per_K_mol,
                "S_J_per_K_mol": tp.S_J_per_K_mol,
            }
            for key, tp in doc.thermal.items()
        },
        "min_frequency_THz": doc.min_frequency_THz,
        "dynamically_stable": doc.dynamically_stable,
    }


@app.command("import")
@friendly
def import_(
    directory: str = typer.Argument(
        ..., help="phonopy folder: phonopy_params.yaml, or phonopy_disp.yaml + FORCE_SETS (BORN when present); "
        "a phonondb entry (.tar.lzma or unpacked folder: a DFT reference); or a folder of phonondb entries"
    ),
    as_json: bool = typer.Option(False, "--json", help="Print only the JSON summary on stdout"),
    temperatures: str = typer.Option("300,1000", help="Temperatures in K, comma-separated"),
    mesh_length: float = typer.Option(75.0, help="q-mesh length l (Å): N_i = max(1, nint(l |b_i|))"),
    cutoff: float = typer.Option(0.1, help="Cutoff frequency (THz) of the thermal properties"),
    tolerance: float = typer.Option(-0.5, help="Dynamically unstable below this frequency (THz)"),
    material_id: str = typer.Option(None, help="Material id (default: the folder's name)"),
    fc_method: str = typer.Option(None, help="finite-difference or symfc (default: by dataset type)"),
    store_dir: str = typer.Option(None, help="Embedded store directory (default: settings' store_dir)"),
    mongo_uri: str = typer.Option(None, help="MongoDB URI (documents in MongoDB, large data in GridFS)"),
    database: str = typer.Option(None, help="Database name (default: settings' database)"),
    no_store: bool = typer.Option(False, "--no-store", help="Do not store the document, only print it"),
) -> None:
    """Import a phonopy calculation folder as a reference PhononDoc and print its summary.

    A folder of phonondb entries imports entry by entry with a progress bar: a bad entry is
    named and skipped, and a rerun reuses the entries the store already holds (exit code 2 when
    some failed)."""
    import contextlib

    temps = _parse_temperatures(temperatures)
    if Path(directory).is_dir() and not is_phonondb_entry(directory) and list_phonondb_entries(directory):
        settings = phonon_settings(
            temperatures=temps, mesh_length=mesh_length, cutoff_frequency=cutoff, stability_tolerance=tolerance
        )
        _import_phonondb_folder(directory, settings, as_json, None if no_store else _store_from(
            store_dir, mongo_uri, database))
        return
    with contextlib.redirect_stdout(sys.stderr):  # nothing but the summary on stdout
        settings = phonon_settings(
            temperatures=temps, mesh_length=mesh_length, cutoff_frequency=cutoff, stability_tolerance=tolerance
        )
        doc = import_phonopy_doc(directory, settings=settings, material_id=material_id, fc_method=fc_method)
        uuid = None
        if not no_store:
            store = _store_from(store_dir, mongo_uri, database)
            uuid, reused = _store_imported(doc, store)
            where = _store_name(store)
            typer.echo(f"{'already in' if reused else 'stored in'} {where} as job {uuid}", err=True)
    if as_json:
        typer.echo(json.dumps(import_summary(doc)))
        return

    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{doc.formula} ({doc.material_id}) imported from {directory}")
    table.add_column("quantity")
    table.add_column("value", justify="right")
    table.add_row("atoms in primitive / supercell", f"{doc.natom_primitive} / {doc.natom_supercell}")
    table.add_row("force constants", f"{doc.fc_method} ({doc.n_displacements} supercells)")
    table.add_row("Born charges (NAC)", f"yes ({doc.nac.source})" if doc.has_nac else "no")
    table.add_row("q-mesh", "x".join(map(str, doc.mesh or [])))
    table.add_row("min frequency (THz)", f"{doc.min_frequency_THz:.4f}")
    table.add_row(
        "dynamically stable", f"{doc.dynamically_stable} (tolerance {doc.stability_tolerance_THz} THz)"
    )
    table.add_row("zero-point energy (meV/atom)", f"{doc.zero_point_energy_meV_per_atom:.3f}")
    for key, tp in doc.thermal.items():
        key = temperature_label(key)
        table.add_row(f"A_vib at {key} K (meV/atom)", f"{tp.A_vib_meV_per_atom:.3f}")
        table.add_row(f"C_v at {key} K (J/K/mol-atoms)", f"{tp.Cv_J_per_K_mol:.3f}")
        table.add_row(f"S_vib at {key} K (J/K/mol-atoms)", f"{tp.S_J_per_K_mol:.3f}")
    console = Console()
    console.print(table)
    for err in doc.errors:
        console.print(f"[yellow]warning:[/yellow] {escape(str(err))}")


def _store_imported(doc, store) -> tuple[str, bool]:
    """Store an imported PhononDoc under a uuid derived from its content; (uuid, reused): the
    same import twice reuses the first document instead of writing a second one."""
    import hashlib

    payload = settings_payload(doc)
    text = json.dumps(payload, sort_keys=True, default=str)
    uuid = key_uuid("phonopy-import/" + hashlib.sha256(text.encode()).hexdigest())
    store.connect()
    if store.query_one({"uuid": uuid}, properties=["uuid"]) is not None:
        return uuid, True
    job = store_phonon_doc(doc)
    job.name = f"phonopy import {doc.material_id}"
    job.set_uuid(uuid)
    job.run(store=store)
    return uuid, False


def _import_phonondb_folder(directory: str, settings: dict, as_json: bool, store) -> None:
    """``phonon-flows import FOLDER`` on a folder of phonondb entries."""
    import json

    def summary(doc):
        return {"material_id": doc.material_id, **import_summary(doc)}

    res = import_phonondb_entries(list_phonondb_entries(directory), settings, store=store, summarize=summary)
    if as_json:
        typer.echo(json.dumps({"imported": res.imported, "reused": res.reused,
                               "failed": [{"material_id": e.material_id, "reason": e.reason} for e in res.failed]}))
    else:
        typer.echo(f"{len(res.imported)} imported, {len(res.reused)} already in the store, {len(res.failed)} failed "
                   "(DFT: VASP PBEsol, phonondb 2018-04-17; A. Togo, phonondb (Kyoto University), CC-BY-4.0)")
        for err in res.failed:
            typer.echo(f"failed: {err.material_id}: {err.reason}", err=True)
    if res.failed:
        raise typer.Exit(EXIT_MATERIALS_FAILED)


# --- campaigns: demo, run, submit, status, query, report -------------------------------------
# (phonon_flows.flows builds the flows, phonon_flows.runner runs them here, phonon_flows.demo
# holds the demo set and phonon_flows.report.campaign the report.) Exit codes: 0 done, 1 error (one line), 2 a campaign ran
# but some of its materials failed (listed; see `phonon-flows status`).
EXIT_MATERIALS_FAILED = 2


def _split_list(values: list[str] | None) -> list[str]:
    """``--holdout a --holdout b,c`` -> ``[a, b, c]``."""
    out: list[str] = []
    for v in values or []:
        out += [p.strip() for p in str(v).split(",") if p.strip()]
    return out


def _store_from(store_dir: str | None, mongo_uri: str | None, database: str | None, existing: bool = False):
    """The job store of a command: ``--mongo-uri``/``--store-dir`` when given, else
    ``PHONON_FLOWS_MONGO_URI``, else the jobflow ``JOB_STORE`` of ``JOBFLOW_CONFIG_FILE`` (the file
    FireWorks workers write to), else the embedded store. ``existing``: a store to read from (an
    embedded store folder that does not exist is an error, not created)."""
    from pathlib import Path

    settings = get_settings()
    if not mongo_uri and not store_dir and not settings.mongo_uri and os.environ.get("JOBFLOW_CONFIG_FILE"):
        path = Path(os.environ["JOBFLOW_CONFIG_FILE"])
        if not path.is_file():
            raise InputError(f"JOBFLOW_CONFIG_FILE={path} does not exist")
        from jobflow.settings import JobflowSettings

        return JobflowSettings().JOB_STORE  # read now: the file the workers use
    if existing and not (mongo_uri or settings.mongo_uri):
        folder = Path(store_dir if store_dir is not None else settings.store_dir).expanduser()
        if not folder.is_dir():
            raise InputError(f"no store at {folder.resolve()} (the folder does not exist; give --store-dir or "
                             "--mongo-uri, or run a campaign first)")
    return get_store(mongo_uri=mongo_uri, store_dir=store_dir, database=database)


def _check_files(files: list[str]) -> None:
    from pathlib import Path

    if not files:
        raise typer.BadParameter("give at least one structure file (CIF, POSCAR, ...)")
    for f in files:
        if Path(f).is_dir():
            raise typer.BadParameter(f"{f} is a folder; give structure files (e.g. {f}/*.cif)")


def _campaign_flow(
    files: list[str], name: str, holdout: list[str], engine: str, preset: str, epochs: int | None,
    n_perturbations: int, min_atoms: int, max_atoms: int, relax: bool, fmax: float | None, device: str,
    screen: bool, model: str | None, store, screen_relax: str = "none", committee: int = 1,
):
    """The Flow of ``phonon-flows run/submit`` and the input problems found making it."""
    _check_files(files)
    if preset not in ("paper", "small"):
        raise typer.BadParameter(f"--preset must be paper or small, not {preset!r}")
    if min_atoms < 1 or max_atoms < min_atoms:
        raise typer.BadParameter(f"supercell window {min_atoms}..{max_atoms} atoms is empty")
    relax_kwargs = {"fmax": fmax} if fmax is not None else {}
    if screen:
        if not model:
            raise typer.BadParameter("--screen needs --model FILE or SHA256 (a MACE model file, or the sha256 of a "
                                     "model in the store: `phonon-flows model list`)")
        if holdout:
            raise typer.BadParameter("--holdout is for training campaigns, not with --screen")
        if committee != 1:
            raise typer.BadParameter("--committee is for training campaigns; to screen with a committee, give its "
                                     "model file or sha256 to --model")
        if screen_relax not in SCREEN_RELAX:
            raise typer.BadParameter(f"--screen-relax must be one of {', '.join(SCREEN_RELAX)}, not {screen_relax!r}")
        model = _full_sha(model, store)
        maker = ScreeningMaker(name=name, model=model, store=store, relax=screen_relax, relax_kwargs=relax_kwargs,
                               engine_kwargs={"device": device}, min_atoms=min_atoms, max_atoms=max_atoms)
        flow = maker.make(files)
    else:
        if model:
            raise typer.BadParameter("--model is for --screen")
        if screen_relax != "none":
            raise typer.BadParameter("--screen-relax is for --screen (training campaigns: --relax/--no-relax)")
        if engine not in ("chgnet", "emt", "vasp"):
            raise typer.BadParameter(f"--engine must be chgnet, emt or vasp, not {engine!r}")
        if not 1 <= committee <= 16:
            raise typer.BadParameter(f"--committee must be between 1 and 16, not {committee}")
        hp = {"max_num_epochs": epochs} if epochs else {}
        if committee > 1:
            hp["committee"] = committee
        if epochs and preset == "small":
            hp["start_swa"] = max(1, min(epochs - 1, int(0.75 * epochs)))
        elif epochs:
            hp["start_swa"] = max(1, epochs // 2)
        maker = TrainingCampaignMaker(
            name=name, engine=engine, n_perturbations=n_perturbations, min_atoms=min_atoms, max_atoms=max_atoms,
            relax=relax, relax_kwargs=relax_kwargs, preset=preset, hyperparameters=hp,
            training_kwargs={"device": device}, mlip_engine_kwargs={"device": device},
        )
        try:
            flow = maker.make(files, holdout=holdout)
        except InputError as exc:
            raise InputError(exc.reason, material_id=exc.material_id, stage=exc.stage) from None
    doc = flow.jobs[0].function_args[0]  # the CampaignDoc the first job records
    return flow, doc


def _full_sha(model: str, store) -> str:
    """A model sha256 from a unique prefix of one in the store (``--model a0b78a03``)."""
    import re

    if is_model_file(model):
        return model
    model = model.strip().lower()
    if len(model) == 64 or store is None or not re.fullmatch(r"[0-9a-f]{6,63}", model):
        return model
    store.connect()
    shas = sorted({d["output"]["model_sha256"] for d in store.query(
        {"output.model_sha256": {"$regex": f"^{model}"}, "output.hyperparameters": {"$exists": True}},
        properties=["output.model_sha256"])})
    shas = sorted(set(shas) | {m["model_sha256"] for m in stored_models(store) if m["model_sha256"].startswith(model)})
    if len(shas) > 1:
        raise typer.BadParameter(f"--model {model} matches {len(shas)} models: {', '.join(x[:12] for x in shas)}")
    if not shas:
        raise typer.BadParameter(f"no trained model with a sha256 starting {model} in the store")
    return shas[0]


def _console():
    """A rich console, wide when the output is not a terminal (files, pipes, tests)."""
    from rich.console import Console

    console = Console()
    return console if console.is_terminal else Console(width=160)


def _print_input_failures(doc, console) -> None:
    for err in doc.input_failures:
        console.print(f"[yellow]skipped input[/yellow] {escape(f'{err.material_id}: {err.reason}')}", soft_wrap=True)


@app.command()
@friendly
def demo(
    out: str = typer.Option("demo_output", "--out", help="Folder of the report (figures, summary.md, tables)"),
    store_dir: str = typer.Option(None, help="Embedded store directory (default: settings' store_dir)"),
    mongo_uri: str = typer.Option(None, help="MongoDB URI instead of the embedded store"),
    work_dir: str = typer.Option(None, help="Folder of the job directories (default: phonon_flows_runs)"),
    name: str = typer.Option(None, help="Campaign name (default: demo-dft, or demo with --reference chgnet)"),
    epochs: int = typer.Option(None, help="MACE epochs (default: 60 on DFT, 120 with CHGNet)"),
    fresh: bool = typer.Option(False, "--fresh", help="Recompute everything instead of reusing stored results"),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar"),
    reference: str = typer.Option("dft", help="dft (phonondb, VASP PBEsol: the default) or chgnet (a stand-in, NOT DFT)"),
    enthalpies: str = typer.Option(None, help="JSON file of DFT enthalpies (mp id -> eV/atom) for polymorph transitions"),
    dft_training: str = typer.Option("perturbed", help="DFT training data: perturbed, finite-displacement or both"),
) -> None:
    """Run the demo campaign. By default on real DFT: 50 binaries of phonondb (VASP, PBEsol) shipped
    with the package; 31 train a small MACE on 6 perturbed supercells each labelled with harmonic
    DFT, 13 polymorphs of trained compositions and 6 materials of unseen compositions are held out
    and benchmarked against DFT. ``--reference chgnet``: the older demo below.

    With CHGNet: 9 crystals, CHGNet as the reference (NOT DFT), small MACE, benchmark.

    Training: Si (diamond), Zn (hcp), MgS and ZnS (rock salt), SiC 4H, 6 perturbed supercells each
    labelled with CHGNet. Held out: ZnS zinc blende/wurtzite and SiC 3C/2H, whose phonons are
    computed with the trained MACE and with CHGNet and compared (paper metrics, stability,
    polymorphs). A second run reuses everything already in the store.
    """
    import time

    from rich.console import Console

    console = Console(stderr=True)
    t0 = time.perf_counter()
    if reference.lower() not in ("dft", "chgnet"):
        raise typer.BadParameter(f"--reference must be dft or chgnet, not {reference!r}")
    if reference.lower() == "dft":
        _dft_demo(out, store_dir, mongo_uri, work_dir, name or DFT_DEMO_CAMPAIGN, epochs or DFT_DEMO_EPOCHS, fresh,
                  progress, enthalpies, dft_training, console)
        return
    name = name or "demo"
    hp = {"max_num_epochs": epochs, "start_swa": max(1, int(0.75 * epochs))} if epochs else None
    maker = demo_campaign_maker(name=name, **({"hyperparameters": hp} if hp else {}))
    console.print(
        "[bold]phonon-flows demo[/bold]: the reference is CHGNet 0.3.0, a pretrained universal potential "
        "standing in for DFT -- NOT DFT. Numbers compare MACE with CHGNet, not with DFT."
    )
    flow = maker.make(demo_structures())
    store = _store_from(store_dir, mongo_uri, None)
    summary = run_campaign(flow, store, progress=progress, resume=not fresh, work_dir=work_dir, console=console)
    console.print(summary.render(), soft_wrap=True, highlight=False, markup=False)
    report = write_campaign_report(store, name, out)
    if report.metrics_text:
        typer.echo(report.metrics_text)
    typer.echo(
        "NOTE: the reference of this demo is CHGNet 0.3.0, a pretrained potential, NOT DFT; the paper's "
        "column is MACE against DFT (PBE) on 384 materials."
    )
    typer.echo(f"report: {report.out_dir}/summary.md and {report.out_dir}/figures/ "
               f"({sum(1 for p in report.files.values() if p.endswith('.png'))} figures); "
               f"wall time {time.perf_counter() - t0:.0f} s")
    if not summary.ok:
        fail(f"{summary.count('failed')} job(s) failed, {summary.count('skipped')} skipped "
             "(see above and `phonon-flows status`)", code=EXIT_MATERIALS_FAILED)


def _dft_demo(out, store_dir, mongo_uri, work_dir, name, epochs, fresh, progress, enthalpies, dft_training,
              console) -> None:
    """``phonon-flows demo`` on DFT (phonondb)."""
    import json
    import time

    t0 = time.perf_counter()
    console.print(f"[bold]phonon-flows demo[/bold]: the reference is DFT (PBEsol, phonondb): {HARMONIC_DFT_LABEL} "
                  f"labels and phonons from the DFT force constants of Togo's phonondb; {PHONONDB_ATTRIBUTION}.")
    store = _store_from(store_dir, mongo_uri, None)
    result = run_dft_demo(store, name=name, epochs=epochs, enthalpies_file=enthalpies, dft_training=dft_training,
                          resume=not fresh, work_dir=work_dir, progress=progress, console=console)
    console.print(result.run_summary.render(), soft_wrap=True, highlight=False, markup=False)
    report = write_campaign_report(store, name, out)
    table = dft_demo_table(result)
    Path(report.out_dir).mkdir(parents=True, exist_ok=True)
    (Path(report.out_dir) / "dft_groups.md").write_text(table + "\n")
    (Path(report.out_dir) / "dft_groups.json").write_text(json.dumps(result.as_dict(), indent=1, default=str))
    typer.echo(table)
    typer.echo(f"report: {report.out_dir}/summary.md, {report.out_dir}/dft_groups.md and {report.out_dir}/figures/; "
               f"wall time {time.perf_counter() - t0:.0f} s")
    if not result.ok:
        fail(f"{result.run_summary.count('failed')} job(s) failed, {result.run_summary.count('skipped')} skipped "
             "(see above and `phonon-flows status`)", code=EXIT_MATERIALS_FAILED)


@app.command()
@friendly
def run(
    files: list[str] = typer.Argument(None, help="Structure files (CIF, POSCAR, ...); one material each"),
    name: str = typer.Option("campaign", "--name", "-n", help="Campaign name (part of every job's key)"),
    holdout: list[str] = typer.Option(None, "--holdout", help="Held-out materials (file, file name or stem); repeat or comma-separate"),
    engine: str = typer.Option("vasp", help="Reference: vasp (DFT, the default), or a stand-in by name: chgnet (pretrained potential, NOT DFT) or emt (tests)"),
    preset: str = typer.Option("paper", help="MACE settings: paper (the recipe) or small (fast, CPU)"),
    epochs: int = typer.Option(None, help="MACE epochs (overrides the preset)"),
    committee: int = typer.Option(1, help="Train this many MACE models (seeds seed, seed+1, ...) as one committee "
                                  "model: mean force, and each material's frequency spread between them (THz)"),
    n_perturbations: int = typer.Option(6, help="Perturbed supercells per training material"),
    min_atoms: int = typer.Option(100, help="Smallest supercell (atoms)"),
    max_atoms: int = typer.Option(200, help="Largest supercell (atoms)"),
    relax: bool = typer.Option(True, "--relax/--no-relax", help="Relax the inputs with the reference first (training campaigns)"),
    fmax: float = typer.Option(None, help="Force criterion of the relaxation, eV/Å (default 1e-3)"),
    screen: bool = typer.Option(False, "--screen", help="Screen new materials with a trained model (needs --model)"),
    model: str = typer.Option(None, "--model", help="MACE model file, or the sha256 (or a prefix) of a model in the store (with --screen)"),
    screen_relax: str = typer.Option("none", "--screen-relax", help="With --screen: none (phonons on the structures as given, default), positions, or cell (only for a model trained with energies)"),
    device: str = typer.Option("auto", help="Torch device for MACE: auto, cpu or cuda"),
    check: bool = typer.Option(False, "--check", help="Only check the inputs and print one line per problem"),
    store_dir: str = typer.Option(None, help="Embedded store directory (default: settings' store_dir)"),
    mongo_uri: str = typer.Option(None, help="MongoDB URI (documents in MongoDB, large data in GridFS)"),
    database: str = typer.Option(None, help="Database name (default: settings' database)"),
    work_dir: str = typer.Option(None, help="Folder of the job directories (default: phonon_flows_runs)"),
    fresh: bool = typer.Option(False, "--fresh", help="Recompute everything instead of reusing stored results"),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar"),
) -> None:
    """Run a training campaign (or, with --screen, a screening) from structure files, here.

    A training campaign relaxes every material with the reference, trains MACE on perturbed
    supercells of the training materials, and benchmarks MACE against the reference on the
    --holdout materials. Rerunning the same command reuses everything already in the store.
    Exit code 2: the campaign ran but some materials failed (see `phonon-flows status`).
    """
    from rich.console import Console

    console = Console(stderr=True)
    # --check creates nothing: no store folder (a screening by sha256 reads an existing store)
    model_is_sha = bool(model) and not is_model_file(model)
    store = None if check and not (screen and model_is_sha) else _store_from(store_dir, mongo_uri, database,
                                                                              existing=check)
    flow, doc = _campaign_flow(
        list(files or []), name, _split_list(holdout), engine.lower(), preset, epochs, n_perturbations, min_atoms,
        max_atoms, relax, fmax, device, screen, model, store if screen else None, screen_relax, committee,
    )
    _print_input_failures(doc, console)
    n_ok = len(doc.materials)
    if check:
        typer.echo(f"{n_ok} material(s) ready, {len(doc.input_failures)} refused; {len(doc.jobs)} jobs")
        if doc.input_failures:
            raise typer.Exit(1)
        return
    if doc.reference_note:
        console.print(doc.reference_note, highlight=False, markup=False)
    summary = run_campaign(flow, store, progress=progress, resume=not fresh, work_dir=work_dir, console=console)
    console.print(summary.render(), soft_wrap=True, highlight=False, markup=False)
    if doc.campaign_type == "training":
        bench = load_benchmark(store, name)
        if bench is not None and doc.holdout_material_ids:
            typer.echo(render_paper_metrics(bench))
    else:
        _print_results(store, {"campaign": name}, 300.0, as_json=False, as_csv=False)
    if not summary.ok or doc.input_failures:
        fail(f"{len(summary.failed_materials()) + len(doc.input_failures)} material(s) failed or were refused "
             f"(see above and `phonon-flows status {name}`)", code=EXIT_MATERIALS_FAILED)


@app.command()
@friendly
def submit(
    files: list[str] = typer.Argument(None, help="Structure files (CIF, POSCAR, ...); one material each"),
    name: str = typer.Option("campaign", "--name", "-n", help="Campaign name"),
    holdout: list[str] = typer.Option(None, "--holdout", help="Held-out materials (file, file name or stem)"),
    engine: str = typer.Option("vasp", help="Reference: vasp (DFT, the default), or a stand-in by name: chgnet (NOT DFT) or emt (tests)"),
    preset: str = typer.Option("paper", help="MACE settings: paper or small"),
    epochs: int = typer.Option(None, help="MACE epochs (overrides the preset)"),
    committee: int = typer.Option(1, help="Train this many MACE models (seeds seed, seed+1, ...) as one committee "
                                  "model: mean force, and each material's frequency spread between them (THz)"),
    n_perturbations: int = typer.Option(6, help="Perturbed supercells per training material"),
    min_atoms: int = typer.Option(100, help="Smallest supercell (atoms)"),
    max_atoms: int = typer.Option(200, help="Largest supercell (atoms)"),
    relax: bool = typer.Option(True, "--relax/--no-relax", help="Relax the inputs first"),
    fmax: float = typer.Option(None, help="Force criterion of a reference-engine relaxation, eV/Å"),
    screen: bool = typer.Option(False, "--screen", help="Screen new materials with a trained model (needs --model)"),
    model: str = typer.Option(None, "--model", help="MACE model file, or the sha256 of a model in the workers' store (with --screen)"),
    screen_relax: str = typer.Option("none", "--screen-relax", help="With --screen: none (default), positions, or cell (only for a model trained with energies)"),
    device: str = typer.Option("auto", help="Torch device for MACE on the workers"),
    launchpad: str = typer.Option(None, "--launchpad", "-l", help="LaunchPad yaml (see launchpad.yaml.example)"),
    mongo_uri: str = typer.Option(None, help="MongoDB URI of the LaunchPad (instead of --launchpad)"),
    db: str = typer.Option(None, "--db", help="LaunchPad database name (default: the URI's)"),
    force: bool = typer.Option(False, "--force", help="Submit even if Fireworks of these jobs are already there"),
) -> None:
    """Submit a campaign (or a screening) to a FireWorks LaunchPad.

    Training and MACE phonons become gpu Fireworks, DFT/reference labelling cpu Fireworks. Workers
    write to their own jobflow JOB_STORE (JOBFLOW_CONFIG_FILE, see jobflow.yaml.example).
    """
    if bool(launchpad) == bool(mongo_uri):
        raise typer.BadParameter("give the LaunchPad as --launchpad FILE or as --mongo-uri URI [--db NAME]")
    if launchpad:
        from fireworks import LaunchPad

        lp = LaunchPad.from_file(launchpad)
    else:
        lp = get_launchpad(mongo_uri, db)
    store = None
    if screen and (mongo_uri or os.environ.get("JOBFLOW_CONFIG_FILE") or get_settings().mongo_uri):
        store = _store_from(None, mongo_uri, None)  # the workers' store: a model file goes there
    elif screen and model and is_model_file(model):
        raise typer.BadParameter("a model file needs the workers' store to go to: set JOBFLOW_CONFIG_FILE "
                                 "(jobflow.yaml) or give --mongo-uri")
    flow, doc = _campaign_flow(
        list(files or []), name, _split_list(holdout), engine.lower(), preset, epochs, n_perturbations, min_atoms,
        max_atoms, relax, fmax, device, screen, model, store, screen_relax, committee,
    )
    from rich.console import Console

    console = Console(stderr=True)
    _print_input_failures(doc, console)
    keys = [j.metadata["phonon_flows"]["key"] for j in _flow_jobs(flow)]
    there = lp.fireworks.count_documents({"spec.phonon_flows.key": {"$in": keys}})
    if there and not force:
        fail(f"{there} of these {len(keys)} jobs are already in the LaunchPad (campaign {name!r}); "
             f"rerun failed ones with `phonon-flows rerun {name} -l launchpad.yaml`, or use --force")
    if ensure_launchpad_ready(lp):
        console.print(f"initialised the empty LaunchPad {lp.name!r} (what `lpad reset` does to a new one)")
    ids = fw_submit(flow, lp)
    counts = category_counts(lp, {"fw_id": {"$in": list(ids.values())}})
    typer.echo(submit_hint(name, len(ids), counts))


def submit_hint(name: str, n: int, counts: dict) -> str:
    """What ``submit`` prints: the Fireworks by category and the commands that run them."""
    per_cat = ", ".join(f"{cat}: {sum(v.values())}" for cat, v in sorted(counts.items()))
    return (
        f"submitted campaign {name!r}: {n} Fireworks ({per_cat}). Run them with workers of each category:\n"
        "  python -m phonon_flows.fireworks -l launchpad.yaml -w my_fworker_gpu.yaml   # or, one rocket at a time:\n"
        "  rlaunch -l launchpad.yaml -w my_fworker_cpu.yaml rapidfire\n"
        "  qlaunch -l launchpad.yaml -w my_fworker_gpu.yaml -q my_qadapter_gpu.yaml rapidfire   # through SLURM\n"
        f"then `phonon-flows status {name} -l launchpad.yaml`; workers need JOBFLOW_CONFIG_FILE (jobflow.yaml)"
    )


def _flow_jobs(flow) -> list:
    from jobflow import Flow

    out = []
    for item in flow.jobs:
        out += _flow_jobs(item) if isinstance(item, Flow) else [item]
    return out


@app.command()
@friendly
def status(
    campaign: str = typer.Argument(None, help="Campaign name (default: every campaign in the store)"),
    store_dir: str = typer.Option(None, help="Embedded store directory (default: settings' store_dir)"),
    mongo_uri: str = typer.Option(None, help="MongoDB URI of the job store"),
    database: str = typer.Option(None, help="Database name of the job store"),
    launchpad: str = typer.Option(None, "--launchpad", "-l", help="Join the Fireworks of a LaunchPad (yaml)"),
    as_json: bool = typer.Option(False, "--json", help="Print JSON"),
) -> None:
    """Jobs of each campaign by state (done, failed, skipped, running, pending), failures with reasons.

    One view of the job store and, with --launchpad, of the LaunchPad: a job's state comes from the
    store when its result or failure is there, else from its Firework (RUNNING, FIZZLED, ...). The
    store is --mongo-uri/--store-dir, else PHONON_FLOWS_MONGO_URI, else the JOB_STORE of
    JOBFLOW_CONFIG_FILE (the workers' store), else ./phonon_flows_data. A failure line ends with the
    job's directory, where its log job.log is.
    """
    import json

    from rich.table import Table

    lp = _load_launchpad(launchpad) if launchpad else None
    store = _store_from(store_dir, mongo_uri, database, existing=lp is None)
    statuses = campaign_status(
        store, campaign,
        fireworks=(lambda name: launchpad_jobs(lp, name)) if lp is not None else None,
        extra_docs=launchpad_campaign_docs(lp, campaign) if lp is not None else None,
    )
    fw: dict = {}
    if lp is not None:
        fw = {s.campaign: {"counts": category_counts(lp, {"spec.phonon_flows.campaign": s.campaign})}
              for s in statuses}
    if as_json:
        typer.echo(json.dumps({"campaigns": [s.as_dict() for s in statuses], "fireworks": fw}, default=str))
        return
    console = _console()
    if not statuses:
        console.print("no campaign in the store" + (" or the LaunchPad" if lp is not None else ""))
    states = ("done", "failed", "skipped", "running", "pending")
    for s in statuses:
        table = Table(title=escape(f"campaign {s.campaign} ({s.campaign_type}): {s.n_jobs} jobs"))
        table.add_column("stage")
        for state in states:
            table.add_column(state, justify="right")
        for stage, c in s.by_stage.items():
            table.add_row(stage, *(str(c[k]) for k in states))
        table.add_row("[bold]total", *(f"[bold]{s.counts[k]}" for k in states))
        console.print(table)
        if s.reference_note:
            console.print(s.reference_note, highlight=False, markup=False)
        for f in s.input_failures:
            console.print(f"  refused input {f['material_id']}: {f['reason']}", highlight=False, soft_wrap=True,
                          markup=False)
        for f in s.failures:
            where = f" [log: {f['directory']}/job.log]" if f.get("directory") and f.get("state") == "failed" else ""
            console.print(f"  {f['state']} {f['material_id'] or '-'} ({f['stage']}): {f['reason']}{where}",
                          highlight=False, soft_wrap=True, markup=False)
        for w in s.warnings:
            console.print(f"  warning {w}", highlight=False, soft_wrap=True, markup=False)
        if s.counts["failed"] or s.counts["skipped"]:
            hint = f" -l {launchpad}" if launchpad else ""
            console.print(f"  rerun the failed and skipped jobs with `phonon-flows rerun {s.campaign}{hint}`",
                          highlight=False, markup=False)
    for name, info in fw.items():
        console.print(f"LaunchPad, campaign {name}: " + ("; ".join(
            f"{cat}: " + ", ".join(f"{st} {n}" for st, n in sorted(states.items()))
            for cat, states in sorted(info["counts"].items())) or "no Fireworks"), markup=False)


def _load_launchpad(path: str):
    from pathlib import Path

    from fireworks import LaunchPad

    if not Path(path).is_file():
        raise InputError(f"no LaunchPad file {path} (copy launchpad.yaml.example to launchpad.yaml)")
    return LaunchPad.from_file(path)


@app.command()
@friendly
def rerun(
    campaign: str = typer.Argument(..., help="Campaign name"),
    launchpad: str = typer.Option(None, "--launchpad", "-l", help="The campaign runs on FireWorks: its LaunchPad (yaml)"),
    lost_after: float = typer.Option(
        None, help="FireWorks: first fizzle RUNNING Fireworks silent for this many seconds (killed workers)"),
    store_dir: str = typer.Option(None, help="Embedded store directory (default: settings' store_dir)"),
    mongo_uri: str = typer.Option(None, help="MongoDB URI of the job store"),
    database: str = typer.Option(None, help="Database name of the job store"),
    work_dir: str = typer.Option(None, help="Local runs: folder of the job directories (default: phonon_flows_runs)"),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar"),
) -> None:
    """Rerun the failed, skipped and killed jobs of a campaign; every finished job is reused.

    Local campaigns (`phonon-flows run`): the flow saved in <work-dir>/<campaign>/flow.json runs
    again here. FireWorks campaigns (--launchpad): the FIZZLED Fireworks and those the store records
    as failed or skipped go back to READY (with their children) for the workers.
    """
    from rich.console import Console

    console = Console(stderr=True)
    if launchpad:
        lp = _load_launchpad(launchpad)
        store = _store_from(store_dir, mongo_uri, database)
        ids = rerun_campaign_fireworks(lp, campaign, store=store, lost_after=lost_after)
        if not ids and not launchpad_jobs(lp, campaign):
            fail(f"no Fireworks of campaign {campaign!r} in the LaunchPad {lp.name!r}")
        typer.echo(f"campaign {campaign!r}: {len(ids)} Firework(s) back to READY (with their children)"
                   + (f": fw_ids {', '.join(map(str, ids))}" if ids else "; nothing failed")
                   + f". Start workers (`python -m phonon_flows.fireworks -l {launchpad} -w my_fworker_cpu.yaml`)")
        return
    flow = load_saved_flow(campaign, work_dir)
    store = _store_from(store_dir, mongo_uri, database, existing=True)
    summary = run_campaign(flow, store, progress=progress, resume=True, work_dir=work_dir, console=console)
    console.print(summary.render(), soft_wrap=True, highlight=False, markup=False)
    if not summary.ok:
        fail(f"{len(summary.failed_materials())} material(s) still fail (see above and `phonon-flows status "
             f"{campaign}`)", code=EXIT_MATERIALS_FAILED)


def _check_sort(sort: str | None) -> None:
    """An unknown --sort field is an error (MongoDB would sort by a missing field: no order)."""
    if not sort:
        return
    for item in str(sort).split(","):
        name = item.strip().lstrip("+-")
        if name not in sort_fields():
            raise typer.BadParameter(f"--sort {name!r} is not a field; choose one of {', '.join(sort_fields())} "
                                     "('-' in front for descending)")


def _computed_temperatures(results, filters: dict) -> list[str]:
    """Temperature labels (K) of the thermal properties of the documents the filters select
    (thermal ranges left out), sorted by value."""
    base = {k: v for k, v in filters.items() if k not in ("A_vib", "C_v", "S_vib")}
    labels: set[str] = set()
    for d in results._connect().docs_store.query(results.criteria(**base), properties=["output.thermal"]):
        labels |= {temperature_label(k) for k in ((d.get("output") or {}).get("thermal") or {})}
    return sorted(labels, key=float)


def _print_results(store, filters: dict, temperature: float, as_json: bool, as_csv: bool, limit: int = 0,
                   sort: str | None = None) -> int:
    results = PhononResults(store)
    _check_sort(sort)
    computed = _computed_temperatures(results, filters)
    if computed and temperature_label(temperature) not in computed:
        raise InputError(f"no thermal properties at {temperature_label(temperature)} K in these results: "
                         f"computed at {', '.join(computed)} K (choose one with -T)")
    df = results.to_dataframe(temperatures=[temperature], sort=sort, limit=limit, temperature=temperature, **filters)
    if as_json:
        typer.echo(df.to_json(orient="records"))
        return len(df)
    if as_csv:
        typer.echo(df.to_csv(index=False), nl=False)
        return len(df)
    from rich.console import Console
    from rich.table import Table

    t = temperature_label(temperature)
    table = Table(title=f"{len(df)} phonon result(s); thermal properties at {t} K")
    cols = [("material_id", "material"), ("formula", "formula"), ("engine", "engine"), ("campaign", "campaign"),
            ("dynamically_stable", "stable"), ("min_frequency_THz", "min ν (THz)"),
            (f"A_vib_meV_per_atom_{t}K", "A_vib (meV/atom)"), (f"Cv_J_per_K_mol_{t}K", "C_v (J/K/mol)"),
            (f"S_J_per_K_mol_{t}K", "S_vib (J/K/mol)")]
    for _, label in cols:
        table.add_column(label, justify="left" if label in ("material", "formula", "engine", "campaign") else "right")
    for _, row in df.iterrows():
        cells = []
        for key, _ in cols:
            v = row.get(key)
            if key == "engine" and isinstance(row.get("model_sha256"), str):
                v = f"{v} [{str(row['model_sha256'])[:8]}]"
            cells.append("—" if v is None or (isinstance(v, float) and v != v) else (f"{v:.3f}" if isinstance(v, float) else str(v)))
        table.add_row(*(escape(c) for c in cells))  # "mace [a0b78a03]" is not rich markup
    _console().print(table)
    return len(df)


@app.command()
@friendly
def query(
    formula: str = typer.Option(None, help="Formula (as given or reduced: Si2 finds Si)"),
    chemsys: str = typer.Option(None, help="Chemical system, e.g. Zn-S"),
    material_id: str = typer.Option(None, "--material-id", help="Material id"),
    campaign: str = typer.Option(None, help="Campaign name"),
    engine: str = typer.Option(None, help="Engine name: mace, chgnet, emt, vasp, phonopy-import"),
    engine_kind: str = typer.Option(None, help="Engine kind: dft, reference, mlip, imported"),
    model: str = typer.Option(None, "--model", help="MACE model sha256 (or a prefix)"),
    stable: bool = typer.Option(None, "--stable/--unstable", help="Only dynamically stable / unstable materials"),
    temperature: float = typer.Option(300.0, "--temperature", "-T", help="Temperature of the thermal columns and ranges, K"),
    min_a: float = typer.Option(None, "--min-A", help="Smallest A_vib, meV/atom"),
    max_a: float = typer.Option(None, "--max-A", help="Largest A_vib, meV/atom"),
    min_cv: float = typer.Option(None, "--min-Cv", help="Smallest C_v, J/(K mol)"),
    max_cv: float = typer.Option(None, "--max-Cv", help="Largest C_v, J/(K mol)"),
    min_s: float = typer.Option(None, "--min-S", help="Smallest S_vib, J/(K mol)"),
    max_s: float = typer.Option(None, "--max-S", help="Largest S_vib, J/(K mol)"),
    include_failed: bool = typer.Option(False, "--include-failed", help="Also list failed phonon documents"),
    sort: str = typer.Option(None, help="Sort field, '-' for descending (e.g. -S_vib, A_vib, min_frequency)"),
    limit: int = typer.Option(0, help="At most this many rows (0: all)"),
    as_json: bool = typer.Option(False, "--json", help="Print JSON records"),
    as_csv: bool = typer.Option(False, "--csv", help="Print CSV"),
    store_dir: str = typer.Option(None, help="Embedded store directory (default: settings' store_dir)"),
    mongo_uri: str = typer.Option(None, help="MongoDB URI of the job store"),
    database: str = typer.Option(None, help="Database name of the job store"),
) -> None:
    """A table of phonon results (PhononDocs) in the store, with filters."""
    if as_json and as_csv:
        raise typer.BadParameter("--json and --csv exclude each other")
    if temperature < 0:
        raise typer.BadParameter(f"--temperature must be >= 0 K, not {temperature}")
    filters: dict = {"failed": None if include_failed else False}
    for key, value in (("formula", formula), ("chemsys", chemsys), ("material_id", material_id),
                       ("campaign", campaign), ("engine", engine), ("engine_kind", engine_kind),
                       ("model_sha256", model), ("stable", stable)):
        if value is not None:
            filters[key] = value
    for key, lo, hi in (("A_vib", min_a, max_a), ("C_v", min_cv, max_cv), ("S_vib", min_s, max_s)):
        if lo is not None or hi is not None:
            filters[key] = (lo, hi)
    store = _store_from(store_dir, mongo_uri, database, existing=True)
    _print_results(store, filters, temperature, as_json, as_csv, limit=limit, sort=sort)


@app.command()
@friendly
def report(
    campaign: str = typer.Argument(..., help="Campaign name"),
    out: str = typer.Option(None, "--out", "-o", help="Folder of the report (default: report_<campaign>)"),
    store_dir: str = typer.Option(None, help="Embedded store directory (default: settings' store_dir)"),
    mongo_uri: str = typer.Option(None, help="MongoDB URI of the job store"),
    database: str = typer.Option(None, help="Database name of the job store"),
) -> None:
    """Write the figures and summary tables of a training campaign into a folder."""
    store = _store_from(store_dir, mongo_uri, database, existing=True)
    rep = write_campaign_report(store, campaign, out or f"report_{campaign}")
    if rep.metrics_text:
        typer.echo(rep.metrics_text)
    if rep.reference_note:
        typer.echo(rep.reference_note)
    n_fig = sum(1 for p in rep.files.values() if str(p).endswith(".png"))
    typer.echo(f"report of {campaign!r}: {rep.out_dir}/summary.md, {n_fig} figures in {rep.out_dir}/figures")

# --- model: MACE model files in the store -----------------------------------------------------
model_app = typer.Typer(help="MACE models in the store: add a model file, list them, show one.",
                        no_args_is_help=True)
app.add_typer(model_app, name="model")


@model_app.command("add")
@friendly
def model_add(
    path: str = typer.Argument(..., help="A MACE model file (e.g. mace's <name>_stagetwo.model, or a foundation model)"),
    store_dir: str = typer.Option(None, help="Embedded store directory (default: settings' store_dir)"),
    mongo_uri: str = typer.Option(None, help="MongoDB URI of the job store"),
    database: str = typer.Option(None, help="Database name of the job store"),
) -> None:
    """Store a MACE model file (by its sha256) where screenings and phonon jobs fetch it."""
    store = _store_from(store_dir, mongo_uri, database)
    sha, elements = add_model_file(path, store)
    typer.echo(f"model {sha} ({', '.join(elements)}) stored in {_store_name(store)}; "
               f"screen with `phonon-flows run FILES --screen --model {sha[:12]}`")


@model_app.command("list")
@friendly
def model_list(
    store_dir: str = typer.Option(None, help="Embedded store directory (default: settings' store_dir)"),
    mongo_uri: str = typer.Option(None, help="MongoDB URI of the job store"),
    database: str = typer.Option(None, help="Database name of the job store"),
    as_json: bool = typer.Option(False, "--json", help="Print JSON"),
) -> None:
    """The models in the store: sha256, elements, where they come from (training campaign or file)."""
    import json

    from rich.table import Table

    models = stored_models(_store_from(store_dir, mongo_uri, database, existing=True))
    if as_json:
        typer.echo(json.dumps(models, default=str))
        return
    table = Table(title=f"{len(models)} MACE model(s)")
    for col in ("sha256", "elements", "source", "campaign", "valid force MAE (meV/Å)"):
        table.add_column(col)
    for m in models:
        mae = m.get("valid_force_mae_meV_per_A")
        table.add_row(m["model_sha256"], ",".join(m.get("elements") or []), m.get("source") or "",
                      m.get("campaign") or "—", "—" if mae is None else f"{mae:.1f}")
    _console().print(table)


@model_app.command("show")
@friendly
def model_show(
    sha: str = typer.Argument(..., help="sha256 of the model (or a unique prefix)"),
    store_dir: str = typer.Option(None, help="Embedded store directory (default: settings' store_dir)"),
    mongo_uri: str = typer.Option(None, help="MongoDB URI of the job store"),
    database: str = typer.Option(None, help="Database name of the job store"),
) -> None:
    """One model: full sha256, elements, file, training campaign and metrics."""
    import json

    store = _store_from(store_dir, mongo_uri, database, existing=True)
    sha = sha.strip().lower()
    found = [m for m in stored_models(store) if m["model_sha256"].startswith(sha)]
    if not found:
        fail(f"no model with sha256 starting {sha} in {_store_name(store)} (see `phonon-flows model list`)")
    if len(found) > 1:
        fail(f"{sha} matches {len(found)} models: {', '.join(m['model_sha256'][:12] for m in found)}")
    typer.echo(json.dumps(found[0], indent=2, default=str))


def _store_name(store) -> str:
    """Where a store is, in words (no password)."""
    docs = store.docs_store
    path = getattr(docs, "database_path", None)
    if path:
        return f"the embedded store {path}"
    return f"MongoDB database {getattr(docs, 'database', '?')!r} (collection {getattr(docs, 'collection_name', '?')!r})"



if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
