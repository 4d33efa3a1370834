"""Detection pictures (tools/analysis_tools/image_demo.py, tools/test.py --show-dir) and
analyze_logs.py on a real mmengine log, from one tiny training run (1 epoch = 2 iterations,
validated), whose checkpoint is then edited so that the predictions are known exactly:
zero box deltas (the boxes are the initial query boxes, set here) and zero cls weights with
class-0 bias 2 (every query scores sigmoid(2) = 0.881 for class 0, ~0 for the rest)."""
import json
import math
import os
import os.path as osp

import mmcv
import numpy as np
import pytest
import torch

from _analysis_helpers import TINY, load_tool
from _tools_helpers import TINY_DIGITS, run_tool, scalars, write_tiny_config

from lors_det.datasets.digits import img_dir_of

image_demo = load_tool('image_demo')
analyze_logs = load_tool('analyze_logs')

IMG_W, IMG_H = 240, 160
BOX_A, BOX_B = (20, 20, 120, 100), (140, 60, 220, 140)  # x1, y1, x2, y2 in image pixels
QUERY_BOXES = [BOX_A] * 3 + [BOX_B] * 2
SCORE = 1 / (1 + math.exp(-2.0))


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('trained')
    data_root = str(tmp / 'data') + '/'
    cfg = write_tiny_config(str(tmp / 'tiny.py'), data_root, validate=True)
    work_dir = str(tmp / 'work')
    run_tool(['tools/train.py', cfg, '--work-dir', work_dir])

    ckpt = torch.load(osp.join(work_dir, 'epoch_1.pth'), map_location='cpu', weights_only=False)
    state = ckpt['state_dict']
    cxcywh = [[(x1 + x2) / 2 / IMG_W, (y1 + y2) / 2 / IMG_H, (x2 - x1) / IMG_W,
               (y2 - y1) / IMG_H] for x1, y1, x2, y2 in QUERY_BOXES]
    state['rpn_head.init_proposal_bboxes.weight'] = torch.tensor(cxcywh)
    for i in range(TINY['stages']):
        head = f'roi_head.bbox_head.{i}.'
        for name in ('fc_reg.weight', 'fc_reg.bias', 'fc_cls.weight'):
            state[head + name] = torch.zeros_like(state[head + name])
        bias = torch.full((TINY['classes'],), -10.0)
        bias[0] = 2.0
        state[head + 'fc_cls.bias'] = bias
    controlled = str(tmp / 'controlled.pth')
    torch.save(dict(meta=ckpt['meta'], state_dict=state), controlled)
    return dict(cfg=cfg, work_dir=work_dir, data_root=data_root, ckpt=controlled, tmp=tmp)


@pytest.fixture(scope='module')
def image_path(trained):
    """A smooth RGB gradient with a few stripes, as a (lossless) PNG."""
    yy, xx = np.mgrid[0:IMG_H, 0:IMG_W]
    img = np.stack([40 + xx * 0.5, 60 + yy * 0.6, 90 + (xx + yy) % 32 * 2], -1).astype(np.uint8)
    path = str(trained['tmp'] / 'scene.png')
    mmcv.imwrite(img, path)
    return path


def _run_demo(trained, image_path, thr, name):
    out_dir = str(trained['tmp'] / name)
    written = image_demo.main([image_path, trained['cfg'], trained['ckpt'], '--out-dir',
                               out_dir, '--score-thr', str(thr)])
    assert written == [osp.join(out_dir, 'vis', 'scene.png')]
    with open(osp.join(out_dir, 'preds', 'scene.json')) as f:
        preds = json.load(f)
    return mmcv.imread(written[0]), preds


