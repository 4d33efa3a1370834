"""PEFTBackbone around mmdet's SwinTransformer (Swin re-initialises every nn.Linear itself)."""
import copy

import pytest
import torch
from mmdet.models.backbones import SwinTransformer
from mmengine.logging import MMLogger

import lors_det  # noqa: F401
from lors_det.models.adapters import (CondLoRALinear, VeRALinear, count_trainable_parameters,
                                      is_adapter_key)
from lors_det.models.backbones import PEFTBackbone

ATTN = r'stages\.\d+\.blocks\.\d+\.attn\.w_msa\.(qkv|proj)'
FFN = r'stages\.\d+\.blocks\.\d+\.ffn\.layers\.(0\.0|1)'
SMALL_SWIN = dict(type='SwinTransformer', pretrain_img_size=64, embed_dims=16,
                  depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4), window_size=4, drop_path_rate=0.)


@pytest.fixture(autouse=True)
def quiet_logger():
    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel('ERROR')
    yield
    logger.setLevel(level)


def _swin_linears(embed=96, depths=(2, 2, 6, 2), mlp_ratio=4, roles=('qkv', 'proj', 'fc1',
                                                                         'fc2')):
    """(stage, role, d_out, d_in) of every targeted Linear of a Swin, from its dimensions."""
    out = []
    for stage, depth in enumerate(depths):
        dim = embed * 2**stage
        shapes = dict(qkv=(3 * dim, dim), proj=(dim, dim), fc1=(mlp_ratio * dim, dim),
                      fc2=(dim, mlp_ratio * dim))
        out += [(stage, role, *shapes[role]) for _ in range(depth) for role in roles]
    return out


@pytest.mark.parametrize('targets,roles,vera,condlora', [
    ([ATTN, FFN], ('qkv', 'proj', 'fc1', 'fc2'), 52_032, 184_320),
    ([ATTN], ('qkv', 'proj'), 23_808, 69_120),
])
def test_counts_on_swin_t_dims(targets, roles, vera, condlora):
    layers = _swin_linears(roles=roles)
    assert sum(d_out + 256 for _, _, d_out, _ in layers) == vera  # VeRA r=256: Σ(d_out + r)
    groups = {(stage, role): (d_out, d_in) for stage, role, d_out, d_in in layers}
    assert sum(8 * (d_out + d_in) for d_out, d_in in groups.values()) == condlora
    swin_t = dict(type='SwinTransformer')  # mmdet defaults are Swin-T: 96, (2, 2, 6, 2)
    backbone = PEFTBackbone(module=swin_t, adapter=dict(type='VeRA', targets=targets, rank=256))
    assert count_trainable_parameters(backbone) == vera
    max_in = max(d_in for *_, d_in in layers)
    max_out = max(d_out for _, _, d_out, _ in layers)
    assert backbone.adapter.vera_A.shape == (256, max_in)
    assert backbone.adapter.vera_B.shape == (max_out, 256)
    backbone = PEFTBackbone(module=swin_t,
                            adapter=dict(type='CondLoRA', targets=targets, rank=8))
    assert count_trainable_parameters(backbone) == condlora
    assert len(backbone.adapter.groups) == len(groups)


@pytest.mark.parametrize('adapter_type', ['VeRA', 'CondLoRA'])
def test_output_equal_at_init_and_gradients_only_on_adapters(adapter_type):
    torch.manual_seed(0)
    plain = SwinTransformer(**{k: v for k, v in SMALL_SWIN.items() if k != 'type'})
    plain.init_weights()
    backbone = PEFTBackbone(module=copy.deepcopy(plain),
                            adapter=dict(type=adapter_type, targets=[ATTN, FFN], rank=4))
    assert isinstance(backbone.module.stages[1].blocks[0].ffn.layers[1],
                      VeRALinear if adapter_type == 'VeRA' else CondLoRALinear)
    x = torch.randn(2, 3, 64, 64)
    plain.eval(), backbone.eval()
    with torch.no_grad():
        for a, b in zip(plain(x), backbone(x)):
            assert torch.equal(a, b)
    backbone.train()
    sum(o.square().mean() for o in backbone(x)).backward()
    for name, param in backbone.named_parameters():
        assert param.requires_grad == is_adapter_key(name), name
        assert (param.grad is not None) == is_adapter_key(name), name


