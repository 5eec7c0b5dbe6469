"""ScreeningMaker: new materials screened with a trained MACE model (relax -> phonons), a static
Flow with deterministic job uuids like the training campaign."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from jobflow import Flow, Maker, OnMissing
from jobflow.core.reference import OutputReference

from phonon_flows.core.structures import MIN_DISTANCE, structure_hash
from phonon_flows.errors import InputError, PhononFlowsError
from phonon_flows.flows.builder import CampaignBuilder, finish_campaign
from phonon_flows.flows.inputs import StructureInput, prepare_campaign_inputs
from phonon_flows.engines.mace import add_model_file, is_model_file, stored_models
from phonon_flows.flows.keys import job_key, key_uuid, settings_hash, settings_payload
from phonon_flows.flows.phonons import supercell_for, with_model
from phonon_flows.makers.batched_phonons import BatchedPhononMaker
from phonon_flows.makers.phonons import PhononMaker
from phonon_flows.makers.reference import ReferenceRelaxMaker
from phonon_flows.schemas.campaign import CampaignJob, CampaignMaterial
from phonon_flows.schemas.common import MaterialError
from phonon_flows.store import campaign_metadata


#: relaxations a screening can do before its phonons
SCREEN_RELAX = ("none", "positions", "cell")


def screen_relax_mode(relax: Any) -> str:
    """``none``, ``positions`` or ``cell`` from a string (or a bool: False -> none, True -> cell)."""
    if relax is None or relax is False:
        return "none"
    if relax is True:
        return "cell"
    mode = str(relax).strip().lower()
    if mode not in SCREEN_RELAX:
        raise InputError(f"screening relax must be one of {', '.join(SCREEN_RELAX)}, not {relax!r}", stage="input")
    return mode


def trained_with_energies(doc: Mapping | None) -> bool:
    """Whether a TrainingDoc's model was fitted to energies (MACE-FE: an energy weight > 0 in a
    stage, or the energy phase), so that its stress (the strain derivative of its energy) means
    something. A forces-only model (the recipe: energy weight 0) has no meaningful stress."""
    hp = (doc or {}).get("hyperparameters") or {}
    return bool(hp.get("energy_phase")) or any(float(hp.get(k) or 0) > 0 for k in ("energy_weight", "swa_energy_weight"))


def _model_spec(model: Any) -> tuple[Any, list[str] | None]:
    """(model_sha256 or a reference to it, elements the model knows or None) of a model given as a
    sha256, a TrainingDoc (object or dict) or a reference to a TrainingDoc."""
    if isinstance(model, OutputReference):
        return model.model_sha256, None
    if isinstance(model, str):
        sha = model.strip().lower()
        if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
            raise InputError(f"model must be a MACE model file or the 64-hex sha256 of one, not {model!r} "
                             "(no such file)", stage="input")
        return sha, None
    doc = model if isinstance(model, Mapping) else getattr(model, "__dict__", None)
    if doc is None:
        raise InputError(f"model must be a sha256 or a TrainingDoc, not {type(model).__name__}", stage="input")
    if doc.get("failed"):
        raise InputError(f"the training failed, there is no model: {doc.get('error')}", stage="input")
    sha = doc.get("model_sha256")
    if not sha:
        raise InputError("the TrainingDoc has no model_sha256", stage="input")
    return sha, list(doc.get("elements") or []) or None


def training_doc_for(store: Any, model_sha256: str) -> dict | None:
    """The TrainingDoc (dict, model left in the data store) of a model in ``store``, or None."""
    store.connect()
    found = store.query_one({"output.model_sha256": model_sha256, "output.hyperparameters": {"$exists": True}},
                            properties=["output"], load=False)
    return (found or {}).get("output")


@dataclass
class ScreeningMaker(Maker):
    """New materials screened with a trained MACE model, one PhononDoc per material.

    materials -> relax with the model (optional) -> phonons with the model (stability, thermal
    properties, bands). A static Flow with deterministic job uuids, like the training campaign.

    Parameters
    ----------
    name
        Campaign name.
    model
        The model: a MACE model file (stored in ``store`` with its sha256 when the flow is made),
        its sha256 (fetched from the job store when the jobs run), a TrainingDoc, or a reference
        to a training job's output (a screening in the same flow as its training).
    model_elements
        Elements the model knows, for the input checks (taken from the TrainingDoc when given;
        else from ``store`` when given).
    store
        A JobStore to look the model's TrainingDoc up in when the flow is made (input checks).
    relax, relax_kwargs
        ``"none"`` (default, the paper's way: phonons on the structures as given, which are
        DFT-relaxed), ``"positions"`` (atoms relaxed with the model, cell kept) or ``"cell"``
        (positions and cell; only for a model trained with energies, MACE-FE: a forces-only
        model's stress means nothing, so it is refused). ``relax_kwargs``: ``ReferenceRelaxMaker``
        fields (``fmax``, ``steps``...). A relaxation that changes the volume by more than 3 % is
        reported (job log, ``RelaxDoc.warnings``, ``phonon-flows status``).
    phonon_maker, engine_kwargs
        The PhononMaker template (settings) and extra MACE engine arguments (``device``, ...).
    total_dos
        Total DOS in the PhononDocs (default False: a screening needs the thermal properties,
        stability and bands; the DOS costs time nobody asked for). Ignored when ``phonon_maker``
        is given (its own ``total_dos`` counts).
    batch_size
        Materials per phonon job (default 32): each job loads the model once, computes the
        displaced supercells of its materials in shared batches and writes one PhononDoc per
        material to the store (queries and ``status`` see each material; a failed material is a
        failed PhononDoc naming it, the others finish). 0: one PhononMaker job per material.
    postprocess_workers
        Processes running phonopy's work beside the model in each batched job (0: none; see
        :func:`phonon_flows.makers.batched_phonons.phonons_for_many`).
    """

    name: str = "screening"
    model: Any = None
    model_elements: Sequence[str] | None = None
    store: Any = None
    relax: str = "none"
    relax_kwargs: dict = field(default_factory=dict)
    phonon_maker: Maker | None = None
    engine_kwargs: dict = field(default_factory=dict)
    min_atoms: int = 100
    max_atoms: int = 200
    min_distance: float = MIN_DISTANCE
    total_dos: bool = False
    batch_size: int = 32
    postprocess_workers: int = 0

    def make(
        self,
        structures: Sequence[StructureInput] | Mapping[str, StructureInput],
        material_ids: Sequence[str] | None = None,
        model: Any = None,
        supercell_matrices: Mapping[str, Any] | None = None,
    ) -> Flow:
        """The screening Flow. Its output is the list of PhononDocs (one per valid material) with
        ``batch_size=0``, else the list of the batched jobs' PhononBatchDocs (the PhononDocs are
        documents of their own in the store, one per material).

        The steps: resolve the model (and the elements it knows); check the inputs; per material:
        the phonon supercell, relax with the model, phonons with the model (per pack of
        ``batch_size`` materials); the campaign record. ``supercell_matrices``: material id ->
        supercell matrix for the materials whose supercell is given (e.g. a reference's), on the
        primitive cell the screening computes (pymatgen's ``get_primitive_structure`` of the
        input, the input itself when it is primitive); the others get one in the maker's atom
        window.
        """
        sha, elements, training_doc = self._model(model)
        model_key = sha if isinstance(sha, str) else f"ref:{sha.uuid}"
        makers = self._stage_makers(sha, training_doc)
        engines = [("mace", frozenset(elements))] if elements else []
        materials, failed, sources, _ = prepare_campaign_inputs(structures, material_ids, engines, None,
                                                                 self.min_distance)
        b = CampaignBuilder(self.name)
        hashes = {mid: structure_hash(s) for mid, s in materials}
        smats: dict[str, list[list[int]]] = {}
        docs: list = []
        kept = []
        pack: list[tuple] = []
        for mid, s in materials:
            try:
                given = (supercell_matrices or {}).get(mid)
                smats[mid] = (supercell_for(s, makers.phonons, mid) if given is None
                              else np.asarray(given).astype(int).reshape(3, 3).tolist() if np.size(given) == 9
                              else np.diag(np.asarray(given).astype(int)).tolist())
            except PhononFlowsError as err:
                failed.append(MaterialError(material_id=mid, stage="input", reason=err.reason))
                continue
            kept.append((mid, s))
            if self.batch_size and self.batch_size > 0:
                pack.append(self._add_relax(b, makers, mid, s, hashes[mid], model_key))
                if len(pack) == self.batch_size:
                    docs.append(self._add_pack(b, makers, pack, hashes, smats, model_key))
                    pack = []
            else:
                docs.append(self._add_material(b, makers, mid, s, hashes[mid], smats[mid], model_key))
        if pack:
            docs.append(self._add_pack(b, makers, pack, hashes, smats, model_key))

        settings = {
            "model_sha256": model_key,
            "relax": settings_payload(makers.relax_settings),
            "phonons": makers.phonon_settings.settings(),
            "engine_kwargs": dict(self.engine_kwargs),
            "batch_size": int(self.batch_size or 0),
        }
        return finish_campaign(
            b, "screening", settings, docs,
            materials=[
                CampaignMaterial(material_id=mid, formula=s.composition.reduced_formula, split="screen",
                                 structure_hash=hashes[mid], n_atoms=len(s), source=sources.get(mid),
                                 supercell_matrix=smats.get(mid))
                for mid, s in kept
            ],
            screen_material_ids=[mid for mid, _ in kept],
            input_failures=failed,
            model_sha256=sha if isinstance(sha, str) else None,
        )

    # -- the steps ------------------------------------------------------------------------
    def _model(self, model: Any) -> tuple[Any, list[str] | None, dict | None]:
        """(sha256 or a reference to it, elements the model knows or None, its TrainingDoc or
        None): from ``model`` or the maker's, the elements from ``model_elements``, the model
        file, the TrainingDoc or ``store``."""
        model = self.model if model is None else model
        if model is None:
            raise InputError("a screening needs a model: its sha256 or a TrainingDoc", stage="input")
        training_doc = None
        if is_model_file(model):
            # a model file: stored in ``store`` (the jobs fetch it by sha256) and in the model cache
            sha, elements = add_model_file(model, self.store)
        else:
            sha, elements = _model_spec(model)
            training_doc = model if isinstance(model, Mapping) else (
                model.model_dump() if hasattr(model, "model_dump") else None)
        if self.model_elements is not None:
            elements = list(self.model_elements)
        if elements is None and self.store is not None and isinstance(sha, str):
            doc = training_doc_for(self.store, sha)
            if doc is None:  # a model file added to the store (phonon-flows model add)
                doc = next((m for m in stored_models(self.store) if m["model_sha256"] == sha), None)
                if doc is None:
                    raise InputError(f"no MACE model with sha256 {sha} in the store (add a model file with "
                                     "`phonon-flows model add FILE`)", stage="input")
            if doc.get("failed"):
                raise InputError(f"the training of model {sha[:12]} failed: {doc.get('error')}", stage="input")
            elements = list(doc.get("elements") or []) or None
        if isinstance(sha, str) and training_doc is None and self.store is not None:
            training_doc = training_doc_for(self.store, sha)
        return sha, elements, training_doc

    def _stage_makers(self, sha: Any, training_doc: dict | None = None) -> _ScreeningMakers:
        """The relax and phonon makers with the model, and their settings without it (hashed
        into the job keys with the model's key)."""
        base = self.phonon_maker or PhononMaker(min_atoms=self.min_atoms, max_atoms=self.max_atoms,
                                                total_dos=self.total_dos)
        phonon_maker = dataclasses.replace(with_model(base, sha), name="phonons")
        phonon_maker.engine_kwargs.update(self.engine_kwargs)
        settings_maker = dataclasses.replace(base, engine="mace", engine_kwargs=dict(self.engine_kwargs), force_maker=None)
        mode = screen_relax_mode(self.relax)
        relax_kwargs = dict(self.relax_kwargs)
        if "relax_cell" in relax_kwargs:
            raise InputError("give the relaxation as relax='none', 'positions' or 'cell', not relax_kwargs['relax_cell']",
                             stage="input")
        if mode == "cell" and not trained_with_energies(training_doc):
            known = training_doc is not None
            raise InputError(
                ("the model was trained on forces only (energy weight 0)" if known else
                 "the model's training is unknown (no TrainingDoc in the store)")
                + ": its stress means nothing, so a cell relaxation with it gives wrong volumes. Screen the "
                "structures as given (relax 'none', the default) or relax positions only ('positions'); a cell "
                "relaxation needs a model trained with energies (MACE-FE: MaceTrainingMaker(energy_phase=EnergyPhase()))",
                stage="input")
        relax_maker = relax_settings = None
        if mode != "none":
            relax_kwargs["relax_cell"] = mode == "cell"
            relax_maker = ReferenceRelaxMaker(name="mace relax", engine="mace",
                                              engine_kwargs={**self.engine_kwargs, "model_sha256": sha}, **relax_kwargs)
            relax_settings = ReferenceRelaxMaker(name="mace relax", engine="mace", engine_kwargs={}, **relax_kwargs)

        return _ScreeningMakers(phonon_maker, settings_maker, relax_maker, relax_settings)

    @staticmethod
    def _add_relax(b, makers, mid, s, material_hash, model_key) -> tuple[str, Any, Any, str]:
        """Relax one material with the model when the screening relaxes: (material id, input
        structure, structure to compute -- a reference when relaxed --, relax key or "none")."""
        if makers.relax is None:
            return mid, s, s, "none"
        r = makers.relax.make(s, material_id=mid)
        r.config.expose_store = True  # the model is fetched from the job's store
        _, rkey = b.add(r, "relax", mid, material_hash, settings_hash(makers.relax_settings, model_key), "gpu",
                        "screen", name=f"relax mace {mid}")
        return mid, s, r.output.structure, rkey

    def _add_pack(self, b, makers, pack, hashes, smats, model_key) -> Any:
        """One batched phonon job for a pack of materials; each material's PhononDoc gets the
        uuid, key and metadata its own phonon job would have (stage ``phonon-mlip``), and is a
        job of the campaign record, so ``status`` and the queries see it."""
        uuids, metadata, names = [], [], []
        for mid, _s, _structure, rkey in pack:
            key = job_key(b.campaign, hashes[mid], "phonon-mlip",
                          settings_hash(makers.phonon_settings, rkey, smats[mid], model_key))
            uuids.append(key_uuid(key))
            metadata.append(campaign_metadata(b.campaign, mid, "phonon-mlip", key=key, split="screen"))
            names.append(f"phonons mace {mid}")
        batch_maker = BatchedPhononMaker(
            **{f.name: getattr(makers.phonons, f.name) for f in dataclasses.fields(PhononMaker)},
            postprocess_workers=self.postprocess_workers,
        )
        relaxed = makers.relax is not None
        j = batch_maker.make_documents(
            [p[2] for p in pack], [p[0] for p in pack], uuids, metadata, [smats[p[0]] for p in pack], names,
            input_structures=[p[1] for p in pack] if relaxed else None,
        )
        if relaxed:  # a failed relaxation is a failed PhononDoc of that material, not a lost pack
            j.config.on_missing_references = OnMissing.NONE
        _, _key = b.add(j, "phonon-batch", None, None, settings_hash(makers.phonon_settings, model_key, uuids), "gpu",
                        "screen", name=f"phonons mace {pack[0][0]} .. {pack[-1][0]} ({len(pack)} materials)")
        for u, (mid, *_rest), name in zip(uuids, pack, names, strict=True):
            b.records.append(CampaignJob(uuid=u, name=name, stage="phonon-mlip", material_id=mid, category="gpu"))
        return j.output

    @staticmethod
    def _add_material(b, makers, mid, s, material_hash, smat, model_key) -> Any:
        """Relax (optionally) and phonons of one material with the model; the PhononDoc reference."""
        mid, _s, structure, rkey = ScreeningMaker._add_relax(b, makers, mid, s, material_hash, model_key)
        ph = makers.phonons.make(structure, material_id=mid, supercell_matrix=smat)
        b.add(ph, "phonon-mlip", mid, material_hash, settings_hash(makers.phonon_settings, rkey, smat, model_key),
              "gpu", "screen", name=f"phonons mace {mid}")
        return ph.output


@dataclass
class _ScreeningMakers:
    """The makers of a screening (with the model) and their settings (without it)."""

    phonons: Maker
    phonon_settings: Maker
    relax: Maker | None
    relax_settings: Maker | None
