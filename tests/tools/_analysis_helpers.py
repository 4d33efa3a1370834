"""Helpers of the tools/analysis_tools tests (not collected: the name does not start with test_).

:func:`load_tool` imports a script of ``tools/analysis_tools`` as a module, so the tests call
its functions and ``main(argv)`` in-process (no interpreter start-up per call).
"""
import importlib.util
import os.path as osp
import struct

from _tools_helpers import REPO

TOOLS = osp.join(REPO, 'tools', 'analysis_tools')

# the model of _tools_helpers.write_tiny_config
TINY = dict(D=32, heads=4, ffn=64, G=4, feat=32, P_in=4, P_out=6, classes=10, stages=2,
            queries=5)


def load_tool(name: str):
    spec = importlib.util.spec_from_file_location(f'analysis_tools_{name}',
                                                  osp.join(TOOLS, f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def png_size(path: str):
    """``(width, height)`` from a PNG's signature and IHDR chunk (asserts it is a PNG)."""
    with open(path, 'rb') as f:
        head = f.read(24)
    assert head[:8] == b'\x89PNG\r\n\x1a\n', f'{path} is not a PNG'
    assert head[12:16] == b'IHDR', f'{path}: first chunk is not IHDR'
    return struct.unpack('>II', head[16:24])
