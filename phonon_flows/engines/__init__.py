"""Force engines behind one interface (see ``phonon_flows.engines.base``)."""
