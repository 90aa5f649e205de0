/* cn_walker — the tree walk of proxmox-backup-client's Archiver
 * (pbs-client/src/pxar/create.rs, 3.2.4), driving cn_pxar_encoder and
 * cn_catalog_writer. See cn_walker.h for what is reproduced.
 *
 * Memory: the sorted listing (name + struct stat) of each directory on
 * the current path, the goodbye items of the open directories, the
 * hardlink table (dev, ino, path, offset of multiply-linked files), the
 * patterns in force and one copy buffer. */
#include "engine/cn_walker.h"
#include "store/cn_manifest.h"

#include <acl/libacl.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <linux/msdos_fs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/acl.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/xattr.h>
#include <unistd.h>
#include <xxhash.h>

#include "common/cn_error.h"
#include "common/cn_log.h"
#include "common/cn_util.h"
#include "pxar/cn_pattern.h"
#include "pxar/cn_pxar_encoder.h"
#include "store/cn_index.h"

/* File data is read in pieces that stay in the CPU's L2 cache for the
 * chunker and the copy into the chunk that follow. Measured (2 GiB bench
 * corpus, re-run into a store that has every chunk, binaries alternating,
 * 3 runs each): 1 MiB reads 3.27-3.37 s wall, 1.41-1.48 s system time;
 * 512 KiB 2.30-2.74 s; 256 KiB 2.39-2.71 s, 0.33-0.58 s system; 128 KiB
 * 2.46-2.72 s; 64 KiB 2.63-2.73 s. */
#define COPY_BUF_SIZE (256u << 10)

/* statfs f_type values (linux/magic.h; proxmox_sys::linux::magic). */
#define MAGIC_MSDOS 0x4d44
#define MAGIC_EXT4 0xEF53
#define MAGIC_XFS 0x58465342
#define MAGIC_ZFS 0x2fc12fc1
#define MAGIC_BTRFS 0x9123683E
#define MAGIC_TMPFS 0x01021994
#define MAGIC_FUSE 0x65735546

struct hl_slot {
	uint64_t dev, ino;   /* ino == 0 && dev == 0: empty */
	char *path;
	uint64_t offset;
	int used;
};

/* Look-ahead cache (upstream PxarLookaheadCache): entries whose encoding
 * waits for the decision to reuse the previous payload of [start, end). */
enum { CE_ENTRY, CE_DIR, CE_DIR_END };

struct cache_ent {
	int kind;               /* CE_ENTRY: any non-directory; CE_DIR: its begin */
	int fd;                 /* CE_ENTRY: open file (-1 otherwise) */
	char *path;             /* relative path (owned) */
	size_t path_len, name_off;
	struct stat st;
	struct cn_pxar_metadata m;
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
};

struct list_entry {
	char *name;
	size_t name_len;
	struct stat st;
};

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
	XXH3_state_t *xxh;     /* metadata mode: content hash of the file read */
	uint8_t content_hash[16];
};

/* ---- file system types (flags.rs from_magic, create.rs) ---- */

uint64_t cn_pxar_flags_from_magic(int64_t magic)
{
	const uint64_t base = CN_PXAR_WITH_2SEC_TIME | CN_PXAR_WITH_READ_ONLY | CN_PXAR_WITH_PERMISSIONS |
		CN_PXAR_WITH_SYMLINKS | CN_PXAR_WITH_DEVICE_NODES | CN_PXAR_WITH_FIFOS | CN_PXAR_WITH_SOCKETS;
	switch (magic) {
	case MAGIC_MSDOS:
		return CN_PXAR_WITH_2SEC_TIME | CN_PXAR_WITH_READ_ONLY | CN_PXAR_WITH_FAT_ATTRS;
	case MAGIC_EXT4:
	case MAGIC_ZFS:
		return base | CN_PXAR_FLAG_APPEND | CN_PXAR_FLAG_NOATIME | CN_PXAR_FLAG_NODUMP |
			CN_PXAR_FLAG_DIRSYNC | CN_PXAR_FLAG_IMMUTABLE | CN_PXAR_FLAG_SYNC | CN_PXAR_WITH_XATTRS |
			CN_PXAR_WITH_ACL | CN_PXAR_WITH_SELINUX | CN_PXAR_WITH_FCAPS | CN_PXAR_WITH_QUOTA_PROJID;
	case MAGIC_XFS:
		return base | CN_PXAR_FLAG_APPEND | CN_PXAR_FLAG_NOATIME | CN_PXAR_FLAG_NODUMP |
			CN_PXAR_FLAG_IMMUTABLE | CN_PXAR_FLAG_SYNC | CN_PXAR_WITH_XATTRS | CN_PXAR_WITH_ACL |
			CN_PXAR_WITH_SELINUX | CN_PXAR_WITH_FCAPS | CN_PXAR_WITH_QUOTA_PROJID;
	case MAGIC_BTRFS:
		return base | CN_PXAR_FLAG_APPEND | CN_PXAR_FLAG_NOATIME | CN_PXAR_FLAG_COMPR |
			CN_PXAR_FLAG_NOCOW | CN_PXAR_FLAG_NODUMP | CN_PXAR_FLAG_DIRSYNC | CN_PXAR_FLAG_IMMUTABLE |
			CN_PXAR_FLAG_SYNC | CN_PXAR_FLAG_NOCOMP | CN_PXAR_WITH_XATTRS | CN_PXAR_WITH_ACL |
			CN_PXAR_WITH_SELINUX | CN_PXAR_WITH_SUBVOLUME | CN_PXAR_WITH_SUBVOLUME_RO |
			CN_PXAR_WITH_FCAPS;
	case MAGIC_TMPFS:
		return base | CN_PXAR_WITH_ACL | CN_PXAR_WITH_SELINUX;
	case MAGIC_FUSE:
		return CN_PXAR_WITH_2SEC_TIME | CN_PXAR_WITH_READ_ONLY | CN_PXAR_WITH_PERMISSIONS |
			CN_PXAR_WITH_OWNER | CN_PXAR_WITH_SYMLINKS | CN_PXAR_WITH_DEVICE_NODES |
			CN_PXAR_WITH_FIFOS | CN_PXAR_WITH_SOCKETS | CN_PXAR_WITH_FAT_ATTRS |
			CN_PXAR_WITH_CHATTR | CN_PXAR_WITH_XATTRS;
	default:
		return base | CN_PXAR_WITH_XATTRS | CN_PXAR_WITH_ACL | CN_PXAR_WITH_FCAPS;
	}
}

