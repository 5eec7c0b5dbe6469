"""What phonopy itself gives from a folder of the shared DFT data, through phonopy's own API only
(``phonopy -f`` for the Si vasprun.xml, ``phonopy.load``, ``run_mesh``, ``run_thermal_properties``,
``auto_band_structure``): the numbers the PhononDocs are checked against. Nothing of phonon_flows
is used here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

DFT = ("dft-phonons",)
MATERIALS = ("Si", "NaCl", "MgO", "NaCl-rd")


def phonopy_load(folder: Path, tmp_path: Path, **kwargs):
    """phonopy.load of a shared-data folder, as phonopy's command line would do it."""
    import phonopy

    disp = folder / "phonopy_disp.yaml"
    force_sets = folder / "FORCE_SETS"
    if not force_sets.exists():  # Si: `phonopy -f vasprun.xml` with phonopy's VASP interface
        from phonopy.cui.create_force_sets import create_FORCE_SETS
        from phonopy.interface.phonopy_yaml import PhonopyYaml

        phpy_yaml = PhonopyYaml()
        phpy_yaml.read(disp)
        force_sets = tmp_path / f"FORCE_SETS-{folder.name}"
        create_FORCE_SETS("vasp", [folder / "vasprun.xml"], phpy_yaml=phpy_yaml, disp_filename=disp,
                          force_sets_filename=force_sets)
    born = folder / "BORN"
    args = {"force_sets_filename": force_sets, "born_filename": born if born.exists() else None,
            "is_nac": born.exists(), "log_level": 0}
    args.update(kwargs)
    if not args["is_nac"]:
        args["born_filename"] = None
    return phonopy.load(disp, **args)


def reference_numbers(ph, temperatures=(300.0, 1000.0), mesh_length=75.0, cutoff=0.1, npoints=101) -> dict:
    """Mesh, thermal properties per atom, band frequencies and mesh frequencies from phonopy."""
    from phonopy.phonon.grid import length2mesh
    from phonopy.physical_units import get_physical_units

    mesh = [int(n) for n in length2mesh(mesh_length, ph.primitive.cell)]
    ph.run_mesh(mesh, is_gamma_center=True)
    mesh_freqs = ph.mesh.frequencies.copy()
    ph.run_thermal_properties(temperatures=list(temperatures), cutoff_frequency=cutoff)
    tp = ph.thermal_properties
    n = len(ph.primitive)
    ev_to_kjmol = get_physical_units().EvTokJmol  # phonopy's own eV -> kJ/mol factor
    thermal = {}
    for t, fe, s, cv in zip(tp.temperatures, tp.free_energy, tp.entropy, tp.heat_capacity):
        key = str(int(t)) if float(t).is_integer() else repr(float(t))
        thermal[key] = {
            "A_vib_meV_per_atom": float(fe) * 1000.0 / ev_to_kjmol / n,
            "Cv_J_per_K_mol": float(cv) / n,
            "S_J_per_K_mol": float(s) / n,
        }
    ph.auto_band_structure(npoints=npoints)
    bs = ph.band_structure
    return {
        "natom_primitive": n,
        "mesh": mesh,
        "mesh_frequencies": mesh_freqs,
        "thermal": thermal,
        "zero_point_energy_meV_per_atom": float(tp.zero_point_energy) * 1000.0 / ev_to_kjmol / n,
        "band_qpoints": np.concatenate(bs.qpoints),
        "band_frequencies": np.concatenate(bs.frequencies),
    }


def phonopy_with_calculator(structure, supercell_matrix, calculator, distance: float = 0.01,
                            primitive_matrix: str | None = "auto", **displacements):
    """phonopy's displacements of a pymatgen structure's supercell with the forces of an ASE
    calculator, one supercell at a time (force constants not yet made): the paper's serial script."""
    from ase import Atoms
    from phonopy import Phonopy
    from phonopy.structure.atoms import PhonopyAtoms

    unit = PhonopyAtoms(symbols=[s.specie.symbol for s in structure], cell=structure.lattice.matrix,
                        scaled_positions=structure.frac_coords)
    ph = Phonopy(unit, supercell_matrix=supercell_matrix, primitive_matrix=primitive_matrix, symprec=1e-5)
    ph.generate_displacements(distance=distance, **displacements)
    forces = []
    for sc in ph.supercells_with_displacements:
        atoms = Atoms(sc.symbols, cell=sc.cell, scaled_positions=sc.scaled_positions, pbc=True)
        atoms.calc = calculator
        forces.append(atoms.get_forces())
    ph.forces = forces
    return ph
