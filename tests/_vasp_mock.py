"""VASP replaced the way atomate2's own tests do it (``atomate2.utils.testing.vasp.monkeypatch_vasp``):
``run_vasp`` checks the INCAR / POSCAR / POTCAR.spec the real atomate2 maker wrote against a
reference folder and drops recorded outputs in place; atomate2 and emmet then parse them as after
a real run.

Reference folders are assembled here from the recorded ``vasprun.xml`` files of phonopy's examples
(``tests/data/dft-phonons``): ``inputs/`` holds the POSCAR phonopy itself displaced (from its
``phonopy_disp.yaml``), the expected POTCAR.spec and the recipe's INCAR
(``tests/data/vasp-mock/INCAR-*``, written by hand from the paper's settings); ``outputs/`` holds
the vasprun.xml, INCAR, POTCAR.spec, a CONTCAR of its final structure and a small OUTCAR with the lines pymatgen's
``Outcar`` and emmet read (E-fermi, NBANDS, IBRION, timing), taken from the vasprun.xml.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from pymatgen.core import Structure
from pymatgen.io.vasp import Poscar

DATA = Path(__file__).resolve().parent / "data"
#: the INCAR tags the mock checks against the reference (the recipe's settings)
STATIC_TAGS = ("ENCUT", "EDIFF", "KSPACING", "KGAMMA", "GGA", "PREC", "ISMEAR", "SIGMA", "LREAL", "NSW", "ISYM",
               "LWAVE", "LCHARG", "ADDGRID", "LASPH", "NELM")
RELAX_TAGS = ("ENCUT", "EDIFF", "EDIFFG", "KSPACING", "GGA", "PREC", "ISMEAR", "SIGMA", "IBRION", "ISIF", "NSW")


def outcar_text(vasprun, ibrion: int = -1, extra: str = "") -> str:
    """The OUTCAR lines pymatgen's Outcar and emmet's TaskDoc need, from a parsed vasprun.xml."""
    e = vasprun.final_energy
    return (
        f" vasp.{vasprun.vasp_version} (OUTCAR lines written for the tests from vasprun.xml)\n"
        f"   IBRION =    {ibrion:3d}    ionic relax: 0-MD 1-quasi-New 2-CG\n"
        f"   number of dos      NEDOS =    301   number of ions     NIONS =     {len(vasprun.final_structure)}\n"
        f"   number of bands    NBANDS=     {int(vasprun.parameters.get('NBANDS', 32))}\n"
        f"   total plane-waves  NPLWV =    32768\n"
        f" E-fermi :   {vasprun.efermi or 0.0:.4f}     XC(G=0):  -8.0000     alpha+bet : -5.0000\n"
        f" total drift:                                0.000000      0.000000      0.000000\n"
        f"  free  energy   TOTEN  =       {e:.8f} eV\n"
        f"  energy  without entropy=      {e:.8f}  energy(sigma->0) =      {e:.8f}\n"
        f"{extra}"
        " General timing and accounting informations for this job:\n"
        "                  Total CPU time used (sec):        1.000\n"
        "                            User time (sec):        1.000\n"
        "                          System time (sec):        0.000\n"
        "                         Elapsed time (sec):        1.000\n"
    )


def reference_folder(root: Path, name: str, vasprun_file: Path, poscar: Structure, incar_file: Path,
                     potcar_symbols: list[str], ibrion: int = -1, outcar_extra: str = "") -> Path:
    """``root/name/{inputs,outputs}`` in atomate2's layout for ``fake_run_vasp``."""
    from pymatgen.io.vasp import Vasprun

    ref = root / name
    (ref / "inputs").mkdir(parents=True, exist_ok=True)
    (ref / "outputs").mkdir(parents=True, exist_ok=True)
    shutil.copy(incar_file, ref / "inputs" / "INCAR")
    Poscar(poscar).write_file(ref / "inputs" / "POSCAR")
    (ref / "inputs" / "POTCAR.spec").write_text("\n".join(potcar_symbols) + "\n")
    shutil.copy(vasprun_file, ref / "outputs" / "vasprun.xml")
    vr = Vasprun(str(vasprun_file), parse_dos=False, parse_eigen=False, parse_potcar_file=False)
    Poscar(vr.final_structure).write_file(ref / "outputs" / "CONTCAR")
    (ref / "outputs" / "OUTCAR").write_text(outcar_text(vr, ibrion, outcar_extra))
    # a run folder also keeps the inputs VASP read (atomate2 copies them on to the next run)
    for name in ("INCAR", "POTCAR.spec"):
        shutil.copy(ref / "inputs" / name, ref / "outputs" / name)
    return ref


def lepsilon_outcar_lines(born, epsilon) -> str:
    """The OUTCAR blocks of a LEPSILON (DFPT) run that pymatgen's ``Outcar.read_lepsilon`` reads:
    the dielectric tensor and the Born effective charges of every atom of the cell."""
    lines = ["   LEPSILON=     T    determine dielectric tensor",
             " MACROSCOPIC STATIC DIELECTRIC TENSOR (including local field effects in DFT)",
             " -------------------------------------"]
    lines += ["    " + "  ".join(f"{x:12.6f}" for x in row) for row in epsilon]
    lines += [" -------------------------------------",
              " BORN EFFECTIVE CHARGES (including local field effects) (in |e|, cummulative output)",
              " ---------------------------------------------------------------------------------"]
    for i, z in enumerate(born):
        lines.append(f" ion {i + 1:4d}")
        lines += [f"    {k + 1}" + "".join(f"{x:12.5f}" for x in row) for k, row in enumerate(z)]
    lines.append(" ---------------------------------------------------------------------------------")
    return "\n".join(lines) + "\n"


def vasprun_with_epsilon(src: Path, dst: Path, epsilon) -> Path:
    """A copy of a vasprun.xml whose last ionic step holds the dielectric tensor as a LEPSILON run
    writes it (``<varray name="epsilon">``, what pymatgen/emmet read as ``epsilon_static``)."""
    text = src.read_text()
    block = '   <varray name="epsilon" >\n' + "".join(
        "    <v> " + " ".join(f"{x:14.8f}" for x in row) + " </v>\n" for row in epsilon) + "   </varray>\n"
    i = text.rindex("</calculation>")
    dst.write_text(text[:i] + block + text[i:])
    return dst


def oszicar_text(vasprun) -> str:
    """An OSZICAR with the SCF steps and final energy of a parsed vasprun.xml (custodian reads it)."""
    lines = ["       N       E                     dE             d eps       ncg     rms          rms(c)"]
    steps = vasprun.ionic_steps[-1]["electronic_steps"]
    for i, st in enumerate(steps):
        e = st.get("e_fr_energy", vasprun.final_energy)
        lines.append(f"DAV: {i + 1:3d}    {e: .12E}   {0.0: .5E}   {0.0: .5E}  1000   0.100E+00")
    e = vasprun.final_energy
    lines.append(f"   1 F= {e: .8E} E0= {e: .8E}  d E = {e: .6E}")
    return "\n".join(lines) + "\n"
