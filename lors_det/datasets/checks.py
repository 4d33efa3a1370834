# Copyright (c) lors_det authors.
"""Config checks run by ``tools/train.py`` / ``tools/test.py`` before anything is built.

They turn the usual late, cryptic failures (``FileNotFoundError`` deep inside pycocotools,
a shape mismatch in the classification loss) into one early error naming the config key to
fix.
"""
import os
import os.path as osp
import re
from typing import Iterator, List, Optional, Sequence, Tuple

_URI = re.compile(r'^[a-zA-Z][a-zA-Z0-9+.-]*://')
# Model sub-trees whose ``num_classes`` is not the number of dataset classes (the RPN is
# class-agnostic, a classification backbone may carry its own head size).
_NOT_CLASS_HEADS = ('backbone', 'neck', 'rpn_head', 'data_preprocessor', 'train_cfg',
                    'test_cfg', 'init_cfg')


def _is_local(path: Optional[str]) -> bool:
    return bool(path) and not _URI.match(str(path))


def resolve_dataset_paths(dataset_cfg) -> Tuple[str, str, dict]:
    """(data_root, ann_file, data_prefix) of a dataset config, joined the way mmengine's
    ``BaseDataset`` joins them (relative paths are taken under ``data_root``)."""
    data_root = dataset_cfg.get('data_root', '') or ''
    ann_file = dataset_cfg.get('ann_file', '') or ''
    if ann_file and data_root and not osp.isabs(ann_file) and not _URI.match(ann_file):
        ann_file = osp.join(data_root, ann_file)
    prefixes = {}
    for key, prefix in (dataset_cfg.get('data_prefix') or {}).items():
        if prefix and data_root and not osp.isabs(prefix) and not _URI.match(prefix):
            prefix = osp.join(data_root, prefix)
        prefixes[key] = prefix
    return data_root, ann_file, prefixes


def dataset_path_problems(dataset_cfg, key: str) -> List[str]:
    """Human readable problems with the local files of one (non-wrapper) dataset config.

    Args:
        dataset_cfg: e.g. ``cfg.train_dataloader.dataset``.
        key: its dotted config key, used in the messages.
    """
    if dataset_cfg.get('backend_args'):  # files live in a remote/custom storage backend
        return []
    data_root, ann_file, prefixes = resolve_dataset_paths(dataset_cfg)
    link = f'`ln -s /path/to/dataset {data_root.rstrip("/")}`' if data_root else 'a symlink'
    fix_root = (f'put the dataset there (e.g. {link}) or set '
                f'`--cfg-options {key}.data_root=/path/to/dataset/`')
    if _is_local(data_root) and not osp.isdir(data_root):
        return [f'{key}.data_root: data root {data_root!r} does not exist (relative to '
                f'{osp.abspath(".")!r}); {fix_root}']
    problems = []
    if _is_local(ann_file) and not osp.isfile(ann_file):
        problems.append(f'{key}.ann_file: annotation file {ann_file!r} not found; fix '
                        f'`{key}.ann_file` (relative to `{key}.data_root`) or {fix_root}')
    img_dir = prefixes.get('img', prefixes.get('img_path'))
    if _is_local(img_dir) and not osp.isdir(img_dir):
        problems.append(f'{key}.data_prefix.img: image folder {img_dir!r} not found; fix '
                        f'`{key}.data_prefix.img` (relative to `{key}.data_root`)')
    return problems


def _leaf_datasets(dataset_cfg, key: str) -> Iterator[Tuple[str, dict]]:
    """Yield (key, cfg) of every real dataset inside wrappers (Repeat/Concat/...Dataset)."""
    if 'datasets' in dataset_cfg:
        for i, sub in enumerate(dataset_cfg['datasets']):
            yield from _leaf_datasets(sub, f'{key}.datasets.{i}')
    elif 'dataset' in dataset_cfg:
        yield from _leaf_datasets(dataset_cfg['dataset'], f'{key}.dataset')
    else:
        yield key, dataset_cfg


def _dataset_class(dataset_cfg):
    from mmdet.registry import DATASETS
    dataset_type = dataset_cfg.get('type')
    if isinstance(dataset_type, type):
        return dataset_type
    return DATASETS.get(dataset_type) if dataset_type else None


def dataloader_datasets(cfg, splits: Sequence[str]) -> Iterator[Tuple[str, dict]]:
    """Yield (dotted key, cfg) of every real dataset of ``{split}_dataloader``, split by split,
    looking inside dataset wrappers."""
    for split in splits:
        loader = cfg.get(f'{split}_dataloader')
        if loader and loader.get('dataset'):
            yield from _leaf_datasets(loader['dataset'], f'{split}_dataloader.dataset')


