"""``tools/train.py --resume`` after a crash continues exactly where the run stopped.

Three runs of ``tools/train.py`` in subprocesses, as a user runs them, on the tiny digits config
(3 epochs x 2 iterations, deterministic: no shuffling, augmentation or dropout, fixed seed):

* ``full``: 3 epochs uninterrupted;
* ``crashed``: the same config plus ``InterruptAfterEpochHook(epoch=1)``, which raises after
  the epoch-1 checkpoint is written (the process exits with an error);
* ``resumed``: ``--resume`` (no path: the latest checkpoint of the work dir) in the crashed
  run's work dir with the original config, training epochs 2 and 3.

The schedule makes a resumed run depend on every piece of restored state: the iteration-based
linear warmup ends in the 2nd epoch (iterations 0-3), so the LinearLR state must come back; the
epoch-based MultiStepLR halves the lr at epochs 1 and 2, one milestone before and one after the
crash; SGD momentum carries the gradient history; the message hub carries the iteration count.

Loading the checkpoints (``Runner.resume`` and this test) goes through torch >= 2.6's
``weights_only`` ``torch.load``, i.e. the lors_det allow-list (``lors_det/compat.py``).
"""
import os
import os.path as osp

import numpy as np
import pytest
import torch

from lors_det.datasets.digits import ensure_digits_dataset

from _tools_helpers import (CPU_ONLY, TINY_DIGITS, read_jsonl, run_tool, scalars, subprocess_env,
                            write_tiny_config)

EPOCHS = 3
CRASH_AFTER = 1
ITERS_PER_EPOCH = TINY_DIGITS['num_train'] // 4
SCHEDULE = """
custom_hooks = [dict(type='RecordRankLossesHook')]
param_scheduler = [
    dict(type='LinearLR', start_factor=0.25, by_epoch=False, begin=0, end=4),
    dict(type='MultiStepLR', milestones=[1, 2], gamma=0.5, by_epoch=True, begin=0, end=100)
]
"""
CRASH = f"""
custom_hooks = [dict(type='RecordRankLossesHook'),
                dict(type='InterruptAfterEpochHook', epoch={CRASH_AFTER})]
"""


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp('resume')
    data_root = str(root / 'digits') + '/'
    ensure_digits_dataset(data_root, **TINY_DIGITS)
    cfg = write_tiny_config(str(root / 'tiny.py'), data_root, max_epochs=EPOCHS, extra=SCHEDULE)
    crash_cfg = str(root / 'tiny_crash.py')
    with open(crash_cfg, 'w') as f:
        f.write(f"_base_ = [{cfg!r}]\n{CRASH}")
    full_dir, crash_dir = str(root / 'full'), str(root / 'crash')

    env = subprocess_env(**CPU_ONLY)  # bit-exact repeatability: CPU kernels
    run_tool(['tools/train.py', cfg, '--work-dir', full_dir], env=env)
    crashed = run_tool(['tools/train.py', crash_cfg, '--work-dir', crash_dir], env=env,
                       check=False)
    crash_files = sorted(os.listdir(crash_dir))
    resumed = run_tool(['tools/train.py', cfg, '--work-dir', crash_dir, '--resume'], env=env)
    return dict(full_dir=full_dir, crash_dir=crash_dir, crashed=crashed,
                crash_files=crash_files, resumed_log=resumed.stdout + resumed.stderr)


def load(work_dir, epoch):
    # weights_only load (the torch >= 2.6 default) relies on the lors_det allow-list
    return torch.load(osp.join(work_dir, f'epoch_{epoch}.pth'), map_location='cpu',
                      weights_only=True)


def test_crash_then_resume_from_latest_checkpoint(runs):
    crashed = runs['crashed']
    assert crashed.returncode != 0
    assert f'Interrupted: interrupted after epoch {CRASH_AFTER}' in crashed.stderr
    ckpts = [f for f in runs['crash_files'] if f.endswith('.pth')]
    assert ckpts == [f'epoch_{CRASH_AFTER}.pth']
    # Runner.resume logs where it continues
    assert f'resumed epoch: {CRASH_AFTER}, iter: {CRASH_AFTER * ITERS_PER_EPOCH}' in \
        runs['resumed_log']


