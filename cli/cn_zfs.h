/* cn_zfs — snapshot-consistent sources: a ZFS snapshot of the source's
 * dataset is taken before the backup and destroyed afterwards, using the
 * `zfs` program found in PATH (zfs snapshot / get / list / destroy).
 * The backup reads <mountpoint>/.zfs/snapshot/<name>/<path below the
 * mountpoint>. Only snapshots named DATASET@cairn-* are ever destroyed. */
#ifndef CN_ZFS_H
#define CN_ZFS_H

#include <stddef.h>
#include <stdint.h>

#define CN_ZFS_PREFIX "cairn-"

struct cn_zfs_snapshot {
	char dataset[256];     /* "rpool/media" */
	char name[256];        /* "rpool/media@cairn-20240501T020000Z" */
	char mountpoint[1024]; /* "/mnt/media" */
	char read_path[4096];  /* what the backup reads */
};

/* Takes snapshot DATASET@cairn-<time as YYYYmmddTHHMMSSZ> of dataset and
 * fills *snap; path is the source directory (the mountpoint or below it;
 * NULL = the mountpoint). Fails with a message (zfs's own stderr) when the
 * dataset has no usable mountpoint, path lies outside it, or zfs fails;
 * then no snapshot is left. */
int cn_zfs_snapshot_create(const char *dataset, const char *path, int64_t when,
			   struct cn_zfs_snapshot *snap);

/* Destroys a snapshot made by cn_zfs_snapshot_create. 0 or a negative code
 * with a message. */
int cn_zfs_snapshot_destroy(const struct cn_zfs_snapshot *snap);

/* Destroys every DATASET@cairn-* snapshot (left by a run that was killed
 * before it could clean up). Call only while holding the run lock. Returns
 * the number destroyed or a negative code. */
int cn_zfs_destroy_stale(const char *dataset);

#endif
