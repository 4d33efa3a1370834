"""Nothing lost, nothing silently wrong on the data side.

* The digits generator never removes or overwrites a file it did not write: a non-empty folder
  without its manifest is refused (also through ``tools/test.py --cfg-options ...data_root=``),
  regeneration removes exactly the files of the previous generation, an interrupted
  generation leaves only a staging folder that the next call removes.
* Bad COCO records are refused with the file and the ids (duplicated image ids, a missing
  ``file_name``), unknown categories and non-finite boxes are dropped *and said so*.
* Evaluation scores the ground truth training used: ``CheckedCocoMetric`` drops the boxes
  ``CheckedCocoDataset`` drops (a perfect detector gets AP 1.0, stock ``CocoMetric`` 0.505).
"""
import hashlib
import json
import logging
import os
import os.path as osp
import sys

import pytest
import torch
from mmengine.logging import MMLogger

import lors_det  # noqa: F401  (registers the datasets and the metric)
from lors_det.datasets import digits
from lors_det.datasets.digits import MANIFEST_FILE, STAGING_PREFIX, ensure_digits_dataset
from lors_det.evaluation import CheckedCocoMetric
from mmdet.evaluation import CocoMetric

HERE = osp.dirname(osp.abspath(__file__))
REPO = osp.dirname(osp.dirname(HERE))
sys.path.insert(0, HERE)
sys.path.insert(0, osp.join(REPO, 'tests', 'tools'))
from _tools_helpers import TINY_DIGITS, run_tool, write_tiny_config  # noqa: E402
from test_bad_input import by_img_id, coco_dataset, write_coco, write_png  # noqa: E402

OTHER_DIGITS = dict(TINY_DIGITS, seed=TINY_DIGITS['seed'] + 1)


def snapshot(root) -> dict:
    """{relative path: sha1 of the content} of every file under ``root``."""
    out = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = osp.join(folder, name)
            with open(path, 'rb') as f:
                out[osp.relpath(path, root)] = hashlib.sha1(f.read()).hexdigest()
    return out


def users_data(root) -> dict:
    """A folder that looks like a COCO dataset of somebody's (the names the generator uses)."""
    os.makedirs(osp.join(root, 'annotations'))
    os.makedirs(osp.join(root, 'train'))
    os.makedirs(osp.join(root, 'val'))
    with open(osp.join(root, 'annotations', 'instances_train.json'), 'w') as f:
        json.dump(dict(images=[], annotations=[], categories=[]), f)
    write_png(osp.join(root, 'train', 'train_00000.png'), 32, 32)
    write_png(osp.join(root, 'val', 'mine.png'), 32, 32, seed=1)
    with open(osp.join(root, 'notes.txt'), 'w') as f:
        f.write('three months of labelling\n')
    return snapshot(root)


# --- the generator ------------------------------------------------------------------------------

def test_generator_refuses_a_folder_it_did_not_write(tmp_path):
    root = str(tmp_path / 'my_data')
    before = users_data(root)
    with pytest.raises(FileExistsError) as error:
        ensure_digits_dataset(root, **TINY_DIGITS)
    assert repr(root) in str(error.value) and MANIFEST_FILE in str(error.value)
    assert 'notes.txt' in str(error.value)
    assert snapshot(root) == before  # nothing removed, nothing added (not even a lock file)


def test_test_tool_with_data_root_on_a_users_folder_loses_nothing(tmp_path):
    data_root = str(tmp_path / 'digits') + '/'
    ensure_digits_dataset(data_root, **TINY_DIGITS)  # the evaluator's ann_file stays valid
    cfg = write_tiny_config(str(tmp_path / 'tiny.py'), data_root)
    ckpt = str(tmp_path / 'model.pth')
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmdet.registry import MODELS
    init_default_scope('mmdet')
    torch.save(dict(state_dict=MODELS.build(Config.fromfile(cfg).model).state_dict()), ckpt)
    users = str(tmp_path / 'my_data')
    before = users_data(users)
    proc = run_tool(['tools/test.py', cfg, ckpt, '--work-dir', str(tmp_path / 'work'),
                     '--cfg-options', f'test_dataloader.dataset.data_root={users}'], check=False)
    assert proc.returncode != 0
    assert 'FileExistsError' in proc.stderr and users in proc.stderr
    assert snapshot(users) == before