def test_image_demo_draws_exactly_the_boxes_above_the_threshold(trained, image_path):
    source = mmcv.imread(image_path)
    above, preds = _run_demo(trained, image_path, 0.5, 'demo_05')
    # the predictions are the edited checkpoint's: 5 queries, class 0, boxes as set
    assert preds['labels'] == [0] * 5 and preds['classes'][0] == '0'
    np.testing.assert_allclose(preds['scores'], [SCORE] * 5, rtol=1e-5)
    np.testing.assert_allclose(sorted(preds['bboxes']), sorted(map(list, QUERY_BOXES)),
                               atol=0.05)

    assert above.shape == source.shape == (IMG_H, IMG_W, 3)
    changed = np.any(above != source, axis=-1)
    near_boxes = np.zeros_like(changed)
    for x1, y1, x2, y2 in (BOX_A, BOX_B):
        near_boxes[max(y1 - 4, 0):y2 + 5, max(x1 - 4, 0):x2 + 5] = True
        # the edges are drawn ...
        for edge in (changed[y1, x1 + 8:x2 - 8], changed[y2, x1 + 8:x2 - 8],
                     changed[y1 + 8:y2 - 8, x1], changed[y1 + 8:y2 - 8, x2]):
            assert edge.mean() > 0.9
        # ... the interior below the label is not filled
        assert not changed[(y1 + y2) // 2:y2 - 4, (x1 + x2) // 2:x2 - 4].any()
    assert changed.any() and not (changed & ~near_boxes).any()

    # above every score: the very same pixels (the predictions are still listed)
    none, preds = _run_demo(trained, image_path, 0.9, 'demo_09')
    np.testing.assert_array_equal(none, source)
    assert len(preds['scores']) == 5


def test_image_demo_folder_and_errors(trained, image_path, tmp_path):
    folder = tmp_path / 'imgs'
    folder.mkdir()
    mmcv.imwrite(mmcv.imread(image_path), str(folder / 'b.png'))
    mmcv.imwrite(mmcv.imread(image_path)[:100, :150], str(folder / 'a.png'))
    (folder / 'notes.txt').write_text('not an image')
    out_dir = tmp_path / 'out'
    written = image_demo.main([str(folder), trained['cfg'], trained['ckpt'], '--out-dir',
                               str(out_dir), '--score-thr', '0.5'])
    assert [osp.basename(p) for p in written] == ['a.png', 'b.png']
    assert mmcv.imread(written[0]).shape == (100, 150, 3)
    with pytest.raises(FileNotFoundError, match='no images'):
        image_demo.main([str(tmp_path / 'out' / 'preds'), trained['cfg'], trained['ckpt']])
    with pytest.raises(FileNotFoundError, match='missing.pth'):
        image_demo.main([image_path, trained['cfg'], str(tmp_path / 'missing.pth')])


def test_test_py_show_dir_writes_one_picture_per_test_image(trained):
    work_dir = str(trained['tmp'] / 'test_work')
    run_tool(['tools/test.py', trained['cfg'], trained['ckpt'], '--work-dir', work_dir,
              '--show-dir', 'pictures'])
    found = [osp.join(root, name) for root, _, names in os.walk(work_dir)
             if osp.basename(root) == 'pictures' for name in names]
    with open(osp.join(trained['data_root'], 'annotations', 'instances_val.json')) as f:
        images = json.load(f)['images']
    assert sorted(osp.basename(p) for p in found) == sorted(
        osp.basename(i['file_name']) for i in images)
    assert len(found) == TINY_DIGITS['num_val']
    by_name = {osp.basename(p): p for p in found}
    for info in images:
        picture = mmcv.imread(by_name[osp.basename(info['file_name'])])
        # ground truth (left) and predictions (right) side by side, each the image's size
        assert picture.shape == (info['height'], 2 * info['width'], 3)
        source = mmcv.imread(osp.join(trained['data_root'], img_dir_of('val'),
                                      info['file_name']))
        assert (picture[:, :info['width']] != source).any()
        assert (picture[:, info['width']:] != source).any()


def test_analyze_logs_reads_the_real_mmengine_log(trained):
    records = scalars(trained['work_dir'])
    path = [osp.join(root, 'scalars.json') for root, _, names in os.walk(trained['work_dir'])
            if 'scalars.json' in names][0]
    train, val = analyze_logs.load_scalars(path)
    # what mmengine writes: a train record per iteration (logger interval 1), a val record
    # after the epoch
    assert train == [r for r in records if 'loss' in r] and len(train) == 2
    assert val == [r for r in records if 'coco/bbox_mAP' in r] and len(val) == 1
    x, y, label = analyze_logs.series(train, val, 'loss')
    assert label == 'iter' and list(x) == [1, 2] and list(y) == [r['loss'] for r in train]
    x, y, label = analyze_logs.series(train, val, 'coco/bbox_mAP')
    assert label == 'epoch' and list(x) == [1]
    summary = analyze_logs.cal_train_time(path, include_outliers=True)
    assert summary['mean_iter_time'] == pytest.approx(np.mean([r['time'] for r in train]))
