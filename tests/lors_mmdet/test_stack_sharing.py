"""LORS on mmdet's own stacked decoders (``LORSSharing``), built from the shipped configs.

Parameter counts are derived from the architectures (mmdet 3.3 modules):

* Linear(i, o) has ``i*o + o`` parameters (``i*o`` without bias), LayerNorm(d) ``2d``,
  nn.MultiheadAttention(d) ``3d*d + 3d`` (packed in-projection) ``+ d*d + d`` (out);
* a LORS^T layer of rank r on Linear(i, o) owns ``r*(i + o)`` (B, A) ``+ o`` (its bias, when
  the Linear has one);
* a LORS^A term of rank k on a generated (d x h) block owns a core generator
  Linear(D, k*k) and ``k*(d + h)`` (B, A).
"""
import copy
import json
import os.path as osp

import mmdet
import pytest
import torch
from mmdet.registry import MODELS
from mmdet.structures import DetDataSample
from mmengine.config import Config
from mmengine.structures import InstanceData

from lors_det.models.lors import (AdaptiveLowRankGenerator, LowRankResidualLinear,
                                  count_stack_parameters, fold_lors_stacks)
from lors_det.models.lors.stack_sharing import LORS_LAYERS, apply_lors

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
MMDET_CONFIGS = osp.join(osp.dirname(mmdet.__file__), '.mim', 'configs')

# family: (plain demo, LORS demo, LORS COCO config, stock mmdet COCO config)
FAMILIES = {
    'sparse-rcnn': ('demo/sparse-rcnn_tiny_1xb8-demo_digits.py',
                    'demo/sparse-rcnn-lors_tiny_1xb8-demo_digits.py',
                    'sparse_rcnn/sparse-rcnn-lors_r50_fpn_1x_coco.py',
                    'sparse_rcnn/sparse-rcnn_r50_fpn_1x_coco.py'),
    'deformable-detr': ('demo/deformable-detr_tiny_1xb8-demo_digits.py',
                        'demo/deformable-detr-lors_tiny_1xb8-demo_digits.py',
                        'deformable_detr/deformable-detr-lors_r50_16xb2-50e_coco.py',
                        'deformable_detr/deformable-detr_r50_16xb2-50e_coco.py'),
    'dino': ('demo/dino-4scale_tiny_1xb8-demo_digits.py',
             'demo/dino-4scale-lors_tiny_1xb8-demo_digits.py',
             'dino/dino-4scale-lors_r50_8xb2-12e_coco.py',
             'dino/dino-4scale_r50_8xb2-12e_coco.py'),
}


def linear(i, o, bias=True):
    return i * o + (o if bias else 0)


def layer_norm(d):
    return 2 * d


def mha(d):
    return 3 * d * d + 3 * d + linear(d, d)


def lors_t(i, o, r, bias=True):
    return r * (i + o) + (o if bias else 0)


def lors_a_term(query_dim, blocks, k):
    return sum(linear(query_dim, k * k) + k * (d + h) for d, h in blocks)


def _offline(cfg):
    """No pretrained downloads in tests."""
    cfg.model.backbone.init_cfg = None
    return cfg


def load(rel_path):
    return _offline(Config.fromfile(osp.join(REPO, 'configs', rel_path)))


def load_stock(rel_path):
    return _offline(Config.fromfile(osp.join(MMDET_CONFIGS, rel_path)))


def build(cfg, seed=0):
    torch.manual_seed(seed)
    return MODELS.build(copy.deepcopy(cfg.model))


def numel(module):
    return sum(p.numel() for p in module.parameters())


# ---------------------------------------------------------------- parameter counts (COCO)

