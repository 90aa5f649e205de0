#include "store/cn_prune.h"
#include "common/cn_error.h"
#include "common/cn_log.h"
#include "store/cn_datastore.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MARK_UNSET (-1)

const char *cn_prune_mark_name(enum cn_prune_mark m)
{
	switch (m) {
	case CN_PRUNE_KEEP:
		return "keep";
	case CN_PRUNE_KEEP_PARTIAL:
		return "keep-partial";
	case CN_PRUNE_PROTECTED:
		return "protected";
	default:
		return "remove";
	}
}

int cn_prune_keeps_something(const struct cn_prune_keep *k)
{
	return k->last + k->hourly + k->daily + k->weekly + k->monthly + k->yearly > 0;
}

/* A period id: the snapshot's local time formatted with fmt; NULL fmt =
 * keep-last, whose id is the time itself. */
static void select_id(int64_t t, const char *fmt, char out[32])
{
	if (!fmt) {
		cn_snapshot_format_time(t, out, 32);
		return;
	}
	struct tm tm;
	time_t tt = (time_t)t;
	localtime_r(&tt, &tm);
	strftime(out, 32, fmt, &tm);
}

static int in_set(char (*set)[32], size_t n, const char *s)
{
	for (size_t i = 0; i < n; i++)
		if (!strcmp(set[i], s))
			return 1;
	return 0;
}

/* upstream mark_selections; order[] is newest first. */
static void mark_selections(const struct cn_prune_item *items, const size_t *order, size_t n,
			    int *mark, unsigned keep, const char *fmt, char (*already)[32],
			    char (*include)[32])
{
	size_t n_already = 0, n_include = 0;
	char id[32];
	for (size_t k = 0; k < n; k++) {
		size_t i = order[k];
		if (mark[i] == CN_PRUNE_KEEP) {
			select_id(items[i].time, fmt, id);
			strcpy(already[n_already++], id);
		}
	}
	for (size_t k = 0; k < n; k++) {
		size_t i = order[k];
		if (mark[i] != MARK_UNSET)
			continue;
		if (items[i].protected_) {
			mark[i] = CN_PRUNE_PROTECTED;
			continue;
		}
		select_id(items[i].time, fmt, id);
		if (in_set(already, n_already, id))
			continue;
		if (!in_set(include, n_include, id)) {
			if (n_include >= keep)
				break;
			strcpy(include[n_include++], id);
			mark[i] = CN_PRUNE_KEEP;
		} else {
			mark[i] = CN_PRUNE_REMOVE;
		}
	}
}

struct order_key {
	int64_t time;
	size_t index;
};

static int cmp_newest_first(const void *a, const void *b)
{
	int64_t x = ((const struct order_key *)a)->time, y = ((const struct order_key *)b)->time;
	return x > y ? -1 : x < y;
}

int cn_prune_select(const struct cn_prune_item *items, size_t n, const struct cn_prune_keep *keep,
		    enum cn_prune_mark *marks)
{
	size_t *order = malloc((n ? n : 1) * sizeof(*order));
	struct order_key *keys = malloc((n ? n : 1) * sizeof(*keys));
	int *mark = malloc((n ? n : 1) * sizeof(*mark));
	char (*already)[32] = malloc((n ? n : 1) * 32);
	char (*include)[32] = malloc((n ? n : 1) * 32);
	int r = 0;
	if (!order || !keys || !mark || !already || !include) {
		r = cn_error_set(-ENOMEM, "out of memory");
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		keys[i].time = items[i].time;
		keys[i].index = i;
		mark[i] = MARK_UNSET;
	}
	qsort(keys, n, sizeof(*keys), cmp_newest_first);
	for (size_t i = 0; i < n; i++)
		order[i] = keys[i].index;

