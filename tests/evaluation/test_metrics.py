import math

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_mt.evaluation.metrics import METRIC_KEYS, case_metrics, evaluate_cases

ISO = (1.0, 1.0, 1.0)


def box(shape, z, y, x) -> np.ndarray:
    """Label array with 1 in the half-open box z=(z0, z1), y=(y0, y1), x=(x0, x1)."""
    a = np.zeros(shape, np.uint8)
    a[z[0]:z[1], y[0]:y[1], x[0]:x[1]] = 1
    return a


def test_dice_of_two_overlapping_boxes():
    ref = box((10, 10, 10), (2, 6), (2, 6), (2, 6))  # 4x4x4 = 64 voxels
    pred = box((10, 10, 10), (2, 6), (2, 6), (4, 8))  # shifted by 2 in x: overlap 4x4x2 = 32
    m = case_metrics(pred, ref, ISO)
    assert m["dice"] == pytest.approx(2 * 32 / (64 + 64))  # 0.5
    assert set(m) == set(METRIC_KEYS)


def test_only_the_requested_label_counts():
    ref = box((6, 6, 6), (1, 3), (1, 3), (1, 3)) * 2  # label 2
    pred = ref.copy()
    pred[4, 4, 4] = 1  # another label: ignored for label 2
    assert case_metrics(pred, ref, ISO, label=2)["dice"] == 1.0
    assert math.isnan(case_metrics(pred, ref, ISO, label=3)["dice"])


def test_volumes_and_avd_in_ml_with_anisotropic_spacing():
    spacing_zyx = (6.5, 0.96, 0.96)
    voxel_ml = 6.5 * 0.96 * 0.96 / 1000  # 0.0059904 mL
    ref = box((8, 30, 30), (2, 4), (5, 15), (5, 15))  # 2*10*10 = 200 voxels
    pred = box((8, 30, 30), (2, 5), (5, 15), (5, 20))  # 3*10*15 = 450 voxels
    m = case_metrics(pred, ref, spacing_zyx)
    assert m["ref_ml"] == pytest.approx(200 * 0.0059904)
    assert m["pred_ml"] == pytest.approx(450 * voxel_ml)
    assert m["avd_ml"] == pytest.approx(250 * 0.0059904)  # 1.4976 mL


def test_lesion_f1_one_hit_one_missed_one_false_positive():
    shape = (10, 30, 30)
    ref = box(shape, (2, 5), (2, 6), (2, 6)) | box(shape, (2, 5), (20, 25), (20, 25))  # two lesions
    pred = box(shape, (3, 4), (3, 5), (3, 5))  # inside the first lesion: hit
    pred |= box(shape, (6, 8), (10, 13), (20, 23))  # touches no lesion: false positive
    m = case_metrics(pred, ref, ISO)
    assert (m["lesions_ref"], m["lesions_pred"]) == (2, 2)
    assert (m["lesions_tp"], m["lesions_fp"], m["lesions_fn"]) == (1, 1, 1)
    assert m["lesion_f1"] == pytest.approx(0.5)  # 2*1 / (2*1 + 1 + 1)


def test_lesions_touching_at_a_corner_are_one_component():
    ref = np.zeros((5, 5, 5), np.uint8)
    ref[1, 1, 1] = ref[2, 2, 2] = 1  # diagonal neighbours: connected under 26-connectivity
    pred = np.zeros_like(ref)
    pred[2, 2, 2] = 1
    m = case_metrics(pred, ref, ISO)
    assert m["lesions_ref"] == 1 and m["lesions_tp"] == 1 and m["lesion_f1"] == 1.0


@pytest.mark.parametrize("k, s", [(1, 1.0), (2, 0.96), (3, 1.5)])
def test_hd95_of_a_shifted_cube(k, s):
    # every surface voxel of a cube lies within k*s of the cube shifted by k voxels along x (its shifted
    # copy is a surface voxel of the other cube), and the whole face leading the shift (1/6 of the
    # surface, more than 5 %) is exactly k*s from it: both directed 95th percentiles equal k*s
    shape = (24, 24, 24)
    ref = box(shape, (6, 16), (6, 16), (4, 14))
    pred = box(shape, (6, 16), (6, 16), (4 + k, 14 + k))
    spacing_zyx = (2.0, 1.7, s)  # other axes coarser: a distance along them can't tie with k*s
    assert case_metrics(pred, ref, spacing_zyx)["hd95_mm"] == pytest.approx(k * s, rel=1e-5)


