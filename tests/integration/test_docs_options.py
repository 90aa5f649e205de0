"""What the documentation says exists, exists: every option that README.md,
docs/*.md, the man pages (docs/man/*.scd) and the example config name for a
cairn command is in that command's --help; the man page lists exactly the
options of each command's --help; every config key the docs name is one the
parser accepts and every key the parser accepts is documented; commands the
docs name exist; `cairn --version` gives the meson project version.

Usage: test_docs_options.py CAIRN_BINARY SOURCE_ROOT"""
import glob
import os
import re
import subprocess
import sys
import tempfile

CAIRN, ROOT = None, None
OPT = r'(?:--[a-zA-Z][a-zA-Z0-9-]*|-[a-zA-Z](?![a-zA-Z0-9-]))'
# commands with subcommands; the subcommand is part of what --help is asked of
SUBCOMMANDS = {'pxar': ['create', 'extract', 'list'], 'key': ['create', 'show-fingerprint'],
               'snapshot': ['list', 'files'], 'catalog': ['list'], 'config': ['check']}
_help_cache = {}


def cairn(*args):
    return subprocess.run([CAIRN] + list(args), capture_output=True, text=True, timeout=60)


def help_options(argv):
    """The options a --help lists: on its option lines and its Usage lines."""
    key = tuple(argv)
    if key in _help_cache:
        return _help_cache[key]
    p = cairn(*argv, '--help')
    assert p.returncode == 0, 'cairn %s --help: exit %d %s' % (' '.join(argv), p.returncode, p.stderr)
    opts = set()
    for line in p.stdout.splitlines():
        s = line.strip()
        if not (s.startswith(('Usage:', '[', 'cairn ')) or re.match(OPT + r'([ ,=]|$)', s)):
            continue
        s = re.sub(r'`[^`]*`', '', s)
        for m in re.finditer(r'(?:^|[ \[,|])(' + OPT + ')', s):
            opts.add(m.group(1))
    _help_cache[key] = opts
    return opts


def commands():
    out = cairn('--help').stdout
    block = out.split('Commands:\n', 1)[1].split('\n\n', 1)[0]
    return [l.split()[0] for l in block.splitlines() if l.strip()]


def argv_of(words, cmds):
    """cairn WORDS...: the command (and subcommand) whose --help applies."""
    if not words or words[0] not in cmds:
        return None
    if words[0] in SUBCOMMANDS and len(words) > 1 and words[1] in SUBCOMMANDS[words[0]]:
        return words[:2]
    if words[0] == 'verify' and '--restore-test' in words:
        return ['verify', '--restore-test']
    return words[:1]


def invocations(text):
    """(words, line) of every `cairn CMD ...` in text: inline code spans and
    code lines, with backslash-continued lines joined."""
    text = re.sub(r'\\\n\s*', ' ', text)
    spans = re.findall(r'`([^`\n]+)`', text)
    spans += [l for l in text.splitlines() if l.startswith(('    ', '\t'))]
    out = []
    for span in spans:
        for m in re.finditer(r'(?:^|[\s(|;$])cairn\s+([^|;#]*)', span):
            words = m.group(1).split()
            if words and re.match(r'^[a-z][a-z-]*$', words[0]):
                out.append((words, span.strip()))
    return out


