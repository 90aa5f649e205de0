/* cn_objstore — the administration interface of an object store that
 * holds a datastore's layout as object keys (an S3 bucket: see
 * net/cn_s3_layout.h for the keys). It is what prune and garbage
 * collection need (engine/cn_objstore_admin.h) and nothing more: list,
 * read and delete objects, list snapshots, read the markers of running
 * backups, and hold the store's garbage-collection state. net/ implements
 * it for S3 (net/cn_s3_objstore.h); the engine never knows which service
 * it talks to.
 *
 * Keys are relative to the store's root (with S3, the configured prefix):
 * ".chunks/XXXX/<hex digest>", "[ns/A/]TYPE/ID/TIME/index.json.blob", ...
 *
 * Every call returns 0 (or a documented non-negative value) or a negative
 * error code with a cn_error message. Calls are made from one thread.
 */
#ifndef CN_OBJSTORE_H
#define CN_OBJSTORE_H

#include <stddef.h>
#include <stdint.h>

#include "common/cn_snapshot.h"
#include "common/cn_util.h"
#include "engine/cn_target.h"

/* Deletes given to one delete_keys call at most (S3's multi-object
 * delete takes 1000 keys a request). */
#define CN_OBJSTORE_DELETE_MAX 1000

/* Called once per object: key (relative), size and modification time
 * (seconds since the epoch, 0 if unknown). A non-zero return stops the
 * listing and is returned. */
typedef int (*cn_objstore_list_fn)(void *ctx, const char *key, uint64_t size, int64_t mtime);

/* Called once per marker of a backup that runs or ran without finishing:
 * the marker's key, the snapshot path it stands for
 * ("[ns/A/]TYPE/ID/TIME") and the backup's start time. Non-zero stops. */
typedef int (*cn_objstore_writer_fn)(void *ctx, const char *key, const char *path,
				     int64_t started);

struct cn_objstore;

struct cn_objstore_ops {
	/* Lists every object whose key begins with prefix ("" for all), in
	 * byte order of the keys, so a snapshot's objects come together. */
	int (*list)(struct cn_objstore *o, const char *prefix, cn_objstore_list_fn fn, void *ctx);

	/* Reads the whole object into out (replacing its contents; out is the
	 * caller's). -ENOENT if there is no such object. */
	int (*get)(struct cn_objstore *o, const char *key, struct cn_buf *out);

	/* 1 if the object exists, 0 if not, <0 on error. */
	int (*exists)(struct cn_objstore *o, const char *key);

	/* Deletes n (at most CN_OBJSTORE_DELETE_MAX) objects, in as few
	 * requests as the service allows; a missing object counts as deleted.
	 * status (n entries, may be NULL) gets 0 or a negative code per key.
	 * Returns 0 when every key is gone, else a negative code with a
	 * message naming the keys that failed. */
	int (*delete_keys)(struct cn_objstore *o, const char *const *keys, size_t n, int *status);

	/* Lists the finished snapshots (those with a manifest) of group, or
	 * of every group of its namespace when group->id is "", as
	 * cn_source's list_snapshots (size 0, encrypted -1: unread). *out is
	 * malloc'd, sorted by type, id, time; freed by the caller. */
	int (*list_snapshots)(struct cn_objstore *o, const struct cn_snapshot_id *group,
			      struct cn_snapshot_info **out, size_t *n);

	/* Calls fn for every writer marker. A marker whose content cannot be
	 * read is reported with started = now (taken as running: the safe
	 * side); one deleted while listing is skipped. */
	int (*writers)(struct cn_objstore *o, int64_t now, cn_objstore_writer_fn fn, void *ctx);

	/* Starts a garbage collection: records a new GC generation that runs,
	 * before anything is listed. -CN_E_LOCKED with a message if another
	 * GC runs. */
	int (*gc_begin)(struct cn_objstore *o);

	/* Tells the store that the GC begun is alive; cheap when called
	 * often (the implementation renews its record at its own pace). */
	int (*gc_alive)(struct cn_objstore *o);

	/* Ends the GC begun (also after a failure): it runs no more. */
	int (*gc_end)(struct cn_objstore *o);

	/* Frees the handle (not the client it was made from). */
	void (*destroy)(struct cn_objstore *o);
};

/* An object store is an implementation's struct that begins with this. */
struct cn_objstore {
	const struct cn_objstore_ops *ops;
	char name[256]; /* for messages: "s3://bucket/prefix (http://endpoint)" */
};

#endif
