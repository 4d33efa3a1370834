#!/usr/bin/env python
"""Inference speed of several configs side by side in one run, as ratios to the first one.

    python benchmarks/speed_table.py [CFG ...] [--shape 800 1333] [--num-iters 3] [--warmup 1]
        [--threads 2] [--device cpu|cuda] [--out F.md]

Each config is timed by ``tools/analysis_tools/benchmark.py`` (same input, same settings) in
this one process, one config after another; the table gives ms / image and the ratio to the
first config. The default configs are the README's: AdaMixer R-50, its LORS, VeRA and CondLoRA
variants, and both at 300 queries.
"""
import argparse
import os.path as osp
import sys

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, osp.join(REPO_ROOT, 'tools', 'analysis_tools'))

import benchmark as speed  # noqa: E402
from analysis_utils import load_config  # noqa: E402

DEFAULT_CONFIGS = [
    'configs/adamixer/adamixer_r50_8xb2-1x_coco.py',
    'configs/lors/adamixer-lors_r50_8xb2-1x_coco.py',
    'configs/adapters/adamixer_r50-vera_8xb2-1x_coco.py',
    'configs/adapters/adamixer_r50-condlora_8xb2-1x_coco.py',
    'configs/adamixer/adamixer_r50_8xb2-300q-crop-ms-480-800-3x_coco.py',
    'configs/lors/adamixer-lors_r50_8xb2-300q-crop-ms-480-800-3x_coco.py',
]


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('configs', nargs='*', default=DEFAULT_CONFIGS)
    parser.add_argument('--shape', default='800 1333', help='H W, as one string')
    parser.add_argument('--num-iters', default='3')
    parser.add_argument('--warmup', default='1')
    parser.add_argument('--threads', default='2')
    parser.add_argument('--device', help='default: cuda when available')
    parser.add_argument('--out', help='also write the table to this file')
    args = parser.parse_args(argv)

    rows, first = [], None
    for path in args.configs:
        # the benchmark tool's own parser, so its checks and defaults apply unchanged
        bench_argv = [path, '--shape', *args.shape.split(), '--num-iters', args.num_iters,
                      '--warmup', args.warmup, '--threads', args.threads, '--log-interval', '0']
        if args.device:
            bench_argv += ['--device', args.device]
        bench_args = speed.parse_args(bench_argv)
        result = speed.benchmark(load_config(path), bench_args)
        first = first or result
        rows.append(f'| `{osp.basename(path)}` | {result["ms_per_img"]:.0f} | '
                    f'{result["ms_per_img"] / first["ms_per_img"]:.2f} |')
        print(rows[-1], flush=True)
    table = '\n'.join([
        f'| config | ms / image ({first["device"]}, {first["threads"]} threads, mean of '
        f'{first["num_iters"]}) | × {osp.basename(args.configs[0])} |',
        '|---|---|---|'] + rows)
    print(table)
    if args.out:
        with open(args.out, 'w') as f:
            f.write(table + '\n')
    return table


if __name__ == '__main__':
    main()
