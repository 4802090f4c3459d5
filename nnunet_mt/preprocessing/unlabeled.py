"""Preprocess a raw dataset's unannotated scans with the dataset's own nnU-Net plans.

Input
-----
``$nnUNet_raw/DatasetXXX_Name/imagesUnlabeled/`` holds the unannotated scans, named exactly like ``imagesTr``:
``<case>_0000<ending>``, ``<case>_0001<ending>``, ... one file per channel of dataset.json ``channel_names`` and
``<ending>`` = dataset.json ``file_ending``. The raw folder is only ever read.

Processing
----------
Each case goes through the configuration's own preprocessor class (``ConfigurationManager.preprocessor_class``,
normally ``DefaultPreprocessor``) via ``run_case(image_files, None, plans_manager, configuration_manager,
dataset_json)``, i.e. exactly the transpose -> crop to non-zero -> normalise -> resample chain nnU-Net applies to
annotated cases. Without a segmentation nnU-Net's ``crop_to_nonzero`` generates one that is 0 inside the image's
non-zero region and -1 outside, which is the same encoding it writes for labelled cases (background / outside the
mask); we store it as the case's segmentation so nnU-Net's loaders work unchanged.

Output (``unlabeled_output_folder``)
------------------------------------
``$nnUNet_preprocessed/DatasetXXX_Name/<data_identifier>_unlabeled/`` (e.g. ``nnUNetPlans_3d_fullres_unlabeled``),
in the same blosc2 layout ``DefaultPreprocessor.run_case_save`` writes for training data::

    <case>.b2nd       float32 (c, x, y, z) image, chunks/blocks from comp_blosc2_params(patch_size)
    <case>_seg.b2nd   int16   (1, x, y, z): 0 inside the non-zero region, -1 outside
    <case>.pkl        properties (spacing, bbox_used_for_cropping, shape_before_cropping, ...,
                      class_locations = {foreground label or region: []})

so ``infer_dataset_class(folder)(folder).load_case(case)`` loads a case.

Checks
------
Before anything is written, every case to be preprocessed is read with the converter's checks
(``nnunet_mt.dataset_conversion.convert_folder``): readable and complete (nibabel, because SimpleITK zero-fills a
truncated ``.nii.gz``), no NaN/Inf (SimpleITK reads them as 0), 3-D (a 2-D file would become one slice of ~1000x
its spacing, a 4-D one fail deep inside nnU-Net), and channels of one size and spacing (nnU-Net's own rule, whose
failure is a bare ``RuntimeError``). All problems are reported together, each with its file.

Idempotency
-----------
The ``.pkl`` is the completion marker: a case's files are written into ``<output>/.partial/<case>/`` and renamed
into place with the ``.pkl`` last, so a case counts as finished only when its ``.pkl`` loads and both arrays
exist. Finished cases are skipped on a re-run; interrupted (or corrupted) ones are redone, and so are cases made
with other plans (the ``.pkl`` records a digest of the plans, key ``nnunet_mt_plans_sha256``) and cases whose
source files changed (it records each file's size and modification time, key ``nnunet_mt_source_fingerprint``;
a case without that record, made by an older version, is redone once). The scratch folder is a
sub-folder, so nnU-Net's ``infer_dataset_class``, which looks at files only, never sees it. Do not run two instances
on the same output folder at the same time (each run clears the scratch folder when it starts).

Console script ``nnunet_mt_preprocess_unlabeled -d ID [-c 3d_fullres] [-p nnUNetPlans] [-np N]``.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import os
import pickle
import re
import shutil
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import blosc2
import numpy as np
from nnunetv2.training.dataloading.nnunet_dataset import comp_blosc2_params, nnUNetDatasetBlosc2
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager, PlansManager

from nnunet_mt.dataset_conversion.convert_folder import NIFTI_ENDINGS
from nnunet_mt.dataset_conversion.image_checks import (check_3d, check_finite, one_line, plain_floats, read_geometry,
                                                       read_voxels)
from nnunet_mt.utils.file_fingerprint import changed_fingerprints, files_fingerprint

UNLABELED_FOLDER = "imagesUnlabeled"
OUTPUT_SUFFIX = "_unlabeled"
PARTIAL_FOLDER = ".partial"  # scratch space inside the output folder (a folder: invisible to infer_dataset_class)
# extra key in each case's properties: which plans produced the case, so re-planning makes re-runs redo it
PLANS_DIGEST_KEY = "nnunet_mt_plans_sha256"
# and which source files: {file name: [size in bytes, mtime in ns]} (nnunet_mt.utils.file_fingerprint, names only: the
# raw folder may move), so a replaced or repaired scan is redone
SOURCE_FINGERPRINT_KEY = "nnunet_mt_source_fingerprint"
# the trainers' own caches next to the cases (pseudo_lesions_<digest>.pkl, pseudo_labels_<digest>...): not cases
PLUGIN_CACHE_PREFIX = "pseudo_"

# properties nnU-Net's data loader (class_locations) and exporter (the rest) read from a case's .pkl
REQUIRED_PROPERTIES = ("spacing", "shape_before_cropping", "bbox_used_for_cropping",
                       "shape_after_cropping_and_before_resampling", "class_locations")

_PROG = "nnunet_mt_preprocess_unlabeled"
#: which trainers read the preprocessed unannotated scans (said where the folder is missing or empty)
NEEDED_BY = ("every semi-supervised trainer reads them: nnUNetTrainerMeanTeacher and its variants, "
             "nnUNetTrainerMeanTeacherUNet, nnUNetTrainerPiModel, nnUNetTrainerDeepMedicEN, nnUNetTrainerDeepMedicUDA, "
             "nnUNetTrainerDeepMedicPseudoLabel")
_MAX_LISTED = 20  # keep messages readable when a folder is full of junk


class UnlabeledDataError(RuntimeError):
    """Raised for unusable inputs; the message names the offending path/value, the problem and the fix."""


# --------------------------------------------------------------------------------------------------------------
# Locating things (environment variables are read at call time, not at import time)
# --------------------------------------------------------------------------------------------------------------
def _env_folder(variable: str) -> Path:
    """The folder an nnU-Net environment variable points to; read now so tests/callers can change it."""
    value = os.environ.get(variable)
    if not value:
        raise UnlabeledDataError(f"environment variable {variable} is not set: export it to your nnU-Net "
                                 f"{variable.split('_', 1)[1]} folder "
                                 f"(see nnU-Net's documentation/setting_up_paths.md)")
    return Path(value)


def resolve_dataset_name(dataset_name_or_id: int | str) -> str:
    """``'DatasetXXX_Name'`` for a dataset name or ID, searching ``$nnUNet_raw`` and ``$nnUNet_preprocessed``.

    Re-implemented (instead of nnU-Net's ``maybe_convert_to_dataset_name``) so the roots are read from
    ``os.environ`` at call time and the error says where we looked.
    """
    if isinstance(dataset_name_or_id, str) and dataset_name_or_id.startswith("Dataset"):
        return dataset_name_or_id
    try:
        dataset_id = int(dataset_name_or_id)
    except (TypeError, ValueError):
        raise UnlabeledDataError(f"invalid dataset {dataset_name_or_id!r}: give a dataset ID (e.g. 501) or a full "
                                 f"name (e.g. Dataset501_StrokeDWI)") from None
    prefix = f"Dataset{dataset_id:03d}_"
    roots = [Path(os.environ[v]) for v in ("nnUNet_raw", "nnUNet_preprocessed") if os.environ.get(v)]
    candidates = sorted({p.name for root in roots if root.is_dir() for p in root.iterdir()
                         if p.is_dir() and p.name.startswith(prefix)})
    if len(candidates) == 1:
        return candidates[0]
    searched = ", ".join(str(r) for r in roots) or "nothing (nnUNet_raw and nnUNet_preprocessed are unset)"
    if not candidates:
        raise UnlabeledDataError(f"no dataset with ID {dataset_id} ({prefix}*) found; searched {searched}. Check the "
                                 f"ID and the nnUNet_raw / nnUNet_preprocessed environment variables")
    raise UnlabeledDataError(f"dataset ID {dataset_id} is ambiguous: {candidates} in {searched}; pass the full "
                             f"dataset name or remove the duplicate")


def _plans_file(dataset_name: str, plans_identifier: str) -> Path:
    return _env_folder("nnUNet_preprocessed") / dataset_name / f"{plans_identifier}.json"


def _load_plans(dataset_name: str, plans_identifier: str) -> PlansManager:
    """The dataset's own plans; missing plans mean nnU-Net's planning has not been run yet."""
    plans_file = _plans_file(dataset_name, plans_identifier)
    if not plans_file.is_file():
        dataset_id = dataset_name[len("Dataset"):len("Dataset") + 3]
        raise UnlabeledDataError(f"plans file {plans_file} not found: the unlabelled scans must be preprocessed with "
                                 f"the dataset's own plans. Run `nnUNetv2_plan_and_preprocess -d {dataset_id}` first "
                                 f"(or pass the right plans identifier with -p)")
    return PlansManager(str(plans_file))


def _get_configuration(plans_manager: PlansManager, configuration: str, dataset_name: str,
                       plans_identifier: str) -> ConfigurationManager:
    """The named configuration, with an error listing the available ones."""
    available = plans_manager.available_configurations
    if configuration not in available:
        raise UnlabeledDataError(f"unknown configuration {configuration!r}: "
                                 f"{_plans_file(dataset_name, plans_identifier)} defines {available}")
    return plans_manager.get_configuration(configuration)


def unlabeled_output_folder(dataset_name_or_id: int | str, configuration: str = "3d_fullres",
                            plans_identifier: str = "nnUNetPlans") -> str:
    """``$nnUNet_preprocessed/DatasetXXX_Name/<configuration's data_identifier>_unlabeled``."""
    dataset_name = resolve_dataset_name(dataset_name_or_id)
    plans_manager = _load_plans(dataset_name, plans_identifier)
    configuration_manager = _get_configuration(plans_manager, configuration, dataset_name, plans_identifier)
    return str(unlabeled_data_folder(_env_folder("nnUNet_preprocessed") / dataset_name,
                                     configuration_manager.data_identifier))


def unlabeled_data_folder(preprocessed_dataset_folder: str | Path, data_identifier: str) -> Path:
    """The unannotated scans' folder beside a configuration's preprocessed data: the one place that names it
    (the trainers, this command and the runner all ask here)."""
    return Path(preprocessed_dataset_folder) / (data_identifier + OUTPUT_SUFFIX)


def _load_dataset_json(dataset_name: str) -> dict:
    """nnU-Net preprocesses with the dataset.json copy in nnUNet_preprocessed; fall back to the raw one."""
    for root in ("nnUNet_preprocessed", "nnUNet_raw"):
        candidate = _env_folder(root) / dataset_name / "dataset.json"
        if candidate.is_file():
            return json.loads(candidate.read_text())
    raise UnlabeledDataError(f"dataset.json of {dataset_name} not found in $nnUNet_preprocessed/{dataset_name} nor "
                             f"$nnUNet_raw/{dataset_name}; run `nnUNetv2_plan_and_preprocess` on the dataset first")


def _expected_channels(dataset_json: dict) -> dict[int, str]:
    """Channel index -> name from dataset.json (``modality`` is the nnU-Net v1 spelling)."""
    channels = dataset_json.get("channel_names", dataset_json.get("modality"))
    if not channels:
        raise UnlabeledDataError("dataset.json has no 'channel_names': cannot tell which files make up a case")
    return {int(index): name for index, name in channels.items()}


# --------------------------------------------------------------------------------------------------------------
# Discovering and validating the unlabelled cases
# --------------------------------------------------------------------------------------------------------------
def _listed(items: Sequence[str]) -> str:
    items = list(items)
    more = f" ... and {len(items) - _MAX_LISTED} more" if len(items) > _MAX_LISTED else ""
    return ", ".join(items[:_MAX_LISTED]) + more


def _problems_error(header: str, problems: Sequence[str], advice: str) -> UnlabeledDataError:
    """One error listing the problems (the first :data:`_MAX_LISTED`), then what to do."""
    more = f"\n  ... and {len(problems) - _MAX_LISTED} more" if len(problems) > _MAX_LISTED else ""
    return UnlabeledDataError(f"{header}:\n" + "\n".join(f"  - {p}" for p in problems[:_MAX_LISTED]) + more
                              + f"\n{advice}")


def find_unlabeled_cases(images_dir: Path, file_ending: str, channels: dict[int, str]) -> dict[str, list[str]]:
    """Group ``images_dir`` into ``{case: [channel files in channel order]}``; raise if anything is off.

    All naming problems are collected first so a user fixes the folder in one go.
    """
    if not images_dir.is_dir():
        raise UnlabeledDataError(f"no folder of unlabelled scans: expected {images_dir} holding "
                                 f"<case>_0000{file_ending} ... (one file per channel, named like imagesTr; "
                                 f"{NEEDED_BY})")
    pattern = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})" + re.escape(file_ending) + r"$")
    files_by_case: dict[str, dict[int, str]] = {}
    problems: list[str] = []
    for entry in sorted(images_dir.iterdir()):
        if entry.name.startswith(".") or not entry.is_file():
            continue  # hidden files (.DS_Store, editor swap files) and sub-folders are not scans
        match = pattern.match(entry.name)
        if match is None:
            problems.append(f"{entry}: not named <case>_XXXX{file_ending} (4-digit channel index, file ending "
                            f"{file_ending!r} from dataset.json)")
            continue
        files_by_case.setdefault(match["case"], {})[int(match["channel"])] = entry.name
    if not files_by_case and not problems:
        raise UnlabeledDataError(f"{images_dir} is empty: put the unlabelled scans there as "
                                 f"<case>_0000{file_ending} ... ({NEEDED_BY}; the supervised nnUNetTrainerDeepMedic "
                                 f"and nnUNetTrainerUNet do not, and need no such step)")
    expected = sorted(channels)
    expected_text = ", ".join(f"_{i:04d} ({channels[i]})" for i in expected)
    for case, found in sorted(files_by_case.items()):
        if sorted(found) != expected:
            missing = [f"_{i:04d}" for i in expected if i not in found]
            extra = [f"_{i:04d}" for i in sorted(found) if i not in channels]
            detail = "; ".join(filter(None, [f"missing {missing}" if missing else "",
                                             f"unexpected {extra}" if extra else ""]))
            found_files = ", ".join(found[i] for i in sorted(found))
            problems.append(f"case {case!r} has {len(found)} channel file(s) [{found_files}] but dataset.json "
                            f"channel_names expects {len(expected)}: {expected_text} ({detail})")
    if problems:
        raise _problems_error(f"{len(problems)} problem(s) in {images_dir}", problems,
                              "Fix the file names or move the files elsewhere, then re-run.")
    return {case: [str(images_dir / found[i]) for i in expected] for case, found in sorted(files_by_case.items())}


