"""What a user is told when a run cannot start from the checkpoint it was given:
unreadable or foreign ``-pretrained_weights``, an unreadable ``checkpoint_latest.pth`` for ``--c``, and which
supervised trainer to run first. Trainers are built in this process (``in_process.make_trainer``)."""
from __future__ import annotations

import math
import os
import shutil

import numpy as np
import pytest
import torch
from nnunetv2.run.run_training import maybe_load_checkpoint
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

import in_process
from nnunet_mt.architectures.dense_inference import DenseDeepMedic
from nnunet_mt.trainers.semi_supervised import SemiSupervisedMixin
from nnunet_mt.training.adversarial import adversary_step, domain_labels
from nnunet_mt.training.optimizers import DeepMedicRMSprop
from nnunet_mt.training.pseudo_lesions import cache_file, weights_digest
from nnunet_mt.training.sampling import HEALTHY
from test_plugin_trainer import plugin_trainers

make_trainer = in_process.make_trainer  # the fixture, under its name for pytest


def test_each_semi_supervised_variant_names_the_supervised_variant_of_its_own_width():
    """nnUNetTrainerMeanTeacher_tiny must not send the user to the full-width nnUNetTrainerDeepMedic."""
    trainers = {cls.__name__: cls for cls in plugin_trainers()}
    checked = 0
    for name, cls in trainers.items():
        if not issubclass(cls, SemiSupervisedMixin):
            continue
        supervised = cls.supervised_trainer_name
        assert supervised in trainers or supervised == nnUNetTrainer.__name__, (name, supervised)
        if supervised in trainers:
            sup = trainers[supervised]
            assert not issubclass(sup, SemiSupervisedMixin), (name, supervised)
            assert getattr(sup, "deepmedic_kwargs", None) == getattr(cls, "deepmedic_kwargs", None), (name, supervised)
        checked += 1
    assert checked >= 10
    assert trainers["nnUNetTrainerMeanTeacher_tiny"].supervised_trainer_name == "nnUNetTrainerDeepMedic_tiny"
    assert trainers["nnUNetTrainerDeepMedicEN_tiny"].supervised_trainer_name == "nnUNetTrainerDeepMedic_tiny"


def _checkpoint_of(make_trainer, name: str, path) -> None:
    """A real checkpoint of plugin trainer ``name`` (initialised, not trained), saved to ``path``."""
    trainer = make_trainer(name)
    trainer.initialize()
    trainer.save_checkpoint(str(path))


