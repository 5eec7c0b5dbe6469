"""A trained MACE model as a force engine: batched forward passes through mace's own data pipeline,
an ASE calculator (``MACECalculator``), and the model file's way in and out of the job store.

Models are stored by sha256 in the store's ``data`` store (GridFS with MongoDB): either as the
``model_b64`` field of a :class:`~phonon_flows.schemas.training.TrainingDoc` (the training job
declares it as data) or directly with :func:`store_model`. :func:`fetch_model` finds either, into a
local cache keyed by sha256, and checks the hash.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from ase import Atoms

from phonon_flows.core.mace_training import model_elements
from phonon_flows.engines.base import ForceEngine, ForceResult
from phonon_flows.errors import CalculationError, InputError
from phonon_flows.schemas.common import EngineInfo
from phonon_flows.store import DATA_STORE_NAME, get_store

if TYPE_CHECKING:
    from jobflow import JobStore

logger = logging.getLogger(__name__)

#: ``blob_uuid`` prefix of models written by :func:`store_model` into the data store
MODEL_BLOB_PREFIX = "mace-model-"
#: atoms per forward pass on CPU with ``batch_size="auto"``. Measured on 2 CPU cores, float64:
#: 32-atom cells run 2-3x faster 8 to a batch than one by one (tiny and paper-size models);
#: 256-atom cells gain nothing from batching, so one of them per pass.
CPU_ATOMS_PER_BATCH = 256
#: fraction of the free GPU memory a batch may use with ``batch_size="auto"``
GPU_MEMORY_FRACTION = 0.5
#: largest batch tried with ``batch_size="auto"`` on a GPU
MAX_GPU_BATCH_SIZE = 256


def sha256_file(path: str | Path) -> str:
    """sha256 hex digest of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def default_cache_dir() -> Path:
    """Where fetched models are kept: ``$PHONON_FLOWS_MODEL_CACHE`` or ``~/.cache/phonon_flows/models``."""
    env = os.environ.get("PHONON_FLOWS_MODEL_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "phonon_flows" / "models"


def resolve_device(device: str = "auto") -> str:
    """``auto`` -> ``cuda`` when torch sees a GPU, else ``cpu``."""
    import torch

    device = (device or "auto").lower()
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"device {device!r} asked for, but torch sees no CUDA GPU")
    return device


# ------------------------------------------------------------------------------------------------
# store
# ------------------------------------------------------------------------------------------------


def _data_store(store: JobStore):
    try:
        return store.additional_stores[DATA_STORE_NAME]
    except KeyError:
        raise InputError(f"job store has no {DATA_STORE_NAME!r} additional store for models") from None


