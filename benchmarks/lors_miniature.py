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
depends on it).

    python benchmarks/lors_miniature.py --seeds 0 1 2          # the study (about 10 min a run)
    python benchmarks/lors_miniature.py --smoke --out /tmp/s.json   # 2 iterations a run
    OMP_NUM_THREADS=1 python benchmarks/lors_miniature.py --seeds 1 &  # two at once,
    OMP_NUM_THREADS=1 python benchmarks/lors_miniature.py --seeds 2 &  # one thread each
"""
import argparse
import contextlib
import copy
import fcntl
import json
import os
import os.path as osp
import statistics
import subprocess
import sys
import time

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)
sys.path.insert(0, osp.join(REPO, 'benchmarks'))

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
# 16 train / 8 val images: 2 iterations of batch 8 and one evaluation
SMOKE = ['train_dataloader.dataset.generator_cfg.num_train=16',
         'train_dataloader.dataset.generator_cfg.num_val=8',
         'val_dataloader.dataset.generator_cfg.num_train=16',
         'val_dataloader.dataset.generator_cfg.num_val=8', 'train_cfg.max_epochs=1']


def decoder_params(config: str, options: list) -> dict:
    """Decoder parameter split (shared / private) of the variant's model."""
    from mmengine.config import Config, DictAction
    from mmengine.registry import init_default_scope

    import lors_det  # noqa: F401
    from lors_det.utils import count_parameters
    from mmdet.registry import MODELS
    cfg = Config.fromfile(osp.join(REPO, config))
    for option in options:  # the --cfg-options the run got, parsed as mmengine parses them
        key, value = option.split('=', 1)
        cfg.merge_from_dict({key: DictAction._parse_iterable(value)})
    init_default_scope('mmdet')
    counts = count_parameters(MODELS.build(copy.deepcopy(cfg.model)))
    return {k: counts[k] for k in ('decoder', 'decoder_shared', 'decoder_private')}


def run_one(name: str, seed: int, args) -> dict:
    from main_job import read_scalars, summarize
    config, options = VARIANTS[name]
    options = options + [f'randomness.seed={seed}',
                         f'model.roi_head.bbox_head.sampling_offset_init={args.offset_init}']
    if args.smoke:
        data_root = osp.join(args.work_dir, 'smoke_data') + '/'
        options += SMOKE + [f'train_dataloader.dataset.data_root={data_root}',
                            f'val_dataloader.dataset.data_root={data_root}',
                            f'val_evaluator.ann_file={data_root}annotations/instances_val.json']
    work_dir = osp.join(args.work_dir, f'{name}-seed{seed}')
    cmd = [sys.executable, 'tools/train.py', config, '--work-dir', work_dir, '--cfg-options',
           'default_hooks.logger.interval=1', *options]
    start = time.time()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f'{name} seed {seed} failed:\n{proc.stderr[-3000:]}')
    summary = summarize(read_scalars(work_dir))
    import torch  # the thread count tools/train.py got: same environment, same default
    return dict(variant=name, seed=seed, config=config, options=options,
                wall_seconds=round(time.time() - start, 1), load_average=os.getloadavg(),
                threads=torch.get_num_threads(), **decoder_params(config, options), **summary)


@contextlib.contextmanager
def locked(path: str):
    """Exclusive lock beside ``path``: concurrent studies merge into one JSON, losing no run."""
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    with open(path + '.lock', 'w') as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def read_runs(path: str) -> dict:
    if not osp.isfile(path):
        return {}
    with open(path) as f:
        return json.load(f)['runs']


def record_run(path: str, key: str, result: dict, offset_init: str) -> dict:
    """Merge one run into the JSON (re-read under the lock) and return all runs."""
    with locked(path):
        runs = read_runs(path)
        runs[key] = result
        tmp = f'{path}.tmp{os.getpid()}'
        with open(tmp, 'w') as f:
            json.dump(dict(offset_init=offset_init, runs=runs), f, indent=2)
        os.replace(tmp, path)  # a reader never sees a half-written file
    return runs


def table(results: dict) -> str:
    rows = ['| variant | decoder params (shared / private) | seeds | mAP | mAP50 | mAP75 | '
            's/iter |', '|---|---|---|---|---|---|---|']

    def mean_std(values):
        if len(values) == 1:
            return f'{values[0]:.3f}'
        return f'{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}'

    for name in VARIANTS:
        runs = [r for r in results.values() if r['variant'] == name]
        if not runs:
            continue
        first = runs[0]
        rows.append(
            f'| {name} | {first["decoder"]:,} ({first["decoder_shared"]:,} / '
            f'{first["decoder_private"]:,}) | {len(runs)} | '
            f'{mean_std([r["bbox_mAP"] for r in runs])} | '
            f'{mean_std([r["bbox_mAP_50"] for r in runs])} | '
            f'{mean_std([r["bbox_mAP_75"] for r in runs])} | '
            f'{seconds_per_iteration(runs)} |')
    return '\n'.join(rows)


def seconds_per_iteration(runs: list) -> str:
    """Mean s/iteration for each thread count the runs used (older runs: 2 threads)."""
    by_threads = {}
    for run in runs:
        by_threads.setdefault(run.get('threads', 2), []).append(run['sec_per_iter_mean'])
    return ', '.join(f'{statistics.mean(times):.3f} ({threads} thr)'
                     for threads, times in sorted(by_threads.items(), reverse=True))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--variants', nargs='+', default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument('--seeds', nargs='+', type=int, default=[0, 1, 2])
    parser.add_argument('--offset-init', default='uniform', choices=['uniform', 'auto'])
    parser.add_argument('--out', default=osp.join(REPO, 'docs', 'results',
                                                  'lors_miniature.json'))
    parser.add_argument('--table', default=None, help='also write the Markdown table here')
    parser.add_argument('--work-dir', default=osp.join(REPO, 'work_dirs', 'lors_miniature'))
    parser.add_argument('--smoke', action='store_true', help='2 iterations a run (a test)')
    args = parser.parse_args(argv)

    for name in args.variants:
        for seed in args.seeds:
            key = f'{name}/seed{seed}'
            if key in read_runs(args.out):  # also runs another process finished meanwhile
                print(f'{key}: in {args.out}, skipped')
                continue
            result = run_one(name, seed, args)
            record_run(args.out, key, result, args.offset_init)
            print(f'{key}: mAP {result["bbox_mAP"]}', flush=True)
    results = read_runs(args.out)
    markdown = table(results)
    print(markdown)
    if args.table:
        with open(args.table, 'w') as f:
            f.write(markdown + '\n')


if __name__ == '__main__':
    main()
