/* Repository strings, secrets from the environment, fingerprints, and the
 * pure reply parsers of the PBS client. */
#include <check.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/cn_error.h"
#include "net/cn_h2.h"
#include "net/cn_pbs.h"
#include "net/cn_pbs_http.h"
#include "net/cn_pbs_repo.h"

START_TEST(test_repo_store_only)
{
	struct cn_pbs_repo r;
	ck_assert_int_eq(cn_pbs_repo_parse("store1", &r), 0);
	ck_assert_str_eq(r.store, "store1");
	ck_assert_str_eq(r.host, "localhost");
	ck_assert_str_eq(r.auth_id, "root@pam");
	ck_assert_str_eq(r.user, "root@pam");
	ck_assert_int_eq(r.is_token, 0);
	ck_assert_uint_eq(r.port, 8007);
}
END_TEST

START_TEST(test_repo_full_token)
{
	struct cn_pbs_repo r;
	char s[300];
	ck_assert_int_eq(cn_pbs_repo_parse("backup@pbs!mytoken@pbs.example.com:8008:store1", &r), 0);
	ck_assert_str_eq(r.auth_id, "backup@pbs!mytoken");
	ck_assert_str_eq(r.user, "backup@pbs");
	ck_assert_int_eq(r.is_token, 1);
	ck_assert_str_eq(r.host, "pbs.example.com");
	ck_assert_str_eq(r.connect_host, "pbs.example.com");
	ck_assert_uint_eq(r.port, 8008);
	ck_assert_str_eq(r.store, "store1");
	ck_assert_int_eq(cn_pbs_repo_format(&r, s, sizeof(s)), 0);
	ck_assert_str_eq(s, "backup@pbs!mytoken@pbs.example.com:8008:store1");
}
END_TEST

START_TEST(test_repo_user_host)
{
	struct cn_pbs_repo r;
	ck_assert_int_eq(cn_pbs_repo_parse("alice@pve@10.0.0.5:tank", &r), 0);
	ck_assert_str_eq(r.auth_id, "alice@pve");
	ck_assert_int_eq(r.is_token, 0);
	ck_assert_str_eq(r.host, "10.0.0.5");
	ck_assert_uint_eq(r.port, 8007);
	ck_assert_str_eq(r.store, "tank");
	/* user names may contain '@': the auth id ends at the last '@' */
	ck_assert_int_eq(cn_pbs_repo_parse("a@b.c@pam@host:store", &r), 0);
	ck_assert_str_eq(r.auth_id, "a@b.c@pam");
	ck_assert_str_eq(r.user, "a@b.c@pam");
	ck_assert_str_eq(r.host, "host");
	ck_assert_int_eq(cn_pbs_repo_parse("host:store", &r), 0);
	ck_assert_str_eq(r.host, "host");
	ck_assert_str_eq(r.auth_id, "root@pam");
}
END_TEST

START_TEST(test_repo_ipv6)
{
	struct cn_pbs_repo r;
	ck_assert_int_eq(cn_pbs_repo_parse("root@pam@[fe80::1]:8007:store", &r), 0);
	ck_assert_str_eq(r.host, "[fe80::1]");
	ck_assert_str_eq(r.connect_host, "fe80::1");
	ck_assert_uint_eq(r.port, 8007);
	ck_assert_int_eq(cn_pbs_repo_parse("[::1]:st1", &r), 0);
	ck_assert_str_eq(r.connect_host, "::1");
	ck_assert_uint_eq(r.port, 8007);
	ck_assert_int_eq(cn_pbs_repo_parse("[::1]:9999:st1", &r), 0);
	ck_assert_uint_eq(r.port, 9999);
	/* an unbracketed IPv6 address cannot be told from the ports */
	ck_assert_int_eq(cn_pbs_repo_parse("::1:st1", &r), -EINVAL);
	ck_assert_int_eq(cn_pbs_repo_parse("[zz::1]:st1", &r), -EINVAL);
}
END_TEST

START_TEST(test_repo_invalid)
{
	struct cn_pbs_repo r;
	const char *bad[] = {
		"", "st", "a:b:c:store", "host:99999:store", "host:0:store", "user@host:store",
		"us er@pam@host:store", "root@pam!@host:store", "root@pam!tok/x@host:store",
		"host:store/x", "host:-store", "h_st:store", "-host:store", "host.:store",
		"root@pam@:store", ":store", "host:a23456789012345678901234567890123",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		ck_assert_msg(cn_pbs_repo_parse(bad[i], &r) == -EINVAL, "accepted '%s'", bad[i]);
		ck_assert_ptr_nonnull(strstr(cn_error_message(), "repository"));
	}
}
END_TEST

