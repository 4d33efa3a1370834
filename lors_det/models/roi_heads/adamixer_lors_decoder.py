"""AdaMixer decoder whose stages share their mixing weights through LORS (CVPR 2024;
lors_spec.md section 2).

The decoder owns one :class:`~lors_det.models.lors.SharedMixingWeights` (``shared_mixing``):
the mixing-parameter generator (LORS^A) and the output-projection weight (LORS^T), each only
when shared. It hands a plain reference to every stage's mixer, a
:class:`~lors_det.models.lors.LORSAdaptiveMixing`, which owns that stage's private terms (LORS^A
cores and factors, LORS^T factors and bias) where plain AdaMixer keeps its mixer
(``bbox_head.<i>.sampling_n_mixing.adaptive_mixing``). Everything else of a stage (attention,
sampling offsets, FFN, norms, heads) is AdaMixer's and private.

Config (``roi_head``)::

    type='AdaMixerLORSDecoder',
    bbox_head=dict(..., n_groups=2, in_points=64, out_points=128),
    lors_cfg=dict(
        share_generator=True,     # LORS^A (False: each stage its own generator, LORS^T only)
        share_out_proj=True,      # LORS^T (False: each stage its own out_proj, LORS^A only)
        generator_rank=16,        # LORS^A core size k, an int or one per stage
        generator_num_terms=[1, 1, 2, 2, 3, 3],  # LORS^A terms K, int or per stage
        out_proj_rank=8,          # LORS^T rank r, int or per stage
        out_proj_num_terms=1,     # LORS^T terms, int or per stage
        out_proj_zero_init='B',   # the LORS^T factor that starts at zero
        channel_residual='sequential', spatial_residual='materialize')

Defaults are those of ``LORSAdaptiveMixing``'s signature (``share_*``: True); both switches
False gives plain AdaMixer at the same G / P_in. The decoder picks the stage mixer itself.
"""
import copy
import inspect
import re
from typing import Sequence

from mmdet.registry import MODELS

from ..lors import LORSAdaptiveMixing, SharedMixingWeights
from .adamixer_decoder import AdaMixerDecoder

_MIXER_OPTIONS = tuple(
    name for name, p in inspect.signature(LORSAdaptiveMixing.__init__).parameters.items()
    if p.default is not inspect.Parameter.empty and name not in ('out_dim', 'shared',
                                                                  'init_cfg'))
_PER_STAGE_OPTIONS = ('generator_rank', 'generator_num_terms', 'out_proj_rank',
                      'out_proj_num_terms')
_STAGE_DEFAULTS = {
    name: p.default
    for name, p in inspect.signature(MODELS.get('AdaMixerDecoderStage').__init__).parameters.items()
}