def test_sparse_rcnn_decoder_counts():
    """6 DIIHead stages (256-d, FFN 2048, DynamicConv 256 -> 64 -> 256 on 7x7 RoIs,
    1 cls and 3 reg fcs without bias, 80 classes)."""
    d, ffn, feat, roi = 256, 2048, 64, 7 * 7
    dynamic_layer = linear(d, 2 * d * feat)
    fc_layer = linear(d * roi, d)
    ffn_linears = linear(d, ffn) + linear(ffn, d)
    branch_fcs = 4 * linear(d, d, bias=False)
    shared_per_stage = dynamic_layer + fc_layer + ffn_linears + branch_fcs
    other_per_stage = (mha(d) + layer_norm(d)  # attention + norm
                       + layer_norm(feat) + 2 * layer_norm(d)  # DynamicConv norms
                       + layer_norm(d)  # instance_interactive_conv_norm
                       + layer_norm(d)  # ffn_norm
                       + 4 * layer_norm(d)  # cls / reg fc norms
                       + linear(d, 80) + linear(d, 4))  # fc_cls, fc_reg
    stock_stage = shared_per_stage + other_per_stage
    assert stock_stage == 13_235_412

    stock = build(load_stock(FAMILIES['sparse-rcnn'][3]))
    assert numel(stock.roi_head) == 6 * stock_stage == 79_412_472

    lors = build(load(FAMILIES['sparse-rcnn'][2]))
    private_static = 6 * (lors_t(d * roi, d, 8) + lors_t(d, ffn, 8) + lors_t(ffn, d, 8)
                          + 4 * lors_t(d, d, 8, bias=False))
    terms = 1 + 1 + 2 + 2 + 3 + 3
    private_adaptive = terms * lors_a_term(d, [(d, feat), (feat, d)], 16)
    counts = count_stack_parameters(lors)['roi_head.bbox_head']
    assert counts == dict(shared=shared_per_stage, private=private_static + private_adaptive,
                          other=6 * other_per_stage)
    assert counts['shared'] == 12_945_920 and counts['private'] == 2_651_136
    decoder = numel(lors.roi_head)
    assert decoder == 12_945_920 + 2_651_136 + 6 * other_per_stage == 17_334_008
    # the rest of the detector is untouched
    assert numel(lors) - decoder == numel(stock) - numel(stock.roi_head)


@pytest.mark.parametrize('family, ffn', [('deformable-detr', 1024), ('dino', 2048)])
def test_detr_decoder_counts(family, ffn):
    """6 decoder layers: MHA self-attention, deformable cross-attention (8 heads, 4 levels,
    4 points: sampling_offsets 256 -> 256, attention_weights 256 -> 128, value / output
    projections 256 -> 256), FFN, 3 norms."""
    d, heads, levels, points = 256, 8, 4, 4
    cross = (linear(d, heads * levels * points * 2) + linear(d, heads * levels * points)
             + 2 * linear(d, d))
    ffn_linears = linear(d, ffn) + linear(ffn, d)
    other = mha(d) + 3 * layer_norm(d)
    stock = build(load_stock(FAMILIES[family][3]))
    assert numel(stock.decoder.layers) == 6 * (cross + ffn_linears + other)

    lors = build(load(FAMILIES[family][2]))
    private = 6 * (lors_t(d, heads * levels * points * 2, 8) + lors_t(d, heads * levels * points, 8)
                   + 2 * lors_t(d, d, 8) + lors_t(d, ffn, 8) + lors_t(ffn, d, 8))
    counts = count_stack_parameters(lors)['decoder.layers']
    assert counts == dict(shared=cross + ffn_linears, private=private, other=6 * other)
    expected = {'deformable-detr': (6_123_264, 755_840 + 228_096 + 1_588_224),
                'dino': (9_275_136, 1_281_152 + 332_544 + 1_588_224)}[family]
    assert (numel(stock.decoder.layers), sum(counts.values())) == expected
    assert numel(lors) - sum(counts.values()) == numel(stock) - numel(stock.decoder.layers)


# ---------------------------------------------------------------- init

@pytest.mark.parametrize('family', list(FAMILIES))
def test_at_init_every_lors_layer_computes_the_shared_layer(family):
    model = build(load(FAMILIES[family][1]))
    model.init_weights()
    layers = [m for m in model.modules() if isinstance(m, LORS_LAYERS)]
    assert len(layers) >= 6
    gen = torch.Generator().manual_seed(0)
    for layer in layers:
        x = torch.randn(5, layer.in_features, generator=gen)
        assert torch.equal(layer(x), layer.shared(x))
        if isinstance(layer, LowRankResidualLinear):
            assert not layer.B.any() and layer.A.abs().sum() > 0


