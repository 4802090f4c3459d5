"""The pieces that make DeepMedic-EN and DeepMedic-UDA those methods: ramps, the sign of the
adversarial gradients that reach the segmenter, and the adversary's own step."""
from __future__ import annotations

import math

import pytest
import torch

from nnunet_mt.architectures.deepmedic import DeepMedic
from nnunet_mt.architectures.discriminators import EvaluationNetwork, PatchDiscriminator
from nnunet_mt.training.adversarial import (ANNOTATED, FeatureTap, adversary_loss, adversary_step, center_crop,
                                            domain_labels, en_segmenter_loss, en_weight, frozen,
                                            uda_segmenter_loss, uda_weight)

SMALL = {"filters": (4,) * 8, "fc_filters": (6, 6), "fc_dropout": (0.0, 0.0, 0.0)}  # deterministic


def test_en_weight_is_the_sigmoid_ramp_to_0_1():
    assert en_weight(0, 400) == pytest.approx(0.1 * math.exp(-5))
    assert en_weight(200, 400) == pytest.approx(0.1 * math.exp(-1.25))
    assert en_weight(400, 400) == pytest.approx(0.1)
    assert en_weight(800, 400) == pytest.approx(0.1)


def test_uda_weight_waits_then_ramps_linearly_to_0_05():
    values = [uda_weight(s, 400, 100) for s in (0, 99, 100, 250, 399, 400, 800)]
    assert values == pytest.approx([0, 0, 0, 0.025, 0.05 * 299 / 300, 0.05, 0.05])
    with pytest.raises(ValueError, match="warmup_steps=500"):
        uda_weight(0, 400, 500)


def test_domain_labels_follow_the_batch_order():
    assert domain_labels(2, 3).tolist() == [1, 1, 0, 0, 0]


def _descend(net, step_norm=1e-2):
    """A small gradient-descent step of fixed length on the segmenter's parameters."""
    grads = [p.grad for p in net.parameters() if p.grad is not None]
    norm = torch.sqrt(sum((g ** 2).sum() for g in grads))
    with torch.no_grad():
        for p in net.parameters():
            if p.grad is not None:
                p -= step_norm * p.grad / norm


def _segmenter_and_batch(seed=0):
    torch.manual_seed(seed)
    net = DeepMedic(2, 2, **SMALL)
    x = torch.randn(4, 2, 54, 54, 54)
    return net, x


def test_uda_term_reverses_the_discriminator_gradient():
    """dL_seg_adv/dfeatures = -dL_adv/dfeatures: the segmenter is pushed against the discriminator."""
    torch.manual_seed(0)
    disc = PatchDiscriminator(5, features=4)
    feats = torch.randn(4, 5, 6, 9, 9, requires_grad=True)
    labels = domain_labels(2, 2)
    (g_disc,) = torch.autograd.grad(adversary_loss(disc(feats), labels), feats)
    (g_seg,) = torch.autograd.grad(uda_segmenter_loss(disc(feats), labels), feats)
    assert torch.allclose(g_seg, -g_disc)
    assert g_disc.abs().sum() > 0


def test_uda_gradient_reaches_the_segmenter_and_a_step_confuses_the_frozen_discriminator():
    net, x = _segmenter_and_batch()
    taps = net.feature_taps()
    torch.manual_seed(1)
    disc = PatchDiscriminator(DeepMedic.tap_channels(taps), features=4)
    labels = domain_labels(2, 2)

    def discriminator_loss():
        with torch.no_grad(), FeatureTap(taps) as tap:
            out = net(x)
            return adversary_loss(disc.eval()(tap.aligned(out.shape[2:])), labels).item()

    before = discriminator_loss()
    with FeatureTap(taps) as tap, frozen(disc):
        out = net(x)
        loss = uda_segmenter_loss(disc(tap.aligned(out.shape[2:])), labels)
        loss.backward()
    assert all(p.grad is None for p in disc.parameters())  # the discriminator is not trained here
    grads = [p.grad for p in net.parameters() if p.grad is not None]
    assert grads and sum(g.abs().sum() for g in grads) > 0
    _descend(net)
    assert discriminator_loss() > before  # minimising -L_adv raises the discriminator's loss


