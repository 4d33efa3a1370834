"""tools/model_converters/adamixer_official_to_lors_det.py: official AdaMixer -> lors_det.

No official checkpoint can be downloaded here, so the tests *write* one: a lors_det model's
weights renamed to the official key layout by :func:`to_official_key`, which is written from the
official module tree (MCG-NJU/AdaMixer @ a50e33d, mmcv-full 1.3.x; spec section 1 and 8)
independently of the converter's rule table, with mmdet-2.x meta (``CLASSES``, ``config`` text,
``mmcv_version``, ``epoch``/``iter``), an ``optimizer`` entry and, in one variant, DDP's
``module.`` prefix. The converted file must load strictly into a freshly built model and give
back every tensor and the same predictions.
"""
import copy
import importlib.util
import os.path as osp
import re
import subprocess
import sys

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.runner import load_checkpoint

import lors_det  # noqa: F401  (registers the modules)
from mmdet.registry import MODELS
from mmdet.structures import DetDataSample

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TOOL = osp.join(REPO, 'tools', 'model_converters', 'adamixer_official_to_lors_det.py')
PYTHON = osp.join(REPO, '.venv', 'bin', 'python')
if not osp.exists(PYTHON):
    PYTHON = sys.executable
BASE_MODEL = osp.join(REPO, 'configs', '_base_', 'models', 'adamixer_r50.py')
R50_CONFIG = osp.join(REPO, 'configs', 'adamixer', 'adamixer_r50_8xb2-1x_coco.py')

NUM_CLASSES, NUM_STAGES, NUM_QUERY, DIM = 3, 2, 5, 32
CLASSES = ('cat', 'dog', 'zebra')

# --- the official layout, written from the official module tree -------------------------------
# One decoder stage of the official AdaMixerDecoderStage (num_ffn_fcs=2, num_cls_fcs=1,
# num_reg_fcs=1): mmcv-1.3 MultiheadAttention wraps nn.MultiheadAttention as `attn`; mmcv-1.3 FFN
# holds Sequential(Sequential(Linear, act, Dropout), Linear); the cls/reg branches are
# ModuleLists [Linear, LN, ReLU]; AdaptiveSamplingMixing holds the offset generator
# (Sequential), the LN `norm` and AdaptiveMixing (parameter_generator Sequential + out_proj).
OFFICIAL_STAGE_TENSORS = {
    'attention.attn.in_proj_weight', 'attention.attn.in_proj_bias',
    'attention.attn.out_proj.weight', 'attention.attn.out_proj.bias',
    'attention_norm.weight', 'attention_norm.bias',
    'ffn.layers.0.0.weight', 'ffn.layers.0.0.bias', 'ffn.layers.1.weight', 'ffn.layers.1.bias',
    'ffn_norm.weight', 'ffn_norm.bias',
    'cls_fcs.0.weight', 'cls_fcs.0.bias', 'cls_fcs.1.weight', 'cls_fcs.1.bias',
    'fc_cls.weight', 'fc_cls.bias',
    'reg_fcs.0.weight', 'reg_fcs.0.bias', 'reg_fcs.1.weight', 'reg_fcs.1.bias',
    'fc_reg.weight', 'fc_reg.bias',
    'iof_tau',
    'sampling_n_mixing.sampling_offset_generator.0.weight',
    'sampling_n_mixing.sampling_offset_generator.0.bias',
    'sampling_n_mixing.norm.weight', 'sampling_n_mixing.norm.bias',
    'sampling_n_mixing.adaptive_mixing.parameter_generator.0.weight',
    'sampling_n_mixing.adaptive_mixing.parameter_generator.0.bias',
    'sampling_n_mixing.adaptive_mixing.out_proj.weight',
    'sampling_n_mixing.adaptive_mixing.out_proj.bias',
}
OFFICIAL_NECK = re.compile(r'neck\.(lateral_convs\.\d\.conv\.(weight|bias)|gn_out\.(weight|bias))')
OFFICIAL_QUERIES = {'rpn_head.init_proposal_bboxes.weight', 'rpn_head.init_content_features.weight'}
# mmdet 2.x ResNet (BasicBlock / Bottleneck) with BN buffers
OFFICIAL_RESNET = re.compile(
    r'backbone\.(conv1|bn1|layer[1-4]\.\d+\.(conv[1-3]|bn[1-3]|downsample\.[01]))\.'
    r'(weight|bias|running_mean|running_var|num_batches_tracked)')