# not read_voxels alone: imagesUnlabeled holds whatever file ending dataset.json names, not only NIfTI
def _read_all_voxels(path: Path, problems: list[str]) -> np.ndarray | None:
    """NIfTI through nibabel (refuses truncated files, keeps NaN); other formats through SimpleITK."""
    if path.name.lower().endswith(NIFTI_ENDINGS):
        return read_voxels(path=path, problems=problems)
    import SimpleITK as sitk
    try:
        return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))  # a copy: a view would outlive its image
    except RuntimeError as error:
        problems.append(f"{path}: unreadable or corrupt file (SimpleITK: {one_line(str(error))})")
        return None


def check_unlabeled_case(case: str, image_files: Sequence[str]) -> list[str]:
    """Every problem of one case's files, each naming its file (empty list: nnU-Net can preprocess it)."""
    problems: list[str] = []
    geometries = {}
    for name in image_files:
        path = Path(name)
        geometry = read_geometry(path=path, problems=problems)
        if geometry is None or not check_3d(geometry=geometry, path=path, problems=problems):
            continue
        voxels = _read_all_voxels(path, problems)
        if voxels is not None and check_finite(voxels=voxels, path=path, problems=problems):
            geometries[path] = geometry
    if len(geometries) == len(image_files) > 1:
        # nnU-Net's reader (BaseReaderWriter._check_all_same: np.allclose) stops on these two, with a bare
        # RuntimeError; origin and direction only get a warning there, so they are left to it
        for field_name, unit in (("size", " voxels"), ("spacing", " mm")):
            values = [getattr(g, field_name) for g in geometries.values()]
            if not np.allclose(values[0], values[1:]):
                listed = "; ".join(f"{path}: {plain_floats(getattr(g, field_name))}" for path, g in geometries.items())
                problems.append(f"case {case!r}: its channels have different {field_name}s (x, y, z{unit}), which "
                                f"nnU-Net cannot combine: {listed}. Resample them onto one grid or remove the case")
    return problems


