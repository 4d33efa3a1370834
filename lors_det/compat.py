"""Distributed training without CUDA on the pinned stack (mmengine 0.10.7).

mmengine's ``init_dist`` always calls ``torch.cuda.set_device`` and its default DDP wrapper
passes ``device_ids=[LOCAL_RANK]``; both fail on a CPU-only machine.
:func:`adapt_distributed_to_device` switches the default 'nccl' backend to 'gloo', initialises
the process group itself (torchrun or srun variables) and wraps the model with
``device_ids=None``. (Checkpoint loading under torch >= 2.6 is :mod:`lors_det.checkpoint`.)
"""
import os

import torch


def close_distributed() -> None:
    """Tear the process group down before the interpreter exits: left to interpreter
    shutdown, gloo's threads occasionally abort the process ('terminate called without an
    active exception', exit code -6) after the run itself succeeded."""
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _slurm_env_to_torch_env(port=None) -> None:
    """Set RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT from srun's variables, as
    mmengine's slurm ``init_dist`` does: ``port`` (``env_cfg.dist_cfg.port``) wins over an
    existing MASTER_PORT, default 29500; an existing MASTER_ADDR is kept."""
    import subprocess
    for key in ('SLURM_PROCID', 'SLURM_NTASKS', 'SLURM_NODELIST'):
        if key not in os.environ:
            raise RuntimeError(f'--launcher slurm needs the environment variable {key} (set by '
                               'srun); use tools/slurm_train.sh or --launcher pytorch')
    os.environ['RANK'] = os.environ['SLURM_PROCID']
    os.environ['WORLD_SIZE'] = os.environ['SLURM_NTASKS']
    os.environ['LOCAL_RANK'] = os.environ.get('SLURM_LOCALID', '0')
    if port is not None:
        os.environ['MASTER_PORT'] = str(port)
    os.environ.setdefault('MASTER_PORT', '29500')
    if 'MASTER_ADDR' not in os.environ:
        nodes = os.environ['SLURM_NODELIST']
        os.environ['MASTER_ADDR'] = subprocess.getoutput(
            f'scontrol show hostname {nodes} | head -n1')


def adapt_distributed_to_device(cfg, launcher: str) -> None:
    """Make a distributed run work on machines without CUDA (changes ``cfg`` in place).

    Does nothing when ``launcher == 'none'`` or CUDA is available. Otherwise: a 'nccl'
    ``env_cfg.dist_cfg.backend`` (the default, which needs CUDA) becomes 'gloo'; the model
    is wrapped in ``MMDistributedDataParallel(device_ids=None)``; with the 'pytorch'
    launcher (torchrun) or 'slurm' (srun) the process group is created here, before the
    runner's ``init_dist`` would call ``torch.cuda.set_device``.
    """
    if launcher == 'none' or torch.cuda.is_available():
        return
    env_cfg = cfg.setdefault('env_cfg', {})
    dist_cfg = env_cfg.setdefault('dist_cfg', {})
    if dist_cfg.get('backend', 'nccl') == 'nccl':
        dist_cfg['backend'] = 'gloo'
    wrapper = cfg.get('model_wrapper_cfg') or dict(
        type='MMDistributedDataParallel',
        broadcast_buffers=False,
        find_unused_parameters=cfg.get('find_unused_parameters', False))
    wrapper.setdefault('device_ids', None)
    cfg.model_wrapper_cfg = wrapper
    if launcher not in ('pytorch', 'slurm'):
        return
    import torch.distributed as dist
    if dist.is_initialized():
        return
    if launcher == 'slurm':
        _slurm_env_to_torch_env(dist_cfg.get('port'))
    kwargs = {k: v for k, v in dist_cfg.items()
              if k not in ('backend', 'init_backend', 'port')}
    if 'timeout' in kwargs and not hasattr(kwargs['timeout'], 'total_seconds'):
        from datetime import timedelta
        kwargs['timeout'] = timedelta(seconds=kwargs['timeout'])
    dist.init_process_group(
        backend=dist_cfg['backend'],
        rank=int(os.environ['RANK']),
        world_size=int(os.environ['WORLD_SIZE']),
        **kwargs)
