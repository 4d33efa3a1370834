#!/usr/bin/env python
"""Params / FLOPs of every shipped COCO config family, as the README's markdown table.

    python benchmarks/complexity_table.py [--shape 800 1333] [--configs CFG ...] [--out F.md]

Each row is ``tools/analysis_tools/get_flops.py`` on one config (one image of the given size,
the config's number of queries). GMACs are what the AdaMixer and LORS papers call "GFLOPs".
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


def default_configs() -> list:
    found = []
    for family in FAMILIES:
        found += sorted(glob.glob(osp.join(REPO_ROOT, 'configs', family, '*_coco.py')))
    return found


def row(path: str, shape) -> str:
    report = analyze(load_config(path), shape)
    params, macs = report['params'], report['macs']
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
    parser.add_argument('--out', help='also write the table to this file')
    args = parser.parse_args(argv)
    lines = [
        f'| config | queries | params M | decoder M (shared / private) | trainable M | '
        f'backbone GMACs | decoder GMACs | total GMACs |',
        '|---|---|---|---|---|---|---|---|',
    ]
    for path in args.configs or default_configs():
        lines.append(row(path, tuple(args.shape)))
        print(lines[-1], flush=True)
    table = '\n'.join(lines)
    if args.out:
        with open(args.out, 'w') as f:
            f.write(table + '\n')
    return table


if __name__ == '__main__':
    main()
