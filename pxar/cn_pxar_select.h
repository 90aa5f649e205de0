/* cn_pxar_select — which entries of a pxar archive an extraction, a listing
 * or a verify pass takes: paths and patterns as `pxar extract` takes them
 * (upstream pbs-client/src/pxar/extract.rs with a pathpatterns match list).
 *
 *  - Each argument is an include or an exclude; a leading '!' inverts it.
 *    Arguments without glob characters (* ? [ \) are paths from the
 *    archive root ("photos/2024", "/photos/2024", "./photos//2024" are the
 *    same path); globs follow pathpatterns (cn_pattern.h): '*' stops at
 *    '/', a glob matches the whole path or any part after a '/' ("*.mov"
 *    matches every .mov, "2024/IMG_*.jpg" those in a 2024 directory at any
 *    depth), and a leading '/' anchors it at the root. A trailing '/'
 *    restricts an argument to directories.
 *  - The last argument matching an entry decides; an entry no argument
 *    matches takes its directory's decision, so an included directory
 *    brings its whole subtree except what a later exclude takes out, and
 *    an include can bring one entry out of an excluded directory.
 *  - At the top, everything is taken when there is no include (none at
 *    all, or only excludes: "everything but"), else nothing. (Upstream
 *    `pxar extract` with only excludes takes nothing; "everything but" is
 *    what such a command line asks for.)
 *  - Includes that are all paths, with any excludes, are looked up
 *    through the goodbye tables: only their subtrees are decoded
 *    (cn_pxar_select_lookup; of two paths one inside the other, the outer
 *    one). Anything else decodes the whole archive (for split archives:
 *    the metadata stream, no file content).
 *
 * A selection is immutable once built; matching is thread-safe. */
#ifndef CN_PXAR_SELECT_H
#define CN_PXAR_SELECT_H

#include "pxar/cn_pxar_decoder.h"

struct cn_pxar_select;

/* Makes an empty selection (everything). *out is freed with
 * cn_pxar_select_free. Returns 0 or -ENOMEM. */
int cn_pxar_select_new(struct cn_pxar_select **out);

/* Frees s (NULL is fine). */
void cn_pxar_select_free(struct cn_pxar_select *s);

/* Adds one argument (see above) after those already added: an include,
 * or an exclude when exclude is set (a leading '!' inverts either).
 * Returns 0, -EINVAL with a message naming the argument, or -ENOMEM. */
int cn_pxar_select_add(struct cn_pxar_select *s, const char *arg, int exclude);

/* Adds path as an include of that path from the archive root, its
 * characters taken as they are (no '!', no globs): for paths that come
 * from a catalog rather than a user. Returns as cn_pxar_select_add. */
int cn_pxar_select_add_path(struct cn_pxar_select *s, const char *path);

/* A new selection of one include argument; NULL or "" selects
 * everything. For callers that take one PATH. Returns as the two above. */
int cn_pxar_select_from_path(const char *arg, struct cn_pxar_select **out);

/* Whether s takes every entry (NULL, no arguments, or only the root). */
int cn_pxar_select_everything(const struct cn_pxar_select *s);

/* The number of paths to look up and decode alone; 0 when the whole
 * archive is decoded. s may be NULL. */
size_t cn_pxar_select_lookups(const struct cn_pxar_select *s);

/* The i-th of them in archive order (normalised, no leading '/', owned
 * by s; none inside another), or NULL past the last. */
const char *cn_pxar_select_lookup(const struct cn_pxar_select *s, size_t i);

/* Whether the top of the walk (the archive root, or the parents of the
 * looked-up path) passes "taken" down to entries no argument matches.
 * s may be NULL (everything). */
int cn_pxar_select_initial(const struct cn_pxar_select *s);

/* Whether entry e (not the archive root) is taken, given whether its
 * directory's decision (inherited) is "taken". s may be NULL. */
int cn_pxar_select_entry(const struct cn_pxar_select *s, int inherited,
			 const struct cn_pxar_entry *e);

#endif
