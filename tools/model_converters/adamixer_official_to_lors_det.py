#!/usr/bin/env python
"""Convert an official AdaMixer checkpoint (MCG-NJU/AdaMixer) into a lors_det checkpoint.

    python tools/model_converters/adamixer_official_to_lors_det.py SRC.pth DST.pth [--config CFG]

``SRC.pth`` is a checkpoint of the official code (an mmdet 2.12 fork on mmcv-full 1.3.x):
``{'meta': {'CLASSES', 'config', 'mmcv_version', 'epoch', 'iter', ...}, 'state_dict': ...,
'optimizer': ...}``. ``DST.pth`` is an mmengine-style checkpoint
``{'meta': {'dataset_meta': {'classes': CLASSES[, 'palette']}, 'converted_from': {...}},
'state_dict': ...}`` that ``tools/test.py``, ``mmdet.apis.init_detector`` and ``DetInferencer``
load. The optimizer state is dropped (its parameter order and AdamW moments are of no use to a
fresh mmengine run).

Every source key must match one row of :data:`KEY_RULES`; a key no row knows stops the
conversion with an error listing it (nothing is silently dropped). ``--config`` also builds the
lors_det model of that config and loads the converted weights strictly, failing with the missing,
unexpected and wrongly shaped keys named.

Key mapping (``{s}`` = decoder stage 0..5, ``{l}`` = pyramid level, ``{k}`` = block index). The
lors_det modules were written so that the official names hold; the rows document *why* each
official name carries over, and pin the module layout that has to stay that way:

=====================================================  ========================================
official (mmdet 2.12 / mmcv-full 1.3.x)                lors_det (mmdet 3.3 / mmcv 2.1)
=====================================================  ========================================
``module.<key>`` (saved from a DDP-wrapped model)      ``<key>`` (prefix stripped first)
``backbone.<rest>``                                    ``backbone.<rest>``: mmdet's ResNet /
                                                       ResNeXt and the fork's Swin (mmdet 2.16
                                                       layout) name their layers as mmdet 3.3
``neck.lateral_convs.{l}.conv.{weight,bias}``          same (``ChannelMapping``: 1x1
                                                       ``ConvModule`` with bias, no norm)
``neck.gn_out.{weight,bias}``                          same (the one shared GroupNorm)
``rpn_head.init_proposal_bboxes.weight``               same (``InitialQueryGenerator``; mmdet's
``rpn_head.init_content_features.weight``              EmbeddingRPNHead would say
                                                       ``init_proposal_features``)
``roi_head.bbox_head.{s}.attention.attn.`` +           same: mmcv 1.3 and mmcv 2.1
``{in_proj_weight,in_proj_bias,out_proj.weight,        ``MultiheadAttention`` both wrap
out_proj.bias}``                                       ``nn.MultiheadAttention`` as ``attn``
``roi_head.bbox_head.{s}.attention_norm.*``            same (LN)
``roi_head.bbox_head.{s}.iof_tau``                     same (per-head IoF temperature)
``roi_head.bbox_head.{s}.ffn.layers.{k}.0.*``          same: mmcv 1.3 and 2.1 ``FFN`` both hold
(hidden Linear, k < num_fcs - 1)                       ``Sequential(Linear, act, Dropout)``
``roi_head.bbox_head.{s}.ffn.layers.{k}.*``            blocks then the output ``Linear``
(output Linear, k = num_fcs - 1)                       (no ``gamma2``: no layer scale)
``roi_head.bbox_head.{s}.ffn_norm.*``                  same (LN)
``roi_head.bbox_head.{s}.{cls,reg}_fcs.{3k}.*``        same ([Linear, LN, ReLU] x num_fcs
``roi_head.bbox_head.{s}.{cls,reg}_fcs.{3k+1}.*``      ``ModuleList``: Linear at 3k, LN at 3k+1)
``roi_head.bbox_head.{s}.fc_cls.*`` / ``fc_reg.*``     same (the stage's own 256->K / 256->4
                                                       layers; mmdet's BBoxHead ones replaced)
``roi_head.bbox_head.{s}.sampling_n_mixing.`` +        same
``sampling_offset_generator.0.*``, ``norm.*``,
``adaptive_mixing.parameter_generator.0.*``,
``adaptive_mixing.out_proj.*``
=====================================================  ========================================

Parameter-free modules have no keys on either side: the decoder's dummy ``SingleRoIExtractor``
(RoIAlign), the losses, the dropouts, the mixer's ReLU and (official only) its FLOPs shadow
module; the data preprocessor's mean/std are non-persistent buffers in mmengine.
"""
import argparse
import os
import os.path as osp
import pickle
import re
import sys
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence, Tuple

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

