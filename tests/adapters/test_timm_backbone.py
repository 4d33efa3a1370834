"""TimmBackbone (timm features_only) alone and wrapped by PEFTBackbone."""
import copy
import re

import pytest
import timm
import torch
import torch.nn as nn
from mmdet.registry import MODELS
from mmengine.logging import MMLogger

import lors_det  # noqa: F401
from lors_det.models.adapters import count_trainable_parameters, is_adapter_key
from lors_det.models.backbones import PEFTBackbone, TimmBackbone

RESNET18_CONVS = r'model\.layer\d\.\d+\.conv[12]'


@pytest.fixture(autouse=True)
def quiet_logger():
    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel('ERROR')
    yield
    logger.setLevel(level)


def test_features_and_local_checkpoint_match_the_timm_model(tmp_path):
    torch.manual_seed(0)
    full = timm.create_model('resnet18', pretrained=False).eval()
    path = str(tmp_path / 'resnet18_timm.pth')
    torch.save(full.state_dict(), path)
    backbone = MODELS.build(dict(type='TimmBackbone', model_name='resnet18',
                                 out_indices=(1, 2, 3, 4), checkpoint=path))
    backbone.init_weights()  # a runner-level init must not re-randomise the loaded weights
    backbone.eval()
    assert backbone.out_channels == [64, 128, 256, 512]
    assert backbone.strides == [4, 8, 16, 32]
    assert torch.equal(backbone.model.layer3[1].conv2.weight, full.layer3[1].conv2.weight)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        feats = backbone(x)
        # C2..C5 of the full timm model, computed stage by stage
        h = full.maxpool(full.act1(full.bn1(full.conv1(x))))
        expected = []
        for stage in (full.layer1, full.layer2, full.layer3, full.layer4):
            h = stage(h)
            expected.append(h)
    assert len(feats) == 4
    for a, b in zip(feats, expected):
        assert torch.equal(a, b)


def test_bad_timm_arguments_raise():
    with pytest.raises(ValueError, match='unknown timm model_name'):
        TimmBackbone('resnet_does_not_exist')
    with pytest.raises(FileNotFoundError, match='missing.pth'):
        TimmBackbone('resnet18', checkpoint='/nonexistent/missing.pth')


def _timm_convs(model, pattern):
    return [(n, m.weight.shape[0], m.weight[0].numel(), tuple(m.weight.shape))
            for n, m in model.named_modules()
            if isinstance(m, nn.Conv2d) and re.fullmatch(pattern, n)]


@pytest.mark.parametrize('adapter_type', ['VeRA', 'CondLoRA'])
def test_peft_timm_resnet18_counts_init_and_backward(adapter_type):
    torch.manual_seed(1)
    plain = TimmBackbone('resnet18', out_indices=(1, 2, 3, 4))
    convs = _timm_convs(plain, RESNET18_CONVS)
    assert len(convs) == 16
    rank = 32 if adapter_type == 'VeRA' else 4
    if adapter_type == 'VeRA':
        expected = sum(d_out + rank for _, d_out, _, _ in convs)  # Σ (d_out + r)
    else:
        groups = {(re.sub(r'layer(\d)\.\d+\.', r'layer\1.', n), shape): (d_out, d_in)
                  for n, d_out, d_in, shape in convs}
        # layer1: conv1, conv2; layer2-4: block-0 conv1 (fewer inputs), conv1, conv2
        assert len(groups) == 2 + 3 * 3
        expected = sum(rank * (d_out + d_in) for d_out, d_in in groups.values())
    backbone = PEFTBackbone(module=copy.deepcopy(plain),
                            adapter=dict(type=adapter_type, targets=[RESNET18_CONVS], rank=rank))
    assert count_trainable_parameters(backbone) == expected
    x = torch.randn(2, 3, 64, 64)
    plain.eval(), backbone.eval()
    with torch.no_grad():
        for a, b in zip(plain(x), backbone(x)):
            assert torch.equal(a, b)
    backbone.train()
    sum(f.square().mean() for f in backbone(x)).backward()
    for name, param in backbone.named_parameters():
        assert (param.grad is not None) == is_adapter_key(name), name


def test_peft_timm_vit_qkv_counts_are_depth_independent_for_condlora():
    counts = {}
    for depth in (2, 4):
        backbone = PEFTBackbone(
            module=dict(type='TimmBackbone', model_name='vit_tiny_patch16_224', img_size=32,
                        depth=depth, out_indices=(depth - 1, )),
            adapter=dict(type='CondLoRA', targets=[r'.*blocks\.\d+\.attn\.qkv'], rank=4))
        counts[depth] = count_trainable_parameters(backbone)
        feats = backbone(torch.randn(1, 3, 32, 32))
        assert feats[0].shape == (1, 192, 2, 2)
        feats[0].sum().backward()
        assert all(p.grad is not None for n, p in backbone.named_parameters()
                   if is_adapter_key(n))
    assert counts[2] == counts[4] == 4 * (3 * 192 + 192)  # one θ pair for every qkv (576x192)
