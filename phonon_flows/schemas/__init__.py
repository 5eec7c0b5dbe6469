"""Pydantic task documents, one module per stage. Units are in the field descriptions."""

from phonon_flows.schemas.benchmark import BenchmarkDoc
from phonon_flows.schemas.common import EngineInfo, MaterialError
from phonon_flows.schemas.phonon import PhononDoc, ThermalProperties

__all__ = ["BenchmarkDoc", "EngineInfo", "MaterialError", "PhononDoc", "ThermalProperties"]
