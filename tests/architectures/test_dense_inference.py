"""Fast exact inference: the fused eval arithmetic, the FLOP count, and DenseDeepMedic's nnU-Net window
semantics (only the case's outputs, exact; cases that do not fit the window stop with a clear error)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from nnunet_mt.architectures.deepmedic import DeepMedic
from nnunet_mt.architectures.dense_inference import (CaseDoesNotFitWindow, DenseDeepMedic, block_flops, forward_block,
                                                     fuse, gaussian_weight_at, window_for)


def _net(cls=DenseDeepMedic, seed=0, **kw):
    torch.manual_seed(seed)
    net = cls(2, 2, **kw)
    net.apply(net.initialize)
    g = torch.Generator().manual_seed(seed)
    for m in net.modules():  # BatchNorm far from identity, PReLU slopes of both signs and above 1
        if isinstance(m, nn.BatchNorm3d):
            m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=g) * 0.4 - 0.2)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(m.bias.shape, generator=g) * 0.4 - 0.2)
        if isinstance(m, nn.PReLU):
            m.weight.data.copy_(torch.rand(m.weight.shape, generator=g) * 1.6 - 0.3)
    return net.eval()


NARROW = dict(filters=(6, 6, 8, 8, 8, 8, 10, 10), fc_filters=(12, 12))


@pytest.mark.parametrize("kw", [NARROW, dict(filters=(30, 30, 40, 40, 40, 40, 50, 50), fc_filters=(250, 250))])
def test_fused_block_equals_valid_forward(kw):
    """Folded BatchNorm, channels-last convolutions and the chunked 1^3 head compute forward_valid."""
    net = _net(**kw)
    x = torch.randn(1, 2, 57, 60, 54)
    ref = net.forward_valid(x)  # outputs 9 x 12 x 6
    out = forward_block(fuse(net), x, [0, 0, 0], list(ref.shape[2:]), head_rows=100)  # many head chunks
    assert out.shape == ref.shape
    assert torch.allclose(out, ref, atol=1e-4, rtol=1e-4), (out - ref).abs().max()


def test_fused_block_computes_unaligned_outputs_exactly():
    """The normal pathway computes exactly the outputs asked for, not the pooling-aligned superset:
    a block [2, 7) x [4, 11) x [1, 5) equals the same voxels of an aligned valid forward."""
    net = _net(**NARROW)
    x = torch.randn(1, 2, 60, 63, 54)
    ref = net.forward_valid(x)  # outputs 12 x 15 x 6, on the pooling grid of x
    out = forward_block(fuse(net), x, [2, 4, 1], [7, 11, 5])
    assert torch.allclose(out, ref[..., 2:7, 4:11, 1:5], atol=1e-5)


def test_fuse_reflects_current_weights():
    net = _net(**NARROW)
    x = torch.randn(1, 2, 51, 51, 51)
    before = forward_block(fuse(net), x, [0, 0, 0], [3, 3, 3])
    with torch.no_grad():
        net.normal.layers[2].norm.running_mean += 1.0
    after = forward_block(fuse(net), x, [0, 0, 0], [3, 3, 3])
    assert not torch.allclose(before, after, atol=1e-3)
    assert torch.allclose(after, net.forward_valid(x), atol=1e-5)


def test_flop_count_matches_the_convolutions_forward_valid_runs():
    net = DeepMedic(2, 2)
    counted = []
    hooks = [m.register_forward_hook(lambda m, i, o: counted.append(
        2 * m.in_channels * m.out_channels * math.prod(m.kernel_size) * o[0, 0].numel()))
        for m in net.modules() if isinstance(m, nn.Conv3d)]
    with torch.no_grad():
        net.eval().forward_valid(torch.zeros(1, 2, 6 + 48, 9 + 48, 12 + 48))
    for h in hooks:
        h.remove()
    assert block_flops(net, (6, 9, 12)) == sum(counted)
    # by hand, the 1^3 head alone: 2 * (100*250 + 250*250 + 250*2) per output voxel
    assert sum(counted[-3:]) == 2 * (100 * 250 + 250 * 250 + 250 * 2) * 6 * 9 * 12
    # the paper's network on a 21 x 240 x 240 case: 1.24 TFLOP (docs/performance.md: 1.235)
    assert block_flops(net, (21, 240, 240)) == pytest.approx(1.2352e12, rel=1e-4)


def test_window_for_by_hand():
    # sqrt(3) * 21 = 36.4 -> 37; sqrt(3) * 240 = 415.7 -> 416 -> odd 417; 1 -> 1 + 2 = 3; 4 -> 6.9 -> 7
    assert window_for([21, 240, 240]) == [37, 417, 417]
    assert window_for([1, 10, 4]) == [3, 19, 7]


def test_gaussian_weight_matches_nnunets_tile_weight():
    from nnunetv2.inference.sliding_window_prediction import compute_gaussian

    window, extent = (15, 41, 33), (9, 30, 20)
    g = compute_gaussian(window, sigma_scale=1. / 8, value_scaling_factor=10, dtype=torch.float64,
                         device=torch.device("cpu"))
    lo = [(w - n) // 2 for w, n in zip(window, extent)]
    corners = [g[z, y, x].item() for z in (lo[0], lo[0] + extent[0] - 1) for y in (lo[1], lo[1] + extent[1] - 1)
               for x in (lo[2], lo[2] + extent[2] - 1)]
    # nnU-Net's discrete kernel differs from the continuous Gaussian by < 1 %
    assert gaussian_weight_at(extent, window) == pytest.approx(min(corners), rel=1e-2)


def _pad_like_nnunet(case: torch.Tensor, window) -> tuple[torch.Tensor, tuple]:
    from acvl_utils.cropping_and_padding.padding import pad_nd_image

    padded, slicer = pad_nd_image(case, window, "constant", {"value": 0}, True, None)
    return padded, slicer


def _whole_volume_reference(net: DenseDeepMedic, case: torch.Tensor) -> torch.Tensor:
    """The generic dense pass: every output whose receptive field touches the case (exact)."""
    return net.forward_dense(case[None])[0]


@pytest.fixture(scope="module")
def window_net():
    return _net(nnunet_window=True, **NARROW)


def test_window_pass_on_a_noisy_background_case_is_exact_and_computes_only_the_case(window_net):
    g = torch.Generator().manual_seed(1)
    case = torch.randn(2, 7, 30, 26, generator=g).abs() + 0.01  # non-zero everywhere: Rician-like background
    window = window_for(case.shape[1:])
    padded, slicer = _pad_like_nnunet(case, window)
    out = window_net(padded[None])[0]
    ref = _whole_volume_reference(window_net, case)
    assert torch.allclose(out[slicer], ref, atol=1e-4)
    # outside the case nothing was computed: the constant response to zeros, which nnU-Net discards
    outside = torch.ones(window, dtype=torch.bool)
    outside[slicer[1:]] = False
    zero = window_net._zero_response(padded[None])
    assert torch.equal(out[:, outside], zero[:, None].expand(-1, int(outside.sum())))
    # the generic pass would have computed a ring of margin + 2 voxels around it: different values there
    generic = window_net.forward_dense(padded[None])[0]
    assert not torch.allclose(generic[:, outside], out[:, outside], atol=1e-3)


def test_window_pass_falls_back_to_the_receptive_field_when_the_box_is_not_the_case(window_net):
    """A case with an all-zero face (not what nnU-Net's crop to non-zero gives) is still exact: its
    non-zero box is off-centre in the window, so every output touching it is computed."""
    g = torch.Generator().manual_seed(2)
    case = torch.randn(2, 7, 30, 26, generator=g)
    case[:, :, :5] = 0  # zero face along y
    padded, slicer = _pad_like_nnunet(case, window_for(case.shape[1:]))
    out = window_net(padded[None])[0]
    assert torch.allclose(out[slicer], _whole_volume_reference(window_net, case), atol=1e-4)


def test_receptive_field_region_can_be_forced():
    net = _net(nnunet_window=True, window_region="receptive_field", **NARROW)
    case = torch.randn(2, 7, 30, 26).abs() + 0.01
    padded, slicer = _pad_like_nnunet(case, window_for(case.shape[1:]))
    assert torch.allclose(net(padded[None])[0], net.forward_dense(padded[None])[0], atol=1e-5)
    with pytest.raises(ValueError, match="window_region"):
        DenseDeepMedic(2, 2, window_region="everything")


def _predictor(net, window):
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    plans = {"dataset_name": "Dataset999_X", "plans_name": "p", "transpose_forward": [0, 1, 2],
             "transpose_backward": [0, 1, 2], "image_reader_writer": "SimpleITKIO", "label_manager": "LabelManager",
             "configurations": {"c": {"patch_size": list(window), "spacing": [1, 1, 1], "architecture": {
                 "network_class_name": "x", "arch_kwargs": {}, "_kw_requires_import": []}}}}
    pm = PlansManager(plans)
    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=False,
                                perform_everything_on_device=False, device=torch.device("cpu"), verbose=False,
                                allow_tqdm=False)
    predictor.manual_initialization(net, pm, pm.get_configuration("c"), None,
                                    {"labels": {"background": 0, "lesion": 1}, "channel_names": {"0": "a", "1": "b"}},
                                    "t", None)
    return predictor


def test_nnunet_predictor_with_the_window_gives_whole_volume_probabilities(window_net):
    case = torch.randn(2, 9, 34, 28).abs() + 0.01
    ref = torch.softmax(_whole_volume_reference(window_net, case), 0)
    # the window sized for this case, and one sized for a case 20 % smaller (this one is then "larger")
    for window in (window_for(case.shape[1:]), window_for([round(0.8 * n) for n in case.shape[1:]])):
        logits = _predictor(window_net, window).predict_sliding_window_return_logits(case).float()
        # nnU-Net accumulates logits in float16: relative error 2^-11 of logits up to ~20 here
        assert torch.allclose(logits, _whole_volume_reference(window_net, case), atol=2e-3 * 20 * 2 ** -1)
        assert torch.allclose(torch.softmax(logits, 0), ref, atol=5e-3), window


def test_case_larger_than_the_window_stops_with_the_window_and_the_size_needed(window_net):
    """nnU-Net would cut a case larger than the window into blended tiles: refused, naming both sizes."""
    case = torch.randn(2, 14, 34, 28).abs() + 0.01
    window = window_for([7, 34, 28])  # sized for 7 slices: [13, 59, 49], so nnU-Net tiles 14 slices
    with pytest.raises(CaseDoesNotFitWindow) as err:
        _predictor(window_net, window).predict_sliding_window_return_logits(case)
    message = str(err.value)
    assert f"inference window {window}" in message and "blended tiles" in message
    assert "plans.json" in message and "window_for" in message


def test_case_too_large_for_float16_tile_weights_is_refused(window_net):
    """Fits the window, but nnU-Net's float16 Gaussian weight would underflow at its corners."""
    window = [15, 45, 39]
    case = torch.randn(2, 13, 43, 37).abs() + 0.01
    assert gaussian_weight_at(case.shape[1:], window) < 2 ** -14
    padded, _ = _pad_like_nnunet(case, window)
    with pytest.raises(CaseDoesNotFitWindow, match="float16"):
        window_net(padded[None])


def test_an_empty_window_is_the_zero_response(window_net):
    x = torch.zeros(1, 2, 9, 21, 15)
    out = window_net(x)
    assert torch.equal(out, window_net._zero_response(x).view(1, -1, 1, 1, 1).expand_as(out))


def test_window_rule_written_by_the_trainer():
    from nnunet_mt.trainers.nnUNetTrainerDeepMedic import dense_arch_kwargs

    assert dense_arch_kwargs({"filters": (8,) * 8}, ["ZScoreNormalization", "CTNormalization"]) == \
        {"filters": (8,) * 8, "nnunet_window": True, "window_region": "nonzero"}
    # min -> 0 can leave an all-zero face on the case: compute every output touching the content
    assert dense_arch_kwargs({}, ["ZScoreNormalization", "RescaleTo01Normalization"])["window_region"] == \
        "receptive_field"
    assert np.all(np.array(window_for([21, 240, 240])) % 2 == 1)