import torch  # noqa: E402

_STAGE = r'roi_head\.bbox_head\.(?P<stage>\d+)\.'
_WB = r'(?P<param>weight|bias)'
_DEC = 'roi_head.bbox_head.{stage}.'

# (official key pattern, lors_det key template, what it is). Patterns are anchored: a key
# matches a row only as a whole. The template is filled with the pattern's named groups.
KEY_RULES: List[Tuple[str, str, str]] = [
    (r'backbone\.(?P<rest>.+)', 'backbone.{rest}', 'backbone (same layer names in mmdet 3.3)'),
    (r'neck\.lateral_convs\.(?P<level>\d+)\.conv\.' + _WB,
     'neck.lateral_convs.{level}.conv.{param}', 'ChannelMapping 1x1 conv of one level'),
    (r'neck\.gn_out\.' + _WB, 'neck.gn_out.{param}', 'ChannelMapping shared GroupNorm'),
    (r'rpn_head\.init_proposal_bboxes\.weight', 'rpn_head.init_proposal_bboxes.weight',
     'initial query boxes (normalised cxcywh)'),
    (r'rpn_head\.init_content_features\.weight', 'rpn_head.init_content_features.weight',
     'initial query contents'),
    (_STAGE + r'attention\.attn\.(?P<param>in_proj_weight|in_proj_bias)',
     _DEC + 'attention.attn.{param}', 'self-attention packed q/k/v projection'),
    (_STAGE + r'attention\.attn\.out_proj\.' + _WB, _DEC + 'attention.attn.out_proj.{param}',
     'self-attention output projection'),
    (_STAGE + r'attention_norm\.' + _WB, _DEC + 'attention_norm.{param}', 'post-attention LN'),
    (_STAGE + r'iof_tau', _DEC + 'iof_tau', 'per-head IoF attention-bias temperature'),
    (_STAGE + r'ffn\.layers\.(?P<block>\d+)\.0\.' + _WB, _DEC + 'ffn.layers.{block}.0.{param}',
     'FFN hidden Linear'),
    (_STAGE + r'ffn\.layers\.(?P<block>\d+)\.' + _WB, _DEC + 'ffn.layers.{block}.{param}',
     'FFN output Linear'),
    (_STAGE + r'ffn_norm\.' + _WB, _DEC + 'ffn_norm.{param}', 'post-FFN LN'),
    (_STAGE + r'(?P<branch>cls_fcs|reg_fcs)\.(?P<layer>\d+)\.' + _WB,
     _DEC + '{branch}.{layer}.{param}', 'cls/reg branch Linear (3k) or LN (3k+1)'),
    (_STAGE + r'(?P<head>fc_cls|fc_reg)\.' + _WB, _DEC + '{head}.{param}',
     'classifier / xyzr-delta regressor'),
    (_STAGE + r'sampling_n_mixing\.sampling_offset_generator\.0\.' + _WB,
     _DEC + 'sampling_n_mixing.sampling_offset_generator.0.{param}', '3D sampling offsets'),
    (_STAGE + r'sampling_n_mixing\.norm\.' + _WB, _DEC + 'sampling_n_mixing.norm.{param}',
     'post-mixing LN'),
    (_STAGE + r'sampling_n_mixing\.adaptive_mixing\.parameter_generator\.0\.' + _WB,
     _DEC + 'sampling_n_mixing.adaptive_mixing.parameter_generator.0.{param}',
     'generator of the per-query mixing matrices M, S'),
    (_STAGE + r'sampling_n_mixing\.adaptive_mixing\.out_proj\.' + _WB,
     _DEC + 'sampling_n_mixing.adaptive_mixing.out_proj.{param}', 'mixer output projection'),
]
_COMPILED = [(re.compile(pattern), template) for pattern, template, _ in KEY_RULES]
DDP_PREFIX = 'module.'
REQUIRED_PARTS = ('backbone.', 'neck.', 'rpn_head.', 'roi_head.')


