"""AdaMixerLORSDecoder: one shared stack, parameter-free per-stage views, LORS init after the
stages' xavier init, config errors naming the key, gradients, eval-time static merge."""
import copy

import pytest
import torch

from lors_det.models.layers import AdaptiveMixing
from lors_det.models.lors import LORSAdaptiveMixingStack, LORSStageMixer
from lors_det.models.lors.lowrank_ops import materialize_residual

from _lors_helpers import (C, DIM, G, NUM_STAGES, P_IN, P_OUT, build, load_cfg, make_data_samples,
                           make_inputs, offline, randomize_private_terms, spread_queries,
                           tiny_lors_cfg)


def _mixers(model):
    return [stage.sampling_n_mixing.adaptive_mixing for stage in model.roi_head.bbox_head]


def test_one_registered_stack_and_parameter_free_views():
    model = build(tiny_lors_cfg(), init=False)
    stack = model.roi_head.lors_mixing
    stacks = [n for n, m in model.named_modules() if isinstance(m, LORSAdaptiveMixingStack)]
    assert stacks == ['roi_head.lors_mixing']
    for i, mixer in enumerate(_mixers(model)):
        assert isinstance(mixer, LORSStageMixer)
        assert mixer.stack is stack and mixer.stage_idx == i
        assert list(mixer.parameters()) == [] and list(mixer.children()) == []
    # every tensor appears once: no duplicate registration anywhere in the model
    named = list(model.named_parameters(remove_duplicate=False))
    assert len(named) == len({id(p) for _, p in named})
    stack_keys = {f'roi_head.lors_mixing.{k}' for k in stack.state_dict()}
    assert stack_keys <= set(model.state_dict())
    assert not any('adaptive_mixing' in k for k in model.state_dict())
    # the rest of every stage stays private: no tensor storage is shared between stages
    ptrs = [{p.data_ptr() for p in stage.parameters()} for stage in model.roi_head.bbox_head]
    assert all(not (ptrs[i] & ptrs[j]) for i in range(NUM_STAGES) for j in range(i))
    assert not any(p.data_ptr() in set().union(*ptrs) for p in stack.parameters())


def test_deepcopy_keeps_the_sharing():
    model = build(tiny_lors_cfg(), init=False)
    clone = copy.deepcopy(model)
    for mixer in _mixers(clone):
        assert mixer.stack is clone.roi_head.lors_mixing
        assert mixer.stack is not model.roi_head.lors_mixing


def test_init_order_stages_first_then_lors():
    model = build(tiny_lors_cfg(), init=False)
    calls = []
    for i, stage in enumerate(model.roi_head.bbox_head):
        stage.init_weights = (lambda f=stage.init_weights, i=i: (calls.append(f'stage{i}'), f()))
    stack = model.roi_head.lors_mixing
    stack.init_weights = lambda f=stack.init_weights: (calls.append('lors'), f())
    model.init_weights()
    assert calls[-1] == 'lors'
    assert [c for c in calls if c.startswith('stage')] == [f'stage{i}' for i in range(NUM_STAGES)]
    assert calls.index('lors') > calls.index(f'stage{NUM_STAGES - 1}')


def test_after_init_private_terms_are_zero_and_every_stage_equals_the_shared_mixing():
    model = build(tiny_lors_cfg(), init=False)
    stack = model.roi_head.lors_mixing
    with torch.no_grad():  # garbage everywhere: init_weights must restore the LORS init
        for p in model.roi_head.parameters():
            p.normal_()
    model.init_weights()

    out_proj = stack.out_proj
    for i in range(NUM_STAGES):
        assert not stack.core_generators[i].weight.any() and not stack.core_generators[i].bias.any()
        assert not out_proj.private_B[i].any()  # 'B': the released code's zero factor
        assert out_proj.private_A[i].abs().min() > 0
        assert not out_proj.private_bias[i].any()
        assert torch.equal(out_proj.merged_weight(i), out_proj.shared_weight)
        for factor in stack.factors(i):
            assert factor.abs().min() > 0  # kaiming: the cores are what starts at zero
    # the shared generator keeps AdaMixer's zero weight / default bias (not the stage xavier)
    assert not stack.parameter_generator.weight.any()
    bias = stack.parameter_generator.bias
    assert bias.abs().max() <= DIM ** -0.5 and bias.abs().min() > 0

    # generated matrices: M_i(q) == M_c(q), S_i(q) == S_c(q) for arbitrary queries
    with torch.no_grad():
        stack.parameter_generator.weight.normal_(0, 0.1)  # make M_c(q) query dependent
        query = torch.randn(7, DIM)
        for i in range(NUM_STAGES):
            M_c, S_c, core_m, core_s = stack.generate(query, i)
            ml, mr, sl, sr = stack.factors(i)
            assert torch.equal(M_c + materialize_residual(ml, core_m, mr), M_c)
            assert torch.equal(S_c + materialize_residual(sl, core_s, sr), S_c)

        # and the whole mixer of every stage is a plain AdaptiveMixing with the shared weights
        plain = AdaptiveMixing(in_dim=G * C, in_points=P_IN, out_points=P_OUT, n_groups=G,
                               query_dim=DIM)
        plain.parameter_generator[0].weight.copy_(stack.parameter_generator.weight)
        plain.parameter_generator[0].bias.copy_(stack.parameter_generator.bias)
        plain.out_proj.weight.copy_(out_proj.shared_weight)
        plain.out_proj.bias.zero_()
        sampled, query = torch.randn(2, 3, G, P_IN, C), torch.randn(2, 3, DIM)
        expected = plain(sampled, query)
        outs = [mixer(sampled, query) for mixer in _mixers(model)]
    for out in outs:
        torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
        assert torch.equal(out, outs[0])


