"""mmdet's stacked decoders with and without LORS, side by side: train step, peak memory,
inference latency (and parameters), as ratios to the stock model of each family.

Families: Sparse R-CNN, Deformable DETR, DINO. ``--scale demo`` (default) takes the demo
configs (tiny ResNet-18, 128-256 wide decoders, 10 classes) on ``--size`` px images;
``--scale coco`` the R-50 COCO configs (``configs/{sparse_rcnn,deformable_detr,dino}/*-lors_*``
against the stock mmdet configs they inherit). Each variant runs in its own fresh process
(``spawn``), one after the other, on the same synthetic batch (same seeds): build + init, AdamW
train steps (median of ``--steps`` after ``--warmup``; peak memory over them), then eval-mode
inference (median of ``--infer-steps``). The LORS models get non-zero private terms first (as
after training).

    python benchmarks/bench_lors_mmdet.py                       # demo scale, CPU, ~2 minutes
    python benchmarks/bench_lors_mmdet.py --scale coco --size 512 --steps 2
    python benchmarks/bench_lors_mmdet.py --device cuda --scale coco --size 800 --steps 10
"""
import argparse
import copy
import multiprocessing as mp
import os
import sys

from _measure import PeakMemory, median_ms

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# family: (stock config, LORS config) per scale; 'mmdet::' = mmdet's own config
CONFIGS = {
    'demo': {
        'sparse-rcnn': ('configs/demo/sparse-rcnn_tiny_1xb8-demo_digits.py',
                        'configs/demo/sparse-rcnn-lors_tiny_1xb8-demo_digits.py'),
        'deformable-detr': ('configs/demo/deformable-detr_tiny_1xb8-demo_digits.py',
                            'configs/demo/deformable-detr-lors_tiny_1xb8-demo_digits.py'),
        'dino': ('configs/demo/dino-4scale_tiny_1xb8-demo_digits.py',
                 'configs/demo/dino-4scale-lors_tiny_1xb8-demo_digits.py'),
    },
    'coco': {
        'sparse-rcnn': ('mmdet::sparse_rcnn/sparse-rcnn_r50_fpn_1x_coco.py',
                        'configs/sparse_rcnn/sparse-rcnn-lors_r50_fpn_1x_coco.py'),
        'deformable-detr': ('mmdet::deformable_detr/deformable-detr_r50_16xb2-50e_coco.py',
                            'configs/deformable_detr/deformable-detr-lors_r50_16xb2-50e_coco.py'),
        'dino': ('mmdet::dino/dino-4scale_r50_8xb2-12e_coco.py',
                 'configs/dino/dino-4scale-lors_r50_8xb2-12e_coco.py'),
    },
}


def config_path(path: str) -> str:
    if path.startswith('mmdet::'):
        import mmdet
        return os.path.join(os.path.dirname(mmdet.__file__), '.mim', 'configs',
                            path[len('mmdet::'):])
    return os.path.join(REPO, path)


