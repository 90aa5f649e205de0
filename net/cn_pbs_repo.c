#include "net/cn_pbs_repo.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <unistd.h>

#include "common/cn_error.h"
#include "common/cn_util.h"

/* upstream PROXMOX_SAFE_ID_REGEX: [A-Za-z0-9_][A-Za-z0-9._-]* */
static int is_safe_id(const char *s, size_t len)
{
	if (len == 0 || !(isalnum((unsigned char)s[0]) || s[0] == '_'))
		return 0;
	for (size_t i = 1; i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		if (!(isalnum(c) || c == '_' || c == '.' || c == '-'))
			return 0;
	}
	return 1;
}

/* upstream USER_NAME: [^\s:/[:cntrl:]]+ (1..64 chars in the schema) */
static int is_user_name(const char *s, size_t len)
{
	if (len == 0 || len > 64)
		return 0;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		if (isspace(c) || iscntrl(c) || c == ':' || c == '/')
			return 0;
	}
	return 1;
}

/* upstream realm: [A-Za-z][A-Za-z0-9.\-_]+ , 2..32 chars */
static int is_realm(const char *s, size_t len)
{
	if (len < 2 || len > 32 || !isalpha((unsigned char)s[0]))
		return 0;
	for (size_t i = 1; i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		if (!(isalnum(c) || c == '.' || c == '-' || c == '_'))
			return 0;
	}
	return 1;
}

/* DNS name (labels of [A-Za-z0-9-], not starting/ending with '-'), which
 * also covers IPv4 dotted quads. */
static int is_dns_name(const char *s, size_t len)
{
	size_t label = 0;
	if (len == 0 || len > 253)
		return 0;
	for (size_t i = 0; i <= len; i++) {
		if (i == len || s[i] == '.') {
			if (label == 0 || s[i - 1] == '-')
				return 0;
			label = 0;
			continue;
		}
		unsigned char c = (unsigned char)s[i];
		if (!(isalnum(c) || c == '-') || (label == 0 && c == '-'))
			return 0;
		if (++label > 63)
			return 0;
	}
	return 1;
}

static int is_ipv6(const char *s, size_t len)
{
	size_t colons = 0;
	if (len < 2 || len > 45)
		return 0;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c == ':')
			colons++;
		else if (!(isxdigit(c) || c == '.'))
			return 0;
	}
	return colons >= 2;
}

/* Checks "user@realm" or "user@realm!token" and fills r's auth fields. */
static int parse_auth_id(const char *s, size_t len, struct cn_pbs_repo *r)
{
	const char *at = NULL, *bang = NULL;
	for (size_t i = 0; i < len; i++)
		if (s[i] == '@')
			at = s + i;
	if (!at || len >= sizeof(r->auth_id))
		return -EINVAL;
	for (const char *p = at; p < s + len; p++)
		if (*p == '!')
			bang = p;
	const char *realm_end = bang ? bang : s + len;
	if (!is_user_name(s, (size_t)(at - s)) ||
	    !is_realm(at + 1, (size_t)(realm_end - at - 1)))
		return -EINVAL;
	if (bang && !is_safe_id(bang + 1, (size_t)(s + len - bang - 1)))
		return -EINVAL;
	memcpy(r->auth_id, s, len);
	r->auth_id[len] = '\0';
	memcpy(r->user, s, (size_t)(realm_end - s));
	r->user[realm_end - s] = '\0';
	r->is_token = bang != NULL;
	return 0;
}

static int parse_host(const char *s, size_t len, struct cn_pbs_repo *r)
{
	if (len >= sizeof(r->host))
		return -EINVAL;
	if (len >= 2 && s[0] == '[' && s[len - 1] == ']') {
		if (!is_ipv6(s + 1, len - 2))
			return -EINVAL;
		memcpy(r->connect_host, s + 1, len - 2);
		r->connect_host[len - 2] = '\0';
	} else {
		if (!is_dns_name(s, len))
			return -EINVAL;
		memcpy(r->connect_host, s, len);
		r->connect_host[len] = '\0';
	}
	memcpy(r->host, s, len);
	r->host[len] = '\0';
	return 0;
}

/* "[AUTH@]HOST": the auth id ends at the last '@' (user names may hold
 * '@', host names may not). */
static int parse_auth_host(const char *s, size_t len, struct cn_pbs_repo *r)
{
	const char *at = NULL;
	for (size_t i = 0; i < len; i++)
		if (s[i] == '@')
			at = s + i;
	if (at) {
		if (parse_auth_id(s, (size_t)(at - s), r) < 0)
			return -EINVAL;
		return parse_host(at + 1, (size_t)(s + len - at - 1), r);
	}
	return parse_host(s, len, r);
}

