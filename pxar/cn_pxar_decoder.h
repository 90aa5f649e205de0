/* cn_pxar_decoder — reading pxar archives: a validating streaming decoder
 * and goodbye-table random access (the upstream `Decoder` and `Accessor`).
 *
 * Input is random access (struct cn_pxar_input): a restore reads through
 * chunks, a single-file restore jumps through goodbye tables and never
 * decodes the rest of the archive.
 *
 * The decoder checks what upstream's decoder and accessor check (pxar
 * src/decoder/mod.rs, src/accessor/mod.rs; spec pxar.md §9) and more:
 *  - every item header: full_size >= 16, content within the per-type limit;
 *  - FILENAME is followed by ENTRY or HARDLINK, a directory by FILENAME or
 *    GOODBYE items only; at most one GROUP_OBJ / DEFAULT / FCAPS /
 *    QUOTA_PROJID, fixed-size items exactly their size (the order of the
 *    attribute items is not enforced, as upstream); mtime nanoseconds
 *    below 10^9 and a known file type in the mode;
 *  - the item that ends an entry matches its mode (PAYLOAD only for regular
 *    files, SYMLINK for symlinks, DEVICE for devices, children for dirs);
 *  - file names: non-empty, NUL-terminated, no '/', no NUL inside, not '.'
 *    or '..', at most 4096 bytes;
 *  - every goodbye table: size, tail marker, tail offset/size, and that its
 *    items are exactly the directory's children (hash, offset, size) laid
 *    out so that the binary search finds each of them, and no name twice
 *    in one directory — so that random access on an archive this decoder
 *    accepted finds exactly what it decoded (the fuzz target checks this);
 *    v2 split files may count their payload in the item size, as the pxar
 *    1.0 encoder writes it;
 *  - hardlinks: offset > 0, pointing back to a FILENAME followed by a
 *    regular file's ENTRY; target path relative without '.'/'..' parts;
 *  - v2 PAYLOAD_REFs in payload stream order, none before the end of the
 *    previous one (upstream's payload_consumed): each payload is
 *    referenced once, so a decode never yields more content than the
 *    payload stream holds;
 *  - nothing after the root goodbye table.
 * Hard limits against hostile sizes: nesting depth CN_PXAR_MAX_DEPTH,
 * children remembered for goodbye checks CN_PXAR_MAX_OPEN_CHILDREN,
 * metadata bytes per entry CN_PXAR_MAX_META, ACL entries per entry
 * CN_PXAR_MAX_ACL. Errors: -CN_E_FORMAT (structure), -CN_E_TRUNCATED
 * (archive ends early), -CN_E_PATH (illegal name), -E2BIG (limit), -ENOMEM,
 * or what input->read_at returned; always with a message that names the
 * archive offset. Checks happen as the stream is read: a directory's
 * goodbye table is verified when it is reached, so an extractor may have
 * written earlier entries of an archive that fails later (as upstream).
 *
 * Formats: v1 (unified) and v2 split archives (FORMAT_VERSION 2, PRELUDE,
 * PAYLOAD_REF into a separate payload input; spec pxar.md §8).
 *
 * Implemented in cn_pxar_input.c (inputs), cn_pxar_item.c (items of one
 * entry), cn_pxar_decoder.c (sequential decoder, goodbye checks, content)
 * and cn_pxar_accessor.c (random access).
 */
#ifndef CN_PXAR_DECODER_H
#define CN_PXAR_DECODER_H

#include <stddef.h>
#include <stdint.h>

#include "pxar/cn_pxar_format.h"

#define CN_PXAR_MAX_DEPTH 4096
#define CN_PXAR_MAX_OPEN_CHILDREN (4u << 20)
#define CN_PXAR_MAX_META (16u << 20)
#define CN_PXAR_MAX_ACL 65536

/* Random-access input. read_at reads exactly len bytes at off and returns
 * 0, or a negative code with a message set. The decoder never asks for
 * bytes beyond size. ctx belongs to whoever made the input.
 * Optional (both NULL when the input only copies): view_at lends the
 * bytes at off without a copy, *data pointing to *got of them (1..len,
 * len > 0), valid until release(ctx, *token); 0 or a code as read_at. */
struct cn_pxar_input {
	int (*read_at)(void *ctx, uint64_t off, void *buf, size_t len);
	uint64_t size;
	void *ctx;
	int (*view_at)(void *ctx, uint64_t off, size_t len, const uint8_t **data, size_t *got,
		       void **token);
	void (*release)(void *ctx, void *token);
};