START_TEST(test_repo_env)
{
	struct cn_pbs_repo r;
	unsetenv("PBS_REPOSITORY");
	ck_assert_int_eq(cn_pbs_repo_from_env(NULL, &r), -ENOENT);
	setenv("PBS_REPOSITORY", "u@pbs@h:datastore", 1);
	ck_assert_int_eq(cn_pbs_repo_from_env(NULL, &r), 0);
	ck_assert_str_eq(r.store, "datastore");
	ck_assert_int_eq(cn_pbs_repo_from_env("other", &r), 0);
	ck_assert_str_eq(r.store, "other");
	unsetenv("PBS_REPOSITORY");
}
END_TEST

START_TEST(test_secret_env)
{
	char *s = NULL;
	char path[] = "/tmp/cn_secret_XXXXXX";
	unsetenv("PBS_PASSWORD");
	unsetenv("PBS_PASSWORD_FD");
	unsetenv("PBS_PASSWORD_FILE");
	ck_assert_int_eq(cn_pbs_secret_from_env(&s), -ENOENT);

	int fd = mkstemp(path);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(write(fd, "file-secret\nsecond line\n", 24), 24);
	close(fd);
	setenv("PBS_PASSWORD_FILE", path, 1);
	ck_assert_int_eq(cn_pbs_secret_from_env(&s), 0);
	ck_assert_str_eq(s, "file-secret");
	cn_pbs_secret_free(s);

	/* FD wins over FILE */
	int p[2];
	ck_assert_int_eq(pipe(p), 0);
	ck_assert_int_eq(write(p[1], "fd-secret", 9), 9);
	close(p[1]);
	char num[16];
	snprintf(num, sizeof(num), "%d", p[0]);
	setenv("PBS_PASSWORD_FD", num, 1);
	ck_assert_int_eq(cn_pbs_secret_from_env(&s), 0);
	ck_assert_str_eq(s, "fd-secret");
	cn_pbs_secret_free(s);
	close(p[0]);

	/* PBS_PASSWORD wins over everything, first line only */
	setenv("PBS_PASSWORD", "env-secret\r\nignored", 1);
	ck_assert_int_eq(cn_pbs_secret_from_env(&s), 0);
	ck_assert_str_eq(s, "env-secret");
	cn_pbs_secret_free(s);

	unsetenv("PBS_PASSWORD");
	setenv("PBS_PASSWORD_FD", "x1", 1);
	ck_assert_int_eq(cn_pbs_secret_from_env(&s), -EINVAL);
	unsetenv("PBS_PASSWORD_FD");
	setenv("PBS_PASSWORD_FILE", "/nonexistent/cn_secret", 1);
	ck_assert_int_eq(cn_pbs_secret_from_env(&s), -ENOENT);
	ck_assert_ptr_nonnull(strstr(cn_error_message(), "PBS_PASSWORD_FILE"));
	unsetenv("PBS_PASSWORD_FILE");
	unlink(path);
}
END_TEST

START_TEST(test_fingerprint)
{
	uint8_t fp[32], back[32];
	char text[96];
	for (int i = 0; i < 32; i++)
		fp[i] = (uint8_t)(i * 8 + 0x0a);
	cn_pbs_fingerprint_format(fp, text);
	ck_assert_uint_eq(strlen(text), 95);
	ck_assert_str_eq(text, "0a:12:1a:22:2a:32:3a:42:4a:52:5a:62:6a:72:7a:82:"
			       "8a:92:9a:a2:aa:b2:ba:c2:ca:d2:da:e2:ea:f2:fa:02");
	ck_assert_int_eq(cn_pbs_fingerprint_parse(text, back), 0);
	ck_assert_mem_eq(fp, back, 32);
	/* upper case and the plain 64-digit form */
	char upper[96];
	for (int i = 0; i < 96; i++)
		upper[i] = (char)(text[i] >= 'a' && text[i] <= 'f' ? text[i] - 32 : text[i]);
	ck_assert_int_eq(cn_pbs_fingerprint_parse(upper, back), 0);
	ck_assert_mem_eq(fp, back, 32);
	ck_assert_int_eq(cn_pbs_fingerprint_parse("0a121a222a323a424a525a626a727a828a929aa2aab2bac2cad2dae2eaf2fa02", back), 0);
	ck_assert_mem_eq(fp, back, 32);
	text[2] = '-';
	ck_assert_int_eq(cn_pbs_fingerprint_parse(text, back), -EINVAL);
	ck_assert_int_eq(cn_pbs_fingerprint_parse("0a:12", back), -EINVAL);
	text[2] = ':';
	text[0] = 'g';
	ck_assert_int_eq(cn_pbs_fingerprint_parse(text, back), -EINVAL);
}
END_TEST

