/* cn_restore — reading snapshots back: restore of a pxar archive (whole,
 * a subtree or one file), verification of a snapshot, and loading a
 * snapshot's manifest, indexes and catalog.
 *
 *   source -> index.json.blob (signature checked with a key) -> index file
 *   (checked against the manifest's size and checksum) -> cn_chunk_reader
 *   (read-ahead on worker threads; every chunk decoded and its digest
 *   verified) -> cn_pxar_input -> cn_pxar_extract / cn_pxar_list.
 */
#ifndef CN_RESTORE_H
#define CN_RESTORE_H

#include <stddef.h>
#include <stdint.h>

#include "pxar/cn_pxar_select.h"
#include "engine/cn_target.h"
#include "store/cn_crypt.h"
#include "store/cn_index.h"
#include "store/cn_manifest.h"

struct cn_restore_opts {
	const struct cn_crypt_config *crypt; /* needed for encrypted snapshots */
	size_t threads;          /* read-ahead workers; 0 = twice the number of CPUs */
	/* What to restore (borrowed; NULL: everything): paths and patterns,
	 * see cn_pxar_select.h */
	const struct cn_pxar_select *select;
	/* Read and check, write nothing: every chunk of the archive; with a
	 * selection, what restoring it reads (its entries and content) */
	int verify_only;
	int overwrite;           /* replace existing files in the target */
	int no_owner;            /* keep the restoring user as owner (no chown) */
	/* Called from the calling thread at most every 250 ms with the
	 * furthest archive offset read so far and the archive size. */
	void (*progress)(void *ctx, uint64_t done, uint64_t total, double elapsed);
	void *progress_ctx;
};

struct cn_restore_stats {
	uint64_t files, dirs, symlinks, hardlinks, specials;
	uint64_t bytes;          /* file content restored */
	uint64_t errors;         /* entries whose creation or metadata failed */
	uint64_t chunks;         /* chunks fetched and verified */
	uint64_t chunk_bytes;    /* their plain bytes */
	uint64_t stream_size;    /* size of the archive stream */
	double duration;
};

/* Opens snapshot id on src and reads its manifest, checked to be id's
 * (-CN_E_MISMATCH otherwise: another snapshot's files copied here) and
 * against crypt (an encrypted or signed snapshot needs its key; with the
 * key, its signature must be there and fit). *m freed with
 * cn_manifest_free(). 0 or a negative code with a message. */
int cn_restore_open(struct cn_source *src, const struct cn_snapshot_id *id,
		    const struct cn_crypt_config *crypt, struct cn_manifest **m);

/* cn_restore_open for listing a snapshot's files: without a key (crypt
 * NULL) an encrypted or signed manifest is read all the same, its
 * signature unchecked, as a PBS lists any snapshot's files; with a key,
 * as cn_restore_open. */
int cn_restore_open_listing(struct cn_source *src, const struct cn_snapshot_id *id,
			    const struct cn_crypt_config *crypt, struct cn_manifest **m);

/* Downgrade check for snapshot id whose manifest m was read with
 * cn_restore_open: a manifest neither signed nor listing an encrypted
 * file, in a group where an earlier snapshot has encrypted files (as
 * src's listing says), gives -CN_E_MISMATCH with a message naming both.
 * 0 when that is not so; another negative code if the listing failed. */
int cn_restore_check_downgrade(struct cn_source *src, const struct cn_snapshot_id *id,
			       const struct cn_manifest *m);

/* Reads index file name ("media.pxar.didx") of the open snapshot, parses
 * it and checks it against the manifest. *idx freed with cn_index_free().
 * -ENOENT when the snapshot has no such file (message lists what exists),
 * -CN_E_MISSING when the manifest lists it but the source lacks it. */
int cn_restore_load_index(struct cn_source *src, const struct cn_manifest *m, const char *name,
			  struct cn_index **idx);

/* The index files of archive ("media.pxar", "media.mpxar", with or
 * without ".didx") in a snapshot whose manifest is m: name is
 * "media.pxar.didx", or for a split archive (split = 1) "media.mpxar.didx"
 * with pname "media.ppxar.didx". m NULL only checks the archive name.
 * 0, or -EINVAL with a message for a name that is not a pxar archive's. */
struct cn_archive_files {
	char name[300], pname[300];
	int split;
};
int cn_restore_archive_files(const struct cn_manifest *m, const char *archive,
			     struct cn_archive_files *f);

/* Reads the whole stream of an index into out (for the catalog).
 * 0 or a negative code. */
int cn_restore_read_stream(struct cn_source *src, const struct cn_index *idx,
			   const struct cn_crypt_config *crypt, struct cn_buf *out);

/* Restores archive ("media.pxar" or "media.pxar.didx") of snapshot id from
 * src into target_dir (created if missing), or with opts->verify_only
 * reads every chunk of the archive and decodes its whole structure without
 * writing. stats may be NULL. Returns 0, a negative code with a message
 * for fatal errors (bad index, wrong key, path not in the archive:
 * -ENOENT), the chunk's error when a chunk was missing or corrupt (also
 * when the extractor skipped the affected file and restored the rest), or
 * -EIO when some entries could not be created (stats->errors, each
 * logged). */
int cn_restore_archive(struct cn_source *src, const struct cn_snapshot_id *id,
		       const char *archive, const char *target_dir,
		       const struct cn_restore_opts *opts, struct cn_restore_stats *stats);

struct cn_verify_stats {
	uint64_t files;          /* manifest entries checked */
	uint64_t chunks;         /* chunks read and verified */
	uint64_t bytes;          /* plain bytes verified */
	uint64_t failed;         /* manifest entries that failed */
};

/* Verifies snapshot id: manifest, every blob (size, checksum, decoding)
 * and every index (against the manifest; every chunk fetched, decoded and
 * digest-checked). Failures of single files are logged and counted, and
 * the check goes on, unless src stopped answering (cn_error_is_unavailable:
 * that code is returned, message "not fully checked"). Returns 0 when
 * everything is fine, -CN_E_CHECKSUM when some file is damaged (message:
 * how many files failed), or another negative code for a failure that
 * stops the check (manifest unreadable or not this snapshot's, a
 * downgrade: cn_restore_check_downgrade). */
int cn_verify_snapshot(struct cn_source *src, const struct cn_snapshot_id *id,
		       const struct cn_crypt_config *crypt, size_t threads,
		       struct cn_verify_stats *stats);

/* Fills size and encrypted of the n snapshots of list (from src's
 * list_snapshots) that src listed without reading their manifest (size 0,
 * encrypted -1: an S3 bucket) from the manifest, as a local datastore's
 * listing does: size is the sum of the manifest's file sizes. Opens each
 * such snapshot on src; one whose manifest cannot be read or decoded is
 * marked damaged, its size left 0. Returns 0. */
int cn_restore_list_sizes(struct cn_source *src, struct cn_snapshot_info *list, size_t n);

#endif