@pytest.mark.parametrize('lors_cfg, error, message', [
    (dict(kernel_groups=[1, 2]), ValueError,
     'roi_head.lors_cfg.kernel_groups has 2 entries but num_stages=3'),
    (dict(out_proj_ranks=[1, 2, 3, 4]), ValueError,
     'roi_head.lors_cfg.out_proj_ranks has 4 entries but num_stages=3'),
    # k > min(C, P_in, P_out) = 4
    (dict(kernel_sizes=5), ValueError, 'roi_head.lors_cfg: .*kernel_sizes'),
    (dict(rank=4), ValueError, 'roi_head.lors_cfg.rank is not a LORS option'),
    (dict(out_proj_zero_init='C'), ValueError,
     "roi_head.lors_cfg.out_proj_zero_init must be one of ['A', 'B'], got 'C'"),
    (dict(channel_residual='fused'), ValueError, 'roi_head.lors_cfg.channel_residual'),
    (dict(shared=['ffn']), ValueError, "roi_head.lors_cfg.shared: 'ffn' cannot be shared"),
    (dict(shared=['parameter_generator']), NotImplementedError, 'roi_head.lors_cfg.shared'),
])
def test_bad_lors_cfg_names_the_key(lors_cfg, error, message):
    cfg = tiny_lors_cfg()
    cfg.roi_head.lors_cfg.update(lors_cfg)
    pattern = message.replace('[', r'\[').replace(']', r'\]').replace('(', r'\(')
    with pytest.raises(error, match=pattern):
        build(cfg, init=False)


def test_shipped_config_error_message_for_a_short_kernel_groups_list():
    cfg = offline(load_cfg('lors/adamixer-lors_r50_8xb2-1x_coco.py').model)
    cfg.roi_head.lors_cfg.kernel_groups = [1, 1, 2, 2, 3]
    with pytest.raises(ValueError) as info:
        build(cfg, init=False)
    assert str(info.value) == 'roi_head.lors_cfg.kernel_groups has 5 entries but num_stages=6'


def test_stage_configs_must_agree_and_use_the_view():
    cfg = tiny_lors_cfg()
    cfg.roi_head.bbox_head.mixing_cfg = dict(type='AdaptiveMixing')
    with pytest.raises(ValueError, match=r"roi_head.bbox_head.mixing_cfg.type must be "
                       r"'LORSStageMixer'"):
        build(cfg, init=False)
    cfg = tiny_lors_cfg()
    stages = [copy.deepcopy(cfg.roi_head.bbox_head) for _ in range(NUM_STAGES)]
    stages[1].in_points = P_IN + 1
    cfg.roi_head.bbox_head = stages
    with pytest.raises(ValueError, match=r'roi_head.bbox_head\[1\].in_points=5 differs from '
                       r'stage 0 \(4\)'):
        build(cfg, init=False)
    with pytest.raises(RuntimeError, match='not bound'):
        LORSStageMixer(G * C, P_IN, P_OUT, G, DIM)(torch.zeros(1, 1, G, P_IN, C),
                                                   torch.zeros(1, 1, DIM))


def _stack_grads(model, samples):
    model.train()
    model.zero_grad()
    losses = model.loss(make_inputs(), samples)
    sum(v for k, v in losses.items() if 'loss' in k).backward()
    return {n: p.grad for n, p in model.roi_head.lors_mixing.named_parameters()}


def test_gradients_reach_shared_and_private_parameters():
    model = build(tiny_lors_cfg())
    spread_queries(model)
    samples = make_data_samples()

    # at init: E = 0 and B_out = 0, so exactly their partners get no gradient yet
    grads = _stack_grads(model, samples)
    no_grad_at_init = {f'{name}.{i}' for name in ('ml', 'mr', 'sl', 'sr', 'out_proj.private_A')
                       for i in range(NUM_STAGES)}
    for name, grad in grads.items():
        assert grad is not None, name
        if name in no_grad_at_init:
            assert not grad.any(), name
        else:
            assert grad.abs().sum() > 0, name

    # once the zero-initialised terms have moved, every shared and private tensor learns
    randomize_private_terms(model.roi_head.lors_mixing)
    grads = _stack_grads(model, samples)
    for name, grad in grads.items():
        assert grad.abs().sum() > 0, name
    for stage in model.roi_head.bbox_head:  # the unshared rest of each stage too
        assert stage.sampling_n_mixing.sampling_offset_generator[0].weight.grad.abs().sum() > 0
        assert stage.ffn.layers[1].weight.grad.abs().sum() > 0


def test_eval_merges_the_static_out_projection_once():
    model = build(tiny_lors_cfg())
    spread_queries(model)
    randomize_private_terms(model.roi_head.lors_mixing)
    out_proj = model.roi_head.lors_mixing.out_proj
    calls = []
    merged_weight = out_proj.merged_weight
    out_proj.merged_weight = lambda i: (calls.append(i), merged_weight(i))[1]
    model.eval()
    with torch.no_grad():
        first = model.predict(make_inputs(), make_data_samples())
        assert sorted(calls) == list(range(NUM_STAGES))  # merged once per stage ...
        second = model.predict(make_inputs(), make_data_samples())
        assert sorted(calls) == list(range(NUM_STAGES))  # ... and reused afterwards
    for a, b in zip(first, second):
        assert torch.equal(a.pred_instances.scores, b.pred_instances.scores)
    # the cached path equals the differentiable training path
    model.train()
    with torch.no_grad():
        sampled, query = torch.randn(2, 3, G, P_IN, C), torch.randn(2, 3, DIM)
        train_out = [m(sampled, query) for m in _mixers(model)]
    model.eval()
    with torch.no_grad():
        eval_out = [m(sampled, query) for m in _mixers(model)]
    for a, b in zip(train_out, eval_out):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
