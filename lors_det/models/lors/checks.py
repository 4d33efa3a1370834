"""Validation of LORS options: errors name the option and say what is allowed."""
import numbers
from typing import List, Optional, Sequence, Union


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_int(value, key: str, low: int = 1, high: Optional[int] = None,
              high_name: Optional[str] = None) -> int:
    """``value`` as an int in ``[low, high]``, or a ValueError starting with ``key``."""
    if not _is_int(value) or value < low or (high is not None and value > high):
        bound = f'[{low}, {high_name + "=" if high_name else ""}{high}]' if high is not None \
            else f'>= {low}'
        raise ValueError(f'{key}: must be an int in {bound}, got {value!r}')
    return int(value)


def check_choice(value, choices: Sequence, key: str):
    if value not in choices:
        raise ValueError(f'{key}: must be one of {list(choices)}, got {value!r}')
    return value


def term_ranks(rank: Union[int, Sequence[int]], num_terms: int, key: str,
               high: int, high_name: str) -> List[int]:
    """The rank of each of ``num_terms`` terms: one int for all, or a list of ``num_terms``."""
    if isinstance(rank, (list, tuple)):
        if len(rank) != num_terms:
            raise ValueError(f'{key}: one rank per term ({num_terms}), got {list(rank)}')
        return [check_int(r, f'{key}[{i}]', high=high, high_name=high_name)
                for i, r in enumerate(rank)]
    return [check_int(rank, key, high=high, high_name=high_name)] * num_terms
