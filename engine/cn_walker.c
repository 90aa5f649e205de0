/* cn_walker — the tree walk of proxmox-backup-client's Archiver
 * (pbs-client/src/pxar/create.rs, 3.2.4), driving cn_pxar_encoder and
 * cn_catalog_writer. See cn_walker.h for what is reproduced.
 *
 * This file answers "what is in the tree and how is each entry encoded":
 * paths, opening entries (type checks), reading .pxarexclude files,
 * which entries of a directory are archived, encoding entries, and the
 * entry point. The patterns in force are kept in cn_walker_patterns.c,
 * metadata reading is in cn_walker_meta.c, the hardlink table
 * in cn_walker_hardlink.c, the look-ahead cache of metadata change
 * detection in cn_walker_lookahead.c, making directory listings (and the
 * threads that make them ahead) in cn_walker_list.c; cn_walker_impl.h
 * holds what they share.
 *
 * Memory: the sorted listing (name + struct stat) of each directory on
 * the current path and, made ahead, of up to two directories beside each
 * (of at most 8,192 entries; cn_walker_list.c), the goodbye items of the
 * open directories, the
 * hardlink table (dev, ino, path, offset of multiply-linked files), the
 * patterns in force and one copy buffer. */
#include "engine/cn_walker_impl.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <linux/openat2.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <xxhash.h>

#include "common/cn_error.h"
#include "common/cn_log.h"
#include "common/cn_util.h"
#include "pxar/cn_pattern.h"
#include "pxar/cn_pxar_encoder.h"

/* File data is read in pieces that stay in the CPU's L2 cache for the
 * chunker and the copy into the chunk that follow. Measured (2 GiB bench
 * corpus, re-run into a store that has every chunk, binaries alternating,
 * 3 runs each): 1 MiB reads 3.27-3.37 s wall, 1.41-1.48 s system time;
 * 512 KiB 2.30-2.74 s; 256 KiB 2.39-2.71 s, 0.33-0.58 s system; 128 KiB
 * 2.46-2.72 s; 64 KiB 2.63-2.73 s. */
#define COPY_BUF_SIZE (256u << 10)

/* ---- path ---- */

int cn_wk_path_set(struct walker *w, size_t base_len, const char *name, size_t name_len)
{
	size_t need = base_len + 1 + name_len + 1;
	if (need > w->path_cap) {
		size_t nc = w->path_cap ? w->path_cap : 256;
		while (nc < need)
			nc *= 2;
		char *p = realloc(w->path, nc);
		if (!p)
			return -ENOMEM;
		w->path = p;
		w->path_cap = nc;
	}
	size_t l = base_len;
	if (l > 0)
		w->path[l++] = '/';
	memcpy(w->path + l, name, name_len);
	l += name_len;
	w->path[l] = 0;
	w->path_len = l;
	return 0;
}

static void path_truncate(struct walker *w, size_t len)
{
	w->path_len = len;
	if (w->path)
		w->path[len] = 0;
}

const char *cn_wk_cur_path(const struct walker *w)
{
	return w->path && w->path_len ? w->path : ".";
}

/* ---- opening ---- */

/* An entry that is no longer what was listed (or what open_entry needs)
 * is left out with a warning, counted like an unreadable one. */
static void warn_changed(struct walker *w, const char *name, int existed)
{
	if (existed)
		cn_log_warning("file changed type while reading, skipped: \"%s\"", cn_wk_cur_path(w));
	else
		cn_log_warning("ignoring %s in \"%s\": not a regular file", name, cn_wk_cur_path(w));
	w->stats->skipped++;
}

/* The lease-break fallback of open_entry: a file under a write lease
 * (Samba, NFS delegations) refuses an O_NONBLOCK open with EWOULDBLOCK.
 * The entry is pinned with O_PATH and checked to be a regular file, then
 * reopened through its /proc magic link, which names that inode and no
 * other, without O_NONBLOCK, so the open waits for the lease break as a
 * plain open would. Returns an fd, -ENOTSUP when it is no longer a
 * regular file, or -errno. */
/* open_at, where parent CN_WK_BENEATH_ROOT opens name, a path relative
 * to the root, without following a symlink on the way or leaving the
 * root (openat2's RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS): a directory
 * replaced by a symlink since it was walked is not followed. */
static int open_from(const struct walker *w, int parent, const char *name, int flags)
{
	if (parent != CN_WK_BENEATH_ROOT)
		return openat(parent, name, flags);
	struct open_how how = { .flags = (uint64_t)flags,
				.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS };
	long r = syscall(SYS_openat2, w->root_fd, name, &how, sizeof(how));
	return (int)r;
}

