#!/usr/bin/env python
# Copyright (c) lors_det authors.
"""Inference speed of a detector config; mmdet's ``benchmark.py`` (inference task) for lors_det.

    python tools/analysis_tools/benchmark.py CONFIG [CHECKPOINT] [--shape H W] [--batch-size N]
        [--num-iters 20] [--warmup 5] [--threads T] [--device cpu|cuda] [--dataset]
        [--log-interval 10] [--out-json FILE] [--cfg-options ...]

Each timed iteration is one ``model.test_step(batch)`` (data preprocessor + ``predict``) under
``torch.no_grad()``; data loading is not timed. Input: ``--batch-size`` synthetic images of
``--shape`` (default 800 x 1333), the same batch every iteration, or with ``--dataset`` the
batches of the config's ``test_dataloader`` (its batch size unless ``--batch-size`` is given;
cycled when shorter than warm-up + iterations). The first ``--warmup`` iterations are not
timed. On CUDA, ``torch.cuda.synchronize()`` brackets every timed iteration.

Printed: ms per iteration, ms per image, images per second (= fps). Without a checkpoint the
weights are the freshly built (untrained) ones: fine for speed, except that detectors whose
run time depends on the predictions (e.g. NMS) then time differently. ``--threads`` sets
``torch.set_num_threads`` (CPU).
"""
import argparse
import itertools
import os.path as osp
import statistics
import sys
import time

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from analysis_utils import (CFG_OPTIONS_HELP, build_detector, load_config,  # noqa: E402
                            parse_shape, synthetic_batch, write_json)

import torch  # noqa: E402
from mmengine.config import DictAction  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Benchmark the inference speed of a detector')
    parser.add_argument('config', help='config file path')
    parser.add_argument('checkpoint', nargs='?', help='checkpoint file (optional)')
    parser.add_argument(
        '--shape', type=int, nargs='+', default=[800, 1333],
        help='synthetic image size H W (or one S for S x S); default 800 1333')
    parser.add_argument(
        '--batch-size', type=int,
        help='images per iteration (default 1; with --dataset the dataloader\'s)')
    parser.add_argument('--num-iters', type=int, default=20, help='timed iterations')
    parser.add_argument('--warmup', type=int, default=5, help='untimed iterations first')
    parser.add_argument('--threads', type=int, help='torch.set_num_threads (CPU)')
    parser.add_argument(
        '--device', default='cuda' if torch.cuda.is_available() else 'cpu',
        help='cpu, cuda or cuda:N (default: cuda when available)')
    parser.add_argument(
        '--dataset', action='store_true',
        help='time the batches of the config\'s test_dataloader instead of synthetic images')
    parser.add_argument('--log-interval', type=int, default=10,
                        help='print the running speed every N timed iterations (0: never)')
    parser.add_argument('--out-json', help='also write the numbers to this JSON file')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, help=CFG_OPTIONS_HELP)
    args = parser.parse_args(argv)
    try:
        args.shape = parse_shape(args.shape)
    except ValueError as e:
        parser.error(str(e))
    for name in ('num_iters', 'batch_size', 'threads'):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f'--{name.replace("_", "-")} must be >= 1, got {value}')
    if args.warmup < 0:
        parser.error(f'--warmup must be >= 0, got {args.warmup}')
    if args.device.startswith('cuda') and not torch.cuda.is_available():
        parser.error(f'--device {args.device}: CUDA is not available on this machine')
    return args


def _batches(cfg, args):
    """An endless iterator of (raw) batches, a description of the input and the batch size."""
    if not args.dataset:
        batch_size = args.batch_size or 1
        h, w = args.shape
        return itertools.repeat(synthetic_batch(args.shape, batch_size)), \
            f'synthetic {h} x {w}', batch_size
    from mmengine.runner import Runner
    if cfg.get('test_dataloader') is None:
        raise KeyError(f'--dataset needs `test_dataloader` in {cfg.filename}')
    loader_cfg = cfg.test_dataloader.copy()
    if args.batch_size is not None:
        loader_cfg.batch_size = args.batch_size
    loader = Runner.build_dataloader(loader_cfg)
    if len(loader) == 0:
        raise ValueError(f'{cfg.filename}: test_dataloader has no batches')
    return itertools.chain.from_iterable(itertools.repeat(loader)), 'test_dataloader', \
        loader_cfg.batch_size


def benchmark(cfg, args) -> dict:
    """Run the benchmark of :func:`main`; returns what ``--out-json`` writes."""
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    model = build_detector(cfg, args.checkpoint, args.device)
    batches, source, batch_size = _batches(cfg, args)
    cuda = torch.device(args.device).type == 'cuda'

    def sync():
        if cuda:
            torch.cuda.synchronize(args.device)

    iter_times, num_images = [], 0
    with torch.no_grad():
        for i, batch in enumerate(itertools.islice(batches, args.warmup + args.num_iters)):
            sync()
            start = time.perf_counter()
            model.test_step(batch)
            sync()
            elapsed = time.perf_counter() - start
            if i < args.warmup:
                continue
            iter_times.append(elapsed)
            num_images += len(batch['data_samples'])
            done = len(iter_times)
            if args.log_interval and done % args.log_interval == 0 and done < args.num_iters:
                print(f'iteration [{done}/{args.num_iters}]: '
                      f'{num_images / sum(iter_times):.3f} img / s', flush=True)
    total = sum(iter_times)
    return dict(
        config=cfg.filename,
        checkpoint=args.checkpoint,
        input=source,
        shape=None if args.dataset else list(args.shape),
        batch_size=batch_size,
        device=args.device,
        threads=torch.get_num_threads(),
        warmup=args.warmup,
        num_iters=len(iter_times),
        num_images=num_images,
        total_s=total,
        ms_per_iter=1000.0 * total / len(iter_times),
        median_ms_per_iter=1000.0 * statistics.median(iter_times),
        ms_per_img=1000.0 * total / num_images,
        img_per_s=num_images / total,
        fps=num_images / total,
    )


def format_report(result: dict) -> str:
    return '\n'.join([
        f'config: {result["config"]}',
        f'input: {result["input"]}, batch size {result["batch_size"]}, device '
        f'{result["device"]}, {result["threads"]} threads, {result["warmup"]} warm-up + '
        f'{result["num_iters"]} timed iterations ({result["num_images"]} images)',
        f'ms / iter: {result["ms_per_iter"]:.1f} (median {result["median_ms_per_iter"]:.1f})',
        f'Overall fps: {result["fps"]:.3f} img / s, times per image: '
        f'{result["ms_per_img"]:.1f} ms / img',
    ])


def main(argv=None) -> dict:
    args = parse_args(argv)
    cfg = load_config(args.config, args.cfg_options)
    result = benchmark(cfg, args)
    print(format_report(result))
    if args.out_json:
        write_json(args.out_json, result)
    return result


if __name__ == '__main__':
    main()