def _changed_sources(stored: object, current: dict[str, list[int] | None]) -> str:
    """The names of a case's files whose recorded and current fingerprints differ, for the rerun message."""
    if not isinstance(stored, dict):
        return "no record of its source files"
    return ", ".join(changed_fingerprints(stored, current))


# --------------------------------------------------------------------------------------------------------------
# Output files of one case
# --------------------------------------------------------------------------------------------------------------
def _case_files(folder: Path, case: str) -> dict[str, Path]:
    """The three files nnUNetDatasetBlosc2 reads for a case; the pkl (the completion marker) last."""
    return {"data": folder / f"{case}.b2nd", "seg": folder / f"{case}_seg.b2nd", "properties": folder / f"{case}.pkl"}


def plans_digest(plans_manager: PlansManager, configuration_manager: ConfigurationManager,
                 dataset_json: dict) -> str:
    """SHA-256 of everything in the plans/dataset.json that can change a preprocessed case.

    Deliberately coarse (the whole resolved configuration, not only the keys DefaultPreprocessor reads): a custom
    preprocessor may read other keys, and a needless redo is cheaper than silently stale training data.
    """
    plans = plans_manager.plans
    relevant = {
        "configuration": configuration_manager.configuration,
        "transpose_forward": plans.get("transpose_forward"),
        "image_reader_writer": plans.get("image_reader_writer"),
        "foreground_intensity_properties_per_channel": plans_manager.foreground_intensity_properties_per_channel,
        "labels": dataset_json.get("labels"),
        "regions_class_order": dataset_json.get("regions_class_order"),
    }
    return hashlib.sha256(json.dumps(relevant, sort_keys=True, default=str).encode()).hexdigest()


