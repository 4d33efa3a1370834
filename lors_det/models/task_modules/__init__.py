from .batched_matching import hungarian_assign_batch

__all__ = ['hungarian_assign_batch']
