#!/usr/bin/env python
# Copyright (c) lors_det authors.
"""Plot training curves and summarise iteration times from mmengine's JSON scalar logs.

    python tools/analysis_tools/analyze_logs.py plot_curve LOG.json [LOG2.json ...]
        [--keys loss loss_cls coco/bbox_mAP] [--legend NAME ...] [--title T] --out curve.png
        [--width 8] [--height 3] [--dpi 100]
    python tools/analysis_tools/analyze_logs.py cal_train_time LOG.json [...] [--include-outliers]

``LOG.json`` is ``<work_dir>/<timestamp>/vis_data/scalars.json`` (or ``<timestamp>.json``
beside it): one JSON object per line. mmengine writes a *train* record every logger interval
(``loss*``, ``lr``, ``time``, ``data_time``, ``epoch``, ``iter``, ``step`` = global iteration)
and a *val* record after every evaluation (``coco/bbox_mAP`` etc., ``time``, ``data_time``,
``step`` = epoch for epoch-based loops, iteration otherwise). Records without ``iter`` are the
val records.

``plot_curve`` draws one panel per key, stacked vertically (``--width`` x ``--height`` inches
per panel at ``--dpi``, so the PNG is ``width*dpi`` x ``n_keys*height*dpi`` pixels), one line per
log: a key found in the train records is plotted against the iteration (``step``), otherwise
against the val records' ``step`` (the epoch). A key in neither stops with the keys there are.

``cal_train_time`` reports, per log, the mean ``time`` (seconds per iteration, each record being
the logger's average over its window) of every epoch, the slowest and fastest epoch, their
standard deviation, the overall mean and the slowest / fastest record. The first record of each
epoch includes the start-up (data loader workers, first-iteration allocations) and is left out
unless ``--include-outliers``.
"""
import argparse
import json
import os
import os.path as osp
from collections import OrderedDict
from typing import Dict, List, Sequence, Tuple

import numpy as np


def load_scalars(path: str) -> Tuple[List[dict], List[dict]]:
    """``(train_records, val_records)`` of a scalars JSON-lines file, in file order."""
    if not osp.isfile(path):
        raise FileNotFoundError(f'log file not found: {path}')
    train, val = [], []
    with open(path) as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f'{path}, line {line_no}: not a JSON object ({e})') from None
            if not isinstance(record, dict):
                raise ValueError(f'{path}, line {line_no}: expected a JSON object, got '
                                 f'{type(record).__name__}')
            (train if 'iter' in record else val).append(record)
    return train, val


def _keys(records: Sequence[dict]) -> List[str]:
    return sorted({k for r in records for k in r})


def series(train: Sequence[dict], val: Sequence[dict], key: str,
           log: str = '<log>') -> Tuple[np.ndarray, np.ndarray, str]:
    """``(x, y, x_label)`` of ``key``: from the train records if any has it (x = ``step``, the
    global iteration), else from the val records (x = ``step``, the epoch for epoch-based
    training). Records without the key are skipped. KeyError names the key, the log and the keys
    it has."""
    for records, x_label in ((train, 'iter'), (val, 'epoch')):
        having = [r for r in records if key in r]
        if having:
            x = np.array([r['step'] if 'step' in r else r['iter'] for r in having])
            y = np.array([r[key] for r in having], dtype=float)
            return x, y, x_label
    raise KeyError(f'key {key!r} is not in {log}; train records have {_keys(train)}, '
                   f'val records have {_keys(val)}')


