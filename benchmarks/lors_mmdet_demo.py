"""mmdet's stacked decoders with and without LORS, trained on the embedded data: demo AP.

For each family (Sparse R-CNN, Deformable DETR, DINO) it trains the stock demo config and its
LORS twin (``configs/demo/*_tiny_1xb8-demo_digits.py``, same data, schedule and seed) with the
README's demo command, ``bash tools/demo.sh CONFIG``, and records the decoder parameters
(shared / private), the final mAP / mAP50 / mAP75, the AP curve and s/iteration into ``--out``
(JSON). Like ``lors_miniature.py`` it resumes, skipping recorded runs, and two processes may
share the JSON. ``--table`` writes the Markdown table: AP with and without LORS and the
decoder parameter ratio per family.

    python benchmarks/lors_mmdet_demo.py                                # all six runs
    OMP_NUM_THREADS=1 python benchmarks/lors_mmdet_demo.py --families sparse-rcnn &
    OMP_NUM_THREADS=1 python benchmarks/lors_mmdet_demo.py --families deformable-detr &
    python benchmarks/lors_mmdet_demo.py --smoke --out /tmp/s.json     # 2 iterations a run
"""
import functools
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from _study import (  # noqa: E402
    decoder_params, params_cell, print_table, result_cells, run_pending, smoke_options,
    study_parser, train)
from bench_lors_mmdet import CONFIGS  # noqa: E402

FAMILIES = CONFIGS['demo']  # family: (stock demo config, LORS demo config)
VARIANTS = ('stock', 'lors')


def run_one(family: str, variant: str, seed: int, args) -> dict:
    config = FAMILIES[family][VARIANTS.index(variant)]
    options = [f'randomness.seed={seed}']
    if args.smoke:
        options += smoke_options(args.work_dir)
    work_dir = osp.join(args.work_dir, f'{family}-{variant}-seed{seed}')
    cmd = ['bash', 'tools/demo.sh', config, '--work-dir', work_dir, '--cfg-options',
           'default_hooks.logger.interval=1', *options]
    result = train(cmd, work_dir)
    return dict(family=family, variant=variant, seed=seed, config=config,
                command=' '.join(cmd), **decoder_params(config, options), **result)


def table(results: dict) -> str:
    rows = ['| family | decoder | decoder params (shared / private) | ratio | seeds | mAP | '
            'mAP50 | mAP75 | s/iter |', '|---|---|---|---|---|---|---|---|---|']
    for family, configs in FAMILIES.items():
        stock = [r for r in results.values() if r['family'] == family and r['variant'] == 'stock']
        for variant, config in zip(VARIANTS, configs):
            runs = [r for r in results.values()
                    if r['family'] == family and r['variant'] == variant]
            if not runs:
                continue
            ratio = f'{runs[0]["decoder"] / stock[0]["decoder"]:.2f}x' if stock else '-'
            rows.append(f'| {family} | {variant} (`{osp.basename(config)}`) | '
                        f'{params_cell(runs[0])} | {ratio} | {result_cells(runs)} |')
    return '\n'.join(rows)


def main(argv=None) -> None:
    parser = study_parser(__doc__.split('\n')[0], 'lors_mmdet_demo', seeds=[0])
    parser.add_argument('--families', nargs='+', default=list(FAMILIES), choices=FAMILIES)
    parser.add_argument('--variants', nargs='+', default=list(VARIANTS), choices=VARIANTS)
    args = parser.parse_args(argv)

    jobs = [(f'{family}/{variant}/seed{seed}',
             functools.partial(run_one, family, variant, seed, args))
            for family in args.families for variant in args.variants for seed in args.seeds]
    results = run_pending(args.out, jobs, {})
    print_table(table(results), args.table)


if __name__ == '__main__':
    main()
