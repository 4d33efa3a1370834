"""PEFTBackbone around mmdet's ResNet: counts, init equivalence, freezing, loading, merging."""
import copy
import math
import re

import pytest
import torch
import torch.nn as nn
from mmdet.models.backbones import ResNet
from mmdet.registry import MODELS
from mmengine.logging import MMLogger

import lors_det  # noqa: F401
from lors_det.models.adapters import (VeRAConv2d, count_trainable_parameters, is_adapter_key,
                                      iter_adapter_layers)
from lors_det.models.backbones import PEFTBackbone

ALL_CONVS = [r'conv1', r'layer\d\.\d+\.(conv[123]|downsample\.0)']
LAYER2_4 = [r'layer[2-4]\.\d+\.(conv[123]|downsample\.0)']


@pytest.fixture(autouse=True)
def quiet_logger():
    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel('WARNING')  # init_weights logs one line per parameter
    yield
    logger.setLevel(level)


def _convs(model, patterns):
    """(name, d_out, d_in·k·k) of the plain ResNet's convs matched by ``patterns``."""
    out = []
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d) and any(re.fullmatch(p, name) for p in patterns):
            out.append((name, m.weight.shape[0], m.weight[0].numel(), tuple(m.weight.shape)))
    return out


def _peft(adapter, depth=50, **resnet):
    return PEFTBackbone(module=dict(type='ResNet', depth=depth, **resnet), adapter=adapter)


@pytest.mark.parametrize('patterns,n_layers,expected', [(ALL_CONVS, 53, 40_128),
                                                        (LAYER2_4, 42, 35_840)])
def test_vera_trainable_count_resnet50(patterns, n_layers, expected):
    convs = _convs(ResNet(depth=50), patterns)
    assert len(convs) == n_layers
    # VeRA: Σ (d_out + r) per wrapped layer, r = 256 (adapters_spec §4 inventory)
    formula = sum(d_out + 256 for _, d_out, _, _ in convs)
    assert formula == expected
    backbone = _peft(dict(type='VeRA', targets=patterns, rank=256))
    assert count_trainable_parameters(backbone) == expected
    assert len(list(iter_adapter_layers(backbone))) == n_layers
    # one shared pair sized by the largest d_in (layer4 conv2: 512·9) and d_out (2048)
    assert backbone.adapter.vera_A.shape == (256, 4608)
    assert backbone.adapter.vera_B.shape == (2048, 256)


@pytest.mark.parametrize('patterns,n_groups,expected', [(ALL_CONVS, 21, 223_384),
                                                        (LAYER2_4, 15, 207_872)])
def test_condlora_trainable_count_resnet50(patterns, n_groups, expected):
    convs = _convs(ResNet(depth=50), patterns)
    # groups = (stage + role without the block index, weight shape)
    groups = {(re.sub(r'^(layer\d)\.\d+\.', r'\1.', name), shape): (d_out, d_in)
              for name, d_out, d_in, shape in convs}
    assert len(groups) == n_groups
    formula = sum(8 * (d_out + d_in) for d_out, d_in in groups.values())
    assert formula == expected
    backbone = _peft(dict(type='CondLoRA', targets=patterns, rank=8))
    assert count_trainable_parameters(backbone) == expected
    assert len(backbone.adapter.groups) == n_groups
    # layer3 conv2 (256,256,3,3) is shared by its 6 blocks: 8·(256 + 2304) = 20,480 parameters
    key = [g for g in backbone.adapter.groups if g.startswith('layer3_conv2')]
    assert len(key) == 1 and len(backbone.adapter.groups[key[0]]) == 6
    theta = backbone.adapter.condlora_theta_A[key[0]].numel() + \
        backbone.adapter.condlora_theta_B[key[0]].numel()
    assert theta == 20_480


@pytest.mark.parametrize('adapter', [dict(type='VeRA', targets=ALL_CONVS, rank=64),
                                     dict(type='CondLoRA', targets=ALL_CONVS, rank=4)])
def test_output_equals_unwrapped_at_init(adapter):
    torch.manual_seed(0)
    plain = ResNet(depth=50)
    plain.init_weights()
    wrapped = PEFTBackbone(module=copy.deepcopy(plain), adapter=adapter)
    plain.eval(), wrapped.eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(plain(x), wrapped(x)):
            assert torch.equal(a, b)


