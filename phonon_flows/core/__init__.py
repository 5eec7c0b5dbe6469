"""Pure science on pymatgen/phonopy objects: no jobs, no stores."""
