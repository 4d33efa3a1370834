"""Adapter checkpoints (save / load / extract / compose), the hook that writes them during
training beside the full ones, and the merge tool."""
import importlib.util
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from mmdet.models.backbones import ResNet
from mmengine.logging import MMLogger
from mmengine.model import BaseModel

import lors_det  # noqa: F401
from lors_det.models.adapters import (adapter_checkpoint_path, adapter_state_dict,
                                      frozen_base_keys, is_adapter_key, load_adapter_checkpoint,
                                      save_adapter_checkpoint)
from lors_det.models.backbones import PEFTBackbone

REPO = Path(__file__).resolve().parents[2]
TARGETS = [r'layer\d\.\d+\.conv[12]']
SMALL_RESNET = dict(type='ResNet', depth=18, base_channels=8)  # C5 has 64 channels


@pytest.fixture(autouse=True)
def quiet_logger():
    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel('ERROR')
    yield
    logger.setLevel(level)


def _cli():
    spec = importlib.util.spec_from_file_location(
        'adapter_ckpt', REPO / 'tools' / 'model_converters' / 'adapter_ckpt.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


class Detector(BaseModel):
    """Stands in for an mmdet detector: 'backbone.' keys, a neck trained from scratch."""

    def __init__(self, adapter, base_state=None, trainable=(), pretrained=None):
        super().__init__()
        module = SMALL_RESNET if pretrained is None else dict(
            SMALL_RESNET, init_cfg=dict(type='Pretrained', checkpoint=pretrained))
        self.backbone = PEFTBackbone(module=module, adapter=adapter, trainable=trainable)
        if base_state is not None:  # the frozen "pretrained" base
            self.backbone.load_state_dict(base_state, strict=False)
        self.neck = nn.Conv2d(64, 4, 1)

    def forward(self, inputs, data_samples=None, mode='tensor'):
        out = self.neck(self.backbone(inputs)[-1])
        return dict(loss=out.square().mean()) if mode == 'loss' else out


def _base_state():
    torch.manual_seed(100)
    return ResNet(**{k: v for k, v in SMALL_RESNET.items() if k != 'type'}).state_dict()


def _trained(detector, seed, scale=0.05):
    """Random adapter (and neck) values, as if trained."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in detector.named_parameters():
            if param.requires_grad:
                param.copy_(torch.randn(param.shape, generator=gen) * scale)
    return detector


ADAPTERS = [
    dict(type='VeRA', targets=TARGETS, rank=16, save_projection=True),
    dict(type='VeRA', targets=TARGETS, rank=16, save_projection=False, projection_prng_key=5),
    dict(type='CondLoRA', targets=TARGETS, rank=4),
]
IDS = ['vera', 'vera-seed-only', 'condlora']


@pytest.mark.parametrize('adapter', ADAPTERS, ids=IDS)
def test_adapter_only_round_trip(adapter, tmp_path):
    base_state = _base_state()
    torch.manual_seed(0)
    trained = _trained(Detector(adapter, base_state), seed=1).eval()
    path = str(tmp_path / 'adapter.pth')
    saved = save_adapter_checkpoint(trained, path, meta=dict(step=10))
    keys = set(saved['state_dict'])
    assert keys == {k for k in trained.state_dict() if is_adapter_key(k)}
    assert saved['meta']['adapter_checkpoint'] == 'adapter'
    assert saved['meta']['adapters']['backbone.adapter']['type'] == adapter['type']
    if adapter['type'] == 'VeRA':
        # b (d_out) and d (r) of conv1 + conv2 of the 8 BasicBlocks, plus the seed
        assert sum(k.endswith('vera_lambda_b') for k in keys) == 16
        assert sum(k.endswith('vera_lambda_d') for k in keys) == 16
        assert 'backbone.adapter.vera_prng_key' in keys
        assert ('backbone.adapter.vera_A' in keys) == adapter['save_projection']
    else:
        assert keys and all('.condlora_theta_' in k for k in keys)

    torch.manual_seed(123)  # different global RNG: CondLoRA θ_A init differs before loading
    fresh = Detector(adapter, base_state)
    fresh.neck.load_state_dict(trained.neck.state_dict())
    fresh.eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert not torch.allclose(fresh(x), trained(x))
        missing, unexpected = load_adapter_checkpoint(fresh, path)
        assert missing == [] and unexpected == []
        assert torch.equal(fresh(x), trained(x))


@pytest.mark.parametrize('adapter', ADAPTERS, ids=IDS)
def test_trainable_contents_rebuild_the_detector(adapter, tmp_path):
    base_state = _base_state()
    torch.manual_seed(0)
    trainable = [r'module\.layer4\.1\.bn2\.']
    trained = _trained(Detector(adapter, base_state, trainable), seed=2).eval()
    state = trained.state_dict()
    frozen = frozen_base_keys(trained)
    # frozen = every backbone parameter but the adapter and the `trainable` BN, nothing else
    backbone_params = {'backbone.' + k for k, v in ResNet(depth=18, base_channels=8)
                       .named_parameters()}
    assert frozen == backbone_params - {'backbone.layer4.1.bn2.weight',
                                        'backbone.layer4.1.bn2.bias'}
    path = str(tmp_path / 'epoch_1_adapter.pth')
    saved = save_adapter_checkpoint(trained, path, contents='trainable')
    assert set(saved['state_dict']) == set(state) - frozen
    assert 'neck.weight' in saved['state_dict']
    assert 'backbone.layer1.0.bn1.running_mean' in saved['state_dict']  # buffers are kept
    # far smaller than the full state: no frozen conv weights
    assert sum(v.numel() for v in saved['state_dict'].values()) < \
        0.1 * sum(v.numel() for v in state.values())

    torch.manual_seed(7)
    fresh = Detector(adapter, base_state, trainable).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert not torch.allclose(fresh(x), trained(x))
        assert load_adapter_checkpoint(fresh, path) == ([], [])
        assert torch.equal(fresh(x), trained(x))
    # a full checkpoint loads the same way (its frozen base entries are ignored)
    other = Detector(adapter, base_state, trainable).eval()
    assert load_adapter_checkpoint(other, dict(state_dict=state)) == ([], [])
    with torch.no_grad():
        assert torch.equal(other(x), trained(x))


def test_seed_only_checkpoint_restores_projections_of_another_seed(tmp_path):
    base_state = _base_state()
    trained = _trained(Detector(ADAPTERS[1], base_state), seed=2).eval()  # seed 5
    path = str(tmp_path / 'adapter.pth')
    save_adapter_checkpoint(trained, path)
    other = Detector(dict(ADAPTERS[1], projection_prng_key=0), base_state).eval()
    assert not torch.equal(other.backbone.adapter.vera_A, trained.backbone.adapter.vera_A)
    other.neck.load_state_dict(trained.neck.state_dict())
    load_adapter_checkpoint(other, path)
    assert torch.equal(other.backbone.adapter.vera_A, trained.backbone.adapter.vera_A)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(other(x), trained(x))


def test_mismatched_adapter_checkpoint_raises(tmp_path):
    base_state = _base_state()
    path = str(tmp_path / 'adapter.pth')
    save_adapter_checkpoint(Detector(ADAPTERS[2], base_state), path)
    with pytest.raises(KeyError, match='missing'):
        load_adapter_checkpoint(Detector(ADAPTERS[0], base_state), path)
    with pytest.raises(ValueError, match='no adapter state'):
        save_adapter_checkpoint(ResNet(depth=18), str(tmp_path / 'x.pth'))


def test_saving_a_merged_model_stores_w0_and_loading_into_it_raises():
    base_state = _base_state()
    trained = _trained(Detector(ADAPTERS[2], base_state), seed=4).eval()
    before = {k: v.clone() for k, v in trained.state_dict().items()}
    trained.backbone.merge()
    conv = trained.backbone.module.layer2[0].conv1
    assert not torch.equal(conv.weight, before['backbone.layer2.0.conv1.weight'])
    after = trained.state_dict()
    assert after.keys() == before.keys()
    for key, value in before.items():  # (W0, adapter): never ΔW twice once reloaded
        assert torch.equal(after[key], value), key
    with pytest.raises(RuntimeError, match='unmerge'):
        trained.load_state_dict(before)


CONFIG = """custom_imports = dict(imports=['lors_det'], allow_failed_imports=False)
model = dict(type='PEFTBackbone', module=dict(type='ResNet', depth=18, base_channels=8,
             init_cfg=dict(type='Pretrained', checkpoint={pretrained!r})),
             adapter=dict(type='CondLoRA', targets={targets!r}, rank=4))
"""


def test_cli_extract_compose_and_merge(tmp_path):
    main = _cli()
    base_state = _base_state()
    pretrained = str(tmp_path / 'pretrained.pth')
    torch.save(dict(state_dict=base_state), pretrained)
    config = tmp_path / 'peft_r18.py'
    config.write_text(CONFIG.format(pretrained=pretrained, targets=TARGETS))
    torch.manual_seed(0)
    trained = _trained(PEFTBackbone(module=SMALL_RESNET, adapter=ADAPTERS[2]), seed=3, scale=0.3)
    trained.load_state_dict(base_state, strict=False)
    trained.eval()
    full = str(tmp_path / 'epoch_1.pth')  # an mmengine-style full checkpoint (meta + state)
    torch.save(dict(meta=dict(epoch=1), state_dict=trained.state_dict()), full)

    only = str(tmp_path / 'adapter.pth')
    main(['extract', full, only, '--contents', 'adapter'])
    extracted = torch.load(only, weights_only=True)
    assert set(extracted['state_dict']) == {k for k in trained.state_dict() if is_adapter_key(k)}
    assert extracted['meta']['adapter_checkpoint'] == 'adapter'
    rest = str(tmp_path / 'trainable.pth')
    main(['extract', full, rest, '--config', str(config)])
    extracted = torch.load(rest, weights_only=True)['state_dict']
    assert set(extracted) == set(trained.state_dict()) - frozen_base_keys(trained)

    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        expected = trained(x)
    # compose: pretrained base from the config's init_cfg + the adapter file -> full checkpoint
    composed = str(tmp_path / 'composed.pth')
    main(['compose', str(config), rest, composed])
    rebuilt = PEFTBackbone(module=SMALL_RESNET, adapter=ADAPTERS[2]).eval()
    rebuilt.load_state_dict(torch.load(composed, weights_only=True)['state_dict'], strict=True)
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(rebuilt(x), expected))

    merged_path = str(tmp_path / 'merged.pth')
    main(['merge', str(config), full, merged_path])
    merged = torch.load(merged_path, weights_only=True)['state_dict']
    plain = ResNet(depth=18, base_channels=8)
    plain.load_state_dict(merged, strict=True)  # keys of the config without adapters
    plain.eval()
    unadapted = ResNet(depth=18, base_channels=8)
    unadapted.load_state_dict(base_state)
    unadapted.eval()
    with torch.no_grad():
        for a, b, c in zip(plain(x), expected, unadapted(x)):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
            assert (a - c).abs().max() > 1e-2  # the merged adapter changed the features
    with pytest.raises(ValueError, match='needs the config'):
        main(['extract', full, only, '--contents', 'trainable'])


class _Data(torch.utils.data.Dataset):

    def __len__(self):
        return 4

    def __getitem__(self, index):
        return dict(inputs=torch.randn(3, 32, 32, generator=torch.Generator().manual_seed(index)))


def test_hook_writes_adapter_checkpoints_beside_full_ones(tmp_path):
    from mmengine.runner import Runner

    pretrained = str(tmp_path / 'pretrained.pth')
    torch.save(dict(state_dict=_base_state()), pretrained)  # loaded by the runner's init
    torch.manual_seed(0)
    model = Detector(ADAPTERS[0], pretrained=pretrained)
    runner = Runner(
        model=model, work_dir=str(tmp_path), log_level='ERROR',
        train_dataloader=dict(dataset=_Data(), batch_size=2, num_workers=0,
                              sampler=dict(type='DefaultSampler', shuffle=False),
                              collate_fn=dict(type='default_collate')),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1)),
        train_cfg=dict(by_epoch=True, max_epochs=2),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=1)),
        custom_hooks=[dict(type='AdapterCheckpointHook')],
        default_scope='mmdet')
    runner.train()
    assert sorted(p.name for p in tmp_path.glob('epoch_*.pth')) == [
        'epoch_1.pth', 'epoch_1_adapter.pth', 'epoch_2.pth', 'epoch_2_adapter.pth']
    for epoch in (1, 2):
        full = tmp_path / f'epoch_{epoch}.pth'
        path = adapter_checkpoint_path(str(full))
        assert path == str(tmp_path / f'epoch_{epoch}_adapter.pth')
        saved = torch.load(path, weights_only=True)
        state = torch.load(str(full), weights_only=False)['state_dict']
        assert saved['meta']['full_checkpoint'] == str(full)
        assert saved['meta']['adapter_checkpoint'] == 'trainable'
        assert set(saved['state_dict']) == set(state) - frozen_base_keys(model)
        for key, value in saved['state_dict'].items():
            assert torch.equal(value, state[key]), key
    # it trained: the adapter moved between the two epochs
    first = torch.load(str(tmp_path / 'epoch_1_adapter.pth'), weights_only=True)['state_dict']
    assert not torch.equal(first['backbone.layer1.0.conv1.vera_lambda_b'],
                           saved['state_dict']['backbone.layer1.0.conv1.vera_lambda_b'])
    assert adapter_state_dict(model).keys() <= saved['state_dict'].keys()
