"""Keeping a computation in full precision under autocast."""
import torch
from torch import Tensor


def full_precision(tensor: Tensor) -> Tensor:
    """``tensor`` as float32 if it is a reduced-precision float (bf16 / fp16); float32 and
    float64 tensors are returned unchanged."""
    if tensor.dtype in (torch.bfloat16, torch.float16):
        return tensor.float()
    return tensor