def test_hd95_ignores_a_single_far_outlier_voxel():
    # the maximum Hausdorff distance would be the outlier's 16 mm; the 95th percentile stays at the shift
    shape = (24, 40, 24)
    ref = box(shape, (6, 16), (6, 16), (4, 14))
    pred = box(shape, (6, 16), (6, 16), (5, 15))
    pred[10, 31, 9] = 1  # 16 voxels beyond the cubes' last y row (y = 15)
    m = case_metrics(pred, ref, ISO)
    assert m["hd95_mm"] == pytest.approx(1.0, rel=1e-5)
    assert m["lesions_fp"] == 1


def test_empty_conventions():
    empty = np.zeros((4, 6, 6), np.uint8)
    lesion = box((4, 6, 6), (1, 3), (1, 3), (1, 3))
    both = case_metrics(empty, empty, ISO)
    assert math.isnan(both["dice"]) and math.isnan(both["hd95_mm"]) and math.isnan(both["lesion_f1"])
    assert both["avd_ml"] == 0.0 and both["lesions_ref"] == both["lesions_pred"] == 0
    missed = case_metrics(empty, lesion, ISO)
    assert missed["dice"] == 0.0 and math.isnan(missed["hd95_mm"]) and missed["lesion_f1"] == 0.0
    assert missed["lesions_fn"] == 1 and missed["avd_ml"] == pytest.approx(8 / 1000)
    spurious = case_metrics(lesion, empty, ISO)
    assert spurious["dice"] == 0.0 and math.isnan(spurious["hd95_mm"]) and spurious["lesion_f1"] == 0.0
    assert spurious["lesions_fp"] == 1


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match=r"\(4, 6, 6\).*\(4, 6, 7\)"):
        case_metrics(np.zeros((4, 6, 6)), np.zeros((4, 6, 7)), ISO)


def write_label(array: np.ndarray, path, spacing_xyz=(0.96, 0.96, 6.5)):
    image = sitk.GetImageFromArray(array.astype(np.uint8))
    image.SetSpacing(spacing_xyz)
    sitk.WriteImage(image, str(path))
    return path


def test_evaluate_cases_reads_spacing_from_the_reference(tmp_path):
    ref = box((6, 20, 20), (1, 3), (5, 10), (5, 10))  # 50 voxels of 0.96*0.96*6.5 mm
    pred = box((6, 20, 20), (1, 3), (5, 10), (5, 12))  # 70 voxels
    out = evaluate_cases({"a": write_label(pred, tmp_path / "pred_a.nii.gz")},
                         {"a": write_label(ref, tmp_path / "ref_a.nii.gz")})
    assert list(out) == ["a"]
    assert out["a"]["dice"] == pytest.approx(2 * 50 / 120)
    assert out["a"]["avd_ml"] == pytest.approx(20 * 0.96 * 0.96 * 6.5 / 1000, rel=1e-6)
    # the 2-voxel shift of the x face is along x (0.96 mm): spacing reversed to z, y, x correctly
    assert out["a"]["hd95_mm"] == pytest.approx(2 * 0.96, rel=1e-5)


def test_evaluate_cases_names_the_mismatching_file(tmp_path):
    ref = box((6, 20, 20), (1, 3), (5, 10), (5, 10))
    refs = {"a": write_label(ref, tmp_path / "ref_a.nii.gz")}
    wrong_shape = write_label(ref[:, :, :18], tmp_path / "pred_shape.nii.gz")
    with pytest.raises(ValueError, match=r"pred_shape\.nii\.gz.*shape"):
        evaluate_cases({"a": wrong_shape}, refs)
    wrong_spacing = write_label(ref, tmp_path / "pred_spacing.nii.gz", spacing_xyz=(1.0, 1.0, 6.5))
    with pytest.raises(ValueError, match=r"pred_spacing\.nii\.gz.*spacing"):
        evaluate_cases({"a": wrong_spacing}, refs)
    with pytest.raises(ValueError, match=r"no prediction .*a \(.*ref_a\.nii\.gz\)"):
        evaluate_cases({}, refs)
