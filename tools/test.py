#!/usr/bin/env python
# Copyright (c) lors_det authors.
"""Evaluate a checkpoint; the command line of mmdet 3.3's ``tools/test.py``.

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out results.pkl]
        [--show] [--show-dir DIR] [--wait-time S] [--tta] [--cfg-options ...] [--launcher ...]

The test evaluator (CocoMetric in the lors_det configs) prints the COCO AP table at the end.
"""
import argparse
import copy
import os
import os.path as osp
import sys
import warnings

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

from mmengine.config import Config, ConfigDict, DictAction  # noqa: E402
from mmengine.registry import RUNNERS  # noqa: E402
from mmengine.runner import Runner  # noqa: E402

import lors_det  # noqa: E402,F401  (registers modules and the safe checkpoint loader)
from lors_det.checkpoint import trust_checkpoint  # noqa: E402
from lors_det.compat import adapt_distributed_to_device, close_distributed  # noqa: E402
from lors_det.datasets import check_config  # noqa: E402

CFG_OPTIONS_HELP = (
    'override settings of the config, as key=value pairs; a list is written '
    'key="[a,b]" or key=a,b and a nested list key="[(a,b),(c,d)]" (quotes needed, '
    'no spaces)')


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Test (and evaluate) a detector')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument(
        '--work-dir',
        help='where the evaluation log goes (default: the config\'s work_dir, else '
        './work_dirs/<config name>)')
    parser.add_argument(
        '--out', help='also dump the predictions to this pickle file (.pkl/.pickle)')
    parser.add_argument(
        '--show', action='store_true', help='show predictions in a window')
    parser.add_argument(
        '--show-dir',
        help='save images with predictions drawn into this folder (inside the '
        'visualizer\'s timestamped folder under the work dir)')
    parser.add_argument(
        '--wait-time', type=float, default=2, help='seconds each --show image stays')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction, help=CFG_OPTIONS_HELP)
    parser.add_argument(
        '--launcher',
        choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none',
        help='job launcher')
    parser.add_argument(
        '--tta', action='store_true', help='test-time augmentation (horizontal flip '
        'unless the config defines tta_model / tta_pipeline)')
    parser.add_argument(
        '--unsafe-load', action='store_true',
        help='unpickle the checkpoint without the weights-only restrictions (a legacy file you '
        'trust: a malicious one runs code when loaded)')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    if args.out is not None and not args.out.endswith(('.pkl', '.pickle')):
        parser.error('--out must end with .pkl or .pickle')
    return args


def enable_visualization(cfg: Config, args: argparse.Namespace) -> None:
    """Turn on drawing in the config's ``DetVisualizationHook`` for --show / --show-dir."""
    hook = cfg.get('default_hooks', {}).get('visualization')
    if hook is None:
        raise RuntimeError('--show / --show-dir need `default_hooks.visualization = '
                           'dict(type=\'DetVisualizationHook\')` in the config')
    hook['draw'] = True
    if args.show:
        hook['show'] = True
        hook['wait_time'] = args.wait_time
    if args.show_dir:
        hook['test_out_dir'] = args.show_dir


def _innermost_dataset(dataset_cfg):
    while 'dataset' in dataset_cfg:
        dataset_cfg = dataset_cfg['dataset']
    return dataset_cfg


def enable_tta(cfg: Config) -> None:
    """Wrap the model in its TTA model and the test pipeline in ``TestTimeAug``."""
    if 'tta_model' not in cfg:
        warnings.warn('no tta_model in the config: using DetTTAModel with NMS 0.5')
        cfg.tta_model = dict(
            type='DetTTAModel',
            tta_cfg=dict(nms=dict(type='nms', iou_threshold=0.5), max_per_img=100))
    test_dataset = _innermost_dataset(cfg.test_dataloader.dataset)
    if 'tta_pipeline' not in cfg:
        warnings.warn('no tta_pipeline in the config: flipping the test images')
        pipeline = copy.deepcopy(test_dataset.pipeline)
        pack = pipeline[-1]
        meta_keys = tuple(pack.get('meta_keys', ('img_id', 'img_path', 'ori_shape',
                                                 'img_shape', 'scale_factor')))
        pipeline[-1] = dict(
            type='TestTimeAug',
            transforms=[[dict(type='RandomFlip', prob=1.),
                         dict(type='RandomFlip', prob=0.)],
                        [dict(type='PackDetInputs',
                              meta_keys=meta_keys + ('flip', 'flip_direction'))]])
        cfg.tta_pipeline = pipeline
    cfg.model = ConfigDict(**cfg.tta_model, module=cfg.model)
    test_dataset.pipeline = cfg.tta_pipeline


def build_config(args: argparse.Namespace) -> Config:
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(args.config))[0])
    cfg.load_from = args.checkpoint
    if args.show or args.show_dir:
        enable_visualization(cfg, args)
    if args.tta:
        enable_tta(cfg)
    return cfg


def main(argv=None) -> None:
    args = parse_args(argv)
    cfg = build_config(args)
    if args.unsafe_load:
        trust_checkpoint(args.checkpoint)
    check_config(cfg, splits=('test',), load_from_key='CHECKPOINT (tools/test.py argument)')
    adapt_distributed_to_device(cfg, args.launcher)

    runner = RUNNERS.build(cfg) if 'runner_type' in cfg else Runner.from_cfg(cfg)
    if args.out is not None:
        from mmdet.evaluation import DumpDetResults
        runner.test_evaluator.metrics.append(DumpDetResults(out_file_path=args.out))
    runner.test()
    close_distributed()


if __name__ == '__main__':
    main()
