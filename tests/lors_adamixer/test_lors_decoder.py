"""AdaMixerLORSDecoder: shared weights owned once by the decoder, private terms owned by each
stage's mixer, the sharing switches, the LORS init, config errors naming the key, gradients,
the eval-time static merge, and equality with the previous (stack) implementation."""
import copy
import importlib.util

import pytest
import torch
import torch.nn as nn

from lors_det.models.layers import AdaptiveMixing
from lors_det.models.lors import LORSAdaptiveMixing, SharedMixingWeights
from lors_det.utils import count_parameters

from _lors_helpers import (C, DIM, G, NUM_STAGES, P_IN, P_OUT, REPO, build, load_cfg,
                           make_data_samples, make_inputs, mixers, offline,
                           randomize_private_terms, spread_queries, tiny_lors_cfg)

OLD_LAYOUT = REPO / 'tests' / 'fixtures' / 'lors_old_layout_tiny.pth'
CONVERTER = REPO / 'tools' / 'model_converters' / 'lors_stack_to_per_stage.py'


def load_converter():
    """tools/model_converters/lors_stack_to_per_stage.py as a module."""
    spec = importlib.util.spec_from_file_location('converter', CONVERTER)
    converter = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(converter)
    return converter


def test_shared_weights_owned_once_private_terms_by_each_stage():
    model = build(tiny_lors_cfg(), init=False)
    shared = model.roi_head.shared_mixing
    owners = [n for n, m in model.named_modules() if isinstance(m, SharedMixingWeights)]
    assert owners == ['roi_head.shared_mixing']
    for i, mixer in enumerate(mixers(model)):
        assert isinstance(mixer, LORSAdaptiveMixing)
        assert mixer.shared is shared and mixer.out_proj.shared is shared.out_proj
        assert mixer not in list(shared.modules()) and shared not in list(mixer.modules())
    keys = set(model.state_dict())
    assert {k for k in keys if 'shared' in k} == {
        'roi_head.shared_mixing.parameter_generator.weight',
        'roi_head.shared_mixing.parameter_generator.bias',
        'roi_head.shared_mixing.out_proj.weight'}
    prefix = 'roi_head.bbox_head.2.sampling_n_mixing.adaptive_mixing.'
    assert {k[len(prefix):] for k in keys if k.startswith(prefix)} == {
        'channel_residual.core_generator.weight', 'channel_residual.core_generator.bias',
        'channel_residual.B', 'channel_residual.A', 'spatial_residual.core_generator.weight',
        'spatial_residual.core_generator.bias', 'spatial_residual.B', 'spatial_residual.A',
        'out_proj.B', 'out_proj.A', 'out_proj.bias'}
    # every tensor appears once; no storage is shared between stages
    named = list(model.named_parameters(remove_duplicate=False))
    assert len(named) == len({id(p) for _, p in named})
    ptrs = [{p.data_ptr() for p in stage.parameters()} for stage in model.roi_head.bbox_head]
    assert all(not (ptrs[i] & ptrs[j]) for i in range(NUM_STAGES) for j in range(i))
    # the split by ownership
    counts = count_parameters(model)
    assert counts['decoder_shared'] == sum(p.numel() for p in shared.parameters())


def test_deepcopy_keeps_the_sharing():
    model = build(tiny_lors_cfg(), init=False)
    clone = copy.deepcopy(model)
    for mixer in mixers(clone):
        assert mixer.shared is clone.roi_head.shared_mixing
        assert mixer.out_proj.shared is clone.roi_head.shared_mixing.out_proj
        assert mixer.shared is not model.roi_head.shared_mixing


def test_after_init_every_stage_equals_the_shared_mixing():
    model = build(tiny_lors_cfg(), init=False)
    with torch.no_grad():  # garbage everywhere: init_weights must restore the LORS init
        for p in model.roi_head.parameters():
            p.normal_()
    model.init_weights()
    shared = model.roi_head.shared_mixing
    for mixer in mixers(model):
        for part in (mixer.channel_residual, mixer.spatial_residual):
            assert not part.core_generator.weight.any() and not part.core_generator.bias.any()
            assert part.B.abs().min() > 0 and part.A.abs().min() > 0  # cores start at zero
        assert not mixer.out_proj.B.any() and mixer.out_proj.A.abs().min() > 0  # zero_init 'B'
        assert not mixer.out_proj.bias.any()
    # the shared generator keeps AdaMixer's zero weight / default bias (not the stage xavier)
    assert not shared.parameter_generator.weight.any()
    bias = shared.parameter_generator.bias
    assert bias.abs().max() <= DIM ** -0.5 and bias.abs().min() > 0

    # every stage's mixer is then a plain AdaptiveMixing with the shared weights, for
    # query-dependent shared matrices too
    with torch.no_grad():
        shared.parameter_generator.weight.normal_(0, 0.1)
        plain = AdaptiveMixing(in_dim=G * C, in_points=P_IN, out_points=P_OUT, n_groups=G,
                               query_dim=DIM)
        plain.parameter_generator[0].load_state_dict(shared.parameter_generator.state_dict())
        plain.out_proj.weight.copy_(shared.out_proj.weight)
        plain.out_proj.bias.zero_()
        sampled, query = torch.randn(2, 3, G, P_IN, C), torch.randn(2, 3, DIM)
        expected = plain(sampled, query)
        outs = [mixer(sampled, query) for mixer in mixers(model)]
    for out in outs:
        torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
        assert torch.equal(out, outs[0])


