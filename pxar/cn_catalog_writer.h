/* cn_catalog_writer — writes a catalog.pcat1 stream exactly as
 * proxmox-backup's CatalogWriter (pbs-datastore/src/catalog.rs): magic,
 * then one table per directory when it is closed (children before
 * parents), the root table ("/") at finish, then the root table's offset
 * as u64 LE. Spec: shared/spec/catalog.md.
 *
 * The official client opens one directory per pxar archive in the root
 * (named like "root.pxar.didx") and adds that archive's entries inside it;
 * cn_pxar_create does this when given an archive name. Memory: the
 * entries of the open directories only. Output through cn_write_fn, one
 * call per table (plus magic and trailer).
 */
#ifndef CN_CATALOG_WRITER_H
#define CN_CATALOG_WRITER_H

#include <stddef.h>
#include <stdint.h>

#include "pxar/cn_pxar_format.h"

struct cn_catalog_writer;  /* opaque */

/* Creates a writer and writes the magic. out/ctx are borrowed until
 * free(). Returns 0 and *w, or a negative code with a message. */
int cn_catalog_writer_new(cn_write_fn out, void *ctx, struct cn_catalog_writer **w);

/* Opens a directory named name[0..len) inside the current one. */
int cn_catalog_writer_start_directory(struct cn_catalog_writer *w, const void *name, size_t len);
/* Closes the current directory: writes its table and adds a 'd' entry for
 * it to its parent. Fails (-EINVAL) at the root level. */
int cn_catalog_writer_end_directory(struct cn_catalog_writer *w);

/* Adds a regular file with its size and mtime seconds. */
int cn_catalog_writer_add_file(struct cn_catalog_writer *w, const void *name, size_t len,
			       uint64_t size, int64_t mtime);
/* Adds an entry of one of the other kinds: CN_CATALOG_SYMLINK, _HARDLINK,
 * _BLOCKDEV, _CHARDEV, _FIFO, _SOCKET. */
int cn_catalog_writer_add_entry(struct cn_catalog_writer *w, uint8_t type, const void *name,
				size_t len);

/* Writes the root table and the trailer. Only the root may be open.
 * Returns 0 or a negative code. */
int cn_catalog_writer_finish(struct cn_catalog_writer *w);

/* Bytes written so far. */
uint64_t cn_catalog_writer_position(const struct cn_catalog_writer *w);

/* Frees the writer (NULL is fine); writes nothing. */
void cn_catalog_writer_free(struct cn_catalog_writer *w);

#endif
