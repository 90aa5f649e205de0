/* cn_extract_meta — how the metadata of an extracted object is applied:
 * owner, xattrs, file capabilities and ACLs first (for a file written on
 * writer threads, before its data), then permission bits, mtime and
 * chattr flags. Upstream: pbs-client/src/pxar/metadata.rs (apply order,
 * apply_acls, is_valid_xattr_name, apply_chattr) and flags.rs. Part of
 * the extractor: see cn_pxar_extract_impl.h.
 */
#include "engine/cn_pxar_extract_impl.h"

#include <acl/libacl.h>
#include <fcntl.h>
#include <sys/ioctl.h>
#include <stdio.h>
#include <string.h>
#include <sys/acl.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

/* ---- metadata ------------------------------------------------------------------ */

static int valid_xattr_name(const uint8_t *n, size_t len)
{
	if (len == 0 || len > 255)
		return 0;
	if ((len > 5 && memcmp(n, "user.", 5) == 0) || (len > 8 && memcmp(n, "trusted.", 8) == 0))
		return 1;
	return (len == 14 && memcmp(n, "security.NTACL", 14) == 0) ||
	       (len == 19 && memcmp(n, "security.capability", 19) == 0);
}

/* Whether xa holds file capabilities: governed by no_fcaps (as well as
 * no_xattrs) however the archive stores them. */
int cn_xt_is_fcaps_xattr(const struct cn_pxar_xattr *xa)
{
	return xa->name_len == 19 && memcmp(xa->name, "security.capability", 19) == 0;
}

static int acl_add(acl_t *acl, acl_tag_t tag, const uint64_t *qual, uint64_t perms)
{
	acl_entry_t ent;
	acl_permset_t ps;
	if (acl_create_entry(acl, &ent) < 0 || acl_set_tag_type(ent, tag) < 0)
		return -errno;
	if (qual) {
		if (*qual > UINT32_MAX)
			return -EINVAL;
		id_t id = (id_t)*qual;
		if (acl_set_qualifier(ent, &id) < 0)
			return -errno;
	}
	if (acl_get_permset(ent, &ps) < 0 || acl_clear_perms(ps) < 0)
		return -errno;
	if ((perms & CN_PXAR_ACL_READ) && acl_add_perm(ps, ACL_READ) < 0)
		return -errno;
	if ((perms & CN_PXAR_ACL_WRITE) && acl_add_perm(ps, ACL_WRITE) < 0)
		return -errno;
	if ((perms & CN_PXAR_ACL_EXECUTE) && acl_add_perm(ps, ACL_EXECUTE) < 0)
		return -errno;
	return acl_set_permset(ent, ps) < 0 ? -errno : 0;
}

int cn_xt_acl_empty(const struct cn_pxar_entry *e)
{
	return !e->acl_user_count && !e->acl_group_count && !e->has_acl_group_obj &&
	       !e->has_acl_default && !e->acl_default_user_count && !e->acl_default_group_count;
}

/* apply_acls of metadata.rs: the access ACL from mode + entries, then the
 * default ACL. */
static int apply_acls(const struct cn_pxar_entry *e, const char *proc_path)
{
	uint64_t m = e->mode;
	acl_t acl = acl_init(5);
	int rc = 0;
	if (!acl)
		return cn_error_sys(-errno, "acl_init");
	rc = acl_add(&acl, ACL_USER_OBJ, NULL, (m >> 6) & 7);
	if (!rc)
		rc = acl_add(&acl, ACL_OTHER, NULL, m & 7);
	if (!rc && e->has_acl_group_obj) {
		rc = acl_add(&acl, ACL_MASK, NULL, (m >> 3) & 7);
		if (!rc)
			rc = acl_add(&acl, ACL_GROUP_OBJ, NULL, e->acl_group_obj);
	} else if (!rc) {
		rc = acl_add(&acl, ACL_GROUP_OBJ, NULL, (m >> 3) & 7);
		if (!rc && (e->acl_user_count || e->acl_group_count))
			rc = acl_add(&acl, ACL_MASK, NULL, (m >> 3) & 7);
	}
	for (size_t i = 0; !rc && i < e->acl_user_count; i++)
		rc = acl_add(&acl, ACL_USER, &e->acl_users[i].id, e->acl_users[i].permissions);
	for (size_t i = 0; !rc && i < e->acl_group_count; i++)
		rc = acl_add(&acl, ACL_GROUP, &e->acl_groups[i].id, e->acl_groups[i].permissions);
	if (!rc && acl_valid(acl) != 0)
		rc = -EINVAL;
	if (!rc && acl_set_file(proc_path, ACL_TYPE_ACCESS, acl) < 0)
		rc = -errno;
	acl_free(acl);
	if (rc < 0)
		return cn_error_sys(rc, "restoring access ACL");
	if (!e->has_acl_default)
		return 0;

	acl = acl_init(5);
	if (!acl)
		return cn_error_sys(-errno, "acl_init");
	rc = acl_add(&acl, ACL_USER_OBJ, NULL, e->acl_default[0]);
	if (!rc)
		rc = acl_add(&acl, ACL_GROUP_OBJ, NULL, e->acl_default[1]);
	if (!rc)
		rc = acl_add(&acl, ACL_OTHER, NULL, e->acl_default[2]);
	if (!rc && e->acl_default[3] != CN_PXAR_ACL_NO_MASK)
		rc = acl_add(&acl, ACL_MASK, NULL, e->acl_default[3]);
	for (size_t i = 0; !rc && i < e->acl_default_user_count; i++)
		rc = acl_add(&acl, ACL_USER, &e->acl_default_users[i].id,
			     e->acl_default_users[i].permissions);
	for (size_t i = 0; !rc && i < e->acl_default_group_count; i++)
		rc = acl_add(&acl, ACL_GROUP, &e->acl_default_groups[i].id,
			     e->acl_default_groups[i].permissions);
	if (!rc && acl_valid(acl) != 0)
		rc = -EINVAL;
	if (!rc && acl_set_file(proc_path, ACL_TYPE_DEFAULT, acl) < 0)
		rc = -errno;
	acl_free(acl);
	if (rc < 0)
		return cn_error_sys(rc, "restoring default ACL");
	return 0;
}

