#include "net/cn_pbs_source.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/cn_error.h"

#define READER_PROTOCOL "proxmox-backup-reader-protocol-v1"

struct pbs_source {
	struct cn_source base;
	struct cn_pbs *conn;
	pthread_mutex_t mu;   /* guards h2 (replaced by open) */
	struct cn_h2 *h2;
	struct cn_snapshot_id id;
	/* sessions replaced by a later open: another thread may still be in
	 * a download on one, so they are cancelled and freed at destroy */
	struct cn_h2 **retired;
	size_t nretired;
};

static struct pbs_source *S(struct cn_source *s)
{
	return (struct pbs_source *)s;
}

static int s_list(struct cn_source *ss, const struct cn_snapshot_id *group, struct cn_snapshot_info **out,
		  size_t *n)
{
	int r = cn_pbs_list_snapshots(S(ss)->conn, group, out, n);
	return r < 0 ? cn_error_prefix(r, "%s", ss->name) : 0;
}

static int s_open(struct cn_source *ss, const struct cn_snapshot_id *id)
{
	struct pbs_source *s = S(ss);
	char query[2048];
	struct cn_h2 *h2 = NULL;
	if (cn_pbs_snapshot_query(s->conn, id, query, sizeof(query)) < 0)
		return cn_error_set(-ENAMETOOLONG, "%s: snapshot name too long", ss->name);
	int r = cn_pbs_open_session(s->conn, READER_PROTOCOL, "reader", query, &h2);
	if (r < 0)
		return cn_error_prefix(r, "%s", ss->name);
	pthread_mutex_lock(&s->mu);
	struct cn_h2 *old = s->h2;
	struct cn_h2 **rl = old ? realloc(s->retired, (s->nretired + 1) * sizeof(*rl)) : NULL;
	if (old && !rl) {
		pthread_mutex_unlock(&s->mu);
		cn_h2_cancel(h2, "out of memory");
		cn_h2_free(h2);
		return cn_error_set(-ENOMEM, "out of memory");
	}
	if (old) {
		s->retired = rl;
		rl[s->nretired++] = old;
	}
	s->h2 = h2;
	s->id = *id;
	pthread_mutex_unlock(&s->mu);
	/* a live one ends gracefully as before; a dead one (the reason for
	 * this open, from a mount) may still have waiters: cancel wakes them */
	if (old && cn_h2_error(old) == 0)
		cn_h2_close(old);
	else if (old)
		cn_h2_cancel(old, "reader session replaced by a new one");
	return 0;
}

/* Downloads path on the open session into out. */
static int download(struct pbs_source *s, const char *path, const char *what, struct cn_buf *out)
{
	pthread_mutex_lock(&s->mu);
	struct cn_h2 *h2 = s->h2;
	pthread_mutex_unlock(&s->mu);
	if (!h2)
		return cn_error_set(-EINVAL, "%s: no snapshot opened", s->base.name);
	int r = cn_h2_download(h2, path, out);
	if (r < 0) {
		/* Missing files: 404 for blobs, 400 "... not found" for indexes;
		 * a chunk that is gone answers 4xx with "not found" or ENOENT. */
		return cn_error_prefix(cn_pbs_enoent(r), "%s: %s", s->base.name, what);
	}
	return 0;
}

static int s_get_file(struct cn_source *ss, const char *name, struct cn_buf *out)
{
	char enc[300], path[400];
	if (cn_h2_urlencode(name, enc, sizeof(enc)) < 0)
		return cn_error_set(-ENAMETOOLONG, "%s: file name too long", ss->name);
	snprintf(path, sizeof(path), "download?file-name=%s", enc);
	return download(S(ss), path, name, out);
}

static int s_get_chunk(struct cn_source *ss, const uint8_t digest[32], struct cn_buf *out)
{
	char hex[65], path[100], what[80];
	cn_hex_encode(digest, 32, hex);
	snprintf(path, sizeof(path), "chunk?digest=%s", hex);
	snprintf(what, sizeof(what), "chunk %s", hex);
	return download(S(ss), path, what, out);
}

static void s_destroy(struct cn_source *ss)
{
	struct pbs_source *s = S(ss);
	if (!s)
		return;
	if (s->h2) {
		cn_h2_close(s->h2);
		cn_h2_free(s->h2);
	}
	for (size_t i = 0; i < s->nretired; i++)
		cn_h2_free(s->retired[i]);
	free(s->retired);
	pthread_mutex_destroy(&s->mu);
	free(s);
}

static const struct cn_source_ops pbs_source_ops = {
	.list_snapshots = s_list,
	.open = s_open,
	.get_file = s_get_file,
	.get_chunk = s_get_chunk,
	.destroy = s_destroy,
};

int cn_pbs_source_new(struct cn_pbs *conn, struct cn_source **out)
{
	struct pbs_source *s = calloc(1, sizeof(*s));
	if (!s)
		return cn_error_set(-ENOMEM, "out of memory");
	s->conn = conn;
	pthread_mutex_init(&s->mu, NULL);
	s->base.ops = &pbs_source_ops;
	cn_pbs_name(conn, s->base.name, sizeof(s->base.name));
	*out = &s->base;
	return 0;
}
