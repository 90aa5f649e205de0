/* The S3 client's configuration: s3:// URLs, endpoint, region and
 * credentials from the environment and from AWS-format credentials files;
 * the object keys of the datastore layout. (Requests are tested against a
 * real radosgw: tests/integration/test_s3.py.) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/cn_error.h"
#include "net/cn_s3.h"
#include "net/cn_s3_layout.h"
#include "cn_test.h"

static void clear_env(void)
{
	static const char *vars[] = {"AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION",
				     "AWS_DEFAULT_REGION", "AWS_CA_BUNDLE", "AWS_ACCESS_KEY_ID",
				     "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
				     "AWS_SHARED_CREDENTIALS_FILE"};
	for (size_t i = 0; i < sizeof(vars) / sizeof(vars[0]); i++)
		unsetenv(vars[i]);
	setenv("HOME", "/nonexistent-home", 1);
}

START_TEST(test_parse_url)
{
	struct cn_s3_config c;
	memset(&c, 0, sizeof(c));
	ck_assert_int_eq(cn_s3_config_parse_url("s3://photos", &c), 0);
	ck_assert_str_eq(c.bucket, "photos");
	ck_assert_str_eq(c.prefix, "");
	ck_assert_int_eq(cn_s3_config_parse_url("s3://photos/nas/daily/", &c), 0);
	ck_assert_str_eq(c.bucket, "photos");
	ck_assert_str_eq(c.prefix, "nas/daily");
	ck_assert_int_lt(cn_s3_config_parse_url("/srv/store", &c), 0);
	ck_assert_int_lt(cn_s3_config_parse_url("s3://", &c), 0);
	ck_assert_int_lt(cn_s3_config_parse_url("s3://bad bucket/x", &c), 0);
	ck_assert_int_lt(cn_s3_config_parse_url("s3://b/a/../c", &c), 0);
}
END_TEST

START_TEST(test_resolve_env)
{
	clear_env();
	setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:7480/", 1);
	setenv("AWS_DEFAULT_REGION", "eu-central-1", 1);
	setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE", 1);
	setenv("AWS_SECRET_ACCESS_KEY", "s3cr3t", 1);
	struct cn_s3_config c;
	memset(&c, 0, sizeof(c));
	ck_assert_int_eq(cn_s3_config_parse_url("s3://b/p", &c), 0);
	ck_assert_int_eq(cn_s3_config_resolve(&c), 0);
	ck_assert_str_eq(c.endpoint, "http://127.0.0.1:7480");
	ck_assert_str_eq(c.region, "eu-central-1");
	ck_assert_str_eq(c.access_key, "AKIDEXAMPLE");
	ck_assert_str_eq(c.secret_key, "s3cr3t");
	struct cn_s3 *s;
	ck_assert_int_eq(cn_s3_new(&c, &s), 0);
	ck_assert_str_eq(cn_s3_name(s), "s3://b/p at http://127.0.0.1:7480");
	ck_assert_ptr_null(strstr(cn_s3_name(s), "s3cr3t"));
	cn_s3_free(s);

	/* no endpoint: AWS, virtual-hosted; no region: us-east-1 */
	clear_env();
	setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE", 1);
	setenv("AWS_SECRET_ACCESS_KEY", "s3cr3t", 1);
	memset(&c, 0, sizeof(c));
	ck_assert_int_eq(cn_s3_config_parse_url("s3://b", &c), 0);
	ck_assert_int_eq(cn_s3_config_resolve(&c), 0);
	ck_assert_str_eq(c.region, "us-east-1");
	ck_assert_int_eq(cn_s3_new(&c, &s), 0);
	ck_assert_str_eq(cn_s3_name(s), "s3://b at https://s3.us-east-1.amazonaws.com");
	cn_s3_free(s);

	clear_env();
	setenv("AWS_ENDPOINT_URL", "ftp://x", 1);
	memset(&c, 0, sizeof(c));
	ck_assert_int_eq(cn_s3_config_resolve(&c), -EINVAL);
}
END_TEST

