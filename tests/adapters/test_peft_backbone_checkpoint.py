"""Adapter-only checkpoints (save / load / extract) and the merge CLI."""
import pytest
import torch
import torch.nn as nn
from mmdet.models.backbones import ResNet
from mmengine.logging import MMLogger

import lors_det  # noqa: F401
from lors_det.models.adapters import (adapter_state_dict, is_adapter_key,
                                      load_adapter_checkpoint, save_adapter_checkpoint)
from lors_det.models.adapters.checkpoint import main as checkpoint_cli
from lors_det.models.backbones import PEFTBackbone

TARGETS = [r'layer\d\.\d+\.conv[12]']


@pytest.fixture(autouse=True)
def quiet_logger():
    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel('ERROR')
    yield
    logger.setLevel(level)


class Detector(nn.Module):
    """Stands in for an mmdet detector: keys are prefixed with 'backbone.'."""

    def __init__(self, adapter, base_state):
        super().__init__()
        self.backbone = PEFTBackbone(module=dict(type='ResNet', depth=18), adapter=adapter)
        self.backbone.load_state_dict(base_state, strict=False)
        self.neck = nn.Conv2d(512, 8, 1)

    def forward(self, x):
        return self.neck(self.backbone(x)[-1])


def _trained(detector, seed):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in detector.named_parameters():
            if is_adapter_key(name):
                param.copy_(torch.randn(param.shape, generator=gen) * 0.05)
    return detector


ADAPTERS = [
    dict(type='VeRA', targets=TARGETS, rank=16, save_projection=True),
    dict(type='VeRA', targets=TARGETS, rank=16, save_projection=False, projection_prng_key=5),
    dict(type='CondLoRA', targets=TARGETS, rank=4),
]


@pytest.mark.parametrize('adapter', ADAPTERS, ids=['vera', 'vera-seed-only', 'condlora'])
def test_adapter_only_round_trip(adapter, tmp_path):
    base_state = ResNet(depth=18).state_dict()  # the shared frozen "pretrained" backbone
    torch.manual_seed(0)
    trained = _trained(Detector(adapter, base_state), seed=1).eval()
    path = str(tmp_path / 'adapter.pth')
    saved = save_adapter_checkpoint(trained, path, meta=dict(step=10))
    keys = set(saved['state_dict'])
    assert keys == set(adapter_state_dict(trained)) and all(is_adapter_key(k) for k in keys)
    assert saved['meta']['adapters']['backbone.adapter']['type'] == adapter['type']
    if adapter['type'] == 'VeRA':
        n_layers = 16  # conv1 + conv2 of 8 BasicBlocks
        assert sum(k.endswith('vera_lambda_b') for k in keys) == n_layers
        assert 'backbone.adapter.vera_prng_key' in keys
        assert ('backbone.adapter.vera_A' in keys) == adapter['save_projection']
    else:
        assert all('condlora_theta' in k for k in keys)
    # the base weights are not in the adapter checkpoint: it is small
    assert not any(k.endswith('.weight') and 'conv' in k for k in keys)

    torch.manual_seed(123)  # different global RNG: CondLoRA θ_A init differs before loading
    fresh = Detector(adapter, base_state)
    fresh.neck.load_state_dict(trained.neck.state_dict())
    fresh.eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert not torch.allclose(fresh(x), trained(x))
        missing, unexpected = load_adapter_checkpoint(fresh, path)
        assert missing == [] and unexpected == []
        assert torch.equal(fresh(x), trained(x))


def test_seed_only_checkpoint_restores_projections_of_another_seed(tmp_path):
    base_state = ResNet(depth=18).state_dict()
    trained = _trained(Detector(ADAPTERS[1], base_state), seed=2).eval()  # seed 5
    path = str(tmp_path / 'adapter.pth')
    save_adapter_checkpoint(trained, path)
    other = Detector(dict(ADAPTERS[1], projection_prng_key=0), base_state).eval()
    other.neck.load_state_dict(trained.neck.state_dict())
    load_adapter_checkpoint(other, path)
    assert torch.equal(other.backbone.adapter.vera_A, trained.backbone.adapter.vera_A)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(other(x), trained(x))


def test_mismatched_adapter_checkpoint_raises(tmp_path):
    base_state = ResNet(depth=18).state_dict()
    path = str(tmp_path / 'adapter.pth')
    save_adapter_checkpoint(Detector(ADAPTERS[2], base_state), path)
    with pytest.raises(KeyError, match='missing'):
        load_adapter_checkpoint(Detector(ADAPTERS[0], base_state), path)


def test_cli_extract_and_merge(tmp_path):
    base_state = ResNet(depth=18).state_dict()
    torch.manual_seed(0)
    adapter = dict(type='CondLoRA', targets=TARGETS, rank=4)
    trained = _trained(Detector(adapter, base_state), seed=3).eval()
    # a full mmengine-style checkpoint of the backbone (meta + state_dict)
    full = str(tmp_path / 'epoch_1.pth')
    torch.save(dict(meta=dict(epoch=1), state_dict=trained.backbone.state_dict()), full)

    out = str(tmp_path / 'adapter.pth')
    checkpoint_cli(['extract', full, out])
    extracted = torch.load(out, weights_only=True)['state_dict']
    assert set(extracted) == {k for k in trained.backbone.state_dict() if is_adapter_key(k)}

    config = tmp_path / 'peft_r18.py'
    config.write_text(
        "custom_imports = dict(imports=['lors_det'], allow_failed_imports=False)\n"
        "model = dict(type='PEFTBackbone', module=dict(type='ResNet', depth=18),\n"
        f"             adapter=dict(type='CondLoRA', targets={TARGETS!r}, rank=4))\n")
    merged_path = str(tmp_path / 'merged.pth')
    checkpoint_cli(['merge', str(config), full, merged_path])
    merged = torch.load(merged_path, weights_only=True)['state_dict']
    plain = ResNet(depth=18)
    plain.load_state_dict(merged, strict=True)  # keys of the config without adapters
    plain.eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = trained.backbone(x)
        without_adapter = _plain_forward(base_state, x)
        for a, b, c in zip(plain(x), expected, without_adapter):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-5 * max(1.0, b.abs().max().item()))
            assert (a - c).abs().max() > 1e-3  # the merged adapter changed the features


def _plain_forward(state, x):
    model = ResNet(depth=18)
    model.load_state_dict(state)
    model.eval()
    return model(x)
