/* cn_walker — walks a directory tree the way proxmox-backup-client 3.2.4
 * does (pbs-client/src/pxar/create.rs) and encodes it as a pxar v1
 * archive (cn_pxar_encoder.h), feeding the catalog writer as it goes.
 *
 * What it reproduces from upstream:
 *  - entry order: each directory's names sorted bytewise; a generated
 *    ".pxarexclude-cli" (the CLI patterns, when any were given, including
 *    the implicit "lost+found" of skip_lost_found) is written last in the
 *    root directory;
 *  - metadata: st_mode, uid, gid, mtime (s + ns); xattrs in listxattr
 *    order, only "user.*", "trusted.*", "security.NTACL"; POSIX ACLs
 *    (read only when listxattr shows the ACL xattrs); security.capability
 *    as FCAPS; chattr flags (FS_IOC_GETFLAGS) on regular files and
 *    directories; FAT attributes on vfat/fuse; quota project id on
 *    ext4/xfs/zfs/fuse; which of these are read depends on the file
 *    system type (flags.rs from_magic) exactly as upstream;
 *  - hardlinks (regular files with st_nlink > 1, keyed by dev+inode);
 *  - excludes: --exclude patterns and .pxarexclude files (cn_pattern.h
 *    semantics; a leading '/' in .pxarexclude anchors at that directory);
 *  - mount points: a directory on another device is stored (empty) but
 *    not descended into unless all_file_systems; virtual file systems
 *    (proc, sysfs, ...) are never descended into;
 *  - entries_max: limit on entries held in memory along the current path.
 *
 * Split archives and metadata change detection (opts->payload_out,
 * opts->reuse) follow the newer create.rs (proxmox-backup 3.3+): a
 * look-ahead cache collects unchanged files whose previous payload is
 * contiguous (and the entries between them) and decides per run whether
 * to re-reference the previous chunks or re-read the files (padding
 * threshold). A hardlinked file is looked up at its first link; later
 * links are hardlink entries, as in the previous snapshot.
 *
 * Deviations, by design: a file that vanishes or cannot be opened or
 * stat'ed (EACCES) is skipped with a warning and counted; a file whose
 * size or mtime changes while it is read is still stored as upstream does
 * (truncated to / zero-padded to the size seen when listing) and counted
 * in stats->changed. An entry is archived as it was opened: the fstat of
 * the open file gives its metadata, so a file replaced by rename since the
 * listing is stored whole as the new file; one whose type changed (a file
 * now a directory, symlink or FIFO, and so on), and a .pxarexclude that is
 * not a regular file, is ignored with a warning and counted. No open
 * blocks (O_NONBLOCK: a FIFO put in place of a file) or follows a symlink
 * (O_NOFOLLOW; .pxarexclude excepted, as upstream). The source tree is
 * never written: files are opened read-only with O_NOATIME when the kernel
 * permits it.
 */
#ifndef CN_WALKER_H
#define CN_WALKER_H

#include <stddef.h>
#include <stdint.h>

#include "pxar/cn_catalog_writer.h"
#include "pxar/cn_pxar_format.h"
#include "store/cn_filecache.h"

/* Upstream ENCODER_MAX_ENTRIES (pbs-client/src/pxar/mod.rs). */
#define CN_PXAR_ENCODER_MAX_ENTRIES (1024u * 1024u)

struct stat;
struct cn_index;
struct cn_pxar_metadata;

/* A chunk of the previous snapshot's payload stream placed, as it is, into
 * the new payload stream (upstream ReusableDynamicEntry). */
struct cn_pxar_reused_chunk {
	uint64_t size;
	uint8_t digest[32];
};

/* What a reuse lookup found for a file it declares unchanged (proven by
 * inode + ctime, or by its content); the walker keeps it until the file
 * is encoded and hands it back to record. */
struct cn_pxar_reuse_match {
	uint64_t payload_offset;  /* its PAYLOAD header in the previous payload stream */
	int has_content_hash;
	uint8_t content_hash[16]; /* XXH3-128 of its content, big-endian */
	int has_meta_hash;        /* meta_hash holds the SHA-256 of the file's
				   * encoded metadata now (cn_reuse_meta_hash) */
	uint8_t meta_hash[32];
	int has_cache_key;        /* cache_key holds the file cache's key of
				   * its path (cn_filecache_key) */
	uint8_t cache_key[32];
	int has_cache_entry;      /* cache_entry holds the previous cache's
				   * entry of its path (not one found by inode) */
	struct cn_filecache_entry cache_entry;
};