static int reopen_regular(const struct walker *w, int parent, const char *name, int flags)
{
	int pfd = open_from(w, parent, name, O_PATH | O_CLOEXEC | (flags & O_NOFOLLOW));
	if (pfd < 0)
		return -errno;
	struct stat st;
	char proc_path[64];
	int r = -ENOTSUP;
	if (fstat(pfd, &st) < 0) {
		r = -errno;
	} else if (S_ISREG(st.st_mode)) {
		snprintf(proc_path, sizeof(proc_path), "/proc/self/fd/%d", pfd);
		r = open(proc_path, flags & ~(O_NONBLOCK | O_NOFOLLOW));
		if (r < 0)
			r = -errno;
	}
	close(pfd);
	return r;
}

/* openat() as upstream's open_file: O_NOATIME when permitted; ENOENT
 * (vanished) and EACCES are warned about and give *fd = -1. The open does
 * not follow a symlink where flags say O_NOFOLLOW and never blocks (on a
 * FIFO put where a file was listed, say): O_NONBLOCK unless O_PATH, taken
 * off again for a regular file. What was opened must be of type (S_IFMT
 * bits): fstat tells, and *st gets that fstat, the metadata of the object
 * that will be read. An entry of another type (or one that can no longer
 * be opened because of its new type) gives a warning, a skipped entry and
 * *fd = -1. existed: the entry was listed (0 for .pxarexclude, which may
 * be absent). Returns 0 or a negative code with a message. */
static int open_entry(struct walker *w, int parent, const char *name, int flags, mode_t type,
		      int existed, int *fd, struct stat *st)
{
	int noatime = O_NOATIME;
	flags |= O_CLOEXEC | O_NOCTTY | (flags & O_PATH ? 0 : O_NONBLOCK);
	*fd = -1;
	for (;;) {
		int r = open_from(w, parent, name, flags | noatime);
		if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) && type == S_IFREG) {
			r = reopen_regular(w, parent, name, flags | noatime);
			if (r < 0)
				errno = r == -ENOTSUP ? ENXIO : -r;
		}
		if (r >= 0) {
			if (fstat(r, st) < 0) {
				int err = errno;
				close(r);
				return cn_error_sys(-err, "stat \"%s\"", cn_wk_cur_path(w));
			}
			if ((st->st_mode & S_IFMT) != type) {
				close(r);
				warn_changed(w, name, existed);
				return 0;
			}
			if ((flags & O_NONBLOCK) && type == S_IFREG &&
			    fcntl(r, F_SETFL, (flags | noatime) & ~O_NONBLOCK) < 0) {
				int err = errno;
				close(r);
				return cn_error_sys(-err, "fcntl \"%s\"", cn_wk_cur_path(w));
			}
			*fd = r;
			return 0;
		}
		if (errno == EPERM && noatime) {
			noatime = 0;
			continue;
		}
		if (errno == ENOENT) {
			if (existed) {
				cn_log_warning("file vanished while reading: \"%s\"", cn_wk_cur_path(w));
				w->stats->skipped++;
			}
			return 0;
		}
		if (errno == EACCES) {
			cn_log_warning("failed to open file: \"%s\": access denied", name);
			if (existed)
				w->stats->skipped++;
			return 0;
		}
		/* now a symlink (O_NOFOLLOW, or a loop), a socket, or no
		 * longer a directory */
		if (errno == ELOOP || errno == ENXIO || errno == ENOTDIR || errno == EISDIR) {
			warn_changed(w, name, existed);
			return 0;
		}
		return cn_error_sys(-errno, "open \"%s\"", cn_wk_cur_path(w));
	}
}

int cn_wk_open_unopened(struct walker *w, struct cache_ent *c, int *skip)
{
	struct stat st;
	int fd, rc = open_entry(w, CN_WK_BENEATH_ROOT, c->path, O_RDONLY | O_NOFOLLOW, S_IFREG, 1, &fd, &st);
	*skip = 0;
	if (rc < 0)
		return rc;
	if (fd < 0) {
		*skip = 1;
		return 0;
	}
	if (st.st_dev != c->st.st_dev || st.st_ino != c->st.st_ino ||
	    st.st_ctim.tv_sec != c->st.st_ctim.tv_sec || st.st_ctim.tv_nsec != c->st.st_ctim.tv_nsec) {
		/* changed since listed: its metadata as the walk reads it, on
		 * its own file system */
		struct cn_pxar_metadata m;
		int64_t magic = w->fs_magic;
		uint64_t flags = w->fs_flags;
		w->fs_magic = c->fs_magic;
		w->fs_flags = c->fs_flags;
		rc = cn_wk_get_metadata(w, fd, &st, w->feature_flags & w->fs_flags, &m);
		w->fs_magic = magic;
		w->fs_flags = flags;
		if (rc < 0) {
			close(fd);
			return rc;
		}
		cn_pxar_metadata_clear(&c->m);
		c->m = m;
	}
	c->st = st;
	c->fd = fd;
	return 0;
}

