"""The runner's splits (the paper's, a shared test set, a validation set), its input checks and the manifest."""
from __future__ import annotations

import json

import numpy as np
import pytest

from fake_source import _fake_dataset
from nnunet_mt.runner.methods import check_methods
from nnunet_mt.runner.source_dataset import ReproduceError, read_source
from nnunet_mt.runner.splits import check_inputs, check_manifest, draw_splits

def test_draw_splits_nested_seeded_complement():
    pool = [f"c{i:02d}" for i in range(12)]
    splits = draw_splits(list(reversed(pool)), [2, 5, 8], seed=3)  # input order does not matter
    assert splits == draw_splits(pool, [2, 5, 8], seed=3)  # reproducible
    for n, s in splits.items():
        assert len(s["train"]) == n and s["train"] == sorted(s["train"])
        assert sorted(s["train"] + s["test"]) == pool and not set(s["train"]) & set(s["test"])
    assert set(splits[2]["train"]) < set(splits[5]["train"]) < set(splits[8]["train"])  # nested
    others = [draw_splits(pool, [5], seed)[5]["train"] for seed in range(4, 10)]
    assert any(o != splits[5]["train"] for o in others)  # the seed matters


def test_shared_test_set_is_one_draw_disjoint_from_every_training_set():
    pool = [f"c{i:02d}" for i in range(12)]
    splits = draw_splits(list(reversed(pool)), [2, 5, 8], seed=3, shared_test=4)
    assert splits == draw_splits(pool, [2, 5, 8], seed=3, shared_test=4)  # reproducible
    test = splits[2]["test"]
    assert len(test) == 4 and test == sorted(test) and set(test) <= set(pool)
    for n, s in splits.items():
        assert s["test"] == test  # identical across counts
        assert len(s["train"]) == n and not set(s["train"]) & set(test)  # disjoint from every training set
    assert set(splits[2]["train"]) < set(splits[5]["train"]) < set(splits[8]["train"])  # still nested
    assert len(set(splits[8]["train"]) | set(test)) == 12  # the largest count may use all the rest
    # the shared test set is the start of the same seeded permutation the paper's splits take their counts from
    assert test == draw_splits(pool, [4], seed=3)[4]["train"]
    assert any(draw_splits(pool, [2], seed, shared_test=4)[2]["test"] != test for seed in range(4, 10))


def test_validation_set_is_the_end_of_the_permutation_and_leaves_training_scans_alone():
    pool = [f"c{i:02d}" for i in range(12)]
    plain = draw_splits(pool, [2, 5], seed=3, shared_test=4)
    splits = draw_splits(pool, [2, 5], seed=3, shared_test=4, validation=3)
    order = np.random.default_rng(3).permutation(12)
    assert splits[2]["validation"] == splits[5]["validation"] == sorted(pool[i] for i in order[-3:])
    for n in (2, 5):
        assert splits[n]["train"] == plain[n]["train"] and splits[n]["test"] == plain[n]["test"]
        assert not set(splits[n]["validation"]) & (set(splits[n]["train"]) | set(splits[n]["test"]))
    # the paper's split: the test set is the rest of the pool less the validation set
    paper = draw_splits(pool, [2], seed=3, validation=3)[2]
    assert sorted(paper["train"] + paper["test"] + paper["validation"]) == pool
    assert "validation" not in draw_splits(pool, [2], seed=3)[2]


def test_manifest_mismatch(tmp_path):
    manifest = {"source": "Dataset1_X", "pool": ["a", "b"], "unlabeled": [], "seed": 0, "counts": [1],
                "budget": {"epochs": 2}, "disable_tta": False, "methods": ["DeepMedic"]}
    check_manifest(tmp_path / "manifest.json", manifest)  # nothing recorded yet
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    check_manifest(tmp_path / "manifest.json", dict(manifest, methods=["DeepMedic", "MeanTeacher"]))  # may add
    with pytest.raises(ReproduceError) as exc:
        check_manifest(tmp_path / "manifest.json", dict(manifest, seed=1, budget={"epochs": 3}))
    text = str(exc.value)
    assert "seed: recorded 0, now 1" in text and 'budget: recorded {"epochs": 2}, now {"epochs": 3}' in text
    assert "finished trainings" in text and "new --workdir" in text
    # a manifest from before --shared-test existed means the paper's test sets
    check_manifest(tmp_path / "manifest.json", dict(manifest, shared_test=None))
    with pytest.raises(ReproduceError, match="shared_test: recorded null, now 20"):
        check_manifest(tmp_path / "manifest.json", dict(manifest, shared_test=20))


def test_shared_test_set_size_is_checked(tmp_path):
    source = read_source(_fake_dataset(tmp_path / "ok"))  # pool of 4
    check_inputs(source, [1, 2], ["DeepMedic"], shared_test=2)
    with pytest.raises(ReproduceError, match=r"count 3: with --shared-test 2 .*other 2 of the 4 .*1 <= count <= 2"):
        check_inputs(source, [1, 3], ["DeepMedic"], shared_test=2)
    with pytest.raises(ReproduceError, match=r"--shared-test 4: needs 1 <= N < pool size"):
        check_inputs(source, [1], ["DeepMedic"], shared_test=4)


def test_input_checks(tmp_path):
    source = read_source(_fake_dataset(tmp_path / "ok"))
    with pytest.raises(ReproduceError, match="count 4: .*has 4 annotated case"):
        check_inputs(source, [2, 4], ["DeepMedic"])
    with pytest.raises(ReproduceError, match="unknown method.*Bogus; valid: DeepMedic, DeepMedic-UDA, DeepMedic-EN, "
                                             "MeanTeacher"):
        check_methods(["DeepMedic", "Bogus"])
    with pytest.raises(ReproduceError, match="MeanTeacher-beta0 is now called MeanTeacher-no-consistency; "
                                             "MeanTeacher-beta0-annotated-bn is now called "
                                             "MeanTeacher-no-consistency-annotated-bn \\(the same trainer"):
        check_methods(["DeepMedic", "MeanTeacher-beta0", "MeanTeacher-beta0-annotated-bn"])
    check_methods(["DeepMedic", "MeanTeacher-no-consistency", "MeanTeacher-kl-confident"])
    no_unlabeled = read_source(_fake_dataset(tmp_path / "nu", unlabeled=None))
    check_inputs(no_unlabeled, [2], ["DeepMedic"])  # supervised only: fine
    with pytest.raises(ReproduceError, match=r"MeanTeacher need.*/imagesUnlabeled/ \(missing or empty\)"):
        check_inputs(no_unlabeled, [2], ["DeepMedic", "MeanTeacher"])
