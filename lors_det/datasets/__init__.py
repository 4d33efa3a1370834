# Copyright (c) lors_det authors.
from .checks import check_config, check_data_paths, check_num_classes
from .coco import CheckedCocoDataset
from .digits import DIGITS_CLASSES, DigitsDetSpec, ensure_digits_dataset
from .digits_dataset import DigitsDetDataset

__all__ = [
    'CheckedCocoDataset', 'DigitsDetDataset', 'DigitsDetSpec', 'DIGITS_CLASSES',
    'ensure_digits_dataset', 'check_config', 'check_data_paths', 'check_num_classes'
]