def to_official_key(lors_det_key: str) -> str:
    """The official name of a lors_det AdaMixer key (inverse of the converter)."""
    stage = re.fullmatch(r'roi_head\.bbox_head\.(\d+)\.(.+)', lors_det_key)
    if stage:
        assert stage[2] in OFFICIAL_STAGE_TENSORS, f'no official counterpart: {lors_det_key}'
        return f'roi_head.bbox_head.{stage[1]}.{stage[2]}'
    if OFFICIAL_NECK.fullmatch(lors_det_key) or lors_det_key in OFFICIAL_QUERIES \
            or OFFICIAL_RESNET.fullmatch(lors_det_key):
        return lors_det_key
    raise AssertionError(f'no official counterpart: {lors_det_key}')


def official_checkpoint(state_dict, ddp=False, classes=CLASSES) -> dict:
    """A checkpoint as MCG-NJU/AdaMixer's mmcv-1.3 runner saves it."""
    prefix = 'module.' if ddp else ''
    official = {prefix + to_official_key(k): v.clone() for k, v in state_dict.items()}
    params = [k for k in official if 'num_batches_tracked' not in k][:2]
    optimizer = dict(
        state={i: dict(step=torch.tensor(10.), exp_avg=torch.zeros_like(official[k]),
                       exp_avg_sq=torch.zeros_like(official[k]))
               for i, k in enumerate(params)},
        param_groups=[dict(lr=2.5e-6, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-4,
                           amsgrad=False, initial_lr=2.5e-5, params=list(range(len(params))))])
    meta = dict(
        exp_name='adamixer_r50_1x_coco.py',
        mmdet_version='2.12.0',
        mmcv_version='1.3.3',
        config="model = dict(type='QueryBased', ...)\n",
        CLASSES=classes,
        epoch=12,
        iter=87960,
        time='Thu Aug 18 10:00:00 2022',
        hook_msgs=dict(last_ckpt='work_dirs/adamixer_r50_1x_coco/epoch_12.pth'))
    return dict(meta=meta, state_dict=official, optimizer=optimizer)