def check_data_paths(cfg, splits: Sequence[str] = ('train', 'val')) -> None:
    """Raise ``FileNotFoundError`` naming the keys to fix if a dataset's files are missing.

    Covers the datasets of ``{split}_dataloader`` and the ``ann_file`` of the matching
    ``{split}_evaluator`` (CocoMetric reads it itself). Datasets whose class sets
    ``GENERATES_DATA = True`` (the embedded digits data) are skipped: they create their files.
    """
    problems, generated_roots = [], []
    for key, dataset_cfg in dataloader_datasets(cfg, splits):
        if getattr(_dataset_class(dataset_cfg), 'GENERATES_DATA', False):
            generated_roots.append(osp.abspath(dataset_cfg.get('data_root') or '.'))
            continue
        problems += dataset_path_problems(dataset_cfg, key)

    def generated(path: str) -> bool:  # e.g. the digits val json, written on first use
        return any(osp.abspath(path).startswith(root + os.sep) for root in generated_roots)

    for split in splits:
        evaluators = cfg.get(f'{split}_evaluator') or []
        single = not isinstance(evaluators, (list, tuple))
        for i, evaluator in enumerate([evaluators] if single else evaluators):
            ann_file = evaluator.get('ann_file') if hasattr(evaluator, 'get') else None
            if _is_local(ann_file) and not osp.isfile(ann_file) \
                    and not evaluator.get('backend_args') and not generated(ann_file):
                key = f'{split}_evaluator' + ('' if single else f'.{i}')
                problems.append(f'{key}.ann_file: annotation file {ann_file!r} not found; '
                                f'set `--cfg-options {key}.ann_file=...`')
    if problems:
        raise FileNotFoundError('Dataset files are missing:\n  - ' + '\n  - '.join(problems))


def dataset_classes(dataset_cfg) -> Optional[tuple]:
    """Class names a dataset config will use: ``metainfo.classes`` or the class METAINFO."""
    metainfo = dataset_cfg.get('metainfo') or {}
    if metainfo.get('classes') is not None:
        return tuple(metainfo['classes'])
    cls = _dataset_class(dataset_cfg)
    classes = getattr(cls, 'METAINFO', {}).get('classes')
    return tuple(classes) if classes is not None else None


def _num_classes_keys(node, key: str) -> Iterator[Tuple[str, int]]:
    """Yield (dotted key, value) of every ``num_classes`` in a model config."""
    if isinstance(node, dict):
        for name, value in node.items():
            if name in _NOT_CLASS_HEADS:
                continue
            if name == 'num_classes' and isinstance(value, int):
                yield f'{key}.{name}', value
            else:
                yield from _num_classes_keys(value, f'{key}.{name}')
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            yield from _num_classes_keys(value, f'{key}[{i}]')


def check_num_classes(cfg, splits: Sequence[str] = ('train', 'val', 'test')) -> None:
    """Raise ``ValueError`` if a head's ``num_classes`` differs from a dataset's classes.

    Every ``num_classes`` under ``cfg.model`` (outside backbone, neck, RPN and the train/test
    cfgs), e.g. ``model.roi_head.bbox_head[i].num_classes`` of each AdaMixer stage, must equal
    the number of classes of every dataset of ``{split}_dataloader``.
    """
    heads = list(_num_classes_keys(cfg.get('model') or {}, 'model'))
    if not heads:
        return
    problems = []
    for data_key, dataset_cfg in dataloader_datasets(cfg, splits):
        classes = dataset_classes(dataset_cfg)
        if classes is None:
            continue
        wrong = [(k, v) for k, v in heads if v != len(classes)]
        if wrong:
            shown = ', '.join(repr(c) for c in classes[:5]) + (', ...' if len(classes) > 5 else '')
            keys = '\n    '.join(f'{k} = {v}' for k, v in wrong)
            cli = wrong[0][0].replace('[', '.').replace(']', '')
            problems.append(
                f'{data_key} has {len(classes)} classes ({shown}) but\n    {keys}\n'
                f'  set these to {len(classes)} in the config (or e.g. '
                f'`--cfg-options {cli}={len(classes)}`), or set '
                f'`{data_key}.metainfo.classes`')
    if problems:
        raise ValueError('num_classes does not match the dataset:\n  ' + '\n  '.join(problems))


def _pretrained_checkpoints(node, key: str) -> Iterator[Tuple[str, str]]:
    """(config key, path) of every ``init_cfg=dict(type='Pretrained', checkpoint=...)``."""
    if isinstance(node, dict):
        if node.get('type') == 'Pretrained' and node.get('checkpoint'):
            yield f'{key}.checkpoint', str(node['checkpoint'])
        for name, value in node.items():
            yield from _pretrained_checkpoints(value, f'{key}.{name}')
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            yield from _pretrained_checkpoints(value, f'{key}[{i}]')


def check_checkpoint_paths(cfg, pretrained: bool = True,
                           load_from_key: str = 'load_from') -> None:
    """Local checkpoint files the run will read exist: ``load_from`` (named ``load_from_key``
    in the message, e.g. the CHECKPOINT argument of tools/test.py) and, when ``pretrained``
    (training initialises weights), every ``Pretrained`` ``init_cfg`` of the model."""
    wanted = []
    if cfg.get('load_from'):
        wanted.append((load_from_key, str(cfg.load_from)))
    if pretrained:
        wanted += list(_pretrained_checkpoints(cfg.get('model', {}), 'model'))
    problems = [f'{key}: checkpoint file {path!r} not found (relative to '
                f'{osp.abspath(".")!r})'
                for key, path in wanted if _is_local(path) and not osp.isfile(
                    osp.expanduser(path))]
    if problems:
        raise FileNotFoundError('\n  '.join(problems))


def check_config(cfg, splits: Sequence[str], load_from_key: str = 'load_from') -> None:
    """All checks a tool runs before building the runner."""
    check_checkpoint_paths(cfg, pretrained='train' in splits, load_from_key=load_from_key)
    check_data_paths(cfg, splits)
    check_num_classes(cfg, splits)