START_TEST(test_credential_encoding)
{
	char out[128];
	ck_assert_int_eq(cn_pbs_encode_credential("PBS:root@pam:65A0::a+b/c=", out, sizeof(out)), 0);
	ck_assert_str_eq(out, "PBS:root@pam:65A0::a+b/c=");
	ck_assert_int_eq(cn_pbs_encode_credential("a b\"#<>`?{}\x7f\xc3", out, sizeof(out)), 0);
	ck_assert_str_eq(out, "a%20b%22%23%3C%3E%60%3F%7B%7D%7F%C3");
	ck_assert_int_eq(cn_pbs_encode_credential("abcdef", out, 4), -ENAMETOOLONG);
	ck_assert_int_eq(cn_h2_urlencode("a/b c&d", out, sizeof(out)), 0);
	ck_assert_str_eq(out, "a%2Fb%20c%26d");
}
END_TEST

START_TEST(test_http_head)
{
	struct cn_pbs_http_head h;
	const char *ok = "HTTP/1.1 101 Switching Protocols\r\nconnection: Upgrade\r\n"
			 "Upgrade: proxmox-backup-protocol-v1\r\n\r\nPRI";
	int n = cn_pbs_http_parse_head((const uint8_t *)ok, strlen(ok), &h);
	ck_assert_int_eq(n, (int)strlen(ok) - 3);
	ck_assert_int_eq(h.status, 101);
	ck_assert_int_eq(h.connection_upgrade, 1);
	ck_assert_str_eq(h.upgrade, "proxmox-backup-protocol-v1");
	ck_assert_int_eq(cn_pbs_http_parse_head((const uint8_t *)ok, 20, &h), 0);

	const char *err = "HTTP/1.1 400 Bad Request\r\ncontent-length: 5\r\n\r\nerror";
	n = cn_pbs_http_parse_head((const uint8_t *)err, strlen(err), &h);
	ck_assert_int_gt(n, 0);
	ck_assert_int_eq(h.status, 400);
	ck_assert_int_eq(h.content_length, 5);
	ck_assert_int_eq(h.connection_upgrade, 0);

	const char *garbage = "SSH-2.0-OpenSSH\r\n\r\n";
	ck_assert_int_eq(cn_pbs_http_parse_head((const uint8_t *)garbage, strlen(garbage), &h), -CN_E_PROTOCOL);
	ck_assert_int_eq(cn_pbs_http_parse_head((const uint8_t *)"XY", 2, &h), -CN_E_PROTOCOL);
	const char *badcl = "HTTP/1.1 200 OK\r\ncontent-length: 1x\r\n\r\n";
	ck_assert_int_eq(cn_pbs_http_parse_head((const uint8_t *)badcl, strlen(badcl), &h), -CN_E_PROTOCOL);
}
END_TEST

