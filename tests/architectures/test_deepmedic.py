"""DeepMedic: layer widths, valid-convolution geometry, analytic parameter count, pathway alignment,
and exact whole-volume (dense) inference independent of tiling."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from nnunet_mt.architectures.deepmedic import DeepMedic
from nnunet_mt.architectures.dense_inference import DenseDeepMedic

TABLE1_FILTERS = [30, 30, 40, 40, 40, 40, 50, 50]


def _randomize_batchnorm(net: nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm3d):
            m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=g) * 0.2 - 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(m.bias.shape, generator=g) * 0.2 - 0.1)


def _net(cls=DeepMedic, channels=2, classes=2, seed=0, **kw):
    torch.manual_seed(seed)
    net = cls(channels, classes, **kw)
    net.apply(net.initialize)
    _randomize_batchnorm(net, seed)
    return net.eval()


def test_layer_widths_follow_table1():
    net = DeepMedic(2, 2)
    for pathway in (net.normal, net.subsampled):
        convs = [layer.conv for layer in pathway.layers]
        assert [c.out_channels for c in convs] == TABLE1_FILTERS
        assert all(c.kernel_size == (3, 3, 3) and c.padding == (0, 0, 0) for c in convs)
        assert convs[0].in_channels == 2
    fc = [layer.conv for layer in net.fc] + [net.classifier.conv]
    assert [c.out_channels for c in fc] == [250, 250, 2]
    assert [c.in_channels for c in fc] == [100, 250, 250]
    assert all(c.kernel_size == (1, 1, 1) for c in fc)


def analytic_parameter_count(channels: int, classes: int, filters=TABLE1_FILTERS, fc=(250, 250)) -> int:
    """Conv weights (no bias before BN) + BN (2/channel) + PReLU (1/channel) of every pre-activated layer."""
    def layer(cin, cout, k, pre_act, bias=False):
        return k ** 3 * cin * cout + (3 * cin if pre_act else 0) + (cout if bias else 0)

    pathway, prev = 0, channels
    for i, c in enumerate(filters):
        pathway += layer(prev, c, 3, pre_act=i > 0)
        prev = c
    total, prev = 2 * pathway, 2 * filters[-1]
    for c in fc:
        total += layer(prev, c, 1, True)
        prev = c
    return total + layer(prev, classes, 1, True, bias=True)


def test_parameter_count_equals_analytic_count():
    # paper net, 2 channels, 2 classes. One pathway: 27*2*30 = 1620, 90+24300, 90+32400, 3 x (120+43200),
    # 120+54000, 150+67500 -> 310230; x2 = 620460; 1^3 layers: 300+25000, 750+62500, 750+500+2 -> 710262
    net = DeepMedic(2, 2)
    n = sum(p.numel() for p in net.parameters())
    assert n == analytic_parameter_count(2, 2) == 710262
    assert sum(p.numel() for p in DeepMedic(4, 3).parameters()) == analytic_parameter_count(4, 3)


@pytest.mark.parametrize("size_in, size_out", [((69, 69, 54), (21, 21, 6)), ((51, 51, 51), (3, 3, 3)),
                                               ((57, 69, 90), (9, 21, 42))])
def test_valid_output_sizes(size_in, size_out):
    net = DeepMedic(2, 3).train()
    assert net.margin == 24
    assert net.output_size(size_in) == size_out
    assert net.input_size(size_out) == size_in
    y = net(torch.zeros(2, 2, *size_in))
    assert tuple(y.shape) == (2, 3, *size_out)


def test_paper_segment_sizes():
    net = DeepMedic(2, 2)
    normal, low = net.pathway_input_sizes((21, 21, 6))
    assert normal == (37, 37, 22) and low == (23, 23, 18)  # paper: 37x37x21 and 23x23x18


@pytest.mark.parametrize("bad", [(50, 69, 69), (48, 69, 69)])
def test_invalid_input_size_is_refused(bad):
    with pytest.raises(ValueError, match="multiple of 3"):
        DeepMedic(2, 2).output_size(bad)


def test_constructor_errors_name_values():
    with pytest.raises(ValueError, match="deep_supervision"):
        DeepMedic(2, 2, deep_supervision=True)
    with pytest.raises(ValueError, match=r"\(3, 3\)"):
        DeepMedic(2, 2, filters=(30, 30, 40), kernel_sizes=(3, 3))


def _symmetrize(net: nn.Module) -> None:
    """Make every kernel symmetric under flips of all three axes."""
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.Conv3d):
                w = m.weight
                for ax in (2, 3, 4):
                    w.copy_((w + w.flip(ax)) / 2)


def test_low_resolution_pathway_is_centred_on_normal_pathway():
    """With symmetric kernels, a mirror-symmetric input gives a mirror-symmetric output only if the
    subsampled pathway's field and its nearest upsampling sit exactly on the normal pathway's grid."""
    net = _net()
    _symmetrize(net)
    x = torch.randn(1, 2, 69, 69, 69)
    x = x + x.flip(2) + x.flip(3) + x.flip(4) + x.flip(2, 3) + x.flip(2, 4) + x.flip(3, 4) + x.flip(2, 3, 4)
    y = net.forward_valid(x)
    for ax in (2, 3, 4):
        assert torch.allclose(y, y.flip(ax), atol=1e-4)
    # and the low-res pathway matters: zeroing its weights changes the output
    with torch.no_grad():
        for m in net.subsampled.modules():
            if isinstance(m, nn.Conv3d):
                m.weight.zero_()
    assert not torch.allclose(y, net.forward_valid(x), atol=1e-3)


def test_translation_by_the_subsampling_factor_shifts_the_output():
    net = _net()
    x = torch.randn(1, 2, 57, 57, 60)
    y = net.forward_valid(x[..., :57])
    y_shift = net.forward_valid(x[..., 3:60])
    assert torch.allclose(y[..., 3:], y_shift[..., :-3], atol=1e-5)


def _reference_whole_volume(net: DeepMedic, x: torch.Tensor) -> torch.Tensor:
    """ONE valid forward on the whole zero-padded volume; centre voxel n//2 is a pooling-block centre."""
    pads = []
    for n in x.shape[2:]:
        before = 24 + (1 - n // 2 - 24) % 3      # (before + n//2) % 3 == 1: centre of a 3-block
        after = 24 + (-(before + n + 24)) % 3    # total length a multiple of 3
        pads.append((before, after))
    padded = torch.nn.functional.pad(x, [w for p in reversed(pads) for w in p])
    y = net.forward_valid(padded)
    return y[(slice(None), slice(None), *[slice(b - 24, b - 24 + n) for (b, _), n in zip(pads, x.shape[2:])])]


@pytest.fixture(scope="module")
def dense_net():
    # narrow layers: tiling logic does not depend on widths, and CPU tests stay fast
    return _net(DenseDeepMedic, filters=(6,) * 8, fc_filters=(12, 12), dense_tile_voxels=48 ** 3)


@pytest.fixture(scope="module")
def volume():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(1, 2, 13, 41, 34, generator=g)
    x[:, :, :, :6] = 0  # some empty border, as outside a head
    return x


def test_dense_inference_matches_single_whole_volume_pass(dense_net, volume):
    ref = _reference_whole_volume(dense_net, volume)
    for tile in (3, (9, 60, 6), 12, 300):
        out = dense_net.forward_dense(volume, tile_size=tile)
        assert out.shape == ref.shape == (1, 2, 13, 41, 34)
        assert torch.allclose(out, ref, atol=1e-4), tile
    assert torch.allclose(dense_net(volume), ref, atol=1e-4)  # eval-mode forward is the dense pass


def test_dense_voxel_sees_true_neighbourhood(dense_net):
    """Away from the border, a voxel's dense prediction equals a valid forward on the unpadded volume
    around it: no padding inside the volume, whatever the tiling."""
    g = torch.Generator().manual_seed(5)
    x = torch.randn(1, 2, 57, 57, 57, generator=g)
    dense = dense_net.forward_dense(x, tile_size=6)
    # centre 28 is a block centre (28 % 3 == 1), so the unpadded crop x[...] has the same pooling grid
    valid = dense_net.forward_valid(x)  # output covers voxels 24..32
    assert torch.allclose(dense[..., 24:33, 24:33, 24:33], valid, atol=1e-4)


def test_zero_tiles_take_the_constant_zero_response(dense_net):
    x = torch.zeros(1, 2, 40, 40, 40)
    x[..., 18:22, 18:22, 18:22] = 1.0
    out = dense_net.forward_dense(x, tile_size=6)
    assert torch.allclose(out, _reference_whole_volume(dense_net, x), atol=1e-4)


def test_nnunet_predictor_tiles_agree_with_whole_volume_pass(dense_net, volume):
    """nnU-Net's own sliding-window predictor, with odd windows holding the case (as the trainer writes
    them into the plans: see ``inference_window``) and step 0.5 or 1, gives the whole-volume
    probabilities up to nnU-Net's float16 accumulation."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    ref = torch.softmax(_reference_whole_volume(dense_net, volume), 1)[0]
    for window, step in (((15, 123, 103), 0.5), ((27, 83, 69), 1.0)):
        plans = {"dataset_name": "Dataset999_X", "plans_name": "p", "transpose_forward": [0, 1, 2],
                 "transpose_backward": [0, 1, 2], "image_reader_writer": "SimpleITKIO", "label_manager": "LabelManager",
                 "configurations": {"c": {"patch_size": list(window), "spacing": [1, 1, 1], "architecture": {
                     "network_class_name": "x", "arch_kwargs": {}, "_kw_requires_import": []}}}}
        pm = PlansManager(plans)
        predictor = nnUNetPredictor(tile_step_size=step, use_gaussian=True, use_mirroring=False,
                                    perform_everything_on_device=False, device=torch.device("cpu"), verbose=False,
                                    allow_tqdm=False)
        predictor.manual_initialization(dense_net, pm, pm.get_configuration("c"), None,
                                        {"labels": {"background": 0, "lesion": 1}, "channel_names": {"0": "a", "1": "b"}},
                                        "t", None)
        logits = predictor.predict_sliding_window_return_logits(volume[0]).float()
        probs = torch.softmax(logits, 0)
        assert probs.shape == ref.shape
        assert torch.allclose(probs, ref, atol=2e-3), (window, step, (probs - ref).abs().max())
