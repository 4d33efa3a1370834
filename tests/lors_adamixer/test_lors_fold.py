"""Folding LORS into plain per-stage AdaMixer weights (lors_det/models/lors/fold.py and
tools/model_converters/fold_lors.py): the maths against an explicit float64 reference, the folded
detector against the LORS one, gradients of shared tensors as sums over stages, and the tool."""
import importlib.util

import pytest
import torch
from mmengine.config import Config

from lors_det.models.lors import fold_lors_state_dict, plain_adamixer_model_cfg

from _lors_helpers import (C, DIM, G, KG, KS, P_IN, P_OUT, REPO, build,
                           make_data_samples, make_inputs, mixers, randomize_private_terms,
                           spread_queries, tiny_lors_cfg)


def _reference_matrices(model, i, q):
    """M_i(q) [G, C, C] and S_i(q) [G, P_out, P_in] term by term (lors_spec.md section 2)."""
    shared = dict(model.roi_head.shared_mixing.named_parameters())
    mine = dict(mixers(model)[i].named_parameters())
    k, K = KS[i], KG[i]
    params = shared['parameter_generator.weight'] @ q + shared['parameter_generator.bias']
    cores = [(mine[f'{part}.core_generator.weight'] @ q + mine[f'{part}.core_generator.bias'])
             .view(G * K, k, k) for part in ('channel_residual', 'spatial_residual')]
    Ms, Ss = [], []
    for g in range(G):
        chunk = params[g * (C * C + P_IN * P_OUT):(g + 1) * (C * C + P_IN * P_OUT)]
        M = chunk[:C * C].reshape(C, C).clone()
        S = chunk[C * C:].reshape(P_OUT, P_IN).clone()
        for j in range(K):
            t = g * K + j
            M += mine['channel_residual.B'][t] @ cores[0][t] @ mine['channel_residual.A'][t]
            S += mine['spatial_residual.B'][t] @ cores[1][t] @ mine['spatial_residual.A'][t]
        Ms.append(M)
        Ss.append(S)
    return torch.stack(Ms), torch.stack(Ss)


@torch.no_grad()
def test_folded_generator_produces_the_lors_matrices():
    model, plain = _lors_and_folded(torch.float64)
    query = torch.randn(4, DIM, dtype=torch.float64)
    sampled = torch.randn(2, 3, G, P_IN, C, dtype=torch.float64)
    q = torch.randn(2, 3, DIM, dtype=torch.float64)
    for i, (mixer, folded) in enumerate(zip(mixers(model), mixers(plain))):
        M, S = folded.generate_mixing_params(query)
        for n in range(query.size(0)):
            M_ref, S_ref = _reference_matrices(model, i, query[n])
            torch.testing.assert_close(M[n], M_ref, rtol=0, atol=1e-12)
            torch.testing.assert_close(S[n], S_ref, rtol=0, atol=1e-12)
        weight, bias = mixer.out_proj.fold()
        torch.testing.assert_close(folded.out_proj.weight, weight, rtol=0, atol=1e-13)
        torch.testing.assert_close(folded.out_proj.bias, bias, rtol=0, atol=0)
        # the whole mixer, both residual strategies
        for channel in ('sequential', 'materialize'):
            for spatial in ('sequential', 'materialize'):
                mixer.channel_strategy, mixer.spatial_strategy = channel, spatial
                torch.testing.assert_close(folded(sampled, q), mixer(sampled, q), rtol=0,
                                           atol=1e-10)


def _lors_and_folded(dtype):
    cfg = tiny_lors_cfg()
    model = build(cfg)
    spread_queries(model)
    randomize_private_terms(model, scale=0.3)
    model = model.to(dtype)
    plain = build(plain_adamixer_model_cfg(cfg), init=False).to(dtype)
    plain.load_state_dict(fold_lors_state_dict(model), strict=True)
    return model, plain


def _sorted_detections(results):
    out = []
    for res in results:
        pred = res.pred_instances
        order = pred.scores.argsort(descending=True)
        out.append((pred.scores[order], pred.bboxes[order], pred.labels[order]))
    return out


def _assert_same_detections(model, plain, inputs, samples, atol):
    model.eval()
    plain.eval()
    with torch.no_grad():
        lors_stages = model._forward(inputs, samples)[0]
        plain_stages = plain._forward(inputs, samples)[0]
        lors_dets = _sorted_detections(model.predict(inputs, samples))
        plain_dets = _sorted_detections(plain.predict(inputs, samples))
    for (cls_a, box_a), (cls_b, box_b) in zip(lors_stages, plain_stages):
        assert (cls_a.sigmoid() - cls_b.sigmoid()).abs().max() <= atol
        assert (box_a - box_b).abs().max() <= atol
    for (s_a, b_a, l_a), (s_b, b_b, l_b) in zip(lors_dets, plain_dets):
        assert (s_a - s_b).abs().max() <= atol
        assert (b_a - b_b).abs().max() <= atol
        assert torch.equal(l_a, l_b)