def test_shared_layers_get_the_stock_init():
    """Deformable DETR initialises sampling offsets (zero weight, direction grid bias) and
    attention weights (zero) specially: the shared layers get exactly that."""
    cfg = load(FAMILIES['deformable-detr'][1])
    lors = build(cfg)
    lors.init_weights()
    plain_cfg = load(FAMILIES['deformable-detr'][0])
    stock = build(plain_cfg)
    stock.init_weights()
    shared = lors.decoder.lors_shared_layers.cross_attn
    reference = stock.decoder.layers[0].cross_attn
    assert not shared.sampling_offsets.weight.any()
    assert torch.equal(shared.sampling_offsets.bias, reference.sampling_offsets.bias)
    assert shared.sampling_offsets.bias.abs().max() > 1  # the grid, not zero
    assert not shared.attention_weights.weight.any() and not shared.attention_weights.bias.any()
    # DETR's xavier on the other shared weights (the demo FFN: Linear(128 -> 512))
    bound = (6 / (128 + 512)) ** 0.5
    weight = lors.decoder.lors_shared_layers.get_submodule('ffn.layers.0.0').weight
    assert weight.abs().max() <= bound and weight.abs().max() > 0.9 * bound


def test_sparse_rcnn_shared_generator_gets_diihead_xavier():
    model = build(load(FAMILIES['sparse-rcnn'][1]))
    model.init_weights()
    weight = model.roi_head.lors_shared_bbox_head.instance_interactive_conv.dynamic_layer.weight
    bound = (6 / (weight.shape[0] + weight.shape[1])) ** 0.5
    assert weight.abs().max() <= bound and weight.abs().max() > 0.99 * bound
    for stage in model.roi_head.bbox_head:
        generator = stage.instance_interactive_conv.dynamic_layer
        assert isinstance(generator, AdaptiveLowRankGenerator)
        assert generator.shared is model.roi_head.lors_shared_bbox_head.instance_interactive_conv \
            .dynamic_layer
        assert all(not r.core_generator.weight.any() for r in generator.residuals)


# ---------------------------------------------------------------- gradients

def _batch(size=(96, 96), num_classes=10):
    samples = []
    boxes = [[[8., 10., 50., 60.], [55., 20., 90., 88.]], [[20., 30., 70., 75.]]]
    labels = [[1, 3], [7]]
    for b, l in zip(boxes, labels):
        sample = DetDataSample(metainfo=dict(img_shape=size, pad_shape=size,
                                             batch_input_shape=size, ori_shape=size,
                                             scale_factor=(1.0, 1.0)))
        sample.gt_instances = InstanceData(bboxes=torch.tensor(b), labels=torch.tensor(l))
        samples.append(sample)
    return torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(0)), samples