def _stored_properties(folder: Path, case: str) -> dict | None:
    try:
        with open(_case_files(folder, case)["properties"], "rb") as handle:
            properties = pickle.load(handle)
    except Exception:  # unreadable marker: the case is unfinished, the cause does not matter
        return None
    return properties if isinstance(properties, dict) else None


def case_state(folder: Path, case: str, digest: str, fingerprint: dict[str, list[int] | None] | None = None) -> str:
    """``'done'``, ``'stale'`` (finished with other plans), ``'changed'`` (finished from other source files than
    ``fingerprint`` describes; not checked when it is None) or ``'missing'`` (absent, interrupted or corrupted).

    'done' requires the marker (.pkl) to load with the properties nnU-Net needs and both arrays to open.
    """
    files = _case_files(folder, case)
    if not all(p.is_file() for p in files.values()):
        return "missing"
    try:
        with open(files["properties"], "rb") as handle:
            properties = pickle.load(handle)
        data = blosc2.open(str(files["data"]), mode="r")
        seg = blosc2.open(str(files["seg"]), mode="r")
    except Exception:  # any unreadable file means the case must be redone; the cause does not matter
        return "missing"
    if not (isinstance(properties, dict) and all(k in properties for k in REQUIRED_PROPERTIES)
            and tuple(data.shape[1:]) == tuple(seg.shape[1:])):
        return "missing"
    if properties.get(PLANS_DIGEST_KEY) != digest:
        return "stale"
    if fingerprint is not None and properties.get(SOURCE_FINGERPRINT_KEY) != fingerprint:
        return "changed"
    return "done"


