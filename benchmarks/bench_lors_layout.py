"""The LORS mixing before and after the per-stage redesign, side by side in one process.

The previous implementation (one ``LORSAdaptiveMixingStack`` holding the shared weights and
every stage's private terms) is read from a checkout of a commit before the change, e.g.::

    git worktree add /tmp/lors-before 4aac7fb
    python benchmarks/bench_lors_layout.py --before /tmp/lors-before

Both mixers get the same weights (converted with
``tools/model_converters/lors_stack_to_per_stage.py``), their outputs are compared, and the
forward + backward of the six stages' mixing (released dims: G=2, C=128, P_in=64, P_out=128,
k=16, K=1,1,2,2,3,3, r=8; 2 images x 100 queries) is timed alternately, so that both see the
same machine load. Prints the medians and the ratio after/before.
"""
import argparse
import importlib.util
import os
import os.path as osp
import shutil
import statistics
import sys
import tempfile
import time

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)


def load_before(checkout: str):
    """The previous package ``lors_det/models/lors`` of ``checkout``, imported as ``lors_before``
    (its module names do not clash with the current registry)."""
    src = osp.join(checkout, 'lors_det', 'models', 'lors')
    if not osp.isfile(osp.join(src, 'lors_adaptive_mixing.py')):
        raise SystemExit(f'{src}: no lors_adaptive_mixing.py, not a checkout from before the '
                         'redesign')
    root = tempfile.mkdtemp()
    pkg = osp.join(root, 'lors_before')
    shutil.copytree(src, pkg, ignore=shutil.ignore_patterns('__init__.py', 'fold.py'))
    open(osp.join(pkg, '__init__.py'), 'w').close()
    sys.path.insert(0, root)
    from lors_before.lors_adaptive_mixing import LORSAdaptiveMixingStack
    return LORSAdaptiveMixingStack


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--before', required=True, help='checkout of a commit before the change')
    parser.add_argument('--reps', type=int, default=12)
    parser.add_argument('--threads', type=int, default=1)
    args = parser.parse_args(argv)

    import torch
    import torch.nn as nn

    import lors_det  # noqa: F401
    from lors_det.models.lors import LORSAdaptiveMixing, SharedMixingWeights
    stack_cls = load_before(args.before)
    spec = importlib.util.spec_from_file_location(
        'converter', osp.join(REPO, 'tools', 'model_converters', 'lors_stack_to_per_stage.py'))
    converter = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(converter)

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    terms = [1, 1, 2, 2, 3, 3]
    before = stack_cls(num_stages=6, kernel_groups=terms, out_proj_zero_init='B')

    class After(nn.Module):
        def __init__(self):
            super().__init__()
            self.shared_mixing = SharedMixingWeights(256, 128, 2, 64, 128)
            self.mixers = nn.ModuleList(
                LORSAdaptiveMixing(256, 64, 128, 2, 256, shared=self.shared_mixing,
                                   generator_num_terms=k) for k in terms)

    after = After()
    with torch.no_grad():
        for p in before.parameters():
            p.normal_(0, 0.02)
    state = converter.convert_state_dict(
        {f'roi_head.lors_mixing.{k}': v for k, v in before.state_dict().items()})
    after.load_state_dict({
        k.replace('roi_head.', '').replace('bbox_head.', 'mixers.').replace(
            '.sampling_n_mixing.adaptive_mixing.', '.'): v for k, v in state.items()})

    sampled, query = torch.randn(2, 100, 2, 64, 128), torch.randn(2, 100, 256)
    with torch.no_grad():
        diff = max((before(sampled, query, i) - m(sampled, query)).abs().max().item()
                   for i, m in enumerate(after.mixers))

    def run_before():
        sum(before(sampled, query, i).sum() for i in range(6)).backward()

    def run_after():
        sum(m(sampled, query).sum() for m in after.mixers).backward()

    times = {'before': [], 'after': []}
    for rep in range(args.reps):
        order = [('before', run_before), ('after', run_after)]
        for name, fn in (order if rep % 2 == 0 else order[::-1]):
            before.zero_grad()
            after.zero_grad()
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    med = {k: statistics.median(v[2:]) * 1000 for k, v in times.items()}
    load = os.getloadavg()[0]
    print(f'6-stage LORS mixing, forward + backward, 2 x 100 queries, {args.threads} thread(s), '
          f'{args.reps} alternating reps, load average {load:.2f}')
    print(f'outputs: max abs difference {diff:.2e}')
    print('| before (one stack) | after (per stage) | after / before |')
    print(f'| {med["before"]:.1f} ms | {med["after"]:.1f} ms | '
          f'{med["after"] / med["before"]:.3f} |')


if __name__ == '__main__':
    main()
