"""The run's diagnostics stage (nnunet_mt/runner/diagnostics.py): which scans it scores, which unannotated scans
it follows, and what it does without snapshots or truth."""
from __future__ import annotations

from types import SimpleNamespace

from fake_source import _fake_dataset
from nnunet_mt.runner.reproduction import Reproduction
from nnunet_mt.runner.source_dataset import read_source

TRAIN = ("a", "b", "c", "f", "g", "h")  # and the labelled test scan d: a pool of 7


def _run(tmp_path, **options) -> Reproduction:
    args = SimpleNamespace(workdir=tmp_path / "work", counts=[2], methods=["DeepMedic", "MeanTeacher"], seed=0,
                           trainer_suffix="_tiny", device="cpu", **options)
    return Reproduction(args, read_source(_fake_dataset(tmp_path / "raw", tr=TRAIN, unlabeled=("u3", "u1", "u2"))))


def test_snapshots_are_scored_on_the_validation_set_when_there_is_one(tmp_path):
    repro = _run(tmp_path, validation=2, diagnostic_cases=None)
    validation = repro.splits[2]["validation"]
    name, cases = repro.diagnostic_cases(2)
    assert name == "validation" and list(cases) == validation and len(validation) == 2
    assert cases[validation[0]] == repro.source.annotated[validation[0]]  # (images, label) of the source
    assert not set(cases) & set(repro.splits[2]["train"] + repro.splits[2]["test"])


def test_without_a_validation_set_the_first_test_scans_up_to_the_limit(tmp_path):
    repro = _run(tmp_path, validation=None, diagnostic_cases=2)
    test = repro.splits[2]["test"]
    assert len(test) == 5
    assert repro.diagnostic_cases(2) == ("test", {c: repro.source.annotated[c] for c in sorted(test)[:2]})
    repro.args.diagnostic_cases = 0  # 0: all of them
    assert list(repro.diagnostic_cases(2)[1]) == sorted(test)


def test_volume_is_followed_on_the_first_unannotated_scans_with_their_true_masks(tmp_path):
    repro = _run(tmp_path, unlabeled_truth=str(tmp_path / "truth"), volume_cases=2)
    assert repro.volume_cases() == {c: (repro.source.unlabeled[c], tmp_path / "truth" / f"{c}.nii.gz")
                                    for c in ("u1", "u2")}
    repro.args.volume_cases = None
    assert repro.volume_cases() == {}
    assert _run(tmp_path / "other", unlabeled_truth=None, volume_cases=2).volume_cases() == {}


def test_nothing_is_diagnosed_without_snapshots_or_without_truth(tmp_path):
    repro = _run(tmp_path, validation=2, unlabeled_truth=None, volume_cases=2)
    fold = repro.model_dir(2, repro.trainer("MeanTeacher")) / "fold_0"
    fold.mkdir(parents=True)
    (fold / "checkpoint_final.pth").touch()  # trained, but without weight snapshots
    assert repro.diagnose_method(2, "MeanTeacher") == (None, None)
    assert repro.pseudo_label_quality(2) is None
    repro.diagnose(2)
    assert repro.diagnostics_md == [] and not (repro.workdir / "report").exists()
