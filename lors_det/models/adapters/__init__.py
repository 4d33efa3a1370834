"""VeRA and CondLoRA adapters for nn.Linear / nn.Conv2d layers of mmdet and timm backbones."""
from .applier import (apply_adapter, build_adapter, count_trainable_parameters, merge_adapters,
                      merge_and_unload, unmerge_adapters)
from .base import (AdapterBase, AdapterLayerMixin, adapter_parameters, depth_free_role,
                   find_targets, freeze_base, is_adapter_key, iter_adapter_layers)
from .checkpoint import (adapter_checkpoint_path, adapter_state_dict, frozen_base_keys,
                         load_adapter_checkpoint, save_adapter_checkpoint)
from .condlora import CondLoRA, CondLoRAConv2d, CondLoRALinear
from .vera import VeRA, VeRAConv2d, VeRALinear, vera_projections

__all__ = [
    'VeRA', 'VeRALinear', 'VeRAConv2d', 'vera_projections', 'CondLoRA', 'CondLoRALinear',
    'CondLoRAConv2d', 'AdapterBase', 'AdapterLayerMixin', 'apply_adapter', 'build_adapter',
    'merge_adapters', 'unmerge_adapters', 'merge_and_unload', 'count_trainable_parameters',
    'adapter_parameters', 'depth_free_role', 'find_targets', 'freeze_base', 'is_adapter_key',
    'iter_adapter_layers', 'adapter_state_dict', 'save_adapter_checkpoint',
    'load_adapter_checkpoint', 'frozen_base_keys', 'adapter_checkpoint_path'
]
