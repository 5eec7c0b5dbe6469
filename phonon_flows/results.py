"""The query API: :class:`PhononResults` finds PhononDocs (outputs of PhononMaker jobs) in
jobflow's output collection of a JobStore (:func:`phonon_flows.store.get_store`) and fetches their
large data from the data store.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from jobflow import JobStore
from monty.json import MontyDecoder
from pymatgen.core import Composition, Element

from phonon_flows.core.polymorphs import temperature_key, temperature_label, temperature_value
from phonon_flows.errors import InputError, PhononFlowsError
from phonon_flows.schemas.phonon import PhononBandStructure, PhononDoc
from phonon_flows.store import METADATA_KEY, get_store, metadata_criteria


#: PhononDoc fields (``phonon_flows.schemas.phonon``) the query API relies on.
PHONON_DOC_CLASS = "PhononDoc"
PHONON_DOC_MODULE = "phonon_flows.schemas.phonon"
THERMAL_FIELDS = {
    "A_vib": "A_vib_meV_per_atom",  # Helmholtz vibrational free energy, meV/atom
    "C_v": "Cv_J_per_K_mol",  # heat capacity, J/(K mol) per mole of atoms
    "S_vib": "S_J_per_K_mol",  # vibrational entropy, J/(K mol) per mole of atoms
}
_ALIASES = {
    "min_frequency": "min_frequency_THz",
    "stable": "dynamically_stable",
    "engine": "engine.name",
    "engine_kind": "engine.kind",
    "model_sha256": "engine.model_sha256",
}
_TOP_LEVEL = ("uuid", "index", "name", "metadata", "completed_at", "hosts", "output")
#: Fields :meth:`PhononResults.ensure_indexes` indexes (under ``output.`` unless top-level).
INDEXED_FIELDS = (
    "uuid",
    "index",
    "output.@class",
    "output.formula",
    "output.chemsys",
    "output.material_id",
    "output.engine.name",
    "output.engine.kind",
    "output.engine.model_sha256",
    "output.dynamically_stable",
    "output.failed",
    f"metadata.{METADATA_KEY}.campaign",
    f"metadata.{METADATA_KEY}.material_id",
    f"metadata.{METADATA_KEY}.stage",
)

Range = tuple[float | None, float | None]


def sort_fields() -> list[str]:
    """Names :meth:`PhononResults.find` sorts by: the thermal fields (at the query's temperature),
    the aliases and the PhononDoc's top-level scalar fields (a dotted path also works)."""
    plain = [n for n, f in PhononDoc.model_fields.items()
             if str(f.annotation).replace("typing.", "").split("|")[0].strip() in ("float", "int", "str", "bool",
                                                                                    "<class 'float'>", "<class 'int'>",
                                                                                    "<class 'str'>", "<class 'bool'>")]
    return sorted(set(THERMAL_FIELDS) | set(_ALIASES) | set(plain))


def _as_list(value: Any) -> list:
    return list(value) if isinstance(value, (list, tuple, set, frozenset)) else [value]


def _match(value: Any) -> Any:
    values = _as_list(value)
    return values[0] if len(values) == 1 else {"$in": values}


def _range(name: str, bounds: Range) -> dict[str, float]:
    if not isinstance(bounds, (list, tuple)) or len(bounds) != 2:
        raise InputError(f"{name} range must be (min, max) with None for an open end, not {bounds!r}")
    lo, hi = bounds
    if lo is not None and hi is not None and lo > hi:
        raise InputError(f"{name} range is empty: min {lo} > max {hi}")
    cond: dict[str, float] = {}
    if lo is not None:
        cond["$gte"] = float(lo)
    if hi is not None:
        cond["$lte"] = float(hi)
    return cond


def _formulas(formula: str) -> list[str]:
    """The formula as given and its reduced form (``Si2`` -> ``Si2``, ``Si``)."""
    try:
        comp = Composition(formula)
        forms = {formula, comp.reduced_formula, comp.formula.replace(" ", "")}
    except Exception as exc:  # noqa: BLE001 - pymatgen raises several types
        raise InputError(f"not a chemical formula: {formula!r} ({exc})") from None
    return sorted(forms)


def _chemsys(chemsys: str) -> str:
    """Normalised chemical system: ``"O-Si"`` for ``"Si-O"`` or ``"O-Si"``."""
    parts = [p.strip() for p in str(chemsys).split("-") if p.strip()]
    if not parts or not all(Element.is_valid_symbol(p) for p in parts):
        raise InputError(f"not a chemical system: {chemsys!r} (write it as elements joined by '-', e.g. 'Si-O')")
    return "-".join(sorted(set(parts)))


class PhononResults:
    """Find PhononDocs (outputs of PhononMaker jobs) in a JobStore and fetch their large data.

    Works on any JobStore from :func:`get_store`: MongoDB (+ GridFS) or the embedded store.
    Results are the PhononDoc dicts (``output`` of the job document) with a ``_job`` entry
    holding the job's ``uuid``, ``index``, ``name``, ``metadata`` and ``completed_at``. Fields
    routed to the data store (force constants, band structure) stay as blob references until
    :meth:`get_data` is asked for them.

    >>> results = PhononResults(get_store())
    >>> results.find(chemsys="Si", engine_kind="mlip", stable=True, A_vib=(None, 0), sort="A_vib")
    >>> results.to_dataframe(campaign="demo")
    >>> fc = results.force_constants(doc)          # numpy array, fetched from the data store now
    >>> bands = results.get_data(doc, "band_structure.frequencies")
    """

    def __init__(
        self,
        store: JobStore | None = None,
        doc_class: str = PHONON_DOC_CLASS,
        doc_module: str | None = PHONON_DOC_MODULE,
    ):
        self.store = store if store is not None else get_store()
        self.doc_class = doc_class
        self.doc_module = doc_module
        self._connected = False

    # -- plumbing -------------------------------------------------------------------------
    def _connect(self) -> JobStore:
        if not self._connected:
            self.store.connect()
            self._connected = True
        return self.store

    def close(self) -> None:
        if self._connected:
            self.store.close()
            self._connected = False

    def __enter__(self) -> "PhononResults":
        self._connect()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @staticmethod
    def field_path(name: str, temperature: float = 300) -> str:
        """Path of a field in the output collection: ``"A_vib"`` -> ``output.thermal.T300.A_vib_meV_per_atom``."""
        if name in THERMAL_FIELDS:
            return f"output.thermal.{temperature_key(temperature)}.{THERMAL_FIELDS[name]}"
        name = _ALIASES.get(name, name)
        if name.split(".")[0] in _TOP_LEVEL:
            return name
        return f"output.{name}"

    def criteria(
        self,
        *,
        formula: str | list[str] | None = None,
        chemsys: str | list[str] | None = None,
        material_id: str | list[str] | None = None,
        engine: str | list[str] | None = None,
        engine_kind: str | list[str] | None = None,
        model_sha256: str | None = None,
        stable: bool | None = None,
        failed: bool | None = False,
        campaign: str | None = None,
        temperature: float = 300,
        A_vib: Range | None = None,
        C_v: Range | None = None,
        S_vib: Range | None = None,
        extra: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The MongoDB filter for :meth:`find` (see there for the arguments)."""
        crit: dict[str, Any] = {"output.@class": self.doc_class}
        if self.doc_module:
            crit["output.@module"] = self.doc_module
        if formula is not None:
            crit["output.formula"] = _match([f for one in _as_list(formula) for f in _formulas(one)])
        if chemsys is not None:
            crit["output.chemsys"] = _match([_chemsys(s) for s in _as_list(chemsys)])
        if material_id is not None:
            crit["output.material_id"] = _match(material_id)
        if engine is not None:
            crit["output.engine.name"] = _match(engine)
        if engine_kind is not None:
            crit["output.engine.kind"] = _match(engine_kind)
        if model_sha256 is not None:
            sha = model_sha256.strip().lower()
            crit["output.engine.model_sha256"] = sha if len(sha) == 64 else {"$regex": f"^{sha}"}
        if stable is not None:
            crit["output.dynamically_stable"] = bool(stable)
        if failed is not None:
            crit["output.failed"] = True if failed else {"$ne": True}
        if campaign is not None:
            crit.update(metadata_criteria(campaign=campaign))
        for name, bounds in (("A_vib", A_vib), ("C_v", C_v), ("S_vib", S_vib)):
            if bounds is not None:
                crit[self.field_path(name, temperature)] = _range(name, bounds)
        if extra:
            crit.update(extra)
        return crit

    @classmethod
    def _sort(cls, sort: Any, temperature: float) -> dict[str, int] | None:
        if not sort:
            return None
        if isinstance(sort, dict):
            items = list(sort.items())
        else:
            items = []
            for item in _as_list(sort):
                if isinstance(item, (list, tuple)):
                    items.append((item[0], item[1]))
                elif item.startswith("-"):
                    items.append((item[1:], -1))
                else:
                    items.append((item.lstrip("+"), 1))
        return {cls.field_path(name, temperature): (1 if direction in (1, "asc", "ascending") else -1) for name, direction in items}

    # -- queries --------------------------------------------------------------------------
    def find(
        self,
        *,
        sort: str | list | dict | None = None,
        limit: int = 0,
        skip: int = 0,
        load: bool = False,
        temperature: float = 300,
        **filters: Any,
    ) -> list[dict[str, Any]]:
        """PhononDocs matching all the filters given.

        Filters: ``formula`` (as given or reduced: ``"Si2"`` finds ``Si``), ``chemsys``
        (``"Si-O"`` or ``"O-Si"``), ``material_id``, ``engine`` (name, e.g.
        ``"mace"``), ``engine_kind`` (dft|reference|mlip|imported), ``model_sha256`` (full or a
        prefix), ``stable`` (dynamically stable: no frequency below -0.5 THz), ``failed``
        (default False: failed materials are left out; None: both), ``campaign``, and ranges
        ``A_vib`` (meV/atom), ``C_v`` and ``S_vib`` (J/(K mol)) at ``temperature`` (K) as
        ``(min, max)`` with None for an open end; ``extra``: a raw MongoDB filter to add.
        A list of values matches any of them.

        ``sort``: a field or list of fields, ``-`` prefix for descending (``"-S_vib"``), or
        ``{"field": 1/-1}``; ``A_vib``/``C_v``/``S_vib`` sort at ``temperature``.
        ``load=True`` also loads the large data from the data store (else they stay references).
        """
        store = self._connect()
        crit = self.criteria(temperature=temperature, **filters)
        docs = store.query(
            criteria=crit, sort=self._sort(sort, temperature), limit=int(limit), skip=int(skip), load=bool(load)
        )
        return [self._record(doc) for doc in docs]

    def find_one(self, **kwargs: Any) -> dict[str, Any] | None:
        found = self.find(limit=1, **kwargs)
        return found[0] if found else None

    def count(self, temperature: float = 300, **filters: Any) -> int:
        """Number of PhononDocs matching the filters of :meth:`find`."""
        return self._connect().docs_store.count(self.criteria(temperature=temperature, **filters))

    def get(self, uuid: str, load: bool = False) -> dict[str, Any] | None:
        """The PhononDoc of the job ``uuid`` (its highest index)."""
        store = self._connect()
        crit = {"uuid": uuid, "output.@class": self.doc_class}
        doc = store.query_one(crit, sort={"index": -1}, load=bool(load))
        return self._record(doc) if doc is not None else None

    @staticmethod
    def _record(doc: dict[str, Any]) -> dict[str, Any]:
        record = dict(doc.get("output") or {})
        record["_job"] = {k: doc.get(k) for k in ("uuid", "index", "name", "metadata", "completed_at")}
        return record

    # -- large data on demand -------------------------------------------------------------
    def get_data(self, doc: dict[str, Any] | str, field: str, decode: bool = True) -> Any:
        """A large field of a PhononDoc (e.g. ``force_constants``, ``band_structure``), fetched now.

        ``doc`` is a record from :meth:`find` or a job uuid; ``field`` a dotted path in the
        PhononDoc. Numeric nested lists come back as numpy arrays and serialised objects
        (``@module``/``@class``) as the objects, unless ``decode=False``.
        """
        record = self.get(doc) if isinstance(doc, str) else doc
        if record is None:
            raise InputError(f"no {self.doc_class} for job {doc!r}")
        value: Any = record
        for part in field.split("."):
            if _is_blob_ref(value):  # a path into a large object: fetch it first
                value = self._load_blob(value)
            if not isinstance(value, dict) or part not in value:
                name = record.get("material_id") or record.get("formula") or "?"
                raise InputError(f"{self.doc_class} of {name} has no field {field!r}")
            value = value[part]
        if _is_blob_ref(value):
            value = self._load_blob(value)
        return _decode(value) if decode else value

    def force_constants(self, doc: dict[str, Any] | str) -> "np.ndarray":
        """Force constants of a PhononDoc in eV/Å^2, phonopy's compact shape (n_prim, n_super, 3, 3)."""
        fc = self.get_data(doc, "force_constants", decode=False)
        if isinstance(fc, dict) and "force_constants" in fc:  # ForceConstantsData
            arr = np.asarray(fc["force_constants"], dtype=float)
            return arr.reshape(fc["shape"]) if fc.get("shape") else arr
        return np.asarray(fc, dtype=float)

    def band_structure(self, doc: dict[str, Any] | str):
        """The band structure of a PhononDoc as ``phonon_flows.schemas.phonon.PhononBandStructure``."""
        bands = self.get_data(doc, "band_structure", decode=False)
        if bands is None:
            raise InputError("this PhononDoc has no band structure (failed, or the band path was refused)")
        return PhononBandStructure.model_validate(bands)

    def _load_blob(self, ref: dict[str, Any]) -> Any:
        store = self._connect()
        try:
            data_store = store.additional_stores[ref["store"]]
        except KeyError:
            raise PhononFlowsError(f"the JobStore has no additional store {ref['store']!r}") from None
        blob = data_store.query_one({"blob_uuid": ref["blob_uuid"]}, properties=["blob_uuid", "data"])
        if blob is None:
            raise PhononFlowsError(f"blob {ref['blob_uuid']} missing from the {ref['store']!r} store")
        return blob["data"]

    # -- tables ---------------------------------------------------------------------------
    def to_dataframe(self, temperatures: list[float] | None = None, **find_kwargs: Any):
        """A pandas DataFrame, one row per PhononDoc found with ``find_kwargs``.

        Columns: job_uuid, material_id, formula, chemsys, engine, engine_kind, model_sha256,
        campaign, dynamically_stable, min_frequency_THz, committee_spread_THz (None unless the model
        is a committee), failed, and per temperature T (all the
        temperatures found unless given) ``A_vib_meV_per_atom_{T}K``, ``Cv_J_per_K_mol_{T}K``,
        ``S_J_per_K_mol_{T}K``.
        """
        import pandas as pd

        find_kwargs.pop("load", None)
        records = self.find(load=False, **find_kwargs)
        if temperatures is None:
            keys = {temperature_key(k) for r in records for k in (r.get("thermal") or {})}
            temps = sorted(keys, key=temperature_value)
        else:
            temps = [temperature_key(t) for t in temperatures]
        rows = []
        for r in records:
            engine = r.get("engine") or {}
            meta = ((r["_job"].get("metadata") or {}).get(METADATA_KEY)) or {}
            row = {
                "job_uuid": r["_job"]["uuid"],
                "material_id": r.get("material_id"),
                "formula": r.get("formula"),
                "chemsys": r.get("chemsys"),
                "engine": engine.get("name"),
                "engine_kind": engine.get("kind"),
                "model_sha256": engine.get("model_sha256"),
                "campaign": meta.get("campaign"),
                "dynamically_stable": r.get("dynamically_stable"),
                "min_frequency_THz": r.get("min_frequency_THz"),
                "committee_spread_THz": r.get("committee_spread_THz"),
                "failed": bool(r.get("failed", False)),
            }
            thermal = {temperature_key(k): v for k, v in (r.get("thermal") or {}).items()}  # old "300" keys too
            for t in temps:
                values = thermal.get(t) or {}
                for field in THERMAL_FIELDS.values():
                    row[f"{field}_{temperature_label(t)}K"] = values.get(field)
            rows.append(row)
        columns = list(rows[0]) if rows else [
            "job_uuid", "material_id", "formula", "chemsys", "engine", "engine_kind", "model_sha256",
            "campaign", "dynamically_stable", "min_frequency_THz", "committee_spread_THz", "failed",
        ]
        return pd.DataFrame(rows, columns=columns)

    # -- indexes --------------------------------------------------------------------------
    def ensure_indexes(self, temperatures: tuple[float, ...] = (300, 1000)) -> dict[str, bool]:
        """Create indexes on the fields the queries use (MongoDB); ``{field: created}``.

        Stores that cannot index (the embedded MontyDB store) answer False and keep working.
        """
        store = self._connect()
        fields = list(INDEXED_FIELDS)
        for t in temperatures:
            fields += [self.field_path(name, t) for name in THERMAL_FIELDS]
        done = {}
        for field in fields:
            try:
                done[field] = bool(store.docs_store.ensure_index(field))
            except Exception:  # noqa: BLE001 - "no-op where unsupported"
                done[field] = False
        for name, data_store in store.additional_stores.items():
            try:
                done[f"{name}:blob_uuid"] = bool(data_store.ensure_index("blob_uuid"))
            except Exception:  # noqa: BLE001
                done[f"{name}:blob_uuid"] = False
        return done


def _is_blob_ref(value: Any) -> bool:
    return isinstance(value, dict) and "blob_uuid" in value and "store" in value


def _decode(value: Any) -> Any:
    """Numeric nested lists -> numpy arrays; MSON dicts -> objects; anything else as it is."""
    if isinstance(value, dict) and "@module" in value and "@class" in value:
        return MontyDecoder().process_decoded(value)
    if isinstance(value, dict):
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, list) and value:
        try:
            arr = np.asarray(value)
        except ValueError:  # ragged
            return value
        if arr.dtype.kind in "biufc":
            return arr
    return value
