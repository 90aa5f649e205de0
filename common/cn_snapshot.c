#include "common/cn_snapshot.h"
#include "common/cn_error.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

int cn_snapshot_format_time(int64_t t, char *out, size_t out_size)
{
	struct tm tm;
	time_t tt = (time_t)t;
	if (!gmtime_r(&tt, &tm) || tm.tm_year + 1900 < 0 || tm.tm_year + 1900 > 9999)
		return cn_error_set(-EINVAL, "backup time %lld out of range", (long long)t);
	if (strftime(out, out_size, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
		return cn_error_set(-EINVAL, "time buffer too small");
	return 0;
}

int cn_snapshot_parse_time(const char *s, int64_t *t)
{
	struct tm tm = {0};
	const char *end = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
	if (!end || (strcmp(end, "Z") != 0 && strcmp(end, "+00:00") != 0))
		return cn_error_set(-EINVAL, "'%s' is not an RFC 3339 UTC time (YYYY-MM-DDTHH:MM:SSZ)", s);
	*t = (int64_t)timegm(&tm);
	return 0;
}

static int is_id_char(char c, int first)
{
	if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_')
		return 1;
	return !first && (c == '.' || c == '-');
}

int cn_snapshot_check_id(const char *id)
{
	size_t n = strlen(id);
	if (n == 0 || n > CN_BACKUP_ID_MAX)
		return cn_error_set(-EINVAL, "backup id '%s' must be 1 to %d characters", id, CN_BACKUP_ID_MAX);
	for (size_t i = 0; i < n; i++)
		if (!is_id_char(id[i], i == 0))
			return cn_error_set(-EINVAL, "backup id '%s': invalid character '%c' "
					    "(allowed: letters, digits, '_', and '.' or '-' after the first)", id, id[i]);
	return 0;
}

int cn_snapshot_check_type(const char *type)
{
	if (strcmp(type, "host") && strcmp(type, "vm") && strcmp(type, "ct"))
		return cn_error_set(-EINVAL, "backup type '%s' must be host, vm or ct", type);
	return 0;
}

int cn_snapshot_check_ns(const char *ns)
{
	if (!*ns)
		return 0;
	if (strlen(ns) > CN_NS_MAX)
		return cn_error_set(-EINVAL, "namespace '%s' longer than %d characters", ns, CN_NS_MAX);
	int depth = 0;
	const char *p = ns;
	while (*p) {
		const char *slash = strchr(p, '/');
		size_t len = slash ? (size_t)(slash - p) : strlen(p);
		if (len == 0)
			return cn_error_set(-EINVAL, "namespace '%s' has an empty component", ns);
		for (size_t i = 0; i < len; i++)
			if (!is_id_char(p[i], i == 0))
				return cn_error_set(-EINVAL, "namespace '%s': invalid character '%c'", ns, p[i]);
		if (++depth > CN_NS_DEPTH_MAX)
			return cn_error_set(-EINVAL, "namespace '%s' deeper than %d levels", ns, CN_NS_DEPTH_MAX);
		p += len;
		if (*p == '/' && !*++p)
			return cn_error_set(-EINVAL, "namespace '%s' ends with '/'", ns);
	}
	return 0;
}

int cn_snapshot_parse(const char *s, struct cn_snapshot_id *id)
{
	char type[16], bid[CN_BACKUP_ID_MAX + 2], tbuf[40];
	const char *a = strchr(s, '/');
	const char *b = a ? strchr(a + 1, '/') : NULL;
	if (!a || !b || (size_t)(a - s) >= sizeof(type) ||
	    (size_t)(b - a - 1) >= sizeof(bid) || strlen(b + 1) >= sizeof(tbuf))
		return cn_error_set(-EINVAL, "'%s' is not a snapshot (TYPE/ID/TIME, e.g. host/nas/2024-05-01T02:00:00Z)", s);
	snprintf(type, sizeof(type), "%.*s", (int)(a - s), s);
	snprintf(bid, sizeof(bid), "%.*s", (int)(b - a - 1), a + 1);
	snprintf(tbuf, sizeof(tbuf), "%s", b + 1);
	int r;
	if ((r = cn_snapshot_check_type(type)) < 0 || (r = cn_snapshot_check_id(bid)) < 0 ||
	    (r = cn_snapshot_parse_time(tbuf, &id->time)) < 0)
		return cn_error_prefix(r, "snapshot '%s'", s);
	/* Both were checked above, so they fit. */
	memcpy(id->type, type, strlen(type) + 1);
	memcpy(id->id, bid, strlen(bid) + 1);
	return 0;
}

static int ns_prefix(const char *ns, char *out, size_t out_size, size_t *used)
{
	size_t n = 0;
	const char *p = ns;
	out[0] = '\0';
	while (*p) {
		const char *slash = strchr(p, '/');
		size_t len = slash ? (size_t)(slash - p) : strlen(p);
		int w = snprintf(out + n, out_size - n, "ns/%.*s/", (int)len, p);
		if (w < 0 || (size_t)w >= out_size - n)
			return -ENAMETOOLONG;
		n += (size_t)w;
		p += len;
		if (*p == '/')
			p++;
	}
	*used = n;
	return 0;
}

int cn_snapshot_group_path(const struct cn_snapshot_id *id, char *out, size_t out_size)
{
	size_t n;
	if (ns_prefix(id->ns, out, out_size, &n) < 0)
		return -ENAMETOOLONG;
	int w = snprintf(out + n, out_size - n, "%s/%s", id->type, id->id);
	return (w < 0 || (size_t)w >= out_size - n) ? -ENAMETOOLONG : 0;
}

int cn_snapshot_path(const struct cn_snapshot_id *id, char *out, size_t out_size)
{
	char t[32];
	int r = cn_snapshot_format_time(id->time, t, sizeof(t));
	if (r < 0)
		return r;
	if (cn_snapshot_group_path(id, out, out_size) < 0)
		return -ENAMETOOLONG;
	size_t n = strlen(out);
	int w = snprintf(out + n, out_size - n, "/%s", t);
	return (w < 0 || (size_t)w >= out_size - n) ? -ENAMETOOLONG : 0;
}
