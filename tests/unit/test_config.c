/* cli/cn_config: the config file of scheduled runs (values, defaults,
 * errors with their line, token file checks). */
#include "cn_test.h"
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/cn_config.h"
#include "common/cn_error.h"

static char dir[] = "/tmp/cairn-test-config-XXXXXX";
static char token[4200], conf[4200];

static void setup(void)
{
	ck_assert_ptr_nonnull(mkdtemp(dir));
	snprintf(token, sizeof(token), "%s/token", dir);
	snprintf(conf, sizeof(conf), "%s/c.conf", dir);
	FILE *f = fopen(token, "w");
	ck_assert_ptr_nonnull(f);
	fputs("  the-secret \n", f);
	fclose(f);
	chmod(token, 0640);
}

static void teardown(void)
{
	unlink(token);
	unlink(conf);
	rmdir(dir);
	strcpy(dir, "/tmp/cairn-test-config-XXXXXX");
}

/* Writes text (with "@TOKEN@" replaced) and loads it. */
static int load(const char *text, struct cn_config **c)
{
	FILE *f = fopen(conf, "w");
	ck_assert_ptr_nonnull(f);
	for (const char *p = text; *p; p++) {
		if (!strncmp(p, "@TOKEN@", 7)) {
			fputs(token, f);
			p += 6;
		} else {
			fputc(*p, f);
		}
	}
	fclose(f);
	cn_error_clear();
	return cn_config_load(conf, c);
}

/* The error message must be "CONF:line: ...what...". */
static void expect_error(const char *text, int line, const char *what)
{
	struct cn_config *c = NULL;
	ck_assert_int_lt(load(text, &c), 0);
	ck_assert_ptr_null(c);
	char want[4300];
	snprintf(want, sizeof(want), "%s:%d: ", conf, line);
	const char *msg = cn_error_message();
	ck_assert_msg(!strncmp(msg, want, strlen(want)), "message '%s' lacks '%s'", msg, want);
	ck_assert_msg(strstr(msg, what) != NULL, "message '%s' lacks '%s'", msg, what);
}

static const char *good =
	"# comment\n"
	"[cairn]\n"
	"backup-id = nas\n"
	"metrics-file = /tmp/m.prom\n"
	"on-failure = mail -s 'x; y' root\n"
	"\n"
	"[source media]\n"
	"path = /mnt/media\n"
	"exclude = *.part\n"
	"exclude = !keep.part\n"
	"\n"
	"[source docs]\n"
	"zfs-dataset = rpool/docs\n"
	"backup-id = docs\n"
	"syncthing-excludes = no\n"
	"\n"
	"[target primary]\n"
	"type = pbs\n"
	"repository = cairn@pbs!nas@pbs1:media\n"
	"token-file = @TOKEN@\n"
	"keep-daily = 7\n"
	"keep-weekly = 4\n"
	"keep-monthly = 6\n"
	"\n"
	"[target usb]\n"
	"type = local\n"
	"path = /srv/store\n"
	"gc = no\n";

START_TEST(test_good)
{
	struct cn_config *c;
	ck_assert_int_eq(load(good, &c), 0);
	ck_assert_str_eq(c->backup_id, "nas");
	ck_assert_str_eq(c->on_failure, "mail -s 'x; y' root"); /* verbatim, ';' kept */
	ck_assert_uint_eq(c->hook_timeout, 300);
	ck_assert_uint_eq(c->stall_timeout, 30);
	ck_assert_uint_eq(c->n_sources, 2);
	const struct cn_config_source *m = &c->sources[0], *d = &c->sources[1];
	ck_assert_str_eq(m->archive, "media.pxar");
	ck_assert_str_eq(m->backup_type, "host");
	/* Syncthing defaults first, then the user's (last match wins) */
	ck_assert_uint_eq(m->n_excludes, cn_config_n_syncthing_excludes + 2);
	ck_assert_str_eq(m->excludes[0], ".stfolder");
	ck_assert_str_eq(m->excludes[m->n_excludes - 1], "!keep.part");
	ck_assert_uint_eq(d->n_excludes, 0);
	ck_assert_ptr_null(d->path);
	ck_assert_str_eq(d->zfs_dataset, "rpool/docs");
	char id[200];
	cn_config_backup_id(c, d, id, sizeof(id));
	ck_assert_str_eq(id, "docs");
	ck_assert_uint_eq(c->n_targets, 2);
	ck_assert_int_eq(c->targets[0].kind, CN_CONFIG_PBS);
	ck_assert_uint_eq(c->targets[0].keep.daily, 7);
	ck_assert_uint_eq(c->targets[0].keep.monthly, 6);
	ck_assert_uint_eq(c->targets[0].keep.yearly, 0);
	ck_assert_int_eq(c->targets[1].kind, CN_CONFIG_LOCAL);
	ck_assert_int_eq(c->targets[1].gc, 0);
	ck_assert(!cn_config_keeps_something(&c->targets[1].keep));
	char secret[64];
	ck_assert_int_eq(cn_config_read_token(&c->targets[0], secret, sizeof(secret)), 0);
	ck_assert_str_eq(secret, "the-secret");
	cn_config_free(c);
}
END_TEST

