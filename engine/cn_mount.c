#define FUSE_USE_VERSION 34
#include "engine/cn_mount.h"

#include <errno.h>
#include <fuse_lowlevel.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sysmacros.h>
#include <time.h>

#include "common/cn_error.h"
#include "common/cn_log.h"
#include "common/cn_util.h"
#include "engine/cn_chunk_reader.h"
#include "engine/cn_mount_nodes.h"
#include "engine/cn_restore.h"
#include "pxar/cn_pxar_decoder.h"
#include "pxar/cn_pxar_dir.h"

/* A snapshot never changes: the kernel may cache names and attributes
 * for as long as it likes. */
#define CACHE_TIMEOUT 86400.0
/* Views lent to one read reply at most (each pins a chunk cache slot). */
#define MAX_VIEWS 4
/* After a transport error the snapshot is reopened on the source (a new
 * PBS reader session) at most this often; in between requests fail fast. */
#define REOPEN_INTERVAL 5.0
/* The kernel's read-ahead for the mount (its bdi's read_ahead_kb), set
 * when the kernel proposes less: FUSE caps its READ requests at the
 * read-ahead window, 128 KiB by default, and each request is a round
 * trip through this process. 1 MiB is the largest request FUSE sends
 * (max_pages 256). Memory: the kernel's page cache, not ours. */
#define READAHEAD_KB 1024u


struct cn_mount {
	struct cn_source *src;
	struct cn_snapshot_id id;
	double last_reopen;
	struct cn_archive_files files;
	struct cn_manifest *manifest;
	struct cn_index *idx, *pidx;
	struct cn_chunk_reader *cr, *pcr;
	struct cn_pxar_input in, pin;
	int split;
	struct cn_pxar_accessor *acc;
	struct cn_mnode_table *nodes;
	uint8_t *buf;                 /* copy path of read */
	size_t buf_cap;
	int allow_other, debug;
	struct fuse_session *se;
	char *where;                  /* the mountpoint's real path */
	int no_open, no_opendir;      /* the kernel opens without asking us */
	int ra_pending;               /* INIT done, read-ahead not yet set */
};

/* ---- entries ------------------------------------------------------------ */

/* Keeps the attributes of entry e in n. */
static void set_attrs(struct cn_mnode *n, const struct cn_pxar_entry *e)
{
	n->mode = (uint32_t)e->mode;
	n->uid = e->uid;
	n->gid = e->gid;
	if (e->kind == CN_PXAR_KIND_FILE)
		n->size = e->file_size;
	else if (e->kind == CN_PXAR_KIND_SYMLINK)
		n->size = e->link_len;
	else if (e->kind == CN_PXAR_KIND_DEVICE) {
		n->dev_major = (uint32_t)e->dev_major;
		n->dev_minor = (uint32_t)e->dev_minor;
	}
	n->mtime_sec = e->mtime_sec;
	n->mtime_nsec = (uint32_t)e->mtime_nsec;
}

/* The attributes of n as the kernel gets them. */
static void node_stat(const struct cn_mnode *n, struct stat *st)
{
	memset(st, 0, sizeof(*st));
	st->st_ino = n->ino;
	st->st_mode = (mode_t)n->mode;
	st->st_nlink = 1;
	st->st_uid = n->uid;
	st->st_gid = n->gid;
	st->st_size = (off_t)n->size;
	if (S_ISCHR(n->mode) || S_ISBLK(n->mode))
		st->st_rdev = makedev(n->dev_major, n->dev_minor);
	st->st_blksize = 128 * 1024;
	st->st_blocks = (st->st_size + 511) / 512;
	st->st_mtim.tv_sec = n->mtime_sec;
	st->st_mtim.tv_nsec = n->mtime_nsec;
	st->st_atim = st->st_ctim = st->st_mtim;
}

/* The node of the entry at r (a child of parent called name), made and
 * entered in the table if new. Hardlinks resolve to their target. */
static int node_make(struct cn_mount *m, const struct cn_pxar_range *r, uint64_t parent,
		     const char *name, struct cn_mnode **out)
{
	struct cn_mnode *n = cn_mnode_get(m->nodes, r->entry_offset + 1);
	if (n) {
		*out = n;
		return 0;
	}
	const struct cn_pxar_entry *e;
	struct cn_pxar_range rr = *r;
	int rc = cn_pxar_accessor_entry(m->acc, r, name, &e);
	if (rc == 0 && e->kind == CN_PXAR_KIND_HARDLINK) {
		rc = cn_pxar_follow_hardlink(m->acc, e, &rr);
		if (rc == 0 && (n = cn_mnode_get(m->nodes, rr.entry_offset + 1))) {
			*out = n;
			return 0;
		}
		if (rc == 0)
			rc = cn_pxar_accessor_entry(m->acc, &rr, name, &e);
	}
	if (rc < 0)
		return rc;
	if (!(n = cn_mnode_new(m->nodes, name)))
		return cn_error_set(-ENOMEM, "out of memory");
	n->ino = rr.entry_offset + 1;
	n->parent = parent;
	n->range = rr;
	set_attrs(n, e);
	n->content = e->content_offset;
	n->in_payload = e->content_in_payload;
	if (cn_mnode_insert(m->nodes, n) < 0) {
		cn_mnode_discard(m->nodes, n);
		return cn_error_set(-ENOMEM, "out of memory");
	}
	*out = n;
	return 0;
}

