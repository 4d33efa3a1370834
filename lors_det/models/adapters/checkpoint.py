"""Adapter-only checkpoints (b, d, θ, the VeRA seed and, if saved, A/B) beside full ones.

An adapter checkpoint is ``{'meta': {'adapters': {prefix: config}}, 'state_dict': {...}}``
whose keys are exactly the adapter keys of the full model's state dict, so it loads into the
same model built from the config (the frozen base coming from its pretrained ``init_cfg``).

CLI::

    python -m lors_det.models.adapters.checkpoint extract FULL.pth ADAPTER.pth
    python -m lors_det.models.adapters.checkpoint merge CONFIG FULL.pth MERGED.pth

``merge`` builds ``cfg.model``, loads the full checkpoint, folds every adapter into its weight
and saves a state dict whose keys match the same config without adapters.
"""
import argparse
import os
from collections import OrderedDict
from typing import Tuple, Union

import torch
import torch.nn as nn

from .base import AdapterBase, is_adapter_key


def adapter_state_dict(model: nn.Module) -> 'OrderedDict[str, torch.Tensor]':
    """The adapter entries of ``model.state_dict()`` (keys unchanged)."""
    return OrderedDict((k, v) for k, v in model.state_dict().items() if is_adapter_key(k))


def adapter_configs(model: nn.Module) -> dict:
    return {name: module.config() for name, module in model.named_modules()
            if isinstance(module, AdapterBase)}


def save_adapter_checkpoint(model: nn.Module, path: str, meta: dict = None) -> dict:
    """Save only the adapter state of ``model`` to ``path``; returns the saved dict."""
    state = adapter_state_dict(model)
    if not state:
        raise ValueError(f'{type(model).__name__} holds no adapter state to save')
    checkpoint = dict(meta=dict(meta or {}, adapters=adapter_configs(model)),
                      state_dict={k: v.detach().cpu() for k, v in state.items()})
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    torch.save(checkpoint, path)
    return checkpoint


def _read_state_dict(checkpoint: Union[str, dict]) -> dict:
    if isinstance(checkpoint, str):
        checkpoint = torch.load(checkpoint, map_location='cpu', weights_only=True)
    state = checkpoint.get('state_dict', checkpoint)
    return {k: v for k, v in state.items() if is_adapter_key(k)}


def load_adapter_checkpoint(model: nn.Module, checkpoint: Union[str, dict],
                            strict: bool = True) -> Tuple[list, list]:
    """Load the adapter entries of an adapter-only (or full) checkpoint into ``model``.

    Non-adapter keys of the checkpoint are ignored. With ``strict`` a missing or unexpected
    adapter key raises; returns (missing, unexpected) adapter keys otherwise.
    """
    state = _read_state_dict(checkpoint)
    expected = set(adapter_state_dict(model))
    if not expected:
        raise ValueError(f'{type(model).__name__} has no adapter; build it with the adapter '
                         'config the checkpoint was trained with')
    # A seed-only VeRA checkpoint rebuilds A/B from its seed (VeRA._load_from_state_dict).
    seed_only = {k for k in expected if k.endswith(('vera_A', 'vera_B'))
                 and k.rsplit('.', 1)[0] + '.vera_prng_key' in state}
    missing = sorted(expected - set(state) - seed_only)
    unexpected = sorted(set(state) - expected)
    if strict and (missing or unexpected):
        raise KeyError(f'adapter checkpoint does not fit the model: missing {missing[:8]}, '
                       f'unexpected {unexpected[:8]}')
    model.load_state_dict(state, strict=False)
    return missing, unexpected


def extract_adapter_checkpoint(full_checkpoint: str, out_path: str) -> dict:
    """Write the adapter entries of a full (mmengine) checkpoint to ``out_path``."""
    import lors_det  # noqa: F401  (allow-lists mmengine checkpoint types for weights_only)
    checkpoint = torch.load(full_checkpoint, map_location='cpu', weights_only=True)
    state = _read_state_dict(checkpoint)
    if not state:
        raise ValueError(f'{full_checkpoint} contains no adapter keys (vera_* / condlora_*)')
    out = dict(meta=dict(source=os.path.abspath(full_checkpoint)), state_dict=state)
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    torch.save(out, out_path)
    return out


def merge_checkpoint(config: str, full_checkpoint: str, out_path: str) -> dict:
    """Build ``cfg.model``, load ``full_checkpoint``, merge and unload, save the state dict."""
    import lors_det  # noqa: F401  (registers the models)
    from mmdet.registry import MODELS
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    from .applier import merge_and_unload

    cfg = Config.fromfile(config)
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    model = MODELS.build(cfg.model)
    checkpoint = torch.load(full_checkpoint, map_location='cpu', weights_only=True)
    state = checkpoint.get('state_dict', checkpoint)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise KeyError(f'{full_checkpoint} does not fit {config}: missing {missing[:8]}, '
                       f'unexpected {unexpected[:8]}')
    merge_and_unload(model)
    out = dict(meta=dict(source=os.path.abspath(full_checkpoint), merged_adapters=True),
               state_dict=model.state_dict())
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    torch.save(out, out_path)
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description='Adapter-only checkpoints and merging.')
    sub = parser.add_subparsers(dest='command', required=True)
    extract = sub.add_parser('extract', help='save the adapter entries of a full checkpoint')
    extract.add_argument('checkpoint')
    extract.add_argument('out')
    merge = sub.add_parser('merge', help='fold the adapters of a full checkpoint into W0')
    merge.add_argument('config')
    merge.add_argument('checkpoint')
    merge.add_argument('out')
    args = parser.parse_args(argv)
    if args.command == 'extract':
        out = extract_adapter_checkpoint(args.checkpoint, args.out)
        print(f'saved {len(out["state_dict"])} adapter tensors to {args.out}')
    else:
        out = merge_checkpoint(args.config, args.checkpoint, args.out)
        print(f'saved merged state dict ({len(out["state_dict"])} tensors) to {args.out}')


if __name__ == '__main__':
    main()