int cn_pxar_is_virtual_fs(int64_t magic)
{
	switch ((uint32_t)magic) {
	case 0x42494e4d: /* binfmt_misc */
	case 0x63677270: /* cgroup2 */
	case 0x0027e0eb: /* cgroup */
	case 0x62656570: /* configfs */
	case 0x64626720: /* debugfs */
	case 0x00001cd1: /* devpts */
	case 0xde5e81e4: /* efivarfs */
	case 0x65735543: /* fusectl */
	case 0x958458f6: /* hugetlbfs */
	case 0x19800202: /* mqueue */
	case 0x6e667364: /* nfsd */
	case 0x00009fa0: /* proc */
	case 0x6165676c: /* pstore */
	case 0x67596969: /* rpc_pipefs */
	case 0x73636673: /* securityfs */
	case 0xf97cff8c: /* selinuxfs */
	case 0x43415d53: /* smackfs */
	case 0x62656572: /* sysfs */
		return 1;
	default:
		return 0;
	}
}

static int errno_is_unsupported(int err)
{
	return err == ENOTTY || err == ENOSYS || err == EBADF || err == EOPNOTSUPP || err == EINVAL;
}

/* ---- path ---- */

static int path_set(struct walker *w, size_t base_len, const char *name, size_t name_len)
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

static const char *cur_path(const struct walker *w)
{
	return w->path && w->path_len ? w->path : ".";
}

/* ---- hardlink table: open addressing on (dev, ino) ---- */

static size_t hl_hash(uint64_t dev, uint64_t ino, size_t cap)
{
	uint64_t h = (ino * 0x9E3779B97F4A7C15ULL) ^ (dev * 0xC2B2AE3D27D4EB4FULL);
	return (size_t)(h ^ (h >> 29)) & (cap - 1);
}

static struct hl_slot *hl_find(struct walker *w, uint64_t dev, uint64_t ino)
{
	if (!w->hl_cap)
		return NULL;
	for (size_t i = hl_hash(dev, ino, w->hl_cap);; i = (i + 1) & (w->hl_cap - 1)) {
		struct hl_slot *s = &w->hl[i];
		if (!s->used)
			return NULL;
		if (s->dev == dev && s->ino == ino)
			return s;
	}
}

static int hl_insert(struct walker *w, uint64_t dev, uint64_t ino, const char *path, uint64_t off)
{
	if ((w->hl_used + 1) * 2 > w->hl_cap) {
		size_t nc = w->hl_cap ? w->hl_cap * 2 : 64;
		struct hl_slot *n = calloc(nc, sizeof(*n));
		if (!n)
			return -ENOMEM;
		for (size_t i = 0; i < w->hl_cap; i++) {
			if (!w->hl[i].used)
				continue;
			size_t j = hl_hash(w->hl[i].dev, w->hl[i].ino, nc);
			while (n[j].used)
				j = (j + 1) & (nc - 1);
			n[j] = w->hl[i];
		}
		free(w->hl);
		w->hl = n;
		w->hl_cap = nc;
	}
	size_t i = hl_hash(dev, ino, w->hl_cap);
	while (w->hl[i].used)
		i = (i + 1) & (w->hl_cap - 1);
	char *p = strdup(path);
	if (!p)
		return -ENOMEM;
	w->hl[i] = (struct hl_slot){ dev, ino, p, off, 1 };
	w->hl_used++;
	return 0;
}

/* ---- opening ---- */

/* An entry that is no longer what was listed (or what open_entry needs)
 * is left out with a warning, counted like an unreadable one. */
static void warn_changed(struct walker *w, const char *name, int existed)
{
	if (existed)
		cn_log_warning("file changed type while reading, skipped: \"%s\"", cur_path(w));
	else
		cn_log_warning("ignoring %s in \"%s\": not a regular file", name, cur_path(w));
	w->stats->skipped++;
}

/* The lease-break fallback of open_entry: a file under a write lease
 * (Samba, NFS delegations) refuses an O_NONBLOCK open with EWOULDBLOCK.
 * The entry is pinned with O_PATH and checked to be a regular file, then
 * reopened through its /proc magic link, which names that inode and no
 * other, without O_NONBLOCK, so the open waits for the lease break as a
 * plain open would. Returns an fd, -ENOTSUP when it is no longer a
 * regular file, or -errno. */
static int reopen_regular(int parent, const char *name, int flags)
{
	int pfd = openat(parent, name, O_PATH | O_CLOEXEC | (flags & O_NOFOLLOW));
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
		int r = openat(parent, name, flags | noatime);
		if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) && type == S_IFREG) {
			r = reopen_regular(parent, name, flags | noatime);
			if (r < 0)
				errno = r == -ENOTSUP ? ENXIO : -r;
		}
		if (r >= 0) {
			if (fstat(r, st) < 0) {
				int err = errno;
				close(r);
				return cn_error_sys(-err, "stat \"%s\"", cur_path(w));
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
				return cn_error_sys(-err, "fcntl \"%s\"", cur_path(w));
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
				cn_log_warning("file vanished while reading: \"%s\"", cur_path(w));
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
		return cn_error_sys(-errno, "open \"%s\"", cur_path(w));
	}
}

/* ---- metadata (create.rs get_metadata and helpers) ---- */

static int acl_perms(acl_entry_t e, uint64_t *perms)
{
	acl_permset_t ps;
	if (acl_get_permset(e, &ps) < 0)
		return -errno;
	uint64_t p = 0;
	int r;
	if ((r = acl_get_perm(ps, ACL_READ)) < 0)
		return -errno;
	p |= r ? CN_PXAR_ACL_READ : 0;
	if ((r = acl_get_perm(ps, ACL_WRITE)) < 0)
		return -errno;
	p |= r ? CN_PXAR_ACL_WRITE : 0;
	if ((r = acl_get_perm(ps, ACL_EXECUTE)) < 0)
		return -errno;
	p |= r ? CN_PXAR_ACL_EXECUTE : 0;
	*perms = p;
	return 0;
}

/* qsort that accepts an empty (NULL) array */
static void sort_n(void *base, size_t n, size_t size, int (*cmp)(const void *, const void *))
{
	if (n > 1)
		qsort(base, n, size, cmp);
}

static int cmp_acl(const void *a, const void *b)
{
	const struct cn_pxar_acl_entry *x = a, *y = b;
	if (x->id != y->id)
		return x->id < y->id ? -1 : 1;
	return x->permissions < y->permissions ? -1 : x->permissions > y->permissions;
}

