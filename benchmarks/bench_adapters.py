"""Train-step time, peak memory and trainable parameters of ResNet-50 fine-tuning modes.

Compares, on the same inputs and the same initial weights, a frozen backbone, VeRA, CondLoRA and
full fine-tuning (optionally the factorised adapter forwards too). Every mode runs in a fresh
process so that CPU peak memory (``ru_maxrss`` above the RSS before the first step) is not
polluted by the previous mode; on CUDA the peak is ``torch.cuda.max_memory_allocated`` above the
memory allocated before the first step. A small trainable 1x1-conv head on every level stands in
for the neck, so even the frozen backbone has something to train.

    python benchmarks/bench_adapters.py                      # CPU, 2x3x256x256, ~1-3 min
    python benchmarks/bench_adapters.py --device cuda --batch 8 --size 512 --steps 20
"""
import argparse
import multiprocessing as mp
import os
import resource
import time

MODES = ('frozen', 'vera', 'condlora', 'full', 'vera-factorised', 'condlora-factorised')
TARGETS = dict(
    layers2to4=[r'layer[2-4]\.\d+\.(conv[123]|downsample\.0)'],  # 42 convs
    all=[r'conv1', r'layer\d\.\d+\.(conv[123]|downsample\.0)'],  # 53 convs incl. the stem
)


def build_backbone(mode: str, args: dict):
    from mmdet.models.backbones import ResNet

    from lors_det.models.backbones import PEFTBackbone

    resnet = dict(type='ResNet', depth=50, frozen_stages=-1, norm_eval=True)
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


def _rss_bytes() -> int:
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')


def run_mode(mode: str, args: dict) -> dict:
    """One mode in this (fresh) process: build, warm up, time ``steps`` train steps."""
    import torch
    import torch.nn as nn
    from mmengine.logging import MMLogger

    import lors_det  # noqa: F401

    MMLogger.get_current_instance().setLevel('ERROR')
    device = torch.device(args['device'])
    torch.manual_seed(0)
    backbone = build_backbone(mode, args)
    # identical base weights in every mode: the pretrained stand-in is a seeded Kaiming init
    torch.manual_seed(1)
    backbone.init_weights()
    torch.manual_seed(2)
    head = nn.ModuleList(nn.Conv2d(c, 16, 1) for c in (256, 512, 1024, 2048))
    backbone.to(device).train()
    head.to(device).train()
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(args['batch'], 3, args['size'], args['size'], generator=gen).to(device)

    trainable = sum(p.numel() for p in backbone.parameters() if p.requires_grad)
    total = sum(p.numel() for p in backbone.parameters())
    params = [p for p in list(backbone.parameters()) + list(head.parameters()) if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)

    def step():
        optimizer.zero_grad(set_to_none=True)
        feats = backbone(x)
        loss = sum(h(f).square().mean() for h, f in zip(head, feats))
        loss.backward()
        optimizer.step()
        return loss.detach()

    def sync():
        if device.type == 'cuda':
            torch.cuda.synchronize()

    if device.type == 'cuda':
        sync()
        torch.cuda.reset_peak_memory_stats()
        base_mem = torch.cuda.memory_allocated()
    else:
        base_mem = _rss_bytes()
    first_loss = None
    for _ in range(args['warmup']):
        loss = step()
        first_loss = loss.item() if first_loss is None else first_loss
    sync()
    start = time.perf_counter()
    for _ in range(args['steps']):
        loss = step()
        first_loss = loss.item() if first_loss is None else first_loss
    sync()
    step_s = (time.perf_counter() - start) / max(args['steps'], 1)
    if device.type == 'cuda':
        peak = torch.cuda.max_memory_allocated() - base_mem
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base_mem
    return dict(mode=mode, trainable=trainable, total=total, step_ms=step_s * 1e3,
                peak_mib=peak / 2**20, first_loss=first_loss, threads=torch.get_num_threads())


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--device', default='cpu', choices=['cpu', 'cuda'])
    parser.add_argument('--batch', type=int, default=2)
    parser.add_argument('--size', type=int, default=256)
    parser.add_argument('--steps', type=int, default=3, help='timed train steps per mode')
    parser.add_argument('--warmup', type=int, default=1)
    parser.add_argument('--modes', nargs='+', default=['frozen', 'vera', 'condlora', 'full'],
                        choices=MODES)
    parser.add_argument('--targets', default='layers2to4', choices=sorted(TARGETS))
    parser.add_argument('--vera-rank', type=int, default=256)
    parser.add_argument('--condlora-rank', type=int, default=8)
    args = vars(parser.parse_args(argv))

    ctx = mp.get_context('spawn')
    results = []
    for mode in args['modes']:
        with ctx.Pool(1) as pool:  # a fresh process per mode: clean peak-memory accounting
            results.append(pool.apply(run_mode, (mode, args)))
    full = next((r for r in results if r['mode'] == 'full'), None)

    def ratio(r, key):
        return f'{r[key] / full[key]:.4f}' if full and full[key] else '-'

    print(f"ResNet-50, input {args['batch']}x3x{args['size']}x{args['size']}, "
          f"device={args['device']}, {args['steps']} timed steps after {args['warmup']} warm-up, "
          f"threads={results[0]['threads']}, adapter targets={args['targets']}, "
          f"VeRA r={args['vera_rank']}, CondLoRA r={args['condlora_rank']}; "
          'ratios are relative to full fine-tuning')
    header = (f"{'mode':<20}{'trainable':>11}{'train/full':>12}{'step ms':>10}"
              f"{'time/full':>11}{'peak MiB':>10}{'mem/full':>10}{'first loss':>13}")
    print(header)
    print('-' * len(header))
    for r in results:
        print(f"{r['mode']:<20}{r['trainable']:>11,d}{ratio(r, 'trainable'):>12}"
              f"{r['step_ms']:>10.1f}{ratio(r, 'step_ms'):>11}{r['peak_mib']:>10.1f}"
              f"{ratio(r, 'peak_mib'):>10}{r['first_loss']:>13.6f}")
    print('first loss: the same inputs and initial weights give the same loss in every mode '
          '(adapters start at ΔW = 0).')


if __name__ == '__main__':
    main()