def _empty_class_locations(plans_manager: PlansManager, dataset_json: dict) -> dict:
    """``class_locations`` with the keys nnU-Net would sample for, all empty: there is no foreground to sample.

    Same keys as ``DefaultPreprocessor.run_case_npy`` (int labels, tuples for regions / the ignore-label entry) so
    the data loader's ``force_fg`` path finds every class and falls back to a random patch.
    """
    label_manager = plans_manager.get_label_manager(dataset_json)
    keys = list(label_manager.foreground_regions if label_manager.has_regions else label_manager.foreground_labels)
    if label_manager.has_ignore_label:
        keys.append([-1] + list(label_manager.all_labels))
    return {tuple(int(i) for i in k) if isinstance(k, (list, tuple)) else int(k): [] for k in keys}


@dataclass(frozen=True)
class _CaseJob:
    """Everything a (possibly spawned) worker needs for one case; plain data so it pickles cheaply."""

    case: str
    image_files: tuple[str, ...]
    output_folder: str
    plans: dict
    configuration: str
    dataset_json: dict
    #: the files' size and mtime as checked before the run (stored with the case)
    fingerprint: dict | None = None


def _save_arrays(data: np.ndarray, seg: np.ndarray, properties: dict, truncated: str,
                 configuration_manager: ConfigurationManager) -> None:
    """Write like ``DefaultPreprocessor.run_case_save``: float32 data, int16 seg, patch-size-aware chunking."""
    data = data.astype(np.float32, copy=False)
    seg = seg.astype(np.int16, copy=False)
    patch_size = tuple(configuration_manager.patch_size)
    blocks, chunks = comp_blosc2_params(data.shape, patch_size, data.itemsize)
    blocks_seg, chunks_seg = comp_blosc2_params(seg.shape, patch_size, seg.itemsize)
    nnUNetDatasetBlosc2.save_case(data, seg, properties, truncated, chunks=chunks, blocks=blocks,
                                  chunks_seg=chunks_seg, blocks_seg=blocks_seg)


