"""AdaMixer vs AdaMixer+LORS decoders side by side: parameters, FLOPs, train step, memory, latency.

Variants (all from the shipped R-50 1x configs, 6 stages, 80 classes):

* ``adamixer``        AdaMixer as published, G=4 groups, P_in=32 points;
* ``adamixer-g2p64``  AdaMixer with the mixer LORS uses, G=2, P_in=64 (lors_spec.md section 2:
                      the released LORS configs change these too);
* ``lors``            AdaMixer+LORS (shared weights + per-stage private terms), unfolded;
* ``lors-folded``     the same LORS weights folded into plain per-stage weights
                      (lors_det/models/lors/fold.py): an ``adamixer-g2p64`` model. Its train step
                      is that of the plain model (folding is for inference).

By default only the decoder (query generator + decoder) runs, on synthetic neck features of an
``--size`` x ``--size`` image (strides 4-32, 256 channels), so the numbers are the decoder's;
``--full`` runs the whole detector (ResNet-50 + neck) on ``--size`` images instead.

Every variant runs in its own fresh process (``spawn``), one after the other, on identical
inputs (same seeds): build, AdamW train steps (forward + backward + optimizer step; median of
``--steps`` after ``--warmup``), then eval-mode inference (median of ``--infer-steps``), then a
FLOP count. LORS weights get non-zero private terms first (as after some training), so that the
folded and unfolded detections can be compared (printed below the table).

* params: :func:`lors_det.utils.count_parameters` (decoder = roi_head; shared tensors once);
* FLOPs: :func:`lors_det.utils.count_flops` convention, FLOPs = 2 x MACs, counted by
  ``torch.utils.flop_counter`` incl. the per-query generated mixing matmuls; inference, after
  the one-off LORS^T merge. GMACs (= FLOPs / 2) is what the papers call "GFLOPs";
* peak memory: CPU peak resident set size (``VmHWM``, reset just before the first train step,
  so model building is excluded) minus the resident size at that point, i.e. activations,
  gradients and AdamW state of the train steps; CUDA: ``max_memory_allocated`` above the
  allocation before the first step.

    python benchmarks/bench_lors.py                         # CPU, decoder only, a few minutes
    python benchmarks/bench_lors.py --full --size 512       # whole detector
    python benchmarks/bench_lors.py --device cuda --queries 300 --steps 20 --infer-steps 20
"""
import argparse
import copy
import multiprocessing as mp
import os

from _measure import PeakMemory, median_ms

VARIANTS = ('adamixer', 'adamixer-g2p64', 'lors', 'lors-folded')
PLAIN_CFG = 'configs/adamixer/adamixer_r50_8xb2-1x_coco.py'
LORS_CFG = 'configs/lors/adamixer-lors_r50_8xb2-1x_coco.py'
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _setup_process(args: dict) -> None:
    import sys

    import torch
    from mmengine.logging import MMLogger
    from mmengine.registry import init_default_scope
    if REPO not in sys.path:
        sys.path.insert(0, REPO)
    import lors_det  # noqa: F401

    MMLogger.get_current_instance().setLevel('ERROR')
    init_default_scope('mmdet')
    torch.set_num_threads(args['threads'])


def _model_cfgs(args: dict) -> dict:
    from mmengine.config import Config

    from lors_det.models.lors import plain_adamixer_model_cfg

    plain = Config.fromfile(os.path.join(REPO, PLAIN_CFG)).model
    lors = Config.fromfile(os.path.join(REPO, LORS_CFG)).model
    cfgs = dict(adamixer=plain, lors=lors, **{'adamixer-g2p64': plain_adamixer_model_cfg(lors)})
    cfgs['lors-folded'] = cfgs['adamixer-g2p64']
    for cfg in cfgs.values():
        cfg.backbone.init_cfg = None  # no download; the timings do not depend on the weights
        cfg.rpn_head.num_query = args['queries']
        cfg.test_cfg.rcnn.max_per_img = args['queries']
    return cfgs


def _randomize_lors(model, seed: int = 5) -> None:
    """Non-zero private LORS terms (cores, the zero LORS^T factor, biases), as after training."""
    import torch
    gen = torch.Generator().manual_seed(seed)
    params = []
    for stage in model.roi_head.bbox_head:
        mixer = stage.sampling_n_mixing.adaptive_mixing
        for residual in (mixer.channel_residual, mixer.spatial_residual):
            params += list(residual.core_generator.parameters())
        out_proj = mixer.out_proj
        params += [out_proj.B if out_proj.zero_init == 'B' else out_proj.A, out_proj.bias]
    with torch.no_grad():
        for p in params:
            p.copy_(0.02 * torch.randn(p.shape, generator=gen))


