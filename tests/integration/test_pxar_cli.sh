#!/usr/bin/env bash
# Integration test of `cairn pxar create|list|extract` with the real
# binary: round trip of a tree with every entry type and odd names,
# selection by path and pattern, excludes, exit codes, no overwrite
# without --overwrite, and hostile archives that must not write outside
# the target. Usage: test_pxar_cli.sh PATH/TO/cairn
set -u
CAIRN=$1
T=$(mktemp -d /tmp/cairn_pxar_cli.XXXXXX)
trap 'rm -rf "$T"' EXIT
fail=0
ok() { echo "ok - $*"; }
bad() { echo "FAIL - $*"; fail=1; }
expect_rc() { # expect_rc WANT DESCRIPTION CMD...
	local want=$1 what=$2
	shift 2
	"$@" >"$T/out" 2>"$T/err"
	local rc=$?
	if [ "$rc" -eq "$want" ]; then ok "$what (rc $rc)"; else bad "$what: rc $rc, want $want; stderr: $(head -c 400 "$T/err")"; fi
}

# --help everywhere, usage errors
expect_rc 0 "cairn --help" "$CAIRN" --help
grep -q "pxar" "$T/out" || bad "main help lists pxar"
for sub in "" create extract list; do
	expect_rc 0 "cairn pxar $sub --help" "$CAIRN" pxar $sub --help
	grep -q "Usage: cairn pxar" "$T/out" || bad "help text of pxar $sub"
done
expect_rc 2 "unknown command" "$CAIRN" frobnicate
expect_rc 2 "unknown pxar subcommand" "$CAIRN" pxar frob
expect_rc 2 "missing arguments" "$CAIRN" pxar extract only-one
expect_rc 2 "bad option" "$CAIRN" pxar list --bogus x

# source tree
S=$T/src
mkdir -p "$S/dir with space/ünï" "$S/empty" "$S/d/e"
printf 'hello\n' >"$S/a"
printf '' >"$S/zero"
printf 'x' >"$S/one"
head -c 4096 /dev/urandom >"$S/page"
head -c 100000 /dev/urandom >"$S/dir with space/ünï/blob"
ln "$S/a" "$S/d/hard"
ln -s ../a "$S/d/sym"
mkfifo "$S/fifo"
printf 'skip me' >"$S/d/e/junk.tmp"
long=$(printf 'N%.0s' $(seq 1 255))
printf 'long' >"$S/$long"
if [ "$(id -u)" = 0 ]; then
	mknod "$S/null" c 1 3
	chown 1234:5678 "$S/one"
fi
chmod 4755 "$S/a"
touch -d '2001-02-03 04:05:06.5' "$S/one"

A=$T/a.pxar
expect_rc 0 "create" "$CAIRN" pxar create "$A" "$S" --catalog "$T/cat.pcat1"
[ -s "$A" ] && ok "archive written" || bad "archive missing"
head -c 8 "$T/cat.pcat1" | od -An -tx1 | grep -q "91 fd 60 f9 c4 67 58 d5" && ok "catalog magic" || bad "catalog magic"
expect_rc 0 "catalog list" "$CAIRN" catalog list "$T/cat.pcat1"
[ "$(wc -l <"$T/out")" -eq "$(find "$S" | wc -l)" ] && ok "catalog lists every entry" || bad "catalog entries: $(cat "$T/out")"
grep -q '^f "./a.pxar.didx/dir with space/ünï/blob" 100000 ' "$T/out" && ok "catalog file line" || bad "catalog file line"
grep -q '^h "./a.pxar.didx/d/hard"$' "$T/out" || bad "catalog hardlink line"
expect_rc 0 "catalog list PATH" "$CAIRN" catalog list "$T/cat.pcat1" a.pxar.didx/d
[ "$(wc -l <"$T/out")" -eq 5 ] && ok "catalog path filter" || bad "catalog path filter: $(cat "$T/out")"
expect_rc 1 "catalog list of a missing path" "$CAIRN" catalog list "$T/cat.pcat1" a.pxar.didx/nope
expect_rc 1 "catalog list of a non-catalog" "$CAIRN" catalog list "$A"
grep -q "magic" "$T/err" || bad "catalog magic message"
expect_rc 0 "cairn catalog --help" "$CAIRN" catalog --help
expect_rc 1 "create refuses an existing archive" "$CAIRN" pxar create "$A" "$S"
grep -q "File exists" "$T/err" || bad "message for existing archive"
expect_rc 1 "create of a missing dir" "$CAIRN" pxar create "$T/b.pxar" "$T/nope"
[ ! -e "$T/b.pxar" ] && ok "no partial archive left" || bad "partial archive left"

