#!/usr/bin/python3
"""Adds up the results of one or more meson test logs: each argument is a
build directory (its meson-logs/testlog.json) or the path of a .json log.

A Check program counts as its individual checks (from Check's own
"Checks: N, Failures: F, Errors: E" line); any other test counts as one.
Prints the total as the last line, "N passed, N failed", followed by
"; skipped: NAME (reason)" for each skipped test (its reason is the text
after "SKIP:" in its output), and exits non-zero when anything failed or
nothing ran.
"""
import json
import re
import sys

CHECK_RE = re.compile(r"(\d+)%: Checks: (\d+), Failures: (\d+), Errors: (\d+)")


def main(dirs):
    passed = failed = 0
    skips = []
    for d in dirs:
        try:
            f = open(d if d.endswith(".json") else f"{d}/meson-logs/testlog.json")
        except OSError as e:
            print(f"{d}: no test log ({e})")
            failed += 1
            continue
        with f:
            for line in f:
                t = json.loads(line)
                ok = t["result"] in ("OK", "EXPECTEDFAIL")
                skipped = t["result"] == "SKIP"
                m = CHECK_RE.search(t.get("stdout") or "")
                if m and ok:
                    n, bad = int(m.group(2)), int(m.group(3)) + int(m.group(4))
                    passed += n - bad
                    failed += bad
                elif m:
                    n, bad = int(m.group(2)), int(m.group(3)) + int(m.group(4))
                    passed += n - bad
                    failed += max(bad, 1)
                elif skipped:
                    out = t.get("stdout") or ""
                    why = [ln.split("SKIP:", 1)[1].strip() for ln in out.splitlines()
                           if "SKIP:" in ln]
                    skips.append(f"{t['name']} ({why[0] if why else 'no reason given'})")
                elif ok:
                    passed += 1
                else:
                    failed += 1
    print(f"{passed} passed, {failed} failed" +
          (f"; skipped: {', '.join(skips)}" if skips else ""))
    return 0 if failed == 0 and passed > 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