/* get_acl_do + process_acl: one ACL type, replacing what m held for it. */
static int get_acl_do(struct walker *w, struct cn_pxar_metadata *m, const char *proc_path,
		      acl_type_t type)
{
	acl_t acl = acl_get_file(proc_path, type);
	if (!acl) {
		if (errno == EOPNOTSUPP) {
			w->fs_flags &= ~CN_PXAR_WITH_ACL;
			return 0;
		}
		if (errno == EBADF || errno == ENODATA)
			return 0;
		return cn_error_sys(-errno, "error while reading ACL of \"%s\"", cur_path(w));
	}
	int uw = type == ACL_TYPE_ACCESS ? 0 : 2;  /* cn_pxar_metadata_add_acl lists */
	size_t *nu = uw ? &m->n_acl_default_users : &m->n_acl_users;
	size_t *ng = uw ? &m->n_acl_default_groups : &m->n_acl_groups;
	int have_user_obj = 0, have_group_obj = 0, have_other = 0, have_mask = 0;
	uint64_t user_obj = 0, group_obj = 0, other = 0, mask = 0;
	int rc = 0;
	acl_entry_t e;

	*nu = 0;
	*ng = 0;
	for (int r = acl_get_entry(acl, ACL_FIRST_ENTRY, &e); r == 1;
	     r = acl_get_entry(acl, ACL_NEXT_ENTRY, &e)) {
		acl_tag_t tag;
		uint64_t perms = 0;
		if (acl_get_tag_type(e, &tag) < 0 || (rc = acl_perms(e, &perms)) < 0) {
			rc = cn_error_sys(rc ? rc : -errno, "reading ACL entry of \"%s\"", cur_path(w));
			goto out;
		}
		switch (tag) {
		case ACL_USER_OBJ: have_user_obj = 1; user_obj = perms; break;
		case ACL_GROUP_OBJ: have_group_obj = 1; group_obj = perms; break;
		case ACL_OTHER: have_other = 1; other = perms; break;
		case ACL_MASK: have_mask = 1; mask = perms; break;
		case ACL_USER:
		case ACL_GROUP: {
			id_t *q = acl_get_qualifier(e);
			if (!q) {
				rc = cn_error_sys(-errno, "reading ACL qualifier of \"%s\"", cur_path(w));
				goto out;
			}
			uint64_t id = *q;
			acl_free(q);
			if ((rc = cn_pxar_metadata_add_acl(m, uw + (tag == ACL_GROUP), id, perms)) < 0)
				goto out;
			break;
		}
		default:
			rc = cn_error_set(-CN_E_FORMAT, "unexpected ACL tag in \"%s\"", cur_path(w));
			goto out;
		}
	}
	if (uw == 0) {
		sort_n(m->acl_users, m->n_acl_users, sizeof(*m->acl_users), cmp_acl);
		sort_n(m->acl_groups, m->n_acl_groups, sizeof(*m->acl_groups), cmp_acl);
		/* the group permissions of stat are the mask; keep the group_obj
		 * permissions only when a mask exists */
		m->has_acl_group_obj = have_group_obj && have_mask;
		m->acl_group_obj = group_obj;
	} else {
		sort_n(m->acl_default_users, m->n_acl_default_users, sizeof(*m->acl_default_users), cmp_acl);
		sort_n(m->acl_default_groups, m->n_acl_default_groups, sizeof(*m->acl_default_groups), cmp_acl);
		m->has_acl_default = have_user_obj || have_group_obj || have_other || have_mask;
		m->acl_default.user_obj_permissions = have_user_obj ? user_obj : CN_PXAR_ACL_NO_MASK;
		m->acl_default.group_obj_permissions = have_group_obj ? group_obj : CN_PXAR_ACL_NO_MASK;
		m->acl_default.other_permissions = have_other ? other : CN_PXAR_ACL_NO_MASK;
		m->acl_default.mask_permissions = have_mask ? mask : CN_PXAR_ACL_NO_MASK;
	}
out:
	acl_free(acl);
	return rc;
}

static int get_acl(struct walker *w, struct cn_pxar_metadata *m, const char *proc_path,
		   uint64_t flags)
{
	if (!(flags & CN_PXAR_WITH_ACL))
		return 0;
	uint32_t t = (uint32_t)(m->stat.mode & CN_PXAR_IFMT);
	if (t == CN_PXAR_IFLNK)
		return 0;
	int rc = get_acl_do(w, m, proc_path, ACL_TYPE_ACCESS);
	if (rc == 0 && t == CN_PXAR_IFDIR)
		rc = get_acl_do(w, m, proc_path, ACL_TYPE_DEFAULT);
	return rc;
}

static int read_xattr(int fd, const char *name, uint8_t **val, size_t *len);

static int get_fcaps(struct walker *w, struct cn_pxar_metadata *m, int fd, uint64_t flags)
{
	if (!(flags & CN_PXAR_WITH_FCAPS))
		return 0;
	uint8_t *v = NULL;
	size_t n = 0;
	int rc = read_xattr(fd, "security.capability", &v, &n);
	if (rc == -ENODATA || rc == -EBADF)
		return 0;
	if (rc == -EOPNOTSUPP) {
		w->fs_flags &= ~CN_PXAR_WITH_FCAPS;
		return 0;
	}
	if (rc < 0)
		return cn_error_sys(rc, "failed to read file capabilities of \"%s\"", cur_path(w));
	rc = cn_pxar_metadata_set_fcaps(m, v, n);
	free(v);
	return rc;
}

static int valid_xattr_name(const char *name)
{
	size_t l = strlen(name);
	if (l == 0 || l > 255)
		return 0;
	return !strncmp(name, "user.", 5) || !strncmp(name, "trusted.", 8) ||
	       !strcmp(name, "security.NTACL") || !strcmp(name, "security.capability");
}

/* Reads xattr name (or, with name NULL, the name list) into a malloc'd
 * buffer (*val, *len), retrying when it grows between the size query and
 * the read. Returns 0 or -errno. */
static ssize_t xattr_call(int fd, const char *name, void *buf, size_t size)
{
	return name ? fgetxattr(fd, name, buf, size) : flistxattr(fd, buf, size);
}

static int read_xattr(int fd, const char *name, uint8_t **val, size_t *len)
{
	for (;;) {
		ssize_t n = xattr_call(fd, name, NULL, 0);
		if (n < 0)
			return -errno;
		uint8_t *b = malloc((size_t)n + 1);
		if (!b)
			return -ENOMEM;
		ssize_t r = xattr_call(fd, name, b, (size_t)n + 1);
		if (r >= 0) {
			b[r] = 0;
			*val = b;
			*len = (size_t)r;
			return 0;
		}
		int err = errno;
		free(b);
		if (err != ERANGE)
			return -err;
	}
}

