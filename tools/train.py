#!/usr/bin/env python
# Copyright (c) lors_det authors.
"""Train a detector from a config; the command line of mmdet 3.3's ``tools/train.py``.

    python tools/train.py CONFIG [--work-dir DIR] [--amp] [--auto-scale-lr]
        [--resume [CHECKPOINT]] [--cfg-options KEY=VALUE ...] [--launcher ...]

Before the runner is built, the config is checked (dataset files present, ``num_classes``
matching the dataset) so a mistake fails at once with the config key to fix. Runs from any
directory without installing the package (the repo root is put on ``sys.path``); relative
paths in configs (``data/...``, ``work_dirs/...``) are relative to the working directory.
"""
import argparse
import os
import os.path as osp
import sys

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

import torch  # noqa: E402
from mmengine.config import Config, DictAction  # noqa: E402
from mmengine.registry import RUNNERS  # noqa: E402
from mmengine.runner import Runner  # noqa: E402

import lors_det  # noqa: E402,F401  (registers modules and the safe checkpoint loader)
from lors_det.checkpoint import trust_checkpoint  # noqa: E402
from lors_det.compat import adapt_distributed_to_device, close_distributed  # noqa: E402
from lors_det.datasets import check_config  # noqa: E402
from lors_det.engine.resume import intact_resume_checkpoint  # noqa: E402

CFG_OPTIONS_HELP = (
    'override settings of the config, as key=value pairs; a list is written '
    'key="[a,b]" or key=a,b and a nested list key="[(a,b),(c,d)]" (quotes needed, '
    'no spaces)')


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Train a detector')
    parser.add_argument('config', help='train config file path')
    parser.add_argument(
        '--work-dir',
        help='where logs and checkpoints go (default: the config\'s work_dir, else '
        './work_dirs/<config name>)')
    parser.add_argument(
        '--amp', action='store_true', help='automatic mixed precision training')
    parser.add_argument(
        '--auto-scale-lr',
        action='store_true',
        help='scale the lr by (total batch size / auto_scale_lr.base_batch_size)')
    parser.add_argument(
        '--resume',
        nargs='?',
        type=str,
        const='auto',
        help='resume from this checkpoint, or without a path from the latest '
        'checkpoint in the work dir')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction, help=CFG_OPTIONS_HELP)
    parser.add_argument(
        '--launcher',
        choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none',
        help='job launcher')
    parser.add_argument(
        '--unsafe-load', action='store_true',
        help='unpickle the checkpoint without the weights-only restrictions (a legacy file you '
        'trust: a malicious one runs code when loaded)')
    # torch.distributed.launch passes --local-rank (torch >= 2.0) or --local_rank
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def default_work_dir(config_path: str) -> str:
    return osp.join('./work_dirs', osp.splitext(osp.basename(config_path))[0])


def build_config(args: argparse.Namespace) -> Config:
    """The config of ``args.config`` with every command-line option applied."""
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)

    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = default_work_dir(args.config)

    if args.amp:
        wrapper_type = cfg.optim_wrapper.get('type', 'OptimWrapper')
        if wrapper_type not in ('OptimWrapper', 'AmpOptimWrapper', 'AutocastOptimWrapper'):
            raise ValueError(f'--amp needs optim_wrapper.type OptimWrapper, got '
                             f'{wrapper_type!r}')
        if torch.cuda.is_available():  # float16 with dynamic loss scaling
            cfg.optim_wrapper.type = 'AmpOptimWrapper'
            cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')
        else:  # mmengine's AmpOptimWrapper needs a GPU: bfloat16 autocast, no loss scaling
            cfg.optim_wrapper.type = 'AutocastOptimWrapper'
            cfg.optim_wrapper.setdefault('dtype', 'bfloat16')

    if args.auto_scale_lr:
        scale_cfg = cfg.get('auto_scale_lr') or {}
        if 'enable' not in scale_cfg or 'base_batch_size' not in scale_cfg:
            raise RuntimeError('--auto-scale-lr needs `auto_scale_lr = dict(enable=False, '
                               'base_batch_size=...)` in the config')
        cfg.auto_scale_lr.enable = True

    if args.resume == 'auto':
        # the newest checkpoint that reads (a truncated last one is skipped, with a warning)
        cfg.resume = True
        cfg.load_from = intact_resume_checkpoint(cfg.work_dir)
    elif args.resume is not None:
        cfg.resume = True
        cfg.load_from = args.resume
    return cfg


def main(argv=None) -> None:
    args = parse_args(argv)
    cfg = build_config(args)
    if args.unsafe_load:
        if not cfg.get('load_from'):
            raise SystemExit('--unsafe-load applies to the checkpoint named by --resume CKPT or '
                             'the config\'s load_from; neither is set')
        trust_checkpoint(cfg.load_from)
    has_val = all(cfg.get(k) for k in ('val_dataloader', 'val_cfg', 'val_evaluator'))
    explicit_resume = args.resume not in (None, 'auto')
    check_config(cfg, splits=('train', 'val') if has_val else ('train',),
                 load_from_key='--resume CHECKPOINT' if explicit_resume else 'load_from')
    adapt_distributed_to_device(cfg, args.launcher)

    runner = RUNNERS.build(cfg) if 'runner_type' in cfg else Runner.from_cfg(cfg)
    runner.train()
    close_distributed()


if __name__ == '__main__':
    main()