def test_folded_detector_gives_the_same_detections_float64():
    model, plain = _lors_and_folded(torch.float64)
    assert not any('shared_mixing' in k for k in plain.state_dict())
    _assert_same_detections(model, plain, make_inputs(dtype=torch.float64),
                            make_data_samples(dtype=torch.float64), atol=1e-5)


def test_shared_gradients_are_the_sums_of_the_folded_per_stage_gradients():
    """W_gen_i = W_c + T_i(W_e) and W_out_i = W + B_i A_i, so dL/dW_c = sum_i dL/dW_gen_i,
    dL/dW = sum_i dL/dW_out_i, dL/dB_i = dL/dW_out_i A_i^T and dL/dA_i = B_i^T dL/dW_out_i."""
    model, plain = _lors_and_folded(torch.float64)
    samples = make_data_samples(dtype=torch.float64)
    inputs = make_inputs(dtype=torch.float64)
    for m in (model, plain):
        m.train()
        losses = m.loss(inputs, samples)
        sum(v for k, v in losses.items() if 'loss' in k).backward()
    shared = model.roi_head.shared_mixing
    folded = mixers(plain)
    gen_w = sum(m.parameter_generator[0].weight.grad for m in folded)
    gen_b = sum(m.parameter_generator[0].bias.grad for m in folded)
    out_w = sum(m.out_proj.weight.grad for m in folded)
    opts = dict(rtol=1e-9, atol=1e-12)
    assert gen_w.abs().max() > 0 and out_w.abs().max() > 0
    torch.testing.assert_close(shared.parameter_generator.weight.grad, gen_w, **opts)
    torch.testing.assert_close(shared.parameter_generator.bias.grad, gen_b, **opts)
    torch.testing.assert_close(shared.out_proj.weight.grad, out_w, **opts)
    for lors, m in zip(mixers(model), folded):
        grad_w = m.out_proj.weight.grad
        out_proj = lors.out_proj
        torch.testing.assert_close(out_proj.bias.grad, m.out_proj.bias.grad, **opts)
        torch.testing.assert_close(out_proj.B.grad, grad_w @ out_proj.A.detach().T, **opts)
        torch.testing.assert_close(out_proj.A.grad, out_proj.B.detach().T @ grad_w, **opts)


def _load_tool():
    path = REPO / 'tools' / 'model_converters' / 'fold_lors.py'
    spec = importlib.util.spec_from_file_location('fold_lors_tool', path)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    return tool


def test_fold_tool_writes_a_plain_checkpoint_and_config(tmp_path):
    cfg = tiny_lors_cfg()
    model = build(cfg)
    spread_queries(model)
    randomize_private_terms(model, scale=0.3)
    config = tmp_path / 'lors_tiny.py'
    Config(dict(model=cfg, default_scope='mmdet',
                custom_imports=dict(imports=['lors_det'], allow_failed_imports=False),
                lors_roi_head=dict(type='AdaMixerLORSDecoder'))).dump(str(config))
    ckpt, out, out_cfg = tmp_path / 'lors.pth', tmp_path / 'folded.pth', tmp_path / 'plain.py'
    torch.save(dict(meta=dict(epoch=1), state_dict=model.state_dict()), ckpt)

    _load_tool().main([str(config), str(ckpt), str(out), '--out-config', str(out_cfg)])

    plain_cfg = Config.fromfile(str(out_cfg))
    assert 'lors_roi_head' not in plain_cfg
    roi_head = plain_cfg.model.roi_head
    assert roi_head.type == 'AdaMixerDecoder' and 'lors_cfg' not in roi_head
    assert roi_head.bbox_head.mixing_cfg == dict(type='AdaptiveMixing')
    assert (roi_head.bbox_head.n_groups, roi_head.bbox_head.in_points) == (G, P_IN)
    plain = build(plain_cfg.model, init=False)
    folded = torch.load(str(out), map_location='cpu', weights_only=True)
    assert folded['meta']['folded_lors'] is True
    plain.load_state_dict(folded['state_dict'], strict=True)
    # float32 checkpoints, evaluated in float64 so that only the weights' rounding remains
    _assert_same_detections(model.double(), plain.double(), make_inputs(dtype=torch.float64),
                            make_data_samples(dtype=torch.float64), atol=1e-5)


def test_fold_errors():
    plain_cfg = plain_adamixer_model_cfg(tiny_lors_cfg())
    with pytest.raises(ValueError, match="model.roi_head.type must be 'AdaMixerLORSDecoder'"):
        plain_adamixer_model_cfg(plain_cfg)
    with pytest.raises(ValueError, match='no LORSAdaptiveMixing'):
        fold_lors_state_dict(build(plain_cfg, init=False))
