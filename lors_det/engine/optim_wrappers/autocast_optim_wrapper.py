"""AutocastOptimWrapper: mixed precision by autocast alone, e.g. bfloat16 on CPU."""
from contextlib import contextmanager

import torch
from mmdet.registry import OPTIM_WRAPPERS
from mmengine.optim import OptimWrapper


@OPTIM_WRAPPERS.register_module()
class AutocastOptimWrapper(OptimWrapper):
    """``OptimWrapper`` whose forward runs under ``torch.autocast(device, dtype)``.

    mmengine's ``AmpOptimWrapper`` (float16 with loss scaling) refuses to run without a GPU.
    bfloat16 has float32's exponent range, so it needs no loss scaling: this wrapper only adds
    the autocast context. ``tools/train.py --amp`` uses it on machines without CUDA. Parts that
    must stay float32 (3D sampling, the generated mixing matrices, losses) switch autocast off
    themselves.

    Args:
        dtype (str): 'bfloat16' (default) or 'float16'.
        **kwargs: as ``OptimWrapper``.
    """

    def __init__(self, *args, dtype: str = 'bfloat16', **kwargs):
        super().__init__(*args, **kwargs)
        if dtype not in ('bfloat16', 'float16'):
            raise ValueError(f'optim_wrapper.dtype must be bfloat16 or float16, got {dtype!r}')
        self.dtype = getattr(torch, dtype)

    @contextmanager
    def optim_context(self, model):
        device = next(model.parameters()).device.type
        with super().optim_context(model), torch.autocast(device, dtype=self.dtype):
            yield
