"""xyzr box parameterisation, refinement, sinusoidal PE and the initial queries."""
import math

import pytest
import torch

from _adamixer_helpers import make_data_samples, mmdet_default_scope  # noqa: F401
from lors_det.models.dense_heads import InitialQueryGenerator
from lors_det.models.layers import (bbox_xyxy_to_xyzr, refine_xyzr, xyzr_position_embedding,
                                    xyzr_to_bbox_xyxy, xyzr_to_wh)


def test_xyzr_of_a_hand_box():
    # 40 x 10 box centred at (30, 25): z = log2(sqrt(400)) = log2(20), r = log2(10/40) = -2
    box = torch.tensor([[10., 20., 50., 30.]], dtype=torch.float64)
    xyzr = bbox_xyxy_to_xyzr(box)
    expected = torch.tensor([[30., 25., math.log2(20.), -2.]], dtype=torch.float64)
    torch.testing.assert_close(xyzr, expected)
    torch.testing.assert_close(xyzr_to_wh(xyzr), torch.tensor([[40., 10.]], dtype=torch.float64))


def test_encode_decode_round_trip():
    torch.manual_seed(0)
    xy1 = torch.rand(2, 7, 2, dtype=torch.float64) * 500
    wh = torch.rand(2, 7, 2, dtype=torch.float64) * 300 + 1
    boxes = torch.cat([xy1, xy1 + wh], dim=-1)
    torch.testing.assert_close(xyzr_to_bbox_xyxy(bbox_xyxy_to_xyzr(boxes)), boxes)
    xyzr = torch.cat([xy1, torch.rand(2, 7, 1, dtype=torch.float64) * 8,
                      torch.randn(2, 7, 1, dtype=torch.float64)], dim=-1)
    torch.testing.assert_close(bbox_xyxy_to_xyzr(xyzr_to_bbox_xyxy(xyzr)), xyzr)


def test_refine_with_zero_delta_is_identity():
    torch.manual_seed(0)
    xyzr = torch.cat([torch.rand(3, 5, 2) * 800, torch.rand(3, 5, 1) * 9, torch.randn(3, 5, 1)],
                     dim=-1)
    refined = refine_xyzr(xyzr, torch.zeros_like(xyzr))
    assert torch.equal(refined, xyzr)
    assert torch.equal(xyzr_to_bbox_xyxy(refined), xyzr_to_bbox_xyxy(xyzr))


def test_refine_scales_centre_offsets_by_geometric_size():
    xyzr = torch.tensor([[100., 50., 3., 1.]], dtype=torch.float64)   # 2**z = 8
    delta = torch.tensor([[0.5, -0.25, 0.5, -2.]], dtype=torch.float64)
    expected = torch.tensor([[104., 48., 3.5, -1.]], dtype=torch.float64)
    torch.testing.assert_close(refine_xyzr(xyzr, delta), expected)


def _pe_reference(xyzr, num_feats, temperature=10000.):
    """Float64 formula: per coordinate v (x,y scaled by 1/1000), pairs sin/cos(v / T^(2k/F))."""
    out = []
    for coord, unit in zip(xyzr.tolist(), (1000., 1000., 1., 1.)):
        v = coord / unit
        for k in range(num_feats // 2):
            freq = temperature ** (2 * k / num_feats)
            out += [math.sin(v / freq), math.cos(v / freq)]
    return torch.tensor(out, dtype=torch.float64)


def test_position_embedding_matches_formula():
    xyzr = torch.tensor([[[666.5, 400., 10.01, -0.737], [12.0, 900., 3.2, 1.5]]],
                        dtype=torch.float64)
    pe = xyzr_position_embedding(xyzr, 64)
    assert pe.shape == (1, 2, 256)
    for n in range(2):
        torch.testing.assert_close(pe[0, n], _pe_reference(xyzr[0, n], 64), rtol=0, atol=1e-12)
    # the float32 path agrees with the float64 formula
    pe32 = xyzr_position_embedding(xyzr.float(), 64)
    torch.testing.assert_close(pe32.double(), pe, rtol=0, atol=2e-6)


def test_position_embedding_rejects_odd_feats():
    with pytest.raises(ValueError, match='num_feats'):
        xyzr_position_embedding(torch.zeros(1, 4), 3)


def test_initial_queries_for_1333x800_image():
    head = InitialQueryGenerator(num_query=4, content_dim=16, train_cfg=None, test_cfg=None,
                                 num_classes=1)
    head.init_weights()
    samples = make_data_samples([(800, 1333), (600, 1000)], (800, 1344))
    _, results = head.loss_and_predict(None, samples)
    expected = torch.tensor([666.5, 400., math.log2(math.sqrt(1333 * 800)),
                             math.log2(800 / 1333)])
    assert abs(expected[2].item() - 10.01) < 0.01 and abs(expected[3].item() + 0.737) < 1e-3
    torch.testing.assert_close(results[0].xyzr, expected.expand(4, 4))
    torch.testing.assert_close(results[0].bboxes, torch.tensor([[0., 0., 1333., 800.]] * 4))
    torch.testing.assert_close(results[0].imgs_whwh, torch.tensor([[1333., 800., 1333., 800.]] * 4))
    # the second image uses its own unpadded shape
    torch.testing.assert_close(results[1].bboxes, torch.tensor([[0., 0., 1000., 600.]] * 4))
    # positions are detached; contents carry gradients and are non-affine layer-normed
    assert not results[0].xyzr.requires_grad and not results[0].bboxes.requires_grad
    content = results[0].features
    assert content.requires_grad
    raw = head.init_content_features.weight.detach().double()
    ref = (raw - raw.mean(-1, keepdim=True)) / torch.sqrt(raw.var(-1, unbiased=False,
                                                                  keepdim=True) + 1e-5)
    torch.testing.assert_close(content.detach().double(), ref, rtol=0, atol=1e-5)
    # predict gives the same queries and the generator has no loss
    pred = head.predict(None, samples)
    torch.testing.assert_close(pred[0].xyzr, results[0].xyzr)
    losses, _ = head.loss_and_predict(None, samples)
    assert losses == {}
