"""Trainable-parameter counts against the papers' formulas, on a RoBERTa-base-shaped stack, on
ResNet-50/101 and on Swin-T/S. VeRA trains Σ(d_out + r) over the wrapped layers; CondLoRA trains
r(d_out + d_in) per group of layers sharing a role and a shape, so its count does not grow with
depth. Expected values are written from the architectures' published widths, not read back from
the model (the shapes the tests enumerate are only used to cross-check that arithmetic)."""
import re

import pytest
import torch
import torch.nn as nn
from mmdet.models.backbones import ResNet
from mmengine.logging import MMLogger

import lors_det  # noqa: F401
from lors_det.models.adapters import apply_adapter, count_trainable_parameters
from lors_det.models.backbones import PEFTBackbone

from _arch_shapes import condlora_count, resnet_bottleneck_convs, swin_linears, vera_count


@pytest.fixture(autouse=True)
def quiet_logger():
    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel('ERROR')
    yield
    logger.setLevel(level)


# --------------------------------------------------------------------------------------------
# RoBERTa-base: 12 layers, hidden 768, FFN 3072 (module names as in HF transformers)
# --------------------------------------------------------------------------------------------
class RobertaLayerShapes(nn.Module):

    def __init__(self, hidden=768, ffn=3072):
        super().__init__()
        self.attention = nn.Module()
        self.attention.self = nn.Module()
        for name in ('query', 'key', 'value'):
            setattr(self.attention.self, name, nn.Linear(hidden, hidden))
        self.attention.output = nn.Module()
        self.attention.output.dense = nn.Linear(hidden, hidden)
        self.intermediate = nn.Module()
        self.intermediate.dense = nn.Linear(hidden, ffn)
        self.output = nn.Module()
        self.output.dense = nn.Linear(ffn, hidden)


def roberta_shaped(depth=12):
    model = nn.Module()
    model.encoder = nn.Module()
    with torch.device('meta'):  # 85M weights we only count: no memory, no init time
        model.encoder.layer = nn.ModuleList(RobertaLayerShapes() for _ in range(depth))
    return model


ROBERTA_ALL = r'encoder\.layer\.\d+\.(attention\.(self\.(query|key|value)|output\.dense)|' \
    r'intermediate\.dense|output\.dense)'
ROBERTA_QV = r'encoder\.layer\.\d+\.attention\.self\.(query|value)'


@pytest.mark.parametrize('rank', [1, 16, 256])
def test_vera_roberta_base(rank):
    model = roberta_shaped()
    apply_adapter(model, dict(type='VeRA', targets=[ROBERTA_ALL], rank=rank))
    # per layer: 4 attention projections (d_out 768), intermediate (3072), output (768)
    assert count_trainable_parameters(model) == 12 * (5 * (768 + rank) + (3072 + rank))
    model = roberta_shaped()
    apply_adapter(model, dict(type='VeRA', targets=[ROBERTA_QV], rank=rank))
    # VeRA paper Table 1 (query and value, RoBERTa-base): 18,456 at r=1, 24,576 at r=256
    expected = {1: 18_456, 16: 18_816, 256: 24_576}[rank]
    assert count_trainable_parameters(model) == 24 * (768 + rank) == expected
    assert model.adapter.vera_A.shape == (rank, 768) and model.adapter.vera_B.shape == (768, rank)


@pytest.mark.parametrize('depth', [2, 12, 24])
def test_condlora_roberta_base_is_depth_independent(depth):
    model = roberta_shaped(depth)
    apply_adapter(model, dict(type='CondLoRA', targets=[ROBERTA_ALL], rank=8))
    # one θ pair per role: r (d_out + d_in) for q, k, v, attn-out (768x768), 3072x768, 768x3072
    assert len(model.adapter.groups) == 6
    assert count_trainable_parameters(model) == 8 * (4 * 1536 + 2 * 3840) == 110_592
    model = roberta_shaped(depth)
    apply_adapter(model, dict(type='CondLoRA', targets=[ROBERTA_QV], rank=8))
    # CondLoRA paper Table 4 (RoBERTa-base, query and value, r=8): 2 x (768·8 + 768·8)
    assert count_trainable_parameters(model) == 24_576


# --------------------------------------------------------------------------------------------
# ResNet-50 / ResNet-101 (mmdet, style pytorch): layer3 has 6 / 23 bottlenecks
# --------------------------------------------------------------------------------------------
LAYER2_4 = r'layer[2-4]\.\d+\.(conv[123]|downsample\.0)'


@pytest.mark.parametrize('depth,blocks', [(50, (4, 6, 3)), (101, (4, 23, 3))])
def test_resnet_counts_and_condlora_depth_independence(depth, blocks):
    convs = resnet_bottleneck_convs(blocks)
    vera = vera_count(convs, 256)
    condlora, n_groups = condlora_count(convs, 8)
    assert n_groups == 15 and condlora == 207_872  # adapters_spec §4, for both depths
    with torch.device('meta'):
        backbone = PEFTBackbone(module=dict(type='ResNet', depth=depth),
                                adapter=dict(type='VeRA', targets=[LAYER2_4], rank=256))
        assert count_trainable_parameters(backbone) == vera
        backbone = PEFTBackbone(module=dict(type='ResNet', depth=depth),
                                adapter=dict(type='CondLoRA', targets=[LAYER2_4], rank=8))
        assert count_trainable_parameters(backbone) == condlora
    if depth == 50:
        assert vera == 35_840  # adapters_spec §4 inventory


def test_resnet_layer_inventory_matches_mmdet():
    """The hand-written layer list above is the one mmdet builds (guards the formulas)."""
    with torch.device('meta'):
        model = ResNet(depth=101)
    found = sorted((m.weight.shape[0], m.weight[0].numel()) for n, m in model.named_modules()
                   if isinstance(m, nn.Conv2d) and re.fullmatch(LAYER2_4, n))
    assert found == sorted((d_out, d_in) for *_, d_out, d_in in resnet_bottleneck_convs((4, 23, 3)))


# --------------------------------------------------------------------------------------------
# Swin-T (96, depths 2-2-6-2) and Swin-S (96, depths 2-2-18-2)
# --------------------------------------------------------------------------------------------
SWIN_TARGETS = [r'stages\.\d+\.blocks\.\d+\.attn\.w_msa\.(qkv|proj)',
                r'stages\.\d+\.blocks\.\d+\.ffn\.layers\.(0\.0|1)']


@pytest.mark.parametrize('depths,heads', [((2, 2, 6, 2), (3, 6, 12, 24)),
                                          ((2, 2, 18, 2), (3, 6, 12, 24))])
def test_swin_counts_and_condlora_depth_independence(depths, heads):
    layers = swin_linears(depths)
    vera = vera_count(layers, 256)
    condlora, n_groups = condlora_count(layers, 8)
    assert n_groups == 16 and condlora == 184_320  # adapters_spec §4 (Swin-T), also Swin-S
    swin = dict(type='SwinTransformer', depths=depths, num_heads=heads)
    backbone = PEFTBackbone(module=swin,
                            adapter=dict(type='VeRA', targets=SWIN_TARGETS, rank=256))
    assert count_trainable_parameters(backbone) == vera
    assert vera == {6: 52_032, 18: 52_032 + 12 * (3 * 384 + 384 + 4 * 384 + 384 + 4 * 256)}[
        depths[2]]
    del backbone
    backbone = PEFTBackbone(module=swin,
                            adapter=dict(type='CondLoRA', targets=SWIN_TARGETS, rank=8))
    assert count_trainable_parameters(backbone) == condlora