def store_model(store: JobStore, path: str | Path, elements: Sequence[str] | None = None) -> str:
    """Put a model file into the store's data store; returns its sha256 (idempotent)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"model file {path} not found")
    sha = sha256_file(path)
    data = _data_store(store)
    data.connect()
    data.update(
        [
            {
                "blob_uuid": MODEL_BLOB_PREFIX + sha,
                "model_sha256": sha,
                "file_name": path.name,
                "size_bytes": path.stat().st_size,
                "kind": "mace-model",
                "elements": list(elements) if elements is not None else None,
                "data": base64.b64encode(path.read_bytes()).decode("ascii"),
            }
        ],
        key="blob_uuid",
    )
    return sha


def is_model_file(model: Any) -> bool:
    """Whether ``model`` names a model file (an existing file, or a path ending in ``.model``)
    rather than a sha256."""
    if isinstance(model, Path):
        return True
    if not isinstance(model, str):
        return False
    text = model.strip()
    return Path(text).is_file() or text.endswith((".model", ".pt")) or "/" in text


def add_model_file(path: str | Path, store: JobStore | None = None, cache_dir: str | Path | None = None,
                   ) -> tuple[str, list[str]]:
    """(sha256, elements) of a MACE model file, which is copied to the model cache and, with
    ``store``, stored in its data store (where every job, on any worker, fetches it by sha256)."""
    import shutil

    path = Path(path).expanduser()
    if not path.is_file():
        raise InputError(f"MACE model file {path} not found")
    sha = sha256_file(path)
    try:
        elements = model_elements(path)
    except Exception as exc:  # noqa: BLE001 - not a MACE model: say so, with the file's name
        raise InputError(f"{path} is not a MACE model file torch can load: {type(exc).__name__}: {exc}") from None
    target = Path(cache_dir or default_cache_dir()) / f"{sha}.model"
    if not (target.is_file() and sha256_file(target) == sha):
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    if store is not None:
        store_model(store, path, elements=elements)
    return sha, list(elements)


def stored_models(store: JobStore) -> list[dict[str, Any]]:
    """The models in a store: files added with :func:`store_model` and models of training jobs,
    one dict per sha256 (``model_sha256``, ``elements``, ``file_name``, ``size_bytes``, ``source``,
    and for trained ones ``campaign`` and the TrainingDoc's metrics)."""
    models: dict[str, dict[str, Any]] = {}
    data = _data_store(store)
    data.connect()
    # GridFS keeps only the key (blob_uuid) in a file's searchable metadata
    for d in data.query({"blob_uuid": {"$regex": f"^{MODEL_BLOB_PREFIX}"}}):
        if not isinstance(d, dict) or "model_sha256" not in d:
            continue
        models[d["model_sha256"]] = {"model_sha256": d["model_sha256"], "file_name": d.get("file_name"),
                                     "size_bytes": d.get("size_bytes"), "elements": d.get("elements") or [],
                                     "source": "added file"}
    store.docs_store.connect()
    props = ["output.model_sha256", "output.elements", "output.model_file_name", "output.model_size_bytes",
             "output.valid_force_mae", "output.train_force_mae", "output.valid_energy_mae", "output.n_train",
             "output.n_valid", "output.final_epoch", "output.hyperparameters.name", "metadata", "completed_at"]
    for d in store.docs_store.query({"output.model_sha256": {"$type": "string"}, "output.hyperparameters": {"$exists": True},
                                     "output.failed": {"$ne": True}}, properties=props):
        out = d["output"]
        tag = (d.get("metadata") or {}).get("phonon_flows") or {}
        entry = models.setdefault(out["model_sha256"], {"model_sha256": out["model_sha256"]})
        entry.update({
            "elements": out.get("elements") or entry.get("elements") or [],
            "file_name": out.get("model_file_name") or entry.get("file_name"),
            "size_bytes": out.get("model_size_bytes") or entry.get("size_bytes"),
            "source": "training job", "campaign": tag.get("campaign"), "trained_at": d.get("completed_at"),
            "valid_force_mae_meV_per_A": out.get("valid_force_mae"),
            "train_force_mae_meV_per_A": out.get("train_force_mae"),
            "valid_energy_mae_meV_per_atom": out.get("valid_energy_mae"),
            "n_train": out.get("n_train"), "n_valid": out.get("n_valid"), "final_epoch": out.get("final_epoch"),
        })
    return [models[k] for k in sorted(models)]


def _b64_from_store(store: JobStore, sha: str) -> str | None:
    data = _data_store(store)
    data.connect()
    doc = data.query_one({"blob_uuid": MODEL_BLOB_PREFIX + sha}, properties=["data"])
    if doc and doc.get("data"):
        return doc["data"]
    # a training job's output: model_b64 lives in the data store as a jobflow blob
    store.docs_store.connect()
    doc = store.query_one({"output.model_sha256": sha}, properties=["output.model_b64"], load=True)
    if doc:
        value = doc.get("output", {}).get("model_b64")
        if isinstance(value, str) and value:
            return value
    return None


def _write_verified(b64: str, sha: str, target: Path) -> Path:
    raw = base64.b64decode(b64)
    got = hashlib.sha256(raw).hexdigest()
    if got != sha:
        raise CalculationError(f"model bytes have sha256 {got[:12]}..., expected {sha[:12]}...: store corrupted")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".part")
    with os.fdopen(fd, "wb") as f:
        f.write(raw)
    os.replace(tmp, target)
    return target


def fetch_model(store: JobStore | None, sha256: str, cache_dir: str | Path | None = None) -> Path:
    """Local path of the model with this sha256: from the cache, else fetched from the store's data store."""
    sha = sha256.lower().strip()
    target = Path(cache_dir or default_cache_dir()) / f"{sha}.model"
    if target.is_file() and sha256_file(target) == sha:
        return target
    if store is None:
        store = get_store()
    b64 = _b64_from_store(store, sha)
    if b64 is None:
        raise InputError(f"no MACE model with sha256 {sha} in the store")
    return _write_verified(b64, sha, target)


# ------------------------------------------------------------------------------------------------
# engine
# ------------------------------------------------------------------------------------------------


def _is_oom(exc: BaseException) -> bool:
    import torch

    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


