"""Parameter and FLOP counts of a detector, split into backbone / neck / query generator / decoder.

Both functions work on mmdet two-stage-style detectors (``backbone``, optional ``neck``,
``rpn_head``, ``roi_head``: AdaMixer with or without LORS, Sparse R-CNN) and on DETR-style ones
(``backbone``, ``neck``, ``encoder``, ``decoder``, ``bbox_head``: Deformable DETR, DINO), whose
parts are backbone / neck / encoder / decoder (``decoder``) / head (``bbox_head``) / other (query
embeddings, level embeddings, the two-stage proposal layers).

Parameters (:func:`count_parameters`)
    Every tensor is counted once. The decoder is split by ownership: ``decoder_private`` are the
    parameters registered under a stage (``roi_head.bbox_head[i]``, ``decoder.layers[i]``),
    ``decoder_shared`` the other decoder parameters, i.e. those of modules the decoder shares
    across its stages (LORS: ``roi_head.shared_mixing``, ``roi_head.lors_shared_bbox_head``,
    ``decoder.lors_shared_layers``, which the stages reach through plain references; a DETR
    decoder's reference-point MLP and final norm).

FLOPs (:func:`count_flops`)
    **FLOPs = 2 x MACs** (one multiply-add counts 2), the convention of
    ``torch.utils.flop_counter.FlopCounterMode``, which does the counting at the ATen dispatch
    level: every matrix product (``mm``, ``addmm``, ``bmm``, ``baddbmm``, and thus ``F.linear``,
    ``torch.matmul`` and ``torch.einsum``), convolution and scaled-dot-product attention is
    counted, *including the products with per-query generated matrices* of AdaMixer's adaptive
    mixing and the LORS residuals, which module-hook counters (mmcv / fvcore ``get_flops``)
    miss. Element-wise ops, normalisations, softmax and ``grid_sample`` are not counted
    (negligible here). Divide by 2 for the MAC numbers that papers (AdaMixer, LORS) call
    "GFLOPs".

    The count is of one inference pass (``predict``, eval mode, no autograd), for the given batch.
    The LORS^T merged out-projection weights (``W + B A``, computed once per checkpoint and cached
    in eval mode) are computed *before* counting, so they are not counted per image.

Per module and per role (:func:`count_module_flops`, :func:`count_flops_detailed`)
    ``count_module_flops`` records, for every submodule, the FLOPs counted while it runs
    (*inclusive*) and those not inside a module it calls (*exclusive*), along the call tree (a
    LORS stage mixer calls the decoder's shared generator, which is not its child module; those
    FLOPs are still its callee's). The exclusive FLOPs of a mixer are its functional products:
    ``x @ M`` and ``S @ x`` with the generated matrices, and the LORS residual products.
    :func:`decoder_flops_by_role` groups the decoder's FLOPs into attention, sampling offsets,
    mixing generator, mixing products, mixing output projection, FFN and heads.
"""
import contextlib
from collections import defaultdict
from typing import Callable, Dict, List, Tuple

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

PARTS = (('backbone', 'backbone'), ('neck', 'neck'), ('query_generator', 'rpn_head'),
         ('decoder', 'roi_head'))
DETR_PARTS = (('backbone', 'backbone'), ('neck', 'neck'), ('encoder', 'encoder'),
              ('decoder', 'decoder'), ('head', 'bbox_head'))


def model_parts(model: nn.Module) -> tuple:
    """``((key, attribute), ...)`` of the parts of ``model``: :data:`PARTS` for two-stage-style
    detectors, :data:`DETR_PARTS` for DETR-style ones (which also get an ``other`` part)."""
    return PARTS if hasattr(model, 'roi_head') else DETR_PARTS


def decoder_stages(model: nn.Module):
    """``(decoder attribute, its stack of stages)`` or ``(decoder attribute, None)``."""
    if hasattr(model, 'roi_head'):
        stages = getattr(model.roi_head, 'bbox_head', None)
        return 'roi_head', stages if isinstance(stages, nn.ModuleList) else None
    layers = getattr(getattr(model, 'decoder', None), 'layers', None)
    return 'decoder', layers if isinstance(layers, nn.ModuleList) else None


def _numel(params) -> int:
    return sum(p.numel() for p in {id(p): p for p in params}.values())


def count_parameters(model: nn.Module) -> Dict[str, int]:
    """Parameter counts: ``backbone, neck, query_generator (rpn_head), decoder (roi_head),
    total, decoder_shared, decoder_private`` (module docstring for the shared/private split).

    A part the model does not have counts 0. ``decoder_shared + decoder_private == decoder``.
    """
    counts = {}
    parts = model_parts(model)
    for key, attr in parts:
        part = getattr(model, attr, None)
        counts[key] = 0 if part is None else _numel(part.parameters())
    counts['total'] = _numel(model.parameters())
    if parts is DETR_PARTS:
        counts['other'] = counts['total'] - sum(counts[key] for key, _ in parts)

    _, stages = decoder_stages(model)
    if stages is None:
        counts['decoder_shared'], counts['decoder_private'] = 0, counts['decoder']
        return counts
    counts['decoder_private'] = _numel(p for stage in stages for p in stage.parameters())
    counts['decoder_shared'] = counts['decoder'] - counts['decoder_private']
    return counts


