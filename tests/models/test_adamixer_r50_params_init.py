"""The R50 model of configs/_base_/models/adamixer_r50.py: exact counts and the final init state."""
import math

import pytest
import torch

from _adamixer_helpers import (build_model, load_model_cfg,  # noqa: F401
                               mmdet_default_scope)


def _count(module):
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(scope='module')
def r50_model():
    torch.manual_seed(0)
    model = build_model(load_model_cfg())
    model.init_weights()
    return model


def test_parameter_counts(r50_model):
    assert _count(r50_model) == 134_790_904
    assert len(r50_model.roi_head.bbox_head) == 6
    for stage in r50_model.roi_head.bbox_head:
        assert _count(stage) == 18_378_716
    assert _count(r50_model.roi_head) == 6 * 18_378_716
    assert _count(r50_model.neck) == 984_576
    assert _count(r50_model.rpn_head) == 26_000
    assert _count(r50_model.backbone) == 23_508_032


def test_300_queries_add_exactly_52000():
    cfg = load_model_cfg()
    cfg.rpn_head.num_query = 300
    cfg.test_cfg.rcnn.max_per_img = 300
    model = build_model(cfg)
    assert _count(model) == 134_790_904 + 52_000


def test_checkpoint_key_names(r50_model):
    keys = set(r50_model.state_dict())
    prefix = 'roi_head.bbox_head.5.'
    for name in ['attention.attn.in_proj_weight', 'attention.attn.out_proj.weight',
                 'attention_norm.weight', 'iof_tau',
                 'sampling_n_mixing.sampling_offset_generator.0.weight',
                 'sampling_n_mixing.adaptive_mixing.parameter_generator.0.weight',
                 'sampling_n_mixing.adaptive_mixing.out_proj.weight',
                 'sampling_n_mixing.norm.weight', 'ffn.layers.0.0.weight', 'ffn.layers.1.weight',
                 'ffn_norm.weight', 'cls_fcs.0.weight', 'cls_fcs.1.weight', 'reg_fcs.0.weight',
                 'reg_fcs.1.weight', 'fc_cls.weight', 'fc_reg.weight']:
        assert prefix + name in keys, name
    assert {'neck.lateral_convs.3.conv.weight', 'neck.lateral_convs.3.conv.bias',
            'neck.gn_out.weight', 'rpn_head.init_proposal_bboxes.weight',
            'rpn_head.init_content_features.weight'} <= keys


def _xavier_bound(linear):
    return math.sqrt(6.0 / (linear.in_features + linear.out_features))


def test_decoder_init_after_model_init_weights(r50_model):
    for stage in r50_model.roi_head.bbox_head:
        snm = stage.sampling_n_mixing
        gen = snm.sampling_offset_generator[0]
        assert torch.equal(gen.weight, torch.zeros_like(gen.weight))
        bias = gen.bias.view(4, 32, 3)
        assert torch.all(bias[..., 2] == -1.0)
        assert bias[..., :2].abs().max() <= 0.5 and bias[..., :2].std() > 0.2

        mix = snm.adaptive_mixing
        pg = mix.parameter_generator[0]
        assert torch.equal(pg.weight, torch.zeros_like(pg.weight))
        # generator bias keeps PyTorch's default U(+-1/sqrt(256))
        assert pg.bias.abs().max() <= 1 / 16 and pg.bias.std() > 0.03
        # out_proj: xavier weight, default bias
        assert mix.out_proj.weight.abs().max() <= _xavier_bound(mix.out_proj)
        assert mix.out_proj.weight.std() > 0.5 * _xavier_bound(mix.out_proj)
        assert mix.out_proj.bias.abs().max() <= 1 / math.sqrt(32768)

        assert torch.equal(stage.fc_reg.weight, torch.zeros_like(stage.fc_reg.weight))
        assert torch.equal(stage.fc_reg.bias, torch.zeros_like(stage.fc_reg.bias))
        torch.testing.assert_close(stage.fc_cls.bias,
                                   torch.full((80, ), -math.log(99.0)), rtol=0, atol=1e-6)
        assert stage.iof_tau.min() >= 0 and stage.iof_tau.max() <= 4

        for linear in [stage.fc_cls, stage.cls_fcs[0], stage.reg_fcs[0],
                       stage.ffn.layers[0][0], stage.ffn.layers[1],
                       stage.attention.attn.out_proj]:
            assert linear.weight.abs().max() <= _xavier_bound(linear)
        # MHA out_proj bias is U(+-1/16) (Linear reset), in_proj bias stays 0
        out_bias = stage.attention.attn.out_proj.bias
        assert out_bias.abs().max() <= 1 / 16 and out_bias.abs().max() > 0
        assert torch.equal(stage.attention.attn.in_proj_bias,
                           torch.zeros_like(stage.attention.attn.in_proj_bias))
        for norm in [stage.attention_norm, stage.ffn_norm, snm.norm, stage.cls_fcs[1]]:
            assert torch.all(norm.weight == 1) and torch.all(norm.bias == 0)


def test_stage_init_is_the_last_word(r50_model):
    """A stage re-initialised on its own ends in the same deterministic state as after the model
    init: nothing that runs after AdaMixerDecoderStage.init_weights changes its parameters."""
    stage = r50_model.roi_head.bbox_head[0]
    snapshot = {k: v.clone() for k, v in stage.state_dict().items()}
    stage.init_weights()
    deterministic = ['sampling_n_mixing.sampling_offset_generator.0.weight',
                     'sampling_n_mixing.adaptive_mixing.parameter_generator.0.weight',
                     'fc_reg.weight', 'fc_reg.bias', 'fc_cls.bias']
    for name in deterministic:
        assert torch.equal(stage.state_dict()[name], snapshot[name]), name
    z_bias = stage.state_dict()['sampling_n_mixing.sampling_offset_generator.0.bias'].view(
        4, 32, 3)[..., 2]
    assert torch.all(z_bias == -1.0)


def test_neck_and_query_init(r50_model):
    neck = r50_model.neck
    for conv_module, c_in in zip(neck.lateral_convs, [256, 512, 1024, 2048]):
        w = conv_module.conv.weight
        assert torch.equal(conv_module.conv.bias, torch.zeros_like(conv_module.conv.bias))
        # The official neck keeps its ConvModules in a plain nn.ModuleList, so its Xavier
        # init_cfg is the last init they see (ConvModule's Kaiming runs only in its constructor):
        # Xavier-uniform, bound sqrt(6 / (c_in + 256)), std bound / sqrt(3).
        bound = math.sqrt(6 / (c_in + 256))
        assert w.abs().max() <= bound
        assert abs(w.std().item() / (bound / math.sqrt(3)) - 1) < 0.03
    assert torch.all(neck.gn_out.weight == 1) and torch.all(neck.gn_out.bias == 0)

    boxes = r50_model.rpn_head.init_proposal_bboxes.weight
    assert torch.equal(boxes, torch.tensor([0.5, 0.5, 1.0, 1.0]).expand(100, 4))
    content = r50_model.rpn_head.init_content_features.weight
    assert abs(content.std().item() - 1) < 0.03 and abs(content.mean().item()) < 0.03