def test_same_outputs_losses_and_gradients_as_the_previous_implementation():
    """``tests/fixtures/lors_old_layout_tiny.pth`` was written by the previous implementation
    (one stack holding every stage's terms, commit 4aac7fb) for this tiny config in float64,
    with every parameter off its init: weights, tensor-mode outputs, losses and decoder
    gradients. Its
    weights converted by tools/model_converters/lors_stack_to_per_stage.py must give the same
    numbers here."""
    converter = load_converter()
    old = torch.load(OLD_LAYOUT, map_location='cpu', weights_only=True)
    model = build(tiny_lors_cfg(), init=False).double()
    model.load_state_dict(converter.convert_state_dict(old['state_dict']), strict=True)

    def flat(x):
        return [x] if isinstance(x, torch.Tensor) else [t for y in x for t in flat(y)]

    inputs = make_inputs(dtype=torch.float64)
    model.eval()
    with torch.no_grad():
        outputs = flat(model(inputs, make_data_samples(dtype=torch.float64), mode='tensor'))
    assert len(outputs) == len(old['tensors'])
    for new, ref in zip(outputs, old['tensors']):
        torch.testing.assert_close(new, ref, rtol=0, atol=1e-10)
    model.train()
    losses = model.loss(inputs, make_data_samples(dtype=torch.float64))
    assert losses.keys() == old['losses'].keys()
    for key, ref in old['losses'].items():
        torch.testing.assert_close(losses[key], ref, rtol=0, atol=1e-10)
    sum(v for k, v in losses.items() if 'loss' in k).backward()
    params = dict(model.named_parameters())
    old_grads = converter.convert_state_dict(old['grads'])
    assert set(old_grads) == {n for n, p in params.items()
                              if n.startswith('roi_head.') and p.grad is not None}
    for name, ref in old_grads.items():
        torch.testing.assert_close(params[name].grad, ref, rtol=0, atol=1e-10, msg=name)


@pytest.mark.parametrize('share_generator, share_out_proj', [
    (True, False), (False, True), (False, False)])
def test_sharing_switches(share_generator, share_out_proj):
    cfg = tiny_lors_cfg(share_generator=share_generator, share_out_proj=share_out_proj)
    model = build(cfg)
    shared = getattr(model.roi_head, 'shared_mixing', None)
    if not (share_generator or share_out_proj):  # plain AdaMixer at the same G / P_in
        assert shared is None
        assert all(type(m) is AdaptiveMixing for m in mixers(model))
        plain_cfg = copy.deepcopy(cfg)
        plain_cfg.roi_head.type = 'AdaMixerDecoder'
        plain_cfg.roi_head.pop('lors_cfg')
        assert set(model.state_dict()) == set(build(plain_cfg, init=False).state_dict())
        return
    assert hasattr(shared, 'parameter_generator') == share_generator
    assert hasattr(shared, 'out_proj') == share_out_proj
    for mixer in mixers(model):
        assert (mixer.channel_residual is not None) == share_generator
        assert (type(mixer.out_proj) is nn.Linear) == (not share_out_proj)
    spread_queries(model)
    losses = model.loss(make_inputs(), make_data_samples())
    sum(v for k, v in losses.items() if 'loss' in k).backward()
    for p in shared.parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0


@pytest.mark.parametrize('lors_cfg, message', [
    (dict(generator_num_terms=[1, 2]), 'roi_head.lors_cfg.generator_num_terms has 2 entries but '
     'num_stages=3'),
    (dict(out_proj_rank=[1, 2, 3, 4]), 'roi_head.lors_cfg.out_proj_rank has 4 entries but '
     'num_stages=3'),
    # k > min(C, P_in, P_out) = 4, in stage 1 only
    (dict(generator_rank=[2, 5, 2]), r'roi_head.lors_cfg.generator_rank: must be an int in '
     r'\[1, min\(rows, cols\)=4\], got 5 \(stage 1\)'),
    (dict(kernel_sizes=4), 'roi_head.lors_cfg.kernel_sizes is not a LORS option'),
    (dict(out_proj_zero_init='C'), r"roi_head.lors_cfg.out_proj_zero_init: must be one of "
     r"\['A', 'B'\], got 'C'"),
    (dict(channel_residual='fused'), 'roi_head.lors_cfg.channel_residual: '),
    (dict(share_generator='yes'), 'roi_head.lors_cfg.share_generator must be True or False'),
])
def test_bad_lors_cfg_names_the_key(lors_cfg, message):
    cfg = tiny_lors_cfg()
    cfg.roi_head.lors_cfg.update(lors_cfg)
    with pytest.raises(ValueError, match=message):
        build(cfg, init=False)


