"""Pydantic task documents, one module per stage. Units are in the field descriptions."""

from phonon_flows.schemas.common import EngineInfo, MaterialError

__all__ = ["EngineInfo", "MaterialError"]
