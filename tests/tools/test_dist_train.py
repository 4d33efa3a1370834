"""``tools/dist_train.sh`` on CPU: 2 gloo ranks x batch 2 train exactly like 1 process x batch 4
(and ``tools/dist_test.sh`` evaluates like ``tools/test.py``).

Why the two runs must agree, and what is compared
-------------------------------------------------
Every AdaMixer loss term of stage ``s`` on rank ``r`` is a sum over that rank's images divided
by one shared normaliser: ``L_r = S_r / a`` with ``a = reduce_mean(num_pos) = (N_0 + N_1) / 2``
(``DIIHead.loss``: the focal, L1 and GIoU sums all use ``avg_factor=a``). The 1-process run on
the union of both ranks' images computes ``L = (S_0 + S_1) / (N_0 + N_1)``. Hence

    mean_r L_r = (S_0 + S_1) / (2 a) = L        (exactly, for every loss term and iteration)

and, DDP averaging gradients over ranks, ``mean_r grad L_r = grad mean_r L_r = grad L``: both
runs take the same SGD step (gradient clipping acts on that averaged gradient, weight decay and
momentum are linear), so the weights stay equal up to float rounding. Had the terms been
normalised by the *local* ``N_r`` instead, the rank mean would be a different weighting
(``(S_0/N_0 + S_1/N_1) / 2``) and the comparison would fail - the test checks the distributed
normaliser too. (``pos_acc`` is a local ratio, not a loss, and is not compared.)

Conditions that make the batches the same: ``DefaultSampler(shuffle=False)`` gives rank ``r``
dataset indices ``r, r + 2, ...``, so with per-rank batch 2 the ranks' iteration-``i`` batches
are the even and odd entries of the 1-process batch ``4i .. 4i + 3``; every image has the same
size (same padding); BN layers are in eval mode (``norm_eval=True``: no batch statistics, so no
SyncBN question); no dropout or random augmentation; both runs start from the same seed.

The test checks (1) the image ids of every iteration, (2) per-iteration losses: rank mean vs
1-process, (3) the 2-rank checkpoint (saved by rank 0, no ``module.`` prefix) loads strictly
into a model built in this process and equals the 1-process run's weights and SGD momentum,
(4) ``tools/dist_test.sh`` with 2 ranks gives the predictions and COCO AP of ``tools/test.py``.
"""
import json
import os
import os.path as osp
import pickle
import time

import pytest
import torch
from mmdet.registry import MODELS
from mmengine.config import Config
from mmengine.runner import load_checkpoint

from lors_det.datasets.digits import ensure_digits_dataset

from _tools_helpers import (CPU_ONLY, TINY_DIGITS, read_jsonl, free_port, run_tool, subprocess_env,
                            write_tiny_config)

EPOCHS = 2
# seed 5: the two ranks' images hold different numbers of objects in every iteration, so a
# rank-local normaliser would give different losses (checked in the test, not assumed)
DIGITS = dict(TINY_DIGITS, seed=5)
ITERS_PER_EPOCH = TINY_DIGITS['num_train'] // 4  # global batch 4
HOOKS = "custom_hooks = [dict(type='RecordRankLossesHook')]"


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp('dist_train')
    data_root = str(root / 'digits') + '/'
    ensure_digits_dataset(data_root, **DIGITS)  # once, before two ranks would race
    dist_cfg = write_tiny_config(str(root / 'tiny_2x2.py'), data_root, max_epochs=EPOCHS,
                                 batch_size=2, generator_cfg=DIGITS, extra=HOOKS)
    single_cfg = write_tiny_config(str(root / 'tiny_1x4.py'), data_root, max_epochs=EPOCHS,
                                   batch_size=4, generator_cfg=DIGITS, extra=HOOKS)
    dist_dir, single_dir = str(root / 'dist'), str(root / 'single')

    start = time.time()
    proc = run_tool(['bash', 'tools/dist_train.sh', dist_cfg, '2', '--work-dir', dist_dir],
                    env=subprocess_env(PORT=str(free_port()), **CPU_ONLY))
    dist_s = time.time() - start
    start = time.time()
    run_tool(['tools/train.py', single_cfg, '--work-dir', single_dir],
             env=subprocess_env(**CPU_ONLY))
    single_s = time.time() - start
    print(f'2-rank run {dist_s:.1f} s, 1-rank run {single_s:.1f} s')
    return dict(dist_dir=dist_dir, single_dir=single_dir, single_cfg=single_cfg, dist_cfg=dist_cfg,
                data_root=data_root, dist_log=proc.stdout + proc.stderr)


def test_two_gloo_ranks_ran(runs):
    assert sorted(f for f in os.listdir(runs['dist_dir']) if f.startswith('losses_rank')) == [
        'losses_rank0.jsonl', 'losses_rank1.jsonl']
    # the CPU adaptation (lors_det.compat.adapt_distributed_to_device) chose gloo
    assert "'backend': 'gloo'" in runs['dist_log'] or "backend='gloo'" in runs['dist_log']


