"""phonon_flows: high-throughput harmonic phonons with MACE potentials trained on
randomly perturbed DFT supercells (Lee, Hegde, Wolverton & Xia), as atomate2/jobflow workflows."""

__version__ = "0.1.0"
