/* cn_catalog_reader — reading catalog.pcat1 (the reading half of upstream
 * pbs-datastore/src/catalog.rs CatalogReader; spec catalog.md).
 *
 * The catalog is parsed from memory (the caller reassembles it from its
 * dynamic index first). Everything is checked before use: magic, the root
 * table offset, every table's length (it must lie between the magic and
 * the trailing root offset and be consumed exactly), varints (at most
 * 10/11 bytes, no overflow), entry types, names (non-empty, < 4096 bytes,
 * no '/' or NUL, not "." or ".."), directory offsets (a child table lies
 * strictly before its parent's). A full listing visits each table at most
 * once, so a hostile catalog whose directories share tables cannot blow
 * up. Errors: -CN_E_MAGIC, -CN_E_FORMAT, -CN_E_TRUNCATED, -CN_E_PATH,
 * -ENOMEM, with a message naming the offset.
 */
#ifndef CN_CATALOG_READER_H
#define CN_CATALOG_READER_H

#include <stddef.h>
#include <stdint.h>

struct cn_catalog_reader;

struct cn_catalog_entry {
	char type;                /* CN_CATALOG_DIR 'd', FILE 'f', SYMLINK 'l', ... */
	const uint8_t *name;      /* borrowed from the catalog bytes, not NUL-terminated */
	size_t name_len;
	uint64_t size;            /* files: st_size */
	int64_t mtime;            /* files: st_mtime seconds */
	uint64_t dir_start;       /* directories: absolute offset of its table */
};

/* Opens a reader over data (borrowed: it must outlive the reader). Checks
 * the magic and the root offset. Returns 0 or a negative code. */
int cn_catalog_reader_open(const uint8_t *data, size_t len, struct cn_catalog_reader **out);
void cn_catalog_reader_free(struct cn_catalog_reader *r);

/* Called per entry with its path ("archive.pxar.didx/dir/name", no
 * leading '/'; NUL-terminated, valid during the call) and the entry. 0 to
 * go on, negative to stop (returned by the walker). */
typedef int (*cn_catalog_fn)(void *ctx, const char *path, const struct cn_catalog_entry *e);

/* Calls fn for each entry of the directory table at start (not
 * recursive); path prefix for the entries. The root table is at
 * cn_catalog_root(). Returns 0 or a negative code. */
int cn_catalog_read_dir(struct cn_catalog_reader *r, uint64_t start, const char *prefix,
			cn_catalog_fn fn, void *ctx);

/* Offset of the root table (whose entries are the archives). */
uint64_t cn_catalog_root(const struct cn_catalog_reader *r);

/* Lists, depth-first in catalog order (a directory before its contents),
 * every entry at or below path (NULL, "" or "/": everything; otherwise a
 * path such as "root.pxar.didx/etc"). Returns 0, -ENOENT when path does
 * not exist, what fn returned, or a negative code for a bad catalog. */
int cn_catalog_list(struct cn_catalog_reader *r, const char *path, cn_catalog_fn fn, void *ctx);

/* Finds one path. Returns 1 and fills *out (name borrowed from the
 * catalog), 0 when not found, or a negative code. "" is the root
 * (type 'd'). */
int cn_catalog_lookup(struct cn_catalog_reader *r, const char *path, struct cn_catalog_entry *out);

/* Varint decoders (catalog.md §2) over [*p, end): advance *p. Return 0,
 * -CN_E_TRUNCATED when the data ends inside the number, -CN_E_FORMAT for
 * more than 10/11 bytes or a value beyond 64 bits. Set a message. */
int cn_catalog_get_u64(const uint8_t **p, const uint8_t *end, uint64_t *v);
int cn_catalog_get_i64(const uint8_t **p, const uint8_t *end, int64_t *v);

#endif
