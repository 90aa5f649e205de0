/* cn_pxar_dir — the children of one directory of a pxar archive, read from
 * its goodbye table: the table, then each child's FILENAME item, and
 * nothing else (no child's metadata, no subtree). For a FUSE mount, which
 * lists and looks up directories one at a time.
 *
 * The table is checked as far as a listing needs: tail marker and sizes,
 * every item pointing to a FILENAME item inside the directory, its range
 * inside the directory, legal and distinct names. The entries themselves
 * are decoded (and checked) by cn_pxar_accessor_entry on their ranges.
 */
#ifndef CN_PXAR_DIR_H
#define CN_PXAR_DIR_H

#include <stddef.h>
#include <stdint.h>

#include "pxar/cn_pxar_decoder.h"

/* One child: its name (NUL-terminated, owned by the list) and range. */
struct cn_pxar_child {
	const char *name;
	size_t name_len;
	struct cn_pxar_range range;
};

struct cn_pxar_dirlist;

/* Reads the children of the directory at dir (a range from cn_pxar_lookup,
 * this module or cn_pxar_root_range; the caller has checked it is a
 * directory) from in (borrowed). split: in is the .mpxar of a v2 split
 * archive (a child's size in the table may count its payload). *out is
 * sorted by name (bytewise) and freed with cn_pxar_dirlist_free. A child
 * whose name lies in damaged data (the input failed a chunk's check) is
 * left out of the list and counted (cn_pxar_dirlist_unreadable); the
 * others are listed. Returns 0 or a negative code with a message naming
 * the archive offset (-CN_E_FORMAT, -E2BIG for more than
 * CN_PXAR_MAX_OPEN_CHILDREN children, -ENOMEM, or the input's error,
 * such as damaged data in the goodbye table itself). */
int cn_pxar_dir_read(const struct cn_pxar_input *in, int split, const struct cn_pxar_range *dir,
		     struct cn_pxar_dirlist **out);

/* The number of children, and child i (0 <= i < count; borrowed from l). */
size_t cn_pxar_dirlist_count(const struct cn_pxar_dirlist *l);
const struct cn_pxar_child *cn_pxar_dirlist_get(const struct cn_pxar_dirlist *l, size_t i);

/* How many children were left out of l as unreadable; *why (if not
 * NULL; borrowed from l) the first one's error. */
size_t cn_pxar_dirlist_unreadable(const struct cn_pxar_dirlist *l, const char **why);

/* The child called name (len bytes), or NULL. Binary search. */
const struct cn_pxar_child *cn_pxar_dirlist_find(const struct cn_pxar_dirlist *l,
						 const char *name, size_t len);

/* The range of the archive root in an archive of size bytes. */
struct cn_pxar_range cn_pxar_root_range(uint64_t size);

void cn_pxar_dirlist_free(struct cn_pxar_dirlist *l);

#endif