static int reopen(struct cn_mount *m, int rc);

/* node_make, tried again after a reopen (see reopen). */
static int node_at(struct cn_mount *m, const struct cn_pxar_range *r, uint64_t parent,
		   const char *name, struct cn_mnode **out)
{
	int rc = node_make(m, r, parent, name, out);
	if (rc < 0 && reopen(m, rc))
		rc = node_make(m, r, parent, name, out);
	return rc;
}

/* A negative code as the errno a request fails with: format and data
 * errors are EIO. */
static int to_errno(int rc)
{
	if (rc == -ENOENT || rc == -ENOMEM || rc == -ENOTDIR || rc == -ERANGE || rc == -ENODATA)
		return -rc;
	return EIO;
}

static double now_sec(void)
{
	return (double)cn_monotonic_ns() / 1e9;
}

/* After a request failed with rc: when that is not damaged data (a
 * dropped connection, a timeout), reopens the snapshot on the source -
 * for a PBS a new reader session - at most every REOPEN_INTERVAL seconds.
 * 1 when the request should be tried once more. */
static int reopen(struct cn_mount *m, int rc)
{
	if (rc >= 0 || cn_error_is_corruption(rc) || rc == -ENOENT || rc == -ENOMEM ||
	    rc == -ENOTDIR || rc == -E2BIG || rc == -CN_E_PATH)
		return 0;
	double now = now_sec();
	if (m->last_reopen > 0 && now - m->last_reopen < REOPEN_INTERVAL)
		return 0;
	m->last_reopen = now;
	char msg[512];
	snprintf(msg, sizeof(msg), "%s", cn_error_message());
	/* a PBS reader session serves the chunks of the indexes it has sent */
	struct cn_index *idx = NULL;
	int r = m->src->ops->open(m->src, &m->id);
	if (r == 0)
		r = cn_restore_load_index(m->src, m->manifest, m->files.name, &idx);
	cn_index_free(idx);
	idx = NULL;
	if (r == 0 && m->split)
		r = cn_restore_load_index(m->src, m->manifest, m->files.pname, &idx);
	cn_index_free(idx);
	if (r < 0) {
		cn_log_error("cairn mount: reopening the snapshot on %s failed: %s", m->src->name,
			     cn_error_message());
		cn_error_set(rc, "%s", msg);
		return 0;
	}
	cn_log_warning("cairn mount: reopened the snapshot on %s after: %s", m->src->name, msg);
	return 1;
}

static int fail(struct cn_mount *m, fuse_req_t req, int rc, const char *what,
		const struct cn_mnode *n)
{
	(void)m;
	cn_log_error("cairn mount: %s '%s': %s", what, n ? n->name : "?",
		     *cn_error_message() ? cn_error_message() : cn_strerror(rc));
	return fuse_reply_err(req, to_errno(rc));
}

static int children(struct cn_mount *m, struct cn_mnode *dir)
{
	if (dir->children)
		return 0;
	if (!S_ISDIR(dir->mode))
		return cn_error_set(-ENOTDIR, "not a directory");
	int rc = cn_pxar_dir_read(&m->in, m->split, &dir->range, &dir->children);
	if (rc < 0 && reopen(m, rc))
		rc = cn_pxar_dir_read(&m->in, m->split, &dir->range, &dir->children);
	const char *why;
	size_t lost = rc < 0 ? 0 : cn_pxar_dirlist_unreadable(dir->children, &why);
	if (lost)
		cn_log_error("cairn mount: %zu entr%s of '%s' not shown: %s", lost,
			     lost == 1 ? "y" : "ies", dir->name, why);
	return rc;
}

/* ---- session setup ------------------------------------------------------ */

/* Undoes mountinfo's octal escapes (\040 for a space ...) in place. */
static void unescape(char *s)
{
	char *o = s;
	for (; *s; s++) {
		if (s[0] == '\\' && s[1] >= '0' && s[1] <= '3' && s[2] >= '0' && s[2] <= '7' &&
		    s[3] >= '0' && s[3] <= '7') {
			*o++ = (char)((s[1] - '0') * 64 + (s[2] - '0') * 8 + (s[3] - '0'));
			s += 3;
		} else {
			*o++ = *s;
		}
	}
	*o = 0;
}