/* ---- .pxarexclude ---- */

static int read_pxar_excludes(struct walker *w, int dirfd)
{
	int fd;
	struct stat st;
	int rc = open_entry(w, dirfd, ".pxarexclude", O_RDONLY, S_IFREG, 0, &fd, &st);
	if (rc < 0 || fd < 0)
		return rc;
	FILE *f = fdopen(fd, "r");
	if (!f) {
		close(fd);
		return -ENOMEM;
	}
	size_t old = w->n_patterns;
	char *line = NULL;
	size_t cap = 0;
	ssize_t n;
	errno = 0;
	while ((n = getdelim(&line, &cap, '\n', f)) >= 0) {
		size_t l = (size_t)n;
		if (l > 0 && line[l - 1] == '\n')
			l--;
		if ((rc = cn_wk_pxarexclude_line(w, line, l)) < 0)
			break;
	}
	if (rc == 0 && ferror(f)) {
		cn_log_warning("ignoring .pxarexclude after read error in \"%s\"", cn_wk_cur_path(w));
		cn_wk_truncate_patterns(w, old);
	}
	free(line);
	fclose(f);
	return rc;
}

/* ---- directory listing (generate_directory_file_list) ---- */

/* The entries of directory dirfd to archive, sorted by name: its listing
 * (made ahead by a helper when it was asked for, see
 * cn_walker_list.c; dst is the directory's stat, NULL at the root) without
 * what the patterns exclude, what vanished since readdir (warned about)
 * and, at the root, .pxarexclude-cli. */
static int list_directory(struct walker *w, int dirfd, const struct stat *dst, int is_root,
			  struct cn_wk_listing *out)
{
	struct cn_wk_listing ls;
	size_t base = w->path_len;
	int rc = 0;
	if (!dst || !cn_wk_prefetch_take(w->pf, dst, &ls)) {
		enum cn_wk_list_fail what;
		size_t at = 0;
		if ((rc = cn_wk_list_dir(dirfd, 0, &ls, &what, &at)) < 0) {
			if (what == CN_WK_LIST_STAT) {
				if (cn_wk_path_set(w, base, ls.e[at].name, ls.e[at].name_len) == 0)
					cn_error_sys(rc, "stat failed on \"%s\"", cn_wk_cur_path(w));
				path_truncate(w, base);
				cn_wk_listing_free(&ls);
				return rc;
			}
			if (what == CN_WK_LIST_MEM)
				return cn_error_set(rc, "out of memory listing \"%s\"", cn_wk_cur_path(w));
			return cn_error_sys(rc, "%s \"%s\"", what == CN_WK_LIST_READ ? "readdir" : "opendir",
					    cn_wk_cur_path(w));
		}
	}

	struct list_entry *l = ls.e;
	size_t n = 0;
	struct cn_buf match = { 0 };
	size_t i;
	for (i = 0; i < ls.n; i++) {
		struct list_entry *e = &l[i];
		const char *name = e->name;
		size_t nl = e->name_len;
		int keep = 0;
		if (is_root && !strcmp(name, ".pxarexclude-cli")) {
			/* left out */
		} else if (!e->st.st_mode) {
			if ((rc = cn_wk_path_set(w, base, name, nl)) < 0)
				break;
			cn_log_warning("file vanished while reading: \"%s\"", cn_wk_cur_path(w));
			path_truncate(w, base);
			w->stats->skipped++;
		} else {
			/* match path: "/" + path relative to the root */
			match.len = 0;
			if (cn_buf_append(&match, "/", 1) < 0 || cn_buf_append(&match, w->path, base) < 0 ||
			    (base && cn_buf_append(&match, "/", 1) < 0) ||
			    cn_buf_append(&match, name, nl) < 0) {
				rc = -ENOMEM;
				break;
			}
			if (cn_pattern_list_match(w->patterns, w->n_patterns, (const char *)match.data,
						  match.len, e->st.st_mode) == CN_MATCH_EXCLUDE) {
				w->stats->excluded++;
			} else if (++w->entry_counter > w->entry_limit) {
				rc = cn_error_set(-EOVERFLOW,
						  "exceeded allowed number of file entries (> %zu)",
						  w->entry_limit);
				break;
			} else {
				keep = 1;
			}
		}
		if (keep) {
			l[n++] = *e;
		} else {
			free(e->name);
		}
	}
	/* on an error, the entries from i on were neither kept nor freed */
	for (; i < ls.n; i++)
		free(l[i].name);
	cn_buf_free(&match);
	path_truncate(w, base);
	ls.n = n;
	if (rc < 0) {
		cn_wk_listing_free(&ls);
		return rc;
	}
	*out = ls;
	return 0;
}

/* ---- entries ---- */