class ConversionError(ValueError):
    """The source checkpoint does not have the official AdaMixer layout."""


def _shorten(keys: Sequence[str], limit: int = 30) -> str:
    keys = list(keys)
    shown = '\n  '.join(keys[:limit])
    more = f'\n  ... and {len(keys) - limit} more' if len(keys) > limit else ''
    return f'\n  {shown}{more}'


def strip_ddp_prefix(state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Remove the ``module.`` prefix that a DDP-wrapped model puts on every key."""
    prefixed = [k.startswith(DDP_PREFIX) for k in state_dict]
    if not any(prefixed):
        return dict(state_dict)
    if not all(prefixed):
        mixed = [k for k in state_dict if not k.startswith(DDP_PREFIX)]
        raise ConversionError('some keys start with "module." (DDP) and others do not; '
                              f'keys without the prefix:{_shorten(mixed)}')
    return {k[len(DDP_PREFIX):]: v for k, v in state_dict.items()}


def rename_key(key: str) -> Optional[str]:
    """The lors_det name of an official key (``module.`` already stripped), None if unknown."""
    for pattern, template in _COMPILED:
        match = pattern.fullmatch(key)
        if match:
            return template.format(**match.groupdict())
    return None


def _check_stages(state_dict: Dict[str, torch.Tensor]) -> None:
    """Decoder stages must be numbered 0..S-1 and all hold the same set of tensors."""
    stages: Dict[int, set] = {}
    for key in state_dict:
        match = re.match(_STAGE, key)
        if match:
            stages.setdefault(int(match['stage']), set()).add(key[match.end():])
    if not stages:
        return
    if sorted(stages) != list(range(len(stages))):
        raise ConversionError(f'decoder stages are numbered {sorted(stages)}, expected '
                              f'0..{len(stages) - 1} (roi_head.bbox_head.<stage>.*)')
    reference = stages[0]
    for stage, names in stages.items():
        if names != reference:
            diff = sorted(reference.symmetric_difference(names))
            raise ConversionError(
                f'decoder stage {stage} does not hold the same tensors as stage 0 '
                f'(truncated checkpoint?); differing names:{_shorten(diff)}')


def convert_state_dict(state_dict: Dict[str, torch.Tensor]) -> 'OrderedDict[str, torch.Tensor]':
    """Rename an official AdaMixer state dict to lors_det keys (tensors are not copied).

    Raises:
        ConversionError: a key no rule of :data:`KEY_RULES` knows (all of them are listed), a
            detector part missing, two keys mapping to one name, or inconsistent stages.
    """
    state_dict = strip_ddp_prefix(state_dict)
    converted, unknown = OrderedDict(), []
    for key, value in state_dict.items():
        new_key = rename_key(key)
        if new_key is None:
            unknown.append(key)
            continue
        if new_key in converted:
            raise ConversionError(f'two source keys map to {new_key!r}')
        converted[new_key] = value
    if unknown:
        raise ConversionError(
            f'{len(unknown)} keys of the source checkpoint are not part of the official '
            f'AdaMixer layout this converter knows (see KEY_RULES in {osp.basename(__file__)}); '
            f'refusing to drop them:{_shorten(unknown)}')
    missing_parts = [p.rstrip('.') for p in REQUIRED_PARTS
                     if not any(k.startswith(p) for k in converted)]
    if missing_parts:
        raise ConversionError(f'the source state_dict has no {", ".join(missing_parts)} '
                              'weights: not a full AdaMixer detector checkpoint')
    _check_stages(converted)
    return converted


def _num_stage_classes(state_dict: Dict[str, torch.Tensor]) -> Dict[str, int]:
    return {k: int(v.shape[0]) for k, v in state_dict.items()
            if re.fullmatch(_STAGE + r'fc_cls\.weight', k)}


def _plain(value):
    """``value`` if it is a plain scalar, else its ``str``: the output must stay loadable with
    ``torch.load(weights_only=True)`` (a source read with --unsafe-load may hold objects)."""
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    return str(value)


def _dataset_meta(classes: Sequence[str]) -> dict:
    """``dataset_meta`` with the classes; COCO's palette when they are the 80 COCO classes."""
    from mmdet.datasets import CocoDataset
    meta = dict(classes=tuple(str(c) for c in classes))
    if tuple(classes) == tuple(CocoDataset.METAINFO['classes']):
        meta['palette'] = list(CocoDataset.METAINFO['palette'])
    return meta


def convert_checkpoint(checkpoint: dict, source: str = '',
                       classes: Optional[Sequence[str]] = None) -> dict:
    """The lors_det checkpoint of an official one (a dict as returned by ``torch.load``).

    Args:
        checkpoint: ``{'meta': ..., 'state_dict': ..., ['optimizer': ...]}``.
        source: name of the source file, recorded in ``meta.converted_from``.
        classes: class names to use when ``meta.CLASSES`` is absent (e.g. from ``--config``).
    """
    if not isinstance(checkpoint, dict) or 'state_dict' not in checkpoint:
        found = sorted(checkpoint)[:10] if isinstance(checkpoint, dict) else type(checkpoint)
        raise ConversionError(f'{source or "source"}: expected an mmcv checkpoint dict with a '
                              f'"state_dict" entry, found {found}')
    state_dict = convert_state_dict(checkpoint['state_dict'])
    old_meta = checkpoint.get('meta') or {}

    if old_meta.get('CLASSES') is not None:
        classes = old_meta['CLASSES']
    if classes is None:
        raise ConversionError(f'{source or "source"}: meta.CLASSES is missing; pass --config '
                              'so that the class names are taken from its dataset')
    if isinstance(classes, str):
        classes = (classes, )
    per_stage = _num_stage_classes(state_dict)
    wrong = {k: n for k, n in per_stage.items() if n != len(classes)}
    if wrong:
        raise ConversionError(f'the classifiers have {sorted(set(wrong.values()))} outputs '
                              f'({", ".join(sorted(wrong))}) but meta.CLASSES has '
                              f'{len(classes)} names (a softmax head would have one more)')

    converted_from = dict(
        file=osp.basename(source) if source else None,
        format='MCG-NJU/AdaMixer (mmdet 2.x fork)')
    for key in ('mmdet_version', 'mmcv_version', 'epoch', 'iter', 'time', 'exp_name'):
        if key in old_meta:
            converted_from[key] = _plain(old_meta[key])
    meta = dict(dataset_meta=_dataset_meta(classes), converted_from=converted_from)
    if isinstance(old_meta.get('config'), str):
        meta['official_config'] = old_meta['config']
    return dict(meta=meta, state_dict=state_dict)


def check_against_config(state_dict: Dict[str, torch.Tensor], config: str):
    """Build the lors_det model of ``config`` and load ``state_dict`` strictly.

    Raises:
        ConversionError: naming the missing, unexpected and wrongly shaped keys.
    Returns:
        the model with the weights loaded.
    """
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    import lors_det  # noqa: F401  (registers the lors_det modules)
    from mmdet.registry import MODELS

    cfg = Config.fromfile(config)
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    model = MODELS.build(cfg.model)  # init_weights is not called: nothing is downloaded
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    shapes = [f'{k}: checkpoint {tuple(state_dict[k].shape)}, model {tuple(v.shape)}'
              for k, v in expected.items()
              if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f'missing in the checkpoint ({len(missing)}):{_shorten(missing)}')
        if unexpected:
            parts.append(f'unexpected (not in the model, {len(unexpected)}):'
                         f'{_shorten(unexpected)}')
        if shapes:
            parts.append(f'shape mismatch ({len(shapes)}):{_shorten(shapes)}')
        raise ConversionError(f'the converted weights do not fit the model of {config}:\n'
                              + '\n'.join(parts))
    model.load_state_dict(state_dict, strict=True)
    return model


def config_classes(config: str) -> Optional[tuple]:
    """Class names of the first test (else val, train) dataset of ``config`` that names them."""
    from mmengine.config import Config

    import lors_det  # noqa: F401
    from lors_det.datasets.checks import dataloader_datasets, dataset_classes

    cfg = Config.fromfile(config)
    for _, dataset in dataloader_datasets(cfg, ('test', 'val', 'train')):
        classes = dataset_classes(dataset)
        if classes is not None:
            return classes
    return None


def load_source(path: str, unsafe: bool = False) -> dict:
    """The source checkpoint, read weights-only (``lors_det.checkpoint``) unless ``unsafe``."""
    from lors_det.checkpoint import load_checkpoint_file
    try:
        return load_checkpoint_file(path, unsafe=unsafe)
    except (FileNotFoundError, pickle.UnpicklingError, RuntimeError) as error:
        raise ConversionError(str(error)) from error


def convert_file(src: str, dst: str, config: Optional[str] = None,
                 unsafe: bool = False) -> dict:
    """Read ``src``, convert, optionally check against ``config``, write ``dst``."""
    checkpoint = load_source(src, unsafe=unsafe)
    classes = None
    if config is not None and isinstance(checkpoint, dict) \
            and not (checkpoint.get('meta') or {}).get('CLASSES'):
        classes = config_classes(config)
        if classes is None:
            raise ConversionError(f'{src}: meta.CLASSES is missing and {config} names no '
                                  'classes (test/val/train_dataloader.dataset.metainfo.classes '
                                  'or the dataset class METAINFO)')
    out = convert_checkpoint(checkpoint, source=src, classes=classes)
    if config is not None:
        check_against_config(out['state_dict'], config)
        out['meta']['converted_from']['checked_with_config'] = osp.abspath(config)
    os.makedirs(osp.dirname(osp.abspath(dst)), exist_ok=True)
    torch.save(out, dst)
    return out


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('src', help='official AdaMixer checkpoint (.pth)')
    parser.add_argument('dst', help='where to write the lors_det checkpoint')
    parser.add_argument(
        '--config',
        help='a lors_det config (e.g. configs/adamixer/adamixer_r50_8xb2-1x_coco.py): build its '
        'model and load the converted weights strictly')
    parser.add_argument(
        '--unsafe-load', action='store_true',
        help='torch.load the source with weights_only=False (only for files you trust)')
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    try:
        out = convert_file(args.src, args.dst, args.config, unsafe=args.unsafe_load)
    except ConversionError as error:
        sys.exit(f'error: {error}')
    state_dict = out['state_dict']
    num_stages = len(_num_stage_classes(state_dict))
    classes = out['meta']['dataset_meta']['classes']
    checked = f', loaded strictly into {args.config}' if args.config else ''
    print(f'converted {len(state_dict)} tensors ({num_stages} decoder stages, {len(classes)} '
          f'classes){checked}; saved to {args.dst}')


if __name__ == '__main__':
    main()
