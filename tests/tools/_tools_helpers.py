"""Shared helpers of the tests/tools tests (not collected: the name does not start with test_).

* :func:`write_tiny_config` writes a real config file (``_base_`` = the repo's AdaMixer model,
  digits dataset and runtime files) for a tiny AdaMixer on a tiny generated digits dataset,
  so the tools are exercised the way a user runs them.
* Test-only hooks, registered when this module is imported (configs list it in
  ``custom_imports``; subprocesses find it through ``PYTHONPATH``, see :func:`subprocess_env`).
"""
import json
import os
import os.path as osp
import socket
import subprocess
import sys
from typing import Optional

from mmengine.hooks import Hook
from mmengine.registry import HOOKS

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
HERE = osp.dirname(osp.abspath(__file__))
PYTHON = osp.join(REPO, '.venv', 'bin', 'python')
if not osp.exists(PYTHON):
    PYTHON = sys.executable

# A few 64x48 digit images: generated in well under a second.
TINY_DIGITS = dict(num_train=8, num_val=4, img_size=(64, 48), digit_size=(12, 24),
                   num_objects=(1, 3), seed=3)
NUM_QUERY = 5


def write_tiny_config(path: str, data_root: str, *, max_epochs: int = 1,
                      batch_size: int = 4, shuffle: bool = False, validate: bool = False,
                      generator_cfg: Optional[dict] = None, extra: str = '') -> str:
    """Write a tiny AdaMixer digits config to ``path`` and return ``path``.

    The model is the base AdaMixer config scaled down (R-18 with 8 base channels, BN in eval
    mode, 32-d queries, 5 queries, 2 stages); the data pipelines have no random augmentation;
    the optimizer is SGD (its update is linear in the gradient, so runs that should compute the
    same gradients end with weights that agree to rounding); the lr schedule has an
    iteration-based warmup and an epoch-based step so that a resumed run must restore both.
    No ``find_unused_parameters``: the distributed test shows the shipped setting works.
    ``extra`` is appended verbatim (Python config syntax) to override anything.
    """
    generator_cfg = dict(TINY_DIGITS if generator_cfg is None else generator_cfg)
    base = osp.join(REPO, 'configs', '_base_')
    # test_* always point at the tiny data (tools/test.py); val_* only when validating
    val = """
val_dataloader = test_dataloader
val_evaluator = test_evaluator
val_cfg = dict(type='ValLoop')
""" if validate else """
val_dataloader = None
val_evaluator = None
val_cfg = None
"""
    text = f"""# Written by tests/tools/_tools_helpers.py: a tiny AdaMixer on tiny digits data.
_base_ = [
    {osp.join(base, 'models', 'adamixer_r50.py')!r},
    {osp.join(base, 'datasets', 'digits_detection.py')!r},
    {osp.join(base, 'default_runtime.py')!r},
]
custom_imports = dict(imports=['lors_det', '_tools_helpers'], allow_failed_imports=False)
data_root = {data_root!r}
generator_cfg = {generator_cfg!r}
model = dict(
    backbone=dict(depth=18, base_channels=8, frozen_stages=-1, norm_eval=True,
                  zero_init_residual=False, init_cfg=None),
    neck=dict(in_channels=[8, 16, 32, 64], out_channels=32),
    rpn_head=dict(num_query={NUM_QUERY}, content_dim=32),
    roi_head=dict(
        num_stages=2, stage_loss_weights=[1.0, 1.0], content_dim=32,
        bbox_head=dict(num_classes=10, num_heads=4, feedforward_channels=64, content_dim=32,
                       feat_channels=32, in_points=4, out_points=6, n_groups=4)),
    test_cfg=dict(rcnn=dict(max_per_img={NUM_QUERY})))
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=(64, 64), keep_ratio=True),
    dict(type='PackDetInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(64, 64), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor'))
]
train_dataloader = dict(
    batch_size={batch_size}, num_workers=0, persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle={shuffle!r}),
    batch_sampler=None,
    dataset=dict(data_root=data_root, generator_cfg=generator_cfg, pipeline=train_pipeline))
test_dataloader = dict(
    batch_size=2, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, generator_cfg=generator_cfg, pipeline=test_pipeline))
test_evaluator = dict(type='CheckedCocoMetric',
                      ann_file=data_root + 'annotations/instances_val.json',
                      metric='bbox')
test_cfg = dict(type='TestLoop')
{val}
train_cfg = dict(type='ResumableEpochBasedTrainLoop', max_epochs={max_epochs}, val_interval=1)
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='SGD', lr=0.02, momentum=0.9, weight_decay=1e-4),
    clip_grad=dict(max_norm=1, norm_type=2))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.25, by_epoch=False, begin=0, end=3),
    dict(type='MultiStepLR', milestones=[1], gamma=0.5, by_epoch=True, begin=0, end=100)
]
auto_scale_lr = dict(enable=False, base_batch_size={batch_size})
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=1),
    checkpoint=dict(type='AtomicCheckpointHook', interval=1, max_keep_ckpts=-1))
log_processor = dict(window_size=1)
randomness = dict(seed=0, deterministic=True)
{extra}
"""
    with open(path, 'w') as f:
        f.write(text)
    return path


