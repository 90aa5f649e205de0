/* S3 restore source. */
#include "net/cn_s3_source.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/cn_error.h"
#include "net/cn_s3_layout.h"

struct s3_source {
	struct cn_source base;
	struct cn_s3 *s3;
	pthread_mutex_t mu;  /* guards id */
	struct cn_snapshot_id id;
	int opened;
};

static struct s3_source *S(struct cn_source *s)
{
	return (struct s3_source *)s;
}

static int s_list(struct cn_source *ss, const struct cn_snapshot_id *group,
		  struct cn_snapshot_info **out, size_t *n)
{
	int r = cn_s3_list_snapshots(S(ss)->s3, group, out, n);
	return r < 0 ? cn_error_prefix(r, "%s", ss->name) : 0;
}

static int s_open(struct cn_source *ss, const struct cn_snapshot_id *id)
{
	struct s3_source *s = S(ss);
	char key[800], path[600];
	int r = cn_s3_snapshot_key(id, CN_S3_MANIFEST, key, sizeof(key));
	if (r == 0)
		r = cn_s3_head(s->s3, key, NULL);
	if (r == -ENOENT) {
		cn_snapshot_path(id, path, sizeof(path));
		return cn_error_set(-ENOENT, "%s: snapshot %s not found (no %s)", ss->name, path,
				    CN_S3_MANIFEST);
	}
	if (r < 0)
		return r;
	pthread_mutex_lock(&s->mu);
	s->id = *id;
	s->opened = 1;
	pthread_mutex_unlock(&s->mu);
	return 0;
}

static int s_get_file(struct cn_source *ss, const char *name, struct cn_buf *out)
{
	struct s3_source *s = S(ss);
	pthread_mutex_lock(&s->mu);
	struct cn_snapshot_id id = s->id;
	int opened = s->opened;
	pthread_mutex_unlock(&s->mu);
	if (!opened)
		return cn_error_set(-EINVAL, "%s: no snapshot opened", ss->name);
	if (strchr(name, '/'))
		return cn_error_set(-EINVAL, "%s: bad file name %s", ss->name, name);
	char key[800];
	int r = cn_s3_snapshot_key(&id, name, key, sizeof(key));
	if (r < 0)
		return r;
	out->len = 0;
	return cn_s3_get(s->s3, key, out);
}

static int s_get_chunk(struct cn_source *ss, const uint8_t digest[32], struct cn_buf *out)
{
	char key[96];
	cn_s3_chunk_key(digest, key);
	out->len = 0;
	return cn_s3_get(S(ss)->s3, key, out);
}

static int s_read_chunk(struct cn_source *ss, const uint8_t digest[32],
			const struct cn_chunk_sink *sink)
{
	char key[96];
	cn_s3_chunk_key(digest, key);
	return cn_s3_get_to(S(ss)->s3, key, sink->restart, sink->write, sink->cancelled,
			    sink->ctx);
}

static void s_destroy(struct cn_source *ss)
{
	struct s3_source *s = S(ss);
	if (!s)
		return;
	pthread_mutex_destroy(&s->mu);
	free(s);
}

static const struct cn_source_ops s3_source_ops = {
	.list_snapshots = s_list,
	.open = s_open,
	.get_file = s_get_file,
	.get_chunk = s_get_chunk,
	.read_chunk = s_read_chunk,
	.destroy = s_destroy,
};

int cn_s3_source_new(struct cn_s3 *s3, struct cn_source **out)
{
	struct s3_source *s = calloc(1, sizeof(*s));
	if (!s)
		return cn_error_set(-ENOMEM, "out of memory");
	s->s3 = s3;
	pthread_mutex_init(&s->mu, NULL);
	s->base.ops = &s3_source_ops;
	snprintf(s->base.name, sizeof(s->base.name), "%s", cn_s3_name(s3));
	*out = &s->base;
	return 0;
}
