#!/usr/bin/env python
# Copyright (c) lors_det authors.
"""Parameters and FLOPs of a detector config, by part; mmdet's ``get_flops.py`` for lors_det.

    python tools/analysis_tools/get_flops.py CONFIG [--shape H W] [--batch-size N]
        [--checkpoint CKPT] [--out-json FILE] [--cfg-options ...]

The model is built from the config (``custom_imports`` registers lors_det) and run once in
``predict`` mode on ``--batch-size`` synthetic images of ``--shape`` (default 800 x 1333, the
1x configs' test scale), preprocessed by the model's ``data_preprocessor`` (normalised, padded).
Counting is :mod:`lors_det.utils.complexity`'s, at the ATen level
(``torch.utils.flop_counter``): every matrix product, convolution and attention is counted,
**including the products with AdaMixer's per-query generated mixing matrices M and S and the
LORS residuals**, which module-hook counters (mmcv / fvcore ``get_flops``) miss (the official
AdaMixer needed a patched mmcv for them). Element-wise ops, norms, softmax and ``grid_sample``
are not counted.

**FLOPs = 2 x MACs.** The AdaMixer and LORS papers' "GFLOPs" are GMACs (mmcv / fvcore
convention), so compare those with the GMACs column. FLOPs are of the whole batch.

Printed: parameters of backbone / neck / query generator (``rpn_head``) / decoder
(``roi_head``, split into weights shared by several stages and private ones) / total; FLOPs and
MACs of the same parts, and of the decoder by role (self-attention, sampling offsets, mixing
parameter generator, the adaptive mixing products, mixing output projection, FFN, cls/reg
heads) and by stage. DETR-style detectors (Deformable DETR, DINO, with or without LORS):
backbone / neck / encoder / decoder (``decoder``, shared / private) / head (``bbox_head``) /
other, the decoder by self-attention / cross-attention / FFN / other and by layer.
``--out-json`` writes the same numbers (exact integers).

Weights do not change the counts; ``--checkpoint`` only checks that a checkpoint fits the config
(loaded strictly). The backbone's pretrained weights are never downloaded.
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from analysis_utils import (CFG_OPTIONS_HELP, build_detector, dummy_batch,  # noqa: E402
                            load_config, parse_shape, write_json)

from mmengine.config import DictAction  # noqa: E402

from lors_det.utils.complexity import count_flops_detailed, count_parameters  # noqa: E402

PART_LABELS = (('backbone', 'backbone'), ('neck', 'neck'),
               ('query_generator', 'query generator (rpn_head)'),
               ('decoder', 'decoder (roi_head)'))
DETR_PART_LABELS = (('backbone', 'backbone'), ('neck', 'neck'), ('encoder', 'encoder'),
                    ('decoder', 'decoder'), ('head', 'head (bbox_head)'),
                    ('other', 'other (queries, embeddings)'))
ROLE_LABELS = (('attention', 'self-attention'), ('sampling_offsets', 'sampling offsets'),
               ('mixing_generator', 'mixing: parameter generator'),
               ('mixing_products', 'mixing: x M, S x (+ LORS residuals)'),
               ('mixing_out_proj', 'mixing: output projection'), ('ffn', 'FFN'),
               ('heads', 'cls / reg heads'), ('other', 'other'))
DETR_ROLE_LABELS = (('self_attention', 'self-attention'),
                    ('cross_attention', 'deformable cross-attention'), ('ffn', 'FFN'),
                    ('other', 'other'))


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Parameters and FLOPs of a detector')
    parser.add_argument('config', help='config file path')
    parser.add_argument(
        '--shape', type=int, nargs='+', default=[800, 1333],
        help='input image size H W (or one S for S x S), before padding; default 800 1333')
    parser.add_argument('--batch-size', type=int, default=1, help='images per forward')
    parser.add_argument('--checkpoint', help='optional checkpoint to load (strict)')
    parser.add_argument('--out-json', help='also write the numbers to this JSON file')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, help=CFG_OPTIONS_HELP)
    args = parser.parse_args(argv)
    try:
        args.shape = parse_shape(args.shape)
    except ValueError as e:
        parser.error(str(e))
    if args.batch_size < 1:
        parser.error(f'--batch-size must be >= 1, got {args.batch_size}')
    return args


def analyze(cfg, shape, batch_size: int = 1, checkpoint=None) -> dict:
    """The report of :func:`main` as a dict (what ``--out-json`` writes)."""
    import torch

    # the stock init (without pretrained weights) unless a checkpoint is given: with random
    # weights Sparse R-CNN's refined boxes can get a negative size, which RoIAlign refuses
    model = build_detector(cfg, checkpoint, init=checkpoint is None)
    params = count_parameters(model)
    # gradients flow to these: frozen backbone stages and adapters' frozen bases left out
    trainable_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    data = dummy_batch(model, shape, batch_size)
    torch.manual_seed(0)
    flops = count_flops_detailed(model, data['inputs'], data['data_samples'])
    parts = flops['parts']
    rpn_head = getattr(model, 'rpn_head', None)
    if rpn_head is None:  # DETR-style
        num_queries = getattr(model, 'num_queries', None)
    else:  # AdaMixer's query generator, Sparse R-CNN's EmbeddingRPNHead
        num_queries = getattr(rpn_head, 'num_query', getattr(rpn_head, 'num_proposals', None))
    return dict(
        config=cfg.filename,
        checkpoint=checkpoint,
        input_shape=[batch_size, 3, *shape],
        padded_shape=list(data['inputs'].shape[-2:]),
        num_queries=num_queries,
        params=params,
        trainable_params=trainable_params,
        flops=parts,
        macs={key: value // 2 for key, value in parts.items()},
        flops_per_image=parts['total'] / batch_size,
        decoder_flops_by_role=flops['decoder_roles'],
        decoder_flops_by_stage=flops['decoder_stages'],
        convention='FLOPs = 2 x MACs; the papers\' "GFLOPs" are GMACs',
    )


def _table(rows, header) -> str:
    widths = [max(len(str(row[i])) for row in [header] + rows) for i in range(len(header))]
    lines = []
    for n, row in enumerate([header] + rows):
        cells = [str(c).ljust(w) if i == 0 else str(c).rjust(w)
                 for i, (c, w) in enumerate(zip(row, widths))]
        lines.append('  '.join(cells))
        if n == 0:
            lines.append('  '.join('-' * w for w in widths))
    return '\n'.join(lines)


def format_report(report: dict) -> str:
    params, flops = report['params'], report['flops']
    b, _, h, w = report['input_shape']
    ph, pw = report['padded_shape']
    out = [f'config: {report["config"]}',
           f'input: {b} x 3 x {h} x {w} (padded to {ph} x {pw}), '
           f'{report["num_queries"]} queries', '']

    detr = 'encoder' in params
    part_labels = DETR_PART_LABELS if detr else PART_LABELS
    rows = [[label, f'{params[key]:,}', f'{params[key] / 1e6:.2f}'] for key, label in part_labels]
    decoder_row = [key for key, _ in part_labels].index('decoder') + 1
    rows.insert(decoder_row, ['  shared by stages', f'{params["decoder_shared"]:,}',
                              f'{params["decoder_shared"] / 1e6:.2f}'])
    rows.insert(decoder_row + 1, ['  private to a stage', f'{params["decoder_private"]:,}',
                                  f'{params["decoder_private"] / 1e6:.2f}'])
    rows.append(['total', f'{params["total"]:,}', f'{params["total"] / 1e6:.2f}'])
    out += [_table(rows, ['parameters', 'count', 'M']), '']

    def flop_row(label, value):
        share = 100.0 * value / flops['total'] if flops['total'] else 0.0
        return [label, f'{value / 1e9:.2f}', f'{value / 2e9:.2f}', f'{share:.1f}%']

    rows = [flop_row(label, flops[key]) for key, label in part_labels]
    rows.append(flop_row('total', flops['total']))
    out += [_table(rows, ['FLOPs (batch)', 'GFLOPs', 'GMACs', 'of total']), '']

    rows = [flop_row(label, report['decoder_flops_by_role'][key])
            for key, label in (DETR_ROLE_LABELS if detr else ROLE_LABELS)]
    rows += [flop_row(f'stage {i}', v) for i, v in enumerate(report['decoder_flops_by_stage'])]
    out += [_table(rows, ['decoder FLOPs', 'GFLOPs', 'GMACs', 'of total']), '']
    out.append('FLOPs = 2 x MACs; the AdaMixer / LORS papers\' "GFLOPs" are GMACs. Counted: '
               'every matrix product (incl. the per-query generated mixing matrices and LORS '
               'residuals), convolution and attention; not counted: element-wise ops, norms, '
               'softmax, grid_sample.')
    return '\n'.join(out)


def main(argv=None) -> dict:
    args = parse_args(argv)
    cfg = load_config(args.config, args.cfg_options)
    report = analyze(cfg, args.shape, args.batch_size, args.checkpoint)
    print(format_report(report))
    if args.out_json:
        write_json(args.out_json, report)
    return report


if __name__ == '__main__':
    main()
