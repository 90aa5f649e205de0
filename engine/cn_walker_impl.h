/* cn_walker_impl — what the walker's files (cn_walker.c,
 * cn_walker_meta.c, cn_walker_hardlink.c, cn_walker_lookahead.c,
 * cn_walker_list.c, cn_walker_patterns.c) share and
 * nobody else uses: the walk's state and the functions that cross between
 * them, prefixed cn_wk_ so that no short names become global symbols of
 * libcairn.
 *
 * Invariants of the walk (struct walker):
 *  - path[0..path_len) is the current entry's path relative to the root,
 *    NUL-terminated once allocated (NULL or "" at the root); each
 *    directory level cuts it back to its own length when it returns;
 *  - patterns[0..n_patterns) are the patterns in force: the CLI ones first,
 *    then those of the .pxarexclude files of the directories on the current
 *    path, outermost first; each level drops its own on return;
 *  - fs_magic, fs_flags and cur_dev describe the file system of the
 *    directory being walked, restored when the directory that changed
 *    them returns;
 *  - the look-ahead cache (la) is used only with reuse (metadata change
 *    detection); see cn_walker_lookahead.c.
 */
#ifndef CN_WALKER_IMPL_H
#define CN_WALKER_IMPL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <xxhash.h>

#include "engine/cn_walker.h"
#include "pxar/cn_pxar_encoder.h"

struct cn_pattern;

struct hl_slot {
	uint64_t dev, ino;   /* ino == 0 && dev == 0: empty */
	char *path;
	uint64_t offset;
	int used;
};

/* Look-ahead cache (upstream PxarLookaheadCache): entries whose encoding
 * waits for the decision to reuse the previous payload of [start, end). */
enum { CE_ENTRY, CE_DIR, CE_DIR_END };

/* How many of the last placed chunks the padding rule remembers. */
#define CN_WK_RECENT_CHUNKS 64

struct cache_ent {
	int kind;               /* CE_ENTRY: any non-directory; CE_DIR: its begin */
	int fd;                 /* CE_ENTRY: open file (-1 otherwise) */
	char *path;             /* relative path (owned) */
	size_t path_len, name_off;
	struct stat st;
	struct cn_pxar_metadata m;
	int64_t fs_magic;       /* the walker's fs_magic and fs_flags when */
	uint64_t fs_flags;      /* it was listed */
	int reusable;           /* regular file found unchanged */
	uint64_t rel;           /* its PAYLOAD header offset - start */
	struct cn_pxar_reuse_match match; /* what lookup found (reusable) */
};

struct lookahead {
	struct cache_ent *e;
	size_t n, cap, max;
	int active;             /* a range is being collected (caching enabled) */
	uint64_t start, end;    /* previous payload stream range */
	int has_last;           /* a chunk kept back from the last injection */
	struct cn_pxar_reused_chunk last;
	uint64_t last_padding;
	/* cairn's padding rule (cn_walker_lookahead.c): over the archive so
	 * far, the bytes of the distinct previous chunks placed and of the
	 * files that use them; the chunks placed last (a ring: a changed
	 * file's neighbours re-reference its chunk soon after) with how
	 * often each was placed, and where the chunk of the last range's end
	 * starts in the previous stream (tail_start, for sharing the kept
	 * chunk). */
	uint64_t placed_bytes, used_bytes;
	struct recent_chunk {
		uint8_t digest[32];
		unsigned copies;
	} recent[CN_WK_RECENT_CHUNKS];
	size_t n_recent, recent_next;
	uint64_t tail_start;
	/* the unused end of the last placed range's last chunk, not counted
	 * for the next range unless it starts in that chunk */
	int has_pending;
	uint8_t pending_digest[32];
	uint64_t pending;
};

struct list_entry {
	char *name;
	size_t name_len;
	struct stat st;
};

struct cn_wk_prefetch;

struct walker {
	const struct cn_pxar_create_opts *opts;
	struct cn_pxar_encoder *enc;
	struct cn_catalog_writer *cat;
	struct cn_pxar_create_stats *stats;
	uint64_t feature_flags;
	uint64_t fs_flags;
	int64_t fs_magic;
	dev_t cur_dev;
	int use_devset;
	dev_t root_dev;
	struct cn_pattern **patterns;
	size_t n_patterns, cap_patterns;
	char *path;            /* current entry's path relative to the root */
	size_t path_len, path_cap;
	size_t entry_counter, entry_limit;
	struct hl_slot *hl;
	size_t hl_cap, hl_used;
	uint8_t *buf;
	const struct cn_pxar_reuse *reuse;  /* metadata change detection */
	struct lookahead la;
	int root_fd;           /* the root directory (borrowed from cn_pxar_create) */
	int beneath_ok;        /* openat2 RESOLVE_BENEATH works (open_entry's
				* CN_WK_BENEATH_ROOT) */
	XXH3_state_t *xxh;     /* metadata mode: content hash of the file read */
	uint8_t content_hash[16];
	struct cn_wk_prefetch *pf; /* lists directories ahead (NULL: none) */
	size_t depth;          /* directories entered (the root's contents: 1) */
};