START_TEST(test_errors_with_lines)
{
	expect_error("[cairn]\nbackup-id = nas\nbakup-dir = x\n", 3, "unknown key 'bakup-dir'");
	expect_error("[cairn]\n\n[sorce media]\npath = /x\n", 3, "unknown section [sorce media]");
	expect_error("[source media]\npath = relative/dir\n", 2, "must be absolute");
	expect_error("[source m]\npath = /x\n[target t]\ntype = local\npath = /s\nkeep-daily = seven\n",
		     6, "'keep-daily' takes a number");
	expect_error("[source m]\npath = /x\n[target t]\ntype = local\ngc = maybe\n", 5,
		     "takes yes or no");
	expect_error("[source m]\npath = /x\npath = /y\n", 3, "'path' is given twice");
	expect_error("[source m]\npath = /x\n[source m]\n", 3, "defined twice (first at line 1)");
	expect_error("[source m]\npath = /x\nexclude = [z-a\n", 3, "exclude pattern");
	expect_error("[source m]\npath = /x\nno equals here\n", 3, "syntax error");
	expect_error("key = value\n", 1, "outside a section");
	/* whole-file checks name the section's line */
	expect_error("[cairn]\n[source m]\narchive = m.pxar\n[target t]\ntype = local\npath = /s\n", 2,
		     "needs a path");
	expect_error("[source m]\npath = /x\n\n[target t]\ntype = pbs\nrepository = host:store1\n", 4,
		     "needs a token-file");
	expect_error("[source m]\npath = /x\n", 2, "no [target NAME] section");
	expect_error("[source a]\npath = /x\n[source b]\npath = /y\n[target t]\ntype = local\n"
		     "path = /s\n", 3, "give each its own backup-id");
	/* a line longer than the parser's buffer is an error, not two lines */
	char big[6000];
	int n = snprintf(big, sizeof(big), "[source m]\npath = /");
	memset(big + n, 'a', 5000);
	strcpy(big + n + 5000, "\n");
	expect_error(big, 2, "line too long");
}
END_TEST

START_TEST(test_stall_timeout)
{
	struct cn_config *c;
	ck_assert_int_eq(load("[cairn]\nstall-timeout = 5\n[source m]\npath = /x\n"
			      "[target t]\ntype = local\npath = /s\n", &c), 0);
	ck_assert_uint_eq(c->stall_timeout, 5);
	cn_config_free(c);
	expect_error("[cairn]\nstall-timeout = 0\n", 2, "'stall-timeout' takes a number from 1 to 86400, not '0'");
	expect_error("[cairn]\nstall-timeout = soon\n", 2, "'stall-timeout' takes a number from 1 to 86400, not 'soon'");
}
END_TEST

START_TEST(test_token_files)
{
	const char *t = "[source m]\npath = /x\n[target p]\ntype = pbs\nrepository = host:store1\n"
			"token-file = @TOKEN@\n";
	chmod(token, 0644);
	expect_error(t, 6, "accessible by other users (mode 0644)");
	chmod(token, 0602);
	expect_error(t, 6, "accessible by other users");
	chmod(token, 0600);
	struct cn_config *c;
	ck_assert_int_eq(load(t, &c), 0);
	cn_config_free(c);
	unlink(token);
	expect_error(t, 6, "does not exist");
	symlink("/etc/hostname", token);
	expect_error(t, 6, "symbolic link");
	unlink(token);
	ck_assert_int_eq(cn_config_load("/nonexistent/cairn.conf", &c), -ENOENT);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("config");
	TCase *tc = tcase_create("config");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_good);
	tcase_add_test(tc, test_errors_with_lines);
	tcase_add_test(tc, test_token_files);
	tcase_add_test(tc, test_stall_timeout);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
