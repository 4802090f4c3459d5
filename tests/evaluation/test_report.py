from __future__ import annotations

import csv
import json
import math
import re

import numpy as np
import pytest
import SimpleITK as sitk
from matplotlib.image import imread
from scipy import stats

from nnunet_mt.evaluation.metrics import case_metrics, evaluate_cases
from nnunet_mt.evaluation.report import (CountResult, choose_overlay_cases, dice_summary, metric_summary,
                                         statistics_rows, write_report)

SHAPE = (20, 40, 40)
SPACING_XYZ = (0.96, 0.96, 2.0)
METHODS = ["DeepMedic", "PiModel", "MeanTeacher"]
REFERENCE = "MeanTeacher"
# lesion boxes (z, y, x ranges) of the 4 test cases: volumes 2*3*10 < 3*6*10 < 4*8*12 < 6*12*8 voxels
LESIONS = {"case_a": ((9, 11), (18, 21), (15, 25)), "case_b": ((8, 11), (10, 16), (12, 22)),
           "case_c": ((8, 12), (20, 28), (14, 26)), "case_d": ((7, 13), (14, 26), (16, 24))}
# predictions = reference lesion shifted along x by this many voxels (Dice = 1 - shift / x-length):
# DeepMedic always 1-2 voxels further off than the mean teacher (consistently worse: p < 0.05),
# PiModel better on some cases and worse on others (p > 0.05); at 20 scans PiModel has the best mean
SHIFTS = {10: {"MeanTeacher": [1, 1, 1, 1], "DeepMedic": [3, 3, 3, 3], "PiModel": [0, 2, 0, 2]},
          20: {"MeanTeacher": [1, 1, 1, 1], "DeepMedic": [2, 2, 2, 2], "PiModel": [0, 0, 2, 0]}}
OVERLAY_RED = (1.0, 0.0, 0.0)


def _write(array, path, dtype):
    image = sitk.GetImageFromArray(array.astype(dtype))
    image.SetSpacing(SPACING_XYZ)
    sitk.WriteImage(image, str(path))
    return path


def _reference(case):
    ref = np.zeros(SHAPE, np.uint8)
    (z0, z1), (y0, y1), (x0, x1) = LESIONS[case]
    ref[z0:z1, y0:y1, x0:x1] = 1
    return ref


def _image(ref, rng):
    z, y, x = np.meshgrid(*[np.arange(s) for s in SHAPE], indexing="ij")
    head = ((z - 10) / 9.5) ** 2 + ((y - 20) / 18) ** 2 + ((x - 20) / 17) ** 2 < 1
    return (head * (1.0 + ref + rng.normal(0, 0.1, SHAPE))) * head


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    rng = np.random.default_rng(0)
    cases = sorted(LESIONS)
    images, references = {}, {}
    for case in cases:
        ref = _reference(case)
        references[case] = _write(ref, root / f"{case}.nii.gz", np.uint8)
        images[case] = _write(_image(ref, rng), root / f"{case}_0000.nii.gz", np.float32)
    results = []
    for count, shifts in SHIFTS.items():
        predictions = {}
        for method in METHODS:
            folder = root / f"n{count}" / method
            folder.mkdir(parents=True)
            predictions[method] = {}
            for case, shift in zip(cases, shifts[method]):
                pred = np.roll(_reference(case), shift, axis=2)
                if method == "PiModel" and case == "case_b":
                    pred[2:4, 30:33, 30:33] = 1  # a false-positive blob
                predictions[method][case] = _write(pred, folder / f"{case}.nii.gz", np.uint8)
        metrics = {m: evaluate_cases(predictions[m], references) for m in METHODS}
        logs = {}
        if count == 10:  # a training log for the first count only: Fig. 2 is skipped for the second
            logs["MeanTeacher"] = root / "mean_teacher_log.json"
            logs["MeanTeacher"].write_text(json.dumps({
                "step": [1, 2, 3, 4], "Ls": [0.9, 0.7, 0.6, 0.5], "Lc": [0.1, 0.1, 0.05, 0.05],
                "beta": [0.0, 0.1, 0.2, 0.3], "alpha": [0.99, 0.99, 0.999, 0.999],
                "dice_step": [2, 4], "dice_student": [0.3, 0.5], "dice_teacher": [0.35, 0.55]}))
        results.append(CountResult(count=count, images=images, references=references, predictions=predictions,
                                   metrics=metrics, training_logs=logs))
    out = root / "out"
    files = write_report(out, results, METHODS, reference_method=REFERENCE, title="Test report",
                         notes="Synthetic numbers.")
    return out, files, {r.count: r for r in results}


