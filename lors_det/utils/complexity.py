"""Parameter and FLOP counts of a detector, split into backbone / neck / query generator / decoder.

Both functions work on mmdet two-stage-style detectors (``backbone``, optional ``neck``,
``rpn_head``, ``roi_head``), i.e. AdaMixer with or without LORS.

Parameters (:func:`count_parameters`)
    Every tensor is counted once (``model.parameters()`` de-duplicates shared tensors). The
    decoder is split into ``decoder_shared``: tensors used by more than one decoder stage, and
    ``decoder_private``: the rest of the decoder (tensors used by one stage). A stage uses its own
    ``parameters()`` plus whatever its submodules list in ``referenced_parameters()``: the LORS
    stage mixer (:class:`~lors_det.models.lors.LORSStageMixer`) references the shared stack
    that the decoder owns.

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
"""
from collections import Counter
from typing import Callable, Dict, Tuple

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

PARTS = (('backbone', 'backbone'), ('neck', 'neck'), ('query_generator', 'rpn_head'),
         ('decoder', 'roi_head'))


def _numel(params) -> int:
    return sum(p.numel() for p in {id(p): p for p in params}.values())


def _stage_parameter_ids(stage: nn.Module) -> set:
    ids = {id(p) for p in stage.parameters()}
    for module in stage.modules():
        referenced = getattr(module, 'referenced_parameters', None)
        if callable(referenced):
            ids.update(id(p) for p in referenced())
    return ids


def count_parameters(model: nn.Module) -> Dict[str, int]:
    """Parameter counts: ``backbone, neck, query_generator (rpn_head), decoder (roi_head),
    total, decoder_shared, decoder_private`` (module docstring for the shared/private split).

    A part the model does not have counts 0. ``decoder_shared + decoder_private == decoder``.
    """
    counts = {}
    for key, attr in PARTS:
        part = getattr(model, attr, None)
        counts[key] = 0 if part is None else _numel(part.parameters())
    counts['total'] = _numel(model.parameters())

    decoder = getattr(model, 'roi_head', None)
    stages = getattr(decoder, 'bbox_head', None)
    if decoder is None or not isinstance(stages, nn.ModuleList):
        counts['decoder_shared'], counts['decoder_private'] = 0, counts['decoder']
        return counts
    users = Counter()
    for stage in stages:
        users.update(_stage_parameter_ids(stage))
    decoder_params = {id(p): p for p in decoder.parameters()}
    counts['decoder_shared'] = sum(p.numel() for i, p in decoder_params.items() if users[i] > 1)
    counts['decoder_private'] = counts['decoder'] - counts['decoder_shared']
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
    from ..models.lors import LowRankResidualLinearStack
    for module in model.modules():
        if isinstance(module, LowRankResidualLinearStack):
            probe = module.shared_weight.new_zeros(1, module.in_features)
            for layer in range(module.num_layers):
                module(probe, layer)


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
    for attr in ('backbone', 'rpn_head', 'roi_head'):
        if getattr(model, attr, None) is None:
            raise TypeError(f'count_flops needs a detector with backbone, rpn_head and roi_head; '
                            f'{type(model).__name__} has no {attr}')
    modes = {module: module.training for module in model.modules()}
    model.eval()
    try:
        with torch.no_grad():
            _prime_static_merges(model)
            counts = {}
            counts['backbone'], x = count_fn_flops(model.backbone, batch_inputs)
            if getattr(model, 'neck', None) is not None:
                counts['neck'], x = count_fn_flops(model.neck, x)
            else:
                counts['neck'] = 0
            counts['query_generator'], rpn_results = count_fn_flops(
                model.rpn_head.predict, x, batch_data_samples, rescale=False)
            counts['decoder'], _ = count_fn_flops(
                model.roi_head.predict, x, rpn_results, batch_data_samples, rescale=False)
    finally:
        for module, mode in modes.items():
            module.training = mode
    counts['total'] = sum(counts[key] for key, _ in PARTS)
    return counts
