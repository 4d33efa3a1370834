"""AdaMixer decoder with LORS on the adaptive mixing (LORS, CVPR 2024; lors_spec.md section 2).

The decoder owns ONE :class:`~lors_det.models.lors.LORSAdaptiveMixingStack` (``lors_mixing``):

* shared by all stages: the mixing-parameter generator ``Linear(D -> G*(C*C + P_in*P_out))``
  (LORS^A) and the output-projection weight ``G*C*P_out -> D`` (LORS^T);
* private to stage i, inside the stack: the core generator and the ``ml, mr, sl, sr`` factors
  of LORS^A (``K_i`` terms of core size ``k_i``), the rank-``r_i`` out-projection factors and its
  bias;
* private to stage i, in the stage as in AdaMixer: self-attention, sampling offsets, FFN, all
  LayerNorms (``sampling_n_mixing.norm`` is the official code's per-stage ``out_norm``),
  cls/reg branches and ``iof_tau``.

Every stage's ``sampling_n_mixing.adaptive_mixing`` is a :class:`~lors_det.models.lors.
LORSStageMixer` (a parameter-free view: ``stage_idx`` + a plain reference to the stack), so the
stage code is AdaMixer's, unchanged.

Init order (``init_weights``): first every stage (AdaMixer's xavier re-init of its Linears, which
never reaches the stack), then the stack's LORS init: shared generator zero weight / default bias,
shared out-projection PyTorch default, every private term at zero (core generators; the
``out_proj_zero_init`` factor and the private bias), so at init every stage's effective mixing
equals the shared one.

Config (``roi_head``)::

    type='AdaMixerLORSDecoder',
    bbox_head=dict(..., n_groups=2, in_points=64, out_points=128,
                   mixing_cfg=dict(type='LORSStageMixer')),
    lors_cfg=dict(
        kernel_sizes=[16] * 6,           # k_i, LORS^A core size per stage (int or list)
        kernel_groups=[1, 1, 2, 2, 3, 3],  # K_i, LORS^A terms per stage (int or list)
        out_proj_ranks=[8] * 6,          # r_i, LORS^T rank per stage (int or list)
        out_proj_zero_init='B',          # the released LORS code zero-inits B (d x r)
        channel_residual='sequential',   # how the private residual of M is applied
        spatial_residual='materialize',  # ... and of S (see LORSAdaptiveMixingStack)
        shared=('parameter_generator', 'out_proj'))  # parts shared across stages

The stack's dims (``content_dim, feat_channels, n_groups, in_points, out_points``) are the
stages'; they must be the same in every stage.
"""
import copy
from typing import Sequence

from mmdet.registry import MODELS

from ..lors import LORSAdaptiveMixingStack, LORSStageMixer
from .adamixer_decoder import AdaMixerDecoder

# Released LORS code (famixer_r50_lors_*): k=16, K=[1,1,2,2,3,3], r=8, B zero-initialised.
DEFAULT_LORS_CFG = dict(
    kernel_sizes=16,
    kernel_groups=(1, 1, 2, 2, 3, 3),
    out_proj_ranks=8,
    out_proj_zero_init='B',
    channel_residual='sequential',
    spatial_residual='materialize',
    shared=('parameter_generator', 'out_proj'))
PER_STAGE_KEYS = ('kernel_sizes', 'kernel_groups', 'out_proj_ranks')
CHOICE_KEYS = dict(out_proj_zero_init=('A', 'B'),
                   channel_residual=('sequential', 'materialize'),
                   spatial_residual=('sequential', 'materialize'))
SHAREABLE_PARTS = ('parameter_generator', 'out_proj')
STACK_DIMS = ('content_dim', 'feat_channels', 'n_groups', 'in_points', 'out_points')
MIXER_TYPE = 'LORSStageMixer'


def _type_name(cfg_type) -> str:
    return cfg_type if isinstance(cfg_type, str) else getattr(cfg_type, '__name__', str(cfg_type))