/* The device ("MAJ:MIN") of the newest cairn mount at where, from
 * /proc/self/mountinfo (a stat of the mountpoint would ask this very
 * process). 0, or -ENOENT. */
static int mount_dev(const char *where, char *dev, size_t cap)
{
	FILE *f = fopen("/proc/self/mountinfo", "re");
	if (!f)
		return -ENOENT;
	char *line = NULL;
	size_t lcap = 0;
	int found = -ENOENT;
	while (getline(&line, &lcap, f) > 0) {
		/* ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE ... */
		char *save = NULL, *tok[5], *t;
		int n = 0;
		while (n < 5 && (t = strtok_r(n ? NULL : line, " ", &save)))
			tok[n++] = t;
		char *sep = n == 5 ? strstr(save, " - ") : NULL;
		if (!sep || strncmp(sep + 3, "fuse.cairn ", 11))
			continue;
		unescape(tok[4]);
		if (strcmp(tok[4], where) == 0 && strlen(tok[2]) < cap) {
			strcpy(dev, tok[2]);
			found = 0;
		}
	}
	free(line);
	fclose(f);
	return found;
}

/* Raises the kernel's read-ahead for the mount to READAHEAD_KB, so that
 * a sequential read comes in 1 MiB requests instead of 128 KiB ones.
 * Best effort: it takes root (sysfs), and a mount without it works,
 * only slower. Called once the kernel has taken INIT's reply (which
 * would lower it again). */
static void tune_readahead(struct cn_mount *m)
{
	char dev[64], path[128];
	m->ra_pending = 0;
	if (!m->where || mount_dev(m->where, dev, sizeof(dev)) < 0) {
		cn_log_debug("cairn mount: %s not found in /proc/self/mountinfo", m->where);
		return;
	}
	snprintf(path, sizeof(path), "/sys/class/bdi/%s/read_ahead_kb", dev);
	FILE *f = fopen(path, "r+e");
	unsigned kb = 0;
	if (f && fscanf(f, "%u", &kb) == 1 && kb < READAHEAD_KB) {
		rewind(f);
		fprintf(f, "%u\n", READAHEAD_KB);
	}
	if (!f || fclose(f) != 0)
		cn_log_debug("cairn mount: cannot raise the read-ahead in %s: %s", path,
			     strerror(errno));
}

/* The kernel's INIT: asks for what suits an immutable tree. Opens and
 * opendirs without a round trip where the kernel can (it then keeps
 * file and directory caches, which are never stale here), symlink
 * targets kept in the page cache, no cache invalidation on mtime
 * checks, every listing with attributes, and more read-ahead requests
 * in flight. */
static void op_init(void *userdata, struct fuse_conn_info *conn)
{
	struct cn_mount *m = userdata;
	m->no_open = !!(conn->capable & FUSE_CAP_NO_OPEN_SUPPORT);
	m->no_opendir = !!(conn->capable & FUSE_CAP_NO_OPENDIR_SUPPORT);
	if (conn->capable & FUSE_CAP_CACHE_SYMLINKS)
		conn->want |= FUSE_CAP_CACHE_SYMLINKS;
	conn->want &= ~(unsigned)FUSE_CAP_AUTO_INVAL_DATA;
	/* Every listing request a plus one (libfuse asks for _AUTO, where
	 * the kernel sends plain READDIRs after a listing's first reply):
	 * a directory too large for one reply would otherwise cost a LOOKUP
	 * for each entry of its later replies. */
	if (conn->capable & FUSE_CAP_READDIRPLUS)
		conn->want = (conn->want | FUSE_CAP_READDIRPLUS) & ~(unsigned)FUSE_CAP_READDIRPLUS_AUTO;
	conn->max_background = 64;
	m->ra_pending = 1;
}

/* ---- requests ----------------------------------------------------------- */

static void entry_of(const struct cn_mnode *n, struct fuse_entry_param *ep)
{
	memset(ep, 0, sizeof(*ep));
	ep->ino = n->ino;
	ep->generation = 1;
	node_stat(n, &ep->attr);
	ep->attr_timeout = CACHE_TIMEOUT;
	ep->entry_timeout = CACHE_TIMEOUT;
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct cn_mount *m = fuse_req_userdata(req);
	if (m->ra_pending)
		tune_readahead(m);
	struct cn_mnode *dir = cn_mnode_get(m->nodes, parent), *n;
	if (!dir) {
		fuse_reply_err(req, ESTALE);
		return;
	}
	int rc = children(m, dir);
	if (rc < 0) {
		fail(m, req, rc, "listing", dir);
		return;
	}
	const struct cn_pxar_child *c = cn_pxar_dirlist_find(dir->children, name, strlen(name));
	if (!c) {
		struct fuse_entry_param ep = {.entry_timeout = CACHE_TIMEOUT};
		fuse_reply_entry(req, &ep); /* a cached negative answer */
		return;
	}
	if ((rc = node_at(m, &c->range, dir->ino, c->name, &n)) < 0) {
		fail(m, req, rc, "reading", dir);
		return;
	}
	struct fuse_entry_param ep;
	entry_of(n, &ep);
	if (fuse_reply_entry(req, &ep) == 0)
		n->nlookup++;
}

