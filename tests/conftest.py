"""Shared fixtures: a tiny nnU-Net dataset, planned and preprocessed once per test session.

nnU-Net reads ``nnUNet_raw`` / ``nnUNet_preprocessed`` / ``nnUNet_results`` when it is imported, so
every nnU-Net command runs in a subprocess with these variables pointing at temporary folders. What such
a subprocess sees is built afresh for each command by :func:`subprocess_env`: none of the caller's
``nnUNet_*`` variables (a budget or a worker count set in the developer's shell), the fixed settings of
:data:`TEST_SETTINGS`, the folders, then the command's own overrides.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Mapping

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from nnunet_mt.trainers.variant_names import VARIANT_METHODS

VENV_BIN = Path(sys.executable).parent
TINY_ID = 901
TINY_NAME = "Dataset901_Tiny"
SPACING_XYZ = (0.96, 0.96, 6.5)
#: what every test subprocess runs with, besides its nnU-Net folders and nnUNet_extTrainer
TEST_SETTINGS = {
    "nnUNet_def_n_proc": "1",  # nnU-Net's worker pools: one process, not 8
    "nnUNet_compile": "false",
    "PYTHONUNBUFFERED": "1",
    # nnU-Net's final validation (two spawned worker pools per training) runs where a test checks it:
    # NNUNetEnv.train(..., final_validation=True)
    "nnUNet_mt_final_validation": "0",
}


#: test files that read a costly session fixture of another file's (minutes to build) -> that file: under
#: pytest-xdist (``-n 2``) they run in the same worker (the runner's screen: tests/conftest.py's ``screen``)
SHARED_FIXTURE_FILES = {"tests/commands/test_score_models.py": "tests/commands/test_reproduce.py"}


def worker_group(nodeid: str) -> str:
    """The group of tests that one pytest-xdist worker runs together: the test's file, or the file whose costly
    fixture it reads (:data:`SHARED_FIXTURE_FILES`). A file's module fixtures are so built once."""
    path = nodeid.split("::", 1)[0]
    return SHARED_FIXTURE_FILES.get(path, path)


def pytest_xdist_make_scheduler(config, log):
    """pytest-xdist's ``--dist loadfile`` with :func:`worker_group` as the file. (Its ``loadgroup`` marks do not
    reach the scheduler under pytest 9: xdist 3.8 writes the group into ``item._nodeid``, which pytest 9 no
    longer reads.)"""
    from xdist.scheduler import LoadScopeScheduling

    class WorkerGroups(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return worker_group(nodeid)

    return WorkerGroups(config, log)


def subprocess_env(folders: Mapping[str, Path], overrides: Mapping[str, str | None] | None = None) -> dict[str, str]:
    """The whole environment of one test subprocess, a new dict each call.

    The caller's environment without its ``nnUNet_*`` variables (nnU-Net's and the plugin's: what the tests
    set is all a command sees of them, whatever the shell that runs pytest holds), then
    :data:`TEST_SETTINGS`, ``folders`` (variable -> path), ``nnUNet_extTrainer`` (the plugin's trainers) and
    ``overrides``, in that order; an override of ``None`` removes the variable.
    """
    from nnunet_mt.utils.ext_trainer import ext_trainer_value

    env = {name: value for name, value in os.environ.items() if not name.startswith("nnUNet_")}
    env.update(TEST_SETTINGS)
    env.update({name: str(path) for name, path in folders.items()})
    env["nnUNet_extTrainer"] = ext_trainer_value(None)
    for name, value in (overrides or {}).items():
        if value is None:
            env.pop(name, None)
        elif isinstance(value, str):
            env[name] = value
        else:
            raise TypeError(f"environment variable {name}: give a string or None, not {value!r}")
    return env


def _write(array: np.ndarray, path: Path, dtype) -> None:
    image = sitk.GetImageFromArray(array.astype(dtype))
    image.SetSpacing(SPACING_XYZ)
    sitk.WriteImage(image, str(path))


def make_tiny_case(rng: np.random.Generator, shape_zyx=(10, 64, 56)):
    """A head-shaped ellipsoid with one bright lesion on channel 0 (DWI); channel 1 (b0) has none."""
    z, y, x = np.meshgrid(*[np.arange(s) for s in shape_zyx], indexing="ij")
    cz, cy, cx = [s / 2 for s in shape_zyx]
    brain = ((y - cy) / (0.44 * shape_zyx[1])) ** 2 + ((x - cx) / (0.43 * shape_zyx[2])) ** 2 \
        + ((z - cz) / (0.6 * shape_zyx[0])) ** 2 < 1
    lz, ly, lx = rng.integers([3, 22, 20], [shape_zyx[0] - 3, shape_zyx[1] - 22, shape_zyx[2] - 20])
    lesion = (((y - ly) / 6) ** 2 + ((x - lx) / 5) ** 2 + ((z - lz) / 1.5) ** 2 < 1) & brain
    dwi = (brain * 1.0 + lesion * 1.0 + rng.normal(0, 0.2, brain.shape)) * brain
    b0 = (brain * 1.0 + rng.normal(0, 0.2, brain.shape)) * brain
    return [dwi, b0], lesion.astype(np.uint8)


def write_tiny_raw(raw: Path, n_train: int = 5, n_test: int = 2, n_unlabeled: int = 3, seed: int = 0,
                   truth_dir: Path | None = None) -> Path:
    """The tiny dataset; ``truth_dir``: also write the unannotated scans' true masks there (outside ``raw``)."""
    from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json

    folder = raw / TINY_NAME
    rng = np.random.default_rng(seed)
    for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs", "imagesUnlabeled"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for prefix, n, img, lab in (("tr", n_train, "imagesTr", "labelsTr"), ("ts", n_test, "imagesTs", "labelsTs"),
                                ("un", n_unlabeled, "imagesUnlabeled", None)):
        for i in range(n):
            channels, label = make_tiny_case(rng)
            for c, arr in enumerate(channels):
                _write(arr, folder / img / f"{prefix}_{i:03d}_{c:04d}.nii.gz", np.float32)
            if lab is not None:
                _write(label, folder / lab / f"{prefix}_{i:03d}.nii.gz", np.uint8)
            elif truth_dir is not None:
                Path(truth_dir).mkdir(parents=True, exist_ok=True)
                _write(label, Path(truth_dir) / f"{prefix}_{i:03d}.nii.gz", np.uint8)
    generate_dataset_json(str(folder), {0: "DWI", 1: "b0"}, {"background": 0, "lesion": 1}, n_train, ".nii.gz",
                          dataset_name=TINY_NAME)
    return folder


