"""VeRA: Vector-based Random Matrix Adaptation (Kopiczko et al., ICLR 2024).

h = W0 x + Λ_b B Λ_d A x, with one pair of frozen random matrices A (r x max d_in) and
B (max d_out x r) shared by every wrapped layer, and per layer the trainable vectors
b (d_out, zero init) and d (r, constant ``d_initial``), i.e. d_out + r trainable parameters.
A layer of weight (d_out, d_in) uses the slices ``A[:, :d_in]`` and ``B[:d_out]``; a conv of
weight (out, in/groups, kh, kw) is the matrix (out, in/groups*kh*kw).
"""
from typing import List, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmdet.registry import MODELS
from mmengine.logging import print_log

from .base import AdapterBase, AdapterLayerMixin, weight_matrix_shape


def vera_projections(rank: int, max_in: int, max_out: int, seed: int):
    """The frozen A (rank, max_in) and B (max_out, rank), regenerated bit-identically from seed.

    Kaiming-uniform (ReLU gain, fan_in of the allocated tensor: bounds sqrt(6/max_in) and
    sqrt(6/rank)), drawn from a private CPU generator, A first: independent of the global RNG,
    so every DDP rank builds the same pair.
    """
    generator = torch.Generator(device='cpu').manual_seed(int(seed))
    proj_a = torch.empty(rank, max_in)
    proj_b = torch.empty(max_out, rank)
    nn.init.kaiming_uniform_(proj_a, a=0, mode='fan_in', nonlinearity='relu', generator=generator)
    nn.init.kaiming_uniform_(proj_b, a=0, mode='fan_in', nonlinearity='relu', generator=generator)
    return proj_a, proj_b


class _VeRALayer(AdapterLayerMixin):
    adapter_param_names = ('vera_lambda_b', 'vera_lambda_d')

    def _init_vera(self, base, adapter: 'VeRA', d_initial: float, dropout: float,
                   forward_mode: str) -> None:
        self._adopt_base(base, adapter, forward_mode, dropout)
        self.d_out, self.d_in = weight_matrix_shape(base)
        self.rank = adapter.rank
        self.d_initial = float(d_initial)
        device = base.weight.device
        # Raw Parameters (not nn.Linear children): parent initialisers cannot reset them.
        self.vera_lambda_b = nn.Parameter(torch.zeros(self.d_out, device=device))
        self.vera_lambda_d = nn.Parameter(
            torch.full((self.rank,), self.d_initial, device=device))

    def _projections(self) -> Tuple[torch.Tensor, torch.Tensor]:
        adapter = self._adapter
        return adapter.vera_A[:, :self.d_in], adapter.vera_B[:self.d_out, :]

    def _adapter_dtype(self) -> torch.dtype:
        return self.vera_lambda_b.dtype

    def get_delta_weight(self) -> torch.Tensor:
        """ΔW = Λ_b B_s Λ_d A_s in the base weight's shape (adapter dtype)."""
        proj_a, proj_b = self._projections()
        delta = (self.vera_lambda_b[:, None] * proj_b) @ (self.vera_lambda_d[:, None] * proj_a)
        return self._as_weight_shape(delta)

    def extra_repr(self) -> str:
        return f'{super().extra_repr()}, vera_rank={self.rank}'


class VeRALinear(_VeRALayer, nn.Linear):
    """nn.Linear with a VeRA branch; ``weight``/``bias`` are the base layer's Parameters."""

    def __init__(self, base: nn.Linear, adapter: 'VeRA', d_initial: float = 0.1,
                 dropout: float = 0.0, forward_mode: str = 'factorised') -> None:
        self._init_vera(base, adapter, d_initial, dropout, forward_mode)

    def _factorised_delta(self, x: torch.Tensor) -> torch.Tensor:
        proj_a, proj_b = self._projections()
        hidden = F.linear(x, proj_a.to(x.dtype)) * self.vera_lambda_d
        return F.linear(hidden, proj_b.to(x.dtype)) * self.vera_lambda_b


class VeRAConv2d(_VeRALayer, nn.Conv2d):
    """nn.Conv2d with a VeRA branch, any kernel/stride/padding/dilation (groups in merged mode).

    'merged' (default) convolves with W0 + ΔW through the base ``_conv_forward``, so every conv
    option is honoured; 'factorised' runs A as a kxk conv with the base geometry, then B as 1x1.
    """

    def __init__(self, base: nn.Conv2d, adapter: 'VeRA', d_initial: float = 0.1,
                 dropout: float = 0.0, forward_mode: str = 'merged') -> None:
        self._init_vera(base, adapter, d_initial, dropout, forward_mode)

    def _factorised_delta(self, x: torch.Tensor) -> torch.Tensor:
        proj_a, proj_b = self._projections()
        kernel_a = proj_a.reshape(self.rank, *self.weight.shape[1:]).to(x.dtype)
        hidden = self._conv_forward(x, kernel_a, None) * self.vera_lambda_d[:, None, None]
        out = F.conv2d(hidden, proj_b[:, :, None, None].to(x.dtype))
        return out * self.vera_lambda_b[:, None, None]


