"""Training studies that span sessions (helpers of lors_miniature.py and lors_mmdet_demo.py).

A study is a list of runs, each a key (``variant/seed0``) and a training command. Finished runs
live in one JSON (``{**meta, 'runs': {key: result}}``), merged under a lock after each run, so a
study resumes where it stopped and two processes (one thread each on a 2-core machine) may share
the JSON without losing a run. A process claims a run before it starts it (``<json>.running/``,
its pid), so two processes never train the same run.
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
import time
from typing import Callable, Dict, Iterable, List, Tuple

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))


@contextlib.contextmanager
def locked(path: str):
    """Exclusive lock beside ``path``."""
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


def record_run(path: str, key: str, result: dict, meta: dict) -> None:
    """Merge one run into the JSON (re-read under the lock)."""
    with locked(path):
        runs = read_runs(path)
        runs[key] = result
        tmp = f'{path}.tmp{os.getpid()}'
        with open(tmp, 'w') as f:
            json.dump(dict(meta, runs=runs), f, indent=2)
        os.replace(tmp, path)  # a reader never sees a half-written file


def _claim_file(path: str, key: str) -> str:
    return osp.join(path + '.running', key.replace('/', '_'))


def _claim(path: str, key: str) -> bool:
    """Under the lock: claim ``key`` for this process unless it is recorded or a live process
    holds it (a claim of a process that died, e.g. at the end of a session, is taken over)."""
    claim = _claim_file(path, key)
    with locked(path):
        if key in read_runs(path):
            return False
        if osp.isfile(claim):
            with open(claim) as f:
                pid = int(f.read() or 0)
            if pid != os.getpid() and _alive(pid):
                return False
        os.makedirs(osp.dirname(claim), exist_ok=True)
        with open(claim, 'w') as f:
            f.write(str(os.getpid()))
    return True


def _alive(pid: int) -> bool:
    if pid <= 0:  # an empty claim file; os.kill(0, ...) would signal our own group
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def run_pending(path: str, jobs: Iterable[Tuple[str, Callable[[], dict]]], meta: dict) -> dict:
    """Run each ``(key, job)`` that is neither recorded in the JSON nor running in another
    process, recording each result as soon as it exists. Returns all runs."""
    for key, job in jobs:
        if not _claim(path, key):
            print(f'{key}: in {path} or running elsewhere, skipped')
            continue
        result = job()
        record_run(path, key, result, meta)
        os.remove(_claim_file(path, key))
        print(f'{key}: mAP {result["bbox_mAP"]}', flush=True)
    return read_runs(path)


def train(cmd: List[str], work_dir: str) -> dict:
    """Run a training command that logs every iteration into ``work_dir``; its wall time, load
    average, thread count and :func:`main_job.summarize` of the log."""
    from main_job import read_scalars, summarize
    start = time.time()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f'{" ".join(cmd)} failed:\n{proc.stderr[-3000:]}')
    import torch  # the thread count the command got: same environment, same default
    return dict(wall_seconds=round(time.time() - start, 1), load_average=os.getloadavg(),
                threads=torch.get_num_threads(), **summarize(read_scalars(work_dir)))


def smoke_options(work_dir: str) -> List[str]:
    """``--cfg-options`` for a digits config that train 2 iterations (16 train / 8 val images
    generated under ``work_dir``, batch 8, one epoch) and evaluate once: a test setting."""
    data_root = osp.join(work_dir, 'smoke_data') + '/'
    return ['train_dataloader.dataset.generator_cfg.num_train=16',
            'train_dataloader.dataset.generator_cfg.num_val=8',
            'val_dataloader.dataset.generator_cfg.num_train=16',
            'val_dataloader.dataset.generator_cfg.num_val=8', 'train_cfg.max_epochs=1',
            f'train_dataloader.dataset.data_root={data_root}',
            f'val_dataloader.dataset.data_root={data_root}',
            f'val_evaluator.ann_file={data_root}annotations/instances_val.json']


def decoder_params(config: str, options: List[str] = ()) -> Dict[str, int]:
    """Decoder parameter split (shared / private) of the config's model after ``options``
    (``--cfg-options`` strings, parsed as mmengine parses them)."""
    from mmengine.config import Config, DictAction
    from mmengine.registry import init_default_scope

    import lors_det  # noqa: F401
    from lors_det.utils import count_parameters
    from mmdet.registry import MODELS
    cfg = Config.fromfile(osp.join(REPO, config))
    for option in options:
        key, value = option.split('=', 1)
        cfg.merge_from_dict({key: DictAction._parse_iterable(value)})
    init_default_scope('mmdet')
    counts = count_parameters(MODELS.build(copy.deepcopy(cfg.model)))
    return {k: counts[k] for k in ('decoder', 'decoder_shared', 'decoder_private')}


def study_parser(description: str, name: str, seeds: List[int]) -> argparse.ArgumentParser:
    """The options every study has: seeds, its JSON, its Markdown table, work dirs, smoke."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument('--seeds', nargs='+', type=int, default=seeds)
    parser.add_argument('--out', default=osp.join(REPO, 'docs', 'results', f'{name}.json'))
    parser.add_argument('--table', default=None, help='also write the Markdown table here')
    parser.add_argument('--work-dir', default=osp.join(REPO, 'work_dirs', name))
    parser.add_argument('--smoke', action='store_true', help='2 iterations a run (a test)')
    return parser


