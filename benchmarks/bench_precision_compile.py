"""Eager float32 vs bfloat16 autocast vs torch.compile'd decoder stages, side by side in one run.

The demo detector (``configs/demo/adamixer_tiny_1xb8-demo_digits.py`` or ``--config``) on a
synthetic batch of ``--batch`` images of ``--size`` px: the median time of a training step
(forward + backward + optimizer step) and of an inference pass, for

* ``eager fp32``: the reference;
* ``bf16 autocast``: ``torch.autocast(cpu/cuda, bfloat16)``, what ``tools/train.py --amp`` runs
  without CUDA (sampling, generated matrices and losses stay float32);
* ``compiled stages``: ``roi_head.compile_cfg=dict()`` (inference only: compiling the
  backward as well costs minutes of compilation on CPU).

Each variant is timed in alternation with the others (same load), after warm-up (the first
compiled call compiles). Ratios are against eager fp32.

    python benchmarks/bench_precision_compile.py [--steps 8] [--threads 2]
"""
import argparse
import copy
import os
import os.path as osp
import statistics
import sys
import time

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--config', default='configs/demo/adamixer_tiny_1xb8-demo_digits.py')
    parser.add_argument('--batch', type=int, default=8)
    parser.add_argument('--size', type=int, default=128)
    parser.add_argument('--steps', type=int, default=8)
    parser.add_argument('--threads', type=int, default=2)
    args = parser.parse_args(argv)

    import torch
    from mmengine.config import Config
    from mmengine.logging import MMLogger
    from mmengine.registry import init_default_scope
    from mmengine.structures import InstanceData

    import lors_det  # noqa: F401
    from mmdet.registry import MODELS
    from mmdet.structures import DetDataSample

    MMLogger.get_current_instance().setLevel('ERROR')
    torch.set_num_threads(args.threads)
    init_default_scope('mmdet')
    cfg = Config.fromfile(osp.join(REPO, args.config))
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    compiled_cfg = copy.deepcopy(cfg.model)
    compiled_cfg.roi_head.compile_cfg = dict()
    compiled = MODELS.build(compiled_cfg)
    compiled.load_state_dict(model.state_dict())

    size, gen = args.size, torch.Generator().manual_seed(1)
    inputs = torch.randn(args.batch, 3, size, size, generator=gen)
    samples = []
    for _ in range(args.batch):
        sample = DetDataSample(metainfo=dict(img_shape=(size, size), pad_shape=(size, size),
                                             batch_input_shape=(size, size),
                                             ori_shape=(size, size), scale_factor=(1., 1.)))
        xy = torch.rand(3, 2, generator=gen) * (size - 40)
        sample.gt_instances = InstanceData(bboxes=torch.cat([xy, xy + 30], 1),
                                           labels=torch.randint(0, 10, (3,), generator=gen))
        samples.append(sample)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)

    def train_step(autocast):
        model.train()
        optimizer.zero_grad()
        with torch.autocast('cpu', dtype=torch.bfloat16, enabled=autocast):
            losses = model.loss(inputs, samples)
        sum(v for k, v in losses.items() if 'loss' in k).backward()
        optimizer.step()

    def infer(net, autocast):
        net.eval()
        with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16, enabled=autocast):
            net.predict(inputs, samples)

    variants = {
        'train, eager fp32': lambda: train_step(False),
        'train, bf16 autocast': lambda: train_step(True),
        'inference, eager fp32': lambda: infer(model, False),
        'inference, bf16 autocast': lambda: infer(model, True),
        'inference, compiled stages': lambda: infer(compiled, False),
    }
    start = time.time()
    for fn in variants.values():  # warm-up, and the compilation of the compiled stages
        fn()
    compile_seconds = time.time() - start
    times = {name: [] for name in variants}
    for _ in range(args.steps):
        for name, fn in variants.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    med = {name: statistics.median(v) * 1000 for name, v in times.items()}
    print(f'{args.config}: {args.batch} x {size}x{size} images, {args.threads} thread(s), '
          f'median of {args.steps} alternating runs, load average {os.getloadavg()[0]:.2f} '
          f'(warm-up incl. compilation {compile_seconds:.0f} s)')
    print('| variant | ms | ratio |')
    print('|---|---|---|')
    for name, ms in med.items():
        base = med['train, eager fp32'] if name.startswith('train') else \
            med['inference, eager fp32']
        print(f'| {name} | {ms:.0f} | {ms / base:.2f} |')


if __name__ == '__main__':
    main()
