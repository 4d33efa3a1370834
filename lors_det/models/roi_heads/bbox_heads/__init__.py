from .adamixer_decoder_stage import AdaMixerDecoderStage

__all__ = ['AdaMixerDecoderStage']