static void forget_one(struct cn_mount *m, fuse_ino_t ino, uint64_t nlookup)
{
	struct cn_mnode *n = cn_mnode_get(m->nodes, ino);
	if (!n || ino == FUSE_ROOT_ID)
		return;
	n->nlookup = nlookup < n->nlookup ? n->nlookup - nlookup : 0;
	if (n->nlookup == 0)
		cn_mnode_remove(m->nodes, n);
}

static void op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
	forget_one(fuse_req_userdata(req), ino, nlookup);
	fuse_reply_none(req);
}

static void op_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *f)
{
	for (size_t i = 0; i < count; i++)
		forget_one(fuse_req_userdata(req), f[i].ino, f[i].nlookup);
	fuse_reply_none(req);
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)fi;
	struct cn_mount *m = fuse_req_userdata(req);
	if (m->ra_pending)
		tune_readahead(m);
	struct cn_mnode *n = cn_mnode_get(m->nodes, ino);
	struct stat st;
	if (!n) {
		fuse_reply_err(req, ESTALE);
	} else {
		node_stat(n, &st);
		fuse_reply_attr(req, &st, CACHE_TIMEOUT);
	}
}

/* The entry of n decoded again (for its link target or xattrs); valid
 * until the accessor's next call. */
static int entry_again(struct cn_mount *m, const struct cn_mnode *n, const struct cn_pxar_entry **e)
{
	int rc = cn_pxar_accessor_entry(m->acc, &n->range, n->name, e);
	if (rc < 0 && reopen(m, rc))
		rc = cn_pxar_accessor_entry(m->acc, &n->range, n->name, e);
	return rc;
}

static void op_readlink(fuse_req_t req, fuse_ino_t ino)
{
	struct cn_mount *m = fuse_req_userdata(req);
	struct cn_mnode *n = cn_mnode_get(m->nodes, ino);
	const struct cn_pxar_entry *e;
	if (!n || !S_ISLNK(n->mode)) {
		fuse_reply_err(req, n ? EINVAL : ESTALE);
		return;
	}
	int rc = entry_again(m, n, &e);
	if (rc < 0)
		fail(m, req, rc, "reading", n);
	else
		fuse_reply_readlink(req, e->link);
}

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct cn_mount *m = fuse_req_userdata(req);
	struct cn_mnode *n = cn_mnode_get(m->nodes, ino);
	if (n && m->no_open && (fi->flags & O_ACCMODE) == O_RDONLY) {
		/* from now on the kernel opens files itself, keeping their
		 * cached pages (writes are refused by the read-only mount) */
		fuse_reply_err(req, ENOSYS);
		return;
	}
	if (!n) {
		fuse_reply_err(req, ESTALE);
		return;
	}
	if ((fi->flags & O_ACCMODE) != O_RDONLY) {
		fuse_reply_err(req, EROFS);
		return;
	}
	fi->keep_cache = 1; /* the content never changes */
	fuse_reply_open(req, fi);
}

/* Replies with len bytes at off of stream in: lent from the chunk cache
 * when they span at most MAX_VIEWS chunks, else copied. */