@pytest.mark.parametrize('adapter_type', ['VeRA', 'CondLoRA'])
def test_gradients_reach_only_adapter_and_trainable_params(adapter_type):
    torch.manual_seed(1)
    backbone = PEFTBackbone(
        module=dict(type='ResNet', depth=18, norm_eval=True),
        adapter=dict(type=adapter_type, targets=[r'layer[34]\.\d+\.conv[12]'], rank=4),
        trainable=[r'layer4\.1\.bn2\.'])
    backbone.train()
    outs = backbone(torch.randn(2, 3, 64, 64))
    sum(o.square().mean() for o in outs).backward()
    seen = 0
    for name, param in backbone.named_parameters():
        should_train = is_adapter_key(name) or name.startswith('module.layer4.1.bn2.')
        assert param.requires_grad == should_train, name
        assert (param.grad is not None) == should_train, name
        seen += should_train
    assert seen > 3


def test_frozen_stages_that_would_freeze_adapters_raise():
    with pytest.raises(ValueError, match=r'frozen_stages=1.*layer1\.0\.conv1'):
        _peft(dict(type='VeRA', targets=[r'layer[1-4]\.\d+\.conv1'], rank=4), depth=18,
              frozen_stages=1)
    with pytest.raises(ValueError, match='frozen_stages=0'):  # the stem
        _peft(dict(type='CondLoRA', targets=['conv1'], rank=4), depth=18, frozen_stages=0)
    # adapters outside the frozen stages stay trainable across train()
    backbone = _peft(dict(type='VeRA', targets=[r'layer[2-4]\.\d+\.conv1'], rank=4), depth=18,
                     frozen_stages=1)
    backbone.train()
    lambdas = [p for n, p in backbone.named_parameters() if 'vera_lambda' in n]
    assert len(lambdas) == 2 * 6 and all(p.requires_grad for p in lambdas)


def test_frozen_stages_guard_trainable_parameters_and_leave_modes_alone():
    resnet = dict(type='ResNet', depth=18, frozen_stages=1)
    with pytest.raises(ValueError, match=r'frozen_stages=1.*`trainable` parameters.*'
                       r'module\.layer1\.0\.bn1\.weight'):
        PEFTBackbone(module=resnet, adapter=dict(type='VeRA', targets=[r'layer4\.\d+\.conv1'],
                                                 rank=4), trainable=[r'layer1\.0\.bn1\.'])
    with pytest.raises(ValueError, match='`trainable` parameters'):  # frozen baseline too
        PEFTBackbone(module=resnet, adapter=None, trainable=[r'layer1\.0\.bn1\.'])
    backbone = PEFTBackbone(module=resnet, adapter=dict(
        type='CondLoRA', targets=[r'layer[2-4]\.\d+\.conv1'], rank=4),
        trainable=[r'layer2\.0\.bn1\.'])
    # the probe ran _freeze_stages() (which calls eval()) on a fully trainable copy of the
    # flags, then put every flag back: train/eval modes are those of the plain backbone
    plain = ResNet(depth=18, frozen_stages=1)
    assert [m.training for m in backbone.module.modules()] == [m.training for m in plain.modules()]
    assert backbone.module.layer2.training and not backbone.module.layer1.training
    trainable = sorted(n for n, p in backbone.named_parameters() if p.requires_grad)
    assert trainable == sorted(['module.layer2.0.bn1.weight', 'module.layer2.0.bn1.bias'] + [
        n for n, _ in backbone.adapter.named_parameters(prefix='adapter')])


def test_pattern_matching_nothing_raises():
    with pytest.raises(ValueError, match=re.escape(r"'layer5\.\d+\.conv1' matches no")):
        _peft(dict(type='VeRA', targets=[r'layer1\.\d+\.conv1', r'layer5\.\d+\.conv1']),
              depth=18)