/* Inputs over a memory buffer (borrowed: it must outlive the input) and
 * over an open file descriptor (borrowed; pread; size from fstat). The
 * struct cn_pxar_input is filled in place; nothing to free.
 * cn_pxar_input_fd returns 0 or -errno with a message. */
void cn_pxar_input_mem(struct cn_pxar_input *in, const void *data, size_t len);
int cn_pxar_input_fd(struct cn_pxar_input *in, int fd);

enum cn_pxar_kind {
	CN_PXAR_KIND_DIR = 1,     /* directory; its children follow, then DIR_END */
	CN_PXAR_KIND_FILE,        /* regular file with content */
	CN_PXAR_KIND_SYMLINK,
	CN_PXAR_KIND_HARDLINK,    /* link to an earlier regular file; no metadata */
	CN_PXAR_KIND_DEVICE,      /* char or block device (see mode) */
	CN_PXAR_KIND_FIFO,
	CN_PXAR_KIND_SOCKET,
	CN_PXAR_KIND_DIR_END,     /* end of a directory (its goodbye table) */
};

/* One decoded entry. All pointers are borrowed from the decoder (or the
 * accessor) and stay valid until its next call. */
struct cn_pxar_entry {
	enum cn_pxar_kind kind;
	const char *path;         /* relative to the archive root, "" for the root */
	size_t path_len;
	const char *name;         /* last component of path ("" for the root) */

	uint64_t mode;            /* st_mode: type and permission bits */
	uint64_t flags;           /* pxar attribute flags (chattr/FAT) */
	uint32_t uid, gid;
	int64_t mtime_sec;
	uint32_t mtime_nsec;

	size_t xattr_count;
	const struct cn_pxar_xattr *xattrs;
	size_t acl_user_count, acl_group_count;
	const struct cn_pxar_acl_entry *acl_users, *acl_groups;
	int has_acl_group_obj;
	uint64_t acl_group_obj;
	int has_acl_default;
	uint64_t acl_default[4];  /* user_obj, group_obj, other, mask (~0 = none) */
	size_t acl_default_user_count, acl_default_group_count;
	const struct cn_pxar_acl_entry *acl_default_users, *acl_default_groups;
	const uint8_t *fcaps;     /* NULL when none */
	size_t fcaps_len;
	int has_quota_projid;
	uint64_t quota_projid;

	const char *link;         /* SYMLINK target or HARDLINK target path, NUL-terminated */
	size_t link_len;
	uint64_t hardlink_offset; /* HARDLINK: stored offset */
	uint64_t dev_major, dev_minor;

	uint64_t file_size;       /* FILE: content length */
	uint64_t content_offset;  /* FILE: offset of the data in its stream */
	int content_in_payload;   /* FILE: data lives in the v2 payload input */

	/* Where the entry sits: FILENAME header (UINT64_MAX for a range root),
	 * first item after it, and end of the entry (after its payload, link,
	 * device, attributes or goodbye table). */
	uint64_t filename_offset, entry_offset, end_offset;
};

struct cn_pxar_decoder;

/* Opens a decoder over a whole archive. payload is NULL for v1 archives
 * and the .ppxar input for v2 split archives (then in is the .mpxar).
 * Inputs are borrowed and must outlive the decoder; free it with
 * cn_pxar_decoder_free. Returns 0 or a negative code with a message. */
int cn_pxar_decoder_new(const struct cn_pxar_input *in,
			const struct cn_pxar_input *payload,
			struct cn_pxar_decoder **out);

/* Opens a decoder over one entry found by random access: [entry_offset,
 * end_offset) of in, with filename_offset as in cn_pxar_entry (UINT64_MAX
 * for the archive root). base_path is the entry's path (copied), used as
 * the prefix of every decoded path. Returns 0 or a negative code. */
int cn_pxar_decoder_new_range(const struct cn_pxar_input *in,
			      const struct cn_pxar_input *payload,
			      uint64_t filename_offset, uint64_t entry_offset,
			      uint64_t end_offset, const char *base_path,
			      struct cn_pxar_decoder **out);

/* Decodes the next entry, depth-first in archive order: a directory comes
 * before its children and is followed by a DIR_END entry after them. On
 * success *out points into the decoder until the next call and 1 is
 * returned; 0 at the end of the archive (or range); a negative code on
 * error (the decoder must not be used further). */
