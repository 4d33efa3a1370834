"""mmdet's inference APIs with lors_det configs and checkpoints.

``init_detector`` + ``inference_detector`` and ``DetInferencer`` are run on a tiny AdaMixer
digits config (written by tests/tools/_tools_helpers.write_tiny_config) and on the shipped LORS
demo config. Their detections must equal the model's own ``test_step`` on an image preprocessed
here by hand (mmcv's ``imrescale``, the documented Resize maths), i.e. the APIs resize, normalise
and rescale back to the original image the same way; the class names must come from the
checkpoint's ``meta.dataset_meta`` (deliberately different from the config's dataset); and
``DetInferencer`` must write the visualisation and the prediction json.
"""
import json
import os
import os.path as osp
import sys

import mmcv
import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from PIL import Image

import lors_det  # noqa: F401  (registers the modules)
from lors_det.datasets import DigitsDetDataset
from lors_det.datasets.digits import ensure_digits_dataset
from mmdet.apis import DetInferencer, inference_detector, init_detector
from mmdet.datasets import CocoDataset
from mmdet.registry import DATASETS, MODELS
from mmdet.structures import DetDataSample

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, osp.join(REPO, 'tests', 'tools'))
from _tools_helpers import TINY_DIGITS, write_tiny_config  # noqa: E402

LORS_DEMO = osp.join(REPO, 'configs', 'demo', 'adamixer-lors_tiny_1xb8-demo_digits.py')
COCO_R50 = osp.join(REPO, 'configs', 'adamixer', 'adamixer_r50_8xb2-1x_coco.py')
# not the digits dataset's '0'..'9': the names must come from the checkpoint
CKPT_CLASSES = tuple(f'digit-{name}' for name in
                     ('zero', 'one', 'two', 'three', 'four', 'five', 'six', 'seven', 'eight',
                      'nine'))
IMG_SIZE = (96, 72)  # (w, h): the configs resize it (keep ratio) before the model sees it


@pytest.fixture(scope='module')
def image_file(tmp_path_factory):
    """A real digits image, upscaled to 96 x 72 so that the test pipeline has to resize it."""
    root = tmp_path_factory.mktemp('digits')
    ensure_digits_dataset(str(root), **TINY_DIGITS)
    with open(root / 'annotations' / 'instances_val.json') as f:
        first = json.load(f)['images'][0]['file_name']
    path = root / 'digits_96x72.png'
    Image.open(root / 'val' / first).convert('RGB').resize(IMG_SIZE, Image.BILINEAR).save(path)
    return str(path)


def perturb_(model, seed=0):
    """init_weights, then move every parameter off its init: at init all queries are the same
    whole-image box with zero-weight heads, so every detection would tie."""
    model.init_weights()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.05 * torch.randn(param.shape, generator=gen))
    return model.eval()


def write_checkpoint(config_path, path):
    cfg = Config.fromfile(config_path)
    init_default_scope('mmdet')
    torch.manual_seed(0)
    model = perturb_(MODELS.build(cfg.model))
    palette = [(10 * i, 255 - 10 * i, 100) for i in range(10)]
    torch.save(dict(meta=dict(dataset_meta=dict(classes=CKPT_CLASSES, palette=palette)),
                    state_dict=model.state_dict()), path)
    return model


def scale_factor_of(cfg):
    """The (w, h) target scale of the config's test Resize (keep_ratio=True)."""
    resize = [t for t in cfg.test_dataloader.dataset.pipeline if t['type'] == 'Resize']
    assert len(resize) == 1 and resize[0]['keep_ratio']
    return tuple(resize[0]['scale'])


def reference_predictions(model, cfg, image_file):
    """``model.test_step`` on the image preprocessed by hand."""
    img = mmcv.imread(image_file)  # BGR, as LoadImageFromFile reads it
    ori_h, ori_w = img.shape[:2]
    resized = mmcv.imrescale(img, scale_factor_of(cfg), interpolation='bilinear',
                             backend='cv2')
    new_h, new_w = resized.shape[:2]
    # mmdet's Resize: scale_factor = (new_w / w, new_h / h); boxes are divided by it
    sample = DetDataSample(metainfo=dict(
        img_id=0, img_path=image_file, ori_shape=(ori_h, ori_w), img_shape=(new_h, new_w),
        scale_factor=(new_w / ori_w, new_h / ori_h)))
    inputs = torch.from_numpy(np.ascontiguousarray(resized.transpose(2, 0, 1)))
    with torch.no_grad():
        return model.test_step(dict(inputs=[inputs], data_samples=[sample]))[0].pred_instances


def assert_same_detections(got, want):
    assert len(want.scores) == len(got.scores) > 0
    torch.testing.assert_close(got.bboxes, want.bboxes, rtol=0, atol=1e-4)
    torch.testing.assert_close(got.scores, want.scores, rtol=0, atol=1e-6)
    assert torch.equal(got.labels, want.labels)


