"""The Grafana dashboard and the Prometheus alert rules in contrib/ name only
metrics that cairn writes (taken from a real `cairn run --metrics-file`), the
rules load in `promtool check rules`, and their alerts fire in `promtool test
rules` for the cases they are for: no success on a target for 26 h, a
failed restore test, a target dropped by the last run, a store that lost
chunks.

Usage: test_monitoring.py CAIRN_BINARY SOURCE_ROOT
promtool comes with Debian's `prometheus` package (scripts/deps.sh); without
it the name checks still run and the test exits 77 (skipped) afterwards."""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

# The local store's 65,536 prefix directories cost minutes to make and
# remove on a busy disk, a second on tmpfs (as cairn_test_lib.store_path).
SHM = '/dev/shm' if os.access('/dev/shm', os.W_OK | os.X_OK) else None


def written_metrics(cairn, tmp):
    src = os.path.join(tmp, 'src')
    os.makedirs(src)
    with open(os.path.join(src, 'a.jpg'), 'wb') as f:
        f.write(os.urandom(10000))
    prom = os.path.join(tmp, 'cairn.prom')
    conf = os.path.join(tmp, 'cairn.conf')
    with open(conf, 'w') as f:
        f.write('[cairn]\nstate-dir = %s/state\nmetrics-file = %s\n[source media]\npath = %s\n'
                '[target usb]\ntype = local\npath = %s/store\n' % (tmp, prom, src, tmp))
    env = {k: v for k, v in os.environ.items() if not k.startswith('PBS_')}
    p = subprocess.run([cairn, 'run', '--config', conf, '--restore-test'], capture_output=True,
                       text=True, env=env, timeout=120)
    assert p.returncode == 0, p.stderr
    names = set(re.findall(r'^(cairn_[a-z_]+)\{', open(prom).read(), re.M))
    assert len(names) >= 15, names
    return names


