"""The ``phonon-flows`` command.

Each command prints one line with the reason and exits non-zero on failure; no traceback reaches
the user unless ``PHONON_FLOWS_DEBUG=1``.
"""

from __future__ import annotations

import functools
import os
import sys

import typer

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
    from phonon_flows import __version__

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
            key: {
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
        ..., help="phonopy folder: phonopy_params.yaml, or phonopy_disp.yaml + FORCE_SETS (BORN when present)"
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
    no_store: bool = typer.Option(False, "--no-store", help="Do not store the document, only print it"),
) -> None:
    """Import a phonopy calculation folder as a reference PhononDoc and print its summary."""
    import contextlib
    import json

    temps = _parse_temperatures(temperatures)
    with contextlib.redirect_stdout(sys.stderr):  # nothing but the summary on stdout
        from phonon_flows.makers.phonons import import_phonopy_doc, phonon_settings, store_phonon_doc

        settings = phonon_settings(
            temperatures=temps, mesh_length=mesh_length, cutoff_frequency=cutoff, stability_tolerance=tolerance
        )
        doc = import_phonopy_doc(directory, settings=settings, material_id=material_id, fc_method=fc_method)
        uuid = None
        if not no_store:
            from jobflow import run_locally

            from phonon_flows.store import get_store

            store = get_store(mongo_uri=mongo_uri, store_dir=store_dir)
            job = store_phonon_doc(doc)
            job.name = f"phonopy import {doc.material_id}"
            run_locally(job, store=store, log=False, ensure_success=True)
            uuid = job.uuid
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
    table.add_row("Born charges (NAC)", "yes" if doc.has_nac else "no")
    table.add_row("q-mesh", "x".join(map(str, doc.mesh or [])))
    table.add_row("min frequency (THz)", f"{doc.min_frequency_THz:.4f}")
    table.add_row(
        "dynamically stable", f"{doc.dynamically_stable} (tolerance {doc.stability_tolerance_THz} THz)"
    )
    table.add_row("zero-point energy (meV/atom)", f"{doc.zero_point_energy_meV_per_atom:.3f}")
    for key, tp in doc.thermal.items():
        table.add_row(f"A_vib at {key} K (meV/atom)", f"{tp.A_vib_meV_per_atom:.3f}")
        table.add_row(f"C_v at {key} K (J/K/mol-atoms)", f"{tp.Cv_J_per_K_mol:.3f}")
        table.add_row(f"S_vib at {key} K (J/K/mol-atoms)", f"{tp.S_J_per_K_mol:.3f}")
    console = Console()
    console.print(table)
    for err in doc.errors:
        console.print(f"[yellow]warning:[/yellow] {err}")
    if uuid:
        console.print(f"stored as job {uuid}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
