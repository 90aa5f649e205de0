/* The S3 client's multi-object delete (cn_s3_delete_keys) against a small
 * HTTP server on loopback that plays the service: the request's body,
 * Content-MD5 and x-amz-content-sha256; <Error> entries of the answer
 * reported per key; the fall-back to one DELETE per key when the service
 * answers 501 NotImplemented. (Against a real radosgw:
 * tests/integration/test_s3_admin.py, test_gc_batches.) */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/cn_error.h"
#include "common/cn_util.h"
#include "net/cn_s3.h"
#include "cn_test.h"

enum fake_mode { FAKE_NO_MULTI, FAKE_ONE_DENIED };

struct fake {
	int lfd, port;
	pthread_t th;
	enum fake_mode mode;
	const char *denied;   /* FAKE_ONE_DENIED: this full key (XML-escaped) is refused
			       * when a request holds it */
	/* what the server saw */
	int posts, deletes, bad_requests;
	int posts_md5_ok, posts_sha_ok, keys_in_posts;
	char last_delete[256];
};

/* The value of header name in the request head h ("" if absent). */
static void header(const char *h, const char *name, char *out, size_t n)
{
	out[0] = '\0';
	size_t nl = strlen(name);
	for (const char *p = strstr(h, "\r\n"); p && p[2]; p = strstr(p + 2, "\r\n")) {
		const char *l = p + 2;
		if (!strncasecmp(l, name, nl) && l[nl] == ':') {
			l += nl + 1;
			while (*l == ' ')
				l++;
			size_t len = strcspn(l, "\r");
			snprintf(out, n, "%.*s", (int)len, l);
			return;
		}
	}
}

static int send_all(int fd, const char *s, size_t n)
{
	while (n) {
		ssize_t w = write(fd, s, n);
		if (w <= 0)
			return -1;
		s += w;
		n -= (size_t)w;
	}
	return 0;
}

static void answer(int fd, const char *status, const char *body)
{
	char head[256];
	int hl = snprintf(head, sizeof(head),
			  "HTTP/1.1 %s\r\nContent-Type: application/xml\r\nContent-Length: %zu\r\n\r\n",
			  status, strlen(body));
	send_all(fd, head, (size_t)hl);
	send_all(fd, body, strlen(body));
}

/* Checks a POST's digest headers against its body. */
static void check_post(struct fake *f, const char *head, const char *body, size_t len)
{
	uint8_t d[32];
	unsigned int dl;
	char want[96], got[128];
	EVP_Digest(body, len, d, &dl, EVP_md5(), NULL);
	EVP_EncodeBlock((unsigned char *)want, d, 16);
	header(head, "Content-MD5", got, sizeof(got));
	f->posts_md5_ok += !strcmp(want, got);
	EVP_Digest(body, len, d, &dl, EVP_sha256(), NULL);
	cn_hex_encode(d, 32, want);
	header(head, "x-amz-content-sha256", got, sizeof(got));
	f->posts_sha_ok += !strcmp(want, got);
	for (const char *p = body; (p = strstr(p, "<Key>")); p += 5)
		f->keys_in_posts++;
}