def _perturb_private(model, seed=1):
    """Non-zero private terms (after training they are not zero)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, LORS_LAYERS):
                for p in module.parameters():
                    p.add_(torch.randn(p.shape, generator=gen) * 0.05)


@pytest.mark.parametrize('family', list(FAMILIES))
@pytest.mark.parametrize('which', [0, 1], ids=['plain', 'lors'])
def test_every_trainable_parameter_gets_a_gradient(family, which):
    """DDP without find_unused_parameters (as mmdet's configs run these families)."""
    model = build(load(FAMILIES[family][which]))
    model.init_weights()
    if which:
        _perturb_private(model)
    model.train()
    inputs, samples = _batch()
    losses = model.loss(inputs, samples)
    sum(v for k, v in losses.items() if 'loss' in k).backward()
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert [n for n, p in trainable.items() if p.grad is None] == []
    if which:
        names = [n for n in trainable if 'lors_shared' in n]
        assert names and all(trainable[n].grad.abs().sum() > 0 for n in names)
        private = [n for n in trainable if n.endswith(('.B', '.A', 'core_generator.weight'))]
        assert private and all(trainable[n].grad.abs().sum() > 0 for n in private)


# ---------------------------------------------------------------- fold to stock mmdet

@pytest.mark.parametrize('family', list(FAMILIES))
def test_folded_demo_checkpoint_loads_strictly_into_stock_config_and_detects_the_same(family):
    """In float64: float32 rounding (1e-6 in the first stage) grows through six stages of box
    refinement and RoI sampling with these random weights, so float32 would test the
    network's sensitivity rather than the fold."""
    plain_path, lors_path = FAMILIES[family][:2]
    lors = build(load(lors_path))
    lors.init_weights()
    _perturb_private(lors)
    lors.double().eval()
    state = fold_lors_stacks(lors)
    stock = build(load(plain_path), seed=5).double()
    stock.load_state_dict(state, strict=True)
    stock.eval()
    inputs, samples = _batch()
    for sample in samples:
        del sample.gt_instances
    with torch.no_grad():
        got = stock.predict(inputs.double(), copy.deepcopy(samples))
        want = lors.predict(inputs.double(), copy.deepcopy(samples))
    for g, w in zip(got, want):
        torch.testing.assert_close(g.pred_instances.scores, w.pred_instances.scores,
                                   atol=1e-5, rtol=0)
        torch.testing.assert_close(g.pred_instances.bboxes, w.pred_instances.bboxes,
                                   atol=1e-5, rtol=0)
        assert torch.equal(g.pred_instances.labels, w.pred_instances.labels)
    # the private terms really changed the layers: the fold is not the shared weight
    modules = dict(lors.named_modules())
    for name, module in modules.items():
        if isinstance(module, LORS_LAYERS):
            assert not torch.allclose(state[f'{name}.weight'], module.shared.weight)


@pytest.mark.parametrize('family', list(FAMILIES))
def test_folded_coco_state_dict_has_the_stock_mmdet_keys(family):
    lors = build(load(FAMILIES[family][2]))
    stock = build(load_stock(FAMILIES[family][3]))
    folded = fold_lors_stacks(lors)
    stock.load_state_dict(folded, strict=True)
    assert {k: v.shape for k, v in folded.items()} == {
        k: v.shape for k, v in stock.state_dict().items()}


# ---------------------------------------------------------------- options and errors

def test_encoder_stack_and_per_layer_ranks():
    cfg = load(FAMILIES['deformable-detr'][0])
    model = build(cfg)
    apply_lors(model, [
        dict(container='decoder.layers', static=dict(targets=[r'ffn\.layers\.1'],
                                                    rank=[1, 2, 3, 4, 5, 6])),
        dict(container='encoder.layers',
             static=dict(targets=[r'self_attn\.value_proj'], rank=[[2, 3]] * 6,
                         num_terms=2))])
    ranks = [layer.ffn.layers[1].ranks for layer in model.decoder.layers]
    assert ranks == [[1], [2], [3], [4], [5], [6]]
    assert model.encoder.layers[0].self_attn.value_proj.ranks == [2, 3]
    assert set(count_stack_parameters(model)) == {'decoder.layers', 'encoder.layers'}
    model.init_weights()
    model.eval()
    inputs, samples = _batch()
    with torch.no_grad():
        model.predict(inputs, samples)


@pytest.mark.parametrize('stacks, message', [
    ([dict(container='decoder.layrs', static=dict(targets=['x'], rank=2))],
     "stacks[0].container: 'decoder.layrs' is not a module"),
    ([dict(container='decoder.layers', static=dict(targets=[r'cross_attn\.nothing'], rank=2))],
     r"stacks[0].static.targets: 'cross_attn\\.nothing' matches no nn.Linear"),
    ([dict(container='decoder.layers', static=dict(targets=[r'ffn\.layers\.1'], rank=129))],
     'stacks[0].static.rank: must be an int in [1, min(in_features, out_features)=128], '
     'got 129 (layer 0, ffn.layers.1)'),
    ([dict(container='decoder.layers', static=dict(targets=[r'ffn\.layers\.1'],
                                                  rank=[2, 2]))],
     'stacks[0].static.rank: one value, or a list with one entry per layer (6)'),
    ([dict(container='decoder.layers', static=dict(targets=[r'self_attn\.attn\.out_proj'],
                                                  rank=2))],
     "'self_attn.attn.out_proj' is read as a weight by its MultiheadAttention"),
    ([dict(container='decoder.layers', static=dict(targets=[r'ffn\.layers\.1'], rank=2,
                                                  ranks=3))],
     "stacks[0].static: unknown keys ['ranks']"),
    ([dict(container='decoder.layers',
           static=dict(targets=[r'ffn\.layers\.1'], rank=2),
           adaptive=dict(targets=[r'ffn\.layers\.1'], blocks=[(128, 4)], rank=2))],
     "'ffn.layers.1' is matched by both static and adaptive"),
    ([dict(container='decoder.layers',
           adaptive=dict(targets=[r'ffn\.layers\.1'], blocks=[(16, 16)], rank=2))],
     'blocks: [(16, 16)] hold 256 numbers but the generator gives 128'),
    ([dict(container='decoder', static=dict(targets=['x'], rank=2))],
     "stacks[0].container: 'decoder' must be a ModuleList of at least 2 layers"),
])
def test_bad_config_names_the_key(stacks, message):
    cfg = load(FAMILIES['deformable-detr'][1])
    cfg.model.stacks = stacks
    with pytest.raises(ValueError) as err:
        build(cfg)
    assert message in str(err.value)
    assert str(err.value).startswith('model.stacks[0]')


def test_shape_mismatch_across_the_stack_is_refused():
    cfg = load(FAMILIES['sparse-rcnn'][0])
    cfg.model.roi_head.bbox_head[3].feedforward_channels = 256
    model = build(cfg)
    with pytest.raises(ValueError, match=r"stacks\[0\]\.static\.targets: 'ffn\.layers\.0\.0' is "
                       r'Linear\(in=128, out=512, bias=True\) in layer 0 but Linear\(in=128, '
                       r'out=256, bias=True\) in layer 3'):
        apply_lors(model, [dict(container='roi_head.bbox_head',
                                static=dict(targets=[r'ffn\.layers\.0\.0'], rank=4))])


def test_deepcopy_keeps_the_sharing_and_the_init():
    model = build(load(FAMILIES['sparse-rcnn'][1]))
    copied = copy.deepcopy(model)
    owner = copied.roi_head.lors_shared_bbox_head
    assert all(stage.ffn.layers[1].shared is owner.get_submodule('ffn.layers.1')
               for stage in copied.roi_head.bbox_head)
    copied.init_weights()  # initialises the copy, not the original
    assert not copied.roi_head.bbox_head[0].ffn.layers[1].B.any()
    assert owner.stack is copied.roi_head.bbox_head


def test_adapters_combine_with_lors_sharing():
    cfg = load(FAMILIES['sparse-rcnn'][1])
    adapter = Config.fromfile(osp.join(REPO, 'configs/_base_/adapters/resnet-vera.py'))
    cfg.model.backbone = dict(type='PEFTBackbone', module=cfg.model.backbone,
                              adapter=dict(adapter.peft_adapter, rank=32))
    model = build(cfg)
    model.init_weights()
    model.train()
    inputs, samples = _batch()
    losses = model.loss(inputs, samples)
    sum(v for k, v in losses.items() if 'loss' in k).backward()
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    backbone = [n for n in trainable if n.startswith('backbone.')]
    assert backbone and all('vera_lambda' in n for n in backbone)
    assert [n for n, p in trainable.items() if p.grad is None] == []
    assert any('lors_shared' in n for n in trainable)


def test_fold_tool_writes_the_stock_config_and_a_strict_checkpoint(tmp_path):
    """tools/model_converters/fold_lors.py on the shipped Sparse R-CNN LORS demo config: the
    written config is mmdet's own Sparse R-CNN (no LORSSharing, no stacks), the checkpoint
    loads into it strictly and detects as the LORS model does."""
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        'fold_lors_tool', osp.join(REPO, 'tools', 'model_converters', 'fold_lors.py'))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)

    config = osp.join(REPO, 'configs', FAMILIES['sparse-rcnn'][1])
    lors = build(load(FAMILIES['sparse-rcnn'][1]))
    lors.init_weights()
    _perturb_private(lors)
    ckpt, out, out_cfg = tmp_path / 'lors.pth', tmp_path / 'folded.pth', tmp_path / 'plain.py'
    torch.save(dict(meta=dict(epoch=1), state_dict=lors.state_dict()), ckpt)
    tool.main([config, str(ckpt), str(out), '--out-config', str(out_cfg)])

    plain_cfg = Config.fromfile(str(out_cfg))
    assert plain_cfg.model.type == 'SparseRCNN'
    assert 'stacks' not in plain_cfg.model and 'detector_type' not in plain_cfg.model
    assert 'lors_stacks' not in plain_cfg
    # the plain demo config itself (tuples become lists in a dumped config)
    assert json.loads(json.dumps(plain_cfg.model.to_dict())) == json.loads(
        json.dumps(load(FAMILIES['sparse-rcnn'][0]).model.to_dict()))
    stock = build(_offline(plain_cfg))
    folded = torch.load(str(out), map_location='cpu', weights_only=True)
    stock.load_state_dict(folded['state_dict'], strict=True)
    inputs, samples = _batch()
    for sample in samples:
        del sample.gt_instances
    with torch.no_grad():
        got = stock.double().eval().predict(inputs.double(), copy.deepcopy(samples))
        want = lors.double().eval().predict(inputs.double(), copy.deepcopy(samples))
    for g, w in zip(got, want):
        # a float32 checkpoint: the folded weights' rounding (6e-8 relative) grows through six
        # stages of random-weight box refinement to ~1e-2 px on these 96 px images; the fold
        # itself is exact to 1e-5 in float64 (the test above)
        torch.testing.assert_close(g.pred_instances.bboxes, w.pred_instances.bboxes,
                                   atol=3e-2, rtol=0)
        torch.testing.assert_close(g.pred_instances.scores, w.pred_instances.scores,
                                   atol=1e-4, rtol=0)


