"""The LORS paper's ablation configs (configs/lors/ablations/): each builds, changes only what
its row changes, and has the decoder parameter count derived here from the architecture.

With the notation of test_lors_r50_params.py (D=256, G=2, C=128, P_in=64, P_out=128,
H=G*C*P_out=32768, stage rest 1,568,476), a decoder of N stages has

* the mixing generator: shared ``D*GEN + GEN`` (GEN = G*(C^2 + P_in*P_out) = 49,152) plus, per
  stage, K_i LORS^A terms of ``(D+1)*2*G*k^2 + G*k*(2C + P_out + P_in)`` parameters (core
  generators and factors); or, unshared (``share_generator=False``), N dense generators;
* the out-projection: shared ``D*H`` plus, per stage, ``r*(H + D) + D`` (LORS^T factors and
  bias); or, unshared (``share_out_proj=False``), N dense ``D*H + D`` Linears.

The paper's rounded values (lors_spec.md section 4) are in the comments; rows that do not
round to them are discussed there (Table 4 and Table 6 k=32).
"""
import pytest

from lors_det.utils import count_parameters

from _lors_helpers import REPO, build, load_cfg, offline
from test_lors_r50_params import C, D, G, GEN_OUT, H, P_IN, P_OUT, SHARED_GEN, STAGE_REST

RELEASED_K = [1, 1, 2, 2, 3, 3]


def lors_a_term(k):
    return (D + 1) * 2 * G * k * k + G * k * (2 * C + P_OUT + P_IN)


def decoder(terms=RELEASED_K, k=16, r=8, share_generator=True, share_out_proj=True):
    n = len(terms)
    generator = SHARED_GEN + sum(K * lors_a_term(k) for K in terms) if share_generator \
        else n * SHARED_GEN
    out_proj = D * H + n * (r * (H + D) + D) if share_out_proj else n * (D * H + D)
    return n * STAGE_REST + generator + out_proj


ABLATIONS = {
    # Table 4 (paper: LORS^A only 79 M, LORS^T only 66 M, both 35 M)
    'adamixer-lors-a-only': (decoder(share_out_proj=False), 75_706_152),
    'adamixer-lors-t-only': (decoder(share_generator=False), 95_178_536),
    # Table 6: LORS^A core size k and terms K (paper: 32, 34, 35, 38, 38 M)
    'adamixer-lors-k8-K1': (decoder(terms=[1] * 6, k=8), 32_455_976),
    'adamixer-lors-k16-K1': (decoder(terms=[1] * 6), 33_683_240),
    'adamixer-lors-k16-K2': (decoder(terms=[2] * 6), 35_348_264),
    'adamixer-lors-k32-K112233': (decoder(k=32), 44_994_344),
    'adamixer-lors-k32-K1': (decoder(terms=[1] * 6, k=32), 38_506_280),
    # Table 7: LORS^T rank r (paper: 34, 34, 35, 37, 40 M; r=8 is the main config)
    'adamixer-lors-r2': (decoder(r=2), 34_159_400),
    'adamixer-lors-r4': (decoder(r=4), 34_555_688),
    'adamixer-lors-r16': (decoder(r=16), 36_933_416),
    'adamixer-lors-r32': (decoder(r=32), 40_103_720),
    # Table 8: number of stages (paper: 28, 35, 42, 50 M)
    'adamixer-lors-3stages': (decoder(terms=[1, 2, 3]), 28_184_468),
    'adamixer-lors-9stages': (decoder(terms=[1, 1, 1, 2, 2, 2, 3, 3, 3]), 42_512_060),
    'adamixer-lors-12stages': (decoder(terms=[1] * 4 + [2] * 4 + [3] * 4), 49_675_856),
}


def test_formulas_give_the_listed_integers_and_the_released_model():
    assert decoder() == 35_348_264 and GEN_OUT == 49_152
    assert decoder(share_generator=False, share_out_proj=False) == \
        6 * (STAGE_REST + SHARED_GEN + D * H + D) == 135_536_424  # plain AdaMixer, G=2/P_in=64
    for name, (formula, listed) in ABLATIONS.items():
        assert formula == listed, name


def test_every_ablation_config_is_here():
    shipped = {p.name.split('_r50_')[0] for p in (REPO / 'configs/lors/ablations').glob('*.py')}
    assert shipped == set(ABLATIONS)


@pytest.mark.parametrize('name', sorted(ABLATIONS))
def test_ablation_config_decoder_count(name):
    rel = f'lors/ablations/{name}_r50_8xb2-1x_coco.py'
    cfg = offline(load_cfg(rel).model)
    released = offline(load_cfg('lors/adamixer-lors_r50_8xb2-1x_coco.py').model)
    # only the decoder changes
    for part in ('backbone', 'neck', 'rpn_head', 'train_cfg', 'test_cfg', 'data_preprocessor'):
        assert cfg[part] == released[part], part
    counts = count_parameters(build(cfg, init=False))
    assert counts['decoder'] == ABLATIONS[name][1]
    assert counts['total'] - counts['decoder'] == 23_508_032 + 984_576 + 26_000
