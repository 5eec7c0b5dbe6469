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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
