"""Bad input: every case is either handled by a documented rule or stopped by an error that
names the file / config key to fix.

The COCO-format data (json + PNGs) is written into ``tmp_path`` by the tests. Rules under test
(lors_det/datasets/coco.py ``CheckedCocoDataset``): boxes are clipped to the image; a box whose
clipped width or height is below ``min_box_size`` (1 px) or whose ``area <= 0`` is dropped;
images without (kept) instances stay in ``test_mode`` and are removed in training with
``filter_empty_gt``; an unreadable image raises an error naming the file. tools/train.py checks
``num_classes`` and the data paths before anything is built.
"""
import importlib.util
import json
import os
import os.path as osp
import subprocess
import sys

import numpy as np
import pytest
from mmengine.config import Config
from PIL import Image

import lors_det  # noqa: F401  (registers the datasets)
from lors_det.datasets import (CheckedCocoDataset, DigitsDetDataset, check_config,
                               check_data_paths, check_num_classes)
from lors_det.datasets.digits import MANIFEST_FILE

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
PYTHON = osp.join(REPO, '.venv', 'bin', 'python')
if not osp.exists(PYTHON):
    PYTHON = sys.executable
TRAIN_TOOL = osp.join(REPO, 'tools', 'train.py')
BASE = osp.join(REPO, 'configs', '_base_')

CATEGORIES = [dict(id=1, name='circle'), dict(id=2, name='square')]
PIPELINE = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape')),
]


def write_png(path, width, height, seed=0):
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path)


def write_coco(root, images, annotations, ann_name='ann.json', img_dir='imgs'):
    """Write ``root/annotations/ann_name`` and a PNG for every image that has none yet.

    images: list of (id, file_name, width, height); annotations: list of dicts with ``id``,
    ``image_id``, ``bbox`` and optional ``area`` / ``category_id`` (default 1).
    """
    os.makedirs(osp.join(root, 'annotations'), exist_ok=True)
    os.makedirs(osp.join(root, img_dir), exist_ok=True)
    for img_id, file_name, width, height in images:
        path = osp.join(root, img_dir, file_name)
        if not osp.exists(path):
            write_png(path, width, height, seed=img_id)
    anns = []
    for ann in annotations:
        ann = dict(ann)
        ann.setdefault('category_id', 1)
        ann.setdefault('iscrowd', 0)
        anns.append(ann)
    coco = dict(
        images=[dict(id=i, file_name=f, width=w, height=h) for i, f, w, h in images],
        annotations=anns, categories=CATEGORIES)
    with open(osp.join(root, 'annotations', ann_name), 'w') as f:
        json.dump(coco, f)
    return f'annotations/{ann_name}'


def coco_dataset(root, ann_file, test_mode=False, filter_empty_gt=True, **kwargs):
    return CheckedCocoDataset(
        data_root=str(root), ann_file=ann_file, data_prefix=dict(img='imgs/'),
        metainfo=dict(classes=('circle', 'square')), test_mode=test_mode,
        filter_cfg=dict(filter_empty_gt=filter_empty_gt, min_size=0), pipeline=PIPELINE,
        **kwargs)


def by_img_id(dataset):
    infos = [dataset.get_data_info(i) for i in range(len(dataset))]
    return {info['img_id']: info for info in infos}


def xyxy(instances, ignore=0):
    return [inst['bbox'] for inst in instances if inst['ignore_flag'] == ignore]


