"""Pydantic task documents, one module per stage. Units are in the field descriptions."""

from phonon_flows.schemas.benchmark import BenchmarkDoc
from phonon_flows.schemas.common import EngineInfo, MaterialError

__all__ = ["BenchmarkDoc", "EngineInfo", "MaterialError"]
