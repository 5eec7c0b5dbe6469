"""Settings from ``PHONON_FLOWS_*`` environment variables and/or a yaml file.

The yaml file is ``$PHONON_FLOWS_CONFIG_FILE`` or ``./phonon_flows.yaml`` when it exists.
Environment variables win over the file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

DEFAULT_CONFIG_FILE = "phonon_flows.yaml"


class _YamlSource(PydanticBaseSettingsSource):
    def get_field_value(self, field, field_name):  # pragma: no cover - unused by pydantic-settings 2
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        path = Path(os.environ.get("PHONON_FLOWS_CONFIG_FILE", DEFAULT_CONFIG_FILE))
        if not path.is_file():
            return {}
        data = yaml.safe_load(path.read_text()) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path}: settings file must be a mapping of names to values")
        return {k.lower(): v for k, v in data.items()}


class PhononFlowsSettings(BaseSettings):
    """Where results go and how jobs run."""

    model_config = SettingsConfigDict(env_prefix="PHONON_FLOWS_", extra="ignore")

    store_dir: Path = Field(
        default=Path("phonon_flows_data"),
        description="Directory of the embedded file-backed store (MontyDB on SQLite), relative to the working dir",
    )
    mongo_uri: str | None = Field(
        default=None,
        description="MongoDB URI; when set, documents go to MongoStore and large data to GridFSStore",
    )
    database: str = Field(default="phonon_flows", description="Database name (MongoDB or embedded)")
    collection: str = Field(default="outputs", description="Collection of job outputs")
    data_collection: str = Field(default="phonon_flows_data", description="GridFS bucket / collection of large data")
    device: str = Field(default="auto", description="Torch device for MACE: auto, cpu or cuda")
    mongoeco_python: str | None = Field(
        default=None, description="Python (>= 3.13) with mongoeco installed, used by the tests' wire-protocol server"
    )

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings, file_secret_settings):
        return (init_settings, env_settings, _YamlSource(settings_cls), dotenv_settings, file_secret_settings)


def get_settings(**overrides: Any) -> PhononFlowsSettings:
    """Fresh settings (environment and file are read on each call)."""
    return PhononFlowsSettings(**overrides)