@pytest.mark.parametrize('adapter_type', ['VeRA', 'CondLoRA'])
def test_swin_init_weights_leaves_adapter_state_alone(adapter_type):
    torch.manual_seed(1)
    backbone = PEFTBackbone(module=SMALL_SWIN,
                            adapter=dict(type=adapter_type, targets=[ATTN, FFN], rank=4))
    with torch.no_grad():
        for name, param in backbone.named_parameters():
            if is_adapter_key(name):
                param.uniform_(0.5, 1.0)
    adapter_state = {k: v.clone() for k, v in backbone.state_dict().items() if is_adapter_key(k)}
    qkv = backbone.module.stages[0].blocks[0].attn.w_msa.qkv
    with torch.no_grad():
        qkv.weight.fill_(3.0)
    backbone.init_weights()  # Swin: trunc_normal_ on every nn.Linear in self.modules()
    assert qkv.weight.abs().max() < 1.0  # the wrapped Linear was re-initialised ...
    for key, value in backbone.state_dict().items():  # ... its adapter state was not
        if is_adapter_key(key):
            assert torch.equal(value, adapter_state[key]), key


def test_swin_pretrained_init_cfg_fills_wrapped_base_weights(tmp_path):
    torch.manual_seed(2)
    source = SwinTransformer(**{k: v for k, v in SMALL_SWIN.items() if k != 'type'})
    source.init_weights()
    path = str(tmp_path / 'swin.pth')
    # mmdet's Swin loader keeps only 'backbone.'-prefixed keys (detector checkpoints)
    torch.save(dict(state_dict={'backbone.' + k: v for k, v in source.state_dict().items()}),
               path)
    torch.manual_seed(3)
    backbone = PEFTBackbone(
        module=dict(SMALL_SWIN, init_cfg=dict(type='Pretrained', checkpoint=path)),
        adapter=dict(type='CondLoRA', targets=[ATTN, FFN], rank=4))
    theta = {k: v.clone() for k, v in backbone.adapter.state_dict().items()}
    backbone.init_weights()
    state = backbone.state_dict()
    for key, value in source.state_dict().items():
        assert torch.equal(state[key], value), key
    for key, value in backbone.adapter.state_dict().items():
        assert torch.equal(value, theta[key])


def test_swin_frozen_stages_conflict_raises():
    with pytest.raises(ValueError, match=r'frozen_stages=1.*stages\.0\.blocks\.0'):
        PEFTBackbone(module=dict(SMALL_SWIN, frozen_stages=1),
                     adapter=dict(type='VeRA', targets=[ATTN], rank=4))
    backbone = PEFTBackbone(
        module=dict(SMALL_SWIN, frozen_stages=1),
        adapter=dict(type='VeRA', targets=[r'stages\.[1-3]\.blocks\.\d+\.attn\.w_msa\.qkv'],
                     rank=4))
    backbone.train()
    assert count_trainable_parameters(backbone) == sum(
        d_out + 4 for _, _, d_out, _ in _swin_linears(16, (2, 2, 2, 2), roles=('qkv',))[2:])


@pytest.mark.parametrize('adapter_type', ['VeRA', 'CondLoRA'])
def test_swin_merge_round_trip(adapter_type):
    torch.manual_seed(4)
    backbone = PEFTBackbone(module=SMALL_SWIN,
                            adapter=dict(type=adapter_type, targets=[ATTN, FFN], rank=4))
    backbone.init_weights()
    with torch.no_grad():
        for name, param in backbone.named_parameters():
            if is_adapter_key(name):
                param.normal_(0, 0.1)
    backbone.eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        before = backbone(x)
        weights0 = {k: v.clone() for k, v in backbone.state_dict().items()}
        backbone.merge()
        for a, b in zip(backbone(x), before):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
            assert not torch.equal(a, b)  # the adapter did contribute
        backbone.unmerge()
        for key, value in backbone.state_dict().items():
            assert torch.equal(value, weights0[key]), key