def preprocess_case(job: _CaseJob) -> str:
    """Preprocess one case into scratch space, then move it into place with the .pkl marker last."""
    plans_manager = PlansManager(job.plans)
    configuration_manager = plans_manager.get_configuration(job.configuration)
    output = Path(job.output_folder)
    final = _case_files(output, job.case)
    # drop the marker first: from here on the case counts as unfinished until the new marker lands
    for path in reversed(list(final.values())):
        path.unlink(missing_ok=True)
    scratch = output / PARTIAL_FOLDER / job.case
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    try:
        preprocessor = configuration_manager.preprocessor_class(verbose=False)
        data, seg, properties = preprocessor.run_case(list(job.image_files), None, plans_manager,
                                                      configuration_manager, job.dataset_json)
        properties.setdefault("class_locations", _empty_class_locations(plans_manager, job.dataset_json))
        properties[PLANS_DIGEST_KEY] = plans_digest(plans_manager, configuration_manager, job.dataset_json)
        properties[SOURCE_FINGERPRINT_KEY] = (job.fingerprint if job.fingerprint is not None
                                              else files_fingerprint(job.image_files, by_name=True))
        _save_arrays(data, seg, properties, str(scratch / job.case), configuration_manager)
    except Exception as error:
        # name the case and its files: the reader's own messages often do not (and a traceback is not wanted)
        raise UnlabeledDataError(f"could not preprocess unlabelled case {job.case!r} from {list(job.image_files)}: "
                                 f"{type(error).__name__}: {error}. Fix or remove these files and re-run") from error
    partial = _case_files(scratch, job.case)
    for key in ("data", "seg", "properties"):  # the marker last
        os.replace(partial[key], final[key])
    shutil.rmtree(scratch, ignore_errors=True)
    return job.case


