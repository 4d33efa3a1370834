#!/usr/bin/env python
"""The GPU check: train the R-50 AdaMixer and AdaMixer+LORS configs on synthetic COCO-shaped
data in float32 and with AMP, compare float32 outputs with the CPU, time inference.

    bash tools/gpu_check.sh                    # on a CUDA machine; under 8 minutes on one GPU
    python tools/analysis_tools/gpu_check.py --device cpu --iters 2 --shape 64 96   # dry run

For each config: ``--iters`` training iterations (AdamW, batch ``--batch``, random boxes on
random ``--shape`` images) in float32 and in AMP (float16 autocast + GradScaler on CUDA,
bfloat16 autocast on CPU); every loss must be finite. Then, on one fixed batch, the float32
eval outputs (last-stage scores and boxes) on the device against the same weights on the CPU
(TF32 off; tolerance ``--atol`` on sigmoid scores and ``--atol`` x image size on boxes), and
inference images/s. Prints a table and writes ``--out`` (JSON). Exit code 1 if a check fails.
"""
import argparse
import json
import os.path as osp
import sys
import time

from analysis_utils import REPO_ROOT as REPO  # noqa: E402  (puts the repo on sys.path)
from analysis_utils import build_detector, dummy_batch, load_config  # noqa: E402

CONFIGS = ('configs/adamixer/adamixer_r50_8xb2-1x_coco.py',
           'configs/lors/adamixer-lors_r50_8xb2-1x_coco.py')


def build(config, device):
    """The config's detector on ``device``, initialised from seed 0 (no pretrained download)."""
    import torch
    cfg = load_config(osp.join(REPO, config), {'model.backbone.init_cfg': None})
    torch.manual_seed(0)
    model = build_detector(cfg, device=device)
    model.init_weights()
    return model


def batch_of(model, shape, batch, seed):
    """Random images of ``shape`` with 5 random boxes each, through the model's preprocessor."""
    data = dummy_batch(model, shape, batch, seed, num_gts=5)
    return data['inputs'], data['data_samples']


def train(model, device, iters, batch, shape, amp):
    import torch
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=2.5e-5, weight_decay=1e-4)
    cuda = device.startswith('cuda')
    scaler = torch.amp.GradScaler('cuda', enabled=amp and cuda)
    dtype = torch.float16 if cuda else torch.bfloat16
    losses, times = [], []
    for i in range(iters):
        inputs, samples = batch_of(model, shape, batch, seed=i)
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        optimizer.zero_grad()
        with torch.autocast(device.split(':')[0], dtype=dtype, enabled=amp):
            out = model.loss(inputs, samples)
        loss = sum(v for k, v in out.items() if 'loss' in k)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        scaler.step(optimizer)
        scaler.update()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
        losses.append(loss.item())
    return losses, times


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--device', default='cuda')
    parser.add_argument('--iters', type=int, default=50)
    parser.add_argument('--batch', type=int, default=2)
    parser.add_argument('--shape', type=int, nargs=2, default=[800, 1333],
                        help='image size H W (padded by the data preprocessor)')
    parser.add_argument('--infer-iters', type=int, default=10)
    parser.add_argument('--atol', type=float, default=1e-3)
    parser.add_argument('--out', default='gpu_check.json')
    args = parser.parse_args(argv)

    import torch
    from mmengine.logging import MMLogger
    MMLogger.get_current_instance().setLevel('ERROR')
    if args.device.startswith('cuda'):
        if not torch.cuda.is_available():
            print('gpu_check: no CUDA device here; GPU numbers not measured')
            return 2
        torch.backends.cuda.matmul.allow_tf32 = False  # float32 comparisons with the CPU
        torch.backends.cudnn.allow_tf32 = False
    cuda = args.device.startswith('cuda')
    report, ok = {}, True
    for config in CONFIGS:
        row = {}
        for amp in (False, True):
            model = build(config, args.device)
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            losses, times = train(model, args.device, args.iters, args.batch,
                                  tuple(args.shape), amp)
            finite = all(map(lambda v: v == v and abs(v) != float('inf'), losses))
            ok &= finite
            key = 'amp' if amp else 'fp32'
            row[key] = dict(finite_losses=finite, first_loss=losses[0], last_loss=losses[-1],
                            sec_per_iter=sorted(times)[len(times) // 2],
                            peak_mem_mib=(torch.cuda.max_memory_allocated() / 2 ** 20
                                          if cuda else None))
        # float32 outputs: device vs CPU, same weights
        model = build(config, args.device).eval()
        cpu_model = build(config, 'cpu').eval()
        cpu_model.load_state_dict({k: v.cpu() for k, v in model.state_dict().items()})
        inputs, samples = batch_of(model, tuple(args.shape), 1, seed=123)
        cpu_inputs, cpu_samples = batch_of(cpu_model, tuple(args.shape), 1, seed=123)
        with torch.no_grad():
            cls, box = model._forward(inputs, samples)[0][-1]
            cls_c, box_c = cpu_model._forward(cpu_inputs, cpu_samples)[0][-1]
        score_diff = (cls.float().cpu().sigmoid() - cls_c.sigmoid()).abs().max().item()
        box_diff = (box.float().cpu() - box_c).abs().max().item() / max(args.shape)
        same = score_diff <= args.atol and box_diff <= args.atol
        ok &= same
        row['device_vs_cpu'] = dict(max_score_diff=score_diff, max_box_diff_rel=box_diff,
                                    within_tolerance=same)
        inputs, samples = batch_of(model, tuple(args.shape), args.batch, seed=7)
        with torch.no_grad():
            model.predict(inputs, samples)  # warm-up
            if cuda:
                torch.cuda.synchronize()
            start = time.perf_counter()
            for _ in range(args.infer_iters):
                model.predict(inputs, samples)
            if cuda:
                torch.cuda.synchronize()
        row['inference_img_per_s'] = args.batch * args.infer_iters / (time.perf_counter() - start)
        report[config] = row
        print(f'{config}: fp32 {row["fp32"]["sec_per_iter"]:.3f} s/it, amp '
              f'{row["amp"]["sec_per_iter"]:.3f} s/it, peak mem fp32/amp '
              f'{row["fp32"]["peak_mem_mib"]} / {row["amp"]["peak_mem_mib"]} MiB, '
              f'finite {row["fp32"]["finite_losses"]}/{row["amp"]["finite_losses"]}, '
              f'device vs cpu scores {score_diff:.2e} boxes {box_diff:.2e}, '
              f'inference {row["inference_img_per_s"]:.2f} img/s')
    report['device'] = torch.cuda.get_device_name() if cuda else 'cpu'
    report['passed'] = bool(ok)
    with open(args.out, 'w') as f:
        json.dump(report, f, indent=2)
    print('gpu_check:', 'PASSED' if ok else 'FAILED', '->', args.out)
    return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main())
