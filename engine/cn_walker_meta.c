/* cn_walker_meta — what the walker stores about an entry besides its
 * content: the feature flags a file system type allows (flags.rs
 * from_magic), virtual file systems, and an open entry's metadata as
 * create.rs get_metadata reads it (stat, xattrs, ACLs, file capabilities,
 * chattr and FAT attributes, quota project id) into a cn_pxar_metadata.
 *
 * Invariants: xattrs, ACLs, file capabilities and the quota project id
 * are read only when the flags passed in allow them (chattr and FAT
 * attributes always, as upstream); a feature the file system turns out not
 * to support (EOPNOTSUPP) is cleared from w->fs_flags for the rest of that
 * file system; on error the metadata is cleared, so the caller owns
 * nothing. */
#include "engine/cn_walker_impl.h"

#include <acl/libacl.h>
#include <errno.h>
#include <linux/fs.h>
#include <linux/msdos_fs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/acl.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/xattr.h>

#include "common/cn_error.h"
#include "common/cn_util.h"

/* statfs f_type values (linux/magic.h; proxmox_sys::linux::magic). */
#define MAGIC_MSDOS 0x4d44
#define MAGIC_EXT4 0xEF53
#define MAGIC_XFS 0x58465342
#define MAGIC_ZFS 0x2fc12fc1
#define MAGIC_BTRFS 0x9123683E
#define MAGIC_TMPFS 0x01021994
#define MAGIC_FUSE 0x65735546

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
void cn_wk_sort_n(void *base, size_t n, size_t size, int (*cmp)(const void *, const void *))
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
		return cn_error_sys(-errno, "error while reading ACL of \"%s\"", cn_wk_cur_path(w));
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
			rc = cn_error_sys(rc ? rc : -errno, "reading ACL entry of \"%s\"", cn_wk_cur_path(w));
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
				rc = cn_error_sys(-errno, "reading ACL qualifier of \"%s\"", cn_wk_cur_path(w));
				goto out;
			}
			uint64_t id = *q;
			acl_free(q);
			if ((rc = cn_pxar_metadata_add_acl(m, uw + (tag == ACL_GROUP), id, perms)) < 0)
				goto out;
			break;
		}
		default:
			rc = cn_error_set(-CN_E_FORMAT, "unexpected ACL tag in \"%s\"", cn_wk_cur_path(w));
			goto out;
		}
	}
	if (uw == 0) {
		cn_wk_sort_n(m->acl_users, m->n_acl_users, sizeof(*m->acl_users), cmp_acl);
		cn_wk_sort_n(m->acl_groups, m->n_acl_groups, sizeof(*m->acl_groups), cmp_acl);
		/* the group permissions of stat are the mask; keep the group_obj
		 * permissions only when a mask exists */
		m->has_acl_group_obj = have_group_obj && have_mask;
		m->acl_group_obj = group_obj;
	} else {
		cn_wk_sort_n(m->acl_default_users, m->n_acl_default_users, sizeof(*m->acl_default_users), cmp_acl);
		cn_wk_sort_n(m->acl_default_groups, m->n_acl_default_groups, sizeof(*m->acl_default_groups), cmp_acl);
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
		return cn_error_sys(rc, "failed to read file capabilities of \"%s\"", cn_wk_cur_path(w));
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
				    cn_wk_cur_path(w), strerror(E2BIG));
	}
	if (rc == -EBADF)
		return 0;
	if (rc < 0)
		return cn_error_sys(rc, "failed to read xattrs of \"%s\"", cn_wk_cur_path(w));

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
					  name, cn_wk_cur_path(w), strerror(E2BIG));
			break;
		}
		if (r < 0) {
			rc = cn_error_sys(r, "error reading extended attribute %s of \"%s\"", name, cn_wk_cur_path(w));
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

void cn_wk_stat_metadata(const struct stat *st, struct cn_pxar_metadata *m)
{
	memset(m, 0, sizeof(*m));
	m->stat.mode = st->st_mode;
	m->stat.uid = st->st_uid;
	m->stat.gid = st->st_gid;
	m->stat.mtime_secs = st->st_mtim.tv_sec;
	m->stat.mtime_nanos = (uint32_t)st->st_mtim.tv_nsec;
}

int cn_wk_ctime_covers_metadata(const struct walker *w)
{
	return w->beneath_ok && w->fs_magic != MAGIC_MSDOS && w->fs_magic != MAGIC_FUSE &&
	       w->feature_flags == CN_PXAR_FLAGS_DEFAULT;
}

int cn_wk_get_metadata(struct walker *w, int fd, const struct stat *st, uint64_t flags,
		       struct cn_pxar_metadata *m)
{
	char proc_path[64];
	int rc;

	cn_wk_stat_metadata(st, m);
	snprintf(proc_path, sizeof(proc_path), "/proc/self/fd/%d", fd);

	if ((rc = get_xattr_fcaps_acl(w, m, fd, proc_path, flags)) < 0)
		goto fail;

	/* chattr: the kernel writes an int although the ioctl is declared
	 * with long; not masked by the feature flags, as upstream */
	int attr = 0;
	if (ioctl(fd, FS_IOC_GETFLAGS, &attr) < 0) {
		if (!errno_is_unsupported(errno)) {
			rc = cn_error_sys(-errno, "failed to read file attributes of \"%s\"", cn_wk_cur_path(w));
			goto fail;
		}
	} else {
		m->stat.flags |= flags_from_chattr((unsigned int)attr);
	}

	if (w->fs_magic == MAGIC_MSDOS || w->fs_magic == MAGIC_FUSE) {
		uint32_t fat = 0;
		if (ioctl(fd, FAT_IOCTL_GET_ATTRIBUTES, &fat) < 0) {
			if (!errno_is_unsupported(errno)) {
				rc = cn_error_sys(-errno, "failed to read fat attributes of \"%s\"", cn_wk_cur_path(w));
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
						  cn_wk_cur_path(w));
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