/* pxar Stat.flags -> chattr bits (flags.rs CHATTR_MAP). */
static const struct { uint64_t pxar; int fs; } chattr_map[] = {
	{ CN_PXAR_FLAG_APPEND, FS_APPEND_FL },       { CN_PXAR_FLAG_NOATIME, FS_NOATIME_FL },
	{ CN_PXAR_FLAG_COMPR, FS_COMPR_FL },         { CN_PXAR_FLAG_NOCOW, FS_NOCOW_FL },
	{ CN_PXAR_FLAG_NODUMP, FS_NODUMP_FL },       { CN_PXAR_FLAG_DIRSYNC, FS_DIRSYNC_FL },
	{ CN_PXAR_FLAG_IMMUTABLE, FS_IMMUTABLE_FL }, { CN_PXAR_FLAG_SYNC, FS_SYNC_FL },
	{ CN_PXAR_FLAG_NOCOMP, FS_NOCOMP_FL },      { CN_PXAR_FLAG_PROJINHERIT, FS_PROJINHERIT_FL },
};

int cn_xt_to_chattr(uint64_t flags)
{
	int r = 0;
	for (size_t i = 0; i < sizeof(chattr_map) / sizeof(chattr_map[0]); i++)
		if (flags & chattr_map[i].pxar)
			r |= chattr_map[i].fs;
	return r;
}

static int chattr_unsupported(int err)
{
	return err == ENOTTY || err == ENOSYS || err == EBADF || err == EOPNOTSUPP || err == EINVAL;
}

/* metadata.rs apply_chattr: sets the bits of chattr within mask, keeping
 * the others; unsupported file systems are ignored. mask: the chattr bits
 * the default feature flags restore (all but NODUMP). */
int cn_xt_apply_chattr(int fd, int chattr, int mask)
{
	int cur = 0;
	if (chattr == 0)
		return 0;
	if (ioctl(fd, FS_IOC_GETFLAGS, &cur) < 0)
		return chattr_unsupported(errno) ? 0 : -errno;
	int attr = (chattr & mask) | (cur & ~mask);
	if (attr == cur)
		return 0;
	if (ioctl(fd, FS_IOC_SETFLAGS, &attr) < 0)
		return chattr_unsupported(errno) ? 0 : -errno;
	return 0;
}

/* The first part of cn_xt_apply_meta: owner, xattrs, file capabilities, ACLs
 * (for a file written on writer threads, before its data: none of them
 * blocks a write or is undone by one, file capabilities aside, and such
 * files have none). proc: /proc/self/fd/<fd>. */