@MODELS.register_module()
class AdaMixerLORSDecoder(AdaMixerDecoder):
    """AdaMixer decoder whose stages share mixing weights (module docstring).

    Args:
        num_stages, stage_loss_weights, content_dim, featmap_strides, bbox_head,
        bbox_roi_extractor, train_cfg, test_cfg: as :class:`AdaMixerDecoder`; the stages'
            mixers are chosen here (a ``mixing_cfg`` other than the plain ``AdaptiveMixing``
            is refused).
        lors_cfg: ``share_generator``, ``share_out_proj`` (bools, default True) and the
            options of ``LORSAdaptiveMixing`` (those of :data:`_PER_STAGE_OPTIONS` as an int or
            one value per stage).
    """

    def __init__(self,
                 num_stages: int = 6,
                 stage_loss_weights: Sequence[float] = (1, 1, 1, 1, 1, 1),
                 content_dim: int = 256,
                 featmap_strides: Sequence[int] = (4, 8, 16, 32),
                 bbox_head=dict(type='AdaMixerDecoderStage'),
                 lors_cfg: dict = None,
                 bbox_roi_extractor=None,
                 train_cfg=None,
                 test_cfg=None,
                 init_cfg=None,
                 compile_cfg=None) -> None:
        lors_cfg = dict(lors_cfg or {})
        share = {key: lors_cfg.pop(key, True) for key in ('share_generator', 'share_out_proj')}
        for key, value in share.items():
            if not isinstance(value, bool):
                raise ValueError(f'roi_head.lors_cfg.{key} must be True or False, got '
                                 f'{value!r}')
        unknown = sorted(set(lors_cfg) - set(_MIXER_OPTIONS))
        if unknown:
            raise ValueError(f'roi_head.lors_cfg.{unknown[0]} is not a LORS option; known: '
                             f'{sorted(("share_generator", "share_out_proj") + _MIXER_OPTIONS)}')
        stage_cfgs = [copy.deepcopy(c) for c in bbox_head] if isinstance(
            bbox_head, (list, tuple)) else [copy.deepcopy(bbox_head) for _ in range(num_stages)]
        shared = None
        if any(share.values()):
            shared = self._build_shared(stage_cfgs, **share)
            for i, cfg in enumerate(stage_cfgs):
                cfg['mixing_cfg'] = self._mixer_cfg(cfg, i, num_stages, shared, lors_cfg)
        super().__init__(
            num_stages=num_stages,
            stage_loss_weights=stage_loss_weights,
            content_dim=content_dim,
            featmap_strides=featmap_strides,
            bbox_head=stage_cfgs,
            bbox_roi_extractor=bbox_roi_extractor,
            train_cfg=train_cfg,
            test_cfg=test_cfg,
            init_cfg=init_cfg,
            compile_cfg=compile_cfg)
        if shared is not None:
            self.shared_mixing = shared  # registered once, here; the stages hold references

    @staticmethod
    def _build_shared(stage_cfgs: list, share_generator: bool,
                      share_out_proj: bool) -> SharedMixingWeights:
        def dim(cfg, key):
            return cfg.get(key, _STAGE_DEFAULTS[key])

        keys = ('content_dim', 'feat_channels', 'n_groups', 'in_points', 'out_points')
        first = {key: dim(stage_cfgs[0], key) for key in keys}
        for i, cfg in enumerate(stage_cfgs):
            for key in keys:
                if dim(cfg, key) != first[key]:
                    raise ValueError(f'roi_head.bbox_head[{i}].{key}={dim(cfg, key)} differs '
                                     f'from stage 0 ({first[key]}): the stages share their '
                                     'mixing weights')
        return SharedMixingWeights(
            query_dim=first['content_dim'], channels=first['feat_channels'] // first['n_groups'],
            n_groups=first['n_groups'], in_points=first['in_points'],
            out_points=first['out_points'], share_generator=share_generator,
            share_out_proj=share_out_proj)

    @staticmethod
    def _mixer_cfg(stage_cfg, stage: int, num_stages: int, shared, lors_cfg: dict) -> dict:
        mixing = dict(stage_cfg.get('mixing_cfg') or {})
        if mixing.get('type', 'AdaptiveMixing') not in ('AdaptiveMixing', LORSAdaptiveMixing):
            raise ValueError(f'roi_head.bbox_head.mixing_cfg.type={mixing["type"]!r}: '
                             'AdaMixerLORSDecoder chooses the stage mixers itself (remove '
                             'mixing_cfg)')
        options = {}
        for key, value in lors_cfg.items():
            if key in _PER_STAGE_OPTIONS and isinstance(value, (list, tuple)):
                if len(value) != num_stages:
                    raise ValueError(f'roi_head.lors_cfg.{key} has {len(value)} entries but '
                                     f'num_stages={num_stages}')
                value = value[stage]
            options[key] = value
        return dict(type=LORSAdaptiveMixing, shared=shared, **options)

    def init_bbox_head(self, bbox_roi_extractor, bbox_head) -> None:
        try:
            super().init_bbox_head(bbox_roi_extractor, bbox_head)
        except ValueError as error:
            # name the lors_cfg key (mmengine prefixes every nested build error with its class)
            found = re.search(rf'\b({"|".join(_MIXER_OPTIONS)})(\[\d+\])?: .*', str(error))
            if found is None:
                raise
            stage = len(self.bbox_head)
            raise ValueError(f'roi_head.lors_cfg.{found.group(0)} (stage {stage})') from error
