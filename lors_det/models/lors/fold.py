r"""Fold a trained LORS AdaMixer decoder into plain per-stage AdaMixer weights.

For stage i and query q the LORS mixer generates (notation of :class:`LORSAdaptiveMixingStack`)

.. math::

    M_i(q) = M_c(q) + \sum_j ml_j\,E^M_j(q)\,mr_j, \qquad
    S_i(q) = S_c(q) + \sum_j sl_j\,E^S_j(q)\,sr_j,

with ``[M_c, S_c](q) = W_c q + b_c`` (shared generator) and ``[E^M, E^S](q) = W_e q + b_e``
(stage i's core generator). Each residual is linear in the core, and the core is affine in q, so
``M_i(q)`` and ``S_i(q)`` are affine in q: they are exactly what a plain AdaMixer
``parameter_generator`` Linear produces with

* ``weight_i = W_c + T_i(W_e)`` - the residual map ``T_i: E -> ml E mr`` (and ``sl E sr``)
  applied to every column of ``W_e`` (one column per input dimension of q);
* ``bias_i = b_c + T_i(b_e)``.

The output projection is a static LORS^T layer: ``out_proj_i = W_shared + B_i A_i`` with bias
``b_i``. Stage i of the folded model is therefore a plain ``AdaptiveMixing`` with these two Linears
(same G, P_in, P_out), and the folded checkpoint loads into a plain :class:`AdaMixerDecoder` with
the LORS config's stage settings (e.g. ``n_groups=2, in_points=64``); its outputs equal the LORS
model's up to float rounding. The folding is computed in float64 and cast back.

Inference trade-off: the folded model skips the core generators and the per-query residuals
(fewer FLOPs), but stores six dense generators and projections again (135.5 M instead of 35.3 M
decoder parameters for the R-50 model).
"""
import copy
from collections import OrderedDict
from typing import Dict

import torch
import torch.nn as nn

from .lowrank_ops import materialize_residual

PLAIN_MIXER = dict(type='AdaptiveMixing')


@torch.no_grad()
def fold_lors_mixing_stack(stack: nn.Module, stage_idx: int,
                           compute_dtype: torch.dtype = torch.float64) -> Dict[str, torch.Tensor]:
    """Plain ``AdaptiveMixing`` tensors of stage ``stage_idx`` of a ``LORSAdaptiveMixingStack``.

    Returns a dict with the keys of ``AdaptiveMixing``'s state dict: ``parameter_generator.0.
    weight`` ``[G*(C*C + P_in*P_out), D]`` and ``.bias``, ``out_proj.weight`` ``[D, G*C*P_out]``
    and ``out_proj.bias`` ``[D]``, in the stack's dtype.
    """
    i = stack._check_stage(stage_idx)
    out_dtype = stack.parameter_generator.weight.dtype
    G, C = stack.n_groups, stack.channels
    P_in, P_out = stack.in_points, stack.out_points
    k, K = stack.kernel_sizes[i], stack.kernel_groups[i]

    def cast(t):
        return t.detach().to(compute_dtype)

    ml, mr, sl, sr = (cast(t) for t in stack.factors(i))  # (G, K, ., .)

    def residual_of_cores(cores: torch.Tensor) -> torch.Tensor:
        """``[..., 2*G*K*k*k]`` core-generator outputs -> ``[..., G*(C*C + P_in*P_out)]``
        residual generator outputs, in the shared generator's layout (group-major, M then S)."""
        core_m, core_s = cores.unflatten(-1, (2, G, K, k, k)).unbind(-5)
        delta_m = materialize_residual(ml, core_m, mr)  # [..., G, C, C]
        delta_s = materialize_residual(sl, core_s, sr)  # [..., G, P_out, P_in]
        return torch.cat([delta_m.flatten(-2), delta_s.flatten(-2)], dim=-1).flatten(-2)

    shared = stack.parameter_generator
    core = stack.core_generators[i]
    # column d of W_e is the core produced by the unit query e_d (minus the bias)
    weight = cast(shared.weight) + residual_of_cores(cast(core.weight).mT).mT
    bias = cast(shared.bias) + residual_of_cores(cast(core.bias))

    out_proj = stack.out_proj
    proj_weight = cast(out_proj.shared_weight) + cast(out_proj.private_B[i]) @ cast(
        out_proj.private_A[i])
    proj_bias = out_proj.merged_bias(i)
    proj_bias = (torch.zeros(out_proj.out_features, dtype=compute_dtype)
                 if proj_bias is None else cast(proj_bias))

    tensors = {
        'parameter_generator.0.weight': weight,
        'parameter_generator.0.bias': bias,
        'out_proj.weight': proj_weight,
        'out_proj.bias': proj_bias,
    }
    return {key: t.to(out_dtype).contiguous() for key, t in tensors.items()}


@torch.no_grad()
def fold_lors_state_dict(model: nn.Module) -> 'OrderedDict[str, torch.Tensor]':
    """``model.state_dict()`` with every LORS mixing stack replaced by plain per-stage mixers.

    Every ``LORSStageMixer`` at ``<name>`` gets ``<name>.parameter_generator.0.{weight,bias}``
    and ``<name>.out_proj.{weight,bias}``; the stacks' own entries are dropped. All other entries
    are passed through unchanged. The result loads into the model built from
    :func:`plain_adamixer_model_cfg` of the same config.
    """
    from .lors_stage_mixer import LORSStageMixer

    module_names = {id(m): n for n, m in model.named_modules()}
    folded, stack_names = OrderedDict(), set()
    for name, module in model.named_modules():
        if not isinstance(module, LORSStageMixer):
            continue
        if module.stack is None:
            raise RuntimeError(f'{name} is not bound to a LORS stack')
        if id(module.stack) not in module_names:
            raise ValueError(f'the LORS stack used by {name} is not a submodule of the model')
        stack_names.add(module_names[id(module.stack)])
        for key, value in fold_lors_mixing_stack(module.stack, module.stage_idx).items():
            folded[f'{name}.{key}'] = value
    if not folded:
        raise ValueError(f'{type(model).__name__} has no LORSStageMixer: nothing to fold')

    state = OrderedDict()
    for key, value in model.state_dict().items():
        if any(key.startswith(f'{stack}.') for stack in stack_names):
            continue
        state[key] = value
    state.update(folded)
    return state


def plain_adamixer_model_cfg(model_cfg):
    """The plain AdaMixer model config that a folded checkpoint of ``model_cfg`` loads into.

    ``roi_head.type`` becomes ``AdaMixerDecoder``, ``roi_head.lors_cfg`` is removed and every
    stage's ``mixing_cfg`` becomes ``AdaptiveMixing``; the stage dims (``n_groups``,
    ``in_points``, ...) and everything else stay as they are.
    """
    cfg = copy.deepcopy(model_cfg)
    roi_head = cfg['roi_head']
    if roi_head.get('type') != 'AdaMixerLORSDecoder':
        raise ValueError(f"model.roi_head.type must be 'AdaMixerLORSDecoder' to fold, got "
                         f"{roi_head.get('type')!r}")
    roi_head['type'] = 'AdaMixerDecoder'
    roi_head.pop('lors_cfg', None)
    stages = roi_head.get('bbox_head', dict(type='AdaMixerDecoderStage'))
    for stage in (stages if isinstance(stages, (list, tuple)) else [stages]):
        stage['mixing_cfg'] = dict(PLAIN_MIXER)
    roi_head['bbox_head'] = stages
    return cfg