# list
expect_rc 0 "list" "$CAIRN" pxar list "$A"
n_list=$(wc -l <"$T/out")
n_find=$(find "$S" | wc -l)
[ "$n_list" -eq "$n_find" ] && ok "list shows $n_list entries" || bad "list shows $n_list, tree has $n_find"
grep -qx '"/dir with space/ünï/blob"' "$T/out" || bad "list path quoting"
expect_rc 0 "list -v" "$CAIRN" pxar list -v "$A" d
grep -q '^L.*"/d/hard" -> "a"' "$T/out" || bad "list -v hardlink line: $(cat "$T/out")"
grep -q '^lrwxrwxrwx.*"/d/sym" -> "../a"' "$T/out" || bad "list -v symlink line"
expect_rc 1 "list of a missing path" "$CAIRN" pxar list "$A" no/such

# extract everything and compare
X=$T/x
expect_rc 0 "extract" "$CAIRN" pxar extract "$A" "$X"
diff -r --no-dereference "$S" "$X" >"$T/diff" 2>&1
grep -v "is a fifo while\|is a character special file while" "$T/diff" | grep -q . && bad "contents differ: $(head -5 "$T/diff")" || ok "contents equal"
meta() { (cd "$1" && find . -printf '%p %M %U %G %n %s %T@\n' | grep -v '^\. ' | sort); }
if diff <(meta "$S") <(meta "$X") >"$T/mdiff"; then ok "metadata equal"; else bad "metadata differ: $(head -5 "$T/mdiff")"; fi
[ "$(stat -c %i "$X/a")" = "$(stat -c %i "$X/d/hard")" ] && ok "hardlink restored" || bad "hardlink not restored"

# not overwritten without --overwrite; exit code 3
printf 'mine' >"$X/a"
expect_rc 3 "extract over existing files" "$CAIRN" pxar extract "$A" "$X" --allow-existing-dirs
[ "$(cat "$X/a")" = mine ] && ok "existing file kept" || bad "existing file overwritten"
expect_rc 0 "extract --overwrite" "$CAIRN" pxar extract "$A" "$X" --allow-existing-dirs --overwrite
[ "$(cat "$X/a")" = hello ] && ok "overwritten on request" || bad "not overwritten"

# selection by path and by pattern
expect_rc 0 "extract one path" "$CAIRN" pxar extract "$A" "$T/p" "dir with space/ünï/blob"
cmp -s "$S/dir with space/ünï/blob" "$T/p/dir with space/ünï/blob" && ok "single file restored" || bad "single file"
[ "$(find "$T/p" -type f | wc -l)" -eq 1 ] && ok "only that file" || bad "more than the file restored"
expect_rc 0 "extract a hardlink alone" "$CAIRN" pxar extract "$A" "$T/h" d/hard
[ "$(cat "$T/h/d/hard")" = hello ] && ok "hardlink data restored" || bad "hardlink data"
expect_rc 0 "extract by pattern" "$CAIRN" pxar extract "$A" "$T/g" '*.tmp'
[ -f "$T/g/d/e/junk.tmp" ] && [ ! -e "$T/g/a" ] && ok "pattern selects" || bad "pattern selection"
expect_rc 1 "extract a missing path" "$CAIRN" pxar extract "$A" "$T/m" no/such
expect_rc 0 "extract with several patterns" "$CAIRN" pxar extract "$A" "$T/s" d '!*.tmp' 'dir with space/ünï/blob'
[ -f "$T/s/d/hard" ] && [ ! -e "$T/s/d/e/junk.tmp" ] && [ -f "$T/s/dir with space/ünï/blob" ] &&
	[ ! -e "$T/s/a" ] && ok "includes and '!' excludes" || bad "several patterns"