static int archive_dir_contents(struct walker *w, int dirfd, const struct stat *dst, int is_root);

static int add_regular_file(struct walker *w, int fd, const struct list_entry *ent,
			    const struct cn_pxar_metadata *m, uint64_t *link_offset)
{
	uint64_t size = (uint64_t)ent->st.st_size, remaining = size;
	int changed = 0;
	int rc = cn_pxar_encoder_begin_file(w->enc, m, ent->name, ent->name_len, size, link_offset);
	if (rc < 0)
		return rc;
	if (w->xxh)
		XXH3_128bits_reset(w->xxh);
	const struct cn_pxar_create_opts *o = w->opts;
	uint64_t *out_size = cn_pxar_encoder_is_split(w->enc) ? &w->stats->payload_size
							      : &w->stats->archive_size;
	while (remaining != 0) {
		/* read into the output's buffer when it offers one (no copy) */
		uint8_t *buf = w->buf;
		size_t want = COPY_BUF_SIZE;
		if (o->data_reserve) {
			size_t avail;
			if ((rc = cn_pxar_encoder_direct_begin(w->enc)) < 0 ||
			    (rc = o->data_reserve(o->data_ctx, &buf, &avail)) < 0)
				return rc;
			if (want > avail)
				want = avail;
		}
		ssize_t got = read(fd, buf, want);
		if (got == 0)
			break;
		if (got < 0) {
			if (errno == EINTR)
				continue;
			return cn_error_sys(-errno, "read \"%s\"", cn_wk_cur_path(w));
		}
		w->stats->bytes_read += (uint64_t)got;
		if ((uint64_t)got > remaining) {
			cn_log_warning("file size increased while reading: \"%s\", file will be truncated!",
				       cn_wk_cur_path(w));
			changed = 1;
			got = (ssize_t)remaining;
		}
		/* hashed first: once committed, the bytes belong to the output */
		if (w->xxh)
			XXH3_128bits_update(w->xxh, buf, (size_t)got);
		if (!o->data_reserve)
			rc = cn_pxar_encoder_write(w->enc, buf, (size_t)got);
		else if ((rc = o->data_commit(o->data_ctx, (size_t)got)) == 0)
			rc = cn_pxar_encoder_direct_done(w->enc, (size_t)got);
		if (rc < 0)
			return rc;
		if (o->data_reserve)
			*out_size += (uint64_t)got;
		remaining -= (uint64_t)got;
	}
	if (remaining > 0) {
		cn_log_warning("file size shrunk while reading: \"%s\", file will be padded with zeros!",
			       cn_wk_cur_path(w));
		changed = 1;
		memset(w->buf, 0, remaining < COPY_BUF_SIZE ? remaining : COPY_BUF_SIZE);
		while (remaining) {
			size_t fill = remaining < COPY_BUF_SIZE ? (size_t)remaining : COPY_BUF_SIZE;
			if ((rc = cn_pxar_encoder_write(w->enc, w->buf, fill)) < 0)
				return rc;
			remaining -= fill;
		}
	}
	if ((rc = cn_pxar_encoder_end_file(w->enc)) < 0)
		return rc;
	/* a change that did not show in the amount read (same size, new
	 * mtime, or growth after the last read) */
	struct stat after;
	if (!changed && fstat(fd, &after) == 0 &&
	    (after.st_size != ent->st.st_size || after.st_mtim.tv_sec != ent->st.st_mtim.tv_sec ||
	     after.st_mtim.tv_nsec != ent->st.st_mtim.tv_nsec)) {
		cn_log_warning("file changed while reading: \"%s\"", cn_wk_cur_path(w));
		changed = 1;
	}
	if (w->xxh)
		XXH128_canonicalFromHash((XXH128_canonical_t *)w->content_hash, XXH3_128bits_digest(w->xxh));
	w->stats->changed += (uint64_t)changed;
	w->stats->files++;
	return 0;
}

/* Begin (or, while the look-ahead cache collects, queue the begin of) a
 * directory, walk its contents, and end (or queue the end of) it. */
int cn_wk_add_directory(struct walker *w, int fd, const struct list_entry *ent,
			struct cn_pxar_metadata *m)
{
	int rc;
	if (w->la.active)
		rc = cn_wk_la_push(w, CE_DIR, -1, ent, m, NULL, 0);
	else if ((rc = !w->cat ? 0 : cn_catalog_writer_start_directory(w->cat, ent->name, ent->name_len)) == 0)
		rc = cn_pxar_encoder_begin_dir(w->enc, m, ent->name, ent->name_len);
	if (rc < 0)
		return rc;
	int64_t old_magic = w->fs_magic;
	uint64_t old_flags = w->fs_flags;
	dev_t old_dev = w->cur_dev;
	int skip = 0;

