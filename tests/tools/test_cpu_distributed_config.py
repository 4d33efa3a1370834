"""``lors_det.compat.adapt_distributed_to_device`` on a machine without CUDA (config side and
the srun-variable check; the process groups themselves run in test_dist_train.py)."""
import os

import pytest
import torch
from mmengine.config import Config

from lors_det.compat import _slurm_env_to_torch_env, adapt_distributed_to_device

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason='CPU-only behaviour')


def test_nccl_becomes_gloo_and_ddp_gets_no_device_ids():
    cfg = Config(dict(env_cfg=dict(dist_cfg=dict(backend='nccl'))))
    adapt_distributed_to_device(cfg, 'mpi')  # no process group is created for mpi
    assert cfg.env_cfg.dist_cfg.backend == 'gloo'
    assert cfg.model_wrapper_cfg == dict(type='MMDistributedDataParallel',
                                         broadcast_buffers=False,
                                         find_unused_parameters=False, device_ids=None)


def test_a_chosen_backend_and_wrapper_are_kept():
    cfg = Config(dict(env_cfg=dict(dist_cfg=dict(backend='mpi')),
                      model_wrapper_cfg=dict(type='MMDistributedDataParallel',
                                             find_unused_parameters=True)))
    adapt_distributed_to_device(cfg, 'mpi')
    assert cfg.env_cfg.dist_cfg.backend == 'mpi'
    assert cfg.model_wrapper_cfg.find_unused_parameters is True
    assert cfg.model_wrapper_cfg.device_ids is None


def test_single_process_is_left_alone():
    cfg = Config(dict(env_cfg=dict(dist_cfg=dict(backend='nccl'))))
    adapt_distributed_to_device(cfg, 'none')
    assert cfg.env_cfg.dist_cfg.backend == 'nccl' and 'model_wrapper_cfg' not in cfg


def test_slurm_without_srun_variables_names_the_missing_one(monkeypatch):
    for key in ('SLURM_PROCID', 'SLURM_NTASKS', 'SLURM_NODELIST'):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv('SLURM_PROCID', '1')
    with pytest.raises(RuntimeError, match='SLURM_NTASKS'):
        _slurm_env_to_torch_env()


def _forget_torch_env(monkeypatch):
    """Unset the variables that ``_slurm_env_to_torch_env`` writes, so that monkeypatch
    removes them again after the test (``delenv`` of an unset variable records nothing)."""
    for key in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'MASTER_PORT'):
        monkeypatch.setenv(key, '')
        monkeypatch.delenv(key)


def test_slurm_variables_become_torch_variables(monkeypatch):
    for key, value in dict(SLURM_PROCID='3', SLURM_NTASKS='8', SLURM_LOCALID='1',
                           SLURM_NODELIST='node[1-2]', MASTER_ADDR='node1').items():
        monkeypatch.setenv(key, value)
    _forget_torch_env(monkeypatch)
    _slurm_env_to_torch_env()
    assert (os.environ['RANK'], os.environ['WORLD_SIZE'], os.environ['LOCAL_RANK'],
            os.environ['MASTER_ADDR'], os.environ['MASTER_PORT']) == \
        ('3', '8', '1', 'node1', '29500')


def test_slurm_dist_cfg_port_wins_over_master_port(monkeypatch):
    for key, value in dict(SLURM_PROCID='0', SLURM_NTASKS='2', SLURM_NODELIST='node1',
                           MASTER_ADDR='node1').items():
        monkeypatch.setenv(key, value)
    _forget_torch_env(monkeypatch)
    monkeypatch.setenv('MASTER_PORT', '29500')
    _slurm_env_to_torch_env(port=29611)  # env_cfg.dist_cfg.port, as in mmengine's init_dist
    assert os.environ['MASTER_PORT'] == '29611'
