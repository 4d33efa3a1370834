#!/usr/bin/env python
"""Params / FLOPs of every shipped COCO config family, as the README's markdown table.

    python benchmarks/complexity_table.py [--shape 800 1333] [--configs CFG ...] [--out F.md]
    python benchmarks/complexity_table.py --mmdet      # LORS on mmdet's decoders + stock rows

Each row is ``tools/analysis_tools/get_flops.py`` on one config (one image of the given size,
the config's number of queries). GMACs are what the AdaMixer and LORS papers call "GFLOPs".
``--mmdet``: the ``LORSSharing`` configs (Sparse R-CNN, Deformable DETR, DINO), each after the
stock mmdet config it inherits; their decoder is ``roi_head`` (Sparse R-CNN) or the DETR
``decoder`` (layers, shared / private), not counting the DETR ``bbox_head`` branches.
"""
import argparse
import glob
import os.path as osp
import sys

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, osp.join(REPO_ROOT, 'tools', 'analysis_tools'))

from analysis_utils import load_config  # noqa: E402
from get_flops import analyze  # noqa: E402

FAMILIES = ('adamixer', 'lors', 'adapters')
MMDET_FAMILIES = ('sparse_rcnn', 'deformable_detr', 'dino')


def mmdet_configs() -> list:
    """Each LORSSharing COCO config after the stock mmdet config it inherits."""
    import mmdet
    stock_root = osp.join(osp.dirname(mmdet.__file__), '.mim', 'configs')
    found = []
    for family in MMDET_FAMILIES:
        for path in sorted(glob.glob(osp.join(REPO_ROOT, 'configs', family, '*_coco.py'))):
            with open(path) as f:
                base = next(line.split("'")[1] for line in f if line.startswith('_base_'))
            found += [osp.join(stock_root, base.replace('mmdet::', '', 1)), path]
    return found


def default_configs() -> list:
    found = []
    for family in FAMILIES:
        found += sorted(glob.glob(osp.join(REPO_ROOT, 'configs', family, '*_coco.py')))
    return found


def row(path: str, shape) -> str:
    report = analyze(load_config(path), shape)
    params, macs = report['params'], report['macs']
    if '/.mim/configs/' in path:  # a config shipped inside the mmdet package
        name = 'mmdet::' + path.split('/.mim/configs/', 1)[1]
    else:
        name = osp.relpath(path, REPO_ROOT).replace('configs/', '', 1)
    return (f'| `{name}` | {report["num_queries"]} | {params["total"] / 1e6:.2f} | '
            f'{params["decoder"] / 1e6:.2f} ({params["decoder_shared"] / 1e6:.2f} / '
            f'{params["decoder_private"] / 1e6:.2f}) | {report["trainable_params"] / 1e6:.2f} | '
            f'{macs["backbone"] / 1e9:.1f} | {macs["decoder"] / 1e9:.2f} | '
            f'{macs["total"] / 1e9:.1f} |')


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--shape', type=int, nargs=2, default=(800, 1333), help='H W')
    parser.add_argument('--configs', nargs='+', help='default: every configs/{%s}/*_coco.py'
                        % ','.join(FAMILIES))
    parser.add_argument('--mmdet', action='store_true',
                        help='the LORSSharing configs of mmdet families with their stock configs')
    parser.add_argument('--out', help='also write the table to this file')
    args = parser.parse_args(argv)
    lines = [
        '| config | queries | params M | decoder M (shared / private) | trainable M | '
        'backbone GMACs | decoder GMACs | total GMACs |',
        '|---|---|---|---|---|---|---|---|',
    ]
    for path in args.configs or (mmdet_configs() if args.mmdet else default_configs()):
        lines.append(row(path, tuple(args.shape)))
        print(lines[-1], flush=True)
    table = '\n'.join(lines)
    if args.out:
        with open(args.out, 'w') as f:
            f.write(table + '\n')
    return table


if __name__ == '__main__':
    main()