/* ---- cn_walker.c ---- */

/* open_entry's parent for a path relative to the root, resolved beneath
 * it without following symlinks (not a valid fd, not AT_FDCWD). */
#define CN_WK_BENEATH_ROOT (-2)

/* Opens the regular file of cached entry c that lookup_unopened found
 * unchanged but that is read after all (the padding rule), by its path
 * beneath the root, as the walk would have opened it: c->fd and c->st
 * become the opened file's, and c->m is read from it when its inode or
 * ctime is no longer the listed one. *skip = 1 (nothing opened) when it
 * vanished or is no longer a regular file (warned and counted as
 * open_entry does). Returns 0 or a negative code with a message. */
int cn_wk_open_unopened(struct walker *w, struct cache_ent *c, int *skip);

/* Sets the path to its first base_len bytes + "/" + name (no "/" when
 * base_len is 0). Returns 0 or -ENOMEM (the path is then unchanged). */
int cn_wk_path_set(struct walker *w, size_t base_len, const char *name, size_t name_len);

/* The current path for messages: "." at the root. Borrowed from w. */
const char *cn_wk_cur_path(const struct walker *w);

/* Encodes one entry now; see its definition. Takes neither fd nor *mp. */
int cn_wk_encode_entry(struct walker *w, int fd, const struct list_entry *ent,
		       struct cn_pxar_metadata *mp, const struct cn_pxar_reuse_match *reuse,
		       uint64_t payload_offset);

/* Begins (or queues in the look-ahead cache) a directory, walks its
 * contents from fd (borrowed) and ends it. *m stays the caller's, but is
 * moved into the cache (and cleared) when queued. */
int cn_wk_add_directory(struct walker *w, int fd, const struct list_entry *ent,
			struct cn_pxar_metadata *m);

/* ---- cn_walker_patterns.c ---- */

/* Pushes p (taken, freed on failure) on the patterns in force. Returns 0
 * or -ENOMEM. */
int cn_wk_push_pattern(struct walker *w, struct cn_pattern *p);

/* Drops the patterns in force beyond the first n. */
void cn_wk_truncate_patterns(struct walker *w, size_t n);

/* Takes one line of the current directory's .pxarexclude (line[0..len),
 * borrowed): blank lines and comments are skipped, a bad pattern is
 * logged and skipped, others pushed. Returns 0 or -ENOMEM. */
int cn_wk_pxarexclude_line(struct walker *w, char *line, size_t len);

/* Encodes the .pxarexclude-cli entry listing the first count patterns
 * (the command line's), in the catalog too. Returns 0 or a negative
 * code. */
int cn_wk_encode_pxarexclude_cli(struct walker *w, size_t count);

/* Appends the prelude of a split archive (PbsClientPrelude: the command
 * line's patterns as JSON) to out. Returns 0 or -ENOMEM. */
int cn_wk_prelude_json(struct walker *w, struct cn_buf *out);

/* ---- cn_walker_meta.c ---- */

/* qsort that accepts an empty (NULL) array. */
void cn_wk_sort_n(void *base, size_t n, size_t size, int (*cmp)(const void *, const void *));

/* Sets *m to what st alone gives (mode, owner, mtime; nothing else). */
void cn_wk_stat_metadata(const struct stat *st, struct cn_pxar_metadata *m);

/* 1 when, on the file system being walked and with the feature flags in
 * use, a file whose ctime did not change since the previous backup still
 * has the metadata it had then, so that lookup_unopened may be asked:
 * not on FAT (its attributes are not kept with a ctime) nor FUSE (the
 * ctime is the daemon's word), and only with the default feature flags
 * (the previous run's are not recorded). */
int cn_wk_ctime_covers_metadata(const struct walker *w);

/* Reads the metadata of the open entry fd (borrowed), whose fstat is *st,
 * into *m, as far as flags allow. Returns 0 (the caller then owns *m and
 * clears it) or a negative code with a message (*m holds nothing). */
int cn_wk_get_metadata(struct walker *w, int fd, const struct stat *st, uint64_t flags,
		       struct cn_pxar_metadata *m);

/* ---- cn_walker_hardlink.c ---- */

/* The slot of (dev, ino), or NULL when that file was not archived yet. */
struct hl_slot *cn_wk_hl_find(struct walker *w, uint64_t dev, uint64_t ino);

/* Records that (dev, ino) was archived at path (copied) with its entry at
 * off. Returns 0 or -ENOMEM. */