static int get_xattr_fcaps_acl(struct walker *w, struct cn_pxar_metadata *m, int fd,
			       const char *proc_path, uint64_t flags)
{
	if (!(flags & CN_PXAR_WITH_XATTRS))
		return 0;
	char *list = NULL;
	size_t len = 0;
	int rc = read_xattr(fd, NULL, (uint8_t **)&list, &len);
	if (rc == -EOPNOTSUPP) {
		w->fs_flags &= ~CN_PXAR_WITH_XATTRS;
		return 0;
	}
	if (rc == -E2BIG) {
		if (w->opts->skip_e2big_xattr)
			return 0;
		return cn_error_set(rc, "listing xattrs of \"%s\": %s (try --skip-e2big-xattr)",
				    cur_path(w), strerror(E2BIG));
	}
	if (rc == -EBADF)
		return 0;
	if (rc < 0)
		return cn_error_sys(rc, "failed to read xattrs of \"%s\"", cur_path(w));

	for (size_t off = 0; rc == 0 && off < len; off += strlen(list + off) + 1) {
		const char *name = list + off;
		if (!strcmp(name, "security.capability")) {
			rc = get_fcaps(w, m, fd, flags);
			continue;
		}
		if (!strcmp(name, "system.posix_acl_access") || !strcmp(name, "system.posix_acl_default")) {
			rc = get_acl(w, m, proc_path, flags);
			continue;
		}
		if (!valid_xattr_name(name))
			continue;
		uint8_t *val = NULL;
		size_t vlen = 0;
		int r = read_xattr(fd, name, &val, &vlen);
		if (r == -ENODATA || r == -EOPNOTSUPP || r == -EBADF)
			continue;
		if (r == -E2BIG) {
			if (w->opts->skip_e2big_xattr)
				break;  /* upstream drops the remaining xattrs too */
			rc = cn_error_set(r, "reading xattr %s of \"%s\": %s (try --skip-e2big-xattr)",
					  name, cur_path(w), strerror(E2BIG));
			break;
		}
		if (r < 0) {
			rc = cn_error_sys(r, "error reading extended attribute %s of \"%s\"", name, cur_path(w));
			break;
		}
		rc = cn_pxar_metadata_add_xattr(m, name, strlen(name), val, vlen);
		free(val);
	}
	free(list);
	return rc;
}

static uint64_t flags_from_chattr(unsigned long a)
{
	static const struct { uint64_t pxar; unsigned long fs; } map[] = {
		{ CN_PXAR_FLAG_APPEND, 0x20 }, { CN_PXAR_FLAG_NOATIME, 0x80 },
		{ CN_PXAR_FLAG_COMPR, 0x4 }, { CN_PXAR_FLAG_NOCOW, 0x800000 },
		{ CN_PXAR_FLAG_NODUMP, 0x40 }, { CN_PXAR_FLAG_DIRSYNC, 0x10000 },
		{ CN_PXAR_FLAG_IMMUTABLE, 0x10 }, { CN_PXAR_FLAG_SYNC, 0x8 },
		{ CN_PXAR_FLAG_NOCOMP, 0x400 }, { CN_PXAR_FLAG_PROJINHERIT, 0x20000000 },
	};
	uint64_t f = 0;
	for (size_t i = 0; i < CN_ARRAY_SIZE(map); i++)
		if (a & map[i].fs)
			f |= map[i].pxar;
	return f;
}

static int get_metadata(struct walker *w, int fd, const struct stat *st, uint64_t flags,
			struct cn_pxar_metadata *m)
{
	char proc_path[64];
	int rc;

	memset(m, 0, sizeof(*m));
	m->stat.mode = st->st_mode;
	m->stat.uid = st->st_uid;
	m->stat.gid = st->st_gid;
	m->stat.mtime_secs = st->st_mtim.tv_sec;
	m->stat.mtime_nanos = (uint32_t)st->st_mtim.tv_nsec;
	snprintf(proc_path, sizeof(proc_path), "/proc/self/fd/%d", fd);

	if ((rc = get_xattr_fcaps_acl(w, m, fd, proc_path, flags)) < 0)
		goto fail;

	/* chattr: the kernel writes an int although the ioctl is declared
	 * with long; not masked by the feature flags, as upstream */
	int attr = 0;
	if (ioctl(fd, FS_IOC_GETFLAGS, &attr) < 0) {
		if (!errno_is_unsupported(errno)) {
			rc = cn_error_sys(-errno, "failed to read file attributes of \"%s\"", cur_path(w));
			goto fail;
		}
	} else {
		m->stat.flags |= flags_from_chattr((unsigned int)attr);
	}

	if (w->fs_magic == MAGIC_MSDOS || w->fs_magic == MAGIC_FUSE) {
		uint32_t fat = 0;
		if (ioctl(fd, FAT_IOCTL_GET_ATTRIBUTES, &fat) < 0) {
			if (!errno_is_unsupported(errno)) {
				rc = cn_error_sys(-errno, "failed to read fat attributes of \"%s\"", cur_path(w));
				goto fail;
			}
		} else {
			m->stat.flags |= (fat & ATTR_HIDDEN ? CN_PXAR_FLAG_HIDDEN : 0) |
				(fat & ATTR_SYS ? CN_PXAR_FLAG_SYSTEM : 0) |
				(fat & ATTR_ARCH ? CN_PXAR_FLAG_ARCHIVE : 0);
		}
	}

	uint32_t t = st->st_mode & S_IFMT;
	if ((t == S_IFDIR || t == S_IFREG) && (flags & CN_PXAR_WITH_QUOTA_PROJID) &&
	    (w->fs_magic == MAGIC_EXT4 || w->fs_magic == MAGIC_XFS || w->fs_magic == MAGIC_FUSE ||
	     w->fs_magic == MAGIC_ZFS)) {
		struct fsxattr fsx;
		memset(&fsx, 0, sizeof(fsx));
		if (ioctl(fd, FS_IOC_FSGETXATTR, &fsx) < 0) {
			if (!errno_is_unsupported(errno)) {
				rc = cn_error_sys(-errno, "error while reading quota project id of \"%s\"",
						  cur_path(w));
				goto fail;
			}
		} else if (fsx.fsx_projid != 0) {
			m->has_quota_projid = 1;
			m->quota_projid = fsx.fsx_projid;
		}
	}
	return 0;
fail:
	cn_pxar_metadata_clear(m);
	return rc;
}

/* ---- patterns ---- */

static int push_pattern(struct walker *w, struct cn_pattern *p)
{
	if (w->n_patterns == w->cap_patterns) {
		size_t nc = w->cap_patterns ? w->cap_patterns * 2 : 16;
		struct cn_pattern **n = realloc(w->patterns, nc * sizeof(*n));
		if (!n) {
			cn_pattern_free(p);
			return -ENOMEM;
		}
		w->patterns = n;
		w->cap_patterns = nc;
	}
	w->patterns[w->n_patterns++] = p;
	return 0;
}

static void truncate_patterns(struct walker *w, size_t n)
{
	while (w->n_patterns > n)
		cn_pattern_free(w->patterns[--w->n_patterns]);
}

static int is_ascii_ws(int c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\f' || c == '\r';
}