static int reply_data(struct cn_mount *m, fuse_req_t req, const struct cn_pxar_input *in,
		      uint64_t off, size_t len)
{
	struct iovec iov[MAX_VIEWS];
	void *tok[MAX_VIEWS];
	size_t nv = 0, done = 0;
	int rc = 0;
	while (done < len && nv < MAX_VIEWS) {
		const uint8_t *d;
		size_t got;
		rc = in->view_at(in->ctx, off + done, len - done, &d, &got, &tok[nv]);
		if (rc < 0)
			break;
		iov[nv].iov_base = (void *)(uintptr_t)d;
		iov[nv++].iov_len = got;
		done += got;
	}
	if (rc == 0 && done == len)
		fuse_reply_iov(req, iov, (int)nv);
	for (size_t i = 0; i < nv; i++)
		in->release(in->ctx, tok[i]);
	if (rc < 0 || done == len)
		return rc;
	if (len > m->buf_cap) {
		uint8_t *b = realloc(m->buf, len);
		if (!b)
			return cn_error_set(-ENOMEM, "out of memory");
		m->buf = b;
		m->buf_cap = len;
	}
	if ((rc = in->read_at(in->ctx, off, m->buf, len)) < 0)
		return rc;
	fuse_reply_buf(req, (const char *)m->buf, len);
	return 0;
}

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		    struct fuse_file_info *fi)
{
	(void)fi;
	struct cn_mount *m = fuse_req_userdata(req);
	struct cn_mnode *n = cn_mnode_get(m->nodes, ino);
	if (!n || !S_ISREG(n->mode)) {
		fuse_reply_err(req, n ? EISDIR : ESTALE);
		return;
	}
	uint64_t fsize = n->size;
	if (off < 0 || (uint64_t)off >= fsize || size == 0) {
		fuse_reply_buf(req, NULL, 0);
		return;
	}
	size_t len = (uint64_t)off + size > fsize ? (size_t)(fsize - (uint64_t)off) : size;
	const struct cn_pxar_input *in = n->in_payload ? &m->pin : &m->in;
	int rc = reply_data(m, req, in, n->content + (uint64_t)off, len);
	if (rc < 0 && reopen(m, rc))
		rc = reply_data(m, req, in, n->content + (uint64_t)off, len);
	if (rc < 0)
		fail(m, req, rc, "reading", n);
}

static void op_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct cn_mount *m = fuse_req_userdata(req);
	struct cn_mnode *n = cn_mnode_get(m->nodes, ino);
	if (!n) {
		fuse_reply_err(req, ESTALE);
		return;
	}
	int rc = children(m, n);
	if (rc < 0) {
		fail(m, req, rc, "listing", n);
		return;
	}
	if (m->no_opendir) {
		/* the kernel opens directories itself from now on, caching
		 * their listings: two round trips less per directory */
		fuse_reply_err(req, ENOSYS);
		return;
	}
	fi->keep_cache = 1;
	fi->cache_readdir = 1;
	fuse_reply_open(req, fi);
}

/* readdir and readdirplus: ".", "..", then the children from offset off. */
static void do_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, int plus)
{
	struct cn_mount *m = fuse_req_userdata(req);
	struct cn_mnode *d = cn_mnode_get(m->nodes, ino);
	int rc;
	if (!d || (rc = children(m, d)) < 0) {
		if (d)
			fail(m, req, rc, "listing", d);
		else
			fuse_reply_err(req, ESTALE);
		return;
	}
	if (size > m->buf_cap) {
		uint8_t *b = realloc(m->buf, size);
		if (!b) {
			fuse_reply_err(req, ENOMEM);
			return;
		}
		m->buf = b;
		m->buf_cap = size;
	}
	size_t used = 0, n = cn_pxar_dirlist_count(d->children);
	char *buf = (char *)m->buf;
	for (uint64_t i = off < 0 ? 0 : (uint64_t)off; i < n + 2; i++) {
		struct fuse_entry_param ep;
		struct cn_mnode *c = NULL;
		const char *name = i == 0 ? "." : i == 1 ? ".." : NULL;
		memset(&ep, 0, sizeof(ep));
		if (name) {
			ep.ino = i == 0 ? d->ino : d->parent;
			ep.attr.st_ino = ep.ino;
			ep.attr.st_mode = S_IFDIR;
		} else {
			const struct cn_pxar_child *ch = cn_pxar_dirlist_get(d->children, i - 2);
			name = ch->name;
			if (plus) {
				rc = node_at(m, &ch->range, d->ino, name, &c);
				if (rc < 0 && cn_error_is_corruption(rc)) {
					/* its entry is in damaged data: not shown, the
					 * others are */
					cn_log_error("cairn mount: '%s' in '%s' not shown: %s", name,
						     d->name, cn_error_message());
					continue;
				}
				if (rc < 0) {
					if (used == 0) {
						fail(m, req, rc, "reading", d);
						return;
					}
					cn_log_error("cairn mount: reading '%s': %s", name,
						     cn_error_message());
					break;
				}
				entry_of(c, &ep);
			} else {
				ep.attr.st_ino = ch->range.entry_offset + 1;
			}
		}
		size_t want = plus ? fuse_add_direntry_plus(req, buf + used, size - used, name, &ep,
							   (off_t)(i + 1))
				   : fuse_add_direntry(req, buf + used, size - used, name, &ep.attr,
						       (off_t)(i + 1));
		if (want > size - used)
			break;
		used += want;
		if (c)
			c->nlookup++;
	}
	fuse_reply_buf(req, buf, used);
	if (off >= 0 && (uint64_t)off >= n + 2) {
		/* the listing's end: the kernel has every entry now (dentries
		 * and its listing cache, which do not go stale), so the list
		 * goes and its memory serves the next directory; a later
		 * lookup or listing here reads the table again */
		cn_pxar_dirlist_free(d->children);
		d->children = NULL;
	}
}

