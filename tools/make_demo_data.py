#!/usr/bin/env python
# Copyright (c) lors_det authors.
"""Generate the embedded digits detection dataset (COCO format) ahead of time.

Training on a ``DigitsDetDataset`` config generates it on first use anyway; this script is
for doing it explicitly or with other arguments:

    python tools/make_demo_data.py                       # defaults into data/digits_det/
    python tools/make_demo_data.py --config configs/demo/adamixer_tiny_1xb8-demo_digits.py
    python tools/make_demo_data.py --root /tmp/digits --num-train 100 --num-val 20
"""
import argparse
import json
import os.path as osp
import sys

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

from lors_det.datasets.digits import (DigitsDetSpec, ann_file_of,  # noqa: E402
                                      ensure_digits_dataset)


def spec_from_config(path: str):
    """(data_root, generator_cfg) of the train dataset of a DigitsDetDataset config."""
    from mmengine.config import Config
    cfg = Config.fromfile(path)
    dataset = cfg.train_dataloader.dataset
    while 'dataset' in dataset:
        dataset = dataset.dataset
    if dataset.get('type') != 'DigitsDetDataset':
        raise ValueError(f'{path}: train_dataloader.dataset.type is '
                         f'{dataset.get("type")!r}, not DigitsDetDataset')
    return dataset.get('data_root', 'data/digits_det/'), dict(dataset.get('generator_cfg') or {})


def main(argv=None) -> None:
    defaults = DigitsDetSpec()
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--config', help='take data_root and generator_cfg from this config')
    parser.add_argument('--root', default=None, help='output folder (data/digits_det/)')
    parser.add_argument('--num-train', type=int)
    parser.add_argument('--num-val', type=int)
    parser.add_argument('--img-size', type=int, nargs=2, metavar=('W', 'H'))
    parser.add_argument('--seed', type=int)
    args = parser.parse_args(argv)

    root, spec = 'data/digits_det/', {}
    if args.config:
        root, spec = spec_from_config(args.config)
    root = args.root or root
    for key in ('num_train', 'num_val', 'img_size', 'seed'):
        if getattr(args, key) is not None:
            spec[key] = getattr(args, key)
    ensure_digits_dataset(root, **spec)
    full = DigitsDetSpec(**spec)
    for split in ('train', 'val'):
        with open(osp.join(root, ann_file_of(split))) as f:
            data = json.load(f)
        print(f'{split}: {len(data["images"])} images, {len(data["annotations"])} digits '
              f'-> {osp.join(root, ann_file_of(split))}')
    if full != defaults:
        print(f'generator arguments: {full.to_dict()}')


if __name__ == '__main__':
    main()