/* Metadata change detection (upstream --change-detection-mode=metadata,
 * create.rs with its look-ahead cache). Needs a split archive. */
struct cn_pxar_reuse {
	/* Whether the regular file at path (relative to the root, path_len
	 * bytes, NUL-terminated), open as fd, stat'ed as st, with metadata m,
	 * holds the same content as a file of the previous snapshot: 1 and
	 * *match filled; 0 when it must be read; or a negative code (aborts
	 * the backup). It may read fd with pread (the file offset stays 0)
	 * to compare contents; *bytes_read (zeroed by the caller) counts it. */
	int (*lookup)(void *ctx, const char *path, size_t path_len, int fd, const struct stat *st,
		      const struct cn_pxar_metadata *m, struct cn_pxar_reuse_match *match,
		      uint64_t *bytes_read);
	/* May be NULL. Whether the regular file at path (as for lookup),
	 * stat'ed as st from its directory and NOT opened, is unchanged in
	 * content and metadata, judged from st alone: 1 and *match filled
	 * when the previous entry of that path had the same inode, ctime,
	 * size and mtime and metadata equal to m, the metadata st alone
	 * gives (no xattrs, ACLs,
	 * file capabilities, attribute flags or quota project id). Since any
	 * change of those sets the ctime, the file then still has none and
	 * need not be opened. 0 when it must be opened and looked up as
	 * usual; a negative code aborts the backup. */
	int (*lookup_unopened)(void *ctx, const char *path, size_t path_len, const struct stat *st,
			       const struct cn_pxar_metadata *m, struct cn_pxar_reuse_match *match);
	/* The payload stream consumer must end its current chunk exactly at
	 * the current position (everything before it has been passed to
	 * payload_out) and append these chunks of the previous payload index
	 * unchanged; the stream position then moves on by their total size.
	 * 0 or a negative code. */
	int (*inject)(void *ctx, const struct cn_pxar_reused_chunk *chunks, size_t n);
	/* May be NULL. Called for every regular file stored with content
	 * (not hardlinks), after it was encoded: its PAYLOAD header offset in
	 * the new payload stream; reused: lookup's match when it references
	 * previous data, else NULL; content_hash: XXH3-128 of the bytes read
	 * when it was read (NULL when reused); changed = 1 when it changed
	 * while being read. For the file cache of the new snapshot. 0 or a
	 * negative code. */
	int (*record)(void *ctx, const char *path, size_t path_len, const struct stat *st,
		      const struct cn_pxar_metadata *m, uint64_t payload_offset,
		      const struct cn_pxar_reuse_match *reused, const uint8_t *content_hash, int changed);
	void *ctx;
	/* The previous snapshot's payload index (.ppxar.didx), borrowed. */
	const struct cn_index *prev_payload_index;
	/* Look-ahead cache size in entries (open files); 0: 512. */
	size_t max_cache_entries;
};

/* Upstream CHUNK_PADDING_THRESHOLD: reused chunks are not injected (the
 * files are read and re-encoded instead) when more than this fraction of
 * the injected bytes would be padding (data of no current file). cairn
 * applies it to the whole archive, not per look-ahead batch
 * (cn_walker_lookahead.c). */
#define CN_PXAR_CHUNK_PADDING_THRESHOLD 0.1