def build_model(variant: str, args: dict):
    """The detector of ``variant``, initialised from the same seeds."""
    import torch
    from mmdet.registry import MODELS

    from lors_det.models.lors import fold_lors_state_dict

    cfgs = _model_cfgs(args)

    def make(cfg):
        torch.manual_seed(0)
        model = MODELS.build(copy.deepcopy(cfg))
        model.init_weights()
        gen = torch.Generator().manual_seed(1)  # distinct query boxes (all whole-image at init)
        with torch.no_grad():
            boxes = model.rpn_head.init_proposal_bboxes.weight
            boxes[:, :2] = 0.2 + 0.6 * torch.rand(boxes.size(0), 2, generator=gen)
            boxes[:, 2:] = 0.1 + 0.4 * torch.rand(boxes.size(0), 2, generator=gen)
        return model

    if variant in ('adamixer', 'adamixer-g2p64'):
        return make(cfgs[variant])
    lors = make(cfgs['lors'])
    _randomize_lors(lors)
    if variant == 'lors':
        return lors
    folded_state = fold_lors_state_dict(lors)
    del lors
    plain = MODELS.build(copy.deepcopy(cfgs['lors-folded']))
    plain.load_state_dict(folded_state, strict=True)
    return plain


class Runner:
    """One variant on fixed inputs: ``train_step()``, ``infer()`` and ``flops()``."""

    def __init__(self, variant: str, args: dict):
        import torch
        from mmengine.structures import InstanceData

        from mmdet.structures import DetDataSample

        self.args = args
        self.device = torch.device(args['device'])
        self.model = build_model(variant, args).to(self.device)
        self.full = args['full']
        size, batch = args['size'], args['batch']
        gen = torch.Generator().manual_seed(2)
        self.samples = []
        for i in range(batch):
            sample = DetDataSample(metainfo=dict(
                img_shape=(size, size), pad_shape=(size, size), batch_input_shape=(size, size),
                ori_shape=(size, size), scale_factor=(1.0, 1.0)))
            # a few random ground-truth boxes per image
            xy = torch.rand(5, 2, generator=gen) * size * 0.6
            wh = 16 + torch.rand(5, 2, generator=gen) * size * 0.3
            sample.gt_instances = InstanceData(
                bboxes=torch.cat([xy, (xy + wh).clamp(max=size)], 1).to(self.device),
                labels=torch.randint(0, 80, (5, ), generator=gen).to(self.device))
            self.samples.append(sample)
        if self.full:
            self.inputs = torch.randn(batch, 3, size, size, generator=gen).to(self.device)
            params = self.model.parameters()
        else:
            self.feats = tuple(
                torch.randn(batch, 256, size // s, size // s, generator=gen).to(self.device)
                for s in (4, 8, 16, 32))
            params = list(self.model.rpn_head.parameters()) + list(
                self.model.roi_head.parameters())
        self.optimizer = torch.optim.AdamW([p for p in params if p.requires_grad], lr=1e-5)

    def sync(self) -> None:
        import torch
        if self.device.type == 'cuda':
            torch.cuda.synchronize()

    def train_step(self) -> float:
        if not self.model.training:
            self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        if self.full:
            losses = self.model.loss(self.inputs, self.samples)
        else:
            _, rpn = self.model.rpn_head.loss_and_predict(self.feats, self.samples)
            losses = self.model.roi_head.loss(self.feats, rpn, self.samples)
        loss = sum(v for k, v in losses.items() if 'loss' in k)
        loss.backward()
        self.optimizer.step()
        return loss.item()

    def infer(self):
        import torch
        if self.model.training:
            # switch once: a mode switch drops the cached merged LORS^T weights
            self.model.eval()
        with torch.no_grad():
            if self.full:
                return [r.pred_instances for r in self.model.predict(self.inputs, self.samples)]
            rpn = self.model.rpn_head.predict(self.feats, self.samples)
            return self.model.roi_head.predict(self.feats, rpn, self.samples, rescale=False)

    def flops(self) -> dict:
        from lors_det.utils import count_flops, count_fn_flops
        if self.full:
            return count_flops(self.model, self.inputs, self.samples)
        self.infer()  # eval mode; merges the LORS^T weights once, as count_flops does
        import torch
        with torch.no_grad():
            rpn = self.model.rpn_head.predict(self.feats, self.samples)
            decoder, _ = count_fn_flops(self.model.roi_head.predict, self.feats, rpn,
                                        self.samples, rescale=False)
        return dict(decoder=decoder)


def measure(variant: str, args: dict) -> dict:
    import torch

    from lors_det.utils import count_parameters

    _setup_process(args)
    runner = Runner(variant, args)
    params = count_parameters(runner.model)
    # detections of the initial weights (same seeds in every process): lors vs lors-folded
    dets = [dict(scores=d.scores.cpu(), bboxes=d.bboxes.cpu()) for d in runner.infer()]

    runner.sync()
    with PeakMemory(runner.device) as peak_memory:
        first_loss = runner.train_step()
        for _ in range(args['warmup'] - 1):
            runner.train_step()
        step_ms = median_ms(runner.train_step, args['steps'], runner.sync)
    peak = peak_memory.bytes

    runner.infer()  # warm-up (also the one-off LORS^T merge)
    infer_ms = median_ms(runner.infer, args['infer_steps'], runner.sync)
    flops = runner.flops()
    return dict(variant=variant, params=params, flops=flops, first_loss=first_loss,
                step_ms=step_ms, peak_mib=peak / 2**20, infer_ms=infer_ms, dets=dets,
                threads=torch.get_num_threads())


def _max_det_diff(a: list, b: list) -> float:
    diff = 0.0
    for x, y in zip(a, b):
        ox, oy = x['scores'].argsort(descending=True), y['scores'].argsort(descending=True)
        diff = max(diff, (x['scores'][ox] - y['scores'][oy]).abs().max().item(),
                   (x['bboxes'][ox] - y['bboxes'][oy]).abs().max().item())
    return diff


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--device', default='cpu', choices=['cpu', 'cuda'])
    parser.add_argument('--full', action='store_true',
                        help='whole detector (ResNet-50 + neck) instead of the decoder only')
    parser.add_argument('--size', type=int, default=512, help='(square) image size')
    parser.add_argument('--batch', type=int, default=2)
    parser.add_argument('--queries', type=int, default=100)
    parser.add_argument('--steps', type=int, default=3, help='timed train steps')
    parser.add_argument('--warmup', type=int, default=1, help='untimed train steps first')
    parser.add_argument('--infer-steps', type=int, default=3, help='timed inference passes')
    parser.add_argument('--threads', type=int, default=1,
                        help='CPU threads (default 1: steadiest on a shared machine)')
    parser.add_argument('--variants', nargs='+', default=list(VARIANTS), choices=VARIANTS)
    args = vars(parser.parse_args(argv))
    if min(args['warmup'], args['steps'], args['infer_steps']) < 1:
        parser.error('--warmup, --steps and --infer-steps must be >= 1')
    if args['size'] % 32:
        parser.error('--size must be a multiple of 32')

    ctx = mp.get_context('spawn')  # a fresh interpreter per variant
    rows = []
    for variant in args['variants']:
        with ctx.Pool(1) as pool:
            rows.append(pool.apply(measure, (variant, args)))
    by_name = {r['variant']: r for r in rows}
    ref = by_name.get('adamixer', rows[0])

    def ratio(value, ref_value):
        return f'{value / ref_value:.2f}x' if ref_value else '-'

    what = 'whole detector' if args['full'] else 'decoder only (query generator + decoder)'
    print(f"\n{what}, {args['batch']} x {args['size']}x{args['size']} images, "
          f"{args['queries']} queries, device={args['device']}, threads={rows[0]['threads']}; "
          f"train step = forward + backward + AdamW, median of {args['steps']} after "
          f"{args['warmup']} warm-up; inference median of {args['infer_steps']}; ratios vs "
          f"{ref['variant']}\n")
    part = 'total' if args['full'] else 'decoder'
    print(f'| variant | decoder params | shared / private | {part} GFLOPs (2xMAC) | GMACs | '
          'train step ms | peak train mem MiB | inference ms |')
    print('|---|---|---|---|---|---|---|---|')
    for r in rows:
        p, f = r['params'], r['flops'][part]
        dec_ratio = ratio(p['decoder'], ref['params']['decoder'])
        print(f"| {r['variant']} | {p['decoder'] / 1e6:.2f} M ({dec_ratio}) "
              f"| {p['decoder_shared'] / 1e6:.2f} M / {p['decoder_private'] / 1e6:.2f} M "
              f"| {f / 1e9:.2f} ({ratio(f, ref['flops'][part])}) | {f / 2e9:.2f} "
              f"| {r['step_ms']:.0f} ({ratio(r['step_ms'], ref['step_ms'])}) "
              f"| {r['peak_mib']:.0f} ({ratio(r['peak_mib'], ref['peak_mib'])}) "
              f"| {r['infer_ms']:.0f} ({ratio(r['infer_ms'], ref['infer_ms'])}) |")
    if 'lors' in by_name and 'lors-folded' in by_name:
        diff = _max_det_diff(by_name['lors']['dets'], by_name['lors-folded']['dets'])
        print(f'\nlors vs lors-folded (same weights): max |diff| of sorted scores and boxes = '
              f'{diff:.2e}; first training loss {by_name["lors"]["first_loss"]:.6f} vs '
              f'{by_name["lors-folded"]["first_loss"]:.6f}')
    print('lors-folded trains as the plain G=2/P_in=64 model (folding is an inference '
          'conversion). Peak memory: CPU peak RSS during the train steps above the RSS before '
          'them (VmHWM reset); CUDA max_memory_allocated.')


if __name__ == '__main__':
    main()