int cn_wk_hl_insert(struct walker *w, uint64_t dev, uint64_t ino, const char *path, uint64_t off);

/* ---- cn_walker_lookahead.c ---- */

/* Queues an entry of kind CE_* at the current path: fd and *m (cleared)
 * move into the cache; match (may be NULL) and rel, the offset of its
 * previous payload from la.start, say how it may be reused. ent and m are
 * unused for CE_DIR_END. Returns 0 or -ENOMEM. */
int cn_wk_la_push(struct walker *w, int kind, int fd, const struct list_entry *ent,
		  struct cn_pxar_metadata *m, const struct cn_pxar_reuse_match *match, uint64_t rel);

/* Closes and frees what cache entries e[from..n) own (not e itself). */
void cn_wk_la_free_entries(struct cache_ent *e, size_t from, size_t n);

/* Decides on the collected range (reuse or re-read) and encodes the
 * cache; keep_last keeps the last chunk back for a range that may follow.
 * Returns 0 or a negative code with a message. */
int cn_wk_la_flush(struct walker *w, int keep_last);

/* Adds one entry in metadata change detection mode, through the
 * look-ahead cache. Takes fd and *m. found: for a regular file that
 * lookup_unopened found unchanged (not opened: fd -1), its match; NULL
 * otherwise. Returns 0 or a negative code. */
int cn_wk_add_entry_reuse(struct walker *w, int fd, const struct list_entry *ent,
			  struct cn_pxar_metadata *m, const struct cn_pxar_reuse_match *found);

/* ---- cn_walker_list.c ---- */

/* A directory's entries sorted by name (strcmp), each with its lstat,
 * "." and ".." left out; an entry that vanished between readdir and its
 * lstat has st.st_mode 0. e[0..n) and their names are owned. */
struct cn_wk_listing {
	struct list_entry *e;
	size_t n;
};

/* What cn_wk_list_dir failed at. */
enum cn_wk_list_fail {
	CN_WK_LIST_OPEN, CN_WK_LIST_READ, CN_WK_LIST_STAT, CN_WK_LIST_MEM, CN_WK_LIST_LARGE
};

/* Lists the directory open as dirfd (borrowed; read from its start
 * through a duplicate) into *out, giving up with -E2BIG
 * (CN_WK_LIST_LARGE) past max entries (0: no limit). Returns 0, or a
 * negative errno code with *what saying what failed; for CN_WK_LIST_STAT, out->e[*at] is the
 * entry whose lstat failed and the caller frees *out, else *out is empty.
 * Sets no message: it runs on the helper thread too. */
int cn_wk_list_dir(int dirfd, size_t max, struct cn_wk_listing *out, enum cn_wk_list_fail *what,
		   size_t *at);

/* Frees what l owns and empties it. */
void cn_wk_listing_free(struct cn_wk_listing *l);

/* Helper threads that list directories ahead, and how many directories
 * beside the one entered the walk asks for: on a tree of small files the
 * lstats take as long as everything else the walker does, and one helper
 * fell behind it. */
#define CN_WK_PREFETCH_THREADS 2
#define CN_WK_PREFETCH_AHEAD 2

/* Starts the helper threads that list directories ahead. Returns 0 or a
 * negative code (no message: the walk then lists every directory itself). */
int cn_wk_prefetch_new(struct cn_wk_prefetch **out);

/* Stops the helpers and frees every listing not taken. NULL is accepted. */
void cn_wk_prefetch_free(struct cn_wk_prefetch *p);

/* Asks for the listing of directory name in parent (borrowed: the helper
 * works on a duplicate), whose lstat is *st, at depth (of the walk) and
 * idx (in its parent's listing), which order the requests. Best effort:
 * nothing happens when p is NULL, it was asked for already, all slots are
 * in use or the duplicate fails. */
void cn_wk_prefetch_submit(struct cn_wk_prefetch *p, int parent, const char *name,
			   const struct stat *st, size_t depth, size_t idx);

/* The listing of the directory with st's device and inode, if it was
 * asked for: waits while the helper makes it, then returns 1 with *out
 * the caller's. Returns 0 when it was not asked for, not started yet
 * (the request is dropped), failed (not that directory any more, say) or
 * is older than a second: the caller lists it itself. */
int cn_wk_prefetch_take(struct cn_wk_prefetch *p, const struct stat *st,
			struct cn_wk_listing *out);

/* Waits until the helpers have made every listing asked for (tests). */
void cn_wk_prefetch_wait_idle(struct cn_wk_prefetch *p);

/* Drops the request for st's directory, if any (the walk did not descend
 * into it after all). */
void cn_wk_prefetch_drop(struct cn_wk_prefetch *p, const struct stat *st);

#endif