def _run_jobs(jobs: list[_CaseJob], num_processes: int, verbose: bool) -> None:
    """Run the jobs inline (1 process) or in a spawn pool, printing progress as cases finish."""
    def report(done: int, case: str) -> None:
        if verbose:
            print(f"preprocessed {done}/{len(jobs)} unlabelled cases ({case})", flush=True)

    if num_processes <= 1 or len(jobs) <= 1:
        for done, job in enumerate(jobs, start=1):
            report(done, preprocess_case(job))
        return
    # spawn like nnU-Net (fork + torch/blosc2 threads is unsafe); ProcessPoolExecutor, unlike Pool, raises
    # BrokenProcessPool instead of hanging when a worker is killed (e.g. by the OOM killer)
    with worker_pool(min(num_processes, len(jobs))) as pool:
        futures = [pool.submit(preprocess_case, job) for job in jobs]
        try:
            for done, future in enumerate(as_completed(futures), start=1):
                report(done, future.result())
        except BaseException:
            for future in futures:
                future.cancel()
            raise


def worker_pool(max_workers: int) -> ProcessPoolExecutor:
    """Spawned workers that die with this process (a killed parent leaves none behind)."""
    from nnunet_mt.training.workers import exit_with_parent

    return ProcessPoolExecutor(max_workers=max_workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=exit_with_parent, initargs=(os.getpid(),))


# --------------------------------------------------------------------------------------------------------------
# Public entry points
# --------------------------------------------------------------------------------------------------------------
def preprocess_unlabeled(dataset_name_or_id: int | str, configuration: str = "3d_fullres",
                         plans_identifier: str = "nnUNetPlans", num_processes: int = 1,
                         verbose: bool = True) -> list[str]:
    """Preprocess ``imagesUnlabeled`` with the dataset's plans; return all case identifiers (sorted).

    Finished cases are skipped, so re-running after an interruption or after adding scans only does the rest.
    """
    if num_processes < 1:
        raise UnlabeledDataError(f"num_processes must be >= 1, got {num_processes}")
    dataset_name = resolve_dataset_name(dataset_name_or_id)
    plans_manager = _load_plans(dataset_name, plans_identifier)
    configuration_manager = _get_configuration(plans_manager, configuration, dataset_name, plans_identifier)
    if configuration_manager.preprocessor_class is None:
        raise UnlabeledDataError(f"preprocessor class {configuration_manager.preprocessor_name!r} of configuration "
                                 f"{configuration!r} not found in nnunetv2.preprocessing")
    dataset_json = _load_dataset_json(dataset_name)
    raw_dataset = _env_folder("nnUNet_raw") / dataset_name
    if not raw_dataset.is_dir():
        raise UnlabeledDataError(f"raw dataset folder {raw_dataset} not found: check nnUNet_raw and the dataset ID")
    cases = find_unlabeled_cases(raw_dataset / UNLABELED_FOLDER, dataset_json["file_ending"],
                                 _expected_channels(dataset_json))

    output = Path(unlabeled_output_folder(dataset_name, configuration, plans_identifier))
    digest = plans_digest(plans_manager, configuration_manager, dataset_json)
    # taken before the files are checked and read: a file changed after this point is redone next time
    fingerprints = {case: files_fingerprint(files, by_name=True) for case, files in cases.items()}
    states = {case: case_state(output, case, digest, fingerprints[case]) for case in cases}
    todo = [case for case, state in states.items() if state != "done"]
    _check_cases(cases, todo, raw_dataset / UNLABELED_FOLDER, verbose)
    output.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(output / PARTIAL_FOLDER, ignore_errors=True)  # leftovers of an interrupted run
    if verbose:
        print(f"unlabelled cases of {dataset_name}: {len(cases)} in {raw_dataset / UNLABELED_FOLDER} -> {output}")
        if len(cases) > len(todo):
            print(f"skipping {len(cases) - len(todo)} finished cases")
        stale = [case for case, state in states.items() if state == "stale"]
        if stale:
            print(f"redoing {len(stale)} cases preprocessed with different plans: {_listed(stale)}")
        changed = [case for case, state in states.items() if state == "changed"]
        if changed:
            details = [f"{case} ({_changed_sources(_source_record(output, case), fingerprints[case])})"
                       for case in changed]
            print(f"redoing {len(changed)} case(s) whose source files changed since they were preprocessed: "
                  f"{_listed(details)}")
        _warn_orphans(output, cases)
    jobs = [_CaseJob(case=case, image_files=tuple(cases[case]), output_folder=str(output),
                     plans=plans_manager.plans, configuration=configuration, dataset_json=dataset_json,
                     fingerprint=fingerprints[case])
            for case in todo]
    _run_jobs(jobs, num_processes, verbose)
    shutil.rmtree(output / PARTIAL_FOLDER, ignore_errors=True)
    if verbose and not todo:
        print(f"skipped, already done: all {len(cases)} cases in {output} are preprocessed with these plans from "
              f"unchanged source files")
    elif verbose:
        print(f"done: {len(todo)} preprocessed, {len(cases) - len(todo)} already finished, in {output}")
    return sorted(cases)