/* One line of a .pxarexclude file (read_pxar_excludes). */
static int pxarexclude_line(struct walker *w, char *line, size_t len)
{
	while (len > 0 && is_ascii_ws((unsigned char)line[0])) {
		line++;
		len--;
	}
	while (len > 0 && is_ascii_ws((unsigned char)line[len - 1]))
		len--;
	if (len == 0 || line[0] == '#')
		return 0;

	struct cn_buf buf = { 0 };
	enum cn_match_type type = CN_MATCH_EXCLUDE;
	int anchored = 0, rc = 0;
	const char *pat = line;
	size_t plen = len;

	if (line[0] == '/' || (len >= 2 && line[0] == '!' && line[1] == '/')) {
		/* anchored at this directory: prefix its path (no leading '/') */
		size_t skip = line[0] == '!';
		type = skip ? CN_MATCH_INCLUDE : CN_MATCH_EXCLUDE;
		if (cn_buf_append(&buf, w->path, w->path_len) < 0 ||
		    cn_buf_append(&buf, line + skip, len - skip) < 0) {
			cn_buf_free(&buf);
			return -ENOMEM;
		}
		pat = (const char *)buf.data;
		plen = buf.len;
		anchored = 1;
	} else if (line[0] == '!') {
		type = CN_MATCH_INCLUDE;
		pat++;
		plen--;
	}
	/* parse_pattern still interprets a leading '!' (inverting again) */
	struct cn_pattern *p;
	rc = cn_pattern_parse(pat, plen, type, &p);
	cn_buf_free(&buf);
	if (rc < 0) {
		if (rc == -ENOMEM)
			return rc;
		cn_log_error("bad pattern in \"%s\": %s", cur_path(w), cn_error_message());
		return 0;
	}
	if (anchored)
		cn_pattern_add_flags(p, CN_PATTERN_ANCHORED);
	return push_pattern(w, p);
}

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
		if ((rc = pxarexclude_line(w, line, l)) < 0)
			break;
	}
	if (rc == 0 && ferror(f)) {
		cn_log_warning("ignoring .pxarexclude after read error in \"%s\"", cur_path(w));
		truncate_patterns(w, old);
	}
	free(line);
	fclose(f);
	return rc;
}

/* generate_pxar_excludes_cli: one line per pattern, '!' for includes, '/'
 * appended for directory-only patterns. */
static int pxarexclude_cli_content(struct walker *w, size_t count, struct cn_buf *out)
{
	for (size_t i = 0; i < count; i++) {
		const struct cn_pattern *p = w->patterns[i];
		const char *t = cn_pattern_text(p);
		size_t tl = strlen(t);
		if (cn_pattern_type(p) == CN_MATCH_INCLUDE && cn_buf_append(out, "!", 1) < 0)
			return -ENOMEM;
		if (cn_buf_append(out, t, tl) < 0)
			return -ENOMEM;
		if (cn_pattern_flags(p) == CN_PATTERN_MATCH_DIRECTORIES &&
		    (out->len == 0 || out->data[out->len - 1] != '/') && cn_buf_append(out, "/", 1) < 0)
			return -ENOMEM;
		if (cn_buf_append(out, "\n", 1) < 0)
			return -ENOMEM;
	}
	return 0;
}

static int encode_pxarexclude_cli(struct walker *w, size_t count)
{
	static const char name[] = ".pxarexclude-cli";
	struct cn_buf content = { 0 };
	struct cn_pxar_metadata m = { 0 };
	int rc = pxarexclude_cli_content(w, count, &content);

	m.stat.mode = CN_PXAR_IFREG | 0600;
	if (rc == 0 && w->cat)
		rc = cn_catalog_writer_add_file(w->cat, name, sizeof(name) - 1, content.len, 0);
	if (rc == 0)
		rc = cn_pxar_encoder_begin_file(w->enc, &m, name, sizeof(name) - 1, content.len, NULL);
	if (rc == 0)
		rc = cn_pxar_encoder_write(w->enc, content.data, content.len);
	if (rc == 0)
		rc = cn_pxar_encoder_end_file(w->enc);
	cn_buf_free(&content);
	return rc;
}

/* PbsClientPrelude { exclude_patterns } as serde_json::to_vec writes it */
static int prelude_json(struct walker *w, struct cn_buf *out)
{
	struct cn_buf pats = { 0 };
	int rc = pxarexclude_cli_content(w, w->n_patterns, &pats);
	if (rc == 0)
		rc = cn_buf_append(out, "{\"exclude-patterns\":", 20);
	if (rc == 0)
		rc = cn_json_put_string(out, (const char *)pats.data, pats.len);
	if (rc == 0)
		rc = cn_buf_append(out, "}", 1);
	cn_buf_free(&pats);
	return rc < 0 ? -ENOMEM : 0;
}

/* ---- directory listing (generate_directory_file_list) ---- */

static int cmp_entry(const void *a, const void *b)
{
	return strcmp(((const struct list_entry *)a)->name, ((const struct list_entry *)b)->name);
}

static void free_list(struct list_entry *l, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(l[i].name);
	free(l);
}

static int list_directory(struct walker *w, int dirfd, int is_root, struct list_entry **out,
			  size_t *out_n)
{
	int dfd = dup(dirfd);
	if (dfd < 0)
		return cn_error_sys(-errno, "dup");
	DIR *d = fdopendir(dfd);
	if (!d) {
		close(dfd);
		return cn_error_sys(-errno, "opendir \"%s\"", cur_path(w));
	}
	rewinddir(d);

	struct list_entry *l = NULL;
	size_t n = 0, cap = 0, base = w->path_len;
	struct cn_buf match = { 0 };
	int rc = 0;
	struct dirent *de;

	for (;;) {
		errno = 0;
		if (!(de = readdir(d))) {
			if (errno)
				rc = cn_error_sys(-errno, "readdir \"%s\"", cur_path(w));
			break;
		}
		const char *name = de->d_name;
		if (!strcmp(name, ".") || !strcmp(name, ".."))
			continue;
		if (is_root && !strcmp(name, ".pxarexclude-cli"))
			continue;
		size_t nl = strlen(name);

		struct stat st;
		if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
			if (errno == ENOENT) {
				if ((rc = path_set(w, base, name, nl)) < 0)
					break;
				cn_log_warning("file vanished while reading: \"%s\"", cur_path(w));
				path_truncate(w, base);
				w->stats->skipped++;
				continue;
			}
			if ((rc = path_set(w, base, name, nl)) == 0)
				rc = cn_error_sys(-errno, "stat failed on \"%s\"", cur_path(w));
			break;
		}

		/* match path: "/" + path relative to the root */
		match.len = 0;
		if (cn_buf_append(&match, "/", 1) < 0 || cn_buf_append(&match, w->path, base) < 0 ||
		    (base && cn_buf_append(&match, "/", 1) < 0) || cn_buf_append(&match, name, nl) < 0) {
			rc = -ENOMEM;
			break;
		}
		if (cn_pattern_list_match(w->patterns, w->n_patterns, (const char *)match.data, match.len,
					  st.st_mode) == CN_MATCH_EXCLUDE) {
			w->stats->excluded++;
			continue;
		}

		if (++w->entry_counter > w->entry_limit) {
			rc = cn_error_set(-EOVERFLOW, "exceeded allowed number of file entries (> %zu)",
					  w->entry_limit);
			break;
		}
		if (n == cap) {
			size_t nc = cap ? cap * 2 : 32;
			struct list_entry *p = realloc(l, nc * sizeof(*p));
			if (!p) {
				rc = -ENOMEM;
				break;
			}
			l = p;
			cap = nc;
		}
		if (!(l[n].name = strdup(name))) {
			rc = -ENOMEM;
			break;
		}
		l[n].name_len = nl;
		l[n].st = st;
		n++;
	}
	closedir(d);
	cn_buf_free(&match);
	path_truncate(w, base);
	if (rc < 0) {
		free_list(l, n);
		return rc;
	}
	sort_n(l, n, sizeof(*l), cmp_entry);
	*out = l;
	*out_n = n;
	return 0;
}