@pytest.fixture(scope="module")
def bad_files(make_trainer, tmp_path_factory):
    """A truncated checkpoint, a plain state_dict and a checkpoint of the full-width DeepMedic."""
    tmp_path = tmp_path_factory.mktemp("checkpoints")
    good = tmp_path / "good.pth"
    _checkpoint_of(make_trainer, "nnUNetTrainerDeepMedic_tiny", good)
    data = good.read_bytes()
    (tmp_path / "truncated.pth").write_bytes(data[: len(data) // 2])
    torch.save(torch.load(good, weights_only=False)["network_weights"], tmp_path / "state_dict.pth")
    _checkpoint_of(make_trainer, "nnUNetTrainerDeepMedic", tmp_path / "full_width.pth")
    return {"good": good, "truncated": tmp_path / "truncated.pth", "state_dict": tmp_path / "state_dict.pth",
            "full_width": tmp_path / "full_width.pth"}


PRETRAINED_PROBLEMS = {"truncated": "cannot be read: it is truncated or not a PyTorch checkpoint",
                       "state_dict": "is a plain state_dict",
                       "full_width": "does not fit nnUNetTrainerMeanTeacher_tiny's network (it was written by "
                                     "nnUNetTrainerDeepMedic): "}


@pytest.mark.parametrize("kind", sorted(PRETRAINED_PROBLEMS))
def test_unusable_pretrained_weights_are_named_with_the_problem(make_trainer, bad_files, monkeypatch, kind):
    trainer = make_trainer("nnUNetTrainerMeanTeacher_tiny")
    path = str(bad_files[kind])
    monkeypatch.setattr("sys.argv", ["nnUNetv2_train", "901", "3d_fullres", "0", "-tr", trainer.__class__.__name__,
                                     "-pretrained_weights", path])
    with pytest.raises(RuntimeError) as info:
        maybe_load_checkpoint(trainer, False, False, path)  # what nnUNetv2_train runs
    message = str(info.value)
    assert f"-pretrained_weights {path}" in message and PRETRAINED_PROBLEMS[kind] in message
    assert "starts from a checkpoint_final.pth of nnUNetTrainerDeepMedic_tiny" in message
    if kind == "full_width":  # one example, not nnU-Net's dump of every tensor
        assert "differ in shape (e.g. " in message and len(message) < 800


@pytest.mark.parametrize("name", ["nnUNetTrainerDeepMedic_tiny", "nnUNetTrainerMeanTeacher_tiny"])
@pytest.mark.parametrize("kind", ["truncated", "state_dict", "full_width"])
def test_unusable_checkpoint_for_continue_says_which_and_what_next(make_trainer, bad_files, name, kind):
    trainer = make_trainer(name)
    folder = trainer.output_folder
    shutil.rmtree(folder, ignore_errors=True)  # the trainers of this module share nnUNet_results
    os.makedirs(folder, exist_ok=True)
    latest = os.path.join(folder, "checkpoint_latest.pth")
    shutil.copy(bad_files[kind], latest)
    shutil.copy(bad_files["good"], os.path.join(folder, "checkpoint_best.pth"))
    with pytest.raises(RuntimeError) as info:
        maybe_load_checkpoint(trainer, True, False, None)  # nnUNetv2_train --c
    message = str(info.value)
    assert f"the checkpoint to continue from (--c), {latest}" in message
    assert "run the same command with --c again: nnUNetv2_train then continues from checkpoint_best.pth" in message
    assert {"truncated": "truncated", "state_dict": "plain state_dict",
            "full_width": "does not fit"}[kind] in message


# The training recipe of the real trainers, built in this process on the tiny dataset: RMSProp with
# DeepMedic's eps and momentum at a constant learning rate, the 50/50 split of the unannotated batch, the
# pseudo-lesions of the initial weights, an EN run resumed with its adversary, DeepMedic's own RMSProp as an
# option, and the annotated batches every method shares.


@pytest.mark.parametrize("name", ["nnUNetTrainerDeepMedic", "nnUNetTrainerMeanTeacher",
                                  "nnUNetTrainerDeepMedicEN_tiny"])
def test_rmsprop_with_deepmedics_eps_and_momentum_at_a_constant_learning_rate(make_trainer, name):
    t = make_trainer(name)
    t.initialize()
    opt = t.optimizer
    assert isinstance(opt, torch.optim.RMSprop)
    group = opt.param_groups[0]
    assert (group["lr"], group["alpha"], group["eps"], group["momentum"], group["weight_decay"]) == \
        (1e-4, 0.9, 1e-4, 0.6, 0.0)
    assert not group["centered"] and not group.get("nesterov", False)
    for epoch in sorted({0, 1, t.num_epochs // 2, t.num_epochs - 1}):
        t.lr_scheduler.step(epoch)  # what nnU-Net calls at every epoch start
        assert group["lr"] == 1e-4, epoch
    # two steps with gradient g = 0.5 everywhere, by hand (torch's RMSprop, momentum not Nesterov):
    # v1 = 0.1 g^2, b1 = g / (sqrt(v1) + eps); v2 = 0.19 g^2, b2 = 0.6 b1 + g / (sqrt(v2) + eps); p -= lr b
    p = next(t.network.parameters())
    start = p.detach().clone()
    g, eps = 0.5, 1e-4
    b1 = g / (math.sqrt(0.1) * g + eps)
    b2 = 0.6 * b1 + g / (math.sqrt(0.19) * g + eps)
    for expected in (b1, b1 + b2):
        opt.zero_grad()
        for q in t.network.parameters():
            q.grad = torch.full_like(q, g)
        opt.step()
        torch.testing.assert_close(p.detach(), start - 1e-4 * expected, rtol=0, atol=1e-7)


@pytest.fixture(scope="module")
def started_mean_teacher(make_trainer, tiny_unlabeled, trained_deepmedic):
    """nnUNetTrainerMeanTeacher_tiny started as nnUNetv2_train -pretrained_weights starts it (up to the
    first step: teacher made, pseudo-lesion pass done, loaders built)."""
    t = make_trainer("nnUNetTrainerMeanTeacher_tiny")
    pretrained = trained_deepmedic / "checkpoint_final.pth"
    maybe_load_checkpoint(t, False, False, str(pretrained))
    t.on_train_start()
    yield t, pretrained
    t.on_train_end()


def test_the_unannotated_batch_is_half_pseudo_lesion_half_healthy(started_mean_teacher):
    t, _ = started_mean_teacher
    loader = t.dataloader_unlabeled.data_loader
    calls = []
    get_bbox = loader.get_bbox

    def recording(data_shape, force_fg, class_locations, **kwargs):
        lbs, ubs = get_bbox(data_shape, force_fg, class_locations, **kwargs)
        centre = np.array([lo + p // 2 for lo, p in zip(lbs, loader.patch_size)])
        calls.append((force_fg, centre, class_locations))
        return lbs, ubs

    loader.get_bbox = recording
    for _ in range(3):
        batch = next(t.dataloader_unlabeled)
        assert batch["data"].shape[0] == t.batch_size_unannotated == 2
    assert [c[0] for c in calls] == [False, True] * 3  # nnU-Net oversamples the last half
    for forced, centre, locations in calls:
        lesion_keys = [k for k in locations if k != HEALTHY and len(locations[k])]
        key = lesion_keys[0] if forced and lesion_keys else HEALTHY
        rows = np.asarray(locations[key])[:, 1:]
        assert (rows == centre).all(1).any(), (forced, key)  # centred on a voxel of that region
    assert any(c[0] and any(k != HEALTHY and len(c[2][k]) for k in c[2]) for c in calls)


def test_the_pseudo_lesions_come_from_the_initial_weights(started_mean_teacher):
    t, pretrained = started_mean_teacher
    start = DenseDeepMedic(2, 2, **t.configuration_manager.network_arch_init_kwargs)
    start.load_state_dict(torch.load(pretrained, map_location="cpu", weights_only=False)["network_weights"])
    assert t.pseudo_lesion_digest == weights_digest(start)
    assert cache_file(t.unlabeled_folder(), t.pseudo_lesion_digest).is_file()
    assert weights_digest(start) != t.initial_weights_digest  # not the random initialisation


def test_en_resume_restores_the_adversary_and_its_optimizer(make_trainer, tmp_path):
    t = make_trainer("nnUNetTrainerDeepMedicEN_tiny")
    t.initialize()
    g = torch.Generator().manual_seed(0)
    probs = torch.softmax(torch.randn(4, 2, 6, 21, 21, generator=g), 1)
    image = torch.randn(4, 2, 6, 21, 21, generator=g)
    for _ in range(2):
        adversary_step(t.adversary, t.adversary_optimizer, (probs, image), domain_labels(2, 2))
    t.global_step, t.current_epoch = 7, 1
    t.noise_generator.manual_seed(123)
    path = str(tmp_path / "checkpoint_latest.pth")
    t.save_checkpoint(path)

    resumed = make_trainer("nnUNetTrainerDeepMedicEN_tiny")
    resumed.load_checkpoint(path)  # what --c calls
    assert resumed.global_step == 7 and resumed.current_epoch == 2
    for k, v in t.adversary.state_dict().items():
        assert torch.equal(resumed.adversary.state_dict()[k], v), k
    saved, loaded = t.adversary_optimizer.state_dict(), resumed.adversary_optimizer.state_dict()
    assert saved["param_groups"] == loaded["param_groups"]
    for i, state in saved["state"].items():
        assert float(loaded["state"][i]["step"]) == 2
        assert torch.equal(loaded["state"][i]["exp_avg"], state["exp_avg"])
    for k, v in t.network.state_dict().items():
        assert torch.equal(resumed.network.state_dict()[k], v), k
    assert torch.equal(resumed.noise_generator.get_state(), t.noise_generator.get_state())


def test_deepmedics_own_rmsprop_is_one_class_attribute_away(make_trainer):
    t = make_trainer("nnUNetTrainerDeepMedic_tiny")
    t.optimizer_name = "deepmedic-rmsprop"
    t.initialize()
    group = t.optimizer.param_groups[0]
    assert isinstance(t.optimizer, DeepMedicRMSprop)
    assert (group["lr"], group["rho"], group["eps"], group["momentum"], group["nesterov"]) == (1e-4, 0.9, 1e-4, 0.6, True)
    wrong = make_trainer("nnUNetTrainerDeepMedic_tiny")
    wrong.optimizer_name = "adam"
    with pytest.raises(ValueError, match="optimizer_name = 'adam'"):
        wrong.initialize()


def test_supervised_and_semi_supervised_trainers_train_on_the_same_annotated_batches(make_trainer, tiny_unlabeled,
                                                                                   trained_deepmedic):
    """Paired streams: from one start and seed, DeepMedic and the mean teacher get equal annotated batches at
    every step, although the mean teacher draws unannotated patches, noise, more dropout and Dice batches
    from the global generators in between (both trainers share this process's global generators, so without
    their streams the two batches would be successive, different draws)."""
    pretrained = str(trained_deepmedic / "checkpoint_final.pth")
    trainers = []
    for name in ("nnUNetTrainerDeepMedic_tiny", "nnUNetTrainerMeanTeacher_tiny"):
        t = make_trainer(name)
        maybe_load_checkpoint(t, False, False, pretrained)
        t.on_train_start()
        trainers.append(t)
    supervised, mean_teacher = trainers
    try:
        for step in range(3):
            a, b = next(supervised.dataloader_train), next(mean_teacher.dataloader_train)
            assert torch.equal(a["data"], b["data"]) and torch.equal(a["target"], b["target"]), step
            supervised.train_step(a)
            mean_teacher.train_step(b)
            mean_teacher._training_dice()  # beside the stream: it must not shift the next batch
    finally:
        for t in trainers:
            t.on_train_end()