def plot_curve(logs: Sequence[str], keys: Sequence[str], out: str, legend=None, title=None,
               width: float = 8.0, height: float = 3.0, dpi: int = 100) -> Dict[tuple, tuple]:
    """Write the curves of ``keys`` in ``logs`` to the image ``out``; returns
    ``{(log, key): (x, y)}``."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    if legend is not None and len(legend) != len(logs):
        raise ValueError(f'--legend has {len(legend)} names for {len(logs)} logs')
    names = legend or [osp.basename(osp.dirname(osp.dirname(osp.abspath(p)))) or p
                       for p in logs]
    if len(set(names)) < len(names):  # e.g. scalars.json of different runs: use the paths
        names = list(logs)
    data = OrderedDict()
    loaded = [load_scalars(path) for path in logs]
    for path, (train, val) in zip(logs, loaded):
        for key in keys:
            x, y, x_label = series(train, val, key, path)
            data[path, key] = (x, y, x_label)

    fig, axes = plt.subplots(len(keys), 1, figsize=(width, height * len(keys)), dpi=dpi,
                             squeeze=False)
    for ax, key in zip(axes[:, 0], keys):
        for path, name in zip(logs, names):
            x, y, x_label = data[path, key]
            ax.plot(x, y, marker='o' if x_label == 'epoch' else None, markersize=3,
                    label=name if len(logs) > 1 else key)
        ax.set_xlabel(x_label)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(key)
        ax.grid(True, alpha=0.3)
        ax.legend(loc='best', fontsize='small')
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    os.makedirs(osp.dirname(osp.abspath(out)), exist_ok=True)
    fig.savefig(out, dpi=dpi)
    plt.close(fig)
    return {k: v[:2] for k, v in data.items()}


def cal_train_time(log: str, include_outliers: bool = False) -> dict:
    """Iteration-time summary of one log (see the module docstring); seconds per iteration."""
    train, _ = load_scalars(log)
    by_epoch = OrderedDict()
    for record in train:
        if 'time' in record:
            by_epoch.setdefault(record.get('epoch', 1), []).append(float(record['time']))
    if not include_outliers:
        by_epoch = OrderedDict((e, t[1:]) for e, t in by_epoch.items() if len(t) > 1)
    if not by_epoch:
        raise ValueError(f'{log}: no train records with `time`'
                         + ('' if include_outliers else ' beyond the first of each epoch '
                            '(try --include-outliers)'))
    means = OrderedDict((e, float(np.mean(t))) for e, t in by_epoch.items())
    all_times = np.concatenate([np.asarray(t) for t in by_epoch.values()])
    slowest = max(means, key=means.get)
    fastest = min(means, key=means.get)
    return dict(
        log=log,
        epoch_mean_time=dict(means),
        slowest_epoch=slowest, slowest_epoch_time=means[slowest],
        fastest_epoch=fastest, fastest_epoch_time=means[fastest],
        epoch_time_std=float(np.std(list(means.values()))),
        mean_iter_time=float(all_times.mean()),
        slowest_iter_time=float(all_times.max()),
        fastest_iter_time=float(all_times.min()),
        num_records=int(all_times.size),
    )


def format_train_time(summary: dict) -> str:
    return '\n'.join([
        f'-----Analyze train time of {summary["log"]}-----',
        f'slowest epoch {summary["slowest_epoch"]}, average time is '
        f'{summary["slowest_epoch_time"]:.4f} s/iter',
        f'fastest epoch {summary["fastest_epoch"]}, average time is '
        f'{summary["fastest_epoch_time"]:.4f} s/iter',
        f'time std over epochs is {summary["epoch_time_std"]:.4f}',
        f'average iter time: {summary["mean_iter_time"]:.4f} s/iter '
        f'(slowest record {summary["slowest_iter_time"]:.4f}, fastest '
        f'{summary["fastest_iter_time"]:.4f}; {summary["num_records"]} records)',
    ])


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Analyze mmengine JSON scalar logs')
    sub = parser.add_subparsers(dest='task', required=True)
    plot = sub.add_parser('plot_curve', help='plot loss / metric curves')
    plot.add_argument('json_logs', nargs='+', help='scalars.json files')
    plot.add_argument('--keys', nargs='+', default=['loss'], help='keys to plot')
    plot.add_argument('--legend', nargs='+', help='one name per log')
    plot.add_argument('--title', help='figure title')
    plot.add_argument('--out', required=True, help='output image (e.g. curve.png)')
    plot.add_argument('--width', type=float, default=8.0, help='figure width, inches')
    plot.add_argument('--height', type=float, default=3.0, help='height per key, inches')
    plot.add_argument('--dpi', type=int, default=100, help='pixels per inch')
    times = sub.add_parser('cal_train_time', help='summarise iteration times')
    times.add_argument('json_logs', nargs='+', help='scalars.json files')
    times.add_argument('--include-outliers', action='store_true',
                       help='keep the first record of every epoch')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.task == 'plot_curve':
        data = plot_curve(args.json_logs, args.keys, args.out, args.legend, args.title,
                          args.width, args.height, args.dpi)
        print(f'plotted {len(data)} curves ({", ".join(args.keys)}) to {args.out}')
        return data
    summaries = [cal_train_time(log, args.include_outliers) for log in args.json_logs]
    for summary in summaries:
        print(format_train_time(summary))
    return summaries


if __name__ == '__main__':
    main()