/* ---- entries ---- */

static int archive_dir_contents(struct walker *w, int dirfd, int is_root);

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
	while (remaining != 0) {
		ssize_t got = read(fd, w->buf, COPY_BUF_SIZE);
		if (got == 0)
			break;
		if (got < 0) {
			if (errno == EINTR)
				continue;
			return cn_error_sys(-errno, "read \"%s\"", cur_path(w));
		}
		w->stats->bytes_read += (uint64_t)got;
		if ((uint64_t)got > remaining) {
			cn_log_warning("file size increased while reading: \"%s\", file will be truncated!",
				       cur_path(w));
			changed = 1;
			got = (ssize_t)remaining;
		}
		if ((rc = cn_pxar_encoder_write(w->enc, w->buf, (size_t)got)) < 0)
			return rc;
		if (w->xxh)
			XXH3_128bits_update(w->xxh, w->buf, (size_t)got);
		remaining -= (uint64_t)got;
	}
	if (remaining > 0) {
		cn_log_warning("file size shrunk while reading: \"%s\", file will be padded with zeros!",
			       cur_path(w));
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
		cn_log_warning("file changed while reading: \"%s\"", cur_path(w));
		changed = 1;
	}
	if (w->xxh)
		XXH128_canonicalFromHash((XXH128_canonical_t *)w->content_hash, XXH3_128bits_digest(w->xxh));
	w->stats->changed += (uint64_t)changed;
	w->stats->files++;
	return 0;
}

static int la_push(struct walker *w, int kind, int fd, const struct list_entry *ent,
		   struct cn_pxar_metadata *m, const struct cn_pxar_reuse_match *match, uint64_t rel);

/* Begin (or, while the look-ahead cache collects, queue the begin of) a
 * directory, walk its contents, and end (or queue the end of) it. */
static int add_directory(struct walker *w, int fd, const struct list_entry *ent,
			 struct cn_pxar_metadata *m)
{
	int rc;
	if (w->la.active)
		rc = la_push(w, CE_DIR, -1, ent, m, NULL, 0);
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
			return cn_error_sys(-errno, "statfs \"%s\"", cur_path(w));
		w->fs_magic = (int64_t)sfs.f_type;
		w->fs_flags = cn_pxar_flags_from_magic(w->fs_magic);
		w->cur_dev = ent->st.st_dev;
		if (cn_pxar_is_virtual_fs(w->fs_magic))
			skip = 1;
		else if (w->use_devset)
			skip = ent->st.st_dev != w->root_dev;
	}
	if (skip) {
		cn_log_info("skipping mount point: \"%s\"", cur_path(w));
		w->stats->mountpoints++;
	} else {
		rc = archive_dir_contents(w, fd, 0);
	}
	w->fs_magic = old_magic;
	w->fs_flags = old_flags;
	w->cur_dev = old_dev;
	if (rc < 0)
		return rc;
	if (w->la.active)
		return la_push(w, CE_DIR_END, -1, NULL, NULL, 0, 0);
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
			return cn_error_sys(-errno, "readlink \"%s\"", cur_path(w));
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
static int encode_entry(struct walker *w, int fd, const struct list_entry *ent,
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
			struct hl_slot *s = hl_find(w, dev, ino);
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
			rc = hl_insert(w, dev, ino, w->path, off);
		if (rc == 0 && w->reuse && w->reuse->record)
			rc = w->reuse->record(w->reuse->ctx, w->path, w->path_len, &ent->st, &m, ppos, reuse,
					      reuse ? NULL : w->content_hash, w->stats->changed != changed);
		break;
	}
	case S_IFDIR:
		rc = add_directory(w, fd, ent, &m);
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
				  cur_path(w));
	}
#undef m
	return rc;
}


/* ---- look-ahead cache (create.rs, metadata change detection) ---- */

static int la_push(struct walker *w, int kind, int fd, const struct list_entry *ent,
		   struct cn_pxar_metadata *m, const struct cn_pxar_reuse_match *match, uint64_t rel)
{
	struct lookahead *la = &w->la;
	if (la->n == la->cap) {
		size_t nc = la->cap ? la->cap * 2 : 64;
		struct cache_ent *p = realloc(la->e, nc * sizeof(*p));
		if (!p)
			return -ENOMEM;
		la->e = p;
		la->cap = nc;
	}
	struct cache_ent *c = &la->e[la->n];
	memset(c, 0, sizeof(*c));
	c->kind = kind;
	c->fd = -1;
	if (kind != CE_DIR_END) {
		if (!(c->path = malloc(w->path_len + 1)))
			return -ENOMEM;
		memcpy(c->path, w->path, w->path_len + 1);
		c->path_len = w->path_len;
		c->name_off = w->path_len - ent->name_len;
		c->st = ent->st;
		c->m = *m;              /* moved: the caller's copy is cleared */
		memset(m, 0, sizeof(*m));
		c->fd = fd;
		c->reusable = match != NULL;
		if (match)
			c->match = *match;
		c->rel = rel;
	}
	la->n++;
	return 0;
}

static void la_free_entries(struct cache_ent *e, size_t from, size_t n)
{
	for (size_t i = from; i < n; i++) {
		if (e[i].fd >= 0)
			close(e[i].fd);
		cn_pxar_metadata_clear(&e[i].m);
		free(e[i].path);
	}
}