def _source_record(folder: Path, case: str) -> object:
    properties = _stored_properties(folder, case)
    return None if properties is None else properties.get(SOURCE_FINGERPRINT_KEY)


def _check_cases(cases: dict[str, list[str]], todo: list[str], images_dir: Path, verbose: bool) -> None:
    """Read every case to be preprocessed with the converter's checks; raise one error listing all problems."""
    if verbose and todo:
        print(f"checking {len(todo)} unlabelled case(s) (readable, complete, finite, 3-D, one grid per case)",
              flush=True)
    problems = [problem for case in todo for problem in check_unlabeled_case(case, cases[case])]
    if problems:
        raise _problems_error(f"{len(problems)} problem(s) in the unlabelled scans in {images_dir}", problems,
                              "Nothing was preprocessed. Fix or remove these files, then re-run.")


def is_plugin_cache(folder: Path, name: str) -> bool:
    """Whether ``name`` (a file name's stem in the output folder) is one of the trainers' caches, not a case:
    it starts with :data:`PLUGIN_CACHE_PREFIX` and has no preprocessed image (``<name>.b2nd``)."""
    return name.startswith(PLUGIN_CACHE_PREFIX) and not (folder / f"{name}.b2nd").exists()


def stored_cases(folder: Path) -> set[str]:
    """The cases with a properties file (``<case>.pkl``) in ``folder``, the trainers' caches left out."""
    return {p.name[:-len(".pkl")] for p in folder.glob("*.pkl") if not is_plugin_cache(folder, p.name[:-len(".pkl")])}


def _warn_orphans(output: Path, cases: dict[str, list[str]]) -> None:
    """Mention preprocessed cases whose scans are gone; they are kept (deleting outputs is the user's call)."""
    stored = stored_cases(output)
    orphans = sorted(stored - set(cases))
    if orphans:
        print(f"note: {len(orphans)} case(s) in {output} have no scans in {UNLABELED_FOLDER} any more and are "
              f"left as they are: {_listed(orphans)}")


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=_PROG, description=f"Preprocess $nnUNet_raw/DatasetXXX/{UNLABELED_FOLDER} with the dataset's own nnU-Net "
                                f"plans into $nnUNet_preprocessed/DatasetXXX/<data_identifier>{OUTPUT_SUFFIX}.")
    parser.add_argument("-d", dest="dataset", required=True, help="dataset ID or name (e.g. 501 or Dataset501_X)")
    parser.add_argument("-c", dest="configuration", default="3d_fullres", help="configuration (default 3d_fullres)")
    parser.add_argument("-p", dest="plans_identifier", default="nnUNetPlans", help="plans identifier "
                                                                                   "(default nnUNetPlans)")
    parser.add_argument("-np", dest="num_processes", type=int, default=1, help="worker processes (default 1)")
    return parser


def main(argv: list[str] | None = None) -> None:
    """Console script; input errors are printed to stderr (no traceback) with exit status 2."""
    args = _build_parser().parse_args(argv)
    try:
        preprocess_unlabeled(args.dataset, args.configuration, args.plans_identifier, args.num_processes)
    except UnlabeledDataError as error:
        print(f"{_PROG}: error: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