def test_shipped_config_error_message_for_a_short_terms_list():
    cfg = offline(load_cfg('lors/adamixer-lors_r50_8xb2-1x_coco.py').model)
    cfg.roi_head.lors_cfg.generator_num_terms = [1, 1, 2, 2, 3]
    with pytest.raises(ValueError) as info:
        build(cfg, init=False)
    assert str(info.value) == \
        'roi_head.lors_cfg.generator_num_terms has 5 entries but num_stages=6'


def test_stage_configs_must_agree_and_keep_the_mixer_to_the_decoder():
    cfg = tiny_lors_cfg()
    cfg.roi_head.bbox_head.mixing_cfg = dict(type='MyMixer')
    with pytest.raises(ValueError, match='AdaMixerLORSDecoder chooses the stage mixers itself'):
        build(cfg, init=False)
    cfg = tiny_lors_cfg()
    stages = [copy.deepcopy(cfg.roi_head.bbox_head) for _ in range(NUM_STAGES)]
    stages[1].in_points = P_IN + 1
    cfg.roi_head.bbox_head = stages
    with pytest.raises(ValueError, match=r'roi_head.bbox_head\[1\].in_points=5 differs from '
                       r'stage 0 \(4\)'):
        build(cfg, init=False)


def _decoder_grads(model, samples):
    model.train()
    model.zero_grad()
    losses = model.loss(make_inputs(), samples)
    sum(v for k, v in losses.items() if 'loss' in k).backward()
    named = dict(model.roi_head.shared_mixing.named_parameters(prefix='shared'))
    for i, mixer in enumerate(mixers(model)):
        named.update(mixer.named_parameters(prefix=f'stage{i}'))
    return {n: p.grad for n, p in named.items()}


def test_gradients_reach_shared_and_private_parameters():
    model = build(tiny_lors_cfg())
    spread_queries(model)
    samples = make_data_samples()
    # at init E = 0 and B_out = 0, so exactly their partners get no gradient yet
    grads = _decoder_grads(model, samples)
    for name, grad in grads.items():
        assert grad is not None, name
        if name.endswith(('residual.B', 'residual.A', 'out_proj.A')):
            assert not grad.any(), name
        else:
            assert grad.abs().sum() > 0, name
    # once the zero-initialised terms have moved, every shared and private tensor learns
    randomize_private_terms(model)
    grads = _decoder_grads(model, samples)
    for name, grad in grads.items():
        assert grad.abs().sum() > 0, name


def test_eval_merges_the_static_out_projection_once():
    model = build(tiny_lors_cfg())
    spread_queries(model)
    randomize_private_terms(model)
    calls = []
    for i, mixer in enumerate(mixers(model)):
        merged = mixer.out_proj.merged_weight
        mixer.out_proj.merged_weight = lambda i=i, f=merged: (calls.append(i), f())[1]
    model.eval()
    with torch.no_grad():
        first = model.predict(make_inputs(), make_data_samples())
        assert sorted(calls) == list(range(NUM_STAGES))  # merged once per stage ...
        second = model.predict(make_inputs(), make_data_samples())
        assert sorted(calls) == list(range(NUM_STAGES))  # ... and reused afterwards
    for a, b in zip(first, second):
        assert torch.equal(a.pred_instances.scores, b.pred_instances.scores)


def test_converter_tool_on_a_checkpoint_file(tmp_path):
    converter = load_converter()
    old = torch.load(OLD_LAYOUT, map_location='cpu', weights_only=True)
    src, dst = tmp_path / 'old.pth', tmp_path / 'new.pth'
    torch.save(dict(meta=dict(epoch=12), state_dict=old['state_dict']), src)
    converter.main([str(src), str(dst)])
    new = torch.load(dst, map_location='cpu', weights_only=True)
    assert new['meta']['epoch'] == 12 and new['meta']['converted_from'] == str(src)
    build(tiny_lors_cfg(), init=False).double().load_state_dict(new['state_dict'], strict=True)
    # the core generator rows split in two: M cores first, then S cores
    cores = old['state_dict']['roi_head.lors_mixing.core_generators.1.weight']
    mixer = 'roi_head.bbox_head.1.sampling_n_mixing.adaptive_mixing.'
    half = cores.shape[0] // 2
    assert torch.equal(new['state_dict'][mixer + 'channel_residual.core_generator.weight'],
                       cores[:half])
    assert torch.equal(new['state_dict'][mixer + 'spatial_residual.core_generator.weight'],
                       cores[half:])
    with pytest.raises(ValueError, match='not a checkpoint of the old LORS layout'):
        converter.convert_state_dict(new['state_dict'])
    with pytest.raises(KeyError, match='roi_head.lors_mixing.extra: unknown key'):
        converter.convert_state_dict({'roi_head.lors_mixing.extra': cores})
