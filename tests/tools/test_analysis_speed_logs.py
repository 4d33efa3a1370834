"""tools/analysis_tools/benchmark.py (what it counts, not how fast) and analyze_logs.py
(parsed series and iteration-time summaries against hand-written logs, the PNG it writes)."""
import json
import math

import matplotlib.image
import numpy as np
import pytest
import torch

from _analysis_helpers import load_tool, png_size
from _tools_helpers import write_tiny_config

benchmark = load_tool('benchmark')
analyze_logs = load_tool('analyze_logs')


@pytest.fixture
def restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope='module')
def tiny_cfg_path(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('bench')
    return write_tiny_config(str(tmp / 'tiny.py'), str(tmp / 'data') + '/')


def _check_consistent(result):
    assert result['fps'] == result['img_per_s']
    assert math.isclose(result['ms_per_img'] * result['img_per_s'], 1000.0, rel_tol=1e-9)
    assert math.isclose(result['ms_per_iter'] * result['num_iters'],
                        result['ms_per_img'] * result['num_images'], rel_tol=1e-9)
    assert math.isclose(result['total_s'] * 1000.0, result['ms_per_iter'] * result['num_iters'],
                        rel_tol=1e-9)
    assert result['total_s'] > 0 and result['median_ms_per_iter'] > 0


def test_benchmark_synthetic_counts(tiny_cfg_path, tmp_path, capsys, restore_threads):
    out = tmp_path / 'bench.json'
    result = benchmark.main([tiny_cfg_path, '--shape', '48', '64', '--batch-size', '2',
                             '--num-iters', '3', '--warmup', '1', '--threads', '1',
                             '--device', 'cpu', '--out-json', str(out)])
    assert json.loads(out.read_text()) == result
    assert result['num_iters'] == 3 and result['batch_size'] == 2
    assert result['num_images'] == result['num_iters'] * result['batch_size'] == 6
    assert result['threads'] == 1 and result['warmup'] == 1 and result['shape'] == [48, 64]
    _check_consistent(result)
    printed = capsys.readouterr().out
    assert f'Overall fps: {result["fps"]:.3f} img / s' in printed
    assert '1 warm-up + 3 timed iterations (6 images)' in printed


def test_benchmark_dataset_counts_the_real_batches(tiny_cfg_path, restore_threads):
    # 4 val images in batches of 3: [3, 1, 3, 1, ...]; warm-up takes the first, then 1 + 3 + 1
    result = benchmark.main([tiny_cfg_path, '--dataset', '--batch-size', '3', '--num-iters',
                             '3', '--warmup', '1', '--threads', '1', '--device', 'cpu'])
    assert result['input'] == 'test_dataloader' and result['shape'] is None
    assert result['num_iters'] == 3 and result['num_images'] == 5
    assert result['batch_size'] == 3
    _check_consistent(result)
    # the config's batch size (2): 2 + 2 + 2
    result = benchmark.main([tiny_cfg_path, '--dataset', '--num-iters', '3', '--warmup', '0',
                             '--threads', '1', '--device', 'cpu'])
    assert result['batch_size'] == 2 and result['num_images'] == 6


def test_benchmark_rejects_bad_arguments(tiny_cfg_path):
    for argv in (['--num-iters', '0'], ['--warmup', '-1'], ['--shape', '0', '5']):
        with pytest.raises(SystemExit):
            benchmark.parse_args([tiny_cfg_path] + argv)


# A hand-written scalars.json: 6 iterations per epoch, logged every 2, validation each epoch.
TRAIN = [
    dict(lr=1e-4, data_time=0.01, loss=3.0, loss_cls=1.5, time=1.2, epoch=1, iter=2, step=2),
    dict(lr=1e-4, data_time=0.01, loss=2.5, loss_cls=1.2, time=0.5, epoch=1, iter=4, step=4),
    dict(lr=1e-4, data_time=0.01, loss=2.0, loss_cls=1.0, time=0.4, epoch=1, iter=6, step=6),
    dict(lr=1e-5, data_time=0.01, loss=1.8, loss_cls=0.9, time=0.8, epoch=2, iter=2, step=8),
    dict(lr=1e-5, data_time=0.01, loss=1.5, loss_cls=0.7, time=0.7, epoch=2, iter=4, step=10),
    dict(lr=1e-5, data_time=0.01, loss=1.2, loss_cls=0.6, time=0.3, epoch=2, iter=6, step=12),
]
VAL = [
    {'coco/bbox_mAP': 0.1, 'coco/bbox_mAP_50': 0.2, 'data_time': 0.02, 'time': 0.05, 'step': 1},
    {'coco/bbox_mAP': 0.25, 'coco/bbox_mAP_50': 0.4, 'data_time': 0.02, 'time': 0.04, 'step': 2},
]


@pytest.fixture
def log_path(tmp_path):
    path = tmp_path / 'run1' / '20240101_000000' / 'vis_data' / 'scalars.json'
    path.parent.mkdir(parents=True)
    lines = [TRAIN[0], TRAIN[1], TRAIN[2], VAL[0], TRAIN[3], TRAIN[4], TRAIN[5], VAL[1]]
    path.write_text(''.join(json.dumps(r) + '\n' for r in lines) + '\n')
    return str(path)


def test_series_are_the_logged_values(log_path):
    train, val = analyze_logs.load_scalars(log_path)
    assert train == TRAIN and val == VAL
    x, y, label = analyze_logs.series(train, val, 'loss')
    assert label == 'iter'
    np.testing.assert_array_equal(x, [2, 4, 6, 8, 10, 12])
    np.testing.assert_array_equal(y, [3.0, 2.5, 2.0, 1.8, 1.5, 1.2])
    x, y, label = analyze_logs.series(train, val, 'coco/bbox_mAP')
    assert label == 'epoch'
    np.testing.assert_array_equal(x, [1, 2])
    np.testing.assert_array_equal(y, [0.1, 0.25])
    # a key in both kinds of record ('time') is the train one
    x, y, label = analyze_logs.series(train, val, 'time')
    assert label == 'iter' and list(y) == [1.2, 0.5, 0.4, 0.8, 0.7, 0.3]


def test_missing_key_names_key_log_and_available_keys(log_path):
    train, val = analyze_logs.load_scalars(log_path)
    with pytest.raises(KeyError) as err:
        analyze_logs.series(train, val, 'loss_bbox', log_path)
    message = str(err.value)
    assert "'loss_bbox'" in message and log_path in message
    assert 'loss_cls' in message and 'coco/bbox_mAP_50' in message
    with pytest.raises(KeyError, match='loss_bbox'):
        analyze_logs.main(['plot_curve', log_path, '--keys', 'loss', 'loss_bbox', '--out',
                           str(log_path) + '.png'])


def test_bad_line_is_reported_with_its_number(tmp_path):
    path = tmp_path / 'scalars.json'
    path.write_text(json.dumps(TRAIN[0]) + '\n{"loss": 1.0,\n')
    with pytest.raises(ValueError, match=r'line 2'):
        analyze_logs.load_scalars(str(path))


def test_plot_curve_png(log_path, tmp_path):
    other = tmp_path / 'run2' / 'scalars.json'
    other.parent.mkdir()
    other.write_text(''.join(json.dumps(dict(r, loss=r['loss'] / 2) if 'loss' in r else r) + '\n'
                             for r in TRAIN + VAL))
    out = tmp_path / 'plots' / 'curve.png'
    data = analyze_logs.main(['plot_curve', log_path, str(other), '--keys', 'loss', 'loss_cls',
                              'coco/bbox_mAP', '--out', str(out), '--width', '4', '--height',
                              '2', '--dpi', '50', '--title', 'runs'])
    # 4 in x 50 dpi wide; 3 panels of 2 in x 50 dpi
    assert png_size(str(out)) == (200, 300)
    pixels = matplotlib.image.imread(str(out))
    assert pixels.shape[:2] == (300, 200) and pixels[..., :3].min() < 0.5  # not blank
    np.testing.assert_array_equal(data[str(other), 'loss'][1], [1.5, 1.25, 1.0, 0.9, 0.75, 0.6])
    np.testing.assert_array_equal(data[log_path, 'coco/bbox_mAP'][0], [1, 2])


def test_cal_train_time_against_hand_computation(log_path, capsys):
    # first record of each epoch left out: epoch 1 (0.5, 0.4), epoch 2 (0.7, 0.3); the val
    # records' time (0.05, 0.04) never counts
    summary = analyze_logs.cal_train_time(log_path)
    assert summary['epoch_mean_time'] == pytest.approx({1: 0.45, 2: 0.5})
    assert (summary['slowest_epoch'], summary['fastest_epoch']) == (2, 1)
    assert summary['slowest_epoch_time'] == pytest.approx(0.5)
    assert summary['fastest_epoch_time'] == pytest.approx(0.45)
    assert summary['epoch_time_std'] == pytest.approx(0.025)
    assert summary['mean_iter_time'] == pytest.approx((0.5 + 0.4 + 0.7 + 0.3) / 4)
    assert summary['slowest_iter_time'] == pytest.approx(0.7)
    assert summary['fastest_iter_time'] == pytest.approx(0.3)
    assert summary['num_records'] == 4

    full = analyze_logs.main(['cal_train_time', log_path, '--include-outliers'])[0]
    assert full['epoch_mean_time'] == pytest.approx({1: 0.7, 2: 0.6})
    assert (full['slowest_epoch'], full['fastest_epoch']) == (1, 2)
    assert full['epoch_time_std'] == pytest.approx(0.05)
    assert full['mean_iter_time'] == pytest.approx(3.9 / 6)
    assert (full['slowest_iter_time'], full['fastest_iter_time']) == (1.2, 0.3)
    printed = capsys.readouterr().out
    assert 'slowest epoch 1, average time is 0.7000 s/iter' in printed
    assert 'average iter time: 0.6500 s/iter' in printed
