"""benchmarks/lors_miniature.py on a 2-iteration smoke setting: every variant runs, its decoder
split is the model's, the JSON resumes (runs already there are skipped) and the table has one
row per variant."""
import json

from _tools_helpers import load_script


def test_smoke_study_resumes_and_tabulates(tmp_path, capsys):
    study = load_script('benchmarks/lors_miniature.py')
    out, table = tmp_path / 'study.json', tmp_path / 'table.md'
    args = ['--smoke', '--seeds', '0', '--out', str(out), '--work-dir', str(tmp_path / 'w'),
            '--variants', 'plain-g2p32', 'lors', 'lors-t-only']
    study.main(args)
    runs = json.loads(out.read_text())['runs']
    assert set(runs) == {'plain-g2p32/seed0', 'lors/seed0', 'lors-t-only/seed0'}
    for run in runs.values():
        assert run['iterations'] == 2 and len(run['ap_per_epoch']) == 1
        assert run['decoder'] == run['decoder_shared'] + run['decoder_private']
        assert 'model.roi_head.bbox_head.sampling_offset_init=uniform' in run['options']
    # the LORS demo's decoder (tests/lors_adamixer/test_lors_configs.py derives 4,033,772)
    assert runs['lors/seed0']['decoder'] == 4_033_772
    assert runs['plain-g2p32/seed0']['decoder_shared'] == 0
    assert 0 < runs['lors-t-only/seed0']['decoder_shared'] < runs['lors/seed0']['decoder_shared']

    capsys.readouterr()
    study.main(args + ['--table', str(table)])  # everything is in the JSON: nothing reruns
    printed = capsys.readouterr().out
    assert printed.count('skipped') == 3
    rows = table.read_text().strip().splitlines()
    assert len(rows) == 2 + 3 and rows[3].startswith('| lors | 4,033,772 (')


def _record_many(path, prefix, count):
    study = load_script('benchmarks/lors_miniature.py')
    for i in range(count):
        study.record_run(path, f'{prefix}/seed{i}', {'i': i}, 'uniform')


def test_concurrent_studies_lose_no_run(tmp_path):
    """Two processes sharing one JSON (one thread each on 2 cores): every run of both is kept,
    including runs written by the other process after this one started."""
    import multiprocessing
    study = load_script('benchmarks/lors_miniature.py')
    out = str(tmp_path / 'study.json')
    study.record_run(out, 'before/seed0', {'i': -1}, 'uniform')
    ctx = multiprocessing.get_context('fork')
    procs = [ctx.Process(target=_record_many, args=(out, name, 25)) for name in ('a', 'b')]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(60)
        assert proc.exitcode == 0
    runs = study.read_runs(out)
    assert set(runs) == {'before/seed0'} | {f'{p}/seed{i}' for p in 'ab' for i in range(25)}
    assert json.loads((tmp_path / 'study.json').read_text())['offset_init'] == 'uniform'