START_TEST(test_resolve_credentials_file)
{
	clear_env();
	char path[] = "/tmp/cn_s3_credsXXXXXX";
	int fd = mkstemp(path);
	ck_assert_int_ge(fd, 0);
	const char *text = "[default]\naws_access_key_id = DEFAULTKEY\n"
			   "aws_secret_access_key = defaultsecret\n\n"
			   "# the nightly job's key\n[nightly]\naws_access_key_id = NIGHTKEY\n"
			   "aws_secret_access_key = nightsecret\n";
	ck_assert_int_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	close(fd);
	struct cn_s3_config c;
	memset(&c, 0, sizeof(c));
	setenv("AWS_SHARED_CREDENTIALS_FILE", path, 1);
	ck_assert_int_eq(cn_s3_config_resolve(&c), 0);
	ck_assert_str_eq(c.access_key, "DEFAULTKEY");
	ck_assert_str_eq(c.secret_key, "defaultsecret");

	memset(&c, 0, sizeof(c));
	setenv("AWS_PROFILE", "nightly", 1);
	ck_assert_int_eq(cn_s3_config_resolve(&c), 0);
	ck_assert_str_eq(c.access_key, "NIGHTKEY");

	/* the config's file and profile win over the environment */
	clear_env();
	setenv("AWS_ACCESS_KEY_ID", "ENVKEY", 1);
	setenv("AWS_SECRET_ACCESS_KEY", "envsecret", 1);
	memset(&c, 0, sizeof(c));
	snprintf(c.credentials_file, sizeof(c.credentials_file), "%s", path);
	snprintf(c.profile, sizeof(c.profile), "nightly");
	ck_assert_int_eq(cn_s3_config_resolve(&c), 0);
	ck_assert_str_eq(c.access_key, "NIGHTKEY");
	ck_assert_str_eq(c.secret_key, "nightsecret");

	memset(&c, 0, sizeof(c));
	snprintf(c.credentials_file, sizeof(c.credentials_file), "%s", path);
	snprintf(c.profile, sizeof(c.profile), "nosuch");
	ck_assert_int_eq(cn_s3_config_resolve(&c), -EINVAL);
	ck_assert_ptr_nonnull(strstr(cn_error_message(), "nosuch"));
	unlink(path);

	/* nothing anywhere: a message saying where credentials come from */
	clear_env();
	memset(&c, 0, sizeof(c));
	ck_assert_int_eq(cn_s3_config_resolve(&c), -EINVAL);
	ck_assert_ptr_nonnull(strstr(cn_error_message(), "AWS_ACCESS_KEY_ID"));
}
END_TEST

START_TEST(test_layout_keys)
{
	uint8_t d[32];
	for (int i = 0; i < 32; i++)
		d[i] = (uint8_t)(0xa0 + i);
	char k[96];
	cn_s3_chunk_key(d, k);
	ck_assert_str_eq(k, ".chunks/a0a1/a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf");
	struct cn_snapshot_id id;
	memset(&id, 0, sizeof(id));
	snprintf(id.type, sizeof(id.type), "host");
	snprintf(id.id, sizeof(id.id), "nas");
	id.time = 1796587200; /* 2026-12-06T20:00:00Z */
	char key[800];
	ck_assert_int_eq(cn_s3_snapshot_key(&id, "index.json.blob", key, sizeof(key)), 0);
	ck_assert_str_eq(key, "host/nas/2026-12-06T20:00:00Z/index.json.blob");
	snprintf(id.ns, sizeof(id.ns), "family/photos");
	ck_assert_int_eq(cn_s3_snapshot_key(&id, NULL, key, sizeof(key)), 0);
	ck_assert_str_eq(key, "ns/family/ns/photos/host/nas/2026-12-06T20:00:00Z/");
	ck_assert_int_eq(cn_s3_writer_key(&id, key, sizeof(key)), 0);
	ck_assert_str_eq(key, ".cairn/writers/ns/family/ns/photos/host/nas/2026-12-06T20:00:00Z");
}
END_TEST

CN_TEST_MAIN("s3_config", "core", 0,
	     test_parse_url,
	     test_resolve_env,
	     test_resolve_credentials_file,
	     test_layout_keys)