def subprocess_env(**extra) -> dict:
    """Environment for running the tools in a subprocess: one thread per process (the
    machine has 2 cores), this folder on PYTHONPATH (for the hooks below)."""
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join(
        [HERE, REPO] + [p for p in env.get('PYTHONPATH', '').split(os.pathsep) if p])
    env.update(OMP_NUM_THREADS='1', MKL_NUM_THREADS='1', PYTHONHASHSEED='0')
    env.update(extra)
    return env


# Environment for runs that must be on the CPU even where CUDA exists (comparisons of runs
# with different process counts, exact resume): ``subprocess_env(**CPU_ONLY)``.
CPU_ONLY = dict(CUDA_VISIBLE_DEVICES='')


def run_tool(args, cwd=REPO, timeout=300, env=None, check=True) -> subprocess.CompletedProcess:
    """Run ``args`` (``['tools/train.py', ...]`` or ``['bash', ...]``) in a subprocess."""
    if args[0].endswith('.py'):
        args = [PYTHON] + list(args)
    proc = subprocess.run(args, cwd=cwd, env=env or subprocess_env(), timeout=timeout,
                          capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f'{args} failed ({proc.returncode}):\n'
                             f'{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}')
    return proc


def load_script(relative_path: str):
    """A script of the repository (e.g. ``benchmarks/main_job.py``) imported as a module."""
    import importlib.util
    path = osp.join(REPO, relative_path)
    spec = importlib.util.spec_from_file_location(osp.splitext(osp.basename(path))[0], path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def read_jsonl(path: str) -> list:
    """The records of a JSON-lines file (one JSON object a line)."""
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def scalars(work_dir: str) -> list:
    """The records of the ``<timestamp>/vis_data/scalars.json`` files under ``work_dir``, oldest
    run first (a resumed run logs into a new timestamp folder of the same work dir)."""
    found = sorted(osp.join(root, 'scalars.json') for root, _, files in os.walk(work_dir)
                   if 'scalars.json' in files)
    assert found, f'no scalars.json under {work_dir}'
    return [record for path in found for record in read_jsonl(path)]


@HOOKS.register_module()
class RecordRankLossesHook(Hook):
    """Write every rank's own per-iteration losses to ``work_dir/losses_rank{r}.jsonl``.

    (mmengine logs rank 0's losses only; the distributed test needs every rank's.)
    """

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        from mmengine.dist import get_rank
        record = {k: float(v.detach()) for k, v in (outputs or {}).items()}
        record['iter'] = runner.iter
        record['img_ids'] = [s.img_id for s in data_batch['data_samples']]
        with open(osp.join(runner.work_dir, f'losses_rank{get_rank()}.jsonl'), 'a') as f:
            f.write(json.dumps(record) + '\n')


class Interrupted(RuntimeError):
    """Raised by :class:`InterruptAfterEpochHook`."""


@HOOKS.register_module()
class InterruptAfterEpochHook(Hook):
    """Stop training with :class:`Interrupted` after ``epoch`` epochs, once the checkpoint of
    that epoch is written (the lowest priority runs after ``CheckpointHook``): a crash."""

    priority = 'LOWEST'

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def after_train_epoch(self, runner) -> None:
        if runner.epoch + 1 == self.epoch:  # runner.epoch counts from 0 until the epoch ends
            raise Interrupted(f'interrupted after epoch {self.epoch}')


@HOOKS.register_module()
class InterruptAfterIterHook(Hook):
    """Stop training with :class:`Interrupted` after ``iters`` iterations (counted over the
    whole run), once the checkpoint hook has saved that iteration: a crash in mid-epoch."""

    priority = 'LOWEST'

    def __init__(self, iters: int) -> None:
        self.iters = iters

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        if runner.iter + 1 == self.iters:
            raise Interrupted(f'interrupted after iteration {self.iters}')


def _register_interrupted_save_hook():
    """``KilledDuringSaveCheckpointHook``: lors_det's checkpoint hook that dies between writing
    the checkpoint of ``kill_at_step`` and renaming it into place (a kill during a save)."""
    from lors_det.engine.hooks import AtomicCheckpointHook

    @HOOKS.register_module()
    class KilledDuringSaveCheckpointHook(AtomicCheckpointHook):

        def __init__(self, *args, kill_at_step: int, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self.kill_at_step = kill_at_step

        def _publish(self, tmp_path: str, final_path: str) -> None:
            if final_path.endswith(self.filename_tmpl.format(self.kill_at_step)):
                raise Interrupted(f'killed while saving {final_path} (written: {tmp_path})')
            super()._publish(tmp_path, final_path)


_register_interrupted_save_hook()