def test_regeneration_removes_exactly_the_generated_files(tmp_path):
    root = str(tmp_path / 'digits')
    ensure_digits_dataset(root, **TINY_DIGITS)
    with open(osp.join(root, MANIFEST_FILE)) as f:
        generated = json.load(f)['files']
    assert len(generated) == TINY_DIGITS['num_train'] + TINY_DIGITS['num_val'] + 2
    # the user adds files next to the generated ones
    write_png(osp.join(root, 'train', 'extra.png'), 16, 16)
    with open(osp.join(root, 'README'), 'w') as f:
        f.write('mine\n')
    mine = {k: v for k, v in snapshot(root).items() if k in ('train/extra.png', 'README')}

    ensure_digits_dataset(root, **OTHER_DIGITS)  # other arguments: regenerate
    after = snapshot(root)
    assert {k: after[k] for k in mine} == mine
    with open(osp.join(root, MANIFEST_FILE)) as f:
        manifest = json.load(f)
    assert manifest['args']['seed'] == OTHER_DIGITS['seed']
    assert set(after) == set(manifest['files']) | set(mine) | {MANIFEST_FILE}
    assert not any(STAGING_PREFIX in k for k in after)


def test_regeneration_of_a_dataset_from_an_older_manifest(tmp_path):
    """Manifests written before the file list existed: the files come from the annotations."""
    root = str(tmp_path / 'digits')
    ensure_digits_dataset(root, **TINY_DIGITS)
    path = osp.join(root, MANIFEST_FILE)
    with open(path) as f:
        manifest = json.load(f)
    del manifest['files']
    with open(path, 'w') as f:
        json.dump(manifest, f)
    write_png(osp.join(root, 'val', 'extra.png'), 16, 16)
    ensure_digits_dataset(root, **OTHER_DIGITS)
    assert osp.isfile(osp.join(root, 'val', 'extra.png'))
    with open(path) as f:
        assert json.load(f)['args']['seed'] == OTHER_DIGITS['seed']


def test_interrupted_generation_is_redone_and_leaves_no_files_behind(tmp_path, monkeypatch):
    root = str(tmp_path / 'digits')
    real_write_split = digits.write_split

    def dies_on_val(root_, spec, split, *args):
        if split == 'val':
            raise KeyboardInterrupt('killed')
        return real_write_split(root_, spec, split, *args)

    monkeypatch.setattr(digits, 'write_split', dies_on_val)
    with pytest.raises(KeyboardInterrupt):
        ensure_digits_dataset(root, **TINY_DIGITS)
    assert snapshot(root) == {}  # the half-written train split stayed in the staging folder
    monkeypatch.setattr(digits, 'write_split', real_write_split)
    os.makedirs(osp.join(root, STAGING_PREFIX + 'left-by-a-kill'))  # as after a SIGKILL
    ensure_digits_dataset(root, **TINY_DIGITS)
    assert digits.is_up_to_date(root, digits.DigitsDetSpec(**TINY_DIGITS))
    assert not [e for e in os.listdir(root) if e.startswith(STAGING_PREFIX)]


# --- bad COCO records ---------------------------------------------------------------------------

def test_duplicated_image_ids_are_refused(tmp_path):
    ann_file = write_coco(tmp_path, [(1, 'a.png', 40, 30), (1, 'b.png', 40, 30),
                                     (2, 'c.png', 40, 30)],
                          [dict(id=1, image_id=1, bbox=[1, 2, 10, 12], area=120)])
    with pytest.raises(ValueError, match=r'image ids are not unique: \[1\]') as error:
        coco_dataset(tmp_path, ann_file)
    assert ann_file in str(error.value)
    with pytest.raises(ValueError, match=r'image ids are not unique: \[1\]'):
        CheckedCocoMetric(ann_file=str(tmp_path / ann_file), metric='bbox')


