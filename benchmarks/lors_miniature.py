"""The LORS paper's claim in miniature: LORS against the unshared decoder on the embedded data.

Variants, all on the demo's data and schedule, the same seeds, and one sampling-offset init
rule (``--offset-init``, default 'uniform': the plain demo's P_in=16 would otherwise get the grid
init and the P_in=32 variants the uniform one):

* ``plain-g4p16``   the plain demo as shipped (G=4, P_in=16);
* ``plain-g2p32``   plain AdaMixer at the LORS dims (G=2, P_in=32, P_out=32): the unshared
                    baseline LORS is compared with;
* ``lors``          the LORS demo (both parts shared, released settings scaled);
* ``lors-a-only``   LORS^A only (``share_out_proj=False``);
* ``lors-t-only``   LORS^T only (``share_generator=False``).

For every variant and seed it runs ``tools/train.py`` and records the decoder parameters
(shared / private), the final mAP / mAP50 / mAP75, the AP curve and s/iteration into
``--out`` (JSON), written after every run; runs already in the JSON are skipped, so the study
resumes where it stopped and may span sessions. Two processes may share one JSON (e.g. one
thread each on a 2-core machine, on different variants or seeds): each run is merged into the
file under a lock, and a run another process finished meanwhile is skipped. ``--table`` writes
the Markdown table (mean +- std over seeds; s/iteration per thread count, since a run's speed
depends on it), ``--plot`` a PNG of each variant's mean AP per epoch.

    python benchmarks/lors_miniature.py --seeds 0 1 2   # the study (11 min a run on 2 cores)
    python benchmarks/lors_miniature.py --smoke --out /tmp/s.json   # 2 iterations a run
    OMP_NUM_THREADS=1 python benchmarks/lors_miniature.py --seeds 1 &  # two at once,
    OMP_NUM_THREADS=1 python benchmarks/lors_miniature.py --seeds 2 &  # one thread each
"""
import functools
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from _study import (  # noqa: E402
    decoder_params, params_cell, plot_curves, print_table, result_cells, run_pending,
    smoke_options, study_parser, train)

PLAIN = 'configs/demo/adamixer_tiny_1xb8-demo_digits.py'
LORS = 'configs/demo/adamixer-lors_tiny_1xb8-demo_digits.py'
VARIANTS = {
    'plain-g4p16': (PLAIN, []),
    'plain-g2p32': (LORS, ['model.roi_head.lors_cfg.share_generator=False',
                           'model.roi_head.lors_cfg.share_out_proj=False']),
    'lors': (LORS, []),
    'lors-a-only': (LORS, ['model.roi_head.lors_cfg.share_out_proj=False']),
    'lors-t-only': (LORS, ['model.roi_head.lors_cfg.share_generator=False']),
}


def run_one(name: str, seed: int, args) -> dict:
    config, options = VARIANTS[name]
    options = options + [f'randomness.seed={seed}',
                         f'model.roi_head.bbox_head.sampling_offset_init={args.offset_init}']
    if args.smoke:
        options += smoke_options(args.work_dir)
    work_dir = osp.join(args.work_dir, f'{name}-seed{seed}')
    cmd = [sys.executable, 'tools/train.py', config, '--work-dir', work_dir, '--cfg-options',
           'default_hooks.logger.interval=1', *options]
    result = train(cmd, work_dir)
    return dict(variant=name, seed=seed, config=config, options=options,
                **decoder_params(config, options), **result)


def table(results: dict) -> str:
    rows = ['| variant | decoder params (shared / private) | seeds | mAP | mAP50 | mAP75 | '
            's/iter |', '|---|---|---|---|---|---|---|']
    for name in VARIANTS:
        runs = [r for r in results.values() if r['variant'] == name]
        if not runs:
            continue
        rows.append(f'| {name} | {params_cell(runs[0])} | {result_cells(runs)} |')
    return '\n'.join(rows)


def main(argv=None) -> None:
    parser = study_parser(__doc__.split('\n')[0], 'lors_miniature', seeds=[0, 1, 2])
    parser.add_argument('--variants', nargs='+', default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument('--offset-init', default='uniform', choices=['uniform', 'auto'])
    parser.add_argument('--plot', default=None, help='PNG of mean AP per epoch per variant')
    args = parser.parse_args(argv)

    jobs = [(f'{name}/seed{seed}', functools.partial(run_one, name, seed, args))
            for name in args.variants for seed in args.seeds]
    results = run_pending(args.out, jobs, dict(offset_init=args.offset_init))
    print_table(table(results), args.table)
    if args.plot:
        plot_curves({name: [r for r in results.values() if r['variant'] == name]
                     for name in VARIANTS}, args.plot)


if __name__ == '__main__':
    main()
