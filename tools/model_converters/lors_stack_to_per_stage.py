#!/usr/bin/env python
"""Convert a LORS checkpoint trained before the per-stage redesign to the current layout.

Old layout (one ``roi_head.lors_mixing`` stack holding the shared weights and every stage's
private terms) -> current layout (shared weights under ``roi_head.shared_mixing``, stage i's
private terms under ``roi_head.bbox_head.<i>.sampling_n_mixing.adaptive_mixing``):

============================================  ====================================================
old key (stage i)                             new key
============================================  ====================================================
lors_mixing.parameter_generator.{weight,bias} shared_mixing.parameter_generator.{weight,bias}
lors_mixing.out_proj.shared_weight            shared_mixing.out_proj.weight
lors_mixing.core_generators.i.{weight,bias}   <mixer>.channel_residual.core_generator (first
                                              half of the rows: the M cores) and
                                              <mixer>.spatial_residual.core_generator (second
                                              half: the S cores)
lors_mixing.ml.i / mr.i                       <mixer>.channel_residual.B / .A
lors_mixing.sl.i / sr.i                       <mixer>.spatial_residual.B / .A
lors_mixing.out_proj.private_B.i / private_A.i <mixer>.out_proj.B / .A
lors_mixing.out_proj.private_bias.i           <mixer>.out_proj.bias
============================================  ====================================================

(``roi_head.`` prefixes every key; ``<mixer>`` is ``roi_head.bbox_head.i.sampling_n_mixing.
adaptive_mixing``.) Tensors are not changed, only renamed and, for the core generators, split
in two, so the converted model computes exactly what the old one did.

    python tools/model_converters/lors_stack_to_per_stage.py OLD.pth NEW.pth
"""
import argparse
import os
import os.path as osp
import re
import sys
from collections import OrderedDict

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

import torch  # noqa: E402

OLD = 'roi_head.lors_mixing.'
MIXER = 'roi_head.bbox_head.{}.sampling_n_mixing.adaptive_mixing.'
_RENAMES = {
    r'parameter_generator\.(weight|bias)': 'roi_head.shared_mixing.parameter_generator.{0}',
    r'out_proj\.shared_weight': 'roi_head.shared_mixing.out_proj.weight',
    r'ml\.(\d+)': MIXER + 'channel_residual.B',
    r'mr\.(\d+)': MIXER + 'channel_residual.A',
    r'sl\.(\d+)': MIXER + 'spatial_residual.B',
    r'sr\.(\d+)': MIXER + 'spatial_residual.A',
    r'out_proj\.private_B\.(\d+)': MIXER + 'out_proj.B',
    r'out_proj\.private_A\.(\d+)': MIXER + 'out_proj.A',
    r'out_proj\.private_bias\.(\d+)': MIXER + 'out_proj.bias',
}
_CORES = re.compile(r'core_generators\.(\d+)\.(weight|bias)')


def convert_state_dict(state_dict: dict) -> 'OrderedDict[str, torch.Tensor]':
    """The current-layout state dict of an old-layout one (other keys pass through)."""
    if not any(k.startswith(OLD) for k in state_dict):
        raise ValueError(f'no {OLD}* keys: not a checkpoint of the old LORS layout')
    out = OrderedDict()
    for key, value in state_dict.items():
        if not key.startswith(OLD):
            out[key] = value
            continue
        rest = key[len(OLD):]
        cores = _CORES.fullmatch(rest)
        if cores:
            stage, kind = cores.groups()
            channel, spatial = value.chunk(2, dim=0)  # M cores, then S cores
            out[MIXER.format(stage) + f'channel_residual.core_generator.{kind}'] = channel
            out[MIXER.format(stage) + f'spatial_residual.core_generator.{kind}'] = spatial
            continue
        for pattern, template in _RENAMES.items():
            found = re.fullmatch(pattern, rest)
            if found:
                out[template.format(*found.groups())] = value
                break
        else:
            raise KeyError(f'{key}: unknown key of the old LORS layout')
    return out


def convert_file(src: str, dst: str) -> dict:
    from lors_det.checkpoint import load_checkpoint_file
    checkpoint = load_checkpoint_file(src)
    state = checkpoint.get('state_dict', checkpoint)
    converted = dict(state_dict=convert_state_dict(state),
                     meta=dict(checkpoint.get('meta') or {}, converted_from=osp.abspath(src),
                               converter='lors_stack_to_per_stage'))
    os.makedirs(osp.dirname(osp.abspath(dst)), exist_ok=True)
    torch.save(converted, dst)
    return converted


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('src', help='checkpoint of the old LORS layout')
    parser.add_argument('dst', help='where to write the converted checkpoint')
    args = parser.parse_args(argv)
    out = convert_file(args.src, args.dst)
    print(f'converted {len(out["state_dict"])} tensors; saved to {args.dst}')


if __name__ == '__main__':
    main()