@MODELS.register_module()
class VeRA(AdapterBase):
    """VeRA adapter: shared frozen projections + the injection of VeRA layer wrappers.

    Args:
        targets (list[str | dict]): module-name regexes (``re.fullmatch``, or a ``.``-boundary
            suffix such as ``'qkv'``); a dict ``dict(type=regex, d_initial=..., dropout=...)``
            overrides per target. Each pattern must match at least one Linear/Conv2d.
        rank (int): shared rank r of A/B. Defaults to 256.
        d_initial (float): init value of every d vector. Defaults to 0.1.
        dropout (float): dropout on the adapter branch input (factorised forward only).
        projection_prng_key (int): seed of A/B. Defaults to 0.
        save_projection (bool): keep A/B in state dicts (persistent buffers). If False they are
            regenerated from the seed (saved as ``vera_prng_key``) at build and load time.
        conv_forward / linear_forward (str): 'merged' (W0 + ΔW) or 'factorised' (x -> A -> B).
    """

    layer_overrides = ('d_initial', 'dropout')

    def __init__(self, targets, rank: int = 256, d_initial: float = 0.1, dropout: float = 0.0,
                 projection_prng_key: int = 0, save_projection: bool = True,
                 conv_forward: str = 'merged', linear_forward: str = 'factorised') -> None:
        super().__init__(targets, conv_forward, linear_forward)
        if int(rank) < 1:
            raise ValueError(f'adapter.rank must be >= 1, got {rank}')
        self.rank = int(rank)
        self.d_initial = float(d_initial)
        self.dropout = float(dropout)
        self.projection_prng_key = int(projection_prng_key)
        self.save_projection = bool(save_projection)
        self.max_in = self.max_out = 0
        self.register_buffer('vera_prng_key', torch.tensor(self.projection_prng_key))
        self.register_buffer('vera_A', None, persistent=self.save_projection)
        self.register_buffer('vera_B', None, persistent=self.save_projection)

    def config(self) -> dict:
        return dict(type='VeRA', targets=self.targets, rank=self.rank, d_initial=self.d_initial,
                    dropout=self.dropout, projection_prng_key=self.projection_prng_key,
                    save_projection=self.save_projection, conv_forward=self.conv_forward,
                    linear_forward=self.linear_forward)

    def _prepare(self, model: nn.Module, found: List[Tuple[str, nn.Module, dict]]) -> None:
        # Two passes (PEFT's _find_dim): the largest d_in / d_out sizes the shared pair.
        shapes = [weight_matrix_shape(layer) for _, layer, _ in found]
        self.max_out = max(d_out for d_out, _ in shapes)
        self.max_in = max(d_in for _, d_in in shapes)
        self._generate(self.projection_prng_key)
        device = found[0][1].weight.device
        self.vera_A, self.vera_B = self.vera_A.to(device), self.vera_B.to(device)
        trainable = sum(d_out + self.rank for d_out, _ in shapes)
        print_log(f'VeRA(r={self.rank}): wrapped {len(found)} layers, {trainable} trainable '
                  f'parameters, shared A {tuple(self.vera_A.shape)} B {tuple(self.vera_B.shape)}',
                  logger='current')

    def _generate(self, seed: int) -> None:
        proj_a, proj_b = vera_projections(self.rank, self.max_in, self.max_out, seed)
        device = self.vera_prng_key.device
        self.vera_A, self.vera_B = proj_a.to(device), proj_b.to(device)
        self.vera_prng_key.fill_(int(seed))
        self.projection_prng_key = int(seed)

    def _wrap(self, name: str, layer: nn.Module, overrides: dict) -> nn.Module:
        cls = VeRAConv2d if isinstance(layer, nn.Conv2d) else VeRALinear
        return cls(layer, self, d_initial=overrides.get('d_initial', self.d_initial),
                   dropout=overrides.get('dropout', self.dropout),
                   forward_mode=self.forward_mode_for(layer))

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        # Seed-only checkpoints (save_projection=False): rebuild A/B from the stored seed.
        key = prefix + 'vera_prng_key'
        if (key in state_dict and prefix + 'vera_A' not in state_dict
                and self.vera_A is not None):
            seed = int(state_dict[key])
            if seed != self.projection_prng_key:
                print_log(f'VeRA: regenerating A/B from the checkpoint seed {seed}',
                          logger='current')
                device = self.vera_A.device
                self._generate(seed)
                self.vera_A, self.vera_B = self.vera_A.to(device), self.vera_B.to(device)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)
