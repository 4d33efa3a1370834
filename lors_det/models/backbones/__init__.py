from .peft_backbone import PEFTBackbone
from .timm_backbone import TimmBackbone

__all__ = ['PEFTBackbone', 'TimmBackbone']