def _dice(result, method):
    return [result.metrics[method][c]["dice"] for c in sorted(LESIONS)]


def _read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_every_file_is_written(report):
    out, files, _ = report
    expected = {"table_dice.md", "table_dice.csv", "per_case_metrics.csv", "statistics.csv", "statistics.md",
                "report.md", "boxplot_dice_n10.png", "boxplot_dice_n20.png", "fig2_training_dice_n10.png",
                "fig3_overlays_n10.png", "fig3_overlays_n20.png"}
    assert set(files) == expected
    for name, path in files.items():
        assert path == out / name and path.is_file() and path.stat().st_size > 0
    assert not (out / "fig2_training_dice_n20.png").exists()


def test_the_synthetic_methods_do_what_the_test_relies_on(report):
    _, _, results = report
    # MeanTeacher: x-lengths 10, 10, 12, 8 shifted by 1 voxel
    assert _dice(results[10], "MeanTeacher") == pytest.approx([0.9, 0.9, 11 / 12, 7 / 8])
    p_worse = stats.ttest_rel(_dice(results[10], REFERENCE), _dice(results[10], "DeepMedic")).pvalue
    p_random = stats.ttest_rel(_dice(results[10], REFERENCE), _dice(results[10], "PiModel")).pvalue
    assert p_worse < 0.05 < p_random