int cn_xt_apply_meta_early(struct extractor *x, const struct cn_pxar_entry *e, const char *path,
			   int fd, const char *proc, int parent, const char *name)
{
	int rc;
	int is_link = (e->mode & CN_PXAR_IFMT) == CN_PXAR_IFLNK;
	if (!x->o->no_owner) {
		int r = is_link ? fchownat(parent, name, e->uid, e->gid, AT_SYMLINK_NOFOLLOW)
				: fchownat(fd, "", e->uid, e->gid, AT_EMPTY_PATH);
		if (r < 0 && errno != EOPNOTSUPP) {
			/* as upstream: an unprivileged restore of files owned by
			 * others reports each failed chown (use no_owner) */
			rc = soft_error(x, cn_error_sys(-errno, "failed to set ownership of '%s'", path));
			if (rc < 0)
				return rc;
		}
	}
	if (!is_link && !x->o->no_xattrs) {
		for (size_t i = 0; i < e->xattr_count; i++) {
			const struct cn_pxar_xattr *xa = &e->xattrs[i];
			if (x->o->no_fcaps && cn_xt_is_fcaps_xattr(xa))
				continue;
			if (!valid_xattr_name(xa->name, xa->name_len)) {
				cn_log_info("skipping invalid xattr named '%.*s' on '%s'",
					    (int)xa->name_len, xa->name, path);
				continue;
			}
			char nm[256];
			memcpy(nm, xa->name, xa->name_len);
			nm[xa->name_len] = 0;
			if (setxattr(proc, nm, xa->value, xa->value_len, 0) < 0) {
				if (errno == EOPNOTSUPP)
					break;
				rc = soft_error(x, cn_error_sys(-errno, "failed to apply extended attribute %s to '%s'",
								nm, path));
				if (rc < 0)
					return rc;
			}
		}
	}
	if (!is_link && !x->o->no_fcaps && e->fcaps) {
		if (setxattr(proc, "security.capability", e->fcaps, e->fcaps_len, 0) < 0 &&
		    errno != EOPNOTSUPP) {
			rc = soft_error(x, cn_error_sys(-errno, "failed to apply file capabilities to '%s'", path));
			if (rc < 0)
				return rc;
		}
	}
	if (!is_link && !x->o->no_acls && !cn_xt_acl_empty(e)) {
		rc = apply_acls(e, proc);
		if (rc < 0 && rc != -EOPNOTSUPP) {
			cn_error_prefix(rc, "'%s'", path);
			rc = soft_error(x, rc);
			if (rc < 0)
				return rc;
		}
	} else if (!is_link && !x->o->no_acls && x->strip_acl) {
		/* made where a default ACL was inherited that the archive
		 * does not give it: the archive's (no ACL) wins */
		int dir = (e->mode & CN_PXAR_IFMT) == CN_PXAR_IFDIR;
		if ((removexattr(proc, "system.posix_acl_access") < 0 && errno != ENODATA &&
		     errno != EOPNOTSUPP) ||
		    (dir && removexattr(proc, "system.posix_acl_default") < 0 && errno != ENODATA &&
		     errno != EOPNOTSUPP)) {
			rc = soft_error(x, cn_error_sys(-errno, "failed to remove an inherited ACL of '%s'",
							path));
			if (rc < 0)
				return rc;
		}
	}
	return 0;
}

/* The rest of cn_xt_apply_meta: permission bits, mtime, chattr flags. */
int cn_xt_apply_meta_late(struct extractor *x, const struct late_meta *m, const char *path,
			  int fd, const char *proc, int parent, const char *name)
{
	int rc;
	int is_link = (m->mode & CN_PXAR_IFMT) == CN_PXAR_IFLNK;
	if (!is_link) {
		if (chmod(proc, (mode_t)(m->mode & 07777)) < 0 && errno != EOPNOTSUPP) {
			rc = soft_error(x, cn_error_sys(-errno, "failed to change file mode of '%s'", path));
			if (rc < 0)
				return rc;
		}
	}
	struct timespec ts[2] = { { 0, UTIME_OMIT }, { m->mtime_sec, (long)m->mtime_nsec } };
	int r = is_link ? utimensat(parent, name, ts, AT_SYMLINK_NOFOLLOW)
			: utimensat(AT_FDCWD, proc, ts, 0);
	if (r < 0 && errno != EOPNOTSUPP) {
		rc = soft_error(x, cn_error_sys(-errno, "failed to restore mtime of '%s'", path));
		if (rc < 0)
			return rc;
	}
	/* chattr flags last (immutable/append would block the steps above);
	 * only through a real descriptor (files and directories) */
	if (!is_link && m->flags) {
		r = cn_xt_apply_chattr(fd, cn_xt_to_chattr(m->flags), CHATTR_MASK);
		if (r < 0) {
			rc = soft_error(x, cn_error_sys(r, "failed to set file attributes of '%s'", path));
			if (rc < 0)
				return rc;
		}
	}
	return 0;
}

void cn_xt_proc_path(char *buf, size_t len, int fd)
{
	if (fd >= 0)
		snprintf(buf, len, "/proc/self/fd/%d", fd);
	else
		buf[0] = 0;
}

/* Applies e's metadata to the object: fd is a descriptor of it (O_PATH is
 * enough), or -1 for a symlink, which is addressed as (parent, name)
 * without following. Order as upstream metadata::apply. Returns 0 or the
 * first failure (already counted as soft error unless strict). */
int cn_xt_apply_meta(struct extractor *x, const struct cn_pxar_entry *e, const char *path,
		     int fd, int parent, const char *name)
{
	char proc[64];
	cn_xt_proc_path(proc, sizeof(proc), fd);
	int rc = cn_xt_apply_meta_early(x, e, path, fd, proc, parent, name);
	if (rc < 0)
		return rc;
	struct late_meta m = late_of(e);
	return cn_xt_apply_meta_late(x, &m, path, fd, proc, parent, name);
}
