"""Where one training iteration of the demo goes: torch.profiler, by part and by operator.

Builds the config's runner (real dataloader, model, optimizer wrapper), trains ``--warmup``
iterations, then profiles ``--iters`` iterations. Each iteration is cut into labelled ranges:

* ``data loading`` (next batch from the dataloader), ``data preprocessor``;
* forward: ``backbone``, ``neck``, ``query generator``, and for each decoder stage
  ``stage i`` with its ``attention``, ``sampling`` (3D sampling), ``mixing`` (ACM/ASM),
  ``ffn``, ``cls/reg branches``; ``matching`` (Hungarian assignment) and ``losses + targets``;
* ``backward``, ``optimizer step`` (clip + AdamW + zero_grad).

Prints ms per iteration and share of the iteration for each range, then the top operators by
self CPU time. ``--json`` writes the same numbers.

    python benchmarks/profile_train_step.py [--config CFG] [--iters 5] [--threads 2]
"""
import argparse
import contextlib
import json
import os.path as osp
import sys
import tempfile
import time

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

DEFAULT_CONFIG = 'configs/demo/adamixer_tiny_1xb8-demo_digits.py'


def _label_module(module, name: str) -> None:
    """Wrap ``module``'s forward in a profiler range called ``name``."""
    import torch

    def pre_hook(mod, args):
        mod._profile_range = torch.autograd.profiler.record_function(name)
        mod._profile_range.__enter__()

    def post_hook(mod, args, output):
        mod._profile_range.__exit__(None, None, None)

    module.register_forward_pre_hook(pre_hook)
    module.register_forward_hook(post_hook)


def _label_method(obj, method: str, name: str) -> None:
    import torch
    original = getattr(obj, method)

    def labelled(*args, **kwargs):
        with torch.autograd.profiler.record_function(name):
            return original(*args, **kwargs)

    setattr(obj, method, labelled)


def label_parts(model) -> list:
    """Attach the ranges of the module docstring; returns the range names in print order."""
    names = ['data loading', 'data preprocessor', 'backbone', 'neck', 'query generator']
    _label_module(model.backbone, 'backbone')
    _label_module(model.neck, 'neck')
    _label_module(model.rpn_head, 'query generator')
    for i, stage in enumerate(model.roi_head.bbox_head):
        _label_module(stage, f'stage {i}')
        names.append(f'stage {i}')
        _label_module(stage.attention, 'attention')
        _label_method(stage, 'attention_bias', 'attention')
        # 3D sampling = the whole sampling module minus its mixer (subtracted in main)
        _label_module(stage.sampling_n_mixing, 'sampling + mixing')
        _label_module(stage.sampling_n_mixing.adaptive_mixing, 'mixing')
        _label_module(stage.ffn, 'ffn')
        _label_method(stage, 'loss_and_target', 'losses + targets')
    names += ['attention', 'sampling + mixing', 'mixing', 'ffn']
    from lors_det.models.roi_heads import adamixer_decoder
    _label_method(adamixer_decoder, 'hungarian_assign_batch', 'matching')
    names += ['matching', 'losses + targets', 'forward (all)', 'backward', 'optimizer step']
    return names


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--config', default=DEFAULT_CONFIG)
    parser.add_argument('--iters', type=int, default=5)
    parser.add_argument('--warmup', type=int, default=3)
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--top', type=int, default=20, help='operators to list')
    parser.add_argument('--json', help='also write the numbers here')
    args = parser.parse_args(argv)

    import torch
    from mmengine.config import Config
    from mmengine.logging import MMLogger
    from mmengine.runner import Runner
    from torch.profiler import ProfilerActivity, profile, record_function

    import lors_det  # noqa: F401

    torch.set_num_threads(args.threads)
    cfg = Config.fromfile(osp.join(REPO, args.config) if not osp.isabs(args.config)
                          else args.config)
    cfg.work_dir = tempfile.mkdtemp(prefix='profile_train_step_')
    cfg.train_dataloader.dataset.data_root = osp.join(REPO, cfg.train_dataloader.dataset.data_root)
    cfg.log_level = 'ERROR'
    runner = Runner.from_cfg(cfg)
    MMLogger.get_current_instance().setLevel('ERROR')
    model = runner.model
    model.train()
    optim_wrapper = runner.build_optim_wrapper(cfg.optim_wrapper)
    loader = runner.build_dataloader(cfg.train_dataloader)
    model.init_weights()
    names = label_parts(model)
    batches = iter(loader)

    def train_iteration():
        nonlocal batches
        with record_function('data loading'):
            try:
                data = next(batches)
            except StopIteration:
                batches = iter(loader)
                data = next(batches)
        with optim_wrapper.optim_context(model):
            with record_function('data preprocessor'):
                data = model.data_preprocessor(data, True)
            with record_function('forward (all)'):
                losses = model._run_forward(data, mode='loss')
        loss, _ = model.parse_losses(losses)
        with record_function('backward'):
            optim_wrapper.backward(loss)
        with record_function('optimizer step'):
            optim_wrapper.step()
            optim_wrapper.zero_grad()

    for _ in range(args.warmup):
        train_iteration()
    start = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(args.iters):
            with record_function('iteration'):
                train_iteration()
    wall_ms = (time.perf_counter() - start) * 1000 / args.iters

    averages = {evt.key: evt for evt in prof.key_averages()}
    iteration_ms = averages['iteration'].cpu_time_total / 1000 / args.iters
    parts = {}
    for name in names:
        if name in averages:
            parts[name] = averages[name].cpu_time_total / 1000 / args.iters
    if 'sampling + mixing' in parts and 'mixing' in parts:
        parts['sampling'] = parts.pop('sampling + mixing') - parts['mixing']
    operators = sorted((evt for evt in prof.key_averages() if not evt.key.startswith(
        tuple(names) + ('iteration', 'stage '))), key=lambda e: -e.self_cpu_time_total)
    top = [(evt.key, evt.self_cpu_time_total / 1000 / args.iters, evt.count // args.iters)
           for evt in operators[:args.top]]

    print(f'config {args.config}; {args.threads} threads; {args.iters} profiled iterations '
          f'({wall_ms:.1f} ms each wall time with the profiler on)')
    print(f'\n{"part":<22} {"ms/iter":>8} {"share":>6}')
    for name, ms in parts.items():
        print(f'{name:<22} {ms:8.1f} {ms / iteration_ms:6.1%}')
    print(f'{"iteration":<22} {iteration_ms:8.1f} {1:6.1%}')
    print('(stage i includes its attention, sampling, mixing and ffn; forward (all) includes '
          'the stages, matching and losses)')
    print(f'\n{"operator (self CPU)":<48} {"ms/iter":>8} {"share":>6} {"calls":>6}')
    for key, ms, calls in top:
        print(f'{key[:48]:<48} {ms:8.1f} {ms / iteration_ms:6.1%} {calls:6d}')
    result = dict(config=args.config, threads=args.threads, iters=args.iters,
                  iteration_ms=iteration_ms, wall_ms=wall_ms, parts_ms=parts,
                  top_operators=[dict(name=k, ms=ms, calls=c) for k, ms, c in top])
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == '__main__':
    with contextlib.suppress(KeyboardInterrupt):
        main()