static void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		       struct fuse_file_info *fi)
{
	(void)fi;
	do_readdir(req, ino, size, off, 0);
}

static void op_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
			   struct fuse_file_info *fi)
{
	(void)fi;
	do_readdir(req, ino, size, off, 1);
}

/* ---- xattrs ------------------------------------------------------------- */

/* Kernel POSIX ACL xattr format (linux/posix_acl_xattr.h): a version,
 * then (tag, perm, id) entries sorted by tag and id. */
enum { ACL_XVERSION = 2, T_USER_OBJ = 1, T_USER = 2, T_GROUP_OBJ = 4, T_GROUP = 8,
       T_MASK = 0x10, T_OTHER = 0x20 };

static size_t acl_put(uint8_t *p, unsigned tag, uint64_t perm, uint32_t id)
{
	p[0] = (uint8_t)tag;
	p[1] = 0;
	p[2] = (uint8_t)(perm & 7);
	p[3] = 0;
	cn_put_le32(p + 4, id);
	return 8;
}

/* Builds the access (dflt 0) or default ACL xattr of e into out (len
 * returned; 0 when e has none). */
static size_t acl_xattr(const struct cn_pxar_entry *e, int dflt, uint8_t *out)
{
	const struct cn_pxar_acl_entry *us = dflt ? e->acl_default_users : e->acl_users;
	const struct cn_pxar_acl_entry *gs = dflt ? e->acl_default_groups : e->acl_groups;
	size_t nu = dflt ? e->acl_default_user_count : e->acl_user_count;
	size_t ng = dflt ? e->acl_default_group_count : e->acl_group_count;
	uint64_t uo, go, oth, mask;
	if (dflt) {
		if (!e->has_acl_default)
			return 0;
		uo = e->acl_default[0];
		go = e->acl_default[1];
		oth = e->acl_default[2];
		mask = e->acl_default[3];
	} else {
		if (!nu && !ng && !e->has_acl_group_obj)
			return 0;
		uo = e->mode >> 6;
		go = e->has_acl_group_obj ? e->acl_group_obj : e->mode >> 3;
		oth = e->mode;
		mask = e->mode >> 3; /* with an ACL the group bits are the mask */
	}
	size_t p = 0;
	cn_put_le32(out, ACL_XVERSION);
	p += 4;
	p += acl_put(out + p, T_USER_OBJ, uo, UINT32_MAX);
	for (size_t i = 0; i < nu; i++)
		p += acl_put(out + p, T_USER, us[i].permissions, (uint32_t)us[i].id);
	p += acl_put(out + p, T_GROUP_OBJ, go, UINT32_MAX);
	for (size_t i = 0; i < ng; i++)
		p += acl_put(out + p, T_GROUP, gs[i].permissions, (uint32_t)gs[i].id);
	if (mask != CN_PXAR_ACL_NO_MASK)
		p += acl_put(out + p, T_MASK, mask, UINT32_MAX);
	p += acl_put(out + p, T_OTHER, oth, UINT32_MAX);
	return p;
}

static size_t acl_room(const struct cn_pxar_entry *e)
{
	return 4 + 8 * (4 + e->acl_user_count + e->acl_group_count + e->acl_default_user_count +
			e->acl_default_group_count);
}

/* Calls fn for each xattr e shows: its own, file capabilities, ACLs.
 * Stops at the first nonzero return of fn and returns it. */
static int each_xattr(const struct cn_pxar_entry *e, uint8_t *scratch,
		      int (*fn)(void *ctx, const char *name, const void *v, size_t len), void *ctx)
{
	int rc = 0;
	for (size_t i = 0; i < e->xattr_count && !rc; i++) {
		char name[CN_PXAR_MAX_XATTR_NAME + 1];
		size_t nl = e->xattrs[i].name_len < sizeof(name) - 1 ? e->xattrs[i].name_len
								       : sizeof(name) - 1;
		memcpy(name, e->xattrs[i].name, nl);
		name[nl] = 0;
		rc = fn(ctx, name, e->xattrs[i].value, e->xattrs[i].value_len);
	}
	if (!rc && e->fcaps)
		rc = fn(ctx, "security.capability", e->fcaps, e->fcaps_len);
	size_t len;
	if (!rc && (len = acl_xattr(e, 0, scratch)))
		rc = fn(ctx, "system.posix_acl_access", scratch, len);
	if (!rc && (len = acl_xattr(e, 1, scratch)))
		rc = fn(ctx, "system.posix_acl_default", scratch, len);
	return rc;
}

struct xattr_q {
	const char *want;     /* getxattr: the name; listxattr: NULL */
	struct cn_buf out;
};