def test_missing_file_name_names_the_image_and_the_file(tmp_path):
    ann_file = write_coco(tmp_path, [(7, 'a.png', 40, 30)], [])
    path = tmp_path / ann_file
    coco = json.loads(path.read_text())
    del coco['images'][0]['file_name']
    path.write_text(json.dumps(coco))
    with pytest.raises(ValueError, match=r'image record with id 7 has no file_name') as error:
        coco_dataset(tmp_path, ann_file)
    assert ann_file in str(error.value)


def warnings_of(caplog_records):
    return ' '.join(r.getMessage() for r in caplog_records if r.levelno >= logging.WARNING)


@pytest.fixture
def warnings_log():
    """Records of mmengine's current logger (print_log(logger='current'))."""
    records = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record)

    logger = MMLogger.get_current_instance()
    handler = Keep(level=logging.WARNING)
    logger.addHandler(handler)
    yield records
    logger.removeHandler(handler)


def test_unknown_category_and_non_finite_boxes_are_dropped_and_said_so(tmp_path, warnings_log):
    anns = [dict(id=1, image_id=1, bbox=[1, 2, 10, 12], area=120),
            dict(id=2, image_id=1, bbox=[1, 2, 10, 12], area=120, category_id=99),
            dict(id=3, image_id=1, bbox=[float('nan'), 2, 10, 12], area=120),
            dict(id=4, image_id=1, bbox=[-3, 2, 10, 12], area=120)]
    ann_file = write_coco(tmp_path, [(1, 'a.png', 40, 30)], anns)
    dataset = coco_dataset(tmp_path, ann_file)
    assert len(by_img_id(dataset)[1]['instances']) == 2
    text = warnings_of(warnings_log)
    assert 'dropped 1 (unknown category_id; ids [2])' in text
    assert 'dropped 1 (non-finite or missing coordinates; ids [3])' in text
    assert 'clipped 1 boxes to their image (ids [4])' in text  # only the one really clipped


# --- evaluation scores what training used ----------------------------------------------------

def _ap_of_perfect_detection(metric_cls, tmp_path, bad_bbox):
    ann_file = write_coco(tmp_path, [(1, 'a.png', 100, 80)],
                          [dict(id=1, image_id=1, bbox=[10, 20, 30, 40], area=1200),
                           dict(id=2, image_id=1, bbox=bad_bbox, area=100)])
    metric = metric_cls(ann_file=str(tmp_path / ann_file), metric='bbox')
    metric.dataset_meta = dict(classes=('circle', 'square'))
    pred = dict(bboxes=torch.tensor([[10., 20., 40., 60.]]), scores=torch.tensor([0.9]),
                labels=torch.tensor([0]))
    metric.process({}, [dict(img_id=1, ori_shape=(80, 100), pred_instances=pred)])
    return metric.compute_metrics(metric.results)['bbox_mAP']


@pytest.mark.parametrize('bad_bbox', [[50, 10, -20, 10], [float('nan'), 10, 20, 10],
                                      [150, 10, 20, 10]],
                         ids=['negative-width', 'nan', 'outside'])
def test_evaluation_drops_the_boxes_training_drops(tmp_path, bad_bbox, warnings_log):
    dataset = coco_dataset(tmp_path, write_coco(
        tmp_path, [(1, 'a.png', 100, 80)], [dict(id=1, image_id=1, bbox=[10, 20, 30, 40],
                                                 area=1200),
                                            dict(id=2, image_id=1, bbox=bad_bbox, area=100)]))
    assert len(by_img_id(dataset)[1]['instances']) == 1  # training sees one box
    stock = _ap_of_perfect_detection(CocoMetric, tmp_path, bad_bbox)
    checked = _ap_of_perfect_detection(CheckedCocoMetric, tmp_path, bad_bbox)
    assert checked == pytest.approx(1.0)
    assert stock < 0.6  # the control: scoring the dropped box costs half the AP
    assert 'CheckedCocoMetric' in warnings_of(warnings_log)
