"""Train-step time, peak memory and trainable parameters of ResNet-50 fine-tuning modes.

Compares, on the same inputs and the same initial weights, a frozen backbone, VeRA, CondLoRA and
full fine-tuning (optionally the factorised adapter forwards too), side by side in one run. Every
mode mirrors the AdaMixer R-50 configs: ``norm_eval=True``, stem and layer1 frozen
(``frozen_stages=1``, configs/adamixer/adamixer_r50_8xb2-1x_coco.py), adapters on the 42 convs
of layer2-4 (configs/adapters/adamixer_r50-{vera,condlora}_*.py). A trainable 1x1-conv head on
every level stands in for the neck, so even the frozen backbone has something to train.

Two phases, so that neither number is polluted by the other modes:

* memory: every mode in a fresh process (warm-up + one step); peak = CPU max RSS, or CUDA
  ``max_memory_allocated``, above the memory in use before the first step;
* time: all modes in one process, steps interleaved round-robin so that other load on a shared
  machine hits every mode alike; the median step time is reported.

    python benchmarks/bench_adapters.py                      # CPU, 2x3x256x256, a few minutes
    python benchmarks/bench_adapters.py --device cuda --batch 8 --size 800 --steps 20
"""
import argparse
import multiprocessing as mp
import os
import resource
import statistics
import time

MODES = ('frozen', 'vera', 'condlora', 'full', 'vera-factorised', 'condlora-factorised')
TARGETS = dict(
    layers2to4=[r'layer[2-4]\.\d+\.(conv[123]|downsample\.0)'],  # 42 convs, as the configs
    all=[r'conv1', r'layer\d\.\d+\.(conv[123]|downsample\.0)'],  # 53 convs incl. the stem
)
LEVEL_CHANNELS = (256, 512, 1024, 2048)


def build_backbone(mode: str, args: dict):
    from mmdet.models.backbones import ResNet

    from lors_det.models.backbones import PEFTBackbone

    # stem + layer1 frozen as in the configs (adapters there would be refused: use -1 for 'all')
    frozen_stages = 1 if args['targets'] == 'layers2to4' else -1
    resnet = dict(type='ResNet', depth=50, frozen_stages=frozen_stages, norm_eval=True)
    if mode == 'full':
        return ResNet(**{k: v for k, v in resnet.items() if k != 'type'})
    if mode == 'frozen':
        return PEFTBackbone(module=resnet, adapter=None)
    forward = 'factorised' if mode.endswith('factorised') else 'merged'
    if mode.startswith('vera'):
        adapter = dict(type='VeRA', rank=args['vera_rank'], conv_forward=forward)
    else:
        adapter = dict(type='CondLoRA', rank=args['condlora_rank'], conv_forward=forward)
    adapter['targets'] = TARGETS[args['targets']]
    return PEFTBackbone(module=resnet, adapter=adapter)


class Trainer:
    """One mode's backbone + head + AdamW on fixed inputs; ``step()`` is one train step."""

    def __init__(self, mode: str, args: dict):
        import torch
        import torch.nn as nn

        self.mode = mode
        self.device = torch.device(args['device'])
        torch.manual_seed(0)
        self.backbone = build_backbone(mode, args)
        torch.manual_seed(1)  # identical base weights in every mode: a seeded Kaiming init
        self.backbone.init_weights()
        torch.manual_seed(2)
        self.head = nn.ModuleList(nn.Conv2d(c, 16, 1) for c in LEVEL_CHANNELS)
        self.backbone.to(self.device).train()
        self.head.to(self.device).train()
        gen = torch.Generator().manual_seed(3)
        self.inputs = torch.randn(args['batch'], 3, args['size'], args['size'],
                                  generator=gen).to(self.device)
        self.trainable = sum(p.numel() for p in self.backbone.parameters() if p.requires_grad)
        self.total = sum(p.numel() for p in self.backbone.parameters())
        params = [p for p in list(self.backbone.parameters()) + list(self.head.parameters())
                  if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=1e-4)

    def sync(self) -> None:
        import torch
        if self.device.type == 'cuda':
            torch.cuda.synchronize()

    def step(self) -> float:
        """One train step; returns its loss (before the update)."""
        self.optimizer.zero_grad(set_to_none=True)
        feats = self.backbone(self.inputs)
        loss = sum(h(f).square().mean() for h, f in zip(self.head, feats))
        loss.backward()
        self.optimizer.step()
        return loss.item()  # also synchronises


def _setup_process(args: dict) -> None:
    import torch
    from mmengine.logging import MMLogger

    import lors_det  # noqa: F401

    MMLogger.get_current_instance().setLevel('ERROR')
    if args['threads']:
        torch.set_num_threads(args['threads'])