static int inject(struct walker *w, const struct cn_pxar_reused_chunk *c, size_t n)
{
	/* upstream sends at most 128 chunks per injection; the sizes are the
	 * same either way */
	uint64_t size = 0;
	int rc;
	if (n == 0)
		return 0;
	for (size_t i = 0; i < n; i++)
		size += c[i].size;
	if ((rc = cn_pxar_encoder_flush_payload(w->enc)) < 0 ||
	    (rc = w->reuse->inject(w->reuse->ctx, c, n)) < 0 ||
	    (rc = cn_pxar_encoder_advance(w->enc, size)) < 0)
		return rc;
	w->stats->injected_chunks += n;
	w->stats->injected_bytes += size;
	return 0;
}

/* encode_entries_to_archive: injects a kept-back chunk, then encodes the
 * cached entries, regular files referencing base + rel when reuse. */
static int la_encode(struct walker *w, int reuse, uint64_t base)
{
	struct lookahead *la = &w->la;
	int rc = 0;
	if (la->has_last) {
		la->has_last = 0;
		if (la->last_padding)
			w->stats->partial_chunks++;
		if ((rc = inject(w, &la->last, 1)) < 0)
			return rc;
	}
	struct cache_ent *e = la->e;
	size_t n = la->n;
	la->e = NULL;
	la->n = la->cap = 0;
	la->active = 0;
	la->start = la->end = 0;
	if (n == 0) {
		free(e);
		return 0;
	}
	/* the walk's own path is restored afterwards */
	char *saved = w->path ? strndup(w->path, w->path_len) : strdup("");
	size_t saved_len = w->path_len, i;
	if (!saved)
		rc = -ENOMEM;
	for (i = 0; i < n && rc == 0; i++) {
		struct cache_ent *c = &e[i];
		if (c->kind == CE_DIR_END) {
			w->stats->dirs++;
			if ((rc = cn_pxar_encoder_end_dir(w->enc)) == 0 && w->cat)
				rc = cn_catalog_writer_end_directory(w->cat);
			continue;
		}
		if ((rc = path_set(w, 0, c->path, c->path_len)) < 0)
			break;
		struct list_entry le = { .name = c->path + c->name_off, .name_len = c->path_len - c->name_off,
					 .st = c->st };
		if (c->kind == CE_DIR) {
			if (w->cat)
				rc = cn_catalog_writer_start_directory(w->cat, le.name, le.name_len);
			if (rc == 0)
				rc = cn_pxar_encoder_begin_dir(w->enc, &c->m, le.name, le.name_len);
		} else {
			rc = encode_entry(w, c->fd, &le, &c->m, reuse && c->reusable ? &c->match : NULL,
					  base + c->rel);
		}
		if (rc < 0)
			cn_error_prefix(rc, "error at \"%s\"", cur_path(w));
		if (c->fd >= 0)
			close(c->fd);
		c->fd = -1;
		cn_pxar_metadata_clear(&c->m);
		free(c->path);
		c->path = NULL;
	}
	la_free_entries(e, i, n);
	free(e);
	if (saved) {
		int r2 = path_set(w, 0, saved, saved_len);
		free(saved);
		if (rc == 0)
			rc = r2;
	}
	return rc;
}

/* lookup_dynamic_entries: the chunks of the previous payload index that
 * hold [start, end), with the padding before start and after end. */
static int prev_chunks(struct walker *w, uint64_t start, uint64_t end, struct cn_pxar_reused_chunk **out,
		       size_t *n, uint64_t *pad_start, uint64_t *pad_end)
{
	const struct cn_index *idx = w->reuse->prev_payload_index;
	size_t i, cnt = idx ? cn_index_count(idx) : 0, cap = 16, k = 0;
	uint64_t cs, ce;
	if (!idx || cn_index_find(idx, start, &i) < 0)
		return cn_error_set(-CN_E_FORMAT, "previous payload index does not cover offset %llu",
				    (unsigned long long)start);
	struct cn_pxar_reused_chunk *c = malloc(cap * sizeof(*c));
	if (!c)
		return -ENOMEM;
	cn_index_entry(idx, i, &cs, NULL, NULL);
	uint64_t prev_end = cs;
	*pad_start = start - cs;
	*pad_end = 0;
	for (; i < cnt; i++) {
		cn_index_entry(idx, i, NULL, &ce, NULL);
		if (k == cap) {
			struct cn_pxar_reused_chunk *p = realloc(c, 2 * cap * sizeof(*c));
			if (!p) {
				free(c);
				return -ENOMEM;
			}
			c = p;
			cap *= 2;
		}
		c[k].size = ce - prev_end;
		memcpy(c[k].digest, cn_index_digest(idx, i), 32);
		k++;
		/* as upstream: a range ending exactly at a chunk end takes the
		 * next chunk too (as padding) */
		if (end < ce) {
			*pad_end = ce - end;
			break;
		}
		prev_end = ce;
	}
	if (i == cnt) {
		free(c);
		return cn_error_set(-CN_E_FORMAT, "previous payload index ends before offset %llu",
				    (unsigned long long)end);
	}
	*out = c;
	*n = k;
	return 0;
}

/* flush_cached_reusing_if_below_threshold */
static int la_flush(struct walker *w, int keep_last)
{
	struct lookahead *la = &w->la;
	if (!la->active)
		return la_encode(w, 0, 0);
	struct cn_pxar_reused_chunk *c = NULL, prev = la->last;
	uint64_t prev_padding = la->last_padding;
	int had_prev = la->has_last;
	size_t n = 0;
	uint64_t ps = 0, pe = 0;
	int rc = prev_chunks(w, la->start, la->end, &c, &n, &ps, &pe);
	if (rc < 0)
		return rc;
	la->has_last = 0;
	int64_t padding = (int64_t)(ps + pe);
	uint64_t total = (la->end - la->start) + ps + pe;
	uint64_t first_padding = ps + (n == 1 ? pe : 0);
	int same_first = had_prev && !memcmp(prev.digest, c[0].digest, 32);
	if (same_first)
		padding -= (int64_t)(prev.size - prev_padding); /* its used part is no padding */
	if (padding < 0)
		padding = 0;
	if ((double)padding / (double)total > CN_PXAR_CHUNK_PADDING_THRESHOLD) {
		la->has_last = had_prev;
		rc = la_encode(w, 0, 0);
	} else {
		if (had_prev && !same_first) {
			if (prev_padding)
				w->stats->partial_chunks++;
			rc = inject(w, &prev, 1);
		} else if (same_first) {
			first_padding = first_padding > prev.size - prev_padding ?
				first_padding - (prev.size - prev_padding) : 0;
		}
		uint64_t base = cn_pxar_encoder_payload_position(w->enc) + ps;
		if (rc == 0)
			rc = la_encode(w, 1, base);
		if (rc == 0 && keep_last) {
			la->last = c[n - 1];
			la->last_padding = n == 1 ? first_padding : pe;
			la->has_last = 1;
			n--;
		}
		for (size_t i = 0; rc == 0 && i < n; i++)
			if (i == 0 ? first_padding : (i == n - 1 && !keep_last && pe))
				w->stats->partial_chunks++;
		if (rc == 0)
			rc = inject(w, c, n);
	}
	free(c);
	return rc;
}