int cn_pbs_repo_parse(const char *s, struct cn_pbs_repo *out)
{
	struct cn_pbs_repo r;
	memset(&r, 0, sizeof(r));
	strcpy(r.auth_id, "root@pam");
	strcpy(r.user, "root@pam");
	strcpy(r.host, "localhost");
	strcpy(r.connect_host, "localhost");
	r.port = CN_PBS_DEFAULT_PORT;

	const char *colon = strrchr(s, ':');
	const char *store = colon ? colon + 1 : s;
	size_t store_len = strlen(store);
	if (store_len < 3 || store_len > 32 || !is_safe_id(store, store_len))
		return cn_error_set(-EINVAL, "unable to parse repository url '%s': bad datastore name", s);
	memcpy(r.store, store, store_len + 1);

	if (colon) {
		size_t plen = (size_t)(colon - s);
		int ok = 0;
		/* Try "HOST:PORT" first, as the upstream regex does. */
		const char *pc = NULL;
		for (size_t i = 0; i < plen; i++)
			if (s[i] == ':')
				pc = s + i;
		if (pc && pc[1] != '\0') {
			size_t dlen = (size_t)(colon - pc - 1);
			int digits = dlen >= 1 && dlen <= 5;
			for (size_t i = 0; digits && i < dlen; i++)
				digits = isdigit((unsigned char)pc[1 + i]);
			if (digits && parse_auth_host(s, (size_t)(pc - s), &r) == 0) {
				unsigned long port = strtoul(pc + 1, NULL, 10);
				if (port == 0 || port > 65535)
					return cn_error_set(-EINVAL, "unable to parse repository url '%s': bad port", s);
				r.port = (uint16_t)port;
				ok = 1;
			}
		}
		if (!ok && parse_auth_host(s, plen, &r) < 0)
			return cn_error_set(-EINVAL, "unable to parse repository url '%s'", s);
	}
	*out = r;
	return 0;
}

int cn_pbs_repo_from_env(const char *arg, struct cn_pbs_repo *out)
{
	if (!arg)
		arg = getenv("PBS_REPOSITORY");
	if (!arg || !*arg)
		return cn_error_set(-ENOENT, "no repository given (use --repository or PBS_REPOSITORY)");
	return cn_pbs_repo_parse(arg, out);
}

int cn_pbs_repo_format(const struct cn_pbs_repo *r, char *out, size_t out_size)
{
	int n = snprintf(out, out_size, "%s@%s:%u:%s", r->auth_id, r->host,
			 (unsigned)r->port, r->store);
	if (n < 0 || (size_t)n >= out_size)
		return -ENAMETOOLONG;
	return 0;
}

/* Keeps only the first line of a malloc'd secret. */
static char *first_line(char *s)
{
	s[strcspn(s, "\r\n")] = '\0';
	return s;
}

static int read_secret_fd(int fd, char **out)
{
	struct cn_buf b = {0};
	char tmp[512];
	for (;;) {
		ssize_t n = read(fd, tmp, sizeof(tmp));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			int e = -errno;
			explicit_bzero(tmp, sizeof(tmp));
			if (b.data)
				explicit_bzero(b.data, b.cap);
			cn_buf_free(&b);
			return e;
		}
		if (n == 0 || cn_buf_append(&b, tmp, (size_t)n) < 0 || memchr(tmp, '\n', (size_t)n) ||
		    b.len > 65536)
			break;
	}
	explicit_bzero(tmp, sizeof(tmp));
	if (cn_buf_append(&b, "", 1) < 0) {
		if (b.data)
			explicit_bzero(b.data, b.cap);
		cn_buf_free(&b);
		return -ENOMEM;
	}
	*out = first_line((char *)b.data);
	return 0;
}

int cn_pbs_secret_from_env(char **out)
{
	const char *v = getenv("PBS_PASSWORD");
	if (v) {
		char *s = strdup(v);
		if (!s)
			return cn_error_set(-ENOMEM, "out of memory");
		*out = first_line(s);
		return 0;
	}
	v = getenv("PBS_PASSWORD_FD");
	if (v) {
		char *end;
		long fd = strtol(v, &end, 10);
		if (*v == '\0' || *end != '\0' || fd < 0 || fd > 1 << 20)
			return cn_error_set(-EINVAL, "PBS_PASSWORD_FD is not a file descriptor number");
		int r = read_secret_fd((int)fd, out);
		if (r < 0)
			return cn_error_sys(r, "reading PBS_PASSWORD_FD %ld", fd);
		return 0;
	}
	v = getenv("PBS_PASSWORD_FILE");
	if (v) {
		int fd = open(v, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			return cn_error_sys(-errno, "opening PBS_PASSWORD_FILE '%s'", v);
		int r = read_secret_fd(fd, out);
		close(fd);
		if (r < 0)
			return cn_error_sys(r, "reading PBS_PASSWORD_FILE '%s'", v);
		return 0;
	}
	return -ENOENT;
}

void cn_pbs_secret_free(char *secret)
{
	if (!secret)
		return;
	explicit_bzero(secret, strlen(secret));
	free(secret);
}

void cn_pbs_fingerprint_format(const uint8_t fp[32], char out[96])
{
	static const char digits[] = "0123456789abcdef";
	for (int i = 0; i < 32; i++) {
		out[3 * i] = digits[fp[i] >> 4];
		out[3 * i + 1] = digits[fp[i] & 15];
		out[3 * i + 2] = i == 31 ? '\0' : ':';
	}
}

int cn_pbs_fingerprint_parse(const char *s, uint8_t fp[32])
{
	char hex[65];
	size_t n = 0, len = strlen(s);
	if (len == 95) {
		for (size_t i = 0; i < len; i++) {
			if (i % 3 == 2) {
				if (s[i] != ':')
					goto bad;
			} else {
				hex[n++] = s[i];
			}
		}
		hex[n] = '\0';
	} else if (len == 64) {
		memcpy(hex, s, 65);
	} else {
		goto bad;
	}
	if (cn_hex_decode(hex, fp, 32) == 0)
		return 0;
bad:
	return cn_error_set(-EINVAL, "invalid certificate fingerprint '%.100s' (expected 32 hex pairs joined by ':')", s);
}