def test_resumed_iterations_losses_and_lrs_equal_uninterrupted(runs):
    full = read_jsonl(osp.join(runs['full_dir'], 'losses_rank0.jsonl'))
    split = read_jsonl(osp.join(runs['crash_dir'], 'losses_rank0.jsonl'))
    n = EPOCHS * ITERS_PER_EPOCH
    assert [r['iter'] for r in full] == [r['iter'] for r in split] == list(range(n))
    for a, b in zip(full, split):
        assert a['img_ids'] == b['img_ids']
        for k in a:
            if 'loss' in k:
                assert b[k] == pytest.approx(a[k], rel=1e-6, abs=1e-7), (a['iter'], k)
    # the lr of every iteration, logged by LoggerHook (train records only: they have 'lr')
    lrs = {work_dir: {rec['iter']: rec['lr'] for rec in scalars(work_dir) if 'lr' in rec}
           for work_dir in (runs['full_dir'], runs['crash_dir'])}
    # LoggerHook's 'iter' counts from 1. LinearLR(begin=0, end=4) goes 0.25 -> 1 in 3 steps
    # (iterations 0-3), MultiStepLR halves at epochs 1 and 2
    base = 0.02
    expected = [base * (0.25 + 0.75 * min(i, 3) / 3) * 0.5 ** (i // ITERS_PER_EPOCH)
                for i in range(n)]
    for work_dir in lrs:
        got = [lrs[work_dir][i + 1] for i in range(n)]
        np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_resumed_final_state_equals_uninterrupted(runs):
    full, resumed = load(runs['full_dir'], EPOCHS), load(runs['crash_dir'], EPOCHS)
    before_crash = load(runs['crash_dir'], CRASH_AFTER)

    sd_full, sd_res = full['state_dict'], resumed['state_dict']
    assert sd_full.keys() == sd_res.keys()
    diff = max((sd_full[k].double() - sd_res[k].double()).abs().max().item() for k in sd_full)
    moved = max((sd_full[k].double() - before_crash['state_dict'][k].double()).abs().max().item()
                for k in sd_full)
    print(f'final weights: resumed vs uninterrupted max abs diff {diff:.2e}; '
          f'training after the crash moved them by up to {moved:.2e}')
    assert moved > 1e-3 and diff <= 1e-6

    # optimizer: SGD momentum buffers and the param groups' lr
    opt_full, opt_res = full['optimizer'], resumed['optimizer']
    assert opt_full['state'].keys() == opt_res['state'].keys() and len(opt_full['state']) > 0
    mom = max((opt_full['state'][i]['momentum_buffer'] -
               opt_res['state'][i]['momentum_buffer']).abs().max().item()
              for i in opt_full['state'])
    print(f'momentum buffers: max abs diff {mom:.2e}')
    assert mom <= 1e-6
    for g_full, g_res in zip(opt_full['param_groups'], opt_res['param_groups']):
        assert g_res['lr'] == pytest.approx(g_full['lr'], rel=1e-9)
        assert g_res['initial_lr'] == g_full['initial_lr']

    # lr schedulers: every field of their state (last_step, milestones, _last_lr, ...)
    assert len(full['param_schedulers']) == len(resumed['param_schedulers']) == 2
    for s_full, s_res in zip(full['param_schedulers'], resumed['param_schedulers']):
        assert s_full.keys() == s_res.keys()
        for k in s_full:
            assert s_res[k] == s_full[k], k
    # steps taken: one per iteration (LinearLR) and one per epoch (MultiStepLR)
    assert [s['_global_step'] for s in full['param_schedulers']] == [
        EPOCHS * ITERS_PER_EPOCH, EPOCHS]

    # message hub and checkpoint meta: the iteration / epoch counters
    info_full = full['message_hub']['runtime_info']
    info_res = resumed['message_hub']['runtime_info']
    for k in ('iter', 'epoch', 'max_iters', 'max_epochs'):
        assert info_res[k] == info_full[k], k
    assert info_full['iter'] == EPOCHS * ITERS_PER_EPOCH - 1  # the last iteration's index
    assert resumed['meta']['epoch'] == full['meta']['epoch'] == EPOCHS
    assert resumed['meta']['iter'] == full['meta']['iter'] == EPOCHS * ITERS_PER_EPOCH
    # the logged training losses restored into the message hub before the crash come back
    hub_full, hub_res = full['message_hub']['log_scalars'], resumed['message_hub']['log_scalars']
    for k in hub_full:
        if 'loss' in k:
            np.testing.assert_allclose(hub_res[k].data[0], hub_full[k].data[0], rtol=1e-6)


# --- kills at the awkward moments: mid-epoch, during a save, a truncated last checkpoint -------

MID_EPOCH_KILL = 3  # after iteration 3: the first batch of epoch 2 is done, the second is not
ITER_CKPTS = "default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook', by_epoch=False, " \
    "interval=1, max_keep_ckpts=2))"
KEEP_ONE = "default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook', interval=1, " \
    "max_keep_ckpts=1))"


def _with(cfg: str, path: str, text: str) -> str:
    with open(path, 'w') as f:
        f.write(f"_base_ = [{cfg!r}]\n{text}\n")
    return path


@pytest.fixture(scope='module')
def hard_kills(runs, tmp_path_factory):
    root = tmp_path_factory.mktemp('kills')
    cfg = osp.join(osp.dirname(runs['full_dir']), 'tiny.py')
    env = subprocess_env(**CPU_ONLY)
    out = {}

    # a kill in mid-epoch, resumed from the iteration checkpoint iter_3.pth
    mid_cfg = _with(cfg, str(root / 'mid.py'), ITER_CKPTS)
    mid_crash = _with(mid_cfg, str(root / 'mid_crash.py'), f"""custom_hooks = [
    dict(type='RecordRankLossesHook'),
    dict(type='InterruptAfterIterHook', iters={MID_EPOCH_KILL})]""")
    mid_dir = str(root / 'mid')
    crashed = run_tool(['tools/train.py', mid_crash, '--work-dir', mid_dir], env=env, check=False)
    resumed = run_tool(['tools/train.py', mid_cfg, '--work-dir', mid_dir, '--resume'], env=env)
    out['mid'] = dict(dir=mid_dir, crashed=crashed, log=resumed.stdout + resumed.stderr,
                      final=f'iter_{EPOCHS * ITERS_PER_EPOCH}.pth')

    # killed between writing epoch 2's checkpoint and renaming it (max_keep_ckpts=1)
    keep_one = _with(cfg, str(root / 'keep_one.py'), KEEP_ONE)
    save_crash = _with(cfg, str(root / 'save_crash.py'), "default_hooks = dict(checkpoint=dict("
                       "type='KilledDuringSaveCheckpointHook', interval=1, max_keep_ckpts=1, "
                       "kill_at_step=2))")
    save_dir = str(root / 'save')
    crashed = run_tool(['tools/train.py', save_crash, '--work-dir', save_dir], env=env,
                       check=False)
    files = sorted(os.listdir(save_dir))
    with open(osp.join(save_dir, 'last_checkpoint')) as f:
        recorded = f.read().strip()
    resumed = run_tool(['tools/train.py', keep_one, '--work-dir', save_dir, '--resume'], env=env)
    out['save'] = dict(dir=save_dir, crashed=crashed, files=files, recorded=recorded,
                       log=resumed.stdout + resumed.stderr, final=f'epoch_{EPOCHS}.pth')

    # the last checkpoint is truncated (disk full, copy cut short): resume from the one before
    trunc_crash = _with(cfg, str(root / 'trunc_crash.py'), """custom_hooks = [
    dict(type='RecordRankLossesHook'), dict(type='InterruptAfterEpochHook', epoch=2)]""")
    trunc_dir = str(root / 'trunc')
    run_tool(['tools/train.py', trunc_crash, '--work-dir', trunc_dir], env=env, check=False)
    last = osp.join(trunc_dir, 'epoch_2.pth')
    with open(last, 'rb') as f:
        data = f.read()
    with open(last, 'wb') as f:
        f.write(data[:len(data) // 3])
    resumed = run_tool(['tools/train.py', cfg, '--work-dir', trunc_dir, '--resume'], env=env)
    out['trunc'] = dict(dir=trunc_dir, log=resumed.stdout + resumed.stderr, truncated=last,
                        final=f'epoch_{EPOCHS}.pth')
    return out


def assert_trains_like_uninterrupted(full_dir: str, work_dir: str, final: str) -> None:
    """Per-iteration losses and images (the last record of an iteration trained twice) and the
    final weights and momentum equal those of the uninterrupted run."""
    full = read_jsonl(osp.join(full_dir, 'losses_rank0.jsonl'))
    last_of_iter = {r['iter']: r for r in read_jsonl(osp.join(work_dir, 'losses_rank0.jsonl'))}
    assert sorted(last_of_iter) == [r['iter'] for r in full] == list(range(EPOCHS *
                                                                          ITERS_PER_EPOCH))
    for a in full:
        b = last_of_iter[a['iter']]
        assert a['img_ids'] == b['img_ids'], a['iter']
        for k in a:
            if 'loss' in k:
                assert b[k] == pytest.approx(a[k], rel=1e-6, abs=1e-7), (a['iter'], k)
    ref = load(full_dir, EPOCHS)
    got = torch.load(osp.join(work_dir, final), map_location='cpu', weights_only=True)
    diff = max((ref['state_dict'][k].double() - got['state_dict'][k].double()).abs().max().item()
               for k in ref['state_dict'])
    mom = max((ref['optimizer']['state'][i]['momentum_buffer'] -
               got['optimizer']['state'][i]['momentum_buffer']).abs().max().item()
              for i in ref['optimizer']['state'])
    assert diff <= 1e-6 and mom <= 1e-6, (diff, mom)
    assert got['meta']['iter'] == EPOCHS * ITERS_PER_EPOCH


def test_mid_epoch_kill_resumes_at_the_next_batch(runs, hard_kills):
    mid = hard_kills['mid']
    assert f'interrupted after iteration {MID_EPOCH_KILL}' in mid['crashed'].stderr
    assert f'resumed epoch: 1, iter: {MID_EPOCH_KILL}' in mid['log']
    assert 'resuming epoch 2 after its first 1 batches' in mid['log']
    # each iteration trained exactly once: no batch twice, none skipped, no extra iterations
    iters = [r['iter'] for r in read_jsonl(osp.join(mid['dir'], 'losses_rank0.jsonl'))]
    assert iters == list(range(EPOCHS * ITERS_PER_EPOCH))
    assert_trains_like_uninterrupted(runs['full_dir'], mid['dir'], mid['final'])


def test_kill_during_save_keeps_the_previous_checkpoint(runs, hard_kills):
    save = hard_kills['save']
    assert 'killed while saving' in save['crashed'].stderr
    # the previous checkpoint survived (mmengine deletes it before writing the next one), the
    # record points at it, and the half-done save is only a temporary file
    assert 'epoch_1.pth' in save['files'] and 'epoch_2.pth' not in save['files']
    assert '.epoch_2.pth.tmp' in save['files']
    assert save['recorded'].endswith('epoch_1.pth')
    assert 'resumed epoch: 1' in save['log']
    assert_trains_like_uninterrupted(runs['full_dir'], save['dir'], save['final'])
    # max_keep_ckpts=1 still holds once the run is done
    assert sorted(f for f in os.listdir(save['dir']) if f.startswith('epoch_')) == \
        [f'epoch_{EPOCHS}.pth']


def test_truncated_last_checkpoint_falls_back_to_the_newest_intact_one(runs, hard_kills):
    trunc = hard_kills['trunc']
    warning = [line for line in trunc['log'].splitlines() if 'newest intact checkpoint' in line]
    assert warning, trunc['log'][-3000:]
    assert trunc['truncated'] in warning[0]
    assert osp.join(trunc['dir'], 'epoch_1.pth') in warning[0]
    assert 'resumed epoch: 1' in trunc['log']
    assert_trains_like_uninterrupted(runs['full_dir'], trunc['dir'], trunc['final'])
