"""The demo's table and statistics, on fixed numbers."""
import json

import numpy as np
import pytest
from scipy.stats import ttest_rel

from nnunet_mt.demo import paired_t_test, write_table
from nnunet_mt.pipeline import dice_per_case


def test_dice_per_case_reads_nnunet_summary(tmp_path):
    summary = {"metric_per_case": [
        {"reference_file": "/x/labelsTs/SDWI_T0001.nii.gz", "metrics": {"1": {"Dice": 0.5}}},
        {"reference_file": "/x/labelsTs/SDWI_T0002.nii.gz", "metrics": {"1": {"Dice": 0.25}}}]}
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    assert dice_per_case(tmp_path / "summary.json") == {"SDWI_T0001": 0.5, "SDWI_T0002": 0.25}


def test_table_and_paired_t_test(tmp_path):
    tables = {"DeepMedic": {"a": 0.5, "b": 0.6, "c": 0.7}, "MeanTeacher": {"a": 0.55, "b": 0.62, "c": 0.71}}
    text = write_table(tables, tmp_path)
    # mean 0.6, sample std 0.1; mean 0.6267, std of (0.55, 0.62, 0.71) = 0.0802
    assert "| mean ± std | 0.6000 ± 0.1000 | 0.6267 ± 0.0802 |" in text
    assert (tmp_path / "dice_table.csv").read_text().splitlines()[0] == "case,DeepMedic,MeanTeacher"
    t, p, n = paired_t_test(tables, "MeanTeacher", "DeepMedic")
    ref = ttest_rel([0.55, 0.62, 0.71], [0.5, 0.6, 0.7])
    assert n == 3 and t == pytest.approx(ref.statistic) and p == pytest.approx(ref.pvalue)
    # differences 0.05, 0.02, 0.01: mean 0.02667, sd 0.02082, t = 0.02667 / (0.02082 / sqrt 3) = 2.219
    assert t == pytest.approx(2.2188, abs=1e-3)
    assert np.isfinite(p)
