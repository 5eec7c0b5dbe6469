"""Fuzzing the structure readers and the command line with hypothesis: whatever the input, the user
gets a clean :class:`~phonon_flows.errors.InputError` (Python) or a non-zero exit code with a
one-line ``error: ...`` (command line), never a traceback. Example counts are bounded and the
examples derandomized, so that the whole file takes well under 30 s and never flakes."""

from __future__ import annotations

import json
import string
import warnings
from pathlib import Path

import pytest
import typer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pymatgen.core import Lattice, Structure
from typer.testing import CliRunner

from phonon_flows.cli import app
from phonon_flows.core.structures import read_structure, validate_structure
from phonon_flows.errors import InputError
from phonon_flows.validation import check_inputs

FUZZ = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)

FILE_NAMES = [
    "POSCAR", "CONTCAR", "x.vasp", "x.cif", "x.mcif", "x.json", "vasprun.xml", "x.xyz", "x.extxyz", "x.cssr",
    "x.xsf", "x.yaml", "x.res", "x.traj", "x.in", "structure", "x",
]


def _write(folder: Path, name: str, data: bytes | str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def _read_and_validate(path: Path) -> Structure | None:
    """read_structure + validate_structure: a Structure, or None after a clean InputError naming
    the file. Any other exception fails the test."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            structure = read_structure(path)
        except InputError as err:
            assert path.name in str(err) or path.stem in str(err), str(err)
            assert "\n" not in str(err)
            return None
        assert isinstance(structure, Structure) and len(structure) > 0
        try:
            return validate_structure(structure, material_id="fuzzed")
        except InputError as err:
            assert str(err).startswith("fuzzed: input: ") and "\n" not in str(err)
            return None


def _checked(path: Path) -> None:
    """check_inputs never raises for a bad file, and gives one line naming it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        good, problems = check_inputs([path], engine="chgnet", min_atoms=8, max_atoms=64)
    assert len(good) + len(problems) == 1
    for problem in problems:
        line = problem.line()
        assert "\n" not in line and (path.stem in line or path.name in line), line


# -- the readers ----------------------------------------------------------------------------------

@FUZZ
@given(name=st.sampled_from(FILE_NAMES), data=st.binary(max_size=300))
def test_random_bytes_are_refused_cleanly(tmp_path_factory, name, data):
    path = _write(tmp_path_factory.mktemp("bytes"), name, data)
    _read_and_validate(path)


NUMBER = st.one_of(
    st.floats(-12, 12),
    st.floats(-12, 12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-3, 3),
    st.sampled_from(["0", "1e30", "-1e-30", "1e-8", "x", "1.0.0", "nan", "inf", ""]),
)
FRACTION = st.one_of(st.floats(0, 1), st.floats(0, 1), st.floats(0, 1), NUMBER)
SPECIES = st.sampled_from(["Cu", "Na Cl", "Si", "Xx", "", "Cu Au", "H", "Og", "1 2", "Cu Cu"])


@st.composite
def poscar_text(draw) -> str:
    """POSCAR-like text: mostly well-formed, with random numbers, species, counts and modes."""
    lines = [draw(st.text(max_size=12).map(lambda s: s.replace("\n", " "))), str(draw(st.one_of(st.just(1.0), NUMBER)))]
    for _ in range(3):
        lines.append(" ".join(str(draw(NUMBER)) for _ in range(3)))
    species = draw(SPECIES)
    if species:
        lines.append(species)
    counts = [draw(st.integers(-1, 3)) for _ in range(max(1, len(species.split())))]
    lines.append(" ".join(map(str, counts)))
    lines.append(draw(st.sampled_from(["Direct", "Cartesian", "Selective dynamics", "x", ""])))
    n = draw(st.sampled_from([max(0, sum(counts))] * 4 + [0, 1, 5]))
    for _ in range(n):
        lines.append(" ".join(str(draw(FRACTION)) for _ in range(3)))
    return "\n".join(lines) + draw(st.sampled_from(["", "\n", "\n\n"]))


@FUZZ
@given(name=st.sampled_from(["POSCAR", "x.vasp", "CONTCAR", "structure"]), text=poscar_text())
def test_random_poscars_are_read_or_refused_cleanly(tmp_path_factory, name, text):
    path = _write(tmp_path_factory.mktemp("poscar"), name, text)
    _read_and_validate(path)
    _checked(path)


@st.composite
def cif_text(draw) -> str:
    lines = [f"data_{draw(st.text(string.ascii_letters, max_size=6))}"]
    for key in ("a", "b", "c"):
        lines.append(f"_cell_length_{key} {draw(NUMBER)}")
    for key in ("alpha", "beta", "gamma"):
        lines.append(f"_cell_angle_{key} {draw(st.one_of(st.just(90), NUMBER))}")
    lines.append(f"_symmetry_space_group_name_H-M '{draw(st.sampled_from(['P 1', 'F m -3 m', 'P 63/m m c', 'Q 9']))}'")
    lines += ["loop_", "_atom_site_label", "_atom_site_type_symbol", "_atom_site_fract_x", "_atom_site_fract_y",
              "_atom_site_fract_z", "_atom_site_occupancy"]
    for i in range(draw(st.integers(0, 4))):
        sym = draw(st.sampled_from(["Cu", "Na", "Cl", "Xx", "Au", "?"]))
        xyz = " ".join(str(draw(FRACTION)) for _ in range(3))
        lines.append(f"{sym}{i} {sym} {xyz} {draw(st.sampled_from([1, 1, 1, 0.5, 0, 2, 'x']))}")
    return "\n".join(lines) + "\n"


@FUZZ
@given(text=cif_text())
def test_random_cifs_are_read_or_refused_cleanly(tmp_path_factory, text):
    path = _write(tmp_path_factory.mktemp("cif"), "fuzzed.cif", text)
    _read_and_validate(path)
    _checked(path)


@st.composite
def structure_dict(draw) -> dict:
    """A pymatgen Structure dict with random lattice, species and coordinates (often nonsense)."""
    lattice = [[draw(NUMBER) if draw(st.booleans()) else (4.0 if i == j else 0.0) for j in range(3)] for i in range(3)]
    sites = []
    for _ in range(draw(st.integers(0, 4))):
        species = draw(st.sampled_from([[{"element": "Cu", "occu": 1}], [{"element": "Na", "occu": 0.5}],
                                        [{"element": "Zz", "occu": 1}], [], "Cu"]))
        sites.append({"species": species, "abc": [draw(FRACTION) for _ in range(3)]})
    return {"@module": "pymatgen.core.structure", "@class": "Structure", "lattice": {"matrix": lattice},
            "sites": sites, "charge": draw(st.sampled_from([0, None, "x"]))}


@FUZZ
@given(doc=st.one_of(structure_dict(), st.dictionaries(st.text(max_size=5), st.integers(), max_size=3)))
def test_random_json_structures_are_read_or_refused_cleanly(tmp_path_factory, doc):
    path = _write(tmp_path_factory.mktemp("json"), "fuzzed.json", json.dumps(doc, default=str))
    _read_and_validate(path)
    _checked(path)


@FUZZ
@given(
    matrix=st.lists(st.floats(-1e4, 1e4), min_size=9, max_size=9),
    coords=st.lists(st.lists(st.floats(-2, 2), min_size=3, max_size=3), min_size=1, max_size=4),
)
def test_random_structures_validate_or_refuse(matrix, coords):
    """Any lattice (thin, huge, skewed, singular) and positions: validated or refused, quickly."""
    try:
        structure = Structure(Lattice([matrix[:3], matrix[3:6], matrix[6:]]), ["Cu"] * len(coords), coords)
    except Exception:  # noqa: BLE001 - pymatgen itself refuses it: nothing to validate
        return
    try:
        validate_structure(structure, "random")
    except InputError as err:
        assert str(err).startswith("random: input: ")


def test_known_pathological_inputs():
    """Inputs that once crashed or hung the checks: a singular cell read by ASE, a 1e30 Å cell,
    a lattice vector shorter than the overlap distance, a huge sparse cell."""
    with pytest.raises(InputError, match="longer than"):
        validate_structure(Structure(Lattice([[1e30, 0, 0], [0, 1, 0], [0, 0, 1]]), ["Cu"], [[0, 0, 0]]), "huge")
    with pytest.raises(InputError, match="its periodic image"):
        validate_structure(Structure(Lattice([[3, 0, 0], [0, 3, 0], [0, 0, 1e-2]]), ["Cu"], [[0, 0, 0]]), "thin")
    sparse = Structure(Lattice.cubic(900.0), ["Cu", "Cu"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    assert validate_structure(sparse, "sparse") is sparse  # 900 Å: accepted, no 27 GB neighbour grid


def test_singular_poscar_read_by_ase_is_an_input_error(tmp_path):
    text = "x\n2.7e-261\n1e-08 0 0.0\n0.0 1 1e-08\n-2.1e+16 0.0 0\nNa Cl\n2 0\nCartesian\n0 1 1\n-4 7.39 -7.7e15\n"
    with pytest.raises(InputError, match="x.vasp"):
        read_structure(_write(tmp_path, "x.vasp", text))


# -- the command line -----------------------------------------------------------------------------

COMMAND = typer.main.get_command(app)
#: commands fuzzed (``demo`` would run the demo campaign; ``version`` takes nothing)
FUZZED_COMMANDS = ["run", "submit", "status", "query", "report", "import"]
#: options whose values are paths: fuzzed with names inside the test's folder only
PATH_WORDS = ("dir", "out", "launchpad", "file", "directory")
BAD_URIS = ["notauri", "mongodb://", "http://x", "mongodb://a:b:c", ""]


def _path_values(folder: Path) -> list[str]:
    return ["missing.cif", "junk.cif", "empty.vasp", "sub", "junk.bin", "out_here"]


def _annotation(param) -> object:
    descriptor = getattr(param, "type_descriptor", None)
    return getattr(descriptor, "annotation", None)


def _param_values(param, draw, folder: Path) -> list[str]:
    """Tokens for one parameter (typer's own click parameters): its option string and a random value."""
    name = param.name or ""
    if param.param_type_name == "argument":
        n = 1 if param.nargs == 1 and draw(st.integers(0, 5)) else draw(st.integers(0, 3) if param.nargs == 1
                                                                          else st.integers(1, 3))
        return [draw(st.one_of(st.sampled_from(_path_values(folder)), st.text(string.printable, max_size=8)))
                for _ in range(n)]
    opt = draw(st.sampled_from(list(param.opts) + list(param.secondary_opts or [])))
    if param.is_flag:
        return [opt]
    anything = st.one_of(
        st.text(string.ascii_letters + string.digits + "-_.,:", max_size=10),
        st.floats(allow_nan=True, allow_infinity=True).map(str),
        st.sampled_from(["", "-1", "0", "nan", "cpu", "cuda", "emt", "vasp", "chgnet", "small", "paper", "ab" * 32]),
    )
    if "uri" in name:
        value = draw(st.sampled_from(BAD_URIS))
    elif any(w in name for w in PATH_WORDS):
        value = draw(st.sampled_from(_path_values(folder)))
    elif _annotation(param) is int:  # mostly well-typed values, to get past the parser into the command
        value = draw(st.one_of(st.integers(-5, 300).map(str), st.integers(-5, 300).map(str), anything))
    elif _annotation(param) is float:
        value = draw(st.one_of(st.floats(allow_nan=True, allow_infinity=True).map(str), st.floats(-1e3, 1e3).map(str),
                               anything))
    else:
        value = draw(anything)
    return [opt, value]


@st.composite
def command_line(draw, folder: Path) -> list[str]:
    name = draw(st.sampled_from(FUZZED_COMMANDS))
    command = COMMAND.commands[name]
    arguments = [p for p in command.params if p.param_type_name == "argument"]
    options = [p for p in command.params if p.param_type_name == "option" and p.name != "help"]
    chosen = draw(st.lists(st.sampled_from(options), max_size=6, unique_by=lambda p: p.name))
    args = [name]
    for param in [*arguments, *chosen]:
        args += _param_values(param, draw, folder)
    if draw(st.integers(0, 9)) == 0:
        args.append(draw(st.sampled_from(["--no-such-option", "--help", "-x", "--"])))
    return args


def _assert_clean(result, args) -> None:
    where = f"args: {args}\nstdout: {result.stdout[-1500:]}\nstderr: {result.stderr[-1500:]}"
    assert result.exception is None or isinstance(result.exception, SystemExit), where + f"\n{result.exception!r}"
    assert "Traceback" not in result.stdout and "Traceback" not in result.stderr, where
    if result.exit_code == 0:
        return
    assert result.exit_code in (1, 2), where
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    usage = "Usage:" in result.stderr  # click/typer's own message for a wrong option or value
    refused = "--check" in args and "refused" in result.stdout  # `run --check`: one line per refused input
    assert usage or refused or (lines and lines[-1].startswith("error: ")), where


@pytest.fixture(scope="module")
def cli_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("cli_fuzz")
    (folder / "junk.cif").write_text("hello\n")
    (folder / "empty.vasp").write_text("")
    (folder / "junk.bin").write_bytes(bytes(range(256)))
    (folder / "sub").mkdir()
    return folder


@settings(max_examples=80, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_random_command_lines_never_show_a_traceback(cli_folder, monkeypatch, data):
    monkeypatch.chdir(cli_folder)
    monkeypatch.setenv("PHONON_FLOWS_STORE_DIR", str(cli_folder / "store"))
    monkeypatch.delenv("PHONON_FLOWS_DEBUG", raising=False)
    monkeypatch.delenv("PHONON_FLOWS_MONGO_URI", raising=False)
    args = data.draw(command_line(cli_folder))
    result = CliRunner().invoke(app, args)
    _assert_clean(result, args)


@pytest.mark.parametrize(
    "args, message",
    [
        (["run", "junk.cif", "empty.vasp", "--engine", "emt"], "no training material"),
        (["run", "junk.cif", "--screen", "--model", "xyz"], "sha256"),
        (["run", "missing.cif", "--min-atoms", "50", "--max-atoms", "10"], "window"),
        (["query", "--temperature", "-5"], "temperature"),
        (["import", "sub"], "sub"),
        (["status", "--mongo-uri", "notauri"], "error"),
    ],
)
def test_known_bad_command_lines(cli_folder, monkeypatch, args, message):
    monkeypatch.chdir(cli_folder)
    monkeypatch.setenv("PHONON_FLOWS_STORE_DIR", str(cli_folder / "store"))
    result = CliRunner().invoke(app, args)
    _assert_clean(result, args)
    assert result.exit_code != 0 and message in result.stderr
