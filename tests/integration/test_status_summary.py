"""`cairn status` answers the household's weekly check per target: the last
run and its result, the newest snapshot of each source and its age, the last
restore test and its result (text and --output-format json), also for a
target that never got a snapshot and for runs older than --last shows.

Usage: test_status_summary.py CAIRN_BINARY"""
import json
import re
import os
import shutil
import subprocess
import sys
import tempfile

# The local store's 65,536 prefix directories cost minutes to make and
# remove on a busy disk, a second on tmpfs (as cairn_test_lib.store_path).
SHM = '/dev/shm' if os.access('/dev/shm', os.W_OK | os.X_OK) else None
import time

CAIRN = None


def run(args, check=None):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith('PBS_') and k not in ('JOURNAL_STREAM', 'CAIRN_CONFIG')}
    p = subprocess.run([CAIRN] + args, capture_output=True, text=True, env=env, timeout=120)
    if check is not None and p.returncode != check:
        raise AssertionError('cairn %s: exit %d\n%s%s' % (' '.join(args), p.returncode,
                                                           p.stdout, p.stderr))
    return p


def main():
    global CAIRN
    CAIRN = os.path.abspath(sys.argv[1])
    tmp = tempfile.mkdtemp(prefix='cairn-status-', dir=SHM)
    try:
        src = os.path.join(tmp, 'photos')
        os.makedirs(os.path.join(src, '2024'))
        for i in range(6):
            with open(os.path.join(src, '2024', 'img%d.jpg' % i), 'wb') as f:
                f.write(os.urandom(5000 + i))
        old = time.time() - 3600    # older than the snapshot: the restore test compares it
        for root, _, files in os.walk(src):
            for n in files:
                os.utime(os.path.join(root, n), (old, old))
        conf = os.path.join(tmp, 'cairn.conf')
        with open(conf, 'w') as f:
            f.write('[cairn]\nbackup-id = nas\nstate-dir = %s/state\nrestore-test-sample = 3\n\n'
                    '[source media]\npath = %s\n\n'
                    # gc walks all 65536 chunk directories; test_scheduled covers it
                    '[target usb]\ntype = local\npath = %s/store\nkeep-last = 5\ngc = no\n\n'
                    '[target gone]\ntype = local\npath = /proc/cairn-cannot-write-here\n'
                    % (tmp, src, tmp))
        run(['status', '--config', conf], check=0)
        st = json.loads(run(['status', '--config', conf, '--output-format', 'json'], check=0).stdout)
        assert st['usb'] == {'last-run': None, 'newest-snapshots': [], 'last-restore-test': None,
                             'runs': []}, st

        run(['run', '--config', conf, '--restore-test'], check=3)    # 'gone' fails
        time.sleep(1.1)    # a new snapshot needs a newer second
        run(['run', '--config', conf], check=3)

        st = json.loads(run(['status', '--config', conf, '--output-format', 'json',
                             '--last', '1'], check=0).stdout)
        usb, gone = st['usb'], st['gone']
        assert usb['last-run']['result'] == 'ok' and len(usb['runs']) == 1, usb
        snaps = usb['newest-snapshots']
        assert len(snaps) == 1 and snaps[0]['source'] == 'media', snaps
        assert snaps[0]['snapshot'] == usb['runs'][0]['snapshots'][0], usb
        assert 0 <= snaps[0]['age'] < 600, snaps
        assert abs(time.time() - snaps[0]['age'] - snaps[0]['time']) < 600, snaps
        # the restore test ran in the first run only, which --last 1 does not show
        lt = usb['last-restore-test']
        assert lt and lt['sampled'] == 3 and lt['failed'] == 0 and lt['ok'] is True, usb
        assert lt['time'] < usb['last-run']['start'], usb
        assert gone['last-run']['result'] == 'failed' and gone['last-run']['message'], gone
        assert gone['newest-snapshots'] == [], gone
        assert gone['last-restore-test'] is None or gone['last-restore-test']['ok'] is False, gone

        text = run(['status', '--config', conf], check=0).stdout
        usb_text = text.split('target usb:', 1)[1].split('target gone:', 1)[0]
        gone_text = text.split('target gone:', 1)[1]
        assert 'last run:' in usb_text and ', ok' in usb_text, text
        assert 'newest snapshot:' in usb_text and snaps[0]['snapshot'] in usb_text, text
        assert ' min old' in usb_text, text
        assert 'last restore test:' in usb_text and '3 sampled, 0 failed' in usb_text, text
        assert 'failed' in gone_text and re.search(r'newest snapshot: +none', gone_text), text
        print('ok: status gives last run, newest snapshot age and last restore test per target')
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