def test_ranks_split_the_single_process_batches(runs):
    rank0, rank1 = (read_jsonl(osp.join(runs['dist_dir'], f'losses_rank{r}.jsonl'))
                    for r in (0, 1))
    single = read_jsonl(osp.join(runs['single_dir'], 'losses_rank0.jsonl'))
    n = EPOCHS * ITERS_PER_EPOCH
    assert [r['iter'] for r in rank0] == [r['iter'] for r in rank1] == \
        [r['iter'] for r in single] == list(range(n))
    for a, b, s in zip(rank0, rank1, single):
        assert len(s['img_ids']) == 4 and len(a['img_ids']) == len(b['img_ids']) == 2
        # DefaultSampler(shuffle=False): rank r takes every 2nd index starting at r
        assert a['img_ids'] == s['img_ids'][0::2]
        assert b['img_ids'] == s['img_ids'][1::2]
    # each epoch covers the whole dataset once
    first_epoch = [i for s in single[:ITERS_PER_EPOCH] for i in s['img_ids']]
    assert len(set(first_epoch)) == TINY_DIGITS['num_train']


def num_gt_per_image(data_root):
    with open(osp.join(data_root, 'annotations', 'instances_train.json')) as f:
        coco = json.load(f)
    counts = {img['id']: 0 for img in coco['images']}
    for ann in coco['annotations']:
        counts[ann['image_id']] += 1
    return counts


def test_rank_mean_loss_equals_single_process_loss(runs):
    rank0, rank1 = (read_jsonl(osp.join(runs['dist_dir'], f'losses_rank{r}.jsonl'))
                    for r in (0, 1))
    single = read_jsonl(osp.join(runs['single_dir'], 'losses_rank0.jsonl'))
    keys = sorted(k for k in single[0] if 'loss' in k)
    assert 'loss' in keys and 's1.loss_cls' in keys and 's1.loss_iou' in keys
    worst = 0.0
    for a, b, s in zip(rank0, rank1, single):
        for k in keys:
            mean = (a[k] + b[k]) / 2
            worst = max(worst, abs(mean - s[k]) / max(abs(s[k]), 1e-3))
            assert mean == pytest.approx(s[k], rel=1e-4, abs=1e-6), (s['iter'], k)
    print(f'largest relative difference of a per-iteration loss: {worst:.2e}')

    # Negative control. num_pos = number of gt boxes (one-to-one matching, 5 queries >= 3
    # objects). The ranks' counts differ, and normalising each rank's sum S_r = L_r * a by
    # its own N_r instead of a = mean(N_r) would not reproduce the 1-process loss.
    num_gt = num_gt_per_image(runs['data_root'])
    local_worst = 0.0
    for a, b, s in zip(rank0, rank1, single):
        n0, n1 = (sum(num_gt[i] for i in r['img_ids']) for r in (a, b))
        assert n0 != n1, 'choose data where the ranks hold different numbers of objects'
        avg = (n0 + n1) / 2
        for k in keys:
            local_mean = (a[k] * avg / n0 + b[k] * avg / n1) / 2
            local_worst = max(local_worst, abs(local_mean - s[k]) / abs(s[k]))
    print(f'rank-local normaliser would be off by up to {local_worst:.2e} (relative)')
    assert local_worst > 100 * max(worst, 1e-6)


def _max_weight_diff(state_dict, other) -> float:
    assert state_dict.keys() == other.keys()
    return max((state_dict[k].double() - v.double()).abs().max().item() for k, v in other.items())


def test_two_rank_checkpoint_loads_in_one_process_and_equals_single_run(runs):
    cfg = Config.fromfile(runs['single_cfg'])
    model = MODELS.build(cfg.model)
    dist_ckpt = osp.join(runs['dist_dir'], f'epoch_{EPOCHS}.pth')
    ckpt = load_checkpoint(model, dist_ckpt, map_location='cpu', strict=True)
    assert not any(k.startswith('module.') for k in ckpt['state_dict'])
    assert ckpt['meta']['iter'] == EPOCHS * ITERS_PER_EPOCH

    single = torch.load(osp.join(runs['single_dir'], f'epoch_{EPOCHS}.pth'), map_location='cpu')
    previous = torch.load(osp.join(runs['single_dir'], f'epoch_{EPOCHS - 1}.pth'),
                          map_location='cpu')
    diff = _max_weight_diff(model.state_dict(), single['state_dict'])
    # what the last epoch of training changed: the runs' disagreement must be far smaller
    moved = max((v.double() - previous['state_dict'][k].double()).abs().max().item()
                for k, v in single['state_dict'].items())
    print(f'weights: 2-rank vs 1-rank max abs diff {diff:.2e}; last epoch moved them '
          f'by up to {moved:.2e}')
    assert moved > 1e-3
    assert diff < 1e-5 and diff < 1e-3 * moved

    # SGD momentum buffers (rank 0's optimizer state) are the averaged gradients' history
    dist_state = ckpt['optimizer']['state']
    single_state = single['optimizer']['state']
    assert dist_state.keys() == single_state.keys() and len(single_state) > 0
    mom_diff = max((dist_state[i]['momentum_buffer'] - s['momentum_buffer']).abs().max().item()
                   for i, s in single_state.items())
    print(f'momentum buffers: max abs diff {mom_diff:.2e}')
    assert mom_diff < 1e-4


