/* cn_mount — a pxar archive of a snapshot as a read-only FUSE file system
 * (libfuse 3, low-level API), served from a cn_source (local datastore or
 * PBS reader session).
 *
 * Lazy: opening reads the manifest, the archive's index and the root's
 * first header. A directory is listed from its goodbye table when it is
 * listed or looked in (cn_pxar_dir), and that list is dropped when a
 * listing reaches its end (the kernel then holds every entry); an
 * entry's metadata is decoded when it is first looked up or listed
 * (cn_pxar_accessor_entry); file data is read chunk by chunk through a
 * cn_chunk_reader (every chunk verified, a bounded cache, read-ahead once
 * reads go forward chunk after chunk).
 *
 * Inode numbers are archive offsets (entry offset + 1, the root 1), so a
 * hardlink and its target show one inode. Link counts show 1 (pxar does
 * not record them). Owner, group, mode, mtime, xattrs, POSIX ACLs (as the
 * system.posix_acl_* xattrs) and file capabilities are shown as archived;
 * the kernel checks permissions against them (default_permissions).
 *
 * The kernel is asked to cache what it can (names, attributes, listings
 * and pages never go stale), to open files and directories without a
 * request (FUSE_CAP_NO_OPEN(DIR)_SUPPORT), to send every listing request
 * as a READDIRPLUS (each entry with its attributes, so a first find costs
 * two requests per directory and no LOOKUP), and its read-ahead on the
 * mount is raised to 1 MiB (sysfs, root only) so that a sequential read
 * comes in 1 MiB requests.
 *
 * Memory: one node per inode the kernel knows, from blocks of 2 MiB
 * (huge pages where the kernel has them); freed nodes are reused, the
 * blocks are returned by cn_mount_free.
 *
 * Errors while serving (a corrupt or missing chunk, a dropped connection)
 * fail that one request with EIO and are logged (cn_log) with the chunk
 * reader's message; the mount goes on serving the rest.
 *
 * Threads: requests are served one at a time by the thread in
 * cn_mount_run (the decoder and the chunk reader's read side are single
 * threaded); the chunk readers run their own read-ahead workers.
 */
#ifndef CN_MOUNT_H
#define CN_MOUNT_H

#include <stddef.h>

#include "engine/cn_target.h"
#include "store/cn_crypt.h"

struct cn_mount;

struct cn_mount_opts {
	const struct cn_crypt_config *crypt; /* borrowed; for encrypted snapshots */
	size_t threads;     /* read-ahead workers per stream; 0 = 2 */
	int allow_other;    /* let other users in (-o allow_other) */
	int debug;          /* libfuse debug output on stderr */
};

/* Opens archive ("media.pxar", split or not) of snapshot id on src
 * (borrowed; must outlive the mount): manifest (checked as by
 * cn_restore_open), index, chunk readers, accessor. Nothing is mounted
 * yet. *out freed with cn_mount_free. 0 or a negative code with a message
 * (-ENOENT: no such archive). */
int cn_mount_open(struct cn_source *src, const struct cn_snapshot_id *id, const char *archive,
		  const struct cn_mount_opts *o, struct cn_mount **out);

/* Mounts m read-only at mountpoint and serves it until it is unmounted
 * (fusermount3 -u, umount) or SIGINT, SIGTERM or SIGHUP arrives, which
 * unmount it. The caller must have blocked those three signals in every
 * thread (pthread_sigmask before any thread is started); they are then
 * taken with sigwait by a thread of this call, and SIGUSR1 (its handler
 * replaced for the call) wakes the serving thread. mounted(ctx) (may be
 * NULL) is called once the mount is in place, before requests are served.
 * Returns 0 after a clean unmount, or a negative code with a message when
 * the mount failed. */
int cn_mount_run(struct cn_mount *m, const char *mountpoint, void (*mounted)(void *ctx),
		 void *ctx);

/* Frees m (not mounted any more). NULL is ok. */
void cn_mount_free(struct cn_mount *m);

#endif