def print_table(markdown: str, path: str = None) -> None:
    print(markdown)
    if path:
        with open(path, 'w') as f:
            f.write(markdown + '\n')


def params_cell(run: dict) -> str:
    return (f'{run["decoder"]:,} ({run["decoder_shared"]:,} / '
            f'{run["decoder_private"]:,})')


def result_cells(runs: List[dict]) -> str:
    """``seeds | mAP | mAP50 | mAP75 | s/iter`` cells of a table row (mean +- std over seeds)."""
    return ' | '.join([str(len(runs))] + [mean_std([r[k] for r in runs]) for k in
                                          ('bbox_mAP', 'bbox_mAP_50', 'bbox_mAP_75')]
                      + [seconds_per_iteration(runs)])


def mean_curves(groups: Dict[str, List[dict]]) -> Dict[str, List[float]]:
    """Mean val mAP per epoch over each group's runs (runs of equal length)."""
    return {name: [statistics.mean(epoch) for epoch in zip(*(r['ap_per_epoch'] for r in runs))]
            for name, runs in groups.items() if runs}


def plot_curves(groups: Dict[str, List[dict]], path: str) -> Dict[str, List[float]]:
    """PNG of each group's mean AP per epoch with its seeds' range shaded; returns the means."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    means = mean_curves(groups)
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, mean in means.items():
        epochs = range(1, len(mean) + 1)
        per_epoch = list(zip(*(r['ap_per_epoch'] for r in groups[name])))
        ax.plot(epochs, mean, marker='.', label=f'{name} ({len(groups[name])} seeds)')
        ax.fill_between(epochs, [min(e) for e in per_epoch], [max(e) for e in per_epoch],
                        alpha=0.2)
    ax.set_xlabel('epoch')
    ax.set_ylabel('val bbox mAP')
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return means


def mean_std(values: List[float]) -> str:
    if len(values) == 1:
        return f'{values[0]:.3f}'
    return f'{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}'


def seconds_per_iteration(runs: List[dict]) -> str:
    """Mean s/iteration for each thread count the runs used (runs without one: 2 threads)."""
    by_threads = {}
    for run in runs:
        by_threads.setdefault(run.get('threads', 2), []).append(run['sec_per_iter_mean'])
    return ', '.join(f'{statistics.mean(times):.3f} ({threads} thr)'
                     for threads, times in sorted(by_threads.items(), reverse=True))
