# Copyright (c) lors_det authors.
"""Embedded demo detection dataset made of real handwritten digits.

The images come from scikit-learn's copy of the UCI handwritten digits (``load_digits``: 1797
grey 8x8 scans, classes ``'0'``..``'9'``), so the dataset needs no download. Each detection
image is a ``img_size`` canvas with a random background (gradient, smooth colour field, noise,
coloured patches) on which a few digits are pasted at random scales and positions.

Properties the tests rely on:

* Deterministic: every image is drawn from its own ``numpy`` generator seeded by
  ``(seed, split, index)``, so the same arguments give byte-identical json and PNG files.
* Tight boxes: a digit's alpha is its bilinearly upscaled ink, with values below
  ``INK_THRESHOLD`` set to zero, so nothing of the digit is drawn outside its box and the
  box is exactly the bounding box of the drawn pixels (COCO ``[x, y, w, h]`` in pixel-edge
  coordinates, i.e. the ink occupies columns ``x .. x + w - 1``).
* Fully visible: the ink of two digits never shares a pixel and their boxes overlap with
  IoU at most ``max_iou``, so every box is tight around visible ink.
* Disjoint instances: train and val images use disjoint sets of sklearn digit scans
  (``val_fraction`` of each class goes to val); each annotation records its scan as
  ``sklearn_index``. ``area`` is the box area.

``ensure_digits_dataset`` writes the dataset once and records its arguments and files in
``manifest.json``; later calls with the same arguments return at once, different arguments
regenerate it. It never removes or overwrites a file it did not write: a non-empty folder
without its manifest is refused.
"""
import dataclasses
import hashlib
import json
import os
import os.path as osp
import shutil
import tempfile
from contextlib import contextmanager
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

GENERATOR_VERSION = 1
DIGITS_CLASSES = tuple(str(d) for d in range(10))
INK_THRESHOLD = 0.25
MANIFEST_FILE = 'manifest.json'
SPLITS = ('train', 'val')
# Category ids start at 1 as in COCO; category id = digit + 1.
CATEGORIES = [
    dict(id=d + 1, name=name, supercategory='digit')
    for d, name in enumerate(DIGITS_CLASSES)
]


def ann_file_of(split: str) -> str:
    """Annotation file of ``split``, relative to the dataset root."""
    return f'annotations/instances_{split}.json'


def img_dir_of(split: str) -> str:
    """Image folder of ``split``, relative to the dataset root."""
    return f'{split}/'


@dataclasses.dataclass(frozen=True)
class DigitsDetSpec:
    """Arguments of the generator; all of them go into the manifest.

    Args:
        num_train / num_val: number of images per split.
        img_size: (width, height) of every image.
        digit_size: (min, max) side in pixels of the upscaled 8x8 scan; the ink box is
            somewhat smaller because scans have blank margins.
        num_objects: (min, max) digits tried per image. Fewer are kept when a digit finds
            no free place in ``max_tries`` attempts; the first one always fits.
        max_iou: largest IoU allowed between two boxes of one image.
        val_fraction: fraction of the scans of each class reserved for val.
        seed: master seed.
    """
    num_train: int = 1200
    num_val: int = 200
    img_size: Tuple[int, int] = (128, 128)
    digit_size: Tuple[int, int] = (12, 48)
    num_objects: Tuple[int, int] = (2, 6)
    max_iou: float = 0.2
    val_fraction: float = 0.2
    seed: int = 0
    max_tries: int = 50

    def __post_init__(self) -> None:
        # Configs give lists; keep tuples so specs compare equal to manifests.
        for name in ('img_size', 'digit_size', 'num_objects'):
            value = getattr(self, name)
            if isinstance(value, int):
                value = (value, value)
            object.__setattr__(self, name, tuple(int(v) for v in value))
        w, h = self.img_size
        lo, hi = self.digit_size
        if not 8 <= lo <= hi <= min(w, h):
            raise ValueError(f'digit_size={self.digit_size} must satisfy '
                             f'8 <= min <= max <= min(img_size)={min(w, h)}')
        if not 1 <= self.num_objects[0] <= self.num_objects[1]:
            raise ValueError(f'num_objects={self.num_objects} must satisfy '
                             '1 <= min <= max')
        if not 0 < self.val_fraction < 1:
            raise ValueError(f'val_fraction={self.val_fraction} must be in (0, 1)')
        if self.num_train < 0 or self.num_val < 0:
            raise ValueError('num_train and num_val must be >= 0')

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v
                for k, v in dataclasses.asdict(self).items()}


