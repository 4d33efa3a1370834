"""bfloat16 autocast on CPU (``tools/train.py --amp`` without CUDA): the parts that must stay
float32 do, the outputs stay close to float32, and training runs with finite losses."""
import os.path as osp
import sys

import pytest
import torch
from mmengine.config import Config

import lors_det  # noqa: F401
from lors_det.datasets.digits import ensure_digits_dataset
from lors_det.models.layers import sampling_3d

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, osp.join(REPO, 'tests', 'tools'))
sys.path.insert(0, osp.join(REPO, 'tests', 'lors_adamixer'))
from _lors_helpers import generic_tiny_model, make_data_samples, make_inputs  # noqa: E402
from _tools_helpers import TINY_DIGITS, read_jsonl, run_tool, write_tiny_config  # noqa: E402

# bf16 keeps 8 bits of mantissa (relative step 2^-8 = 0.4 %); through a 6-stage decoder the
# scores and boxes of a generic model move by a few 1e-2 at most
SCORE_ATOL, BOX_ATOL = 0.05, 2.0  # box coordinates in pixels of a 96 x 64 input


def test_sampling_stays_float32_under_autocast():
    feats = [torch.randn(2, 8, 16, 16), torch.randn(2, 8, 8, 8)]
    points = torch.rand(2, 3, 2, 4, 3) * torch.tensor([60., 60., 1.]) + torch.tensor(
        [0., 0., 2.])
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = sampling_3d(points.bfloat16(), [f.bfloat16() for f in feats], [4, 8])
    assert out.dtype == torch.float32
    ref = sampling_3d(points.bfloat16().float(), [f.bfloat16().float() for f in feats], [4, 8])
    torch.testing.assert_close(out, ref)  # computed in float32 from the same inputs


@pytest.mark.parametrize('lors', [False, True], ids=['adamixer', 'lors'])
def test_bf16_autocast_outputs_close_to_float32(lors):
    _, model = generic_tiny_model(lors)
    model.eval()
    inputs, samples = make_inputs(), make_data_samples()
    with torch.no_grad():
        ref = model._forward(inputs, samples)[0][-1]
        with torch.autocast('cpu', dtype=torch.bfloat16):
            out = model._forward(inputs, samples)[0][-1]
    (ref_cls, ref_box), (cls, box) = ref, out
    score_diff = (cls.float().sigmoid() - ref_cls.sigmoid()).abs().max().item()
    box_diff = (box.float() - ref_box).abs().max().item()
    print(f"bf16 vs fp32: max score diff {score_diff:.2e}, max box diff {box_diff:.2e} px")
    assert score_diff <= SCORE_ATOL and box_diff <= BOX_ATOL, (score_diff, box_diff)
    assert score_diff > 0  # autocast did run in bf16 somewhere

    model.train()
    with torch.autocast('cpu', dtype=torch.bfloat16):
        losses = model.loss(inputs, make_data_samples())
    assert all(v.dtype == torch.float32 for k, v in losses.items() if 'loss' in k)
    total = sum(v for k, v in losses.items() if 'loss' in k)
    assert torch.isfinite(total)
    total.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_train_tool_amp_on_cpu_uses_bf16_autocast(tmp_path):
    data_root = str(tmp_path / 'digits') + '/'
    ensure_digits_dataset(data_root, **TINY_DIGITS)
    cfg = write_tiny_config(str(tmp_path / 'tiny.py'), data_root, max_epochs=2,
                            extra="custom_hooks = [dict(type='RecordRankLossesHook')]")
    work = str(tmp_path / 'work')
    run_tool(['tools/train.py', cfg, '--amp', '--work-dir', work])
    dumped = Config.fromfile(osp.join(work, 'tiny.py'))
    assert dumped.optim_wrapper.type == 'AutocastOptimWrapper'
    assert dumped.optim_wrapper.dtype == 'bfloat16'
    records = read_jsonl(osp.join(work, 'losses_rank0.jsonl'))
    assert len(records) == 2 * TINY_DIGITS['num_train'] // 4
    assert all(torch.isfinite(torch.tensor(r['loss'])) for r in records)