def promtool_unit_test(promtool, rules, tmp):
    """Series for one healthy target and one of each failure, and the alerts
    the rules must raise at 30 h (time() is 30 h then)."""
    base = '{instance="nas:9100", config="/etc/cairn/cairn.conf", target="%s"}'
    src = '{instance="nas:9100", config="/etc/cairn/cairn.conf", source="%s"}'
    # promtool compares annotations too: test a copy without them (their
    # templates are checked by `promtool check rules` on the real file)
    bare = os.path.join(tmp, 'cairn-alerts.bare.yml')
    with open(bare, 'w') as f:
        f.write(re.sub(r'\n( +)annotations:\n(\1 .*\n)+', '\n', open(rules).read() + '\n'))
    test = {
        'rule_files': [bare],
        'evaluation_interval': '1m',
        'tests': [{
            'interval': '1m',
            'input_series': [
                # healthy: succeeded every hour up to now
                {'series': 'cairn_target_last_success_timestamp_seconds' + base % 'primary',
                 'values': '0+60x2000'},
                {'series': 'cairn_target_last_success' + base % 'primary', 'values': '1x2000'},
                {'series': 'cairn_target_last_restore_test_failures' + base % 'primary',
                 'values': '0x2000'},
                # replica: last success at t=0, then dropped by every run
                {'series': 'cairn_target_last_success_timestamp_seconds' + base % 'replica',
                 'values': '0x2000'},
                {'series': 'cairn_target_last_success' + base % 'replica', 'values': '1 0x1999'},
                # usb: restore test found 2 bad files
                {'series': 'cairn_target_last_success_timestamp_seconds' + base % 'usb',
                 'values': '0+60x2000'},
                {'series': 'cairn_target_last_restore_test_failures' + base % 'usb',
                 'values': '0x1700 2x300'},
                # a store lacked 3 chunks of source media's previous snapshot
                {'series': 'cairn_source_last_missing_chunks' + src % 'media',
                 'values': '0x1700 3x300'},
                {'series': 'cairn_source_last_missing_chunks' + src % 'docs', 'values': '0x2000'},
            ],
            'alert_rule_test': [
                {'eval_time': '30h', 'alertname': 'CairnBackupMissing',
                 'exp_alerts': [{'exp_labels': {'severity': 'critical', 'instance': 'nas:9100',
                                                'config': '/etc/cairn/cairn.conf', 'target': 'replica'}}]},
                {'eval_time': '20h', 'alertname': 'CairnBackupMissing', 'exp_alerts': []},
                {'eval_time': '30h', 'alertname': 'CairnRestoreTestFailed',
                 'exp_alerts': [{'exp_labels': {'severity': 'critical', 'instance': 'nas:9100',
                                                'config': '/etc/cairn/cairn.conf', 'target': 'usb'}}]},
                {'eval_time': '30h', 'alertname': 'CairnTargetDropped',
                 'exp_alerts': [{'exp_labels': {'severity': 'warning', 'instance': 'nas:9100',
                                                'config': '/etc/cairn/cairn.conf', 'target': 'replica'}}]},
                {'eval_time': '30h', 'alertname': 'CairnStoreLostChunks',
                 'exp_alerts': [{'exp_labels': {'severity': 'critical', 'instance': 'nas:9100',
                                                'config': '/etc/cairn/cairn.conf', 'source': 'media'}}]},
                {'eval_time': '20h', 'alertname': 'CairnStoreLostChunks', 'exp_alerts': []},
            ],
        }],
    }
    # promtool takes YAML; JSON is YAML
    path = os.path.join(tmp, 'cairn-alerts.test.yml')
    with open(path, 'w') as f:
        json.dump(test, f)
    p = subprocess.run([promtool, 'test', 'rules', path], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, 'promtool test rules:\n' + p.stdout + p.stderr


def main():
    cairn, root = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
    rules = os.path.join(root, 'contrib', 'prometheus', 'cairn-alerts.yml')
    dash_path = os.path.join(root, 'contrib', 'grafana', 'cairn-dashboard.json')
    dash = json.load(open(dash_path))
    exprs = [t['expr'] for p in dash['panels'] for t in p.get('targets', [])]
    exprs += [v['query']['query'] for v in dash['templating']['list'] if isinstance(v.get('query'), dict)]
    assert len(exprs) >= 10, exprs
    rules_text = open(rules).read()
    tmp = tempfile.mkdtemp(prefix='cairn-monitoring-', dir=SHM)
    try:
        have = written_metrics(cairn, tmp)
        for what, text in [('dashboard', '\n'.join(exprs)), ('alert rules', rules_text)]:
            named = set(re.findall(r'\b(cairn_[a-z_]+)\b', text))
            assert named, what
            unknown = named - have
            assert not unknown, '%s names metrics cairn does not write: %s' % (what, sorted(unknown))
        # the panels: last success per target, snapshot age, duration,
        # bytes read/new/stored, dedup ratio, restore-test result
        joined = '\n'.join(exprs)
        for m in ['cairn_target_last_success_timestamp_seconds', 'cairn_source_last_success_timestamp_seconds',
                  'cairn_run_last_duration_seconds', 'cairn_source_last_bytes_read',
                  'cairn_source_last_new_bytes', 'cairn_target_last_bytes_uploaded',
                  'cairn_target_last_restore_test_failures']:
            assert m in joined, 'the dashboard shows no ' + m
        print('ok: dashboard (%d queries) and rules name only metrics cairn writes' % len(exprs))
        promtool = shutil.which('promtool')
        if not promtool:
            print('SKIP: promtool not installed (Debian package prometheus)')
            return 77
        p = subprocess.run([promtool, 'check', 'rules', rules], capture_output=True, text=True,
                           timeout=120)
        assert p.returncode == 0 and 'SUCCESS' in p.stdout, p.stdout + p.stderr
        promtool_unit_test(promtool, rules, tmp)
        print('ok: promtool check rules and promtool test rules')
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
