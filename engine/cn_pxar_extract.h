/* cn_pxar_extract — restoring a pxar archive into a directory, and listing
 * its entries (upstream pbs-client/src/pxar/extract.rs, metadata.rs and
 * pxar-bin's `list`).
 *
 * Safety: nothing is ever written outside target_dir. Every file name is
 * checked by the decoder (no '/', '.', '..', NUL); directories are entered
 * with openat(O_DIRECTORY|O_NOFOLLOW) one component at a time from a
 * descriptor of the target, files are created with O_CREAT|O_EXCL|
 * O_NOFOLLOW (an existing entry is unlinked first only when overwriting,
 * never followed and never truncated in place, so neither a symlink nor a
 * hard link planted in the target is written through), hardlink targets
 * are resolved by the same component walk and linked without following
 * symlinks (a target outside the selection is restored as a copy once,
 * further links to it link that copy; a stored target path that does not
 * name the entry the hardlink's offset points to is an archive error),
 * and metadata goes to descriptors of the created objects (or,
 * for symlinks, to the name with AT_SYMLINK_NOFOLLOW).
 *
 * Metadata restored (in upstream's order): owner (always attempted, as
 * upstream's WITH_OWNER: run unprivileged, files owned by other users give
 * one "failed to set ownership" error each — set no_owner, like
 * proxmox-backup-client's --ignore-ownership, to keep the restoring user
 * as owner), xattrs (user.*, trusted.*,
 * security.NTACL, as upstream's is_valid_xattr_name), file capabilities,
 * POSIX ACLs (access and default, rebuilt as upstream apply_acls does),
 * permission bits, mtime (directories after their contents). Regular files
 * are written sparse: 4 KiB blocks of zeros become holes (upstream
 * sparse_copy). chattr flags as upstream apply_flags (NOCOW and the other
 * initial flags before the data, the rest last); FAT attributes and quota
 * project ids are decoded but not applied.
 *
 * Errors while creating one entry or applying its metadata (an existing
 * file, EPERM for a device node as non-root, EOPNOTSUPP for xattrs on the
 * target fs is ignored as upstream does) are logged, counted in
 * stats->errors and extraction goes on — or stop it when opts->strict.
 * Archive errors (corrupt or hostile structure) always stop extraction,
 * as do errors every later entry would meet too: out of memory, a full
 * target (ENOSPC, EDQUOT), an input whose source stopped answering
 * (cn_error_is_unavailable). Those are returned as they are.
 */
#ifndef CN_PXAR_EXTRACT_H
#define CN_PXAR_EXTRACT_H

#include "pxar/cn_pxar_decoder.h"
#include "pxar/cn_pxar_select.h"
#include "engine/cn_write_pool.h"

#include <stdint.h>

struct cn_pxar_extract_opts {
	/* What to extract (borrowed; NULL: everything): paths and patterns,
	 * see cn_pxar_select.h. One path is found through the goodbye tables
	 * without decoding the rest. Entries keep their archive path below
	 * target_dir; the directories leading to them are created with their
	 * archived metadata. */
	const struct cn_pxar_select *select;
	const struct cn_pxar_input *payload; /* v2 split archives: the .ppxar */
	int overwrite;            /* replace existing non-directories */
	int allow_existing_dirs;  /* use directories that already exist */
	int strict;               /* stop at the first error */
	/* skip these metadata (no chown, ...); no_fcaps and no_xattrs both
	 * skip file capabilities stored as a security.capability xattr item */
	int no_owner, no_xattrs, no_acls, no_fcaps;
	int no_devices, no_fifos, no_sockets;        /* skip these entries */
	/* Threads writing the content of large files where the input lends
	 * its bytes (view_at; its release is then called from them too, and
	 * each writer holds up to CN_PXAR_EXTRACT_VIEWS_PER_WRITER views);
	 * 0: the calling thread writes everything. Such a file gets its
	 * owner, xattrs and ACLs before its data, the rest after it; files
	 * with capabilities are written inline. */
	size_t writers;
};

/* Lent views a writer thread holds at most: queued pieces and the one
 * being written. */
#define CN_PXAR_EXTRACT_VIEWS_PER_WRITER (CN_WRITE_POOL_QUEUE + 1)

struct cn_pxar_extract_stats {
	uint64_t dirs, files, symlinks, hardlinks, devices, fifos, sockets;
	uint64_t bytes;           /* file content bytes restored */
	uint64_t sparse_bytes;    /* of which left as holes */
	uint64_t errors;          /* entries or metadata that failed (non-strict) */
};

/* Extracts the archive in (borrowed) into target_dir, creating target_dir
 * (and its missing parents) if it does not exist. opts may be NULL
 * (defaults: everything, no overwrite, not strict); stats may be NULL.
 * Returns 0 when everything was restored, -CN_E_FORMAT (an unsafe path in
 * the archive included) or another corruption code for archive errors,
 * -CN_E_PATH for an unsafe path the selection asks for, -ENOENT
 * when the looked-up path is not in the archive, or, when errors were
 * counted (non-strict), -EIO with the message naming the count; the first
 * error's message was logged. */
int cn_pxar_extract(const struct cn_pxar_input *in, const char *target_dir,
		    const struct cn_pxar_extract_opts *opts,
		    struct cn_pxar_extract_stats *stats);

/* Called by cn_pxar_list for each entry (never for DIR_END); e is valid
 * during the call. Return 0 to go on or a negative code to stop (returned
 * by cn_pxar_list). */
typedef int (*cn_pxar_list_fn)(void *ctx, const struct cn_pxar_entry *e);

/* Lists the entries of the archive in (payload: v2 .ppxar or NULL) that
 * sel (borrowed, NULL: all) selects for extraction, in archive order (the
 * root only when everything at the top is taken). Returns 0, a negative
 * decoder error, -ENOENT when the looked-up path is not in the archive,
 * or what fn returned. */
int cn_pxar_list(const struct cn_pxar_input *in, const struct cn_pxar_input *payload,
		 const struct cn_pxar_select *sel, cn_pxar_list_fn fn, void *ctx);

/* Lists as cn_pxar_list and reads the content of every regular file
 * listed, writing nothing: what extracting sel would read, so that an
 * input that checks what it serves (a restore's chunk reader) checks all
 * of it. Same matching and returns, plus the input's read errors. */
int cn_pxar_verify(const struct cn_pxar_input *in, const struct cn_pxar_input *payload,
		   const struct cn_pxar_select *sel, cn_pxar_list_fn fn, void *ctx);

/* Formats e as upstream's format_single_line_entry:
 * "drwxr-xr-x++ 0/0  2024-06-05 10:00:00        0 "/path" -> target"
 * (mode with type letter, 'L' for hardlinks, '+' for ACLs, '+' for xattrs;
 * uid/gid; local mtime; size or major,minor; quoted path with '/' in
 * front; path and target escaped by cn_escape, so that no control byte
 * of an archive reaches a terminal). Writes at most len bytes including the NUL; returns what
 * snprintf returns. */
int cn_pxar_format_entry(const struct cn_pxar_entry *e, char *buf, size_t len);

#endif