class MaceEngine(ForceEngine):
    """A MACE model file as a force engine; the model is loaded once.

    :meth:`_compute` batches structures through mace's data pipeline (``AtomicData.from_config``,
    mace's ``DataLoader``) with stress. ``batch_size="auto"``: :data:`CPU_ATOMS_PER_BATCH` atoms on CPU; on
    CUDA sized from the free memory and a one-structure probe; on out-of-memory the batch is halved
    and retried.
    """

    def __init__(
        self,
        model_path: str | Path,
        device: str = "auto",
        default_dtype: str = "float64",
        batch_size: int | str = "auto",
        model_sha256: str | None = None,
    ):
        import torch
        from ase.data import chemical_symbols
        from mace.tools import utils

        if default_dtype not in ("float64", "float32"):
            raise InputError(f"default_dtype must be float64 or float32, not {default_dtype!r}")
        if not (batch_size == "auto" or (isinstance(batch_size, int) and batch_size >= 1)):
            raise InputError(f"batch_size must be 'auto' or a positive integer, not {batch_size!r}")
        self.model_path = Path(model_path)
        if not self.model_path.is_file():
            raise InputError(f"MACE model file {self.model_path} not found")
        self.model_sha256 = model_sha256 or sha256_file(self.model_path)
        self.device = resolve_device(device)
        self.default_dtype = default_dtype
        self.batch_size = batch_size
        model = torch.load(str(self.model_path), map_location=self.device, weights_only=False)
        model = model.double() if default_dtype == "float64" else model.float()
        for param in model.parameters():
            param.requires_grad = False
        self.model = model.to(self.device)
        self.z_table = utils.AtomicNumberTable([int(z) for z in model.atomic_numbers])
        self.r_max = float(model.r_max)
        self.heads = list(getattr(model, "heads", None) or ["Default"])
        self.head = next((h for h in self.heads if h.lower() == "default"), self.heads[-1])
        self.supported_elements = frozenset(chemical_symbols[z] for z in self.z_table.zs)
        #: members of a committee model file (their mean is the force; see core.mace_committee), else 1
        self.committee_size = int(getattr(model, "committee_size", 1))
        self._auto_batch: int | None = None

    @property
    def info(self) -> EngineInfo:
        import mace

        return EngineInfo(
            name="mace",
            kind="mlip",
            version=getattr(mace, "__version__", None),
            model_sha256=self.model_sha256,
            settings={"default_dtype": self.default_dtype, "device": self.device,
                      **({"committee_size": self.committee_size} if self.committee_size > 1 else {})},
        )

    def calculator(self, **kwargs: Any):
        """An ASE ``MACECalculator`` sharing this engine's loaded model (a committee's members as
        mace's own committee: mean energy and forces)."""
        from mace.calculators import MACECalculator

        models = list(self.model.members) if self.committee_size > 1 else self.model
        return MACECalculator(models=models, device=self.device, default_dtype=self.default_dtype, **kwargs)

    # -- data --------------------------------------------------------------------------------

    def _graphs(self, atoms_list: Sequence[Atoms]) -> list:
        from mace import data as mace_data
        from mace.tools import torch_tools

        keyspec = mace_data.KeySpecification(
            info_keys={"total_spin": "spin", "total_charge": "charge", "external_field": "external_field"},
            arrays_keys={"charges": "Qs"},
        )
        graphs = []
        with torch_tools.default_dtype(self.default_dtype):
            for atoms in atoms_list:
                config = mace_data.config_from_atoms(atoms, key_specification=keyspec, head_name=self.head)
                graphs.append(
                    mace_data.AtomicData.from_config(config, z_table=self.z_table, cutoff=self.r_max, heads=self.heads)
                )
        return graphs

    def _forward(self, graphs: list, batch_size: int) -> list[ForceResult]:
        import torch
        from ase.stress import full_3x3_to_voigt_6_stress
        from mace.tools import torch_geometric

        dtype = next(self.model.parameters()).dtype
        loader = torch_geometric.dataloader.DataLoader(dataset=graphs, batch_size=batch_size, shuffle=False, drop_last=False)
        results: list[ForceResult] = []
        for batch in loader:
            batch = batch.to(self.device)
            batch_dict = {
                k: (v.to(dtype) if torch.is_tensor(v) and torch.is_floating_point(v) else v)
                for k, v in batch.to_dict().items()
            }
            out = self.model(batch_dict, compute_stress=True, training=False)
            energies = out["energy"].detach().cpu().numpy()
            forces = out["forces"].detach().cpu().numpy()
            stress = out["stress"].detach().cpu().numpy() if out.get("stress") is not None else None
            members = out["member_forces"].detach().cpu().numpy() if out.get("member_forces") is not None else None
            ptr = batch.ptr.cpu().numpy()
            for i in range(len(energies)):
                results.append(
                    ForceResult(
                        energy=float(energies[i]),
                        forces=np.array(forces[ptr[i] : ptr[i + 1]], dtype=float),
                        stress=None if stress is None else np.asarray(full_3x3_to_voigt_6_stress(stress[i]), dtype=float),
                        member_forces=None if members is None else np.array(members[:, ptr[i] : ptr[i + 1]], dtype=float),
                    )
                )
        return results

    def _gpu_batch_size(self, graphs: list) -> int:
        """Batch size from free GPU memory and the peak memory of a one-structure probe."""
        import torch

        if self._auto_batch is not None:
            return self._auto_batch
        largest = max(range(len(graphs)), key=lambda i: int(graphs[i]["edge_index"].shape[1]))
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        self._forward([graphs[largest]], 1)
        torch.cuda.synchronize()
        per_structure = max(torch.cuda.max_memory_allocated() - base, 1 << 20)
        free, _ = torch.cuda.mem_get_info()
        size = int(GPU_MEMORY_FRACTION * free / per_structure)
        self._auto_batch = max(1, min(size, MAX_GPU_BATCH_SIZE))
        logger.info("MACE batch size %d (probe %.1f MiB per structure)", self._auto_batch, per_structure / 2**20)
        return self._auto_batch

    def _compute(self, atoms_list: Sequence[Atoms]) -> list[ForceResult]:
        import torch

        if not atoms_list:
            return []
        graphs = self._graphs(atoms_list)
        if self.batch_size != "auto":
            size = int(self.batch_size)
        elif self.device.startswith("cuda"):
            size = self._gpu_batch_size(graphs)
        else:
            size = max(1, CPU_ATOMS_PER_BATCH // max(len(a) for a in atoms_list))
        results: list[ForceResult] = []
        start = 0
        while start < len(graphs):
            chunk = graphs[start : start + size]
            try:
                results.extend(self._forward(chunk, size))
            except Exception as exc:  # torch OOM is a RuntimeError subclass
                if not _is_oom(exc):
                    raise
                if self.device.startswith("cuda"):
                    torch.cuda.empty_cache()
                if size == 1:
                    raise CalculationError(f"MACE ran out of memory on a single structure of {len(atoms_list[start])} atoms") from exc
                size = max(1, size // 2)
                if self.batch_size == "auto":
                    self._auto_batch = size
                logger.warning("MACE out of memory: batch size halved to %d", size)
                continue
            start += len(chunk)
        return results


def load_mace_engine(
    model_sha256: str | Any | None = None,
    model_path: str | Path | None = None,
    store: JobStore | None = None,
    device: str = "auto",
    default_dtype: str = "float64",
    batch_size: int | str = "auto",
    training_doc: Any | None = None,
    cache_dir: str | Path | None = None,
) -> MaceEngine:
    """A :class:`MaceEngine` from a model file, a sha256 (fetched from ``store``, default
    :func:`~phonon_flows.store.get_store`), or a TrainingDoc (object or dict; also accepted as the
    first argument). With both a path and a sha256 the file's hash is checked."""
    if model_sha256 is not None and not isinstance(model_sha256, str):
        training_doc, model_sha256 = model_sha256, None
    if training_doc is not None:
        doc = training_doc if isinstance(training_doc, dict) else training_doc.model_dump()
        if doc.get("failed"):
            raise InputError(f"training failed, there is no model: {doc.get('error')}")
        model_sha256 = model_sha256 or doc.get("model_sha256")
        b64 = doc.get("model_b64")
        if model_path is None and isinstance(b64, str) and b64 and model_sha256:
            target = Path(cache_dir or default_cache_dir()) / f"{model_sha256}.model"
            model_path = target if target.is_file() and sha256_file(target) == model_sha256 else _write_verified(b64, model_sha256, target)
    if model_path is not None:
        model_path = Path(model_path)
        if model_sha256 is not None:
            if not model_path.is_file():
                raise InputError(f"MACE model file {model_path} not found")
            got = sha256_file(model_path)
            if got != model_sha256:
                raise InputError(f"model file {model_path} has sha256 {got[:12]}..., expected {model_sha256[:12]}...")
    elif model_sha256 is not None:
        model_path = fetch_model(store, model_sha256, cache_dir=cache_dir)
    else:
        raise InputError("load_mace_engine needs model_sha256, model_path or training_doc")
    key = (str(Path(model_path).resolve()), model_sha256 or sha256_file(model_path), device, default_dtype, batch_size)
    engine = _ENGINE_CACHE.get(key)
    if engine is None:
        engine = MaceEngine(model_path, device=device, default_dtype=default_dtype, batch_size=batch_size, model_sha256=model_sha256)
        _ENGINE_CACHE.clear()  # keep one model in memory per process
        _ENGINE_CACHE[key] = engine
    return engine


#: engines loaded in this process, keyed by (file, sha256, device, dtype, batch size): a job that
#: runs many materials (or a worker that runs many jobs) loads the model once
_ENGINE_CACHE: dict[tuple, MaceEngine] = {}