def count_fn_flops(fn: Callable, *args, **kwargs) -> Tuple[int, object]:
    """``(FLOPs, result)`` of ``fn(*args, **kwargs)``; FLOPs = 2 x MACs as in
    :func:`count_flops` (no mode switch, no ``no_grad``: the caller decides)."""
    with FlopCounterMode(display=False) as counter:
        result = fn(*args, **kwargs)
    return counter.get_total_flops(), result


@torch.no_grad()
def _prime_static_merges(model: nn.Module) -> None:
    """Fill the eval-mode merged-weight caches of every LORS^T stack (one-row forward per
    layer), so that the once-per-checkpoint ``W + B A`` is not counted as per-image work."""
    from ..models.lors import LowRankResidualLinear
    for module in model.modules():
        if isinstance(module, LowRankResidualLinear):
            module(module.B.new_zeros(1, module.in_features))


def count_flops(model: nn.Module, batch_inputs: torch.Tensor,
                batch_data_samples: list) -> Dict[str, int]:
    """FLOPs (= 2 x MACs) of one ``predict`` pass, split into ``backbone, neck,
    query_generator, decoder`` and ``total`` (their sum).

    Args:
        model: a two-stage-style detector (``backbone``, optional ``neck``, ``rpn_head``,
            ``roi_head``), e.g. AdaMixer.
        batch_inputs: the preprocessed images ``[B, 3, H, W]`` (after the data preprocessor).
        batch_data_samples: their ``DetDataSample`` s (``img_shape`` etc. in the metainfo).

    The model runs in eval mode under ``torch.no_grad()``; its train/eval flags are restored
    afterwards. See the module docstring for what is counted.
    """
    return count_flops_detailed(model, batch_inputs, batch_data_samples)['parts']


def count_module_flops(root: nn.Module, fn: Callable, *args,
                       **kwargs) -> Tuple[Dict[str, int], Dict[str, int], int, object]:
    """``(inclusive, exclusive, total, result)`` of ``fn(*args, **kwargs)``.

    ``inclusive[name]`` / ``exclusive[name]``: FLOPs (2 x MACs) counted while the submodule
    ``name`` of ``root`` (its ``named_modules()`` name, ``''`` for ``root``) runs, summed over its
    calls; exclusive leaves out what runs inside the modules it calls (the dynamic call tree, so a
    module called through a plain attribute counts as the callee of its caller). ``total`` is
    every FLOP of ``fn``, also those outside any module call (e.g. in a ``predict`` method), so
    ``sum(exclusive.values()) <= total``. Modules that never ran are absent. Only modules called
    through ``__call__`` are seen (forward hooks). As :func:`count_fn_flops`, no mode switch and
    no ``no_grad``.
    """
    names = {}
    for name, module in root.named_modules():
        names.setdefault(module, name)
    inclusive, exclusive = defaultdict(int), defaultdict(int)
    frames: List[list] = []  # [name, FLOPs at entry, FLOPs of its callees]

    with FlopCounterMode(display=False) as counter:

        def enter(module, _):
            frames.append([names[module], counter.get_total_flops(), 0])

        def leave(module, _, __):
            name, start, callees = frames.pop()
            spent = counter.get_total_flops() - start
            inclusive[name] += spent
            exclusive[name] += spent - callees
            if frames:
                frames[-1][2] += spent

        handles = []
        for module in names:
            handles.append(module.register_forward_pre_hook(enter))
            handles.append(module.register_forward_hook(leave, always_call=True))
        try:
            result = fn(*args, **kwargs)
        finally:
            for handle in handles:
                handle.remove()
        total = counter.get_total_flops()
    return dict(inclusive), dict(exclusive), total, result


# Roles of the decoder's FLOPs, by the segments of a module's name (first match wins; the
# exclusive FLOPs of the mixers and their LORS^A residual modules, all under
# ``adaptive_mixing``, are the products with the per-query generated matrices).
DECODER_ROLES = (
    ('attention', ('attention',)),
    ('sampling_offsets', ('sampling_offset_generator',)),
    ('mixing_generator', ('parameter_generator', 'core_generator')),
    ('mixing_out_proj', ('out_proj',)),
    ('mixing_products', ('adaptive_mixing',)),
    ('ffn', ('ffn',)),
    ('heads', ('cls_fcs', 'reg_fcs', 'fc_cls', 'fc_reg')),
)
# the same for a DETR decoder (DeformableDetrTransformerDecoderLayer)
DETR_DECODER_ROLES = (
    ('self_attention', ('self_attn',)),
    ('cross_attention', ('cross_attn',)),
    ('ffn', ('ffn',)),
)


