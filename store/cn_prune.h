/* cn_prune — PBS's prune selection (upstream pbs-datastore/src/prune.rs,
 * compute_prune_info) and its application to a datastore group.
 *
 * Selection, newest snapshot first: the newest unfinished snapshot (no
 * manifest) is kept as "keep-partial" only if no finished one is newer,
 * other unfinished ones are removed; then keep-last, -hourly, -daily,
 * -weekly, -monthly, -yearly each keep the newest snapshot of up to N
 * distinct periods (local time, ISO week for weekly) not already covered
 * by an earlier option; protected snapshots are always kept. */
#ifndef CN_PRUNE_H
#define CN_PRUNE_H

#include <stddef.h>
#include <stdint.h>

#include "common/cn_snapshot.h"

struct cn_datastore;

/* Keep counts; 0 = option not given (upstream treats Some(0) the same). */
struct cn_prune_keep {
	unsigned last, hourly, daily, weekly, monthly, yearly;
};

enum cn_prune_mark {
	CN_PRUNE_REMOVE,
	CN_PRUNE_KEEP,
	CN_PRUNE_KEEP_PARTIAL,
	CN_PRUNE_PROTECTED,
};

/* "remove", "keep", "keep-partial", "protected" (upstream's Display). */
const char *cn_prune_mark_name(enum cn_prune_mark m);

/* Whether any option is set (upstream keeps_something). */
int cn_prune_keeps_something(const struct cn_prune_keep *keep);

struct cn_prune_item {
	int64_t time;
	int finished;
	int protected_;
};

/* Computes marks[i] for items[i] exactly as compute_prune_info (items in
 * any order; times must be distinct). Periods use local time (TZ) as
 * upstream's strftime_local. Returns 0 or -ENOMEM. */
int cn_prune_select(const struct cn_prune_item *items, size_t n, const struct cn_prune_keep *keep,
		    enum cn_prune_mark *marks);

struct cn_prune_entry {
	struct cn_snapshot_id id;
	enum cn_prune_mark mark;
	int removed; /* 1 if removed now; 0 for dry runs, kept ones and failures */
};

/* Gives the prune item and id of snapshot i of a listing. */
typedef void (*cn_prune_item_fn)(void *ctx, size_t i, struct cn_prune_item *item,
				 struct cn_snapshot_id *id);

/* Removes snapshot i of a listing; sets *mark and returns 1 to keep it
 * after all (e.g. protected since the listing), 0 when removed, <0 on
 * failure (a warning; the prune goes on). */
typedef int (*cn_prune_remove_fn)(void *ctx, size_t i, enum cn_prune_mark *mark);

/* The prune of one group's listing of n snapshots, whatever holds it:
 * marks them (item gives each; cn_prune_select; with no keep option set
 * everything is kept, as upstream's prune API) and, unless dry_run, calls
 * remove for each one marked remove. *out (n entries, freed by the caller)
 * gets each snapshot's id and mark. Returns the number removed (or that
 * would be) or a negative code. */
int cn_prune_apply(size_t n, cn_prune_item_fn item, cn_prune_remove_fn remove, void *ctx,
		   const struct cn_prune_keep *keep, int dry_run, struct cn_prune_entry **out,
		   size_t *nout);

/* Prunes one group (ns, type, id of group): selects as above, and unless
 * dry_run removes the snapshots marked remove (cn_datastore_remove_snapshot;
 * a snapshot in use is skipped with a warning). With no keep option set
 * everything is kept, as upstream's prune API. *out (oldest first, freed by
 * the caller) lists every snapshot and its mark. Returns the number
 * removed (or that would be, for dry runs) or a negative code. */
int cn_datastore_prune_group(struct cn_datastore *ds, const struct cn_snapshot_id *group,
			     const struct cn_prune_keep *keep, int dry_run,
			     struct cn_prune_entry **out, size_t *n);

#endif
