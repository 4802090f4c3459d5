"""Behaviour tests of the synthetic stroke DWI cohort (nnunet_mt.dataset_conversion.synthetic_stroke_dwi).

Small geometry (96 x 96 x 12 voxels at 2.4 x 2.4 x 11.375 mm: the paper's field of view, coarser) keeps
the file fast; one case at the paper's default geometry checks size and spacing.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from nnunet_mt.dataset_conversion import synthetic_stroke_dwi as sdwi

SMALL_SHAPE = (96, 96, 12)  # (x, y, z) voxels
SMALL_SPACING = (2.4, 2.4, 11.375)  # (x, y, z) mm; same FOV as 240 x 240 x 21 at 0.96 x 0.96 x 6.5
SEED = 3
COUNTS = {"num_train": 3, "num_test": 2, "num_unlabeled": 2}


def _read(path: Path) -> tuple[np.ndarray, sitk.Image]:
    img = sitk.ReadImage(str(path))
    return sitk.GetArrayFromImage(img), img


def _labelled_cases(folder: Path) -> list[tuple[Path, Path, Path]]:
    """(DWI, b0, label) paths of every annotated case (Tr and Ts)."""
    out = []
    for images, labels in (("imagesTr", "labelsTr"), ("imagesTs", "labelsTs")):
        for lab in sorted((folder / labels).glob("*.nii.gz")):
            case = lab.name[:-len(".nii.gz")]
            out.append((folder / images / f"{case}_0000.nii.gz", folder / images / f"{case}_0001.nii.gz", lab))
    return out


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("raw_small")
    return sdwi.generate_synthetic_stroke_dwi(root, dataset_id=991, shape=SMALL_SHAPE, spacing=SMALL_SPACING,
                                              seed=SEED, montage=True, **COUNTS)


@pytest.fixture(scope="module")
def default_dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("raw_default")
    return sdwi.generate_synthetic_stroke_dwi(root, num_train=1, num_test=0, num_unlabeled=0, seed=SEED,
                                              montage=False)


def test_default_geometry_matches_paper(default_dataset: Path):
    assert default_dataset.name == "Dataset990_SyntheticStrokeDWI"
    files = sorted((default_dataset / "imagesTr").glob("*.nii.gz"))
    assert [f.name for f in files] == ["SDWI_0001_0000.nii.gz", "SDWI_0001_0001.nii.gz"]
    for f in files + [default_dataset / "labelsTr" / "SDWI_0001.nii.gz"]:
        arr, img = _read(f)
        assert img.GetSize() == (240, 240, 21)
        assert np.allclose(img.GetSpacing(), (0.96, 0.96, 6.5))
        assert arr.shape == (21, 240, 240)
    assert _read(files[0])[0].dtype == np.float32
    assert _read(default_dataset / "labelsTr" / "SDWI_0001.nii.gz")[0].dtype == np.uint8


def test_layout_and_dataset_json(small_dataset: Path, monkeypatch):
    counts = {"imagesTr": COUNTS["num_train"], "imagesTs": COUNTS["num_test"],
              "imagesUnlabeled": COUNTS["num_unlabeled"]}
    for folder, n in counts.items():
        names = sorted(f.name for f in (small_dataset / folder).iterdir())
        cases = sorted({name.rsplit("_", 1)[0] for name in names})
        assert len(cases) == n
        # both channels for every case, nothing else
        assert names == sorted(f"{c}_{ch}.nii.gz" for c in cases for ch in ("0000", "0001"))
    for images, labels in (("imagesTr", "labelsTr"), ("imagesTs", "labelsTs")):
        cases = sorted({f.name.rsplit("_", 1)[0] for f in (small_dataset / images).iterdir()})
        assert sorted(f.name for f in (small_dataset / labels).iterdir()) == [f"{c}.nii.gz" for c in cases]
    assert not (small_dataset / "labelsUnlabeled").exists()
    assert all(f.name.startswith("SDWI_U") for f in (small_dataset / "imagesUnlabeled").iterdir())

    dj = json.loads((small_dataset / "dataset.json").read_text())
    assert dj["channel_names"] == {"0": "DWI", "1": "b0"}
    assert dj["labels"] == {"background": 0, "lesion": 1}
    assert dj["numTraining"] == COUNTS["num_train"]
    assert dj["file_ending"] == ".nii.gz"
    assert dj["description"]
    assert dj["synthetic_generator"]["seed"] == SEED
    assert dj["synthetic_generator"]["shape_xyz"] == list(SMALL_SHAPE)

    # nnU-Net finds the dataset by id and sees exactly the annotated training cases.
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name
    from nnunetv2.utilities.utils import get_filenames_of_train_images_and_targets

    monkeypatch.setenv("nnUNet_raw", str(small_dataset.parent))
    assert maybe_convert_to_dataset_name(991) == "Dataset991_SyntheticStrokeDWI"
    found = get_filenames_of_train_images_and_targets(str(small_dataset), dj)
    assert sorted(found) == ["SDWI_0001", "SDWI_0002", "SDWI_0003"]
    assert all(len(v["images"]) == 2 for v in found.values())


def test_images_skull_stripped_and_aligned(small_dataset: Path):
    for folder in ("imagesTr", "imagesTs", "imagesUnlabeled"):
        for dwi_path in sorted((small_dataset / folder).glob("*_0000.nii.gz")):
            dwi, dimg = _read(dwi_path)
            b0, bimg = _read(Path(str(dwi_path).replace("_0000.nii.gz", "_0001.nii.gz")))
            assert np.isfinite(dwi).all() and np.isfinite(b0).all()
            assert dimg.GetSpacing() == bimg.GetSpacing() and dimg.GetOrigin() == bimg.GetOrigin()
            brain = dwi > 0
            # one brain mask for both channels; zero (not noise) outside, positive inside
            assert np.array_equal(brain, b0 > 0)
            assert dwi.min() == 0.0 and b0.min() == 0.0
            assert 0.15 < brain.mean() < 0.6  # a brain, not the whole FOV or a speck
            assert not brain[:, 0, :].any() and not brain[:, :, 0].any()  # FOV border is background
            # S = S0 exp(-b ADC): apparent ADC of parenchyma ~0.7-0.9e-3 mm2/s; the brightest b0 voxels
            # (T2-like contrast: CSF) have a CSF-like high ADC, i.e. they are dark on DWI.
            adc = np.log(b0[brain] / dwi[brain]) / 1000.0
            assert 0.5e-3 < np.median(adc) < 1.2e-3
            assert np.median(adc[b0[brain] >= np.percentile(b0[brain], 97)]) > 1.5e-3


def test_render_subject_brain_mask_contract():
    params = sdwi.draw_subject_params(seed=SEED, subject_index=7, role=sdwi.ROLE_UNLABELED, shape=SMALL_SHAPE,
                                      spacing=SMALL_SPACING)
    r = sdwi.render_subject(params)
    for img in (r.dwi, r.b0):
        assert img.shape == (12, 96, 96) and img.dtype == np.float32
        assert (img[r.brain_mask] > 0).all()
        assert (img[~r.brain_mask] == 0).all()
    assert r.label.dtype == np.uint8 and set(np.unique(r.label)) <= {0, 1}
    assert not (r.label.astype(bool) & ~r.brain_mask).any()


def test_noisy_background_is_rician_noise_over_the_whole_field_of_view():
    """--background noisy: no stripping; outside the brain the magnitude of pure complex Gaussian noise
    (Rayleigh: mean sigma sqrt(pi/2)), so nnU-Net's crop to non-zero keeps the whole field of view; the
    brain and label are those of the stripped rendering."""
    params = sdwi.draw_subject_params(seed=SEED, subject_index=7, role=sdwi.ROLE_TRAIN, shape=SMALL_SHAPE,
                                      spacing=SMALL_SPACING)
    stripped = sdwi.render_subject(params)
    noisy = sdwi.render_subject(params, background="noisy")
    assert np.array_equal(noisy.label, stripped.label) and np.array_equal(noisy.brain_mask, stripped.brain_mask)
    sigma_b0 = params.gain * params.s0["wm"] / params.snr_b0
    outside = ~ndimage.binary_dilation(stripped.brain_mask, iterations=3)  # away from partial-volume edges
    for img in (noisy.dwi, noisy.b0):
        assert img.dtype == np.float32 and (img > 0).all()  # nothing is exactly zero any more
    rayleigh_mean = sigma_b0 * np.sqrt(np.pi / 2)
    assert noisy.b0[outside].mean() == pytest.approx(rayleigh_mean, rel=0.05)
    # inside, the same signal model: medians close to the stripped image's
    inside = stripped.brain_mask
    assert np.median(noisy.b0[inside]) == pytest.approx(np.median(stripped.b0[inside]), rel=0.05)
    with pytest.raises(ValueError, match="background"):
        sdwi.render_subject(params, background="bright")


def test_lesion_is_brighter_on_dwi_than_surroundings(small_dataset: Path, default_dataset: Path):
    cases = _labelled_cases(small_dataset) + _labelled_cases(default_dataset)
    assert len(cases) == COUNTS["num_train"] + COUNTS["num_test"] + 1
    for dwi_path, b0_path, label_path in cases:
        dwi = _read(dwi_path)[0]
        label = _read(label_path)[0].astype(bool)
        assert label.any(), label_path.name
        shell = ndimage.binary_dilation(label, structure=np.ones((1, 7, 7), bool)) & ~label & (dwi > 0)
        assert shell.sum() > 0
        assert dwi[label].mean() > dwi[shell].mean(), label_path.name


def test_label_volumes_in_range(small_dataset: Path, default_dataset: Path):
    for _, _, label_path in _labelled_cases(small_dataset) + _labelled_cases(default_dataset):
        label, img = _read(label_path)
        assert set(np.unique(label)) == {0, 1}
        volume_ml = label.sum() * np.prod(img.GetSpacing()) / 1000.0
        assert 0 < volume_ml <= 200, (label_path.name, volume_ml)
    summary = json.loads((small_dataset / "synthetic_cases.json").read_text())
    assert len(summary["cases"]) == sum(COUNTS.values())
    for case in summary["cases"]:
        assert 1 <= len(case["lesion_volumes_ml"]) <= 6  # unlabeled scans carry lesions too
        assert sum(case["lesion_volumes_ml"]) > 0


def test_volume_distribution_of_drawn_parameters():
    volumes, counts = [], []
    for i in range(1, 1201):
        p = sdwi.draw_subject_params(seed=11, subject_index=i, role=sdwi.ROLE_UNLABELED)
        volumes.append(p.total_lesion_volume_ml)
        counts.append(len(p.lesions))
    v = np.array(volumes)
    assert 0.25 <= (v < 10).mean() <= 0.45  # about a third small
    assert 0.02 <= (v < 2).mean() <= 0.15  # some very small
    assert 120 <= v.max() <= 151  # tail up to ~150 mL, never above
    assert min(counts) >= 1 and max(counts) <= 6
    assert 0.5 < np.mean([c <= 3 for c in counts]) < 1.0  # mostly 1-3 lesions, some embolic showers


def test_parameters_replay_and_differ():
    a = sdwi.draw_subject_params(seed=SEED, subject_index=2, role=sdwi.ROLE_TRAIN)
    assert a == sdwi.draw_subject_params(seed=SEED, subject_index=2, role=sdwi.ROLE_TRAIN)
    assert a != sdwi.draw_subject_params(seed=SEED, subject_index=2, role=sdwi.ROLE_TEST)
    assert a != sdwi.draw_subject_params(seed=SEED + 1, subject_index=2, role=sdwi.ROLE_TRAIN)


def test_same_seed_identical_files_across_worker_counts(small_dataset: Path, tmp_path: Path):
    # A subset of the same cohort, made by 2 worker processes, must reproduce the files bit for bit.
    other = sdwi.generate_synthetic_stroke_dwi(tmp_path, dataset_id=991, num_train=2, num_test=0, num_unlabeled=1,
                                               shape=SMALL_SHAPE, spacing=SMALL_SPACING, seed=SEED, num_workers=2,
                                               montage=False)
    rel = ["imagesTr/SDWI_0001_0000.nii.gz", "imagesTr/SDWI_0002_0001.nii.gz", "labelsTr/SDWI_0002.nii.gz",
           "imagesUnlabeled/SDWI_U0001_0000.nii.gz"]
    for r in rel:
        assert np.array_equal(_read(other / r)[0], _read(small_dataset / r)[0]), r
        assert (other / r).read_bytes() == (small_dataset / r).read_bytes(), r


def test_different_seed_gives_different_images(small_dataset: Path):
    same = _read(small_dataset / "imagesTr/SDWI_0001_0000.nii.gz")[0]
    params = sdwi.draw_subject_params(seed=SEED + 1, subject_index=1, role=sdwi.ROLE_TRAIN, shape=SMALL_SHAPE,
                                      spacing=SMALL_SPACING)
    assert not np.array_equal(sdwi.render_subject(params).dwi, same)


def test_montage_is_png(small_dataset: Path):
    data = (small_dataset / "montage.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    from PIL import Image

    with Image.open(small_dataset / "montage.png") as im:
        assert im.size[0] > 500 and im.size[1] > 200


def test_refuses_overwrite_and_cli(tmp_path: Path, monkeypatch, capsys):
    tiny = ["--num-train", "1", "--num-test", "0", "--num-unlabeled", "0", "--shape", "48", "48", "6",
            "--spacing", "4.8", "4.8", "22.75", "--no-montage", "-d", "992"]
    monkeypatch.delenv("nnUNet_raw", raising=False)
    with pytest.raises(SystemExit) as e:
        sdwi.main(tiny)
    assert e.value.code == 2 and "nnUNet_raw" in capsys.readouterr().err

    monkeypatch.setenv("nnUNet_raw", str(tmp_path))
    sdwi.main(tiny)
    target = tmp_path / "Dataset992_SyntheticStrokeDWI"
    assert (target / "labelsTr" / "SDWI_0001.nii.gz").is_file()
    assert "1/1 subjects" in capsys.readouterr().out  # progress is printed
    with pytest.raises(SystemExit) as e:
        sdwi.main(tiny)
    assert e.value.code == 1 and str(target) in capsys.readouterr().err
    with pytest.raises(FileExistsError, match="Dataset992_SyntheticStrokeDWI"):
        sdwi.generate_synthetic_stroke_dwi(tmp_path, dataset_id=992, num_train=1, num_test=0, num_unlabeled=0,
                                           shape=(48, 48, 6), spacing=(4.8, 4.8, 22.75), montage=False)
    (target / "marker").write_text("old")
    sdwi.generate_synthetic_stroke_dwi(tmp_path, dataset_id=992, num_train=1, num_test=0, num_unlabeled=0,
                                       shape=(48, 48, 6), spacing=(4.8, 4.8, 22.75), montage=False, overwrite=True)
    assert not (target / "marker").exists() and (target / "dataset.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Dataset992_SyntheticStrokeDWI"]  # no temp leftovers


def test_interrupted_run_leaves_nothing(tmp_path: Path, monkeypatch):
    calls = []

    def failing(job):
        calls.append(job)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(job)

    real = sdwi.generate_case
    monkeypatch.setattr(sdwi, "generate_case", failing)
    with pytest.raises(KeyboardInterrupt):
        sdwi.generate_synthetic_stroke_dwi(tmp_path, dataset_id=993, num_train=3, num_test=0, num_unlabeled=0,
                                           shape=(48, 48, 6), spacing=(4.8, 4.8, 22.75), montage=False)
    assert list(tmp_path.iterdir()) == []


def test_unlabeled_truth_written_outside_raw_root(small_dataset: Path):
    """The unannotated scans' true masks exist for diagnostics, but outside nnUNet_raw, where no trainer
    looks; each matches the lesion volume the generator recorded and the scan's geometry."""
    raw_root = small_dataset.parent
    truth = sdwi.unlabeled_truth_folder(raw_root, 991)
    assert truth == raw_root.parent / f"{raw_root.name}_truth" / "Dataset991_SyntheticStrokeDWI" / "labelsUnlabeled"
    assert raw_root.resolve() not in truth.resolve().parents
    cases = json.loads((small_dataset / "synthetic_cases.json").read_text())["cases"]
    unlabeled = {c["case_id"]: c for c in cases if c["role"] == "unlabeled"}
    assert sorted(f.name for f in truth.iterdir()) == [f"{c}.nii.gz" for c in sorted(unlabeled)]
    voxel_ml = float(np.prod(SMALL_SPACING)) / 1000.0
    for case, summary in unlabeled.items():
        mask, img = _read(truth / f"{case}.nii.gz")
        dwi, dwi_img = _read(small_dataset / "imagesUnlabeled" / f"{case}_0000.nii.gz")
        assert mask.shape == dwi.shape and np.allclose(img.GetSpacing(), dwi_img.GetSpacing())
        assert set(np.unique(mask)) <= {0, 1}
        assert mask.sum() * voxel_ml == pytest.approx(summary["label_volume_ml"], abs=1e-3)
    assert not list(truth.parent.glob(".*tmp*"))
