/* cn_mount_nodes.h — private to cairn mount (cn_mount.c): the nodes of
 * the inodes the kernel knows, and the table that finds them by inode
 * number (prefix cn_mnode_). Nothing else includes it; the public
 * interface is cn_mount.h.
 *
 * Memory: nodes come from blocks of 2 MiB taken from the kernel at once
 * (as huge pages where it has them); freed nodes are reused; the blocks
 * are returned by cn_mnode_table_free. Not thread-safe: the mount serves
 * its requests on one thread.
 */
#ifndef CN_MOUNT_NODES_H
#define CN_MOUNT_NODES_H

#include <stdint.h>

#include "pxar/cn_pxar_dir.h"

/* An inode the kernel knows (or a readdirplus made): one allocation
 * with its name, attributes kept compact, as a find over a large tree
 * makes one per entry. */
struct cn_mnode {
	struct cn_mnode *next;        /* hash chain (the table's) */
	uint64_t ino, nlookup, parent;
	struct cn_pxar_range range;   /* the entry's (a hardlink's: its target's) */
	uint64_t content;             /* FILE: offset of the data in its stream */
	struct cn_pxar_dirlist *children; /* DIR: once listed or looked in */
	uint64_t size;                /* FILE: its size, SYMLINK: the target's length */
	int64_t mtime_sec;
	uint32_t mtime_nsec, mode, uid, gid;
	uint32_t dev_major, dev_minor;
	uint8_t in_payload;           /* FILE: data in the .ppxar stream */
	uint8_t pooled;               /* (the table's) from its pool, not malloc */
	char name[];                  /* for messages */
};

struct cn_mnode_table;

/* An empty table in *out; 0 or -ENOMEM. Freed with cn_mnode_table_free. */
int cn_mnode_table_new(struct cn_mnode_table **out);

/* Frees every node of the table (with its children list) and the table;
 * NULL is ignored. */
void cn_mnode_table_free(struct cn_mnode_table *t);

/* The node of inode ino, or NULL. The table keeps owning it. */
struct cn_mnode *cn_mnode_get(const struct cn_mnode_table *t, uint64_t ino);

/* A zeroed node called name, not yet in the table, or NULL when out of
 * memory. The caller sets its ino and inserts it, or discards it. */
struct cn_mnode *cn_mnode_new(struct cn_mnode_table *t, const char *name);

/* Enters n (from cn_mnode_new) in the table, which owns it from then on;
 * 0 or -ENOMEM (n is then still the caller's). */
int cn_mnode_insert(struct cn_mnode_table *t, struct cn_mnode *n);

/* Frees n, from cn_mnode_new and not in the table. */
void cn_mnode_discard(struct cn_mnode_table *t, struct cn_mnode *n);

/* Takes n out of the table and frees it. */
void cn_mnode_remove(struct cn_mnode_table *t, struct cn_mnode *n);

#endif