def _rss_bytes() -> int:
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')


def measure_memory(mode: str, args: dict) -> dict:
    """In a fresh process: peak memory of warm-up + one train step, and parameter counts."""
    import torch

    _setup_process(args)
    trainer = Trainer(mode, args)
    if trainer.device.type == 'cuda':
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = _rss_bytes()
    for _ in range(args['warmup'] + 1):
        trainer.step()
    if trainer.device.type == 'cuda':
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    return dict(mode=mode, trainable=trainer.trainable, total=trainer.total,
                peak_mib=peak / 2**20)


def measure_time(args: dict) -> dict:
    """In one process: every mode's steps interleaved round-robin; per-mode step times."""
    import torch

    _setup_process(args)
    trainers = [Trainer(mode, args) for mode in args['modes']]
    first_loss = {t.mode: t.step() for t in trainers}  # warm-up; same loss in every mode
    for _ in range(args['warmup'] - 1):
        for trainer in trainers:
            trainer.step()
    times = {t.mode: [] for t in trainers}
    for _ in range(args['steps']):
        for trainer in trainers:
            trainer.sync()
            start = time.perf_counter()
            trainer.step()
            times[trainer.mode].append(time.perf_counter() - start)
    return dict(times=times, first_loss=first_loss, threads=torch.get_num_threads())


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--device', default='cpu', choices=['cpu', 'cuda'])
    parser.add_argument('--batch', type=int, default=2)
    parser.add_argument('--size', type=int, default=256)
    parser.add_argument('--steps', type=int, default=5, help='timed train steps per mode')
    parser.add_argument('--warmup', type=int, default=1)
    parser.add_argument('--threads', type=int, default=0,
                        help='CPU threads (0: torch default); 1 is steadiest on a shared machine')
    parser.add_argument('--modes', nargs='+', default=['frozen', 'vera', 'condlora', 'full'],
                        choices=MODES)
    parser.add_argument('--targets', default='layers2to4', choices=sorted(TARGETS))
    parser.add_argument('--vera-rank', type=int, default=256)
    parser.add_argument('--condlora-rank', type=int, default=8)
    args = vars(parser.parse_args(argv))
    if args['warmup'] < 1 or args['steps'] < 1:
        parser.error('--warmup and --steps must be >= 1')

    ctx = mp.get_context('spawn')  # fresh interpreters: no state shared between the phases
    memory = []
    for mode in args['modes']:
        with ctx.Pool(1) as pool:
            memory.append(pool.apply(measure_memory, (mode, args)))
    with ctx.Pool(1) as pool:
        timing = pool.apply(measure_time, (args, ))
    rows = [dict(m, step_ms=1e3 * statistics.median(timing['times'][m['mode']]),
                 first_loss=timing['first_loss'][m['mode']]) for m in memory]
    full = next((r for r in rows if r['mode'] == 'full'), None)

    def ratio(row, key):
        return f'{row[key] / full[key]:.3f}' if full and full[key] else '-'

    print(f"ResNet-50 ({rows[0]['total']:,d} parameters), input "
          f"{args['batch']}x3x{args['size']}x{args['size']}, device={args['device']}, "
          f"threads={timing['threads']}, median of {args['steps']} interleaved steps after "
          f"{args['warmup']} warm-up, adapters on {args['targets']} (VeRA r={args['vera_rank']}, "
          f"CondLoRA r={args['condlora_rank']}), frozen_stages=1 in every mode; "
          'x/full = ratio to full fine-tuning')
    header = (f"{'mode':<20}{'trainable':>11}{'% backbone':>12}{'x/full':>9}{'step ms':>10}"
              f"{'x/full':>8}{'peak MiB':>10}{'x/full':>8}{'first loss':>12}")
    print(header)
    print('-' * len(header))
    for r in rows:
        share = f"{100 * r['trainable'] / r['total']:.3f}"
        print(f"{r['mode']:<20}{r['trainable']:>11,d}{share:>12}{ratio(r, 'trainable'):>9}"
              f"{r['step_ms']:>10.1f}{ratio(r, 'step_ms'):>8}{r['peak_mib']:>10.1f}"
              f"{ratio(r, 'peak_mib'):>8}{r['first_loss']:>12.6f}")
    print('first loss: the same inputs and initial weights give the same loss in every mode '
          '(adapters start at ΔW = 0). Peak memory: above the memory in use before the first '
          'step (CPU: process max RSS; CUDA: max_memory_allocated).')


if __name__ == '__main__':
    main()
