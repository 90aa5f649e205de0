#include "net/cn_pbs_http.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/cn_error.h"

#define HEAD_MAX 16384

void cn_pbs_clean_text(const uint8_t *in, size_t len, size_t max, char *out, size_t out_size)
{
	size_t n = 0;
	for (size_t i = 0; i < len && i < max && n + 1 < out_size; i++) {
		uint8_t c = in[i];
		out[n++] = (c >= 0x20 && c < 0x7f) ? (char)c : (c == '\n' || c == '\t') ? ' ' : '?';
	}
	while (n > 0 && out[n - 1] == ' ')
		n--;
	out[n] = '\0';
}

/* Case-insensitive search for a comma-separated token in a header value. */
static int has_token(const char *v, size_t len, const char *tok)
{
	size_t tl = strlen(tok);
	size_t i = 0;
	while (i < len) {
		while (i < len && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
			i++;
		size_t s = i;
		while (i < len && v[i] != ',')
			i++;
		size_t e = i;
		while (e > s && (v[e - 1] == ' ' || v[e - 1] == '\t'))
			e--;
		if (e - s == tl && strncasecmp(v + s, tok, tl) == 0)
			return 1;
	}
	return 0;
}

int cn_pbs_http_parse_head(const uint8_t *buf, size_t len, struct cn_pbs_http_head *h)
{
	const char *b = (const char *)buf;
	size_t end = 0;
	size_t scan = len < HEAD_MAX ? len : HEAD_MAX;
	for (size_t i = 3; i < scan; i++) {
		if (buf[i - 3] == '\r' && buf[i - 2] == '\n' && buf[i - 1] == '\r' && buf[i] == '\n') {
			end = i + 1;
			break;
		}
	}
	if (end == 0) {
		/* A complete status line can be judged before the rest. */
		const uint8_t *eol = memmem(buf, scan, "\r\n", 2);
		if (eol) {
			struct cn_pbs_http_head tmp;
			uint8_t line[64];
			size_t ll = (size_t)(eol - buf);
			if (ll + 4 > sizeof(line))
				ll = sizeof(line) - 4;
			memcpy(line, buf, ll);
			memcpy(line + ll, "\r\n\r\n", 4);
			if (cn_pbs_http_parse_head(line, ll + 4, &tmp) < 0)
				return -CN_E_PROTOCOL;
		}
		if (len >= HEAD_MAX)
			return cn_error_set(-CN_E_PROTOCOL, "HTTP response head larger than %d bytes", HEAD_MAX);
		/* Reject early what cannot become a status line. */
		size_t cmp = len < 5 ? len : 5;
		if (memcmp(b, "HTTP/", cmp) != 0)
			goto bad;
		return 0;
	}
	memset(h, 0, sizeof(*h));
	h->content_length = -1;
	if (end < 12 + 4 || memcmp(b, "HTTP/1.", 7) != 0 || !isdigit((unsigned char)b[7]) || b[8] != ' ')
		goto bad;
	if (!isdigit((unsigned char)b[9]) || !isdigit((unsigned char)b[10]) || !isdigit((unsigned char)b[11]) ||
	    (b[12] != ' ' && b[12] != '\r'))
		goto bad;
	h->status = (b[9] - '0') * 100 + (b[10] - '0') * 10 + (b[11] - '0');
	if (h->status < 100)
		goto bad;
	size_t i = 0;
	while (i + 1 < end && !(b[i] == '\r' && b[i + 1] == '\n'))
		i++;
	i += 2;
	while (i + 1 < end && !(b[i] == '\r' && b[i + 1] == '\n')) {
		size_t ls = i;
		while (i + 1 < end && !(b[i] == '\r' && b[i + 1] == '\n'))
			i++;
		size_t le = i;
		i += 2;
		const char *colon = memchr(b + ls, ':', le - ls);
		if (!colon || colon == b + ls)
			goto bad;
		size_t nl = (size_t)(colon - (b + ls));
		const char *v = colon + 1;
		size_t vl = le - (size_t)(v - b);
		while (vl > 0 && (*v == ' ' || *v == '\t')) {
			v++;
			vl--;
		}
		while (vl > 0 && (v[vl - 1] == ' ' || v[vl - 1] == '\t'))
			vl--;
		if (nl == 10 && strncasecmp(b + ls, "connection", 10) == 0) {
			if (has_token(v, vl, "upgrade"))
				h->connection_upgrade = 1;
		} else if (nl == 7 && strncasecmp(b + ls, "upgrade", 7) == 0) {
			cn_pbs_clean_text((const uint8_t *)v, vl, sizeof(h->upgrade) - 1, h->upgrade,
					  sizeof(h->upgrade));
		} else if (nl == 14 && strncasecmp(b + ls, "content-length", 14) == 0) {
			int64_t cl = 0;
			if (vl == 0 || vl > 15)
				goto bad;
			for (size_t k = 0; k < vl; k++) {
				if (!isdigit((unsigned char)v[k]))
					goto bad;
				cl = cl * 10 + (v[k] - '0');
			}
			h->content_length = cl;
		}
	}
	return (int)end;
bad:
	return cn_error_set(-CN_E_PROTOCOL, "malformed HTTP response from server");
}

static int status_error(int status, const uint8_t *body, size_t len)
{
	char text[320];
	int code = -CN_E_REMOTE;
	cn_pbs_clean_text(body, len, 300, text, sizeof(text));
	if (status == 401 || status == 403)
		code = -CN_E_AUTH;
	else if (status == 404)
		code = -ENOENT;
	return cn_error_set(code, "server error %d: %s", status, text[0] ? text : "(no message)");
}

int cn_pbs_enoent(int r)
{
	const char *m = cn_error_message();
	if (r == -ENOENT || (r == -CN_E_REMOTE && (strstr(m, "not found") || strstr(m, "does not exist") ||
						   strstr(m, "No such file"))))
		return cn_error_set(-ENOENT, "%s", m);
	return r;
}

int cn_pbs_reply_check(int status, const uint8_t *body, size_t len)
{
	if (status >= 200 && status < 300)
		return 0;
	return status_error(status, body, len);
}

int cn_pbs_reply_data(int status, const uint8_t *body, size_t len, json_t **data)
{
	if (!(status >= 200 && status < 300))
		return status_error(status, body, len);
	json_error_t jerr;
	json_t *root = json_loadb((const char *)body, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!root)
		return cn_error_set(-CN_E_PROTOCOL, "server reply is not JSON: %s", jerr.text);
	json_t *d = json_is_object(root) ? json_object_get(root, "data") : NULL;
	if (!d) {
		json_decref(root);
		return cn_error_set(-CN_E_PROTOCOL, "server reply has no \"data\" member");
	}
	if (data)
		*data = json_incref(d);
	json_decref(root);
	return 0;
}

static int copy_str(json_t *obj, const char *key, char *out, size_t size)
{
	const char *s = json_string_value(json_object_get(obj, key));
	if (!s || strlen(s) >= size)
		return -1;
	strcpy(out, s);
	return 0;
}

/* Reads backup-type / backup-id / backup-time of one listed item. */
static int parse_snapshot_id(json_t *item, const char *ns, struct cn_snapshot_id *id)
{
	memset(id, 0, sizeof(*id));
	json_t *t = json_object_get(item, "backup-time");
	if (!json_is_object(item) || copy_str(item, "backup-type", id->type, sizeof(id->type)) < 0 ||
	    copy_str(item, "backup-id", id->id, sizeof(id->id)) < 0 || !json_is_integer(t) ||
	    cn_snapshot_check_type(id->type) < 0 || cn_snapshot_check_id(id->id) < 0)
		return -1;
	id->time = json_integer_value(t);
	snprintf(id->ns, sizeof(id->ns), "%s", ns ? ns : "");
	return 0;
}

static int cmp_id(const struct cn_snapshot_id *a, const struct cn_snapshot_id *b)
{
	int c = strcmp(a->type, b->type);
	if (c == 0)
		c = strcmp(a->id, b->id);
	if (c == 0)
		c = (a->time > b->time) - (a->time < b->time);
	return c;
}

static int cmp_info(const void *a, const void *b)
{
	return cmp_id(&((const struct cn_snapshot_info *)a)->id, &((const struct cn_snapshot_info *)b)->id);
}

/* cn_snapshot_info.encrypted from a listing's "files" (upstream
 * BackupContent: filename, crypt-mode, size): -1 when it is absent. */
static int snapshot_encrypted(json_t *files)
{
	size_t i;
	json_t *f;
	if (!json_is_array(files))
		return -1;
	json_array_foreach(files, i, f) {
		const char *mode = json_string_value(json_object_get(f, "crypt-mode"));
		if (mode && (!strcmp(mode, "encrypt") || !strcmp(mode, "sign-only")))
			return 1;
	}
	return 0;
}

/* Whether a listed snapshot is unfinished: its files (when listed) lack
 * the manifest, as PBS lists a snapshot directory whose backup did not
 * complete (the server stopped or was killed before the manifest). */
static int snapshot_unfinished(json_t *files)
{
	size_t i;
	json_t *f;
	if (!json_is_array(files))
		return 0;
	json_array_foreach(files, i, f) {
		const char *name = json_string_value(json_object_get(f, "filename"));
		if (name && !strcmp(name, "index.json.blob"))
			return 0;
	}
	return 1;
}

int cn_pbs_parse_snapshots(json_t *data, const char *ns, struct cn_snapshot_info **out, size_t *n)
{
	*out = NULL;
	*n = 0;
	if (!json_is_array(data))
		return cn_error_set(-CN_E_PROTOCOL, "snapshot list: expected an array");
	size_t count = json_array_size(data);
	if (count == 0)
		return 0;
	struct cn_snapshot_info *v = calloc(count, sizeof(*v));
	if (!v)
		return cn_error_set(-ENOMEM, "out of memory");
	size_t k = 0;
	for (size_t i = 0; i < count; i++) {
		json_t *item = json_array_get(data, i);
		if (parse_snapshot_id(item, ns, &v[k].id) < 0) {
			free(v);
			return cn_error_set(-CN_E_PROTOCOL, "snapshot list: item %zu is malformed", i);
		}
		/* not a backup: neither the newest, nor present for a sync */
		if (snapshot_unfinished(json_object_get(item, "files")))
			continue;
		json_t *size = json_object_get(item, "size");
		if (json_is_integer(size) && json_integer_value(size) > 0)
			v[k].size = (uint64_t)json_integer_value(size);
		v[k].protected_ = json_is_true(json_object_get(item, "protected"));
		v[k].encrypted = snapshot_encrypted(json_object_get(item, "files"));
		k++;
	}
	if (k == 0) {
		free(v);
		return 0;
	}
	qsort(v, k, sizeof(*v), cmp_info);
	*out = v;
	*n = k;
	return 0;
}

static int cmp_group(const void *a, const void *b)
{
	const struct cn_pbs_group *x = a, *y = b;
	int c = strcmp(x->type, y->type);
	return c ? c : strcmp(x->id, y->id);
}

int cn_pbs_parse_groups(json_t *data, struct cn_pbs_group **out, size_t *n)
{
	*out = NULL;
	*n = 0;
	if (!json_is_array(data))
		return cn_error_set(-CN_E_PROTOCOL, "group list: expected an array");
	size_t count = json_array_size(data);
	if (count == 0)
		return 0;
	struct cn_pbs_group *v = calloc(count, sizeof(*v));
	if (!v)
		return cn_error_set(-ENOMEM, "out of memory");
	for (size_t i = 0; i < count; i++) {
		json_t *item = json_array_get(data, i);
		json_t *last = json_object_get(item, "last-backup");
		json_t *cnt = json_object_get(item, "backup-count");
		if (!json_is_object(item) || copy_str(item, "backup-type", v[i].type, sizeof(v[i].type)) < 0 ||
		    copy_str(item, "backup-id", v[i].id, sizeof(v[i].id)) < 0 ||
		    cn_snapshot_check_type(v[i].type) < 0 || cn_snapshot_check_id(v[i].id) < 0 ||
		    !json_is_integer(last) || !json_is_integer(cnt) || json_integer_value(cnt) < 0) {
			free(v);
			return cn_error_set(-CN_E_PROTOCOL, "group list: item %zu is malformed", i);
		}
		v[i].last_backup = json_integer_value(last);
		v[i].backup_count = (uint64_t)json_integer_value(cnt);
	}
	qsort(v, count, sizeof(*v), cmp_group);
	*out = v;
	*n = count;
	return 0;
}

int cn_pbs_parse_prune(json_t *data, const char *ns, struct cn_pbs_prune_item **out, size_t *n)
{
	*out = NULL;
	*n = 0;
	if (!json_is_array(data))
		return cn_error_set(-CN_E_PROTOCOL, "prune answer: expected an array");
	size_t count = json_array_size(data);
	if (count == 0)
		return 0;
	struct cn_pbs_prune_item *v = calloc(count, sizeof(*v));
	if (!v)
		return cn_error_set(-ENOMEM, "out of memory");
	for (size_t i = 0; i < count; i++) {
		json_t *item = json_array_get(data, i);
		json_t *keep = json_object_get(item, "keep");
		if (parse_snapshot_id(item, ns, &v[i].id) < 0 || !json_is_boolean(keep)) {
			free(v);
			return cn_error_set(-CN_E_PROTOCOL, "prune answer: item %zu is malformed", i);
		}
		v[i].keep = json_is_true(keep);
		v[i].protected_ = json_is_true(json_object_get(item, "protected"));
	}
	*out = v;
	*n = count;
	return 0;
}