	if (old_dev != ent->st.st_dev) {
		struct statfs sfs;
		if (fstatfs(fd, &sfs) < 0)
			return cn_error_sys(-errno, "statfs \"%s\"", cn_wk_cur_path(w));
		w->fs_magic = (int64_t)sfs.f_type;
		w->fs_flags = cn_pxar_flags_from_magic(w->fs_magic);
		w->cur_dev = ent->st.st_dev;
		if (cn_pxar_is_virtual_fs(w->fs_magic))
			skip = 1;
		else if (w->use_devset)
			skip = ent->st.st_dev != w->root_dev;
	}
	if (skip) {
		cn_log_info("skipping mount point: \"%s\"", cn_wk_cur_path(w));
		w->stats->mountpoints++;
	} else {
		rc = archive_dir_contents(w, fd, &ent->st, 0);
	}
	w->fs_magic = old_magic;
	w->fs_flags = old_flags;
	w->cur_dev = old_dev;
	if (rc < 0)
		return rc;
	if (w->la.active)
		return cn_wk_la_push(w, CE_DIR_END, -1, NULL, NULL, 0, 0);
	w->stats->dirs++;
	if ((rc = cn_pxar_encoder_end_dir(w->enc)) == 0 && w->cat)
		rc = cn_catalog_writer_end_directory(w->cat);
	return rc;
}

static int add_symlink(struct walker *w, int fd, const struct list_entry *ent,
		       const struct cn_pxar_metadata *m)
{
	size_t cap = 4096;
	for (;;) {
		char *b = malloc(cap);
		if (!b)
			return -ENOMEM;
		ssize_t n = readlinkat(fd, "", b, cap);
		if (n < 0) {
			free(b);
			return cn_error_sys(-errno, "readlink \"%s\"", cn_wk_cur_path(w));
		}
		if ((size_t)n < cap) {
			int rc = cn_pxar_encoder_add_symlink(w->enc, m, ent->name, ent->name_len, b, (size_t)n);
			free(b);
			if (rc == 0)
				w->stats->symlinks++;
			return rc;
		}
		free(b);
		cap *= 2;
	}
}

/* Encodes one entry now (create.rs add_entry_to_archive); a regular file
 * with a reuse match references the previous payload at payload_offset
 * instead of being read. Takes neither fd nor m. */
int cn_wk_encode_entry(struct walker *w, int fd, const struct list_entry *ent,
		       struct cn_pxar_metadata *mp, const struct cn_pxar_reuse_match *reuse,
		       uint64_t payload_offset)
{
	uint32_t t = ent->st.st_mode & S_IFMT;
	int rc = 0;
	struct cn_catalog_writer *cat = w->cat;
#define m (*mp)
	switch (t) {
	case S_IFREG: {
		uint64_t dev = ent->st.st_dev, ino = ent->st.st_ino, off;
		if (ent->st.st_nlink > 1) {
			struct hl_slot *s = cn_wk_hl_find(w, dev, ino);
			if (s) {
				if (cat)
					rc = cn_catalog_writer_add_entry(cat, CN_CATALOG_HARDLINK, ent->name,
									 ent->name_len);
				if (rc == 0)
					rc = cn_pxar_encoder_add_hardlink(w->enc, ent->name, ent->name_len,
									  s->path, strlen(s->path), s->offset);
				if (rc == 0)
					w->stats->hardlinks++;
				break;
			}
		}
		if (cat)
			rc = cn_catalog_writer_add_file(cat, ent->name, ent->name_len,
							(uint64_t)ent->st.st_size, ent->st.st_mtim.tv_sec);
		if (rc == 0 && w->opts->payload_boundary &&
		    (rc = cn_pxar_encoder_flush_payload(w->enc)) == 0)
			rc = w->opts->payload_boundary(w->opts->payload_ctx,
						       cn_pxar_encoder_payload_position(w->enc));
		uint64_t ppos = cn_pxar_encoder_payload_position(w->enc), changed = w->stats->changed;
		uint64_t psize = (uint64_t)ent->st.st_size + CN_PXAR_HEADER_SIZE;
		if (rc == 0 && reuse) {
			rc = cn_pxar_encoder_add_payload_ref(w->enc, &m, ent->name, ent->name_len,
							     (uint64_t)ent->st.st_size, payload_offset, &off);
			ppos = payload_offset;
			w->stats->files_reused++;
			w->stats->reused_bytes += psize;
			w->stats->files++;
		} else if (rc == 0) {
			rc = add_regular_file(w, fd, ent, &m, &off);
			if (w->reuse) {
				w->stats->files_reencoded++;
				w->stats->reencoded_bytes += psize;
			}
		}
		if (rc == 0 && ent->st.st_nlink > 1)
			rc = cn_wk_hl_insert(w, dev, ino, w->path, off);
		if (rc == 0 && w->reuse && w->reuse->record)
			rc = w->reuse->record(w->reuse->ctx, w->path, w->path_len, &ent->st, &m, ppos, reuse,
					      reuse ? NULL : w->content_hash, w->stats->changed != changed);
		break;
	}
	case S_IFDIR:
		rc = cn_wk_add_directory(w, fd, ent, &m);
		break;
	case S_IFSOCK:
	case S_IFIFO:
		if (cat)
			rc = cn_catalog_writer_add_entry(cat, t == S_IFIFO ? CN_CATALOG_FIFO : CN_CATALOG_SOCKET,
							 ent->name, ent->name_len);
		if (rc == 0)
			rc = cn_pxar_encoder_add_special(w->enc, &m, ent->name, ent->name_len);
		if (rc == 0)
			(*(t == S_IFIFO ? &w->stats->fifos : &w->stats->sockets))++;
		break;
	case S_IFLNK:
		if (cat)
			rc = cn_catalog_writer_add_entry(cat, CN_CATALOG_SYMLINK, ent->name, ent->name_len);
		if (rc == 0)
			rc = add_symlink(w, fd, ent, &m);
		break;
	case S_IFBLK:
	case S_IFCHR: {
		/* pxar Device::from_dev_t */
		uint64_t dev = ent->st.st_rdev;
		uint64_t major = ((dev >> 8) & 0x00000fffULL) | ((dev >> 32) & 0xfffff000ULL);
		uint64_t minor = (dev & 0xffULL) | ((dev >> 12) & 0xffffff00ULL);
		if (cat)
			rc = cn_catalog_writer_add_entry(cat, t == S_IFBLK ? CN_CATALOG_BLOCKDEV : CN_CATALOG_CHARDEV,
							 ent->name, ent->name_len);
		if (rc == 0)
			rc = cn_pxar_encoder_add_device(w->enc, &m, ent->name, ent->name_len, major, minor);
		if (rc == 0)
			w->stats->devices++;
		break;
	}
	default:
		rc = cn_error_set(-CN_E_FORMAT, "encountered unknown file type: 0x%x (0o%o) at \"%s\"", t, t,
				  cn_wk_cur_path(w));
	}
#undef m
	return rc;
}