int cn_pxar_decoder_next(struct cn_pxar_decoder *d, const struct cn_pxar_entry **out);

/* Reads len bytes of the current FILE entry's content starting at off
 * (off + len <= file_size). Returns 0 or a negative code. */
int cn_pxar_decoder_read(struct cn_pxar_decoder *d, uint64_t off, void *buf, size_t len);

/* Borrows up to len (> 0) bytes of the current FILE entry's content at
 * off (off + len <= file_size) without copying, when the input lends
 * them (view_at): returns 1 with *data, *got (1..len) valid until
 * cn_pxar_decoder_release(d, *token), which must come before the next
 * cn_pxar_decoder_next; 0 when the input cannot lend (then use
 * cn_pxar_decoder_read); or a negative code. */
int cn_pxar_decoder_view(struct cn_pxar_decoder *d, uint64_t off, size_t len,
			 const uint8_t **data, size_t *got, void **token);

/* Ends a view of cn_pxar_decoder_view. */
void cn_pxar_decoder_release(struct cn_pxar_decoder *d, void *token);

/* For a decoder opened without a payload input on a v2 metadata archive
 * (.mpxar alone): accept PAYLOAD_REF items without following them; FILE
 * entries then report file_size and content_offset (payload offset + 16)
 * with content_in_payload set, and their content cannot be read. Used to
 * rebuild the change-detection file cache without the payload stream.
 * Call before the first cn_pxar_decoder_next. */
void cn_pxar_decoder_metadata_only(struct cn_pxar_decoder *d);

/* The format version (1 or 2) seen so far (1 until FORMAT_VERSION). */
int cn_pxar_decoder_version(const struct cn_pxar_decoder *d);

void cn_pxar_decoder_free(struct cn_pxar_decoder *d);

/* --- random access (upstream Accessor) --- */

struct cn_pxar_accessor;

/* Opens an accessor: checks the first header (and FORMAT_VERSION) and the
 * root goodbye tail. Inputs are borrowed. Returns 0 or a negative code. */
int cn_pxar_accessor_open(const struct cn_pxar_input *in,
			  const struct cn_pxar_input *payload,
			  struct cn_pxar_accessor **out);
void cn_pxar_accessor_free(struct cn_pxar_accessor *a);

/* Where an entry sits (see cn_pxar_entry). */
struct cn_pxar_range {
	uint64_t filename_offset; /* UINT64_MAX for the root */
	uint64_t entry_offset;
	uint64_t end_offset;
};

/* Finds path ("a/b/c"; "", "/" or "." is the root; leading '/' and '.'
 * components are ignored, ".." is rejected) through the goodbye tables,
 * reading only the tables and file names on the way. Returns 1 and fills
 * *out, 0 when no such entry exists, or a negative code. A final hardlink
 * is returned as such (see cn_pxar_follow_hardlink). */
int cn_pxar_lookup(struct cn_pxar_accessor *a, const char *path,
		   struct cn_pxar_range *out);

/* Decodes the single entry at r (metadata only, no children) into *out,
 * valid until the accessor's next call. path is used as the entry's path.
 * Returns 0 or a negative code. */
int cn_pxar_accessor_entry(struct cn_pxar_accessor *a, const struct cn_pxar_range *r,
			   const char *path, const struct cn_pxar_entry **out);

/* Opens a decoder over the entry at r (for a directory: its whole subtree)
 * with path as prefix. Same ownership as cn_pxar_decoder_new_range. */
int cn_pxar_accessor_decoder(struct cn_pxar_accessor *a, const struct cn_pxar_range *r,
			     const char *path, struct cn_pxar_decoder **out);

/* Resolves a HARDLINK entry (from a decoder or accessor on the same
 * archive) to the range of the regular file it points to. Returns 0 or a
 * negative code (-CN_E_FORMAT when the offset is invalid or the target is
 * not a regular file). */
int cn_pxar_follow_hardlink(struct cn_pxar_accessor *a, const struct cn_pxar_entry *link,
			    struct cn_pxar_range *out);

/* Checks a relative archive path (hardlink target): non-empty, no leading
 * '/', every component a legal file name. Returns 0 or -CN_E_PATH. */
int cn_pxar_check_relpath(const char *path, size_t len);

#endif
