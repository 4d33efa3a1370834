"""Work-arounds for the pinned stack (torch 2.9, mmengine 0.10.7, numpy 1.26).

1. Checkpoints. torch >= 2.6 defaults ``torch.load(weights_only=True)``; mmengine 0.10.7 calls
   ``torch.load`` without the flag, so its own checkpoints are refused on ``resume`` /
   ``load_checkpoint``. We allow-list exactly the globals those checkpoints contain instead of
   switching the safety off (``get_unsafe_globals_in_checkpoint`` on a checkpoint saved by
   ``CheckpointHook`` lists them, except the dtype classes, which the unpickler checks when it
   sets a dtype's state rather than as named globals; tests/tools/test_checkpoint_allowlist.py
   keeps the list honest: every entry needed, nothing else accepted):

   * the message hub's ``HistoryBuffer`` objects (``log_scalars``);
   * inside them, numpy arrays: ``numpy.core.multiarray._reconstruct``, ``numpy.ndarray``,
     ``numpy.dtype`` and, since numpy 1.25 builds dtypes as instances of per-type classes,
     ``numpy.dtypes.Float64DType`` (logged values) and ``numpy.dtypes.Int64DType`` (counts);
     ``numpy.core.multiarray.scalar`` for numpy scalars (the message hub's ``eta``);
   * ``builtins.getattr``: ``HistoryBuffer.__getstate__`` stores its statistics methods
     (``HistoryBuffer.min`` ...), which pickle protocol 2 writes as
     ``getattr(HistoryBuffer, 'min')``. The weights-only unpickler still refuses to *call*
     anything that is not allow-listed, so ``getattr`` only reads attributes of objects that
     were already allowed.

2. Distributed training without CUDA. mmengine's ``init_dist`` always calls
   ``torch.cuda.set_device`` and its default DDP wrapper passes ``device_ids=[LOCAL_RANK]``;
   both fail on a CPU-only machine. :func:`adapt_distributed_to_device` switches the default
   'nccl' backend to 'gloo', initialises the process group itself (torchrun or srun
   variables) and wraps the model with ``device_ids=None``.
"""
import os

import numpy as np
import torch


def _numpy_globals() -> list:
    """numpy types used when pickling arrays and scalars (numpy 1.x and 2.x layouts)."""
    # numpy 2 moved numpy.core to numpy._core (and warns on access to the old name)
    if int(np.__version__.split('.')[0]) >= 2:
        from numpy._core import multiarray
    else:
        from numpy.core import multiarray
    items = [np.ndarray, np.dtype, multiarray._reconstruct, multiarray.scalar]
    dtypes = getattr(np, 'dtypes', None)  # numpy >= 1.25
    if dtypes is not None:
        items += [dtypes.Float64DType, dtypes.Int64DType]
    return items


def checkpoint_safe_globals() -> list:
    """Globals of mmengine checkpoints that ``torch.load(weights_only=True)`` must accept."""
    from mmengine.logging.history_buffer import HistoryBuffer
    return _numpy_globals() + [HistoryBuffer, getattr]


def register_checkpoint_safe_globals() -> None:
    """Idempotently allow-list the globals of mmengine checkpoints for weights-only loads."""
    add = getattr(torch.serialization, 'add_safe_globals', None)
    if add is None:  # torch < 2.4 loads everything anyway
        return
    add(checkpoint_safe_globals())


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
