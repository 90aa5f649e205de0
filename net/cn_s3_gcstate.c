/* The bucket's garbage-collection state object. */
#include "net/cn_s3_gcstate.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "common/cn_error.h"

int cn_s3_gc_state_get(struct cn_s3 *s3, struct cn_s3_gc_state *st)
{
	memset(st, 0, sizeof(*st));
	struct cn_buf b = {0};
	int r = cn_s3_get(s3, CN_S3_GC_STATE, &b);
	if (r == -ENOENT) {
		cn_error_clear();
		cn_buf_free(&b);
		return 0;
	}
	if (r < 0) {
		cn_buf_free(&b);
		return r;
	}
	json_t *j = json_loadb((const char *)b.data, b.len, 0, NULL);
	const char *gen = j ? json_string_value(json_object_get(j, "generation")) : NULL;
	snprintf(st->generation, sizeof(st->generation), "%s", gen ? gen : "damaged");
	st->running = j && json_is_true(json_object_get(j, "running"));
	st->started = j ? json_integer_value(json_object_get(j, "started")) : 0;
	st->updated = j ? json_integer_value(json_object_get(j, "updated")) : 0;
	st->finished = j ? json_integer_value(json_object_get(j, "finished")) : 0;
	json_decref(j);
	cn_buf_free(&b);
	return 0;
}

int cn_s3_gc_state_put(struct cn_s3 *s3, const struct cn_s3_gc_state *st)
{
	char body[256];
	int l = snprintf(body, sizeof(body),
			 "{\"generation\":\"%s\",\"running\":%s,\"started\":%lld,\"updated\":%lld,"
			 "\"finished\":%lld}\n",
			 st->generation, st->running ? "true" : "false", (long long)st->started,
			 (long long)st->updated, (long long)st->finished);
	return cn_s3_put(s3, CN_S3_GC_STATE, body, (size_t)l);
}

int cn_s3_gc_state_active(const struct cn_s3_gc_state *st, int64_t now)
{
	int64_t alive = st->updated > st->started ? st->updated : st->started;
	return st->running && alive > now - CN_S3_GC_STALE;
}