def test_en_gradient_makes_unannotated_segmentations_look_annotated():
    net, x = _segmenter_and_batch()
    torch.manual_seed(2)
    en = EvaluationNetwork(2, 2, features=4)

    def p_annotated_unlabelled():
        with torch.no_grad():
            out = net(x)
            logits = en.eval()(torch.softmax(out, 1), center_crop(x, out.shape[2:]))
            return torch.softmax(logits, 1)[2:, ANNOTATED].mean().item()

    before = p_annotated_unlabelled()
    with frozen(en):
        out = net(x)
        logits = en(torch.softmax(out, 1), center_crop(x, out.shape[2:]))
        en_segmenter_loss(logits[2:]).backward()  # patches 2, 3 are the unannotated ones
    assert all(p.grad is None for p in en.parameters())
    _descend(net)
    assert p_annotated_unlabelled() > before


def test_frozen_restores_mode_and_gradients():
    en = EvaluationNetwork(2, 2, features=4)
    en.train()
    next(en.parameters()).requires_grad_(False)
    flags = [p.requires_grad for p in en.parameters()]
    with frozen(en):
        assert not en.training and not any(p.requires_grad for p in en.parameters())
    assert en.training and [p.requires_grad for p in en.parameters()] == flags


def _two_kinds_of_segmentation(n=4):
    """Crisp maps (annotated-like) vs blurred maps (unannotated-like) on the same images."""
    g = torch.Generator().manual_seed(3)
    image = torch.randn(2 * n, 2, 6, 12, 12, generator=g)
    fg = (torch.rand(2 * n, 1, 6, 12, 12, generator=g) > 0.7).float()
    crisp = torch.cat([1 - fg, fg], 1)
    soft = 0.5 + 0.2 * (crisp - 0.5)
    probs = torch.cat([crisp[:n], soft[n:]])
    return probs, image, domain_labels(n, n)


def test_evaluation_network_step_improves_its_classification_on_a_fixed_batch():
    probs, image, labels = _two_kinds_of_segmentation()
    torch.manual_seed(4)
    en = EvaluationNetwork(2, 2, features=8)
    optimizer = torch.optim.Adam(en.parameters(), lr=1e-3, betas=(0.9, 0.99))
    first_loss, _ = adversary_step(en, optimizer, (probs, image), labels)
    for _ in range(30):
        loss, accuracy = adversary_step(en, optimizer, (probs, image), labels)
    assert loss < 0.5 * first_loss and accuracy == 1.0


def test_domain_discriminator_step_improves_its_classification_on_a_fixed_batch():
    g = torch.Generator().manual_seed(5)
    feats = torch.randn(8, 6, 6, 9, 9, generator=g)
    feats[4:] += 0.5  # the target domain's features are shifted
    labels = domain_labels(4, 4)
    torch.manual_seed(6)
    disc = PatchDiscriminator(6, features=8)
    optimizer = torch.optim.Adam(disc.parameters(), lr=1e-3, betas=(0.9, 0.99))
    with torch.no_grad():
        before = adversary_loss(disc(feats), labels).item()
    adversary_step(disc, optimizer, (feats,), labels)
    with torch.no_grad():
        assert adversary_loss(disc(feats), labels).item() < before  # one step already helps
    for _ in range(30):
        loss, accuracy = adversary_step(disc, optimizer, (feats,), labels)
    assert loss < 0.5 * before and accuracy == 1.0


def test_feature_tap_aligns_every_layer_on_the_output_grid():
    net, x = _segmenter_and_batch()
    taps = net.feature_taps((4, 8))
    assert DeepMedic.tap_channels(taps) == 4 * 4 + 2 * 6
    with FeatureTap(taps) as tap:
        out = net(x)
    aligned = tap.aligned(out.shape[2:])
    assert aligned.shape == (4, 28, *out.shape[2:])
    # normal layer 8 has exactly the output's size; subsampled layer 8 repeated x3 does too
    assert torch.equal(aligned[:, 4:8], tap.outputs[1])
    low8 = tap.outputs[3]
    assert torch.equal(aligned[:, 12:16, :, :3, :3],
                       low8[:, :, :, :1, :1].repeat_interleave(3, 2).expand(-1, -1, -1, 3, 3))
    # normal layer 4 is larger: centre-cropped
    assert torch.equal(aligned[:, :4], center_crop(tap.outputs[0], out.shape[2:]))
    # hooks are removed on exit
    with torch.no_grad():
        tap.outputs = [None] * 6
        net(x)
    assert tap.outputs == [None] * 6


def test_paper_network_feeds_760_channels_to_the_uda_discriminator():
    assert DeepMedic.tap_channels(DeepMedic(2, 2).feature_taps()) == 2 * (40 + 40 + 50) + 2 * 250 == 760