def _parse_table(text):
    rows = [line for line in text.splitlines() if line.startswith("|")]
    header = [c.strip() for c in rows[0].strip("|").split("|")]
    table = {}
    for line in rows[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        table[cells[0]] = dict(zip(header[1:], cells[1:]))
    return header, table


def test_dice_table_bold_and_asterisk(report):
    out, _, results = report
    header, table = _parse_table((out / "table_dice.md").read_text())
    assert header == ["Method", "10 annotated", "20 annotated"]
    assert list(table) == METHODS
    n_star = n_plain = 0
    for count, result in results.items():
        means = {m: np.mean(_dice(result, m)) for m in METHODS}
        for m in METHODS:
            cell = table[m][f"{count} annotated"]
            match = re.fullmatch(r"(\*\*)?([0-9.]+) ± ([0-9.]+)(\*\*)?(\\\*)?", cell)
            assert match, cell
            bold, mean, std, star = match.group(1), float(match.group(2)), float(match.group(3)), match.group(5)
            assert mean == pytest.approx(means[m], abs=5e-5)
            assert std == pytest.approx(np.std(_dice(result, m), ddof=1), abs=5e-5)
            assert bool(bold) == (means[m] == max(means.values())), (count, m, cell)
            if m == REFERENCE:
                assert not star
                continue
            p = stats.ttest_rel(_dice(result, REFERENCE), _dice(result, m)).pvalue
            assert bool(star) == (p < 0.05), (count, m, cell, p)
            n_star += bool(star)
            n_plain += not star
    assert n_star >= 1 and n_plain >= 1  # both branches were exercised
    assert table["PiModel"]["20 annotated"].startswith("**")  # the best mean need not be the reference's


def test_dice_csv_matches_numpy_and_scipy(report):
    out, _, results = report
    rows = _read_csv(out / "table_dice.csv")
    assert list(rows[0]) == ["count", "method", "n_cases", "dice_mean", "dice_std", "p_ttest_vs_reference",
                             "p_wilcoxon_vs_reference", "best"]
    assert len(rows) == 2 * len(METHODS)
    for row in rows:
        result, m = results[int(row["count"])], row["method"]
        dice = _dice(result, m)
        assert int(row["n_cases"]) == 4
        assert float(row["dice_mean"]) == pytest.approx(np.mean(dice), rel=1e-12)
        assert float(row["dice_std"]) == pytest.approx(np.std(dice, ddof=1), rel=1e-12)
        if m == REFERENCE:
            assert math.isnan(float(row["p_ttest_vs_reference"]))
        else:
            ref = _dice(result, REFERENCE)
            assert float(row["p_ttest_vs_reference"]) == pytest.approx(stats.ttest_rel(ref, dice).pvalue)
            assert float(row["p_wilcoxon_vs_reference"]) == pytest.approx(stats.wilcoxon(ref, dice).pvalue)
        means = [np.mean(_dice(result, x)) for x in METHODS]
        assert (row["best"] == "True") == (np.mean(dice) == max(means))


def test_per_case_and_statistics_csv(report):
    out, _, results = report
    per_case = _read_csv(out / "per_case_metrics.csv")
    assert len(per_case) == 2 * len(METHODS) * 4
    assert {"dice", "hd95_mm", "avd_ml", "lesion_f1", "lesions_fp"} <= set(per_case[0])
    fp_row = next(r for r in per_case if (r["count"], r["method"], r["case"]) == ("10", "PiModel", "case_b"))
    assert int(fp_row["lesions_fp"]) == 1 and float(fp_row["lesion_f1"]) == pytest.approx(2 / 3)
    assert float(fp_row["dice"]) == results[10].metrics["PiModel"]["case_b"]["dice"]

    rows = _read_csv(out / "statistics.csv")
    assert len(rows) == 2 * 2 * 4  # counts x non-reference methods x metrics
    row = next(r for r in rows if (r["count"], r["method"], r["metric"]) == ("10", "DeepMedic", "hd95_mm"))
    ref = [results[10].metrics[REFERENCE][c]["hd95_mm"] for c in sorted(LESIONS)]
    other = [results[10].metrics["DeepMedic"][c]["hd95_mm"] for c in sorted(LESIONS)]
    assert float(row["mean_difference"]) == pytest.approx(np.mean(ref) - np.mean(other))
    assert float(row["p_w"]) == pytest.approx(stats.wilcoxon(ref, other).pvalue)
    assert "p (t-test)" in (out / "statistics.md").read_text()


def test_report_md_links_figures_and_explains(report):
    out, files, _ = report
    text = (out / "report.md").read_text()
    assert text.startswith("# Test report") and "Synthetic numbers." in text
    for name in files:
        if name.endswith(".png"):
            assert f"({name})" in text
    assert "Fig. 2 (training Dice): skipped" in text
    assert "p < 0.05" in text and "Bold" in text and "ddof = 1" in text


def test_figures_are_readable(report):
    out, files, _ = report
    for name in files:
        if name.endswith(".png"):
            pixels = imread(files[name])
            assert pixels.shape[0] >= 400 and pixels.shape[1] >= 600, (name, pixels.shape)
            assert pixels[..., :3].var() > 0, name
    overlay = imread(out / "fig3_overlays_n10.png")[..., :3]
    assert overlay.var() > 0.001
    red = (overlay[..., 0] > 0.9) & (overlay[..., 1] < 0.15) & (overlay[..., 2] < 0.15)
    assert red.sum() > 50  # the contours of the segmentations


def test_overlay_cases_are_the_smallest_and_largest_lesion():
    assert choose_overlay_cases({"a": 0.0, "b": 2.0, "c": 0.5, "d": 1.0}) == ["c", "b"]
    assert choose_overlay_cases({"a": 0.0, "b": 2.0}) == ["b"]
    assert choose_overlay_cases({"a": 0.0}) == []


def test_missing_method_is_an_error(report, tmp_path):
    _, _, results = report
    broken = CountResult(count=10, images={}, references={}, predictions={},
                         metrics={m: results[10].metrics[m] for m in METHODS if m != "PiModel"})
    with pytest.raises(ValueError, match="count 10: no metrics for method 'PiModel'"):
        write_report(tmp_path, [broken], METHODS, reference_method=REFERENCE)
    with pytest.raises(ValueError, match="reference method 'Mean' is not among"):
        write_report(tmp_path, [results[10]], METHODS, reference_method="Mean")


# An empty prediction of a lesion scores Dice 0, is counted as a miss beside HD95 (which
# it has none of), and every method's mean runs over the same cases. Hand-computed on three cases:
#
# ==========  =====================  ===================================  ==========================
# case        reference              A (the reference method)             B
# ==========  =====================  ===================================  ==========================
# c1          lesion                 Dice 0.8, HD95 2 mm                  Dice 0.6, HD95 4 mm
# c2          lesion                 Dice 0.5, HD95 6 mm                  empty: Dice 0, HD95 -, missed
# c3          no lesion              empty: Dice -, HD95 -                false positive: Dice 0, HD95 -
# ==========  =====================  ===================================  ==========================
#
# Dice is defined for both methods on c1, c2: A 0.65, B 0.3 (n = 2 each; before, B's mean was 0.2 over 3
# cases beside A's 0.65 over 2). HD95 is defined for both on c1 only: A 2, B 4 (n = 1; before, A's was 4
# over c1, c2 and B's missed lesion simply vanished), with B's miss reported beside it.


NAN = math.nan


def _m(dice, hd95, missed):
    return {"dice": dice, "hd95_mm": hd95, "avd_ml": 0.0, "lesion_f1": NAN, "missed": missed}


METRICS = {"A": {"c1": _m(0.8, 2.0, 0), "c2": _m(0.5, 6.0, 0), "c3": _m(NAN, NAN, 0)},
           "B": {"c1": _m(0.6, 4.0, 0), "c2": _m(0.0, NAN, 1), "c3": _m(0.0, NAN, 0)}}
RESULT = CountResult(count=5, images={}, references={}, predictions={}, metrics=METRICS)


def test_an_empty_prediction_of_a_lesion_is_dice_0_and_a_miss():
    lesion = np.zeros((4, 6, 6), np.uint8)
    lesion[1:3, 1:3, 1:3] = 1
    empty = np.zeros_like(lesion)
    missed = case_metrics(empty, lesion, (1.0, 1.0, 1.0))
    assert missed["dice"] == 0.0 and math.isnan(missed["hd95_mm"]) and missed["missed"] == 1
    assert case_metrics(lesion, lesion, (1.0, 1.0, 1.0))["missed"] == 0
    assert case_metrics(empty, empty, (1.0, 1.0, 1.0))["missed"] == 0  # nothing to miss
    assert case_metrics(lesion, empty, (1.0, 1.0, 1.0))["missed"] == 0  # a false positive, not a miss


def test_dice_means_use_the_same_cases_in_every_row():
    rows = {r["method"]: r for r in dice_summary([RESULT], ["A", "B"], "A")}
    assert rows["A"]["n_cases"] == rows["B"]["n_cases"] == 2
    assert rows["A"]["dice_mean"] == pytest.approx(0.65)
    assert rows["B"]["dice_mean"] == pytest.approx(0.3)
    assert rows["B"]["dice_std"] == pytest.approx(math.sqrt(0.18))  # (0.6 - 0.3)^2 + (0 - 0.3)^2, ddof 1


def test_hd95_means_use_the_cases_both_masks_have_for_every_method_and_count_the_misses():
    rows = {r["method"]: r for r in metric_summary(RESULT, ["A", "B"], "A", "hd95_mm")}
    assert rows["A"]["n"] == rows["B"]["n"] == 1
    assert rows["A"]["mean"] == 2.0 and rows["B"]["mean"] == 4.0
    assert rows["A"]["missed"] == 0 and rows["B"]["missed"] == 1


def test_paired_tests_use_the_cases_of_the_table():
    stats = {r["metric"]: r for r in statistics_rows([RESULT], ["A", "B"], "A")}
    assert stats["dice"]["n"] == 2 and stats["dice"]["mean_difference"] == pytest.approx(0.35)
    assert stats["hd95_mm"]["n"] == 1 and stats["hd95_mm"]["mean_difference"] == pytest.approx(-2.0)


def test_report_states_the_rule_and_shows_the_misses(tmp_path):
    write_report(tmp_path, [RESULT], ["A", "B"], reference_method="A")
    text = (tmp_path / "report.md").read_text()
    assert "4.0000 ± n/a (n = 1; 1 missed)" in text  # B's HD95 cell
    assert "every method is averaged over the same cases" in text
    assert "Dice 0" in (tmp_path / "table_dice.md").read_text()
