"""benchmarks/_study.py: studies that span sessions keep every run, also when two processes
share one JSON (one thread each on a 2-core machine)."""
import json
import multiprocessing

from _tools_helpers import load_script


def _record_many(path, prefix, count):
    study = load_script('benchmarks/_study.py')
    for i in range(count):
        study.record_run(path, f'{prefix}/seed{i}', {'i': i}, dict(offset_init='uniform'))


def test_concurrent_studies_lose_no_run(tmp_path):
    study = load_script('benchmarks/_study.py')
    out = str(tmp_path / 'study.json')
    study.record_run(out, 'before/seed0', {'i': -1}, dict(offset_init='uniform'))
    ctx = multiprocessing.get_context('fork')
    procs = [ctx.Process(target=_record_many, args=(out, name, 25)) for name in ('a', 'b')]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(60)
        assert proc.exitcode == 0
    assert set(study.read_runs(out)) == (
        {'before/seed0'} | {f'{p}/seed{i}' for p in 'ab' for i in range(25)})
    assert json.loads((tmp_path / 'study.json').read_text())['offset_init'] == 'uniform'


def test_run_pending_skips_recorded_runs(tmp_path):
    """A run recorded by another process after this one started is not run again."""
    study = load_script('benchmarks/_study.py')
    out = str(tmp_path / 'study.json')
    ran = []

    def job(key):
        def run():
            ran.append(key)
            if key == 'a':  # meanwhile, another process finishes 'b'
                study.record_run(out, 'b', dict(bbox_mAP=0.2), {})
            return dict(bbox_mAP=0.1)
        return run

    runs = study.run_pending(out, [(k, job(k)) for k in ('a', 'b')], {})
    assert ran == ['a'] and runs == {'a': dict(bbox_mAP=0.1), 'b': dict(bbox_mAP=0.2)}


def test_seconds_per_iteration_by_thread_count():
    study = load_script('benchmarks/_study.py')
    runs = [dict(sec_per_iter_mean=0.3), dict(sec_per_iter_mean=0.5, threads=1),
            dict(sec_per_iter_mean=0.7, threads=1), dict(sec_per_iter_mean=0.4, threads=2)]
    assert study.seconds_per_iteration(runs) == '0.350 (2 thr), 0.600 (1 thr)'
    assert study.mean_std([0.5, 0.7]) == '0.600 ± 0.141'


def test_run_pending_skips_runs_claimed_by_a_live_process(tmp_path):
    """Two processes working down one list: a run another live process has started is left to
    it; the claim of a process that died (a session that ended) is taken over."""
    import os
    import subprocess
    study = load_script('benchmarks/_study.py')
    out = str(tmp_path / 'study.json')
    claims = tmp_path / 'study.json.running'
    claims.mkdir()
    live = subprocess.Popen(['sleep', '30'])
    dead = subprocess.Popen(['true'])
    dead.wait()
    (claims / 'a_seed0').write_text(str(live.pid))
    (claims / 'b_seed0').write_text(str(dead.pid))
    ran = []

    def job(key):
        return lambda: ran.append(key) or dict(bbox_mAP=0.5)

    try:
        runs = study.run_pending(out, [(k, job(k)) for k in ('a/seed0', 'b/seed0')], {})
    finally:
        live.kill()
    assert ran == ['b/seed0'] and set(runs) == {'b/seed0'}
    assert sorted(os.listdir(claims)) == ['a_seed0']  # b's claim went with its result


def test_plotted_curves_are_the_mean_over_seeds(tmp_path):
    study = load_script('benchmarks/_study.py')
    groups = {'a': [dict(ap_per_epoch=[0.1, 0.4]), dict(ap_per_epoch=[0.3, 0.6])],
              'b': [dict(ap_per_epoch=[0.2, 0.5])], 'empty': []}
    means = study.plot_curves(groups, str(tmp_path / 'c.png'))
    assert set(means) == {'a', 'b'}
    assert means['a'] == [0.2, 0.5] and means['b'] == [0.2, 0.5]
    assert (tmp_path / 'c.png').read_bytes()[:4] == b'\x89PNG'
