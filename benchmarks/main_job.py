"""Measure the README's main job as a user runs it: ``bash tools/demo.sh [CONFIG]``.

Records, in a JSON file the README's numbers are copied from:

* the machine: CPU count, model name, load average before and after the run;
* wall time of the whole command (environment check, data generation if needed, training,
  per-epoch evaluation) and of the training iterations alone;
* seconds per iteration (mean and median of mmengine's logged ``time``, which includes data
  loading) and ``data_time``;
* the COCO AP after every epoch and the final bbox mAP / mAP50 / mAP75.

    python benchmarks/main_job.py                       # the default demo config
    python benchmarks/main_job.py --config configs/demo/adamixer-lors_tiny_1xb8-demo_digits.py
    python benchmarks/main_job.py --out docs/results/main_job.json

The logger interval of the config is set to 1 so that every iteration's time is recorded.
"""
import argparse
import glob
import json
import os
import os.path as osp
import platform
import statistics
import subprocess
import time

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
DEFAULT_CONFIG = 'configs/demo/adamixer_tiny_1xb8-demo_digits.py'


def machine() -> dict:
    model = ''
    try:
        with open('/proc/cpuinfo') as f:
            model = next((line.split(':', 1)[1].strip() for line in f
                          if line.startswith('model name')), '')
    except OSError:
        pass
    return dict(cpus=os.cpu_count(), cpu_model=model, platform=platform.platform())


def read_scalars(work_dir: str) -> list:
    paths = sorted(glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json')))
    if not paths:
        raise FileNotFoundError(f'no scalars.json under {work_dir}: the run did not log')
    with open(paths[-1]) as f:
        return [json.loads(line) for line in f if line.strip()]


def summarize(records: list) -> dict:
    train = [r for r in records if 'loss' in r and 'time' in r]
    evals = [r for r in records if 'coco/bbox_mAP' in r]
    times = [r['time'] for r in train]
    last = evals[-1] if evals else {}
    return dict(
        iterations=len(train),
        sec_per_iter_mean=statistics.mean(times) if times else None,
        sec_per_iter_median=statistics.median(times) if times else None,
        data_time_median=statistics.median(r['data_time'] for r in train) if train else None,
        train_seconds=sum(times),
        ap_per_epoch=[round(r['coco/bbox_mAP'], 4) for r in evals],
        bbox_mAP=last.get('coco/bbox_mAP'),
        bbox_mAP_50=last.get('coco/bbox_mAP_50'),
        bbox_mAP_75=last.get('coco/bbox_mAP_75'))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--config', default=DEFAULT_CONFIG)
    parser.add_argument('--work-dir', default=None)
    parser.add_argument('--out', default=osp.join(REPO, 'docs', 'results', 'main_job.json'))
    parser.add_argument('--cfg-options', nargs='*', default=[],
                        help='extra key=value overrides for tools/train.py (e.g. a shorter run)')
    args = parser.parse_args(argv)
    name = osp.splitext(osp.basename(args.config))[0]
    work_dir = args.work_dir or osp.join(REPO, 'work_dirs', f'main_job_{name}')
    cmd = ['bash', 'tools/demo.sh', args.config, '--work-dir', work_dir, '--cfg-options',
           'default_hooks.logger.interval=1', *args.cfg_options]
    load_before = os.getloadavg()
    start = time.time()
    proc = subprocess.run(cmd, cwd=REPO)
    wall = time.time() - start
    load_after = os.getloadavg()
    if proc.returncode != 0:
        raise SystemExit(f'{" ".join(cmd)} failed with exit code {proc.returncode}')
    result = dict(command=' '.join(cmd), config=args.config, wall_seconds=round(wall, 1),
                  load_average_before=load_before, load_average_after=load_after,
                  machine=machine(), finished=time.strftime('%Y-%m-%d %H:%M:%S'),
                  **summarize(read_scalars(work_dir)))
    os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
    with open(args.out, 'w') as f:
        json.dump(result, f, indent=2)
    print(json.dumps(result, indent=2))


if __name__ == '__main__':
    main()