@contextlib.contextmanager
def _inference_counting(model: nn.Module):
    """The state every count runs in: eval mode, no autograd, the LORS^T merges cached (not
    counted per image), and no parameter requiring grad (the FLOP counter's module tracker
    hooks every module input that does, and DINO feeds parameters to modules directly: under
    no_grad such a hook has no autograd node). Modes and flags are restored afterwards."""
    modes = {module: module.training for module in model.modules()}
    trainable = [p for p in model.parameters() if p.requires_grad]
    model.eval()
    try:
        for p in trainable:
            p.requires_grad_(False)
        with torch.no_grad():
            _prime_static_merges(model)
            yield
    finally:
        for module, mode in modes.items():
            module.training = mode
        for p in trainable:
            p.requires_grad_(True)


def decoder_flops_by_role(exclusive: Dict[str, int], total: int,
                          role_markers: tuple = DECODER_ROLES) -> Dict[str, int]:
    """Group a decoder's exclusive FLOPs (:func:`count_module_flops`) by role.

    Keys: the roles of ``role_markers`` (:data:`DECODER_ROLES` for AdaMixer / Sparse R-CNN,
    :data:`DETR_DECODER_ROLES`) and ``other`` (``total`` minus the rest: FLOPs of modules with
    no role and outside any module; 0 for AdaMixer / LORS decoders, whose box decoding and
    sampling have no matrix products). Their sum is ``total``.
    """
    roles = {role: 0 for role, _ in role_markers}
    for name, flops in exclusive.items():
        segments = set(name.split('.'))
        for role, markers in role_markers:
            if segments.intersection(markers):
                roles[role] += flops
                break
    roles['other'] = total - sum(roles.values())
    return roles


def count_flops_detailed(model: nn.Module, batch_inputs: torch.Tensor,
                         batch_data_samples: list) -> Dict[str, dict]:
    """FLOPs by part (what :func:`count_flops` returns) plus the decoder by role and by stage.

    Returns ``dict(parts=..., decoder_roles=..., decoder_stages=[...])``: ``parts`` is
    :func:`count_flops`'s dict (same arguments, same eval-mode pass); ``decoder_roles`` is
    :func:`decoder_flops_by_role` of the decoder (sums to ``parts['decoder']``);
    ``decoder_stages[i]`` the FLOPs of ``roi_head.bbox_head[i]`` (inclusive, along the call
    tree: a LORS stage includes its use of the shared weights).
    """
    if model_parts(model) is DETR_PARTS:
        return _count_detr_flops(model, batch_inputs, batch_data_samples)
    for attr in ('backbone', 'rpn_head', 'roi_head'):
        if getattr(model, attr, None) is None:
            raise TypeError(f'counting FLOPs by part needs a detector with backbone, rpn_head '
                            f'and roi_head; {type(model).__name__} has no {attr}')
    with _inference_counting(model):
        parts = {}
        parts['backbone'], x = count_fn_flops(model.backbone, batch_inputs)
        if getattr(model, 'neck', None) is not None:
            parts['neck'], x = count_fn_flops(model.neck, x)
        else:
            parts['neck'] = 0
        parts['query_generator'], rpn_results = count_fn_flops(
            model.rpn_head.predict, x, batch_data_samples, rescale=False)
        inclusive, exclusive, parts['decoder'], _ = count_module_flops(
            model.roi_head, model.roi_head.predict, x, rpn_results, batch_data_samples,
            rescale=False)
    parts['total'] = sum(parts[key] for key, _ in PARTS)
    _, stages = decoder_stages(model)
    num_stages = len(stages) if stages is not None else 0
    return dict(parts=parts, decoder_roles=decoder_flops_by_role(exclusive, parts['decoder']),
                decoder_stages=[inclusive.get(f'bbox_head.{i}', 0) for i in range(num_stages)])



def _count_detr_flops(model: nn.Module, batch_inputs: torch.Tensor,
                      batch_data_samples: list) -> Dict[str, dict]:
    """:func:`count_flops_detailed` for DETR-style detectors: one ``predict`` pass with every
    module's exclusive FLOPs summed into its part (a LORS layer's use of the shared weight is
    its caller's part); what runs outside every module (box decoding, top-k) is ``other``."""
    with _inference_counting(model):
        inclusive, exclusive, total, _ = count_module_flops(
            model, model.predict, batch_inputs, batch_data_samples, rescale=False)

    def under(prefix):
        return {n: f for n, f in exclusive.items() if n == prefix or n.startswith(prefix + '.')}

    parts = {key: sum(under(attr).values()) for key, attr in DETR_PARTS}
    parts['other'] = total - sum(parts.values())
    parts['total'] = total
    roles = decoder_flops_by_role(under('decoder'), parts['decoder'], DETR_DECODER_ROLES)
    _, stages = decoder_stages(model)
    num_stages = len(stages) if stages is not None else 0
    return dict(parts=parts, decoder_roles=roles,
                decoder_stages=[inclusive.get(f'decoder.layers.{i}', 0)
                                for i in range(num_stages)])