# --- corrupt image files ---------------------------------------------------------------------
def corrupt(path, kind):
    """Damage the image file ``path`` in the way ``kind`` says."""
    data = path.read_bytes()
    if kind == 'garbage':
        path.write_bytes(bytes(range(256)) * 8)
    elif kind.startswith('truncated'):  # OpenCV still decodes such a JPEG, silently
        path.write_bytes(data[:2 * len(data) // 3])
    elif kind == 'empty':
        path.write_bytes(b'')
    else:
        path.unlink()


@pytest.mark.parametrize('kind', ['garbage', 'truncated-png', 'truncated-jpg', 'empty',
                                  'missing'])
def test_corrupt_image_names_the_file(tmp_path, kind):
    ext = '.jpg' if kind.endswith('jpg') else '.png'
    ann_file = write_coco(tmp_path, [(1, 'good' + ext, 40, 30), (2, 'bad' + ext, 40, 30)],
                          [dict(id=1, image_id=1, bbox=[1, 2, 10, 12], area=120),
                           dict(id=2, image_id=2, bbox=[3, 4, 10, 12], area=120)])
    bad = tmp_path / 'imgs' / ('bad' + ext)
    corrupt(bad, kind)
    for test_mode in (False, True):
        dataset = coco_dataset(tmp_path, ann_file, test_mode=test_mode)
        good = dataset[0]  # the intact image still loads
        assert tuple(good['inputs'].shape) == (3, 30, 40)
        with pytest.raises(RuntimeError, match='failed to load') as info:
            dataset[1]
        assert str(bad) in str(info.value)
        assert 'index 1' in str(info.value)
        if kind == 'truncated-jpg':
            assert 'truncated JPEG' in str(info.value)


def test_jpeg_end_check(tmp_path):
    ann_file = write_coco(tmp_path, [(1, 'padded.jpg', 40, 30), (2, 'cut.jpg', 40, 30)], [])
    padded, cut = tmp_path / 'imgs' / 'padded.jpg', tmp_path / 'imgs' / 'cut.jpg'
    padded.write_bytes(padded.read_bytes() + bytes(100))  # zero padding after FF D9: intact
    corrupt(cut, 'truncated-jpg')
    dataset = coco_dataset(tmp_path, ann_file, test_mode=True)
    assert tuple(dataset[0]['inputs'].shape) == (3, 30, 40)
    with pytest.raises(RuntimeError, match='truncated JPEG'):
        dataset[1]
    # the opt-out gets OpenCV's silent partial decode: an image of the full size, no error.
    # (Its pixels are not compared: OpenCV leaves what it could not decode uninitialised, so
    # they change from call to call and can even equal the intact image.)
    unchecked = coco_dataset(tmp_path, ann_file, test_mode=True, check_jpeg_end=False)
    assert tuple(unchecked[1]['inputs'].shape) == (3, 30, 40)


# --- boxes -----------------------------------------------------------------------------------
def test_degenerate_and_outside_boxes(tmp_path):
    """Image 100 x 80: clip to [0, 100] x [0, 80], drop sizes < 1 px and area <= 0."""
    anns = [
        dict(id=1, image_id=1, bbox=[10, 20, 30, 40], area=1200),  # inside: unchanged
        dict(id=2, image_id=1, bbox=[90, 70, 20, 20], area=400),  # over the bottom right
        dict(id=3, image_id=1, bbox=[-5, -8, 20, 10], area=200),  # over the top left
        dict(id=4, image_id=1, bbox=[120, 10, 10, 10], area=100),  # entirely right of it
        dict(id=5, image_id=1, bbox=[10, -30, 10, 20], area=200),  # entirely above it
        dict(id=6, image_id=1, bbox=[10, 10, 0, 5], area=0),  # zero width
        dict(id=7, image_id=1, bbox=[10, 10, 5, -3], area=-15),  # negative height
        dict(id=8, image_id=1, bbox=[10, 10, 0.5, 5], area=2.5),  # below min_box_size
        dict(id=9, image_id=1, bbox=[10, 10, 20, 20], area=0),  # area 0
        dict(id=10, image_id=1, bbox=[99.5, 10, 20, 20], area=400),  # 0.5 px left inside
        dict(id=11, image_id=1, bbox=[5, 6, 7, 8]),  # no area: filled in
        dict(id=12, image_id=1, bbox=[50, 50, 60, 10], area=600, iscrowd=1),  # crowd: ignored
    ]
    ann_file = write_coco(tmp_path, [(1, 'a.png', 100, 80)], anns)
    dataset = coco_dataset(tmp_path, ann_file)
    instances = by_img_id(dataset)[1]['instances']
    expected = [[10, 20, 40, 60], [90, 70, 100, 80], [0, 0, 15, 2], [5, 6, 12, 14]]
    np.testing.assert_array_equal(np.array(xyxy(instances), dtype=float), expected)
    assert [inst['bbox_label'] for inst in instances] == [0, 0, 0, 0, 0]
    np.testing.assert_array_equal(xyxy(instances, ignore=1), [[50, 50, 100, 60]])

    # what the model is given: the same boxes after the pipeline (ignored ones removed)
    sample = dataset[0]['data_samples']
    np.testing.assert_array_equal(sample.gt_instances.bboxes.tensor.numpy(), expected)
    np.testing.assert_array_equal(sample.ignored_instances.bboxes.tensor.numpy(),
                                  [[50, 50, 100, 60]])

    # the lower limit is a parameter: 3 px also drops the 15 x 2 box
    strict = coco_dataset(tmp_path, ann_file, min_box_size=3)
    np.testing.assert_array_equal(xyxy(by_img_id(strict)[1]['instances']),
                                  [[10, 20, 40, 60], [90, 70, 100, 80], [5, 6, 12, 14]])
    # below 1 px it would have no effect (mmdet drops those boxes anyway): refused
    with pytest.raises(ValueError, match='min_box_size=0.5'):
        coco_dataset(tmp_path, ann_file, min_box_size=0.5)


# --- images without annotations --------------------------------------------------------------
def test_images_without_annotations(tmp_path):
    images = [(1, 'with.png', 40, 30), (2, 'without.png', 40, 30), (3, 'only_bad.png', 40, 30)]
    anns = [dict(id=1, image_id=1, bbox=[1, 2, 10, 12], area=120),
            dict(id=2, image_id=3, bbox=[50, 2, 10, 12], area=120),  # outside: dropped
            dict(id=3, image_id=3, bbox=[1, 2, 0, 12], area=0)]  # zero width: dropped
    ann_file = write_coco(tmp_path, images, anns)

    test_set = coco_dataset(tmp_path, ann_file, test_mode=True)
    assert sorted(by_img_id(test_set)) == [1, 2, 3]
    assert [len(by_img_id(test_set)[i]['instances']) for i in (1, 2, 3)] == [1, 0, 0]
    empty = test_set[list(by_img_id(test_set)).index(2)]
    assert tuple(empty['data_samples'].gt_instances.bboxes.shape) == (0, 4)

    train_set = coco_dataset(tmp_path, ann_file, filter_empty_gt=True)
    assert sorted(by_img_id(train_set)) == [1]  # also the image whose boxes were all dropped
    unfiltered = coco_dataset(tmp_path, ann_file, filter_empty_gt=False)
    assert sorted(by_img_id(unfiltered)) == [1, 2, 3]


# --- configs: num_classes and data paths -----------------------------------------------------
def load_train_tool():
    spec = importlib.util.spec_from_file_location('lors_det_train_tool', TRAIN_TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_config(path, data_root, num_classes=2, dataset_type='CheckedCocoDataset',
                 stage_list=False):
    """A tiny AdaMixer training config on COCO-format data under ``data_root``."""
    stage = (f"dict(type='AdaMixerDecoderStage', num_classes={num_classes}, num_heads=4, "
             "feedforward_channels=64, content_dim=32, feat_channels=32, in_points=4, "
             "out_points=6)")
    bbox_head = f'[{stage}, {stage}]' if stage_list else stage
    text = f"""_base_ = [{osp.join(BASE, 'models', 'adamixer_r50.py')!r},
             {osp.join(BASE, 'default_runtime.py')!r}]
model = dict(
    backbone=dict(depth=18, base_channels=8, init_cfg=None),
    neck=dict(in_channels=[8, 16, 32, 64], out_channels=32),
    rpn_head=dict(num_query=5, content_dim=32),
    roi_head=dict(num_stages=2, stage_loss_weights=[1.0, 1.0], content_dim=32,
                  bbox_head={bbox_head}))
train_dataloader = dict(
    batch_size=1, num_workers=0, sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type={dataset_type!r}, data_root={str(data_root) + '/'!r},
                 ann_file='annotations/ann.json', data_prefix=dict(img='imgs/'),
                 metainfo=dict(classes=('circle', 'square')),
                 pipeline=[dict(type='LoadImageFromFile'),
                           dict(type='LoadAnnotations', with_bbox=True),
                           dict(type='PackDetInputs')]))
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=1)
optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.01))
work_dir = {str(osp.join(osp.dirname(path), 'work_dir'))!r}
"""
    with open(path, 'w') as f:
        f.write(text)
    return str(path)


def test_wrong_num_classes_is_named(tmp_path):
    ann_file = write_coco(tmp_path, [(1, 'a.png', 40, 30)],
                          [dict(id=1, image_id=1, bbox=[1, 2, 10, 12], area=120)])
    assert ann_file == 'annotations/ann.json'

    # one stage dict replicated by the decoder
    cfg = Config.fromfile(write_config(tmp_path / 'wrong.py', tmp_path, num_classes=80))
    with pytest.raises(ValueError) as info:
        check_num_classes(cfg, splits=('train', ))
    message = str(info.value)
    assert 'model.roi_head.bbox_head.num_classes = 80' in message
    assert 'train_dataloader.dataset has 2 classes' in message
    assert "'circle', 'square'" in message

    # a list with one config per stage: each stage is named
    cfg = Config.fromfile(write_config(tmp_path / 'wrong_list.py', tmp_path, num_classes=5,
                                       stage_list=True))
    with pytest.raises(ValueError) as info:
        check_num_classes(cfg, splits=('train', ))
    message = str(info.value)
    assert 'model.roi_head.bbox_head[0].num_classes = 5' in message
    assert 'model.roi_head.bbox_head[1].num_classes = 5' in message
    assert '--cfg-options model.roi_head.bbox_head.0.num_classes=2' in message

    check_config(Config.fromfile(write_config(tmp_path / 'right.py', tmp_path)), ('train', ))

    # through tools/train.py: fails before the runner is built (no work_dir is created)
    train = load_train_tool()
    with pytest.raises(ValueError, match=r'model\.roi_head\.bbox_head\.num_classes = 80'):
        train.main([str(tmp_path / 'wrong.py')])
    assert not (tmp_path / 'work_dir').exists()
    # and the command-line override the message suggests fixes it
    args = train.parse_args([str(tmp_path / 'wrong.py'), '--cfg-options',
                             'model.roi_head.bbox_head.num_classes=2'])
    check_config(train.build_config(args), ('train', ))


def test_missing_data_root_via_train_tool(tmp_path):
    missing = tmp_path / 'no_such_dataset'
    config = write_config(tmp_path / 'missing_root.py', missing)
    cfg = Config.fromfile(config)
    with pytest.raises(FileNotFoundError) as info:
        check_data_paths(cfg, splits=('train', ))
    assert 'train_dataloader.dataset.data_root' in str(info.value)
    assert str(missing) in str(info.value)

    env = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS='1')
    proc = subprocess.run([PYTHON, TRAIN_TOOL, config], cwd=str(tmp_path), env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert 'FileNotFoundError' in proc.stderr
    assert 'train_dataloader.dataset.data_root' in proc.stderr
    assert str(missing) in proc.stderr
    assert not (tmp_path / 'work_dir').exists()

    # the root exists but the annotation file does not: that key is named instead
    os.makedirs(missing / 'imgs')
    with pytest.raises(FileNotFoundError) as info:
        check_data_paths(Config.fromfile(config), splits=('train', ))
    assert 'train_dataloader.dataset.ann_file' in str(info.value)
    assert str(missing / 'annotations' / 'ann.json') in str(info.value)
    # building the dataset directly says the same
    with pytest.raises(FileNotFoundError, match='ann_file'):
        CheckedCocoDataset(data_root=str(missing), ann_file='annotations/ann.json',
                           data_prefix=dict(img='imgs/'), pipeline=[])
    # ... but only when the annotations are loaded: a lazily built dataset (init_detector and
    # DetInferencer build one for its metainfo) works without the files
    lazy = CheckedCocoDataset(data_root=str(tmp_path / 'elsewhere'), ann_file='ann.json',
                              metainfo=dict(classes=('circle', 'square')), pipeline=[],
                              lazy_init=True)
    assert lazy.metainfo['classes'] == ('circle', 'square')
    with pytest.raises(FileNotFoundError, match='data_root') as info:
        lazy.full_init()
    assert str(tmp_path / 'elsewhere') in str(info.value)


def test_digits_dataset_generates_a_missing_root(tmp_path):
    """The digits data is created where the config points, even below missing folders."""
    root = tmp_path / 'not' / 'yet' / 'digits'
    config = write_config(tmp_path / 'digits.py', root, num_classes=10,
                          dataset_type='DigitsDetDataset')
    cfg = Config.fromfile(config)
    check_data_paths(cfg, splits=('train', ))  # skipped: the dataset generates its files
    assert not root.exists()

    spec = dict(num_train=3, num_val=2, img_size=(48, 40), digit_size=(12, 20),
                num_objects=(1, 2), seed=5)
    # built lazily (only for its metainfo) it writes nothing
    lazy = DigitsDetDataset(data_root=str(root), generator_cfg=spec, lazy_init=True,
                            ann_file='annotations/instances_val.json',
                            data_prefix=dict(img='val/'), pipeline=PIPELINE, test_mode=True)
    assert len(lazy.metainfo['classes']) == 10 and not root.exists()
    lazy.full_init()
    assert len(lazy) == 2

    dataset = DigitsDetDataset(
        data_root=str(root), generator_cfg=spec, ann_file='annotations/instances_train.json',
        data_prefix=dict(img='train/'), pipeline=PIPELINE)
    assert (root / MANIFEST_FILE).is_file()
    assert len(os.listdir(root / 'train')) == 3 and len(os.listdir(root / 'val')) == 2
    assert len(dataset) == 3
    sample = dataset[0]
    assert tuple(sample['inputs'].shape) == (3, 40, 48)
    boxes = sample['data_samples'].gt_instances.bboxes.tensor
    assert boxes.shape[0] >= 1
    assert bool(((boxes[:, 2:] > boxes[:, :2]).all()))
    assert bool((boxes[:, :2] >= 0).all() and (boxes[:, 2] <= 48).all()
                and (boxes[:, 3] <= 40).all())

    # a digits data root that is a file: an error naming it
    blocker = tmp_path / 'a_file'
    blocker.write_text('not a folder')
    with pytest.raises((FileExistsError, NotADirectoryError)) as info:
        DigitsDetDataset(data_root=str(blocker), generator_cfg=spec,
                         ann_file='annotations/instances_train.json',
                         data_prefix=dict(img='train/'), pipeline=PIPELINE)
    assert str(blocker) in str(info.value)

