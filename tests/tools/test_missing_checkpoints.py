"""A missing checkpoint stops a tool at once, naming the config key (or argument) and the path,
before any dataloader or model is built; a damaged one names the file."""
import os.path as osp

import pytest
from mmengine.config import Config

from lors_det.datasets import check_config

from _tools_helpers import TINY_DIGITS, run_tool, write_tiny_config


@pytest.fixture
def tiny_cfg(tmp_path):
    # no data generated: the checkpoint check must come first
    return write_tiny_config(str(tmp_path / 'tiny.py'), str(tmp_path / 'no_data') + '/',
                             generator_cfg=TINY_DIGITS)


def test_missing_pretrained_and_load_from_name_their_keys(tiny_cfg):
    cfg = Config.fromfile(tiny_cfg)
    cfg.model.backbone.init_cfg = dict(type='Pretrained', checkpoint='weights/r18.pth')
    cfg.load_from = 'work_dirs/x/epoch_3.pth'
    with pytest.raises(FileNotFoundError) as error:
        check_config(cfg, splits=('train',))
    text = str(error.value)
    assert "model.backbone.init_cfg.checkpoint: checkpoint file 'weights/r18.pth' not found" \
        in text
    assert "load_from: checkpoint file 'work_dirs/x/epoch_3.pth' not found" in text
    # testing does not initialise weights: the pretrained file is not needed then
    cfg.load_from = None
    check_config(cfg, splits=('test',))
    # remote files are not checked here (mmengine downloads them)
    cfg.model.backbone.init_cfg.checkpoint = 'torchvision://resnet18'
    check_config(cfg, splits=('train',))


def test_test_tool_names_the_missing_checkpoint_argument(tiny_cfg, tmp_path):
    missing = str(tmp_path / 'nope.pth')
    proc = run_tool(['tools/test.py', tiny_cfg, missing, '--work-dir', str(tmp_path / 'w')],
                    check=False)
    assert proc.returncode != 0
    assert f"CHECKPOINT (tools/test.py argument): checkpoint file {missing!r} not found" \
        in proc.stderr
    assert not osp.exists(tmp_path / 'no_data')  # failed before the dataset was built


def test_train_tool_names_the_missing_resume_checkpoint(tiny_cfg, tmp_path):
    missing = str(tmp_path / 'nope.pth')
    proc = run_tool(['tools/train.py', tiny_cfg, '--resume', missing, '--work-dir',
                     str(tmp_path / 'w')], check=False)
    assert proc.returncode != 0
    assert f"--resume CHECKPOINT: checkpoint file {missing!r} not found" in proc.stderr