	int keep_unfinished = 1;
	for (size_t k = 0; k < n; k++) {
		size_t i = order[k];
		if (items[i].finished) {
			keep_unfinished = 0;
		} else {
			mark[i] = keep_unfinished ? CN_PRUNE_KEEP_PARTIAL : CN_PRUNE_REMOVE;
			keep_unfinished = 0;
		}
	}
	static const char *const fmts[] = {NULL, "%Y/%m/%d/%H", "%Y/%m/%d", "%G/%V", "%Y/%m", "%Y"};
	const unsigned counts[] = {keep->last, keep->hourly, keep->daily,
				   keep->weekly, keep->monthly, keep->yearly};
	for (size_t o = 0; o < CN_ARRAY_SIZE(fmts); o++)
		if (counts[o])
			mark_selections(items, order, n, mark, counts[o], fmts[o], already, include);
	for (size_t i = 0; i < n; i++)
		marks[i] = items[i].protected_ ? CN_PRUNE_PROTECTED
			   : mark[i] == MARK_UNSET ? CN_PRUNE_REMOVE
						   : (enum cn_prune_mark)mark[i];
out:
	free(order);
	free(keys);
	free(mark);
	free(already);
	free(include);
	return r;
}

int cn_prune_apply(size_t n, cn_prune_item_fn item, cn_prune_remove_fn remove, void *ctx,
		   const struct cn_prune_keep *keep, int dry_run, struct cn_prune_entry **out,
		   size_t *nout)
{
	struct cn_prune_item *items = calloc(n ? n : 1, sizeof(*items));
	enum cn_prune_mark *marks = calloc(n ? n : 1, sizeof(*marks));
	struct cn_prune_entry *res = calloc(n ? n : 1, sizeof(*res));
	int r = 0;
	if (!items || !marks || !res) {
		r = cn_error_set(-ENOMEM, "out of memory");
		goto out;
	}
	for (size_t i = 0; i < n; i++)
		item(ctx, i, &items[i], &res[i].id);
	if ((r = cn_prune_select(items, n, keep, marks)) < 0)
		goto out;
	int keep_all = !cn_prune_keeps_something(keep);
	int removed = 0;
	for (size_t i = 0; i < n; i++) {
		res[i].mark = keep_all && marks[i] == CN_PRUNE_REMOVE ? CN_PRUNE_KEEP : marks[i];
		if (res[i].mark != CN_PRUNE_REMOVE)
			continue;
		if (dry_run) {
			removed++;
			continue;
		}
		int rr = remove(ctx, i, &res[i].mark);
		if (rr < 0) {
			cn_log_warning("prune: %s", cn_error_message());
			cn_error_clear();
			continue;
		}
		if (rr > 0)
			continue; /* kept after all (res[i].mark says why) */
		res[i].removed = 1;
		removed++;
	}
	*out = res;
	*nout = n;
	res = NULL;
	r = removed;
out:
	free(items);
	free(marks);
	free(res);
	return r;
}

struct local_prune {
	struct cn_datastore *ds;
	const struct cn_ds_snapshot_info *list;
};

static void item_local(void *ctx, size_t i, struct cn_prune_item *it, struct cn_snapshot_id *id)
{
	const struct cn_ds_snapshot_info *s = &((struct local_prune *)ctx)->list[i];
	*it = (struct cn_prune_item){s->id.time, s->finished, s->protected_};
	*id = s->id;
}

static int remove_local(void *ctx, size_t i, enum cn_prune_mark *mark)
{
	(void)mark;
	struct local_prune *p = ctx;
	return cn_datastore_remove_snapshot(p->ds, &p->list[i].id, 0);
}

int cn_datastore_prune_group(struct cn_datastore *ds, const struct cn_snapshot_id *group,
			     const struct cn_prune_keep *keep, int dry_run,
			     struct cn_prune_entry **out, size_t *n)
{
	struct cn_ds_snapshot_info *list;
	size_t cnt;
	int r = cn_datastore_list_snapshots(ds, group, 0, &list, &cnt);
	if (r < 0)
		return r;
	struct local_prune p = {ds, list};
	r = cn_prune_apply(cnt, item_local, remove_local, &p, keep, dry_run, out, n);
	free(list);
	return r;
}