@MODELS.register_module()
class AdaMixerLORSDecoder(AdaMixerDecoder):
    """AdaMixer decoder whose stages share one LORS adaptive-mixing stack.

    Args:
        num_stages, stage_loss_weights, content_dim, featmap_strides, bbox_head,
        bbox_roi_extractor, train_cfg, test_cfg: as :class:`AdaMixerDecoder`. Every stage's
            ``mixing_cfg`` must be ``dict(type='LORSStageMixer')`` (or absent); the decoder sets
            its ``stage_idx``.
        lors_cfg: LORS options (module docstring); missing keys take the released code's values
            (``DEFAULT_LORS_CFG``). When ``num_stages != 6`` give ``kernel_groups`` explicitly.
    """

    def __init__(self,
                 num_stages: int = 6,
                 stage_loss_weights: Sequence[float] = (1, 1, 1, 1, 1, 1),
                 content_dim: int = 256,
                 featmap_strides: Sequence[int] = (4, 8, 16, 32),
                 bbox_head=dict(type='AdaMixerDecoderStage',
                                mixing_cfg=dict(type=MIXER_TYPE)),
                 lors_cfg: dict = None,
                 bbox_roi_extractor=None,
                 train_cfg=None,
                 test_cfg=None,
                 init_cfg=None) -> None:
        lors_cfg = self._check_lors_cfg(lors_cfg, num_stages)
        stage_cfgs = self._stage_cfgs(bbox_head, num_stages)
        super().__init__(
            num_stages=num_stages,
            stage_loss_weights=stage_loss_weights,
            content_dim=content_dim,
            featmap_strides=featmap_strides,
            bbox_head=stage_cfgs,
            bbox_roi_extractor=bbox_roi_extractor,
            train_cfg=train_cfg,
            test_cfg=test_cfg,
            init_cfg=init_cfg)
        dims = self._common_stage_dims()
        try:
            self.lors_mixing = LORSAdaptiveMixingStack(num_stages=num_stages, **dims, **lors_cfg)
        except ValueError as err:
            raise ValueError(f'roi_head.lors_cfg: {err}') from err
        for i, stage in enumerate(self.bbox_head):
            stage.sampling_n_mixing.adaptive_mixing.bind(self.lors_mixing, i)

    # ------------------------------------------------------------------ config checks
    @staticmethod
    def _check_lors_cfg(lors_cfg, num_stages: int) -> dict:
        if lors_cfg is None:
            lors_cfg = {}
        if not isinstance(lors_cfg, dict):
            raise TypeError(f'roi_head.lors_cfg must be a dict, got {type(lors_cfg).__name__}')
        unknown = sorted(set(lors_cfg) - set(DEFAULT_LORS_CFG))
        if unknown:
            raise ValueError(f'roi_head.lors_cfg.{unknown[0]} is not a LORS option; known keys: '
                             f'{sorted(DEFAULT_LORS_CFG)}')
        cfg = {**DEFAULT_LORS_CFG, **lors_cfg}
        for key in PER_STAGE_KEYS:
            value = cfg[key]
            if isinstance(value, (list, tuple)) and len(value) != num_stages:
                raise ValueError(f'roi_head.lors_cfg.{key} has {len(value)} entries but '
                                 f'num_stages={num_stages}')
            if isinstance(value, (list, tuple)):
                cfg[key] = list(value)
        for key, choices in CHOICE_KEYS.items():
            if cfg[key] not in choices:
                raise ValueError(f'roi_head.lors_cfg.{key} must be one of {list(choices)}, got '
                                 f'{cfg[key]!r}')
        shared = cfg.pop('shared')
        if isinstance(shared, str) or not isinstance(shared, (list, tuple)):
            raise ValueError(f'roi_head.lors_cfg.shared must be a list of part names, got '
                             f'{shared!r}')
        bad = [p for p in shared if p not in SHAREABLE_PARTS]
        if bad:
            raise ValueError(f'roi_head.lors_cfg.shared: {bad[0]!r} cannot be shared; the '
                             f'shareable parts of the mixer are {list(SHAREABLE_PARTS)}')
        if sorted(set(shared)) != sorted(SHAREABLE_PARTS):
            # LORS^A-only / LORS^T-only ablations need a stack with an unshared part
            raise NotImplementedError(
                f'roi_head.lors_cfg.shared={list(shared)}: only sharing both '
                f'{list(SHAREABLE_PARTS)} (the released LORS model) is implemented')
        return cfg

    @staticmethod
    def _stage_cfgs(bbox_head, num_stages: int) -> list:
        if isinstance(bbox_head, (list, tuple)):
            if len(bbox_head) != num_stages:
                raise ValueError(f'roi_head.bbox_head has {len(bbox_head)} stage configs but '
                                 f'num_stages={num_stages}')
            cfgs = [copy.deepcopy(c) for c in bbox_head]
        else:
            cfgs = [copy.deepcopy(bbox_head) for _ in range(num_stages)]
        for i, cfg in enumerate(cfgs):
            where = 'roi_head.bbox_head' + (f'[{i}]' if isinstance(bbox_head, (list, tuple))
                                            else '')
            mixing = dict(cfg.get('mixing_cfg') or dict(type=MIXER_TYPE))
            if _type_name(mixing.get('type')) != MIXER_TYPE:
                raise ValueError(f'{where}.mixing_cfg.type must be {MIXER_TYPE!r} with '
                                 f'AdaMixerLORSDecoder (the stages share the decoder\'s LORS '
                                 f'stack), got {_type_name(mixing.get("type"))!r}')
            if mixing.get('stage_idx', i) != i:
                raise ValueError(f'{where}.mixing_cfg.stage_idx={mixing["stage_idx"]} but it is '
                                 f'stage {i}; leave stage_idx unset (the decoder sets it)')
            mixing['stage_idx'] = i
            cfg['mixing_cfg'] = mixing
        return cfgs

    def _common_stage_dims(self) -> dict:
        first = self.bbox_head[0]
        dims = {key: getattr(first, key) for key in STACK_DIMS}
        for i, stage in enumerate(self.bbox_head):
            mixer = stage.sampling_n_mixing.adaptive_mixing
            if not isinstance(mixer, LORSStageMixer):
                raise TypeError(f'roi_head.bbox_head[{i}] built a {type(mixer).__name__} mixer, '
                                f'expected {MIXER_TYPE}')
            for key in STACK_DIMS:
                if getattr(stage, key) != dims[key]:
                    raise ValueError(f'roi_head.bbox_head[{i}].{key}={getattr(stage, key)} '
                                     f'differs from stage 0 ({dims[key]}): all stages share one '
                                     'LORS mixing stack')
        return dims

    # ------------------------------------------------------------------ init
    def init_weights(self) -> None:
        """Stages first (AdaMixer's init), then the shared stack's LORS init, last."""
        super().init_weights()
        self.lors_mixing.init_weights()