def tiny_adamixer_config(tmp_path):
    # the tools tests' config; only lors_det is imported (their hooks are not needed here)
    return write_tiny_config(
        str(tmp_path / 'tiny_adamixer_digits.py'), str(tmp_path / 'no_data') + '/',
        extra="custom_imports = dict(imports=['lors_det'], allow_failed_imports=False)")


@pytest.fixture(autouse=True)
def in_empty_dir(tmp_path, monkeypatch):
    """Run in an empty folder: the configs' relative data roots (data/digits_det/, data/coco/)
    do not exist there, and nothing may be written into them."""
    workdir = tmp_path / 'cwd'
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    yield
    assert os.listdir(workdir) == [], 'inference wrote into the working directory'


@pytest.fixture(params=['adamixer', 'lors'])
def config_and_checkpoint(request, tmp_path):
    config = tiny_adamixer_config(tmp_path) if request.param == 'adamixer' else LORS_DEMO
    checkpoint = str(tmp_path / f'{request.param}.pth')
    model = write_checkpoint(config, checkpoint)
    return config, checkpoint, model, request.param


def test_init_detector_and_inference_detector(config_and_checkpoint, image_file):
    config, checkpoint, trained, kind = config_and_checkpoint
    model = init_detector(config, checkpoint, device='cpu')
    assert type(model.roi_head).__name__ == ('AdaMixerLORSDecoder' if kind == 'lors'
                                             else 'AdaMixerDecoder')
    assert model.dataset_meta['classes'] == CKPT_CLASSES
    for key, value in trained.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key

    result = inference_detector(model, image_file)
    assert result.ori_shape == (IMG_SIZE[1], IMG_SIZE[0])
    reference = reference_predictions(model, model.cfg, image_file)
    assert_same_detections(result.pred_instances, reference)
    # boxes are in the coordinates of the original (not the resized) image
    assert float(result.pred_instances.bboxes[:, 0::2].abs().max()) > 64

    # a BGR array gives the same detections as the file
    from_array = inference_detector(model, mmcv.imread(image_file))
    assert_same_detections(from_array.pred_instances, reference)
    # the digits dataset was built only for its metainfo (palette): no data was generated
    assert model.dataset_meta['palette'] == list(DigitsDetDataset.METAINFO['palette'])
    assert not osp.exists(osp.join(osp.dirname(checkpoint), 'no_data'))


def test_init_detector_without_the_dataset():
    """The COCO config's dataset (data/coco/) is not needed to build a detector from it."""
    model = init_detector(COCO_R50, None, device='cpu')
    assert model.dataset_meta['palette'] == list(CocoDataset.METAINFO['palette'])
    assert len(model.dataset_meta['classes']) == 80
    # but a training/test run that loads the annotations is still stopped with the key to fix
    cfg = Config.fromfile(COCO_R50)
    with pytest.raises(FileNotFoundError, match=r'dataset\.data_root: data root .data/coco/'):
        DATASETS.build(cfg.test_dataloader.dataset)


def test_det_inferencer_writes_predictions_and_visualisation(config_and_checkpoint, image_file,
                                                             tmp_path):
    config, checkpoint, _, kind = config_and_checkpoint
    inferencer = DetInferencer(model=config, weights=checkpoint, device='cpu',
                               show_progress=False)
    assert not osp.exists(osp.join(osp.dirname(checkpoint), 'no_data'))
    assert inferencer.model.dataset_meta['classes'] == CKPT_CLASSES
    assert inferencer.visualizer.dataset_meta['classes'] == CKPT_CLASSES

    reference = reference_predictions(inferencer.model, inferencer.cfg, image_file)
    samples = inferencer(image_file, return_datasamples=True)['predictions']
    assert len(samples) == 1
    assert_same_detections(samples[0].pred_instances, reference)

    # with out_dir: the prediction json and the visualisation are written
    out_dir = tmp_path / f'out_{kind}'
    outputs = inferencer(image_file, out_dir=str(out_dir), no_save_pred=False,
                         pred_score_thr=0.0)
    stem = osp.splitext(osp.basename(image_file))[0]
    with open(out_dir / 'preds' / f'{stem}.json') as f:
        pred = json.load(f)
    assert pred == outputs['predictions'][0]
    assert pred['labels'] == reference.labels.tolist()
    np.testing.assert_allclose(pred['scores'], reference.scores.numpy(), rtol=0, atol=1e-6)
    np.testing.assert_allclose(pred['bboxes'], reference.bboxes.numpy(), rtol=0, atol=1e-4)

    assert os.listdir(out_dir / 'vis') == [osp.basename(image_file)]
    vis = mmcv.imread(str(out_dir / 'vis' / osp.basename(image_file)))
    assert vis.shape == (IMG_SIZE[1], IMG_SIZE[0], 3)
    # boxes were drawn: the visualisation is not the input image
    assert np.abs(vis.astype(int) - mmcv.imread(image_file).astype(int)).max() > 50