def check_docs(cmds):
    """Options and commands named in the user docs exist."""
    files = ['README.md'] + sorted(glob.glob(os.path.join(ROOT, 'docs', '*.md'))) + \
        [os.path.join(ROOT, 'contrib', 'cairn.conf.example')] + \
        sorted(glob.glob(os.path.join(ROOT, 'docs', 'man', '*.scd')))
    all_opts = set()
    for c in cmds:
        for argv in ([[c, s] for s in SUBCOMMANDS[c]] if c in SUBCOMMANDS else [[c]]):
            all_opts |= help_options(argv)
    all_opts |= help_options(['verify', '--restore-test'])
    all_opts |= {'--verbose', '-v', '--quiet', '-q', '--version', '--help', '-h'}
    bad, seen = [], 0
    for path in files:
        path = os.path.join(ROOT, path)
        text = open(path).read()
        if path.endswith('.scd'):
            text = re.sub(r'\*', '', text)
        for words, line in invocations(text):
            if words[0] not in cmds:
                # "cairn" followed by an ordinary word in prose is no command
                if line.startswith(('cairn ', 'sudo cairn', '$ cairn', '# cairn')):
                    bad.append('%s: no command "cairn %s" (%s)' % (path, words[0], line))
                continue
            argv = argv_of(words, cmds)
            opts = help_options(argv)
            seen += 1
            for w in words[len(argv):]:
                m = re.match(r'^\[?(' + OPT + ')', w)
                if m and m.group(1) not in opts and m.group(1) not in ('--help', '-h'):
                    bad.append('%s: cairn %s has no option %s (%s)' %
                               (os.path.relpath(path, ROOT), ' '.join(argv), m.group(1), line))
        # options named alone in prose (`--path`) exist in some command, except
        # in docs/benchmarks.md, which names bench/backup.py's options
        if not path.endswith('benchmarks.md'):
            for m in re.finditer(r'`(' + OPT + r')[ `=]', text):
                if m.group(1) not in all_opts:
                    bad.append('%s: no cairn command has option %s' %
                               (os.path.relpath(path, ROOT), m.group(1)))
    assert not bad, '\n'.join(bad)
    assert seen >= 20, 'only %d cairn invocations found in the docs' % seen
    print('ok: %d cairn invocations in %d files name existing commands and options' %
          (seen, len(files)))


def check_man(cmds):
    """cairn(1) lists, per command, exactly the options of its --help."""
    text = open(os.path.join(ROOT, 'docs', 'man', 'cairn.1.scd')).read()
    common = re.search(r'\n# COMMON OPTIONS\n(.*?)\n# ', text, re.S).group(1)
    common_opts = set(re.findall(r'\*(' + OPT + r')\*', common))
    sections = re.split(r'\n## ', text.split('\n# COMMANDS\n', 1)[1].split('\n# ', 1)[0])[1:]
    covered, bad = set(), []
    for sec in sections:
        heading, body = sec.split('\n', 1)
        argv = heading.split()
        described = set()
        for line in body.splitlines():
            if line.startswith('*-'):    # an option entry: *--opt* _ARG_, *--other*
                described |= set(re.findall(r'\*(' + OPT + r')\*', line))
        if 'Takes the common options' in body:
            described |= common_opts
        for line in body.splitlines():    # the synopsis line
            if line.startswith('*cairn '):
                plain = line.replace('*', '')
                described |= set(re.findall(r'(?:^|[ \[|])(' + OPT + ')', plain)) - set(argv)
        have = help_options(argv) - {'--help', '-h'} - set(argv)
        described -= {'--help', '-h'}
        if have - described:
            bad.append('cairn.1, %s: --help has %s, the page does not' %
                       (heading, ' '.join(sorted(have - described))))
        if described - have:
            bad.append('cairn.1, %s: the page names %s, --help does not' %
                       (heading, ' '.join(sorted(described - have))))
        covered.add(argv[0])
    missing = set(cmds) - covered
    if missing:
        bad.append('cairn.1 has no section for: ' + ' '.join(sorted(missing)))
    assert not bad, '\n'.join(bad)
    print('ok: cairn.1 describes the options of %d command sections, as --help' % len(sections))


