"""One optimizer step of DeepMedic-EN and DeepMedic-UDA (nnunet_mt/trainers/adversarial.py's train_step with
each method's inputs and term), replayed by hand on fixed patches: the segmenter's loss Ls + lambda Ladv and
the adversary's cross-entropy by value, and the gradient each optimizer applies."""
from __future__ import annotations

import copy
import math

import pytest
import torch

from bare_trainer import (OUTPUT, assert_applied_gradient, bare_trainer, batches, cross_entropy_by_hand,
                          gradients_at_step, output_voxels)
from nnunet_mt.training.adversarial import FeatureTap

N = 2  # annotated patches, then as many unannotated ones
DOMAINS = torch.tensor([1] * N + [0] * N)  # 1 = annotated, 0 = unannotated


def en_inputs(segmenter, x):
    """Zhang et al.'s evaluation network reads the softmax maps and the image on the same output voxels."""
    logits = segmenter(x)
    e = logits.exp()
    return logits, (e / e.sum(1, keepdim=True), output_voxels(x))


def en_term(adversary_logits):
    """The unannotated segmentations classified as annotated (1): -log p_1, mean over the unannotated half."""
    return cross_entropy_by_hand(adversary_logits[N:], torch.ones(N))


def uda_inputs(segmenter, x):
    """Kamnitsas et al.'s discriminator reads the activations of layers 4, 6, 8 and the 1^3 layers."""
    with FeatureTap(segmenter.feature_taps((4, 6, 8))) as tap:
        logits = segmenter(x)
    return logits, (tap.aligned(OUTPUT),)


def uda_term(adversary_logits):
    """-L_adv: minus the discriminator's cross-entropy on both domains (gradient reversal)."""
    return -cross_entropy_by_hand(adversary_logits, DOMAINS)


def step_by_hand(name: str, step: int, inputs_by_hand, term_by_hand):
    """The trainer's own step at ``step`` and its replay on copies of the segmenter and adversary: (step
    output, hand values, applied gradients, the replay's losses and networks)."""
    t = bare_trainer(name)
    torch.manual_seed(3)
    t._set_up_adversary()
    t.global_step = step
    annotated, t.dataloader_unlabeled = batches(13, 1)
    x = torch.cat([annotated[0]["data"], next(batches(13, 1)[1])["data"]])
    segmenter, adversary = copy.deepcopy(t.network), copy.deepcopy(t.adversary)
    applied_segmenter, applied_adversary = gradients_at_step(t.optimizer), gradients_at_step(t.adversary_optimizer)
    torch.manual_seed(5)  # the same dropout masks in the trainer's forwards and in the replay
    out = type(t).train_step(t, annotated[0])
    torch.manual_seed(5)
    logits, inputs = inputs_by_hand(segmenter, x)
    ls = cross_entropy_by_hand(logits[:N], output_voxels(annotated[0]["target"]))
    ladv = term_by_hand(adversary.eval()(*inputs))  # the segmenter's turn: the adversary without dropout
    adversary_logits = adversary.train()(*[i.detach() for i in inputs])  # its own turn, on detached inputs
    l_adversary = cross_entropy_by_hand(adversary_logits, DOMAINS)
    accuracy = (adversary_logits.argmax(1) == DOMAINS).float().mean()
    return out, (ls, ladv, l_adversary, accuracy), (applied_segmenter, applied_adversary), (segmenter, adversary)


@pytest.mark.parametrize("name, step, weight, inputs_by_hand, term_by_hand", [
    # ramp-up 2 steps: lambda(1) = 0.1 exp(-5 (1 - 1/2)^2)
    ("nnUNetTrainerDeepMedicEN_tiny", 1, 0.1 * math.exp(-1.25), en_inputs, en_term),
    # ramp-up 4 steps, warm-up 1: lambda(3) = 0.05 (3 - 1) / (4 - 1)
    ("nnUNetTrainerDeepMedicUDA_tiny", 3, 0.1 / 3, uda_inputs, uda_term),
])
def test_segmenter_and_adversary_losses_and_gradients_by_hand(name, step, weight, inputs_by_hand, term_by_hand):
    out, (ls, ladv, l_adversary, accuracy), (applied_s, applied_a), (segmenter, adversary) = step_by_hand(
        name, step, inputs_by_hand, term_by_hand)
    loss = ls + weight * ladv
    assert out["step"] == step and out["lambda"] == pytest.approx(weight, rel=1e-12)
    assert (out["Ls"], out["Ladv"], float(out["loss"])) == pytest.approx((ls.item(), ladv.item(), loss.item()),
                                                                         rel=1e-5)
    assert (out["L_adversary"], out["adversary_accuracy"]) == pytest.approx((l_adversary.item(), accuracy.item()),
                                                                            rel=1e-5)
    # one step each: the segmenter's (clipped to 12) follows Ls + lambda Ladv, the adversary's its own loss
    assert len(applied_s) == len(applied_a) == 1
    assert_applied_gradient(applied_s[0], loss, segmenter.parameters(), max_norm=12, without=ls)
    assert_applied_gradient(applied_a[0], l_adversary, adversary.parameters())


def test_during_the_warm_up_the_segmenter_follows_ls_alone_and_the_adversary_still_learns():
    """UDA's lambda is 0 before step L/4: the segmenter's gradient is Ls's, the discriminator takes its step."""
    out, (ls, ladv, l_adversary, _), (applied_s, applied_a), (segmenter, adversary) = step_by_hand(
        "nnUNetTrainerDeepMedicUDA_tiny", 0, uda_inputs, uda_term)
    assert out["lambda"] == 0 and float(out["loss"]) == pytest.approx(ls.item(), rel=1e-6)
    assert out["Ladv"] == pytest.approx(ladv.item(), rel=1e-5) and ladv.item() < 0
    assert_applied_gradient(applied_s[0], ls, segmenter.parameters(), max_norm=12)
    assert_applied_gradient(applied_a[0], l_adversary, adversary.parameters())