def direct_probabilities(model_folder, checkpoint, image_files, weights_key="network_weights"):
    """Preprocess with the results folder's plans and run DenseDeepMedic.forward_dense directly;
    returns softmax probabilities pasted into the original image grid (background outside the crop)."""
    from nnunetv2.preprocessing.preprocessors.default_preprocessor import DefaultPreprocessor
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
    from nnunet_mt.architectures.dense_inference import DenseDeepMedic

    plans = json.loads((model_folder / "plans.json").read_text())
    dataset_json = json.loads((model_folder / "dataset.json").read_text())
    pm = PlansManager(plans)
    cm = pm.get_configuration("3d_fullres")
    data, _, props = DefaultPreprocessor(verbose=False).run_case(image_files, None, pm, cm, dataset_json)
    net = DenseDeepMedic(data.shape[0], 2, **cm.network_arch_init_kwargs)
    net.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=False)[weights_key])
    net.eval()
    probs = torch.softmax(net.forward_dense(torch.from_numpy(data)[None]), 1)[0].numpy()
    full = np.zeros((2, *props["shape_before_cropping"]), np.float32)
    full[0] = 1
    bbox = props["bbox_used_for_cropping"]
    full[(slice(None), *[slice(a, b) for a, b in bbox])] = probs
    return full


def assert_train_losses_compose(fold: Path, log: dict, *terms: tuple[str, str | float]) -> None:
    """nnU-Net's train_loss of each epoch (the final checkpoint's log) is the epoch's mean of the per-step
    ``sum of log[value] * (log[weight] or weight)`` for ``terms`` of (value, weight): the trainer's logged
    parts of its loss add up to what it optimised."""
    checkpoint = torch.load(fold / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    losses = checkpoint["logging"]["train_losses"]
    per_step = [sum(log[value][i] * (log[weight][i] if isinstance(weight, str) else weight) for value, weight in terms)
                for i in range(len(log["step"]))]
    k = len(per_step) // len(losses)
    assert len(per_step) == k * len(losses) and k > 0
    assert losses == pytest.approx([float(np.mean(per_step[e * k:(e + 1) * k])) for e in range(len(losses))], rel=1e-5)


class NNUNetEnv:
    """Temporary nnU-Net folders and a runner for nnU-Net / plugin commands in subprocesses."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.raw, self.preprocessed, self.results = root / "raw", root / "preprocessed", root / "results"
        for p in (self.raw, self.preprocessed, self.results):
            p.mkdir(parents=True, exist_ok=True)

    @property
    def folders(self) -> dict[str, Path]:
        return {"nnUNet_raw": self.raw, "nnUNet_preprocessed": self.preprocessed, "nnUNet_results": self.results}

    def environment(self, extra_env: Mapping[str, str | None] | None = None) -> dict[str, str]:
        """What a command run by :meth:`run` with ``extra_env`` sees (:func:`subprocess_env`)."""
        return subprocess_env(self.folders, extra_env)

    @property
    def env(self) -> dict[str, str]:
        """The environment of a command run without ``extra_env`` (a new dict each time)."""
        return self.environment()

    def run(self, *args: str, check: bool = True,
            extra_env: Mapping[str, str | None] | None = None) -> subprocess.CompletedProcess:
        """Run a command with this environment's folders; ``extra_env`` overrides variables (None: unset)."""
        exe = str(VENV_BIN / args[0]) if (VENV_BIN / args[0]).exists() else args[0]
        proc = subprocess.run([exe, *args[1:]], env=self.environment(extra_env), capture_output=True, text=True)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n"
                                 f"{proc.stderr[-4000:]}")
        return proc

    def train(self, trainer: str, *extra: str, fold: str = "0",
              final_validation: bool = False) -> subprocess.CompletedProcess:
        # single-threaded augmentation keeps CPU tests deterministic and light
        return self.run("nnUNetv2_train", str(TINY_ID), "3d_fullres", fold, "-tr", trainer, "-device", "cpu",
                        *extra, extra_env={"nnUNet_n_proc_DA": "0",
                                           "nnUNet_mt_final_validation": str(int(final_validation))})

    def model_folder(self, trainer: str) -> Path:
        return self.results / TINY_NAME / f"{trainer}__nnUNetPlans__3d_fullres"