def parser_keys():
    """The keys cli/cn_config.c accepts, by section."""
    src = open(os.path.join(ROOT, 'cli', 'cn_config.c')).read()
    keys = {}
    for fn, sec in [('cairn_key', 'cairn'), ('source_key', 'source'), ('target_key', 'target')]:
        body = re.search(r'static int ' + fn + r'\(.*?\n}\n', src, re.S).group(0)
        names = set(re.findall(r'strcmp\(name, "([a-z-]+)"\)', body))
        keep = re.search(r'keeps\[\] = \{(.*?)\}', body, re.S)
        if keep:
            names |= set(re.findall(r'"([a-z-]+)"', keep.group(1)))
        keys[sec] = names
    return keys


def accepted(section, key):
    """Whether `cairn config check` knows key in section (any other error is fine)."""
    with tempfile.TemporaryDirectory() as d:
        body = {'cairn': '', 'source': '', 'target': ''}
        body[section] = '%s = 1\n' % key
        conf = os.path.join(d, 'c.conf')
        with open(conf, 'w') as f:
            f.write('[cairn]\n%s[source s]\npath = /tmp\n%s[target t]\ntype = local\n'
                    'path = %s/store\n%s' % (body['cairn'], body['source'], d, body['target']))
        p = cairn('config', 'check', '--config', conf)
        return 'unknown key' not in p.stderr


def check_config_keys():
    keys = parser_keys()
    assert len(keys['cairn']) >= 10 and len(keys['target']) >= 10, keys
    man = open(os.path.join(ROOT, 'docs', 'man', 'cairn.conf.5.scd')).read()
    md = open(os.path.join(ROOT, 'docs', 'configuration.md')).read()
    bad = []
    for doc, text, pat in [('cairn.conf.5', man, r'^\*([a-z][a-z-]*)\*(?=[ ,])'),
                           ('docs/configuration.md', md, r'^\| `([a-z][a-z-]*)`')]:
        parts = re.split(r'^#+ \[?(cairn|source|target)\b.*$', text, flags=re.M)
        named = {'cairn': set(), 'source': set(), 'target': set()}
        for sec, body in zip(parts[1::2], parts[2::2]):
            for line in body.splitlines():
                # "*keep-last*, *keep-hourly*, ... = _N_" names several keys
                if not re.match(pat, line):
                    continue
                if doc.endswith('.md'):    # the first cell of a table row
                    named[sec] |= set(re.findall(r'`([a-z][a-z-]*)`', line.split('|')[1]))
                else:
                    named[sec] |= set(re.findall(r'\*([a-z][a-z-]*)\*(?= =|,)', line))
        for sec in keys:
            for k in sorted(named[sec] - keys[sec]):
                if not accepted(sec, k):
                    bad.append('%s names key %s in [%s], the parser does not know it' % (doc, k, sec))
            for k in sorted(keys[sec] - named[sec]):
                bad.append('%s does not document key %s of [%s]' % (doc, k, sec))
    for sec in keys:
        for k in sorted(keys[sec]):
            assert accepted(sec, k), 'the parser refuses its own key %s' % k
    assert not bad, '\n'.join(bad)
    print('ok: config keys documented in cairn.conf.5 and docs/configuration.md: %s' %
          ', '.join('%d in [%s]' % (len(v), k) for k, v in keys.items()))


def check_version():
    meson = open(os.path.join(ROOT, 'meson.build')).read()
    want = re.search(r"version\s*:\s*'([^']+)'", meson).group(1)
    for argv in (['--version'], ['version']):
        p = cairn(*argv)
        assert p.returncode == 0 and p.stdout.startswith('cairn %s' % want), (argv, p.stdout, p.stderr)
        assert 'chunker kernels: ' in p.stdout and 'libraries: ' in p.stdout, p.stdout
    print('ok: cairn --version and cairn version say %s' % want)


def main():
    global CAIRN, ROOT
    CAIRN, ROOT = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
    os.chdir(ROOT)
    cmds = commands()
    assert 'backup' in cmds and 'version' in cmds, cmds
    check_version()
    check_man(cmds)
    check_config_keys()
    check_docs(cmds)
    return 0


if __name__ == '__main__':
    sys.exit(main())
