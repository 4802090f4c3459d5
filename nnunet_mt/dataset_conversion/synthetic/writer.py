"""Writing: one case's NIfTI files, the dataset's folder names and locations, and the montage."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .params import DATASET_NAME, DEFAULT_DATASET_ID, FILE_ENDING, ROLE_NAMES, ROLE_TEST, ROLE_TRAIN, ROLE_UNLABELED
from .acquisition import B_VALUE
from .subject import draw_subject_params, render_subject


def write_nifti(array_zyx: np.ndarray, path: Path, spacing: Sequence[float]) -> None:
    """Write a (z, y, x) array as compressed NIfTI with ``spacing`` (x, y, z) mm, identity direction
    (LPS) and the origin at the FOV centre."""
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(array_zyx)
    img.SetSpacing(tuple(float(s) for s in spacing))
    size_xyz = array_zyx.shape[::-1]
    img.SetOrigin(tuple(-(n - 1) / 2.0 * float(s) for n, s in zip(size_xyz, spacing)))
    sitk.WriteImage(img, str(path), useCompression=True)


def _role_folders(role: int) -> tuple[str, str | None]:
    """(images folder, labels folder or None) of a role inside the dataset folder."""
    return {ROLE_TRAIN: ("imagesTr", "labelsTr"), ROLE_TEST: ("imagesTs", "labelsTs"),
            ROLE_UNLABELED: ("imagesUnlabeled", None)}[role]


@dataclass(frozen=True)
class CaseJob:
    """What a worker needs to make one case."""

    dataset_dir: str
    seed: int
    subject_index: int
    role: int
    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    background: str = "skull-stripped"
    #: where an unannotated case's true mask goes (outside the dataset, so no trainer can read it)
    truth_dir: str | None = None


def generate_case(job: CaseJob) -> dict:
    """Draw, render and write one case; returns a JSON-able summary (parameters and volumes)."""
    params = draw_subject_params(seed=job.seed, subject_index=job.subject_index, role=job.role,
                                 shape=job.shape, spacing=job.spacing)
    rendered = render_subject(params, background=job.background)
    images_dir, labels_dir = _role_folders(job.role)
    root = Path(job.dataset_dir)
    write_nifti(rendered.dwi, root / images_dir / f"{params.case_id}_0000{FILE_ENDING}", job.spacing)
    write_nifti(rendered.b0, root / images_dir / f"{params.case_id}_0001{FILE_ENDING}", job.spacing)
    if labels_dir is not None:
        write_nifti(rendered.label, root / labels_dir / f"{params.case_id}{FILE_ENDING}", job.spacing)
    elif job.truth_dir is not None:
        write_nifti(rendered.label, Path(job.truth_dir) / f"{params.case_id}{FILE_ENDING}", job.spacing)
    return {"case_id": params.case_id, "role": ROLE_NAMES[job.role], "labelled": labels_dir is not None,
            "label_volume_ml": round(rendered.label_volume_ml, 3),
            "lesion_volumes_ml": [round(v, 3) for v in rendered.lesion_volumes_ml],
            "params": asdict(params)}


def _lesion_slice(label: np.ndarray, dwi: np.ndarray) -> int:
    """Slice with the largest labelled area, else the slice with the most brain."""
    area = label.reshape(label.shape[0], -1).sum(1)
    if area.max() > 0:
        return int(area.argmax())
    return int((dwi > 0).reshape(dwi.shape[0], -1).sum(1).argmax())


def write_montage(dataset_dir: Path, path: Path, max_subjects: int = 4) -> None:
    """PNG montage of a few annotated training subjects: DWI, b0, ADC (from the two channels) and DWI
    with the label outline, on the slice with the largest lesion area.

    Display is radiological (patient left on the image right, anterior at the top), matching the
    LPS array axes: rows = y (anterior first), columns = x (right to left of the patient).
    """
    import SimpleITK as sitk
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    cases = []
    for images_dir, labels_dir in (("imagesTr", "labelsTr"), ("imagesTs", "labelsTs"), ("imagesUnlabeled", None)):
        for f in sorted((dataset_dir / images_dir).glob(f"*_0000{FILE_ENDING}")):
            if len(cases) < max_subjects:
                cases.append((f.name[:-len(f"_0000{FILE_ENDING}")], dataset_dir / images_dir, labels_dir))
    if not cases:
        return
    fig = Figure(figsize=(12, 3.1 * len(cases)), dpi=90, facecolor="black")
    FigureCanvasAgg(fig)
    for row, (case, images_dir, labels_dir) in enumerate(cases):
        dwi = sitk.GetArrayFromImage(sitk.ReadImage(str(images_dir / f"{case}_0000{FILE_ENDING}")))
        b0 = sitk.GetArrayFromImage(sitk.ReadImage(str(images_dir / f"{case}_0001{FILE_ENDING}")))
        label = np.zeros(dwi.shape, np.uint8)
        if labels_dir is not None:
            label = sitk.GetArrayFromImage(sitk.ReadImage(str(dataset_dir / labels_dir / f"{case}{FILE_ENDING}")))
        z = _lesion_slice(label, dwi)
        brain = dwi[z] > 0
        with np.errstate(divide="ignore", invalid="ignore"):
            adc = np.where(brain, np.log(np.maximum(b0[z], 1e-6) / np.maximum(dwi[z], 1e-6)) / B_VALUE, 0.0)
        vol_ml = float(label.sum()) * np.prod(sitk.ReadImage(str(images_dir / f"{case}_0000{FILE_ENDING}")
                                                             ).GetSpacing()) / 1000.0
        panels = [(dwi[z], "DWI b=1000", np.percentile(dwi[dwi > 0], 99.5)),
                  (b0[z], "b0", np.percentile(b0[b0 > 0], 99.5)),
                  (adc * 1e3, "ADC (10^-3 mm2/s)", 3.0),
                  (dwi[z], f"DWI + label ({vol_ml:.1f} mL)" if labels_dir else "DWI (unlabelled)",
                   np.percentile(dwi[dwi > 0], 99.5))]
        for col, (img, title, vmax) in enumerate(panels):
            ax = fig.add_subplot(len(cases), 4, row * 4 + col + 1)
            ax.imshow(img, cmap="gray", vmin=0.0, vmax=float(vmax), interpolation="nearest")
            if col == 3 and label[z].any():
                ax.contour(label[z], levels=[0.5], colors="red", linewidths=0.8)
            ax.set_title(f"{case} z={z}: {title}" if col == 0 else title, color="white", fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(str(path), facecolor="black")


def dataset_folder_name(dataset_id: int) -> str:
    """nnU-Net dataset folder name, e.g. Dataset990_SyntheticStrokeDWI."""
    return f"Dataset{dataset_id:03d}_{DATASET_NAME}"


def unlabeled_truth_folder(raw_root: str | Path, dataset_id: int = DEFAULT_DATASET_ID) -> Path:
    """Where the generator writes the true masks of the unannotated scans: beside the nnU-Net raw
    folder, never inside it (``<raw_root>_truth/DatasetXXX_Name/labelsUnlabeled``: one per raw folder,
    so two raw folders side by side never share it), where no trainer or nnU-Net command finds them;
    only diagnostics read them."""
    root = Path(raw_root).expanduser().resolve()
    return root.parent / f"{root.name}_truth" / dataset_folder_name(int(dataset_id)) / "labelsUnlabeled"


def _check_target(raw_root: Path, dataset_id: int, overwrite: bool) -> Path:
    """Target folder; refuse an existing one (unless overwrite) and a different dataset with the same id."""
    target = raw_root / dataset_folder_name(dataset_id)
    if target.exists() and not overwrite:
        raise FileExistsError(f"Dataset folder {target} already exists; pass overwrite=True "
                              f"(CLI: --overwrite) to replace it.")
    if raw_root.is_dir():
        clashes = [p.name for p in raw_root.iterdir()
                   if p.is_dir() and p.name.startswith(f"Dataset{dataset_id:03d}_") and p != target]
        if clashes:
            raise FileExistsError(f"{raw_root} already holds dataset id {dataset_id} as {clashes}; nnU-Net "
                                  f"could not tell them apart. Choose another dataset id.")
    return target
