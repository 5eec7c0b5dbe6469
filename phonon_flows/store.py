"""JobStore factory and the query API.

Embedded default (first run, no server): a file-backed maggma ``MontyStore`` on SQLite in
``store_dir`` (``./phonon_flows_data`` unless set) that survives restarts. Production: a MongoDB
URI gives ``MongoURIStore`` for documents and ``GridFSURIStore`` for large data (force constants,
band structures, models), which jobflow routes to the additional store named ``data``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jobflow import JobStore

from phonon_flows.settings import get_settings

DATA_STORE_NAME = "data"


def get_store(
    mongo_uri: str | None = None,
    store_dir: str | Path | None = None,
    database: str | None = None,
    collection: str | None = None,
    data_collection: str | None = None,
    connect: bool = False,
) -> JobStore:
    """A jobflow JobStore with a ``data`` additional store for large objects.

    Arguments left as None come from settings (``PHONON_FLOWS_*`` env vars or ``phonon_flows.yaml``).
    With a MongoDB URI (argument or ``PHONON_FLOWS_MONGO_URI``) documents go to MongoDB and large
    data to GridFS; otherwise an embedded SQLite-backed store under ``store_dir`` is used.
    """
    settings = get_settings()
    mongo_uri = mongo_uri if mongo_uri is not None else settings.mongo_uri
    database = database or settings.database
    collection = collection or settings.collection
    data_collection = data_collection or settings.data_collection

    if mongo_uri:
        from maggma.stores import GridFSURIStore, MongoURIStore

        docs = MongoURIStore(uri=mongo_uri, database=database, collection_name=collection)
        data = GridFSURIStore(uri=mongo_uri, database=database, collection_name=data_collection)
    else:
        from maggma.stores import MontyStore

        path = Path(store_dir if store_dir is not None else settings.store_dir).expanduser().resolve()
        path.mkdir(parents=True, exist_ok=True)
        kwargs: dict[str, Any] = {"database_path": str(path), "database_name": database, "storage": "sqlite"}
        docs = MontyStore(collection, **kwargs)
        data = MontyStore(data_collection, **kwargs)

    store = JobStore(docs, additional_stores={DATA_STORE_NAME: data})
    if connect:
        store.connect()
    return store
