"""benchmarks/main_job.py turns mmengine's scalars.json into the README's numbers."""
import json
import os.path as osp

import pytest

from _tools_helpers import REPO, load_script


def test_summary_of_a_logged_run(tmp_path):
    main_job = load_script('benchmarks/main_job.py')
    vis = tmp_path / '20261202_000000' / 'vis_data'
    vis.mkdir(parents=True)
    records = [dict(loss=3.0, time=0.5, data_time=0.01, iter=1),
               dict(loss=2.0, time=0.3, data_time=0.02, iter=2),
               {'coco/bbox_mAP': 0.1, 'coco/bbox_mAP_50': 0.3, 'coco/bbox_mAP_75': 0.05,
                'step': 1},
               dict(loss=1.0, time=0.4, data_time=0.03, iter=3),
               {'coco/bbox_mAP': 0.25, 'coco/bbox_mAP_50': 0.5, 'coco/bbox_mAP_75': 0.2,
                'step': 2}]
    (vis / 'scalars.json').write_text('\n'.join(json.dumps(r) for r in records) + '\n')
    summary = main_job.summarize(main_job.read_scalars(str(tmp_path)))
    assert summary['iterations'] == 3
    assert summary['sec_per_iter_mean'] == pytest.approx(0.4)
    assert summary['sec_per_iter_median'] == pytest.approx(0.4)
    assert summary['train_seconds'] == pytest.approx(1.2)
    assert summary['data_time_median'] == pytest.approx(0.02)
    assert summary['ap_per_epoch'] == [0.1, 0.25]
    assert (summary['bbox_mAP'], summary['bbox_mAP_50'], summary['bbox_mAP_75']) == \
        (0.25, 0.5, 0.2)
    with pytest.raises(FileNotFoundError, match='no scalars.json'):
        main_job.read_scalars(str(tmp_path / 'empty'))


def test_committed_result_is_a_complete_run():
    """docs/results/main_job.json, which the README quotes, is the output of a full run."""
    with open(osp.join(REPO, 'docs', 'results', 'main_job.json')) as f:
        result = json.load(f)
    assert result['iterations'] == 1800 and len(result['ap_per_epoch']) == 12
    assert result['bbox_mAP'] == result['ap_per_epoch'][-1]
    assert result['train_seconds'] == pytest.approx(
        result['sec_per_iter_mean'] * result['iterations'])
    assert result['wall_seconds'] > result['train_seconds']