def load_digit_scans() -> Tuple[np.ndarray, np.ndarray]:
    """The sklearn digits as (images (N, 8, 8) float64 in [0, 16], labels (N,) int)."""
    from sklearn.datasets import load_digits
    digits = load_digits()
    return digits.images, digits.target.astype(np.int64)


def split_scan_indices(labels: np.ndarray, val_fraction: float,
                       seed: int) -> Dict[str, np.ndarray]:
    """Split scan indices per class into disjoint sorted train / val pools."""
    rng = np.random.default_rng([seed, 1000])
    pools = {'train': [], 'val': []}
    for digit in range(len(DIGITS_CLASSES)):
        idx = np.flatnonzero(labels == digit)
        idx = idx[rng.permutation(len(idx))]
        num_val = int(round(len(idx) * val_fraction))
        pools['val'].append(idx[:num_val])
        pools['train'].append(idx[num_val:])
    return {k: np.sort(np.concatenate(v)) for k, v in pools.items()}


def resize_bilinear(img: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Bilinear resize of a 2-D array with half-pixel centres (align_corners=False)."""
    in_h, in_w = img.shape

    def axis(out_n: int, in_n: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        pos = (np.arange(out_n) + 0.5) * (in_n / out_n) - 0.5
        pos = np.clip(pos, 0, in_n - 1)
        lo = np.floor(pos).astype(np.int64)
        hi = np.minimum(lo + 1, in_n - 1)
        return lo, hi, pos - lo

    y0, y1, wy = axis(out_h, in_h)
    x0, x1, wx = axis(out_w, in_w)
    top = img[y0][:, x0] * (1 - wx) + img[y0][:, x1] * wx
    bottom = img[y1][:, x0] * (1 - wx) + img[y1][:, x1] * wx
    return top * (1 - wy[:, None]) + bottom * wy[:, None]


def digit_alpha(scan: np.ndarray, cell_h: int, cell_w: int) -> np.ndarray:
    """Alpha of one digit upscaled to (cell_h, cell_w), cropped tight around its ink.

    Returns a (h, w) float array in [0, 1] whose first/last rows and columns contain ink
    (alpha >= INK_THRESHOLD) and which is zero wherever it is below the threshold.
    """
    alpha = resize_bilinear(scan / 16.0, cell_h, cell_w)
    alpha[alpha < INK_THRESHOLD] = 0.0
    rows = np.flatnonzero(alpha.any(axis=1))
    cols = np.flatnonzero(alpha.any(axis=0))
    return alpha[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]


def _random_color(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(0, 255, size=3)


def make_background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A (height, width, 3) float background: gradient or smooth field, patches, noise."""
    if rng.random() < 0.5:  # linear gradient at a random angle between two colours
        angle = rng.uniform(0, 2 * np.pi)
        ys, xs = np.mgrid[0:height, 0:width]
        t = xs * np.cos(angle) + ys * np.sin(angle)
        t = (t - t.min()) / max(t.max() - t.min(), 1e-6)
        c0, c1 = _random_color(rng), _random_color(rng)
        bg = c0 + t[..., None] * (c1 - c0)
    else:  # smooth colour field: a coarse random grid upsampled
        grid = rng.uniform(0, 255, size=(3, 4, 3))
        bg = np.stack([
            resize_bilinear(grid[..., c], height, width) for c in range(3)
        ], axis=-1)
    for _ in range(rng.integers(0, 5)):  # translucent coloured rectangles
        pw, ph = rng.integers(8, width // 2 + 1), rng.integers(8, height // 2 + 1)
        px, py = rng.integers(0, width - pw + 1), rng.integers(0, height - ph + 1)
        opacity = rng.uniform(0.3, 0.9)
        region = bg[py:py + ph, px:px + pw]
        region += opacity * (_random_color(rng) - region)
    bg += rng.normal(0, rng.uniform(2, 20), size=bg.shape)
    return bg


def _luma(color: np.ndarray) -> float:
    return float(color @ np.array([0.299, 0.587, 0.114]))


def _ink_color(rng: np.random.Generator, under: np.ndarray) -> np.ndarray:
    """A colour whose luma differs from the mean luma of ``under`` by >= 80 when possible."""
    bg_luma = _luma(under.reshape(-1, 3).mean(axis=0))
    for _ in range(20):
        color = _random_color(rng)
        if abs(_luma(color) - bg_luma) >= 80:
            return color
    return np.zeros(3) if bg_luma > 127.5 else np.full(3, 255.0)


def _iou(a: Sequence[int], b: Sequence[int]) -> float:
    """IoU of two [x, y, w, h] pixel boxes."""
    iw = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    ih = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def render_image(spec: DigitsDetSpec, scans: np.ndarray, labels: np.ndarray,
                 pool: np.ndarray, split: str,
                 index: int) -> Tuple[np.ndarray, List[dict]]:
    """Draw image ``index`` of ``split``.

    Returns:
        image: (height, width, 3) uint8 RGB.
        objects: one dict per digit with ``bbox`` ([x, y, w, h] ints), ``label`` (0..9),
            ``scan`` (index into the sklearn digits), ``cell_size`` ((h, w) the 8x8 scan
            was upscaled to) and ``mask`` ((height, width) bool, the pixels where the
            digit's alpha is non-zero).
    """
    rng = np.random.default_rng([spec.seed, SPLITS.index(split), index])
    width, height = spec.img_size
    image = make_background(rng, width, height)
    occupied = np.zeros((height, width), dtype=bool)
    objects: List[dict] = []
    num_objects = int(rng.integers(spec.num_objects[0], spec.num_objects[1] + 1))
    for _ in range(num_objects):
        scan_id = int(pool[rng.integers(len(pool))])
        for _ in range(spec.max_tries):
            cell_h = int(rng.integers(spec.digit_size[0], spec.digit_size[1] + 1))
            cell_w = max(8, int(round(cell_h * rng.uniform(0.7, 1.1))))
            alpha = digit_alpha(scans[scan_id], cell_h, cell_w)
            h, w = alpha.shape
            x = int(rng.integers(0, width - w + 1))
            y = int(rng.integers(0, height - h + 1))
            ink = alpha > 0
            box = [x, y, w, h]
            if occupied[y:y + h, x:x + w][ink].any():
                continue
            if any(_iou(box, o['bbox']) > spec.max_iou for o in objects):
                continue
            region = image[y:y + h, x:x + w]
            color = _ink_color(rng, region)
            region += alpha[..., None] * (color - region)
            occupied[y:y + h, x:x + w] |= ink
            mask = np.zeros((height, width), dtype=bool)
            mask[y:y + h, x:x + w] = ink
            objects.append(
                dict(bbox=box, label=int(labels[scan_id]), scan=scan_id,
                     cell_size=(cell_h, cell_w), mask=mask))
            break
    image = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    return image, objects


def _coco_json(spec: DigitsDetSpec, split: str, images: List[dict],
               annotations: List[dict]) -> dict:
    return dict(
        info=dict(
            description=f'lors_det digits detection demo, {split} split',
            version=str(GENERATOR_VERSION),
            source='scikit-learn load_digits (UCI optical recognition of '
            'handwritten digits)',
            generator_args=spec.to_dict()),
        licenses=[],
        images=images,
        annotations=annotations,
        categories=CATEGORIES)


def write_split(root: str, spec: DigitsDetSpec, split: str, scans: np.ndarray,
                labels: np.ndarray, pool: np.ndarray) -> None:
    """Write the PNG images and the COCO json of one split under ``root``."""
    num_images = spec.num_train if split == 'train' else spec.num_val
    os.makedirs(osp.join(root, img_dir_of(split)), exist_ok=True)
    images, annotations = [], []
    for i in range(num_images):
        image, objects = render_image(spec, scans, labels, pool, split, i)
        file_name = f'{split}_{i:05d}.png'
        Image.fromarray(image).save(
            osp.join(root, img_dir_of(split), file_name), compress_level=6)
        img_id = i + 1
        images.append(
            dict(id=img_id, file_name=file_name, width=spec.img_size[0],
                 height=spec.img_size[1]))
        for obj in objects:
            x, y, w, h = obj['bbox']
            annotations.append(
                dict(id=len(annotations) + 1, image_id=img_id,
                     category_id=obj['label'] + 1, bbox=[x, y, w, h],
                     area=w * h, iscrowd=0, sklearn_index=obj['scan']))
    with open(osp.join(root, ann_file_of(split)), 'w') as f:
        json.dump(_coco_json(spec, split, images, annotations), f)


GENERATOR_NAME = 'lors_det.datasets.digits'
# Generation writes into a fresh folder of this name prefix inside the root, then moves the
# files into place: an interrupted run leaves only such a folder, which the next call removes.
STAGING_PREFIX = '.digits-staging-'
_LEGACY_LOCK_FILE = '.lock'  # where earlier versions kept their lock


def _manifest(spec: DigitsDetSpec, files: Optional[List[str]] = None) -> dict:
    manifest = dict(generator=GENERATOR_NAME, generator_version=GENERATOR_VERSION,
                    args=spec.to_dict())
    if files is not None:
        manifest['files'] = files
    return manifest


def _read_manifest(root: str) -> Optional[dict]:
    try:
        with open(osp.join(root, MANIFEST_FILE)) as f:
            manifest = json.load(f)
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


def _is_ours(manifest: Optional[dict]) -> bool:
    return manifest is not None and manifest.get('generator') == GENERATOR_NAME


def is_up_to_date(root: str, spec: DigitsDetSpec) -> bool:
    """Whether ``root`` holds a complete dataset generated with ``spec``."""
    manifest = _read_manifest(root)
    if not _is_ours(manifest) or {k: manifest.get(k) for k in _manifest(spec)} != \
            _manifest(spec):
        return False
    return all(osp.isfile(osp.join(root, ann_file_of(s))) for s in SPLITS)


def _foreign_entries(root: str) -> List[str]:
    """What ``root`` holds besides the generator's lock and staging folders."""
    if not osp.isdir(root):
        return []
    return sorted(e for e in os.listdir(root)
                  if e != _LEGACY_LOCK_FILE and not e.startswith(STAGING_PREFIX))


def _refuse_foreign_folder(root: str) -> None:
    """Raise unless ``root`` is empty, missing, or holds a dataset of this generator."""
    if _is_ours(_read_manifest(root)):
        return
    entries = _foreign_entries(root)
    if entries:
        shown = ', '.join(entries[:8]) + (', ...' if len(entries) > 8 else '')
        raise FileExistsError(
            f'{root!r} is not empty ({shown}) and has no {MANIFEST_FILE} of the digits '
            'generator: refusing to write the generated dataset there (nothing was changed). '
            'Set data_root to an empty or new folder.')


def _generated_files(root: str, manifest: dict) -> List[str]:
    """The files (relative to ``root``) a previous generation wrote, from its manifest or,
    for manifests written before the list was recorded, from its annotation files."""
    files = manifest.get('files')
    if isinstance(files, list):
        return [f for f in files if isinstance(f, str)]
    files = []
    for split in SPLITS:
        try:
            with open(osp.join(root, ann_file_of(split))) as f:
                images = json.load(f)['images']
        except (OSError, ValueError, KeyError, TypeError):
            continue
        files.append(ann_file_of(split))
        files += [img_dir_of(split) + str(img.get('file_name')) for img in images
                  if isinstance(img, dict)]
    return files


def _inside(root: str, relative: str) -> Optional[str]:
    """``root/relative`` if it stays inside ``root`` (no '..', no absolute path), else None."""
    path = osp.realpath(osp.join(root, relative))
    return path if path.startswith(osp.realpath(root) + os.sep) else None


def _remove_generated(root: str, manifest: dict) -> None:
    """Remove exactly the files of the previous generation (and its folders, once empty)."""
    for relative in _generated_files(root, manifest):
        path = _inside(root, relative)
        if path is not None and osp.isfile(path):
            os.remove(path)
    for folder in ('annotations', *[img_dir_of(s) for s in SPLITS]):
        path = osp.join(root, folder)
        if osp.isdir(path) and not os.listdir(path):
            os.rmdir(path)
    os.remove(osp.join(root, MANIFEST_FILE))


@contextmanager
def _exclusive(root: str):
    """Serialise generation between processes (e.g. distributed ranks) on one machine. The lock
    file lives in the temp folder, so nothing is written into ``root`` before it is checked."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no concurrent generation support
        yield
        return
    key = hashlib.sha1(osp.realpath(root).encode()).hexdigest()[:16]
    with open(osp.join(tempfile.gettempdir(), f'lors_det-digits-{key}.lock'), 'w') as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _generate_into(root: str, spec: DigitsDetSpec) -> None:
    """Write the dataset in a staging folder, then move its files into ``root`` (refusing to
    overwrite a file that is already there) and write the manifest that lists them."""
    staging = tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=root)
    try:
        scans, labels = load_digit_scans()
        pools = split_scan_indices(labels, spec.val_fraction, spec.seed)
        os.makedirs(osp.join(staging, 'annotations'))
        for split in SPLITS:
            write_split(staging, spec, split, scans, labels, pools[split])
        files = sorted(osp.relpath(osp.join(d, f), staging)
                       for d, _, names in os.walk(staging) for f in names)
        taken = [f for f in files if osp.lexists(osp.join(root, f))]
        if taken:
            raise FileExistsError(
                f'{root!r}: {len(taken)} files the digits generator would write already exist '
                f'and were not written by it ({", ".join(taken[:5])}); nothing was overwritten')
        for relative in files:
            os.makedirs(osp.dirname(osp.join(root, relative)), exist_ok=True)
            os.replace(osp.join(staging, relative), osp.join(root, relative))
        with open(osp.join(staging, MANIFEST_FILE), 'w') as f:
            json.dump(_manifest(spec, files), f, indent=2)
        os.replace(osp.join(staging, MANIFEST_FILE), osp.join(root, MANIFEST_FILE))
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def ensure_digits_dataset(root: str = 'data/digits_det', **spec_kwargs) -> str:
    """Generate the digits dataset into ``root`` unless it is already there.

    ``spec_kwargs`` are the fields of :class:`DigitsDetSpec`. Nothing that the generator did not
    write is ever removed or overwritten: a non-empty ``root`` without the generator's manifest
    is refused (``FileExistsError`` naming it); a dataset generated with other arguments is
    replaced by removing exactly the files its manifest lists. The files are written to a
    staging folder and moved into place, the manifest last, so an interrupted run leaves
    either the previous state or a staging folder that the next call removes.

    Returns:
        ``root``.
    """
    spec = DigitsDetSpec(**spec_kwargs)
    if is_up_to_date(root, spec):
        return root
    with _exclusive(root):
        if is_up_to_date(root, spec):  # another process finished while we waited
            return root
        _refuse_foreign_folder(root)
        os.makedirs(root, exist_ok=True)
        for entry in os.listdir(root):  # staging folders of interrupted runs
            if entry.startswith(STAGING_PREFIX):
                shutil.rmtree(osp.join(root, entry), ignore_errors=True)
        manifest = _read_manifest(root)
        if _is_ours(manifest):
            _remove_generated(root, manifest)
        _generate_into(root, spec)
    return root