# --- helpers ---------------------------------------------------------------------------------
def load_tool():
    spec = importlib.util.spec_from_file_location('adamixer_official_to_lors_det', TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


conv = load_tool()


def tiny_model_cfg(num_stages=NUM_STAGES):
    init_default_scope('mmdet')
    model = Config.fromfile(BASE_MODEL).model
    model.backbone.update(depth=18, base_channels=8, zero_init_residual=False, init_cfg=None)
    model.neck.update(in_channels=[8, 16, 32, 64], out_channels=DIM)
    model.rpn_head.update(num_query=NUM_QUERY, content_dim=DIM)
    model.roi_head.update(num_stages=num_stages, stage_loss_weights=[1.0] * num_stages,
                          content_dim=DIM)
    model.roi_head.bbox_head.update(num_classes=NUM_CLASSES, num_heads=4, feedforward_channels=64,
                                    content_dim=DIM, feat_channels=DIM, in_points=4, out_points=6)
    model.test_cfg.rcnn.max_per_img = NUM_QUERY * NUM_CLASSES
    return model


def write_tiny_config(path, num_stages=NUM_STAGES):
    """A config file for --config: the base model scaled down like tiny_model_cfg."""
    text = f"""_base_ = [{BASE_MODEL!r}]
custom_imports = dict(imports=['lors_det'], allow_failed_imports=False)
default_scope = 'mmdet'
model = dict(
    backbone=dict(depth=18, base_channels=8, zero_init_residual=False, init_cfg=None),
    neck=dict(in_channels=[8, 16, 32, 64], out_channels={DIM}),
    rpn_head=dict(num_query={NUM_QUERY}, content_dim={DIM}),
    roi_head=dict(num_stages={num_stages}, stage_loss_weights=[1.0] * {num_stages},
                  content_dim={DIM},
                  bbox_head=dict(num_classes={NUM_CLASSES}, num_heads=4, feedforward_channels=64,
                                 content_dim={DIM}, feat_channels={DIM}, in_points=4,
                                 out_points=6)),
    test_cfg=dict(rcnn=dict(max_per_img={NUM_QUERY * NUM_CLASSES})))
test_dataloader = dict(dataset=dict(type='CheckedCocoDataset', metainfo=dict(classes={CLASSES!r})))
"""
    with open(path, 'w') as f:
        f.write(text)
    return str(path)


def build(model_cfg, seed):
    init_default_scope('mmdet')
    torch.manual_seed(seed)
    return MODELS.build(copy.deepcopy(model_cfg))


def trained_like(model, seed=0):
    """init_weights, then perturb every parameter and buffer so that each tensor is distinct
    and the queries differ (at init all queries are the same whole-image box)."""
    model.init_weights()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if tensor.is_floating_point():
                noise = torch.randn(tensor.shape, generator=gen)
                if name.endswith('running_var'):
                    tensor.mul_(1 + 0.1 * noise.abs())
                else:
                    tensor.add_(0.02 * noise)
            else:  # num_batches_tracked
                tensor.fill_(int(torch.randint(1, 1000, (1, ), generator=gen)))
    return model.eval()


def predict(model):
    """Predictions of ``model.test_step`` on one fixed 64x96 image (padded to 64x96)."""
    gen = torch.Generator().manual_seed(1)
    img = (torch.rand(3, 64, 96, generator=gen) * 255).round()
    sample = DetDataSample(metainfo=dict(img_shape=(60, 90), ori_shape=(60, 90),
                                         scale_factor=(1.0, 1.0)))
    with torch.no_grad():
        out = model.test_step(dict(inputs=[img], data_samples=[sample]))[0].pred_instances
    return out.bboxes, out.scores, out.labels


@pytest.fixture(scope='module')
def tiny():
    """(model config, reference model, its state dict, its predictions)."""
    model_cfg = tiny_model_cfg()
    model = trained_like(build(model_cfg, seed=0))
    return model_cfg, model, copy.deepcopy(model.state_dict()), predict(model)


def assert_same_weights(state_dict, reference):
    assert list(state_dict) == list(reference)
    for key, value in reference.items():
        assert state_dict[key].dtype == value.dtype, key
        assert torch.equal(state_dict[key], value), key


def assert_same_predictions(model, reference_predictions):
    for got, want in zip(predict(model), reference_predictions):
        assert torch.equal(got, want)


# --- tests -------------------------------------------------------------------------------------
def test_lors_det_stage_has_exactly_the_official_tensors(tiny):
    """Every lors_det decoder tensor has an official counterpart and vice versa."""
    _, _, state_dict, _ = tiny
    for stage in range(NUM_STAGES):
        prefix = f'roi_head.bbox_head.{stage}.'
        names = {k[len(prefix):] for k in state_dict if k.startswith(prefix)}
        assert names == OFFICIAL_STAGE_TENSORS
    assert {k for k in state_dict if k.startswith('rpn_head.')} == OFFICIAL_QUERIES
    neck = {k for k in state_dict if k.startswith('neck.')}
    assert len(neck) == 4 * 2 + 2 and all(OFFICIAL_NECK.fullmatch(k) for k in neck)


@pytest.mark.parametrize('ddp', [False, True], ids=['plain', 'ddp-module-prefix'])
def test_convert_function_roundtrip(tiny, ddp):
    model_cfg, _, state_dict, reference = tiny
    source = official_checkpoint(state_dict, ddp=ddp)
    out = conv.convert_checkpoint(source, source='adamixer_r50_1x_coco.pth')

    assert set(out) == {'meta', 'state_dict'}  # optimizer state dropped
    assert out['meta']['dataset_meta'] == {'classes': CLASSES}
    converted_from = out['meta']['converted_from']
    assert converted_from['file'] == 'adamixer_r50_1x_coco.pth'
    assert (converted_from['mmcv_version'], converted_from['mmdet_version']) == ('1.3.3', '2.12.0')
    assert (converted_from['epoch'], converted_from['iter']) == (12, 87960)
    assert out['meta']['official_config'] == source['meta']['config']
    assert 'epoch' not in out['meta']  # a converted checkpoint is no resume point

    fresh = build(model_cfg, seed=123).eval()
    fresh.load_state_dict(out['state_dict'], strict=True)
    assert_same_weights(fresh.state_dict(), state_dict)
    assert_same_predictions(fresh, reference)


def test_convert_cli_with_config_check(tiny, tmp_path):
    """The command line on a file with the DDP prefix; --config loads it strictly."""
    model_cfg, _, state_dict, reference = tiny
    src, dst = tmp_path / 'official.pth', tmp_path / 'out' / 'converted.pth'
    torch.save(official_checkpoint(state_dict, ddp=True), src)
    config = write_tiny_config(tmp_path / 'tiny_adamixer.py')
    proc = subprocess.run([PYTHON, TOOL, str(src), str(dst), '--config', config],
                          capture_output=True, text=True, timeout=300, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f'{len(state_dict)} tensors (2 decoder stages, 3 classes)' in proc.stdout

    saved = torch.load(dst, map_location='cpu', weights_only=True)  # no pickled objects
    assert set(saved) == {'meta', 'state_dict'}
    assert saved['meta']['dataset_meta']['classes'] == CLASSES
    assert saved['meta']['converted_from']['checked_with_config'] == osp.abspath(config)

    fresh = build(model_cfg, seed=7).eval()
    load_checkpoint(fresh, str(dst), map_location='cpu', strict=True)
    assert_same_weights(fresh.state_dict(), state_dict)
    assert_same_predictions(fresh, reference)


def test_unknown_source_key_is_named(tiny, tmp_path):
    _, _, state_dict, _ = tiny
    source = official_checkpoint(state_dict)
    extra = ['roi_head.bbox_head.1.sampling_n_mixing.extra_gate.weight', 'neck.fpn_convs.0.weight']
    for key in extra:
        source['state_dict'][key] = torch.zeros(2)
    with pytest.raises(conv.ConversionError, match='2 keys') as info:
        conv.convert_checkpoint(source)
    assert all(key in str(info.value) for key in extra)

    src = tmp_path / 'official_unknown.pth'
    torch.save(source, src)
    proc = subprocess.run([PYTHON, TOOL, str(src), str(tmp_path / 'never.pth')],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert all(key in proc.stderr for key in extra)
    assert not (tmp_path / 'never.pth').exists()


def test_bad_sources_are_refused(tiny):
    _, _, state_dict, _ = tiny
    mixed = official_checkpoint(state_dict)
    mixed['state_dict'] = {('module.' + k if i % 2 else k): v
                           for i, (k, v) in enumerate(mixed['state_dict'].items())}
    with pytest.raises(conv.ConversionError, match='module.'):
        conv.convert_checkpoint(mixed)

    no_classes = official_checkpoint(state_dict)
    del no_classes['meta']['CLASSES']
    with pytest.raises(conv.ConversionError, match='meta.CLASSES'):
        conv.convert_checkpoint(no_classes)

    wrong_classes = official_checkpoint(state_dict, classes=('cat', 'dog'))
    with pytest.raises(conv.ConversionError, match=r'roi_head\.bbox_head\.0\.fc_cls\.weight'):
        conv.convert_checkpoint(wrong_classes)

    truncated = official_checkpoint(state_dict)
    del truncated['state_dict']['roi_head.bbox_head.1.ffn.layers.1.weight']
    with pytest.raises(conv.ConversionError, match=r'stage 1 .*\n.*ffn\.layers\.1\.weight'):
        conv.convert_checkpoint(truncated)

    no_decoder = official_checkpoint(state_dict)
    no_decoder['state_dict'] = {k: v for k, v in no_decoder['state_dict'].items()
                                if not k.startswith('roi_head.')}
    with pytest.raises(conv.ConversionError, match='roi_head'):
        conv.convert_checkpoint(no_decoder)

    with pytest.raises(conv.ConversionError, match='state_dict'):
        conv.convert_checkpoint(dict(model=state_dict))


def test_classes_from_config_when_meta_has_none(tiny, tmp_path):
    _, _, state_dict, _ = tiny
    source = official_checkpoint(state_dict)
    del source['meta']['CLASSES']
    src, dst = tmp_path / 'no_classes.pth', tmp_path / 'converted.pth'
    torch.save(source, src)
    out = conv.convert_file(str(src), str(dst), config=write_tiny_config(tmp_path / 'cfg.py'))
    assert out['meta']['dataset_meta']['classes'] == CLASSES
    model_only = tmp_path / 'model_only.py'
    model_only.write_text((tmp_path / 'cfg.py').read_text().split('test_dataloader')[0])
    with pytest.raises(conv.ConversionError, match='names no classes'):
        conv.convert_file(str(src), str(dst), config=str(model_only))


def test_unsafe_source_needs_explicit_opt_in(tiny, tmp_path):
    """A source holding pickled objects is refused by the weights-only loader unless
    --unsafe-load is given; the output never holds such objects."""
    import datetime
    _, _, state_dict, _ = tiny
    source = official_checkpoint(state_dict)
    source['meta']['time'] = datetime.datetime(2022, 8, 18, 10, 0)
    src, dst = tmp_path / 'with_object.pth', tmp_path / 'converted.pth'
    torch.save(source, src)
    with pytest.raises(conv.ConversionError, match='--unsafe-load'):
        conv.convert_file(str(src), str(dst))
    assert not dst.exists()
    conv.main([str(src), str(dst), '--unsafe-load'])
    saved = torch.load(dst, map_location='cpu', weights_only=True)
    assert saved['meta']['converted_from']['time'] == '2022-08-18 10:00:00'
    assert_same_weights(saved['state_dict'], state_dict)


def test_config_check_names_missing_and_mismatched_keys(tiny, tmp_path):
    _, _, state_dict, _ = tiny
    converted = conv.convert_checkpoint(official_checkpoint(state_dict))['state_dict']
    three_stages = write_tiny_config(tmp_path / 'three_stages.py', num_stages=3)
    with pytest.raises(conv.ConversionError) as info:
        conv.check_against_config(converted, three_stages)
    message = str(info.value)
    assert 'missing in the checkpoint (33)' in message  # one whole stage
    assert 'roi_head.bbox_head.2.iof_tau' in message

    one_stage = write_tiny_config(tmp_path / 'one_stage.py', num_stages=1)
    with pytest.raises(conv.ConversionError, match=r'unexpected .*\n.*roi_head\.bbox_head\.1\.'):
        conv.check_against_config(converted, one_stage)

    wrong_shape = dict(converted)
    wrong_shape['neck.gn_out.weight'] = torch.zeros(DIM + 1)
    with pytest.raises(conv.ConversionError,
                       match=r'neck\.gn_out\.weight: checkpoint \(33,\), model \(32,\)'):
        conv.check_against_config(wrong_shape, write_tiny_config(tmp_path / 'ok.py'))


def test_full_r50_key_set():
    """Every tensor of the shipped R-50 AdaMixer (6 stages, 80 classes) round-trips by name."""
    cfg = Config.fromfile(R50_CONFIG)
    cfg.model.backbone.init_cfg = None
    init_default_scope('mmdet')
    model = MODELS.build(cfg.model)  # not initialised: only names and shapes matter
    state_dict = model.state_dict()
    assert len({k.split('.')[2] for k in state_dict if k.startswith('roi_head.bbox_head.')}) == 6
    # ResNet-50: stem conv + BN (1 + 5), 16 bottlenecks of 3 convs + 3 BNs (16 * 18) and 4
    # downsample conv + BN (4 * 6); each BN has weight, bias and 3 buffers
    assert sum(k.startswith('backbone.') for k in state_dict) == 6 + 16 * 18 + 4 * 6

    from mmdet.datasets import CocoDataset
    coco = CocoDataset.METAINFO['classes']
    source = official_checkpoint(state_dict, ddp=True, classes=coco)
    assert len(source['state_dict']) == len(state_dict)
    out = conv.convert_checkpoint(source)
    converted = out['state_dict']
    assert list(converted) == list(state_dict)
    for key, value in state_dict.items():
        assert converted[key].shape == value.shape and torch.equal(converted[key], value), key
    missing, unexpected = model.load_state_dict(converted, strict=True)
    assert not missing and not unexpected
    assert out['meta']['dataset_meta']['classes'] == coco
    assert len(out['meta']['dataset_meta']['palette']) == 80


# the fork's SwinTransformer (mmdet 2.16 layout: PatchEmbed.projection, ShiftWindowMSA.w_msa,
# PatchMerging.reduction, per-output norm{i}), BN-free
OFFICIAL_SWIN = re.compile(
    r'backbone\.(patch_embed\.(projection|norm)\.(weight|bias)'
    r'|stages\.\d\.blocks\.\d+\.(norm[12]\.(weight|bias)'
    r'|attn\.w_msa\.(relative_position_bias_table|relative_position_index'
    r'|(qkv|proj)\.(weight|bias))|ffn\.layers\.(0\.0|1)\.(weight|bias))'
    r'|stages\.\d\.downsample\.(norm\.(weight|bias)|reduction\.weight)'
    r'|norm[0-3]\.(weight|bias))')


def test_swin_backbone_names_carry_over():
    """The Swin-S backbone of the shipped config has the fork's Swin names, which the converter
    keeps (the fork's Swin is mmdet 2.16's, whose layer names mmdet 3.3 kept)."""
    cfg = Config.fromfile(osp.join(
        REPO, 'configs', 'adamixer', 'adamixer_swin-s_8xb2-300q-crop-ms-480-800-3x_coco.py'))
    cfg.model.backbone.init_cfg = None
    init_default_scope('mmdet')
    keys = ['backbone.' + k for k in MODELS.build(cfg.model.backbone).state_dict()]
    assert sum('relative_position_bias_table' in k for k in keys) == 2 + 2 + 18 + 2
    unmatched = [k for k in keys if not OFFICIAL_SWIN.fullmatch(k)]
    assert unmatched == []
    assert [conv.rename_key(k) for k in keys] == keys
