/* cli/cn_config: s3 targets of scheduled runs (type = s3 and its keys, what
 * other kinds may not take, what s3 targets do not support yet). */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/cn_config.h"
#include "common/cn_error.h"
#include "net/cn_s3.h"
#include "cn_test.h"

static char path[] = "/tmp/cairn-test-config-s3-XXXXXX";

/* Loads "[source s] path = /src" followed by target, from a temp file. */
static int load_target(const char *target, struct cn_config **c)
{
	int fd = mkstemp(path);
	ck_assert_int_ge(fd, 0);
	FILE *f = fdopen(fd, "w");
	fprintf(f, "[source s]\npath = /src\n\n%s", target);
	fclose(f);
	cn_error_clear();
	*c = NULL;
	int r = cn_config_load(path, c);
	unlink(path);
	strcpy(path, "/tmp/cairn-test-config-s3-XXXXXX");
	return r;
}

static void refused(const char *target, const char *what)
{
	struct cn_config *c;
	ck_assert_int_lt(load_target(target, &c), 0);
	ck_assert_msg(strstr(cn_error_message(), what) != NULL, "message '%s' lacks '%s'",
		      cn_error_message(), what);
}

START_TEST(test_s3_target)
{
	char creds[] = "/tmp/cairn-test-creds-XXXXXX";
	int fd = mkstemp(creds);
	ck_assert_int_ge(fd, 0);
	close(fd);
	chmod(creds, 0600);
	char text[1024];
	snprintf(text, sizeof(text),
		 "[target offsite]\ntype = s3\nbucket = family\nprefix = /nas/daily/\n"
		 "endpoint = https://s3.example.net\nregion = eu-west-1\n"
		 "credentials-file = %s\nprofile = nightly\naddressing = virtual\n", creds);
	struct cn_config *c;
	ck_assert_int_eq(load_target(text, &c), 0);
	ck_assert_uint_eq(c->n_targets, 1);
	const struct cn_config_target *t = &c->targets[0];
	ck_assert_int_eq(t->kind, CN_CONFIG_S3);
	ck_assert_str_eq(t->bucket, "family");
	ck_assert_str_eq(t->prefix, "nas/daily");
	ck_assert_str_eq(t->endpoint, "https://s3.example.net");
	ck_assert_str_eq(t->region, "eu-west-1");
	ck_assert_str_eq(t->credentials_file, creds);
	ck_assert_str_eq(t->profile, "nightly");
	ck_assert_int_eq(t->addressing, CN_S3_ADDR_VIRTUAL);
	cn_config_free(c);

	ck_assert_int_eq(load_target("[target o]\ntype = s3\nbucket = b\n", &c), 0);
	ck_assert_ptr_null(c->targets[0].prefix);
	ck_assert_int_eq(c->targets[0].addressing, CN_S3_ADDR_AUTO);
	cn_config_free(c);

	/* s3 targets are pruned and collected like the other kinds */
	ck_assert_int_eq(load_target("[target o]\ntype = s3\nbucket = b\nkeep-last = 3\ngc = no\n",
				     &c), 0);
	ck_assert_uint_eq(c->targets[0].keep.last, 3);
	ck_assert_int_eq(c->targets[0].gc, 0);
	cn_config_free(c);

	/* and a bucket that missed nights catches up like them */
	ck_assert_int_eq(load_target("[target o]\ntype = s3\nbucket = b\ncatch-up = yes\n", &c), 0);
	ck_assert_int_eq(c->targets[0].catch_up, 1);
	cn_config_free(c);

	/* a credentials file others can read is refused, as token files are */
	chmod(creds, 0644);
	snprintf(text, sizeof(text), "[target o]\ntype = s3\nbucket = b\ncredentials-file = %s\n",
		 creds);
	ck_assert_int_lt(load_target(text, &c), 0);
	unlink(creds);
}
END_TEST

START_TEST(test_s3_errors)
{
	refused("[target o]\ntype = s3\n", "needs a bucket");
	refused("[target o]\ntype = s3\nbucket = a/b\n", "no '/'");
	refused("[target o]\ntype = s3\nbucket = b\naddressing = dns\n", "path or virtual");
	refused("[target o]\ntype = s3\nbucket = b\nendpoint = s3.example.net\n", "http://");
	refused("[target o]\ntype = s3\nbucket = b\ncredentials-file = creds\n", "absolute");
	refused("[target o]\ntype = s3\nbucket = b\npath = /srv\n", "takes no path");
	refused("[target o]\ntype = local\npath = /srv\nbucket = b\n", "no s3 target");
	refused("[target o]\ntype = ftp\n", "local, pbs or s3");
}
END_TEST

CN_TEST_MAIN("config_s3", "core", 0,
	     test_s3_target,
	     test_s3_errors)