/* Serves one request of a connection: 0, or -1 at its end. */
static int serve_one(struct fake *f, int fd, char *buf, size_t cap)
{
	size_t len = 0;
	char *end = NULL;
	while (!(end = memmem(buf, len, "\r\n\r\n", 4))) {
		if (len == cap)
			return -1;
		ssize_t r = read(fd, buf + len, cap - len);
		if (r <= 0)
			return -1;
		len += (size_t)r;
	}
	*end = '\0';
	char cl[32];
	header(buf, "Content-Length", cl, sizeof(cl));
	size_t blen = (size_t)strtoul(cl, NULL, 10), have = len - (size_t)(end + 4 - buf);
	char *body = end + 4;
	if ((size_t)(body - buf) + blen >= cap)
		return -1;
	while (have < blen) {
		ssize_t r = read(fd, body + have, blen - have);
		if (r <= 0)
			return -1;
		have += (size_t)r;
	}
	body[blen] = '\0';
	if (!strncmp(buf, "POST /bucket/?delete= ", 22)) {
		f->posts++;
		check_post(f, buf, body, blen);
		if (f->mode == FAKE_NO_MULTI) {
			answer(fd, "501 Not Implemented",
			       "<?xml version=\"1.0\"?><Error><Code>NotImplemented</Code>"
			       "<Message>A header you provided implies functionality that is not "
			       "implemented</Message></Error>");
		} else if (!strstr(body, f->denied)) {
			answer(fd, "200 OK", "<?xml version=\"1.0\" encoding=\"UTF-8\"?><DeleteResult "
					     "xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"/>");
		} else {
			char ok[1024];
			snprintf(ok, sizeof(ok),
				 "<?xml version=\"1.0\" encoding=\"UTF-8\"?><DeleteResult "
				 "xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Error><Key>%s</Key>"
				 "<Code>AccessDenied</Code><Message>Access Denied</Message></Error>"
				 "</DeleteResult>",
				 f->denied);
			answer(fd, "200 OK", ok);
		}
	} else if (!strncmp(buf, "DELETE /bucket/", 15)) {
		f->deletes++;
		snprintf(f->last_delete, sizeof(f->last_delete), "%.*s",
			 (int)strcspn(buf + 15, " "), buf + 15);
		send_all(fd, "HTTP/1.1 204 No Content\r\n\r\n", 27);
	} else {
		f->bad_requests++;
		answer(fd, "400 Bad Request", "<Error><Code>InvalidRequest</Code></Error>");
	}
	return 0;
}

static void *serve(void *arg)
{
	struct fake *f = arg;
	size_t cap = 1 << 20;
	char *buf = malloc(cap);
	int fd;
	while (buf && (fd = accept(f->lfd, NULL, NULL)) >= 0) {
		while (serve_one(f, fd, buf, cap) == 0)
			;
		close(fd);
	}
	free(buf);
	return NULL;
}

static void fake_start(struct fake *f, enum fake_mode mode)
{
	memset(f, 0, sizeof(*f));
	f->mode = mode;
	f->lfd = socket(AF_INET, SOCK_STREAM, 0);
	ck_assert_int_ge(f->lfd, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t al = sizeof(a);
	ck_assert_int_eq(bind(f->lfd, (struct sockaddr *)&a, sizeof(a)), 0);
	ck_assert_int_eq(listen(f->lfd, 8), 0);
	ck_assert_int_eq(getsockname(f->lfd, (struct sockaddr *)&a, &al), 0);
	f->port = ntohs(a.sin_port);
	ck_assert_int_eq(pthread_create(&f->th, NULL, serve, f), 0);
}

/* Ends the server once the client (and so its connection) is gone. */
static void fake_stop(struct fake *f)
{
	shutdown(f->lfd, SHUT_RDWR);
	pthread_join(f->th, NULL);
	close(f->lfd);
}

static struct cn_s3 *client(const struct fake *f, const char *prefix)
{
	struct cn_s3_config c;
	memset(&c, 0, sizeof(c));
	snprintf(c.endpoint, sizeof(c.endpoint), "http://127.0.0.1:%d", f->port);
	snprintf(c.bucket, sizeof(c.bucket), "bucket");
	snprintf(c.prefix, sizeof(c.prefix), "%s", prefix);
	snprintf(c.access_key, sizeof(c.access_key), "AKIDTEST");
	snprintf(c.secret_key, sizeof(c.secret_key), "secret");
	snprintf(c.region, sizeof(c.region), "us-east-1");
	c.addressing = CN_S3_ADDR_PATH;
	c.max_attempts = 1;
	ck_assert_int_eq(cn_s3_config_resolve(&c), 0);
	struct cn_s3 *s;
	ck_assert_int_eq(cn_s3_new(&c, &s), 0);
	return s;
}

START_TEST(test_error_entries_per_key)
{
	struct fake f;
	fake_start(&f, FAKE_ONE_DENIED);
	f.denied = "pre/.chunks/0002/k&amp;2"; /* as XML has it */
	struct cn_s3 *s = client(&f, "pre");
	const char *keys[] = {".chunks/0000/k0", ".chunks/0001/k1", ".chunks/0002/k&2",
			      ".chunks/0003/k3"};
	int status[4] = {1, 1, 1, 1};
	int r = cn_s3_delete_keys(s, keys, 4, status);
	ck_assert_int_eq(r, -EACCES);
	ck_assert_int_eq(status[0], 0);
	ck_assert_int_eq(status[1], 0);
	ck_assert_int_eq(status[2], -EACCES);
	ck_assert_int_eq(status[3], 0);
	ck_assert_msg(strstr(cn_error_message(), ".chunks/0002/k&2 (AccessDenied"), "%s",
		      cn_error_message());
	ck_assert_msg(strstr(cn_error_message(), "1 of 4"), "%s", cn_error_message());
	/* 1001 keys: two requests, no single DELETE */
	char (*many)[32] = calloc(1001, sizeof(*many));
	const char **mk = calloc(1001, sizeof(*mk));
	for (int i = 0; i < 1001; i++) {
		snprintf(many[i], sizeof(many[i]), ".chunks/%04x/m%d", i, i);
		mk[i] = many[i];
	}
	ck_assert_int_eq(cn_s3_delete_keys(s, mk, 1001, NULL), 0);
	free(mk);
	free(many);
	cn_s3_free(s);
	fake_stop(&f);
	ck_assert_int_eq(f.posts, 3);
	ck_assert_int_eq(f.posts_md5_ok, 3);
	ck_assert_int_eq(f.posts_sha_ok, 3);
	ck_assert_int_eq(f.keys_in_posts, 4 + 1001);
	ck_assert_int_eq(f.deletes, 0);
	ck_assert_int_eq(f.bad_requests, 0);
}
END_TEST

START_TEST(test_fallback_on_501)
{
	struct fake f;
	fake_start(&f, FAKE_NO_MULTI);
	struct cn_s3 *s = client(&f, "");
	const char *keys[] = {"a/1", "a/2", "a/3"};
	int status[3] = {1, 1, 1};
	ck_assert_int_eq(cn_s3_delete_keys(s, keys, 3, status), 0);
	ck_assert_int_eq(status[0] | status[1] | status[2], 0);
	ck_assert_int_eq(f.posts, 1);
	ck_assert_int_eq(f.deletes, 3);
	ck_assert_str_eq(f.last_delete, "a/3");
	/* the client remembers: no more POSTs */
	ck_assert_int_eq(cn_s3_delete_keys(s, keys, 2, NULL), 0);
	cn_s3_free(s);
	fake_stop(&f);
	ck_assert_int_eq(f.posts, 1);
	ck_assert_int_eq(f.deletes, 5);
	ck_assert_int_eq(f.bad_requests, 0);
}
END_TEST

CN_TEST_MAIN("s3_delete", "core", 60,
	     test_error_entries_per_key,
	     test_fallback_on_501)
