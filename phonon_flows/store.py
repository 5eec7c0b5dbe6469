"""JobStore factory and the query API.

Embedded default (first run, no server): a file-backed maggma ``MontyStore`` on SQLite in
``store_dir`` (``./phonon_flows_data`` unless set) that survives restarts. Production: a MongoDB
URI gives ``MongoStore`` for documents and ``GridFSStore`` (zlib-compressed) for large data
(force constants, band structures, models), which jobflow routes to the additional store named
``data`` (``@job(data=[...])``).

Campaign bookkeeping lives in the job metadata under the key ``phonon_flows``
(:func:`tag_metadata`, :func:`metadata_criteria`). The query API (:class:`PhononResults`) is in
:mod:`phonon_flows.results`; ``from phonon_flows.store import PhononResults`` still works.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

from jobflow import JobStore
from maggma.stores import MontyStore

from phonon_flows.errors import InputError
from phonon_flows.settings import get_settings

DATA_STORE_NAME = "data"
#: fields of a jobflow blob copied into each GridFS file's metadata (beside ``blob_uuid`` and
#: ``compression``), so a file can be traced to its job without reading it
GRIDFS_METADATA_FIELDS = ("job_uuid", "job_index")


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
        if not str(mongo_uri).startswith(("mongodb://", "mongodb+srv://")):
            # pymongo would take any other text for a host name and wait 30 s for it
            raise InputError(f"a MongoDB URI starts with mongodb:// or mongodb+srv://, not {str(mongo_uri)[:40]!r}")
        docs, data = _mongo_stores(mongo_uri, database, collection, data_collection)
    else:
        path = Path(store_dir if store_dir is not None else settings.store_dir).expanduser().resolve()
        if path.exists() and not path.is_dir():
            raise InputError(f"the store directory {path} is a file, not a directory")
        path.mkdir(parents=True, exist_ok=True)
        kwargs: dict[str, Any] = {"database_path": str(path), "database_name": database, "storage": "sqlite"}
        docs = SafeMontyStore(collection, **kwargs)
        data = SafeMontyStore(data_collection, **kwargs)

    store = OrderedJobStore(docs, additional_stores={DATA_STORE_NAME: data})
    if connect:
        store.connect()
    return store


class _DeferredUpdates:
    """Stands in for a docs store during :meth:`OrderedJobStore.update`: records the writes."""

    def __init__(self, store):
        self.store = store
        self.writes: list[tuple[Any, Any]] = []

    def update(self, docs, key=None):
        self.writes.append((docs, key))

    def __getattr__(self, name):
        return getattr(self.store, name)


class OrderedJobStore(JobStore):
    """jobflow's JobStore, writing an output's large objects before the document that points at them.

    jobflow writes the job document first and its blobs after; a process killed in between leaves a
    document whose blob is missing, and every later ``query(load=True)`` over it fails with a KeyError.
    Here the blobs go first, so a document in the store always has its data: a killed run loses at
    most the job it was writing, which a rerun recomputes.
    """

    def update(self, docs, key=None, save=None):
        docs_store = self.docs_store
        deferred = _DeferredUpdates(docs_store)
        self.docs_store = deferred
        try:
            super().update(docs, key=key, save=save)  # blobs written here; documents recorded
        finally:
            self.docs_store = docs_store
        for pending, pending_key in deferred.writes:
            docs_store.update(pending, key=pending_key)


def _blob_uuids(obj: Any, out: set[str]) -> set[str]:
    """Every ``blob_uuid`` referenced anywhere in a stored document."""
    if isinstance(obj, dict):
        if isinstance(obj.get("blob_uuid"), str):
            out.add(obj["blob_uuid"])
        for v in obj.values():
            _blob_uuids(v, out)
    elif isinstance(obj, list):
        for v in obj:
            _blob_uuids(v, out)
    return out


def remove_orphan_blobs(store: JobStore, uuids: Any, chunk: int = 500) -> int:
    """Remove the large-data objects of the given job uuids that no stored document points at, and
    return how many were removed.

    Blobs are written before their document (:class:`OrderedJobStore`), so a process killed in
    between leaves blobs that nothing references; the rerun writes the job's output again with new
    blobs. Called when a campaign (or a pack of materials) starts again on a store, this keeps one
    set of data objects per stored document."""
    uuids = list(dict.fromkeys(uuids))
    removed = 0
    for name, data_store in (getattr(store, "additional_stores", None) or {}).items():
        for i in range(0, len(uuids), chunk):
            part = uuids[i:i + chunk]
            blobs = [b["blob_uuid"] for b in data_store.query({"job_uuid": {"$in": part}}, properties=["blob_uuid"])]
            if not blobs:
                continue
            used: set[str] = set()
            for d in store.docs_store.query({"uuid": {"$in": part}}, properties=["output"]):
                _blob_uuids(d.get("output"), used)
            orphans = [b for b in blobs if b not in used]
            if orphans:
                data_store.remove_docs({"blob_uuid": {"$in": orphans}})
                removed += len(orphans)
    return removed


#: lock file of an embedded store folder (held while its montydb configuration is written or read)
EMBEDDED_LOCK_FILE = ".phonon_flows.lock"


@contextlib.contextmanager
def _folder_lock(path: Path):
    """An exclusive lock on ``path/.phonon_flows.lock`` (POSIX ``flock``; released on exit and
    by the OS if the process dies)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no lock
        yield
        return
    fd = os.open(path / EMBEDDED_LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _montydb_configured(path: Path, storage: str) -> bool:
    """True when montydb's two configuration files in ``path`` are complete for ``storage``."""
    ident = path / ".monty.storage"
    cfg = path / "monty.storage.cfg"
    try:
        return ident.read_text().strip() == storage and cfg.stat().st_size > 0
    except OSError:
        return False


class SafeMontyStore(MontyStore):
    """maggma's ``MontyStore`` that any number of processes may open at once.

    ``MontyStore.connect`` rewrites montydb's configuration files (``.monty.storage``,
    ``monty.storage.cfg``) on every connect, truncating them first, so a process opening the
    store while another creates or opens it could read an empty file (montydb then fails with
    ``ValueError: Empty module name``); and montydb creates a collection's SQLite file before its
    table, so a process could find the file without the table (``no such table: documents``).
    Here the configuration is written once, when missing, and the collection created, under an
    exclusive lock of the folder that the client's opening also takes.
    """

    def connect(self, force_reset: bool = False):
        if self._coll is not None and not force_reset:
            return
        if self.database_path == ":memory:":
            super().connect(force_reset=force_reset)
            return
        from montydb import MontyClient, set_storage

        path = Path(self.database_path)
        path.mkdir(parents=True, exist_ok=True)
        with _folder_lock(path):
            if not _montydb_configured(path, self.storage):
                set_storage(self.database_path, storage=self.storage, **self.storage_kwargs)
            client = MontyClient(self.database_path, **self.client_kwargs)
            db = client[self.database_name]
            if self.collection_name not in db.list_collection_names():
                db.create_collection(self.collection_name)
            self._coll = db[self.collection_name]

    def update(self, docs: list[dict] | dict, key: list | str | None = None):
        """maggma's ``update`` (replace the document with the same key, else insert it) without a
        scan of the whole collection per document.

        montydb has no indexes: maggma's ``replace_one(..., upsert=True)`` reads and decodes every
        document of the collection to find the one to replace, so each write cost grows with the
        store (0.5 s per material at 300 materials with their force constants, quadratic over a
        campaign). Here a document's ``_id`` is made from its key (``pf-key:["uuid", "index"]:[...]``)
        and written with one SQLite upsert on that primary key: the same result, at a cost that
        does not depend on the store's size. The fast path is taken only while every document of
        the collection has such an ``_id`` for the same key fields (checked on the keys alone);
        a collection written otherwise (an older version, another key, a validator, key values that
        are not strings or integers) keeps maggma's own update.
        """
        if not isinstance(docs, list):
            docs = [docs]
        key = key or self.key
        names = list(key) if isinstance(key, (list, tuple)) else [key]
        if not docs or self.validator or self.database_path == ":memory:":
            return super().update(docs, key=key)
        from monty.json import jsanitize

        prefix = _keyed_prefix(names)
        keyed = []
        for d in docs:
            d = jsanitize(d, allow_bson=True)
            values = [d.get(k) for k in names]
            if "_id" in d or not all(map(_plain_key, values)):
                return super().update(docs, key=key)
            d["_id"] = prefix + json.dumps(values)
            keyed.append(d)
        collection = _sqlite_collection(self._collection)
        if collection is None or not _all_keyed(collection, prefix):
            return super().update(docs, key=key)
        _upsert(collection, keyed)
        return None

    def query(self, criteria: dict | None = None, properties: dict | list | None = None, sort: Any = None,
              hint: Any = None, skip: int = 0, limit: int = 0, **kwargs: Any):
        """maggma's ``query``, with one shortcut: a query for documents by their whole key
        (``{"blob_uuid": x}``, ``{"blob_uuid": {"$in": [...]}}``, ``{"uuid": u, "index": i}``) in a
        collection written with keyed ``_id`` values reads those documents by primary key instead of
        decoding the whole collection (what loading one material's force constants cost at
        every read). Anything else is maggma's query."""
        docs = None
        if sort is None and hint is None and not skip and not kwargs and self.database_path != ":memory:":
            docs = _keyed_lookup(self._collection, criteria)
        if docs is None:
            yield from super().query(criteria=criteria, properties=properties, sort=sort, hint=hint, skip=skip,
                                     limit=limit, **kwargs)
            return
        for k, d in enumerate(docs):
            if limit and k >= limit:
                return
            yield _project(d, properties)


#: prefix of the ``_id`` the embedded store gives a document from its key (see ``SafeMontyStore.update``)
KEYED_ID_PREFIX = "pf-key:"


def _keyed_prefix(names: list[str]) -> str:
    """``_id`` prefix of the documents keyed by these fields (in this order); the ``_id`` is the
    prefix followed by the JSON list of the key values."""
    return KEYED_ID_PREFIX + json.dumps(list(names)) + ":"


def _plain_key(value: Any) -> bool:
    """A key value whose JSON text is its identity (MongoDB would match 1 and 1.0 alike)."""
    return type(value) in (str, int)


def _sqlite_collection(collection: Any):
    """montydb's SQLite storage object of a collection (what its storage methods delegate to),
    or None for another storage engine."""
    try:
        from montydb.storage.sqlite import SQLiteCollection
    except ImportError:  # pragma: no cover - montydb without the SQLite engine
        return None
    delegator = collection._storage
    for inst in collection._components:
        delegator = delegator.contractor_cls(delegator, inst)
    return delegator if isinstance(delegator, SQLiteCollection) else None


def _id_bytes(text: str) -> bytes:
    from montydb.types import bson

    return bson.id_encode(text)


def _all_keyed(collection: Any, prefix: str) -> bool:
    """True when every document of the collection has an ``_id`` made from its key with these
    key fields: one SQLite query on the primary-key column, nothing decoded."""
    from montydb.storage.sqlite import SQLITE_RECORD_TABLE

    want = prefix.encode()
    start = _id_bytes(prefix).index(want) + 1  # SQLite's substr counts from 1 (bytes of a BLOB)
    with collection._conn._connect(collection._col_path) as conn:
        row = conn.execute(f"SELECT EXISTS(SELECT 1 FROM [{SQLITE_RECORD_TABLE}] WHERE substr(k, ?, ?) != ?)",
                           (start, len(want), want)).fetchone()
    return not row[0]


def _upsert(collection: Any, docs: list[dict]) -> None:
    """Insert or replace documents by ``_id`` in one SQLite transaction (montydb's table: k = the
    encoded ``_id``, v = the BSON document)."""
    from montydb.storage.sqlite import SQLITE_RECORD_TABLE, UPSERT_RECORD

    if not collection._database.collection_exists(collection._name):
        collection._database.collection_create(collection._name)
    rows = [(collection._encode_doc(d, False), _id_bytes(d["_id"])) for d in docs]
    with collection._conn._connect(collection._col_path, collection.wconcern) as conn:
        with conn:
            conn.executemany(UPSERT_RECORD.format(SQLITE_RECORD_TABLE), rows)


def _keyed_lookup(collection: Any, criteria: dict | None) -> list[dict] | None:
    """The documents of a whole-key query read by primary key, or None when the shortcut does not
    apply (another kind of query, or a collection not written with keyed ``_id`` values for these
    key fields). Absent keys give no document, as the scan would."""
    from itertools import permutations

    if not isinstance(criteria, dict) or not 1 <= len(criteria) <= 3:
        return None
    names = list(criteria)
    values = [criteria[n] for n in names]
    if all(map(_plain_key, values)):
        rows = [values]
    elif len(names) == 1 and isinstance(values[0], dict) and list(values[0]) == ["$in"] \
            and all(map(_plain_key, values[0]["$in"])):
        rows = [[v] for v in dict.fromkeys(values[0]["$in"])]
    else:
        return None
    sql_collection = _sqlite_collection(collection)
    if sql_collection is None or not sql_collection._database.collection_exists(sql_collection._name):
        return None
    for order in permutations(range(len(names))):
        prefix = _keyed_prefix([names[i] for i in order])
        if _all_keyed(sql_collection, prefix):
            ids = [prefix + json.dumps([row[i] for i in order]) for row in rows]
            return _read_by_id(sql_collection, ids)
    return None


def _read_by_id(collection: Any, ids: list[str]) -> list[dict]:
    from montydb.storage.sqlite import SQLITE_RECORD_TABLE
    from montydb.types import bson

    out = []
    with collection._conn._connect(collection._col_path) as conn:
        for _id in ids:
            row = conn.execute(f"SELECT v FROM [{SQLITE_RECORD_TABLE}] WHERE k = ?", (_id_bytes(_id),)).fetchone()
            if row is not None:
                out.append(bson.document_decode(row[0], codec_options=collection.coptions))
    return out


def _project(doc: dict, properties: dict | list | None) -> dict:
    """MongoDB's projection of top-level or dotted fields (``_id`` kept), as maggma asks for it."""
    if not properties:
        return doc
    fields = [k for k, v in properties.items() if v] if isinstance(properties, dict) else list(properties)
    out: dict = {"_id": doc["_id"]} if "_id" in doc else {}
    for path in fields:
        src, dst, parts = doc, out, path.split(".")
        for i, part in enumerate(parts):
            if not isinstance(src, dict) or part not in src:
                break
            if i == len(parts) - 1:
                dst[part] = src[part]
            else:
                src = src[part]
                dst = dst.setdefault(part, {})
    return out


def _mongo_stores(uri: str, database: str, collection: str, data_collection: str):
    """MongoStore + GridFSStore on one URI (recent maggma takes ``uri=``; older ones had the *URIStore classes)."""
    import inspect

    from maggma.stores import GridFSStore, MongoStore

    if "uri" in inspect.signature(GridFSStore.__init__).parameters:
        docs = MongoStore(database=database, collection_name=collection, uri=uri)
        data = GridFSStore(database=database, collection_name=data_collection, uri=uri, compression=True,
                           searchable_fields=list(GRIDFS_METADATA_FIELDS))
    else:  # pragma: no cover - old maggma
        from maggma.stores import MongoURIStore
        from maggma.stores.gridfs import GridFSURIStore

        docs = MongoURIStore(uri=uri, database=database, collection_name=collection)
        data = GridFSURIStore(uri=uri, database=database, collection_name=data_collection, compression=True,
                              searchable_fields=list(GRIDFS_METADATA_FIELDS))
    return docs, data


# ---------------------------------------------------------------------------------------------
# Campaign metadata convention
# ---------------------------------------------------------------------------------------------

#: Key of the job metadata under which phonon_flows keeps its bookkeeping, e.g.
#: ``job.metadata == {"phonon_flows": {"campaign": "demo", "material_id": "mp-149", "stage": "phonon"}}``.
#: jobflow stores job metadata beside the output (``metadata.phonon_flows.*`` in the output
#: collection) and ``flow_to_workflow`` copies it into the Firework spec.
METADATA_KEY = "phonon_flows"


def campaign_metadata(
    campaign: str | None = None, material_id: str | None = None, stage: str | None = None, **extra: Any
) -> dict[str, dict[str, Any]]:
    """``{"phonon_flows": {...}}`` with the fields that are not None."""
    fields = {"campaign": campaign, "material_id": material_id, "stage": stage, **extra}
    return {METADATA_KEY: {k: v for k, v in fields.items() if v is not None}}


def tag_metadata(
    job_or_flow: Any,
    campaign: str | None = None,
    material_id: str | None = None,
    stage: str | None = None,
    **extra: Any,
) -> Any:
    """Set ``metadata["phonon_flows"][field]`` on a Job or on every job of a Flow.

    Merges with what is already there (tagging the campaign on a flow and then the stage on a
    job keeps both), and also applies to jobs the flow creates at run time (``dynamic=True``).
    """
    fields = campaign_metadata(campaign, material_id, stage, **extra)[METADATA_KEY]
    if fields:
        update = {"_set": {f"{METADATA_KEY}->{k}": v for k, v in fields.items()}}
        job_or_flow.update_metadata(update, dict_mod=True, dynamic=True)
    return job_or_flow


def metadata_criteria(
    campaign: str | None = None, material_id: str | None = None, stage: str | None = None, **extra: Any
) -> dict[str, Any]:
    """A query filter on the output collection for jobs tagged with :func:`tag_metadata`."""
    fields = campaign_metadata(campaign, material_id, stage, **extra)[METADATA_KEY]
    return {f"metadata.{METADATA_KEY}.{k}": v for k, v in fields.items()}


#: names of the query API, importable from here as before (loaded on first use: results imports this module)
_RESULTS_NAMES = ("PhononResults", "temperature_key", "THERMAL_FIELDS", "INDEXED_FIELDS", "PHONON_DOC_CLASS",
                  "PHONON_DOC_MODULE")


def __getattr__(name: str) -> Any:
    if name in _RESULTS_NAMES:
        from phonon_flows import results  # the query API sits a layer above the store factory

        return getattr(results, name)
    raise AttributeError(f"module 'phonon_flows.store' has no attribute {name!r}")