struct cn_pxar_create_opts {
	const char *const *excludes;   /* --exclude patterns (may be NULL) */
	size_t n_excludes;
	int all_file_systems;          /* 0 (default): stay on the root's device */
	int skip_lost_found;           /* exclude "lost+found" everywhere */
	size_t entries_max;            /* 0: CN_PXAR_ENCODER_MAX_ENTRIES */
	int skip_e2big_xattr;          /* ignore E2BIG from listxattr/getxattr */
	/* Catalog directory for this archive, e.g. "root.pxar.didx": when set
	 * (and a catalog is given) the archive's entries are added inside a
	 * directory of that name, as the official client does. NULL: the
	 * entries go into the catalog's current directory. */
	const char *archive_name;
	uint64_t feature_flags;        /* 0: CN_PXAR_FLAGS_DEFAULT */
	/* Split archive (format v2, upstream --change-detection-mode=data):
	 * when payload_out is set, out receives the metadata stream (.mpxar)
	 * and payload_out the payload stream (.ppxar); exclude patterns go
	 * into the PRELUDE as {"exclude-patterns":"..."} instead of a
	 * .pxarexclude-cli file, as create.rs does. */
	cn_write_fn payload_out;
	void *payload_ctx;
	/* Metadata change detection (needs payload_out); NULL: every file is
	 * read (upstream "data" mode when split, "legacy" otherwise). */
	const struct cn_pxar_reuse *reuse;
	/* Split archives, may be NULL: called before each regular file's
	 * payload with its position, after all payload bytes before it were
	 * passed to payload_out (upstream's suggested boundaries: the payload
	 * chunker may end a chunk there, so that chunks hold whole files and
	 * reuse needs little padding). 0 or a negative code. */
	int (*payload_boundary)(void *ctx, uint64_t offset);
	/* May be NULL: file contents are read straight into the output's
	 * buffer instead of being copied there. data_reserve(data_ctx, &buf,
	 * &avail) gives free space at the end of the stream that carries file
	 * contents (payload_out's in a split archive, out's otherwise);
	 * data_commit(data_ctx, len) appends the first len bytes of it, after
	 * which they are not touched again (cn_pipeline_reserve_fn and
	 * cn_pipeline_commit_fn). Both 0 or a negative code. */
	int (*data_reserve)(void *ctx, uint8_t **buf, size_t *avail);
	int (*data_commit)(void *ctx, size_t len);
	void *data_ctx;
};

struct cn_pxar_create_stats {
	uint64_t files;          /* regular files stored with content */
	uint64_t dirs;           /* directories, root included */
	uint64_t symlinks, hardlinks, devices, fifos, sockets;
	uint64_t bytes_read;     /* file content bytes read */
	uint64_t archive_size;   /* bytes of pxar output (split: metadata stream) */
	uint64_t payload_size;   /* split archives: bytes of the payload stream */
	uint64_t excluded;       /* entries left out by patterns */
	uint64_t skipped;        /* vanished, unreadable or changed-type entries
				  * and unreadable .pxarexclude files (warned) */
	uint64_t changed;        /* files whose size/mtime changed while read */
	uint64_t mountpoints;    /* directories not descended into */
	/* metadata change detection (upstream's change detection summary) */
	uint64_t files_reused;    /* files referencing previous payload */
	uint64_t files_reencoded; /* regular files read (metadata mode) */
	uint64_t files_compared;  /* of files_reused, those read to compare
				   * with the previous content (metadata
				   * changed, data not) */
	uint64_t files_unopened;  /* of files_reused, those found unchanged by
				   * lookup_unopened (not opened, metadata
				   * not read) */
	uint64_t reused_bytes;    /* their payload bytes, headers included */
	uint64_t reencoded_bytes;
	uint64_t injected_chunks, injected_bytes; /* previous chunks placed */
	uint64_t partial_chunks;  /* injected chunks holding padding */
};

/* Encodes the tree at root_path as a pxar v1 archive, streaming it to
 * out(out_ctx, ...). catalog (may be NULL) gets the entries as they are
 * encoded; the caller creates it and calls cn_catalog_writer_finish()
 * after all archives. stats (may be NULL) is zeroed and filled. Returns 0
 * or a negative code with a message (e.g. out's code, -EOVERFLOW when
 * entries_max is exceeded). */
int cn_pxar_create(const char *root_path, const struct cn_pxar_create_opts *opts,
		   cn_write_fn out, void *out_ctx, struct cn_catalog_writer *catalog,
		   struct cn_pxar_create_stats *stats);

/* The feature flags flags.rs Flags::from_magic gives a file system type
 * (statfs f_type). */
uint64_t cn_pxar_flags_from_magic(int64_t magic);

/* Whether upstream refuses to back up / descend into this file system
 * type (proc, sysfs, cgroup, ...). */
int cn_pxar_is_virtual_fs(int64_t magic);

#endif
