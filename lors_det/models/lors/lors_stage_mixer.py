"""One decoder stage's view of the shared :class:`LORSAdaptiveMixingStack`.

AdaMixer's ``AdaptiveSamplingMixing`` builds its mixer from ``mixing_cfg`` and calls
``mixer(sampled, query)``. With LORS all stages use one stack (shared weights + per-stage private
terms), which is owned by the decoder (:class:`~lors_det.models.roi_heads.AdaMixerLORSDecoder`).
:class:`LORSStageMixer` is the mixer each stage gets: it holds its ``stage_idx`` and a *plain
attribute* reference to the stack, not a registered child module, so

* the stack's parameters appear once in ``parameters()`` / ``state_dict()`` (under the decoder),
  and no stage-level ``modules()`` loop (e.g. the stage's xavier re-init) ever reaches them;
* ``AdaptiveSamplingMixing`` and the rest of the stage (offsets, attention, FFN, norms, heads)
  stay unchanged and unshared.

``copy.deepcopy`` of the decoder keeps the sharing (the stack is copied once, through the memo).
"""
from typing import List, Optional

import torch.nn as nn
from mmdet.registry import MODELS
from torch import Tensor


@MODELS.register_module()
class LORSStageMixer(nn.Module):
    """Mixer of decoder stage ``stage_idx``: ``forward(sampled, query) = stack(sampled, query,
    stage_idx)``.

    It has no parameters of its own. The decoder calls :meth:`bind` right after building the
    stages; an unbound mixer refuses to run.

    Args:
        in_dim, in_points, out_points, n_groups, query_dim, out_dim: filled in by
            ``AdaptiveSamplingMixing``; checked against the stack in :meth:`bind`.
        stage_idx: this stage's index into the stack (set by the decoder).
    """

    def __init__(self,
                 in_dim: int,
                 in_points: int,
                 out_points: int,
                 n_groups: int,
                 query_dim: int,
                 out_dim: Optional[int] = None,
                 stage_idx: Optional[int] = None):
        super().__init__()
        self.in_dim = in_dim
        self.out_dim = in_dim if out_dim is None else out_dim
        self.in_points = in_points
        self.out_points = out_points
        self.n_groups = n_groups
        self.query_dim = query_dim
        self.stage_idx = stage_idx
        # plain attribute, not a submodule: the decoder owns (and registers) the stack
        object.__setattr__(self, '_stack', None)

    @property
    def stack(self):
        """The shared :class:`LORSAdaptiveMixingStack` (None until :meth:`bind`)."""
        return self._stack

    def bind(self, stack: nn.Module, stage_idx: int) -> None:
        """Point this mixer at ``stack`` as its stage ``stage_idx``; the dims must agree."""
        if self.stage_idx is not None and self.stage_idx != stage_idx:
            raise ValueError(f'mixing_cfg.stage_idx={self.stage_idx} but this mixer is stage '
                             f'{stage_idx} of the decoder; leave stage_idx unset')
        if self.out_dim != self.in_dim:
            raise ValueError(f'LORSStageMixer: out_dim={self.out_dim} must equal in_dim='
                             f'{self.in_dim} (feat_channels); the LORS stack mixes channels '
                             'C -> C')
        expected = dict(in_dim=stack.feat_channels, n_groups=stack.n_groups,
                        in_points=stack.in_points, out_points=stack.out_points,
                        query_dim=stack.content_dim)
        for key, value in expected.items():
            if getattr(self, key) != value:
                raise ValueError(f'LORSStageMixer of stage {stage_idx}: {key}={getattr(self, key)}'
                                 f' does not match the shared LORS stack ({key}={value})')
        if not 0 <= stage_idx < stack.num_stages:
            raise IndexError(f'stage_idx={stage_idx} out of range for the LORS stack with '
                             f'num_stages={stack.num_stages}')
        self.stage_idx = stage_idx
        object.__setattr__(self, '_stack', stack)

    def forward(self, sampled: Tensor, query: Tensor) -> Tensor:
        """``sampled`` [B, N, G, P_in, C], ``query`` [B, N, D] -> [B, N, D]."""
        if self._stack is None:
            raise RuntimeError('LORSStageMixer is not bound to a LORS stack: build it through '
                               'AdaMixerLORSDecoder (roi_head.type), which owns the stack')
        return self._stack(sampled, query, self.stage_idx)

    def init_weights(self) -> None:
        """Nothing to do: the decoder re-initialises the shared stack once, after every stage's
        own init (AdaMixer's xavier loop) has run."""

    def referenced_parameters(self) -> List[nn.Parameter]:
        """The stack parameters this stage uses: the shared ones and its own private terms
        (used by :func:`lors_det.utils.complexity.count_parameters` for the shared/private
        split)."""
        stack, i = self._stack, self.stage_idx
        if stack is None:
            return []
        modules = [stack.parameter_generator, stack.core_generators[i]]
        params = [p for m in modules for p in m.parameters()]
        params += [stack.ml[i], stack.mr[i], stack.sl[i], stack.sr[i]]
        out_proj = stack.out_proj
        params += [out_proj.shared_weight, out_proj.private_B[i], out_proj.private_A[i]]
        if out_proj.shared_bias is not None:
            params.append(out_proj.shared_bias)
        if out_proj.private_bias is not None:
            params.append(out_proj.private_bias[i])
        return params

    def extra_repr(self) -> str:
        bound = 'unbound' if self._stack is None else 'bound to the decoder\'s lors_mixing'
        return f'stage_idx={self.stage_idx}, {bound}'
