#!/usr/bin/env python
"""Adapter checkpoints of VeRA / CondLoRA runs: extract, compose back, merge for inference.

    # adapter checkpoint of a full one (all but the frozen pretrained backbone weights)
    python tools/model_converters/adapter_ckpt.py extract FULL.pth OUT.pth --config CONFIG
    # only the adapter entries (VeRA b, d, seed [, A/B]; CondLoRA θ); no config needed
    python tools/model_converters/adapter_ckpt.py extract FULL.pth OUT.pth --contents adapter
    # pretrained base (the config's init_cfg) + adapter checkpoint -> full checkpoint (test.py)
    python tools/model_converters/adapter_ckpt.py compose CONFIG ADAPTER.pth FULL.pth
    # fold every adapter into W0: loads into the same detector config *without* the adapter
    python tools/model_converters/adapter_ckpt.py merge CONFIG FULL.pth MERGED.pth

Training runs with ``custom_hooks=[dict(type='AdapterCheckpointHook')]`` (the configs under
configs/adapters/) already write ``epoch_N_adapter.pth`` beside every ``epoch_N.pth``.
"""
import argparse
import os.path as osp
import sys

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

from lors_det.apis import (compose_checkpoint, extract_adapter_checkpoint,  # noqa: E402
                           merge_checkpoint)
from lors_det.models.adapters.checkpoint import CONTENTS  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    sub = parser.add_subparsers(dest='command', required=True)
    extract = sub.add_parser('extract', help='adapter checkpoint of a full checkpoint')
    extract.add_argument('checkpoint', help='full checkpoint (e.g. work_dirs/.../epoch_12.pth)')
    extract.add_argument('out', help='output adapter checkpoint')
    extract.add_argument('--config', help='the training config (needed for --contents '
                         'trainable, the default when given)')
    extract.add_argument('--contents', choices=CONTENTS,
                         help="'trainable' (with --config) or 'adapter' (default without)")
    compose = sub.add_parser('compose', help='full checkpoint from pretrained base + adapter')
    compose.add_argument('config')
    compose.add_argument('adapter_checkpoint')
    compose.add_argument('out')
    merge = sub.add_parser('merge', help='fold the adapters of a full checkpoint into W0')
    merge.add_argument('config')
    merge.add_argument('checkpoint')
    merge.add_argument('out')
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.command == 'extract':
        out = extract_adapter_checkpoint(args.checkpoint, args.out, config=args.config,
                                         contents=args.contents)
        what = out['meta']['adapter_checkpoint']
    elif args.command == 'compose':
        out = compose_checkpoint(args.config, args.adapter_checkpoint, args.out)
        what = 'full'
    else:
        out = merge_checkpoint(args.config, args.checkpoint, args.out)
        what = 'merged'
    print(f'saved {what} checkpoint ({len(out["state_dict"])} tensors) to {args.out}')


if __name__ == '__main__':
    main()
