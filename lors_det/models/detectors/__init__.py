from .adamixer import AdaMixer
from .lors_sharing import LORSSharing

__all__ = ['AdaMixer', 'LORSSharing']