static int xattr_collect(void *ctx, const char *name, const void *v, size_t len)
{
	struct xattr_q *q = ctx;
	if (!q->want)
		return cn_buf_append(&q->out, name, strlen(name) + 1) < 0 ? -ENOMEM : 0;
	if (strcmp(name, q->want))
		return 0;
	return cn_buf_append(&q->out, v, len) < 0 ? -ENOMEM : 1;
}

static void xattr_req(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
{
	struct cn_mount *m = fuse_req_userdata(req);
	struct cn_mnode *n = cn_mnode_get(m->nodes, ino);
	const struct cn_pxar_entry *e;
	if (!n) {
		fuse_reply_err(req, ESTALE);
		return;
	}
	int rc = entry_again(m, n, &e);
	if (rc < 0) {
		fail(m, req, rc, "reading", n);
		return;
	}
	struct xattr_q q = {.want = name};
	uint8_t *scratch = malloc(acl_room(e));
	rc = scratch ? each_xattr(e, scratch, xattr_collect, &q) : -ENOMEM;
	free(scratch);
	if (rc < 0)
		fuse_reply_err(req, ENOMEM);
	else if (name && rc == 0)
		fuse_reply_err(req, ENODATA);
	else if (size == 0)
		fuse_reply_xattr(req, q.out.len);
	else if (q.out.len > size)
		fuse_reply_err(req, ERANGE);
	else
		fuse_reply_buf(req, (const char *)q.out.data, q.out.len);
	cn_buf_free(&q.out);
}

static void op_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
{
	xattr_req(req, ino, name, size);
}

static void op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
	xattr_req(req, ino, NULL, size);
}

static void op_statfs(fuse_req_t req, fuse_ino_t ino)
{
	(void)ino;
	struct cn_mount *m = fuse_req_userdata(req);
	struct statvfs sv;
	memset(&sv, 0, sizeof(sv));
	sv.f_bsize = sv.f_frsize = 4096;
	sv.f_blocks = (m->in.size + m->pin.size + 4095) / 4096;
	sv.f_namemax = CN_PXAR_MAX_FILENAME_LEN;
	fuse_reply_statfs(req, &sv);
}

static const struct fuse_lowlevel_ops ops = {
	.init = op_init,
	.lookup = op_lookup,
	.forget = op_forget,
	.forget_multi = op_forget_multi,
	.getattr = op_getattr,
	.readlink = op_readlink,
	.open = op_open,
	.read = op_read,
	.opendir = op_opendir,
	.readdir = op_readdir,
	.readdirplus = op_readdirplus,
	.getxattr = op_getxattr,
	.listxattr = op_listxattr,
	.statfs = op_statfs,
};

/* ---- open / run / free -------------------------------------------------- */

int cn_mount_open(struct cn_source *src, const struct cn_snapshot_id *id, const char *archive,
		  const struct cn_mount_opts *o, struct cn_mount **out)
{
	struct cn_archive_files af;
	size_t threads = o->threads ? o->threads : 2;
	*out = NULL;
	int r = cn_restore_archive_files(NULL, archive, &af);
	if (r < 0)
		return r;
	struct cn_mount *m = calloc(1, sizeof(*m));
	if (!m)
		return cn_error_set(-ENOMEM, "out of memory");
	m->src = src;
	m->id = *id;
	m->allow_other = o->allow_other;
	m->debug = o->debug;
	r = cn_restore_open(src, id, o->crypt, &m->manifest);
	if (r == 0 && (r = cn_restore_check_downgrade(src, id, m->manifest)) == -CN_E_MISMATCH) {
		cn_log_warning("WARNING: %s", cn_error_message());
		r = 0;
	}
	if (r == 0 && (r = cn_restore_archive_files(m->manifest, archive, &af)) == 0)
		r = cn_restore_load_index(src, m->manifest, af.name, &m->idx);
	m->split = af.split;
	m->files = af;
	if (r == 0 && m->split)
		r = cn_restore_load_index(src, m->manifest, af.pname, &m->pidx);
	if (r == 0)
		r = cn_chunk_reader_new(src, m->idx, o->crypt, threads, &m->cr);
	if (r == 0 && m->split)
		r = cn_chunk_reader_new(src, m->pidx, o->crypt, threads, &m->pcr);
	if (r < 0)
		goto fail;
	struct cn_pxar_input in = {.read_at = cn_chunk_reader_read_at, .size = cn_index_size(m->idx),
				   .ctx = m->cr, .view_at = cn_chunk_reader_view_at,
				   .release = cn_chunk_reader_release};
	m->in = in;
	if (m->split) {
		in.size = cn_index_size(m->pidx);
		in.ctx = m->pcr;
		m->pin = in;
	}
	if ((r = cn_pxar_accessor_open(&m->in, m->split ? &m->pin : NULL, &m->acc)) < 0)
		goto fail;
	if (cn_mnode_table_new(&m->nodes) < 0) {
		r = cn_error_set(-ENOMEM, "out of memory");
		goto fail;
	}
	struct cn_pxar_range root = cn_pxar_root_range(m->in.size);
	struct cn_mnode *n;
	if ((r = node_at(m, &root, FUSE_ROOT_ID, "/", &n)) < 0)
		goto fail;
	if (!S_ISDIR(n->mode)) {
		r = cn_error_set(-CN_E_FORMAT, "the archive's root is not a directory");
		goto fail;
	}
	n->nlookup = 1;
	*out = m;
	return 0;
fail:
	cn_mount_free(m);
	return r;
}

