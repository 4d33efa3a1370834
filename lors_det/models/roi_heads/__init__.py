from . import bbox_heads  # noqa: F401
from .adamixer_decoder import AdaMixerDecoder
from .adamixer_lors_decoder import AdaMixerLORSDecoder
from .bbox_heads import AdaMixerDecoderStage

__all__ = ['AdaMixerDecoder', 'AdaMixerDecoderStage', 'AdaMixerLORSDecoder']