static int add_entry(struct walker *w, int parent, const struct list_entry *listed)
{
	uint32_t t = listed->st.st_mode & S_IFMT;
	int fd, rc;
	int oflags = O_RDONLY | O_NOFOLLOW | ((t == S_IFREG || t == S_IFDIR) ? 0 : O_PATH);
	/* archived as opened: the metadata of the object whose content is
	 * read (a file replaced by rename since the listing is the new one) */
	struct list_entry cur = *listed;
	const struct list_entry *ent = &cur;
	struct cn_pxar_metadata m;

	/* metadata mode: a file unchanged since the previous snapshot by its
	 * listing's stat (inode, ctime, size, mtime) and without metadata
	 * beyond stat then is neither opened nor has its metadata read */
	if (t == S_IFREG && listed->st.st_nlink == 1 && w->reuse && w->reuse->lookup_unopened &&
	    cn_wk_ctime_covers_metadata(w)) {
		struct cn_pxar_reuse_match match;
		memset(&match, 0, sizeof(match));
		cn_wk_stat_metadata(&listed->st, &m);
		rc = w->reuse->lookup_unopened(w->reuse->ctx, w->path, w->path_len, &listed->st, &m,
					       &match);
		if (rc < 0)
			return rc;
		if (rc == 1)
			return cn_wk_add_entry_reuse(w, -1, ent, &m, &match);
	}
	if ((rc = open_entry(w, parent, ent->name, oflags, t, 1, &fd, &cur.st)) < 0 || fd < 0)
		return rc;

	if ((rc = cn_wk_get_metadata(w, fd, &ent->st, w->feature_flags & w->fs_flags, &m)) < 0) {
		close(fd);
		return rc;
	}
	if (w->reuse)
		return cn_wk_add_entry_reuse(w, fd, ent, &m, NULL);
	rc = cn_wk_encode_entry(w, fd, ent, &m, NULL, 0);
	cn_pxar_metadata_clear(&m);
	close(fd);
	return rc;
}

/* The index of the first directory among l[from..n) on the file system
 * being walked, or n. */
static size_t next_dir(const struct walker *w, const struct list_entry *l, size_t from, size_t n)
{
	while (from < n && !(S_ISDIR(l[from].st.st_mode) && l[from].st.st_dev == w->cur_dev))
		from++;
	return from;
}

/* Asks the helpers for the next CN_WK_PREFETCH_AHEAD directories of
 * l[from..n), listed in dirfd (those asked for already stay as they are).
 * Mount points are left to the walk, which may not descend into them: a
 * helper must never wait on a file system the backup does not read (a
 * stalled network mount, say). */