@pytest.fixture(scope="session")
def tiny_nnunet(tmp_path_factory) -> NNUNetEnv:
    """Raw + planned + preprocessed tiny dataset (5 train, 2 test, 3 unlabelled cases)."""
    env = NNUNetEnv(tmp_path_factory.mktemp("nnunet"))
    write_tiny_raw(env.raw)
    env.run("nnUNetv2_plan_and_preprocess", "-d", str(TINY_ID), "-c", "3d_fullres", "-npfp", "1", "-np", "1")
    return env


@pytest.fixture(scope="session")
def trained_deepmedic(tiny_nnunet) -> Path:
    """A supervised DeepMedic trained for a few steps on the tiny dataset; returns its fold folder."""
    tiny_nnunet.train("nnUNetTrainerDeepMedic_tiny", final_validation=True)
    return tiny_nnunet.model_folder("nnUNetTrainerDeepMedic_tiny") / "fold_0"


@pytest.fixture(scope="session")
def tiny_unlabeled(tiny_nnunet, trained_deepmedic) -> str:
    """Preprocesses imagesUnlabeled; returns what the mean teacher said when they were not yet preprocessed
    (with an augmentation worker, as a user's run has: what it prints when stopped must not bury the message)."""
    pretrained = trained_deepmedic / "checkpoint_final.pth"
    proc = tiny_nnunet.run("nnUNetv2_train", str(TINY_ID), "3d_fullres", "0", "-tr", "nnUNetTrainerMeanTeacher_tiny",
                           "-device", "cpu", "-pretrained_weights", str(pretrained), check=False,
                           extra_env={"nnUNet_n_proc_DA": "1"})
    assert proc.returncode != 0
    tiny_nnunet.run("nnunet_mt_preprocess_unlabeled", "-d", str(TINY_ID), "-c", "3d_fullres")
    return proc.stdout + proc.stderr


#: every method of the runner's screen: the supervised DeepMedic and each mean-teacher variant and control
SCREEN_METHODS = ("DeepMedic", *VARIANT_METHODS)


@pytest.fixture(scope="session")
def screen(tmp_path_factory):
    """The runner's screen on the tiny dataset: a validation set, a converged start, DeepMedic and every
    mean-teacher variant and control (each through nnUNetv2_train), seeded; then the same command without
    --screen for two of them, which predicts the test scans. Session-wide: the runner's tests
    (tests/commands/test_reproduce.py) and the scoring of exported models (test_score_models.py) read it."""
    root = tmp_path_factory.mktemp("screen")
    raw, truth = root / "raw", root / "truth"
    write_tiny_raw(raw, truth_dir=truth)  # a pool of 7
    env = dict(os.environ, nnUNet_n_proc_DA="0", nnUNet_compile="false", nnUNet_def_n_proc="1", PYTHONUNBUFFERED="1")
    common = [str(VENV_BIN / "nnunet_mt_reproduce"), "-d", "901", "--raw", str(raw), "--workdir", str(root / "work"),
              "--counts", "2", "--shared-test", "2", "--validation", "2", "--trainer-suffix", "_tiny",
              "--init-epochs", "1", "--start-epochs", "1", "--epochs", "2", "--iterations-per-epoch", "2",
              "--val-iterations", "1", "--rampup", "2", "--device", "cpu", "--num-processes", "0",
              "--snapshot-every", "1", "--unlabeled-truth", str(truth), "--volume-cases", "2", "--training-seed", "3"]
    first = subprocess.run([*common, "--methods", *SCREEN_METHODS, "--screen", "--results", str(root / "results")],
                           env=env, capture_output=True, text=True)
    assert first.returncode == 0, first.stdout[-6000:] + first.stderr[-3000:]
    second = subprocess.run([*common, "--methods", "DeepMedic", "MeanTeacher-kl"], env=env, capture_output=True,
                            text=True)
    assert second.returncode == 0, second.stdout[-6000:] + second.stderr[-3000:]
    return SimpleNamespace(root=root, work=root / "work", first=first.stdout, second=second.stdout, common=common,
                           env=env)