expect_rc 0 "extract all but" "$CAIRN" pxar extract "$A" "$T/b" '!d'
[ -f "$T/b/a" ] && [ ! -e "$T/b/d" ] && ok "only excludes restore the rest" || bad "exclude-only extract"
expect_rc 2 "extract with a bad pattern" "$CAIRN" pxar extract "$A" "$T/z" 'x['

# excludes
expect_rc 0 "create with --exclude" "$CAIRN" pxar create "$T/ex.pxar" "$S" --exclude '*.tmp'
"$CAIRN" pxar list "$T/ex.pxar" >"$T/exl"
grep -q junk.tmp "$T/exl" && bad "excluded file archived" || ok "excluded file left out"
[ "$(tail -1 "$T/exl")" = '"/.pxarexclude-cli"' ] && ok ".pxarexclude-cli last" || bad ".pxarexclude-cli position"

# unprivileged restore (as upstream: chown of others' files fails unless
# ownership is ignored)
if [ "$(id -u)" = 0 ] && command -v setpriv >/dev/null; then
	mkdir -p "$T/np/src/sub" && printf 'x' >"$T/np/src/sub/f"
	chown -R 1234:1234 "$T/np/src/sub"
	"$CAIRN" pxar create "$T/np/np.pxar" "$T/np/src" || bad "create np"
	chmod 755 "$T" && chmod 777 "$T/np"
	NP="setpriv --reuid=65534 --regid=65534 --clear-groups"
	expect_rc 3 "non-root extract of others' files" $NP "$CAIRN" pxar extract "$T/np/np.pxar" "$T/np/o1"
	grep -q "failed to set ownership" "$T/err" && ok "ownership errors reported" || bad "no ownership error: $(cat "$T/err")"
	expect_rc 0 "non-root extract --ignore-ownership" $NP "$CAIRN" pxar extract "$T/np/np.pxar" "$T/np/o2" --ignore-ownership
	[ "$(stat -c %u "$T/np/o2/sub/f")" = 65534 ] && [ "$(cat "$T/np/o2/sub/f")" = x ] && ok "restored as the restoring user" || bad "non-root restore"
else
	echo "skip - unprivileged restore (needs root and setpriv)"
fi

# hostile: truncated and corrupted archives fail cleanly, write nothing outside
mkdir "$T/outside"
printf 'original' >"$T/outside/victim"
size=$(stat -c %s "$A")
head -c $((size - 30)) "$A" >"$T/trunc.pxar"
expect_rc 1 "truncated archive" "$CAIRN" pxar extract "$T/trunc.pxar" "$T/t1"
grep -qi "truncated\|goodbye\|end" "$T/err" && ok "truncation message: $(cat "$T/err")" || bad "truncation message: $(cat "$T/err")"
expect_rc 1 "list of a truncated archive" "$CAIRN" pxar list "$T/trunc.pxar"
printf 'not a pxar archive at all, just text' >"$T/garbage.pxar"
expect_rc 1 "garbage archive" "$CAIRN" pxar list "$T/garbage.pxar"

# symlink planted by one archive, written through by the next: refused
mkdir -p "$T/s1" "$T/s2"
ln -s "$T/outside/victim" "$T/s1/x"
ln -s "$T/outside" "$T/s1/y"
mkdir -p "$T/s2/y"
printf 'evil' >"$T/s2/x"
printf 'evil' >"$T/s2/y/planted"
"$CAIRN" pxar create "$T/s1.pxar" "$T/s1" && "$CAIRN" pxar create "$T/s2.pxar" "$T/s2" || bad "create s1/s2"
expect_rc 0 "extract the symlinks" "$CAIRN" pxar extract "$T/s1.pxar" "$T/victimdir"
expect_rc 3 "write through symlinks refused" "$CAIRN" pxar extract "$T/s2.pxar" "$T/victimdir" --allow-existing-dirs --overwrite
[ "$(cat "$T/outside/victim")" = original ] && [ ! -e "$T/outside/planted" ] && ok "outside untouched" || bad "wrote outside the target"

exit $fail
