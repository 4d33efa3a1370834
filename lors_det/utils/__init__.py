"""Model analysis helpers: parameter and FLOP counts by part (:mod:`.complexity`)."""
from .complexity import count_flops, count_fn_flops, count_parameters

__all__ = ['count_flops', 'count_fn_flops', 'count_parameters']
