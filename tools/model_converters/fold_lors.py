#!/usr/bin/env python
"""Fold a LORS checkpoint into plain per-stage weights (AdaMixer+LORS, or any ``LORSSharing``
config: Sparse R-CNN, Deformable DETR, DINO).

    python tools/model_converters/fold_lors.py CONFIG CHECKPOINT OUT.pth [--out-config PLAIN.py]

``LORSSharing`` configs (``model.type='LORSSharing'``): every LORS^T layer becomes its
``W_shared + B A`` and bias, every LORS^A generator its affine fold; the plain config is the
stock mmdet one (``model.type=detector_type``, no ``stacks``), which loads ``OUT.pth``
strictly. For AdaMixer+LORS:

``CONFIG`` is the LORS training config (``roi_head.type='AdaMixerLORSDecoder'``). Every stage's
generated mixing matrices ``M_i(q) = M_c(q) + sum B E_i(q) A`` are affine in the query, so they
equal a plain ``AdaptiveMixing.parameter_generator`` Linear with folded weight and bias; the
LORS^T out projection folds to a plain Linear per stage (maths: ``lors_det/models/lors/fold.py``).
``OUT.pth`` loads into a *plain* AdaMixer with the LORS config's stage dims (``n_groups=2,
in_points=64``): ``--out-config`` writes that config (the LORS config with ``AdaMixerDecoder`` and
``AdaptiveMixing`` mixers), e.g.

    python tools/test.py PLAIN.py OUT.pth

The folded model gives the same detections (up to float rounding) without the LORS core
generators and per-query residuals, at the price of storing six dense generators and projections
(decoder 135.5 M instead of 35.3 M parameters for R-50).
"""
import argparse
import copy
import os
import os.path as osp
import sys

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

import torch  # noqa: E402
from mmengine.config import Config  # noqa: E402
from mmengine.registry import init_default_scope  # noqa: E402

import lors_det  # noqa: E402,F401  (registers the models)
from lors_det.checkpoint import load_checkpoint_file  # noqa: E402
from lors_det.models.lors import (fold_lors_stacks, fold_lors_state_dict,  # noqa: E402
                                  plain_adamixer_model_cfg)
from mmdet.registry import MODELS  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config', help='the AdaMixer+LORS config the checkpoint was trained with')
    parser.add_argument('checkpoint', help='LORS checkpoint (e.g. work_dirs/.../epoch_12.pth)')
    parser.add_argument('out', help='output checkpoint with plain per-stage weights')
    parser.add_argument('--out-config', help='also write the matching plain AdaMixer config here')
    return parser.parse_args(argv)


def _read_state_dict(path: str) -> dict:
    checkpoint = load_checkpoint_file(path)
    return checkpoint.get('state_dict', checkpoint)


def is_stack_sharing(cfg: Config) -> bool:
    return cfg.model.get('type') == 'LORSSharing'


def plain_config(cfg: Config) -> Config:
    """The full config for the folded checkpoint: ``cfg`` with the stock detector
    (``LORSSharing``) or a plain AdaMixer decoder."""
    cfg_dict = cfg.to_dict()
    if is_stack_sharing(cfg):
        model = dict(cfg_dict['model'])
        model['type'] = model.pop('detector_type')
        model.pop('stacks')
        cfg_dict['model'] = model
        for key in [k for k in cfg_dict if k.endswith('lors_stacks')]:
            cfg_dict.pop(key)  # the configs' LORS delta variables
    else:
        cfg_dict['model'] = plain_adamixer_model_cfg(cfg_dict['model'])
        cfg_dict.pop('lors_roi_head', None)  # the LORS delta variable of configs/_base_
    return Config(cfg_dict)


def fold_checkpoint(config: str, checkpoint: str, out: str, out_config: str = None) -> dict:
    cfg = Config.fromfile(config)
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    model = MODELS.build(copy.deepcopy(cfg.model))  # no init_weights: nothing is downloaded
    missing, unexpected = model.load_state_dict(_read_state_dict(checkpoint), strict=False)
    if missing or unexpected:
        raise KeyError(f'{checkpoint} does not fit {config}: missing {missing[:8]}, '
                       f'unexpected {unexpected[:8]}')
    state = fold_lors_stacks(model) if is_stack_sharing(cfg) else fold_lors_state_dict(model)
    del model

    plain = plain_config(cfg)
    # the folded weights must load into the plain model exactly (strict)
    MODELS.build(copy.deepcopy(plain.model)).load_state_dict(state, strict=True)

    out_ckpt = dict(
        meta=dict(source=osp.abspath(checkpoint), lors_config=osp.abspath(config),
                  folded_lors=True),
        state_dict=state)
    os.makedirs(osp.dirname(osp.abspath(out)), exist_ok=True)
    torch.save(out_ckpt, out)
    if out_config:
        os.makedirs(osp.dirname(osp.abspath(out_config)), exist_ok=True)
        plain.dump(out_config)
    return out_ckpt


def main(argv=None) -> None:
    args = parse_args(argv)
    out = fold_checkpoint(args.config, args.checkpoint, args.out, args.out_config)
    print(f'saved folded checkpoint ({len(out["state_dict"])} tensors) to {args.out}')
    if args.out_config:
        print(f'plain AdaMixer config: {args.out_config}')


if __name__ == '__main__':
    main()