@pytest.mark.parametrize('family', ['deformable-detr', 'dino'])
def test_detr_parameter_and_flop_split(family):
    """get_flops' split for DETR-style models: the parts add up, the decoder's shared part is
    the LORS owner plus the modules the decoder already shares (reference-point MLP, norm), and
    at inference a LORS^T layer costs what the stock layer costs (W + B A is merged once)."""
    from lors_det.utils import count_parameters
    from lors_det.utils.complexity import count_flops_detailed
    stock = build(load(FAMILIES[family][0]))
    lors = build(load(FAMILIES[family][1]))
    for model in (stock, lors):
        counts = count_parameters(model)
        assert sum(counts[k] for k in ('backbone', 'neck', 'encoder', 'decoder', 'head',
                                       'other')) == counts['total']
        assert counts['decoder_shared'] + counts['decoder_private'] == counts['decoder']
    stack = count_stack_parameters(lors)['decoder.layers']
    already_shared = numel(stock.decoder) - numel(stock.decoder.layers)
    assert count_parameters(lors)['decoder_shared'] == stack['shared'] + already_shared
    assert count_parameters(lors)['decoder_private'] == stack['private'] + stack['other']

    inputs, samples = _batch()
    for sample in samples:
        del sample.gt_instances
    flops = [count_flops_detailed(m, inputs, samples) for m in (stock, lors)]
    for f in flops:
        assert sum(v for k, v in f['parts'].items() if k != 'total') == f['parts']['total']
        assert sum(f['decoder_roles'].values()) == f['parts']['decoder']
        assert f['decoder_roles']['cross_attention'] > 0 and f['decoder_roles']['ffn'] > 0
    assert flops[0]['parts'] == flops[1]['parts']
    assert flops[0]['decoder_stages'] == flops[1]['decoder_stages']