/* A later link of a file already encoded or waiting in the look-ahead
 * cache: it becomes a hardlink entry (no payload of its own). */
static int is_later_link(struct walker *w, const struct stat *st)
{
	if (st->st_nlink <= 1)
		return 0;
	if (hl_find(w, st->st_dev, st->st_ino))
		return 1;
	for (size_t i = 0; i < w->la.n; i++) {
		const struct cache_ent *c = &w->la.e[i];
		if (c->kind == CE_ENTRY && S_ISREG(c->st.st_mode) && c->st.st_dev == st->st_dev &&
		    c->st.st_ino == st->st_ino)
			return 1;
	}
	return 0;
}

/* create.rs add_entry in metadata mode: takes fd and *m. */
static int add_entry_reuse(struct walker *w, int fd, const struct list_entry *ent,
			   struct cn_pxar_metadata *m)
{
	struct lookahead *la = &w->la;
	uint32_t t = ent->st.st_mode & S_IFMT;
	int rc = 0;
	if (la->n >= la->max && (rc = la_flush(w, 1)) < 0)
		goto out;
	if (t == S_IFREG && !is_later_link(w, &ent->st)) {
		struct cn_pxar_reuse_match match;
		uint64_t compared = 0;
		memset(&match, 0, sizeof(match));
		int r = w->reuse->lookup(w->reuse->ctx, w->path, w->path_len, fd, &ent->st, m, &match,
					 &compared);
		w->stats->bytes_read += compared;
		w->stats->files_compared += r == 1 && compared > 0;
		if (r < 0) {
			rc = r;
			goto out;
		}
		if (r == 1) {
			uint64_t rs = match.payload_offset;
			uint64_t re = rs + (uint64_t)ent->st.st_size + CN_PXAR_HEADER_SIZE;
			if (!la->active) {
				la->active = 1;
				la->start = la->end = rs;
			}
			if (la->end == rs) {
				la->end = re;
			} else {
				/* hole in the previous range: decide on what we have */
				if ((rc = la_flush(w, 1)) < 0)
					goto out;
				la->active = 1;
				la->start = rs;
				la->end = re;
			}
			rc = la_push(w, CE_ENTRY, fd, ent, m, &match, rs - la->start);
			if (rc == 0)
				fd = -1;
			goto out;
		}
		if ((rc = la_flush(w, 0)) < 0)
			goto out;
	} else if (la->active) {
		if (t == S_IFDIR) {
			rc = add_directory(w, fd, ent, m);
		} else if ((rc = la_push(w, CE_ENTRY, fd, ent, m, NULL, 0)) == 0) {
			fd = -1;
		}
		goto out;
	}
	if ((rc = la_encode(w, 0, 0)) == 0)
		rc = encode_entry(w, fd, ent, m, NULL, 0);
out:
	cn_pxar_metadata_clear(m);
	if (fd >= 0)
		close(fd);
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

	if ((rc = open_entry(w, parent, ent->name, oflags, t, 1, &fd, &cur.st)) < 0 || fd < 0)
		return rc;

	struct cn_pxar_metadata m;
	if ((rc = get_metadata(w, fd, &ent->st, w->feature_flags & w->fs_flags, &m)) < 0) {
		close(fd);
		return rc;
	}
	if (w->reuse)
		return add_entry_reuse(w, fd, ent, &m);
	rc = encode_entry(w, fd, ent, &m, NULL, 0);
	cn_pxar_metadata_clear(&m);
	close(fd);
	return rc;
}

static int archive_dir_contents(struct walker *w, int dirfd, int is_root)
{
	size_t entry_counter = w->entry_counter;
	size_t old_patterns = w->n_patterns;
	size_t base = w->path_len;
	struct list_entry *l = NULL;
	size_t n = 0;
	int rc;

	if ((rc = read_pxar_excludes(w, dirfd)) < 0 || (rc = list_directory(w, dirfd, is_root, &l, &n)) < 0)
		goto out;
	for (size_t i = 0; i < n && rc == 0; i++) {
		if ((rc = path_set(w, base, l[i].name, l[i].name_len)) < 0)
			break;
		rc = add_entry(w, dirfd, &l[i]);
		if (rc < 0)
			cn_error_prefix(rc, "error at \"%s\"", cur_path(w));
		path_truncate(w, base);
		free(l[i].name);
		l[i].name = NULL;
	}
	/* the generated file goes after all sorted entries of the root; split
	 * archives carry the patterns in the prelude instead (create.rs) */
	if (rc == 0 && is_root && old_patterns > 0 && !cn_pxar_encoder_is_split(w->enc))
		rc = encode_pxarexclude_cli(w, old_patterns);
out:
	free_list(l, n);
	path_truncate(w, base);
	w->entry_counter = entry_counter;
	truncate_patterns(w, old_patterns);
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
	w.cur_dev = st.st_dev;
	w.root_dev = st.st_dev;
	w.use_devset = !opts->all_file_systems;

	struct cn_pxar_metadata m;
	if ((rc = get_metadata(&w, fd, &st, w.feature_flags & w.fs_flags, &m)) < 0) {
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
		if ((rc = push_pattern(&w, p)) < 0)
			goto out;
	}
	if (opts->skip_lost_found) {
		struct cn_pattern *p;
		if ((rc = cn_pattern_parse("lost+found", 10, CN_MATCH_EXCLUDE, &p)) < 0 ||
		    (rc = push_pattern(&w, p)) < 0)
			goto out;
	}
	if (opts->payload_out) {
		/* create.rs: a split archive's prelude is {"exclude-patterns":
		 * ...} (serde_json, compact) when there are any patterns */
		struct cn_buf pre = { 0 };
		if (w.n_patterns)
			rc = prelude_json(&w, &pre);
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
	if ((rc = archive_dir_contents(&w, fd, 1)) < 0)
		goto out;
	if (w.reuse && (rc = la_flush(&w, 0)) < 0)
		goto out;
	if ((rc = cn_pxar_encoder_finish(w.enc)) < 0)
		goto out;
	stats->dirs++;
	if (catalog && opts->archive_name)
		rc = cn_catalog_writer_end_directory(catalog);
out:
	if (fd >= 0)
		close(fd);
	truncate_patterns(&w, 0);
	free(w.patterns);
	for (size_t i = 0; i < w.hl_cap; i++)
		free(w.hl[i].path);
	free(w.hl);
	la_free_entries(w.la.e, 0, w.la.n);
	free(w.la.e);
	free(w.path);
	XXH3_freeState(w.xxh);
	free(w.buf);
	cn_pxar_encoder_free(w.enc);
	return rc;
}