def measure(config: str, args: dict) -> dict:
    import torch
    from mmengine.config import Config
    from mmengine.logging import MMLogger
    from mmengine.registry import init_default_scope

    if REPO not in sys.path:
        sys.path.insert(0, REPO)
    import lors_det  # noqa: F401
    from lors_det.models.lors import count_stack_parameters
    from lors_det.models.lors.stack_sharing import LORS_LAYERS
    from mmdet.registry import MODELS
    sys.path.insert(0, os.path.join(REPO, 'tools', 'analysis_tools'))
    from analysis_utils import synthetic_batch

    MMLogger.get_current_instance().setLevel('ERROR')
    init_default_scope('mmdet')
    torch.set_num_threads(args['threads'])
    device = torch.device(args['device'])
    cfg = Config.fromfile(config_path(config))
    cfg.model.backbone.init_cfg = None  # no download; timings do not depend on the weights
    torch.manual_seed(0)
    model = MODELS.build(copy.deepcopy(cfg.model))
    model.init_weights()
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():  # non-zero private terms, as after training
        for module in model.modules():
            if isinstance(module, LORS_LAYERS):
                for p in module.parameters():
                    p.add_(0.02 * torch.randn(p.shape, generator=gen))
    model.to(device)
    num_classes = 10 if args['scale'] == 'demo' else 80
    batch = synthetic_batch((args['size'], args['size']), args['batch'], seed=2, num_gts=5,
                            num_classes=num_classes)
    data = model.data_preprocessor(batch, True)
    inputs, samples = data['inputs'].to(device), data['data_samples']
    for sample in samples:
        sample.gt_instances = sample.gt_instances.to(device)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)

    def sync():
        if device.type == 'cuda':
            torch.cuda.synchronize()

    def train_step():
        model.train()
        optimizer.zero_grad(set_to_none=True)
        losses = model.loss(inputs, samples)
        sum(v for k, v in losses.items() if 'loss' in k).backward()
        optimizer.step()

    with PeakMemory(device) as peak:
        for _ in range(args['warmup']):
            train_step()
        step_ms = median_ms(train_step, args['steps'], sync)
    model.eval()
    with torch.no_grad():
        model.predict(inputs, copy.deepcopy(samples))  # warm-up, LORS^T merge
        infer_ms = median_ms(lambda: model.predict(inputs, copy.deepcopy(samples)),
                             args['infer_steps'], sync)
    stacks = count_stack_parameters(model)
    return dict(config=config, params=sum(p.numel() for p in model.parameters()),
                stacks=stacks, step_ms=step_ms, peak_mib=peak.bytes / 2**20, infer_ms=infer_ms)


def main(argv=None) -> list:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--scale', default='demo', choices=list(CONFIGS))
    parser.add_argument('--families', nargs='+', default=list(CONFIGS['demo']),
                        choices=list(CONFIGS['demo']))
    parser.add_argument('--device', default='cpu', choices=['cpu', 'cuda'])
    parser.add_argument('--size', type=int, default=128, help='(square) image size')
    parser.add_argument('--batch', type=int, default=4)
    parser.add_argument('--steps', type=int, default=5, help='timed train steps')
    parser.add_argument('--warmup', type=int, default=1, help='untimed train steps first')
    parser.add_argument('--infer-steps', type=int, default=5)
    parser.add_argument('--threads', type=int, default=2)
    args = vars(parser.parse_args(argv))

    ctx = mp.get_context('spawn')
    rows = []
    for family in args['families']:
        results = []
        for config in CONFIGS[args['scale']][family]:
            with ctx.Pool(1) as pool:  # a fresh process: no allocator or cache carry-over
                results.append(pool.apply(measure, (config, args)))
        rows.append((family, results))

    print(f"{args['scale']} configs, {args['batch']} images of {args['size']} px, "
          f"{args['device']}, {args['threads']} threads; median of {args['steps']} train steps "
          f"and {args['infer_steps']} inferences; ratios LORS / stock\n")
    print('| family | decoder stack params (shared / private / other) | total params | '
          'train step ms | peak train mem MiB | inference ms |')
    print('|---|---|---|---|---|---|')
    for family, (stock, lors) in rows:
        for name, r in (('stock', stock), ('LORS', lors)):
            stacks = '; '.join(f"{k}: {v['shared']:,} / {v['private']:,} / {v['other']:,}"
                               for k, v in r['stacks'].items()) or '-'
            ratio = '' if r is stock else ' ({:.2f}x)'
            print(f"| {family} {name} | {stacks} | {r['params']:,}"
                  f"{ratio.format(r['params'] / stock['params'])} | {r['step_ms']:.0f}"
                  f"{ratio.format(r['step_ms'] / stock['step_ms'])} | {r['peak_mib']:.0f}"
                  f"{ratio.format(r['peak_mib'] / max(stock['peak_mib'], 1e-9))} | "
                  f"{r['infer_ms']:.0f}{ratio.format(r['infer_ms'] / stock['infer_ms'])} |")
    return rows


if __name__ == '__main__':
    main()