def test_pretrained_init_cfg_fills_wrapped_base_weights(tmp_path):
    torch.manual_seed(2)
    source = ResNet(depth=18)
    source.init_weights()
    path = str(tmp_path / 'resnet18.pth')
    torch.save(dict(state_dict=source.state_dict()), path)
    torch.manual_seed(3)
    backbone = PEFTBackbone(
        module=dict(type='ResNet', depth=18, init_cfg=dict(type='Pretrained', checkpoint=path)),
        adapter=dict(type='VeRA', targets=[r'layer\d\.\d+\.conv[12]'], rank=8, d_initial=0.2))
    wrapped = backbone.module.layer2[1].conv1
    assert isinstance(wrapped, VeRAConv2d)
    assert not torch.equal(wrapped.weight, source.layer2[1].conv1.weight)
    backbone.init_weights()  # what the runner does after building the model
    for key, value in source.state_dict().items():
        assert torch.equal(backbone.state_dict()[key], value), key
    assert torch.count_nonzero(wrapped.vera_lambda_b) == 0
    assert torch.equal(wrapped.vera_lambda_d, torch.full((8,), 0.2))


def test_default_kaiming_init_reaches_wrapped_convs():
    backbone = _peft(dict(type='CondLoRA', targets=[r'layer4\.\d+\.conv2'], rank=4), depth=18)
    wrapped = backbone.module.layer4[1].conv2
    with torch.no_grad():
        wrapped.weight.zero_()
    backbone.init_weights()  # ResNet's default init_cfg: Kaiming(fan_out, normal) on 'Conv2d'
    fan_out = wrapped.weight.shape[0] * 9
    assert abs(wrapped.weight.std().item() / math.sqrt(2 / fan_out) - 1) < 0.05


def test_state_dict_keys_equal_the_plain_backbone():
    plain = ResNet(depth=18)
    backbone = _peft(dict(type='VeRA', targets=[r'layer\d\.\d+\.conv[12]'], rank=8), depth=18)
    keys = list(backbone.state_dict())
    assert [k for k in keys if not is_adapter_key(k)] == list(plain.state_dict())
    assert [k for k in keys if is_adapter_key(k)][-3:] == [
        'adapter.vera_prng_key', 'adapter.vera_A', 'adapter.vera_B']
    # a vanilla detector checkpoint (backbone.*) loads into a detector with PEFTBackbone
    detector = nn.Module()
    detector.backbone = backbone
    reference = nn.Module()
    reference.backbone = plain
    missing, unexpected = detector.load_state_dict(reference.state_dict(), strict=False)
    assert unexpected == [] and missing and all(is_adapter_key(k) for k in missing)
    assert torch.equal(backbone.module.layer1[0].conv1.weight, plain.layer1[0].conv1.weight)
    # and our own checkpoints load back strictly
    detector.load_state_dict(detector.state_dict(), strict=True)
    assert backbone.out_indices == plain.out_indices  # attribute access falls through


@pytest.mark.parametrize('adapter_type', ['VeRA', 'CondLoRA'])
def test_merge_unmerge_and_unload(adapter_type):
    torch.manual_seed(4)
    cfg = dict(type='PEFTBackbone', module=dict(type='ResNet', depth=18),
               adapter=dict(type=adapter_type, targets=ALL_CONVS, rank=4))
    backbone = MODELS.build(cfg)
    backbone.init_weights()
    with torch.no_grad():  # a "trained" adapter
        for name, param in backbone.named_parameters():
            if is_adapter_key(name):
                param.normal_(0, 0.05)
    backbone.eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        before = backbone(x)
        weights0 = {k: v.clone() for k, v in backbone.state_dict().items()}
        assert backbone.merge() == 20
        for a, b in zip(backbone(x), before):
            assert (a - b).abs().max() <= 1e-5 * max(1.0, b.abs().max().item())
        backbone.unmerge()
        for key, value in backbone.state_dict().items():
            assert torch.equal(value, weights0[key]), key
        assert all(torch.equal(a, b) for a, b in zip(backbone(x), before))
        backbone.merge_and_unload()
        assert backbone.adapter is None and not list(iter_adapter_layers(backbone))
        plain = ResNet(depth=18)
        plain.eval()
        plain.load_state_dict(backbone.state_dict(), strict=True)
        assert type(plain.layer1[0].conv1) is nn.Conv2d
        for a, b in zip(plain(x), before):
            assert (a - b).abs().max() <= 1e-5 * max(1.0, b.abs().max().item())
