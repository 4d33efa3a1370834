"""One decoder stage (attention mask, residual = content + PE, outputs) and the neck."""
import math

import pytest
import torch

import lors_det  # noqa: F401
from lors_det.models.layers import bbox_xyxy_to_xyzr, xyzr_position_embedding
from lors_det.models.necks import ChannelMapping
from lors_det.models.roi_heads import AdaMixerDecoderStage
from _adamixer_helpers import mmdet_default_scope  # noqa: F401  (autouse fixture)


def _small_stage(**kwargs):
    cfg = dict(num_classes=3, num_heads=2, feedforward_channels=16, content_dim=16,
               feat_channels=16, in_points=4, out_points=3, n_groups=2)
    cfg.update(kwargs)
    stage = AdaMixerDecoderStage(**cfg)
    stage.init_weights()
    return stage


def _feats(batch=2, dim=16, strides=(4, 8, 16, 32), size=64):
    return [torch.randn(batch, dim, size // s, size // s) for s in strides]


def test_attention_bias_is_log_iof_times_tau():
    torch.manual_seed(0)
    stage = _small_stage()
    boxes = torch.tensor([[[0., 0., 10., 10.], [5., 0., 15., 10.], [100., 100., 110., 120.]]])
    xyzr = bbox_xyxy_to_xyzr(boxes)
    # rows: query i, |i & j| / |i|
    iof = torch.tensor([[1.0, 0.5, 0.0], [0.5, 1.0, 0.0], [0.0, 0.0, 1.0]])
    bias = stage.attention_bias(xyzr)
    assert bias.shape == (1 * 2, 3, 3)
    for h in range(2):
        expected = torch.log(iof + 1e-7) * stage.iof_tau[h]
        torch.testing.assert_close(bias[h], expected, rtol=1e-5, atol=1e-4)
    assert math.isclose(math.log(1e-7), -16.118, abs_tol=1e-3)


def test_attention_uses_content_plus_pe_as_query_key_value_and_residual():
    torch.manual_seed(0)
    stage = _small_stage()
    xyzr = torch.cat([torch.rand(2, 5, 2) * 60, 3 + torch.rand(2, 5, 1),
                      torch.randn(2, 5, 1) * 0.3], dim=-1)
    content = torch.randn(2, 5, 16)
    captured = []
    stage.attention_norm.register_forward_hook(lambda m, inp, out: captured.append(inp[0]))
    stage(_feats(), xyzr, content, (4, 8, 16, 32))
    q = content + xyzr_position_embedding(xyzr, 4)
    mask = stage.attention_bias(xyzr)
    attn_out = stage.attention.attn(q.transpose(0, 1), q.transpose(0, 1), q.transpose(0, 1),
                                    attn_mask=mask)[0].transpose(0, 1)
    torch.testing.assert_close(captured[0], q + attn_out, rtol=1e-5, atol=1e-5)


def test_stage_outputs_and_zero_delta_at_init():
    torch.manual_seed(0)
    stage = _small_stage()
    xyzr = torch.cat([torch.rand(2, 5, 2) * 60, 3 + torch.rand(2, 5, 1),
                      torch.zeros(2, 5, 1)], dim=-1)
    cls, delta, content = stage(_feats(), xyzr, torch.randn(2, 5, 16), (4, 8, 16, 32))
    assert cls.shape == (2, 5, 3) and delta.shape == (2, 5, 4) and content.shape == (2, 5, 16)
    assert torch.equal(delta, torch.zeros_like(delta))
    # the cls logits at init are the prior bias plus a zero-mean xavier term
    assert torch.all(stage.fc_cls.bias == -math.log(99.0))


def test_stage_rejects_init_cfg():
    with pytest.raises(ValueError, match='init_cfg must be None'):
        AdaMixerDecoderStage(content_dim=16, feat_channels=16, num_heads=2, in_points=4,
                             out_points=3, n_groups=2, init_cfg=dict(type='Xavier'))


def test_neck_one_shared_group_norm():
    torch.manual_seed(0)
    neck = ChannelMapping(in_channels=[4, 8, 16], out_channels=32, num_outs=4)
    neck.init_weights()
    assert sorted(k for k in neck.state_dict() if 'gn_out' in k) == ['gn_out.bias', 'gn_out.weight']
    assert neck.lateral_convs[0].conv.bias is not None
    with torch.no_grad():
        neck.gn_out.weight.uniform_(0.5, 1.5)
        neck.gn_out.bias.uniform_(-1, 1)
    inputs = [torch.randn(2, c, 32 // 2 ** i, 32 // 2 ** i) for i, c in enumerate([4, 8, 16])]
    outs = neck(inputs)
    assert [tuple(o.shape) for o in outs] == [(2, 32, 32, 32), (2, 32, 16, 16), (2, 32, 8, 8),
                                              (2, 32, 4, 4)]
    gn = torch.nn.functional.group_norm
    for i, conv in enumerate(neck.lateral_convs):
        lateral = torch.nn.functional.conv2d(inputs[i], conv.conv.weight, conv.conv.bias)
        expected = gn(lateral, 32, neck.gn_out.weight, neck.gn_out.bias, eps=neck.gn_out.eps)
        torch.testing.assert_close(outs[i], expected)  # 1x1 conv, no activation, shared GN
    lateral = torch.nn.functional.conv2d(inputs[2], neck.lateral_convs[2].conv.weight,
                                         neck.lateral_convs[2].conv.bias)
    pooled = torch.nn.functional.avg_pool2d(lateral, 3, 2, 1)
    torch.testing.assert_close(
        outs[3], gn(pooled, 32, neck.gn_out.weight, neck.gn_out.bias, eps=neck.gn_out.eps))


def test_neck_rejects_bad_config():
    with pytest.raises(ValueError, match='num_outs'):
        ChannelMapping(in_channels=[4, 8, 16], out_channels=32, num_outs=2)
    with pytest.raises(ValueError, match='num_groups'):
        ChannelMapping(in_channels=[4, 8], out_channels=20, num_outs=2)


def test_neck_init_xavier_by_default_kaiming_without_init_cfg():
    torch.manual_seed(0)
    neck = ChannelMapping(in_channels=[512], out_channels=256, num_outs=1)
    neck.init_weights()
    w = neck.lateral_convs[0].conv.weight
    bound = math.sqrt(6 / (512 + 256))
    assert w.abs().max() <= bound and abs(w.std().item() / (bound / math.sqrt(3)) - 1) < 0.03
    neck = ChannelMapping(in_channels=[512], out_channels=256, num_outs=1, init_cfg=None)
    neck.init_weights()
    w = neck.lateral_convs[0].conv.weight
    assert abs(w.std().item() / math.sqrt(2 / 256) - 1) < 0.03  # Kaiming normal, fan_out
    assert torch.equal(neck.lateral_convs[0].conv.bias, torch.zeros(256))


def test_stage_attention_has_no_output_dropout_after_a_detr_was_built():
    """mmcv 2.1's MultiheadAttention stores a deprecated `dropout=` argument in its shared
    default `dropout_layer` dict; after mmdet's Deformable DETR (dropout=0.1) is built, every
    attention built with the default would drop 10% of its output. The stage passes its own."""
    from mmcv.cnn.bricks.transformer import MultiheadAttention
    MultiheadAttention(16, 2, dropout=0.1, batch_first=True)  # what a DETR config does
    poisoned = MultiheadAttention(16, 2, batch_first=True)
    assert poisoned.dropout_layer.p == 0.1  # the mmcv behaviour this guards against
    stage = _small_stage()
    assert isinstance(stage.attention.dropout_layer, torch.nn.Dropout)
    assert stage.attention.dropout_layer.p == 0.0
