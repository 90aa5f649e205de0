"""The shipped systemd units pass `systemd-analyze verify` without a warning
about them, and keep the properties the scheduled-run issue asks for.

Usage: test_systemd_units.py BUILT_SERVICE TIMER CAIRN_BINARY
Skipped (exit 77) when systemd-analyze is not installed: it comes with
Debian's `systemd` package (scripts/deps.sh installs it)."""
import os
import re
import shutil
import subprocess
import sys
import tempfile


def main():
    service, timer, cairn = sys.argv[1:4]
    text = open(service).read()
    # properties checked whatever systemd-analyze says
    for want in ['Type=oneshot', 'ProtectSystem=strict', 'PrivateTmp=yes', 'NoNewPrivileges=yes',
                 'CapabilityBoundingSet=CAP_DAC_READ_SEARCH', 'StateDirectory=cairn',
                 'SuccessExitStatus=7']:
        assert want in text, 'service lacks %s' % want
    ttext = open(timer).read()
    for want in ['OnCalendar=*-*-* 02:00:00', 'Persistent=true', 'RandomizedDelaySec=']:
        assert want in ttext, 'timer lacks %s' % want
    m = re.search(r'^ExecStart=(\S+) run', text, re.M)
    assert m, 'no ExecStart running cairn run'

    analyze = shutil.which('systemd-analyze')
    if not analyze:
        print('SKIP: systemd-analyze not installed (Debian package systemd)')
        return 77
    with tempfile.TemporaryDirectory() as d:
        # verify checks that ExecStart's binary exists: point it at the build's
        with open(os.path.join(d, 'cairn-backup.service'), 'w') as f:
            f.write(text.replace(m.group(1), os.path.abspath(cairn), 1))
        shutil.copy(timer, os.path.join(d, 'cairn-backup.timer'))
        units = [os.path.join(d, 'cairn-backup.service'), os.path.join(d, 'cairn-backup.timer')]
        p = subprocess.run([analyze, 'verify'] + units, capture_output=True, text=True)
        mine = [l for l in (p.stdout + p.stderr).splitlines() if 'cairn-backup' in l]
        if p.returncode != 0 or mine:
            print('systemd-analyze verify: exit %d\n%s%s' % (p.returncode, p.stdout, p.stderr))
            return 1
        # the check can fail: a unit with an unknown key must be reported
        with open(units[0], 'a') as f:
            f.write('\n[Service]\nNoSuchKey=1\n')
        p = subprocess.run([analyze, 'verify'] + units, capture_output=True, text=True)
        assert 'NoSuchKey' in p.stdout + p.stderr, 'systemd-analyze ignored a bad key'
    print('ok: units verified by', analyze)
    return 0


if __name__ == '__main__':
    sys.exit(main())
