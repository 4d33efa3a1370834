"""``roi_head.compile_cfg``: every decoder stage compiled with torch.compile gives the eager
outputs, in inference and in training (losses and gradients), for AdaMixer and LORS."""
import copy
import os.path as osp
import sys

import pytest
import torch

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, osp.join(REPO, 'tests', 'lors_adamixer'))
from _lors_helpers import (build, generic_tiny_model, make_data_samples,  # noqa: E402
                           make_inputs, tiny_lors_cfg)


@pytest.mark.parametrize('lors', [False, True], ids=['adamixer', 'lors'])
def test_compiled_stages_equal_eager(lors):
    cfg, eager = generic_tiny_model(lors)
    compiled_cfg = copy.deepcopy(cfg)
    compiled_cfg.roi_head.compile_cfg = dict(dynamic=False)
    compiled = build(compiled_cfg, init=False)
    compiled.load_state_dict(eager.state_dict())
    inputs, samples = make_inputs(), make_data_samples()

    for model in (eager, compiled):
        model.eval()
    with torch.no_grad():
        ref = eager._forward(inputs, samples)[0]
        out = compiled._forward(inputs, samples)[0]
    assert len(compiled.roi_head._compiled_stages) == len(compiled.roi_head.bbox_head)
    for (cls_a, box_a), (cls_b, box_b) in zip(ref, out):
        assert (cls_a.sigmoid() - cls_b.sigmoid()).abs().max() <= 1e-5
        assert (box_a - box_b).abs().max() / 96 <= 1e-5  # boxes relative to the 96 px input

    grads = []
    for model in (eager, compiled):
        model.train()
        model.zero_grad()
        losses = model.loss(inputs, make_data_samples())
        sum(v for k, v in losses.items() if 'loss' in k).backward()
        grads.append({n: p.grad for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, rtol=1e-3, atol=1e-5, msg=name)

    # the compiled wrappers are not state: a copy starts without them and still works
    clone = copy.deepcopy(compiled)
    assert clone.roi_head._compiled_stages == {}
    assert len(compiled.roi_head._compiled_stages) == len(compiled.roi_head.bbox_head)


def test_bad_compile_cfg_names_the_key():
    cfg = tiny_lors_cfg()
    cfg.roi_head.compile_cfg = True
    with pytest.raises(ValueError, match='roi_head.compile_cfg must be None or a dict'):
        build(cfg, init=False)