static void ask_ahead(struct walker *w, int dirfd, const struct list_entry *l, size_t from,
		      size_t n)
{
	for (size_t k = 0; k < CN_WK_PREFETCH_AHEAD && (from = next_dir(w, l, from, n)) < n; k++, from++)
		cn_wk_prefetch_submit(w->pf, dirfd, l[from].name, &l[from].st, w->depth, from);
}

static int archive_dir_contents(struct walker *w, int dirfd, const struct stat *dst, int is_root)
{
	size_t entry_counter = w->entry_counter;
	size_t old_patterns = w->n_patterns;
	size_t base = w->path_len;
	struct cn_wk_listing ls = { 0 };
	int rc;

	if ((rc = read_pxar_excludes(w, dirfd)) < 0 ||
	    (rc = list_directory(w, dirfd, dst, is_root, &ls)) < 0)
		goto out;
	struct list_entry *l = ls.e;
	size_t n = ls.n;
	/* the helpers list the first subdirectories now and, as the walk
	 * enters each, those after it (cn_walker_list.c) */
	w->depth++;
	ask_ahead(w, dirfd, l, 0, n);
	for (size_t i = 0; i < n && rc == 0; i++) {
		if ((rc = cn_wk_path_set(w, base, l[i].name, l[i].name_len)) < 0)
			break;
		int is_dir = S_ISDIR(l[i].st.st_mode);
		if (is_dir)
			ask_ahead(w, dirfd, l, i + 1, n);
		rc = add_entry(w, dirfd, &l[i]);
		if (rc < 0)
			cn_error_prefix(rc, "error at \"%s\"", cn_wk_cur_path(w));
		/* not descended into after all (replaced, a mount point) */
		if (is_dir)
			cn_wk_prefetch_drop(w->pf, &l[i].st);
		path_truncate(w, base);
		free(l[i].name);
		l[i].name = NULL;
	}
	/* the generated file goes after all sorted entries of the root; split
	 * archives carry the patterns in the prelude instead (create.rs) */
	if (rc == 0 && is_root && old_patterns > 0 && !cn_pxar_encoder_is_split(w->enc))
		rc = cn_wk_encode_pxarexclude_cli(w, old_patterns);
	w->depth--;
out:
	/* an error leaves requests for directories not entered */
	for (size_t i = 0; i < ls.n; i++)
		if (ls.e[i].name && S_ISDIR(ls.e[i].st.st_mode))
			cn_wk_prefetch_drop(w->pf, &ls.e[i].st);
	cn_wk_listing_free(&ls);
	path_truncate(w, base);
	w->entry_counter = entry_counter;
	cn_wk_truncate_patterns(w, old_patterns);
	return rc;
}

/* ---- entry point ---- */

static int counting_out(void *ctx, const uint8_t *data, size_t len);

struct counted_out {
	cn_write_fn out;
	void *ctx;
	uint64_t *total;
};

static int counting_out(void *ctx, const uint8_t *data, size_t len)
{
	struct counted_out *c = ctx;
	*c->total += len;
	return c->out(c->ctx, data, len);
}

int cn_pxar_create(const char *root_path, const struct cn_pxar_create_opts *opts,
		   cn_write_fn out, void *out_ctx, struct cn_catalog_writer *catalog,
		   struct cn_pxar_create_stats *stats)
{
	static const struct cn_pxar_create_opts defaults = { 0 };
	struct cn_pxar_create_stats local_stats;
	struct walker w;
	struct counted_out co, pco;
	int fd = -1, rc;

	if (!opts)
		opts = &defaults;
	if (!stats)
		stats = &local_stats;
	memset(stats, 0, sizeof(*stats));
	memset(&w, 0, sizeof(w));
	w.opts = opts;
	w.stats = stats;
	w.cat = catalog;
	w.feature_flags = opts->feature_flags ? opts->feature_flags : CN_PXAR_FLAGS_DEFAULT;
	w.entry_limit = opts->entries_max ? opts->entries_max : CN_PXAR_ENCODER_MAX_ENTRIES;
	co = (struct counted_out){ out, out_ctx, &stats->archive_size };
	pco = (struct counted_out){ opts->payload_out, opts->payload_ctx, &stats->payload_size };