START_TEST(test_reply_data)
{
	json_t *d = NULL;
	const char *ok = "{\"data\":{\"version\":\"3.2\"},\"total\":1}";
	ck_assert_int_eq(cn_pbs_reply_data(200, (const uint8_t *)ok, strlen(ok), &d), 0);
	ck_assert_str_eq(json_string_value(json_object_get(d, "version")), "3.2");
	json_decref(d);
	const char *null = "{\"data\":null}";
	ck_assert_int_eq(cn_pbs_reply_data(200, (const uint8_t *)null, strlen(null), &d), 0);
	ck_assert(json_is_null(d));
	json_decref(d);
	ck_assert_int_eq(cn_pbs_reply_data(200, (const uint8_t *)"{}", 2, &d), -CN_E_PROTOCOL);
	ck_assert_int_eq(cn_pbs_reply_data(200, (const uint8_t *)"<html>", 6, &d), -CN_E_PROTOCOL);
	const char *msg = "backup timestamp is older than last backup.\n";
	ck_assert_int_eq(cn_pbs_reply_data(400, (const uint8_t *)msg, strlen(msg), &d), -CN_E_REMOTE);
	ck_assert_str_eq(cn_error_message(), "server error 400: backup timestamp is older than last backup.");
	ck_assert_int_eq(cn_pbs_reply_data(401, (const uint8_t *)"permission check failed.", 25, NULL), -CN_E_AUTH);
	ck_assert_int_eq(cn_pbs_reply_data(404, (const uint8_t *)"x\x01\xff", 3, NULL), -ENOENT);
	ck_assert_str_eq(cn_error_message(), "server error 404: x??");
}
END_TEST

START_TEST(test_parse_lists)
{
	const char *snaps = "[{\"backup-type\":\"host\",\"backup-id\":\"b\",\"backup-time\":20,\"size\":5},"
			    "{\"backup-type\":\"host\",\"backup-id\":\"a\",\"backup-time\":30,\"protected\":true},"
			    "{\"backup-type\":\"host\",\"backup-id\":\"a\",\"backup-time\":10}]";
	json_t *j = json_loads(snaps, 0, NULL);
	struct cn_snapshot_info *v;
	size_t n;
	ck_assert_int_eq(cn_pbs_parse_snapshots(j, "ns1", &v, &n), 0);
	ck_assert_uint_eq(n, 3);
	ck_assert_str_eq(v[0].id.id, "a");
	ck_assert_int_eq(v[0].id.time, 10);
	ck_assert_int_eq(v[1].id.time, 30);
	ck_assert_int_eq(v[1].protected_, 1);
	ck_assert_str_eq(v[2].id.id, "b");
	ck_assert_uint_eq(v[2].size, 5);
	ck_assert_str_eq(v[2].id.ns, "ns1");
	free(v);
	json_decref(j);

	j = json_loads("[{\"backup-type\":\"disk\",\"backup-id\":\"a\",\"backup-time\":1}]", 0, NULL);
	ck_assert_int_eq(cn_pbs_parse_snapshots(j, "", &v, &n), -CN_E_PROTOCOL);
	json_decref(j);
	j = json_loads("[{\"backup-type\":\"host\",\"backup-id\":\"../x\",\"backup-time\":1}]", 0, NULL);
	ck_assert_int_eq(cn_pbs_parse_snapshots(j, "", &v, &n), -CN_E_PROTOCOL);
	json_decref(j);

	j = json_loads("[{\"backup-type\":\"vm\",\"backup-id\":\"100\",\"backup-time\":7,\"keep\":false}]", 0, NULL);
	struct cn_pbs_prune_item *p;
	ck_assert_int_eq(cn_pbs_parse_prune(j, "", &p, &n), 0);
	ck_assert_uint_eq(n, 1);
	ck_assert_int_eq(p[0].keep, 0);
	ck_assert_str_eq(p[0].id.type, "vm");
	free(p);
	json_decref(j);

	j = json_loads("[{\"backup-type\":\"ct\",\"backup-id\":\"1\",\"last-backup\":9,\"backup-count\":2}]", 0, NULL);
	struct cn_pbs_group *g;
	ck_assert_int_eq(cn_pbs_parse_groups(j, &g, &n), 0);
	ck_assert_uint_eq(n, 1);
	ck_assert_uint_eq(g[0].backup_count, 2);
	free(g);
	json_decref(j);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("pbs_repo");
	TCase *tc = tcase_create("core");
	tcase_add_test(tc, test_repo_store_only);
	tcase_add_test(tc, test_repo_full_token);
	tcase_add_test(tc, test_repo_user_host);
	tcase_add_test(tc, test_repo_ipv6);
	tcase_add_test(tc, test_repo_invalid);
	tcase_add_test(tc, test_repo_env);
	tcase_add_test(tc, test_secret_env);
	tcase_add_test(tc, test_fingerprint);
	tcase_add_test(tc, test_credential_encoding);
	tcase_add_test(tc, test_http_head);
	tcase_add_test(tc, test_reply_data);
	tcase_add_test(tc, test_parse_lists);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