struct sigctl {
	struct fuse_session *se;
	pthread_t serving;
	atomic_int done;
	sigset_t set;
};

static void wake(int sig)
{
	(void)sig;
}

/* Takes SIGINT/SIGTERM/SIGHUP: ends the session and interrupts the
 * serving thread's read until it has left the loop. */
static void *signal_main(void *arg)
{
	struct sigctl *sc = arg;
	int sig;
	while (sigwait(&sc->set, &sig) != 0)
		;
	if (atomic_load(&sc->done))
		return NULL;
	cn_log_notice("cairn mount: signal %d, unmounting", sig);
	fuse_session_exit(sc->se);
	while (!atomic_load(&sc->done)) {
		pthread_kill(sc->serving, SIGUSR1);
		nanosleep(&(struct timespec){0, 100 * 1000 * 1000}, NULL);
	}
	return NULL;
}

int cn_mount_run(struct cn_mount *m, const char *mountpoint, void (*mounted)(void *ctx),
		 void *ctx)
{
	char opts[256];
	free(m->where);
	m->where = realpath(mountpoint, NULL); /* NULL: the read-ahead stays */
	snprintf(opts, sizeof(opts), "ro,default_permissions,fsname=cairn,subtype=cairn%s",
		 m->allow_other ? ",allow_other" : "");
	char *argv[] = {"cairn", "-o", opts, m->debug ? "-d" : NULL, NULL};
	struct fuse_args args = FUSE_ARGS_INIT(m->debug ? 4 : 3, argv);
	m->se = fuse_session_new(&args, &ops, sizeof(ops), m);
	fuse_opt_free_args(&args); /* (the session may have added to them) */
	if (!m->se)
		return cn_error_set(-EINVAL, "cannot start a FUSE session (see above)");
	if (fuse_session_mount(m->se, mountpoint) != 0) {
		fuse_session_destroy(m->se);
		m->se = NULL;
		return cn_error_set(-EIO, "cannot mount on %s (see above; is /dev/fuse there, is "
				    "fuse3 installed?)", mountpoint);
	}
	struct sigctl sc = {.se = m->se, .serving = pthread_self()};
	sigemptyset(&sc.set);
	sigaddset(&sc.set, SIGINT);
	sigaddset(&sc.set, SIGTERM);
	sigaddset(&sc.set, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &sc.set, NULL);
	struct sigaction sa = {.sa_handler = wake}, old;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGUSR1, &sa, &old); /* no SA_RESTART: the read returns EINTR */
	sigset_t usr1;
	sigemptyset(&usr1);
	sigaddset(&usr1, SIGUSR1);
	pthread_sigmask(SIG_UNBLOCK, &usr1, NULL);
	pthread_t th;
	int r = pthread_create(&th, NULL, signal_main, &sc);
	if (r != 0) {
		fuse_session_unmount(m->se);
		fuse_session_destroy(m->se);
		m->se = NULL;
		sigaction(SIGUSR1, &old, NULL);
		return cn_error_set(-r, "cannot start a thread");
	}
	if (mounted)
		mounted(ctx);
	int lr = fuse_session_loop(m->se);
	atomic_store(&sc.done, 1);
	pthread_kill(th, SIGHUP); /* ends a sigwait that is still waiting */
	pthread_join(th, NULL);
	fuse_session_unmount(m->se);
	fuse_session_destroy(m->se);
	m->se = NULL;
	sigaction(SIGUSR1, &old, NULL);
	if (lr < 0)
		return cn_error_set(lr, "serving the mount failed: %s", strerror(-lr));
	return 0;
}

void cn_mount_free(struct cn_mount *m)
{
	if (!m)
		return;
	cn_mnode_table_free(m->nodes);
	cn_pxar_accessor_free(m->acc);
	cn_chunk_reader_free(m->cr);
	cn_chunk_reader_free(m->pcr);
	cn_index_free(m->idx);
	cn_index_free(m->pidx);
	cn_manifest_free(m->manifest);
	free(m->buf);
	free(m->where);
	free(m);
}