	if (opts->reuse && !opts->payload_out)
		return cn_error_set(-EINVAL, "metadata change detection needs a split archive");
	if (!opts->data_reserve != !opts->data_commit)
		return cn_error_set(-EINVAL, "direct file data needs both data_reserve and data_commit");
	w.reuse = opts->reuse;
	w.la.max = opts->reuse && opts->reuse->max_cache_entries ? opts->reuse->max_cache_entries : 512;
	if (!(w.buf = malloc(COPY_BUF_SIZE)))
		return -ENOMEM;
	if (w.reuse && !(w.xxh = XXH3_createState())) {
		free(w.buf);
		return -ENOMEM;
	}
	for (int noatime = O_NOATIME;;) {
		fd = open(root_path, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOCTTY | noatime);
		if (fd >= 0 || errno != EPERM || !noatime)
			break;
		noatime = 0;
	}
	if (fd < 0) {
		rc = cn_error_sys(-errno, "open \"%s\"", root_path);
		goto out;
	}
	struct statfs sfs;
	struct stat st;
	if (fstatfs(fd, &sfs) < 0 || fstat(fd, &st) < 0) {
		rc = cn_error_sys(-errno, "stat \"%s\"", root_path);
		goto out;
	}
	w.fs_magic = (int64_t)sfs.f_type;
	if (cn_pxar_is_virtual_fs(w.fs_magic)) {
		rc = cn_error_set(-EINVAL, "refusing to backup a virtual file system");
		goto out;
	}
	w.fs_flags = cn_pxar_flags_from_magic(w.fs_magic);
	w.root_fd = fd;
	if (w.reuse) {
		/* the walk may open cached files by path (cn_wk_open_unopened);
		 * without openat2 (before Linux 5.6) every file is opened */
		struct open_how how = { .flags = O_PATH | O_CLOEXEC, .resolve = RESOLVE_BENEATH };
		long r = syscall(SYS_openat2, fd, ".", &how, sizeof(how));
		w.beneath_ok = r >= 0;
		if (r >= 0)
			close((int)r);
	}
	w.cur_dev = st.st_dev;
	w.root_dev = st.st_dev;
	w.use_devset = !opts->all_file_systems;
	if (cn_wk_prefetch_new(&w.pf) < 0)
		w.pf = NULL; /* every directory is listed by this thread */

	struct cn_pxar_metadata m;
	if ((rc = cn_wk_get_metadata(&w, fd, &st, w.feature_flags & w.fs_flags, &m)) < 0) {
		cn_error_prefix(rc, "failed to get metadata for source directory");
		goto out;
	}
	for (size_t i = 0; i < opts->n_excludes; i++) {
		struct cn_pattern *p;
		const char *e = opts->excludes[i];
		if ((rc = cn_pattern_parse(e, strlen(e), CN_MATCH_EXCLUDE, &p)) < 0) {
			cn_error_prefix(rc, "invalid exclude pattern entry");
			goto out;
		}
		if ((rc = cn_wk_push_pattern(&w, p)) < 0)
			goto out;
	}
	if (opts->skip_lost_found) {
		struct cn_pattern *p;
		if ((rc = cn_pattern_parse("lost+found", 10, CN_MATCH_EXCLUDE, &p)) < 0 ||
		    (rc = cn_wk_push_pattern(&w, p)) < 0)
			goto out;
	}
	if (opts->payload_out) {
		/* create.rs: a split archive's prelude is {"exclude-patterns":
		 * ...} (serde_json, compact) when there are any patterns */
		struct cn_buf pre = { 0 };
		if (w.n_patterns)
			rc = cn_wk_prelude_json(&w, &pre);
		if (rc == 0)
			rc = cn_pxar_encoder_new_split(counting_out, &co, counting_out, &pco,
						       w.n_patterns ? pre.data : NULL, pre.len, &m, &w.enc);
		cn_buf_free(&pre);
	} else {
		rc = cn_pxar_encoder_new(counting_out, &co, &m, &w.enc);
	}
	cn_pxar_metadata_clear(&m);
	if (rc < 0)
		goto out;
	if (catalog && opts->archive_name &&
	    (rc = cn_catalog_writer_start_directory(catalog, opts->archive_name, strlen(opts->archive_name))) < 0)
		goto out;
	if ((rc = archive_dir_contents(&w, fd, NULL, 1)) < 0)
		goto out;
	if (w.reuse && (rc = cn_wk_la_flush(&w, 0)) < 0)
		goto out;
	if ((rc = cn_pxar_encoder_finish(w.enc)) < 0)
		goto out;
	stats->dirs++;
	if (catalog && opts->archive_name)
		rc = cn_catalog_writer_end_directory(catalog);
out:
	cn_wk_prefetch_free(w.pf);
	if (fd >= 0)
		close(fd);
	cn_wk_truncate_patterns(&w, 0);
	free(w.patterns);
	for (size_t i = 0; i < w.hl_cap; i++)
		free(w.hl[i].path);
	free(w.hl);
	cn_wk_la_free_entries(w.la.e, 0, w.la.n);
	free(w.la.e);
	free(w.path);
	XXH3_freeState(w.xxh);
	free(w.buf);
	cn_pxar_encoder_free(w.enc);
	return rc;
}
