#!/usr/bin/env python
# Copyright (c) lors_det authors.
"""Draw a detector's predictions on images; the lors_det version of mmdet's ``demo/image_demo.py``.

    python tools/analysis_tools/image_demo.py IMG CONFIG CHECKPOINT [--out-dir outputs]
        [--score-thr 0.3] [--device cpu] [--palette none] [--cfg-options ...]

``IMG`` is an image file or a folder of images. For each image the model runs through
``mmdet.apis.init_detector`` / ``inference_detector`` (the config's test pipeline) and
``DetLocalVisualizer`` draws the predicted boxes, labels and scores with score ``>
--score-thr`` onto the original image, written to ``OUT_DIR/vis/<image file name>`` (same
size and format as the input). Pixels without a drawing keep the input's values (for PNG input
exactly; the visualizer's own output is resampled by up to a pixel, see
:func:`draw_predictions`). All predictions (boxes in
original-image pixels ``x1, y1, x2, y2``, scores, labels, class names) go to
``OUT_DIR/preds/<image stem>.json``, as mmdet's ``DetInferencer`` does.

Class names come from the checkpoint's ``meta.dataset_meta`` (checkpoints written by the
mmengine runner have it), else COCO's; colours from ``--palette`` or the test dataset's
metainfo (``none``, default). For a whole test set with ground truth, use
``tools/test.py CONFIG CKPT --show-dir DIR``.
"""
import argparse
import json
import os
import os.path as osp
import sys
import uuid
from typing import List

import numpy as np

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from analysis_utils import CFG_OPTIONS_HELP  # noqa: E402  (also puts the repo on sys.path)

from mmengine.config import DictAction  # noqa: E402

IMG_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp')


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Draw detections on images')
    parser.add_argument('img', help='image file or folder of images')
    parser.add_argument('config', help='config file')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--out-dir', default='outputs', help='output folder')
    parser.add_argument('--score-thr', type=float, default=0.3,
                        help='draw predictions with a score above this')
    parser.add_argument('--device', default='cpu', help='cpu, cuda or cuda:N')
    parser.add_argument('--palette', default='none',
                        choices=['coco', 'voc', 'citys', 'random', 'none'],
                        help='box colours (none: the test dataset\'s palette)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, help=CFG_OPTIONS_HELP)
    return parser.parse_args(argv)


def list_images(path: str) -> List[str]:
    if osp.isfile(path):
        return [path]
    if osp.isdir(path):
        found = sorted(osp.join(path, name) for name in os.listdir(path)
                       if name.lower().endswith(IMG_EXTENSIONS))
        if found:
            return found
        raise FileNotFoundError(f'no images ({", ".join(IMG_EXTENSIONS)}) in folder {path}')
    raise FileNotFoundError(f'image file or folder not found: {path}')


def build_visualizer(model):
    """A ``DetLocalVisualizer`` from the model's config with its own instance name (mmengine
    keeps one visualizer per name) and no storage backend (files are written by ``out_file``)."""
    from mmdet.registry import VISUALIZERS
    cfg = dict(model.cfg.get('visualizer', dict(type='DetLocalVisualizer')))
    cfg.update(name=f'image_demo_{uuid.uuid4().hex}', vis_backends=None, save_dir=None)
    visualizer = VISUALIZERS.build(cfg)
    visualizer.dataset_meta = model.dataset_meta
    return visualizer


def draw_predictions(visualizer, name: str, image: np.ndarray, result,
                     score_thr: float) -> np.ndarray:
    """``image`` (RGB uint8) with the predictions scoring above ``score_thr`` drawn by
    ``visualizer``; every pixel not covered by a drawing is ``image``'s own.

    mmengine renders the image on a matplotlib canvas, which shifts textured content by up to a
    pixel; so the drawing is rendered once with the predictions and once without (the same
    code path), and only the pixels where the two renders differ are taken from the drawing.
    """
    visualizer.add_datasample(name, image, data_sample=result, draw_gt=False, show=False,
                              pred_score_thr=score_thr)
    drawn = visualizer.get_image()
    bare_result = result.clone()
    bare_result.pred_instances = result.pred_instances[:0]
    visualizer.add_datasample(name, image, data_sample=bare_result, draw_gt=False, show=False,
                              pred_score_thr=score_thr)
    bare = visualizer.get_image()
    if drawn.shape != image.shape or bare.shape != image.shape:
        raise RuntimeError(f'{name}: the visualizer returned a {drawn.shape} picture for a '
                           f'{image.shape} image')
    covered = np.any(drawn != bare, axis=-1)
    out = image.copy()
    out[covered] = drawn[covered]
    return out


def predictions_to_dict(result, classes) -> dict:
    pred = result.pred_instances
    labels = pred.labels.tolist()
    return dict(
        bboxes=pred.bboxes.tolist(), scores=pred.scores.tolist(), labels=labels,
        classes=[classes[i] if classes is not None and i < len(classes) else str(i)
                 for i in labels])


def main(argv=None) -> List[str]:
    """Returns the written image paths."""
    import mmcv
    from mmdet.apis import inference_detector, init_detector

    args = parse_args(argv)
    images = list_images(args.img)
    for path, what in ((args.config, 'config'), (args.checkpoint, 'checkpoint')):
        if not osp.isfile(path):
            raise FileNotFoundError(f'{what} file not found: {path}')
    model = init_detector(args.config, args.checkpoint, palette=args.palette,
                          device=args.device, cfg_options=args.cfg_options)
    visualizer = build_visualizer(model)
    classes = model.dataset_meta.get('classes')
    vis_dir, pred_dir = osp.join(args.out_dir, 'vis'), osp.join(args.out_dir, 'preds')
    os.makedirs(vis_dir, exist_ok=True)
    os.makedirs(pred_dir, exist_ok=True)

    written = []
    for path in images:
        result = inference_detector(model, path)
        image = mmcv.imread(path, channel_order='rgb')
        name = osp.basename(path)
        out_file = osp.join(vis_dir, name)
        mmcv.imwrite(draw_predictions(visualizer, name, image, result, args.score_thr)[..., ::-1],
                     out_file)
        with open(osp.join(pred_dir, osp.splitext(name)[0] + '.json'), 'w') as f:
            json.dump(predictions_to_dict(result, classes), f)
        num_drawn = int((result.pred_instances.scores > args.score_thr).sum())
        print(f'{path}: {num_drawn} detections above {args.score_thr} -> {out_file}')
        written.append(out_file)
    return written


if __name__ == '__main__':
    main()
