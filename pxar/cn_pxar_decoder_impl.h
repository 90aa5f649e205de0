/* cn_pxar_decoder_impl — what the decoder's files (cn_pxar_item.c,
 * cn_pxar_decoder.c, cn_pxar_accessor.c) share and nobody else uses: the
 * sequential decoder's state, bounded item reads, and the entry parser.
 *
 * Invariants of the sequential decoder:
 *  - d->pos is the offset of the next item header to read; every item read
 *    lies inside [range_start, range_end) (checked before reading);
 *  - stack[0..depth) are the open directories, innermost last; children[]
 *    holds, for each open directory from stack[i].child_start on, one
 *    record per finished child (hash, FILENAME offset, end) — exactly what
 *    its goodbye table must contain;
 *  - the path buffer holds the path of the last returned entry; it is cut
 *    back to the innermost open directory at the start of the next call.
 */
#ifndef CN_PXAR_DECODER_IMPL_H
#define CN_PXAR_DECODER_IMPL_H

#include <stddef.h>
#include <stdint.h>

#include "pxar/cn_pxar_decoder.h"
#include "common/cn_util.h"

#define NO_OFFSET UINT64_MAX

struct frame {
	uint64_t entry_off;     /* the directory's ENTRY (or range start) */
	uint64_t filename_off;  /* its FILENAME header, NO_OFFSET for the range root */
	uint64_t hash;          /* goodbye hash of its name (not for the root) */
	size_t path_len;        /* length of its path in the path buffer */
	size_t child_start;     /* first record of its children in children[] */
};

struct child_rec {
	uint64_t hash, offset, size; /* relative values as in the goodbye table */
	uint64_t filename_off, end;  /* absolute, while the directory is open */
	uint64_t extra;              /* v2 split file: its size, which upstream's
				      * encoder may add to the item's size */
};

struct xa_off {
	size_t off, name_len, value_len;
};

struct acl_list {
	struct cn_pxar_acl_entry *v;
	size_t n, cap;
};

enum state { ST_BEGIN, ST_IN_DIR, ST_DONE, ST_FAILED };

struct cn_pxar_decoder {
	struct cn_pxar_input in;
	struct cn_pxar_input payload;
	int has_payload;
	int metadata_only;  /* v2 without payload input: PAYLOAD_REF not followed */
	uint64_t payload_next;  /* a PAYLOAD_REF points at or after this: every
				 * payload is referenced once and in stream order
				 * (upstream's payload_consumed), so what a decode
				 * yields is bounded by the payload stream's size */
	int version;
	uint64_t range_start, range_end;
	uint64_t root_filename_off;
	int exact_end;          /* the range root must end exactly at range_end */
	enum state state;
	uint64_t pos;

	struct frame *stack;
	size_t depth, stack_cap;
	struct child_rec *children;
	size_t nchildren, children_cap;

	char *path;
	size_t path_len, path_cap, base_len;

	/* per-entry storage */
	struct cn_pxar_entry e;
	struct cn_buf meta;     /* xattr/fcaps/link bytes of the current entry */
	struct xa_off *xa;
	struct cn_pxar_xattr *xattrs;
	size_t nxa, xa_cap, xattrs_cap;
	size_t fcaps_off, link_off;
	struct acl_list acl[4]; /* users, groups, default users, default groups */
	uint8_t *gb_buf;        /* goodbye table being verified */
	size_t gb_cap;
};

/* --- item reads (cn_pxar_item.c) --- */

/* Name of an item type for messages ("unknown" when not a pxar type). */
const char *cn_pxd_htype_name(uint64_t t);

/* -CN_E_TRUNCATED unless [off, off + len) lies within limit and the input. */
int cn_pxd_in_range(const struct cn_pxar_input *in, uint64_t limit, uint64_t off, size_t len);

/* Reads len bytes at off of in, which must lie below limit. */
int cn_pxd_rd(const struct cn_pxar_input *in, uint64_t limit, uint64_t off, void *buf, size_t len);

/* Reads and checks the item header at pos (size, per-type content limit);
 * the whole item must end by limit. */
int cn_pxd_read_header(const struct cn_pxar_input *in, uint64_t limit, uint64_t pos,
		       uint64_t *htype, uint64_t *full);

/* Grows the array *p of elem-sized items (capacity *cap) to hold need. */
int cn_pxd_grow(void **p, size_t *cap, size_t need, size_t elem);

/* Reads the item at pos (size full) as exactly want little-endian u64s. */
int cn_pxd_read_u64s(struct cn_pxar_decoder *d, uint64_t pos, uint64_t full, size_t want,
		     uint64_t *v, const char *what);

/* Checks that the hardlink at filename_off points back (by offset) to a
 * FILENAME followed by a regular file's ENTRY; *target_out (if not NULL)
 * is that FILENAME's offset. */
int cn_pxd_check_hardlink_target(const struct cn_pxar_input *in, uint64_t filename_off,
				 uint64_t offset, uint64_t *target_out);

/* Parses the entry whose first item is at pos into d->e (see the
 * definition for what holds on return). */
int cn_pxd_parse_entry(struct cn_pxar_decoder *d, uint64_t pos, uint64_t filename_off,
		       uint64_t name_hash, int is_root);

/* --- decoders (cn_pxar_decoder.c) --- */

/* cn_pxar_decoder_new_range; exact: the range root must end exactly at
 * end (a hardlink target's range runs to the archive end instead). */
int cn_pxd_new_range(const struct cn_pxar_input *in, const struct cn_pxar_input *payload,
		     uint64_t filename_off, uint64_t entry_off, uint64_t end, const char *base,
		     int exact, struct cn_pxar_decoder **out);

/* Points the decoder d (made by cn_pxd_new_range on the same inputs) at
 * another range, as cn_pxd_new_range would, keeping its buffers: no
 * allocation once they are large enough. On error d is left unusable
 * (state as after a failed call) until the next successful reuse. */
int cn_pxd_reuse_range(struct cn_pxar_decoder *d, uint64_t filename_off, uint64_t entry_off,
		       uint64_t end, const char *base, int exact);

#endif