def _load_predictions(path):
    with open(path, 'rb') as f:
        return pickle.load(f)


def _copypaste_ap(output: str) -> list:
    lines = [line for line in output.splitlines() if 'bbox_mAP_copypaste:' in line]
    assert len(lines) == 1, output[-3000:]
    return [float(v) for v in lines[0].split('bbox_mAP_copypaste:')[1].split()]


def test_dist_test_matches_single_process_evaluation(runs, tmp_path):
    """``tools/dist_test.sh`` with 2 gloo ranks: each rank predicts half of the val images;
    mmengine gathers them in dataset order before CocoMetric, so the predictions and the AP
    must equal a 1-process ``tools/test.py`` of the same checkpoint."""
    ckpt = osp.join(runs['single_dir'], f'epoch_{EPOCHS}.pth')
    outs = {name: str(tmp_path / f'{name}.pkl') for name in ('dist', 'single')}
    dist = run_tool(['bash', 'tools/dist_test.sh', runs['single_cfg'], ckpt, '2',
                     '--work-dir', str(tmp_path / 'dist'), '--out', outs['dist']],
                    env=subprocess_env(PORT=str(free_port()), **CPU_ONLY))
    single = run_tool(['tools/test.py', runs['single_cfg'], ckpt, '--work-dir',
                       str(tmp_path / 'single'), '--out', outs['single']],
                      env=subprocess_env(**CPU_ONLY))

    dist_pred, single_pred = (_load_predictions(outs[n]) for n in ('dist', 'single'))
    num_val = TINY_DIGITS['num_val']
    assert len(dist_pred) == len(single_pred) == num_val
    assert [p['img_id'] for p in dist_pred] == [p['img_id'] for p in single_pred]
    for d, s in zip(dist_pred, single_pred):
        for key in ('bboxes', 'scores', 'labels'):
            torch.testing.assert_close(d['pred_instances'][key], s['pred_instances'][key],
                                       rtol=1e-5, atol=1e-4)
    ap_dist = _copypaste_ap(dist.stdout + dist.stderr)
    ap_single = _copypaste_ap(single.stdout + single.stderr)
    assert ap_dist == pytest.approx(ap_single, abs=1e-3)


def test_slurm_train_runs_two_ranks_like_dist_train(runs, tmp_path):
    """``tools/slurm_train.sh`` under a stand-in ``srun`` (tests/tools/fake_slurm/srun: starts
    --ntasks copies with srun's variables) trains 2 gloo ranks like ``dist_train.sh``."""
    work_dir, srun_log = str(tmp_path / 'slurm'), str(tmp_path / 'srun_args.txt')
    env = subprocess_env(**CPU_ONLY, GPUS='2', GPUS_PER_NODE='2', CPUS_PER_TASK='1',
                         MASTER_PORT=str(free_port()), FAKE_SRUN_LOG=srun_log)
    env['PATH'] = osp.join(osp.dirname(osp.abspath(__file__)), 'fake_slurm') + os.pathsep + \
        env['PATH']
    run_tool(['bash', 'tools/slurm_train.sh', 'cpu_partition', 'lors_det_test',
              runs['dist_cfg'], work_dir], env=env)

    with open(srun_log) as f:
        srun_args = f.read().split('\n')
    for expected in ('-p', 'cpu_partition', '--job-name=lors_det_test', '--ntasks=2',
                     '--ntasks-per-node=2', '--launcher=slurm', f'--work-dir={work_dir}',
                     runs['dist_cfg']):
        assert expected in srun_args, (expected, srun_args)
    assert sorted(f for f in os.listdir(work_dir) if f.startswith('losses_rank')) == [
        'losses_rank0.jsonl', 'losses_rank1.jsonl']
    slurm = torch.load(osp.join(work_dir, f'epoch_{EPOCHS}.pth'), map_location='cpu')
    torchrun = torch.load(osp.join(runs['dist_dir'], f'epoch_{EPOCHS}.pth'), map_location='cpu')
    diff = _max_weight_diff(slurm['state_dict'], torchrun['state_dict'])
    print(f'slurm vs torchrun 2-rank weights: max abs diff {diff:.2e}')
    assert diff < 1e-6
