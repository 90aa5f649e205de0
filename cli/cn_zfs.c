#include "cli/cn_zfs.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "cli/cn_proc.h"
#include "common/cn_error.h"
#include "common/cn_util.h"

/* Runs zfs with args (argv[0] = "zfs"; the last one names the object);
 * stdout into out (NUL-terminated, may be NULL). */
static int zfs(const char *const *argv, struct cn_buf *out)
{
	struct cn_buf err = {0};
	struct cn_proc_result res;
	size_t argc = 0;
	while (argv[argc])
		argc++;
	int r = cn_proc_run(argv, NULL, 0, out, &err, 300, &res);
	if (r < 0) {
		cn_buf_free(&err);
		return r;
	}
	if (!res.exited || res.status != 0) {
		char how[64];
		cn_proc_describe(&res, 300, how, sizeof(how));
		const char *msg = "";
		if (cn_buf_append(&err, "", 1) == 0) {
			msg = (char *)err.data;
			size_t l = strlen(msg);
			while (l && (err.data[l - 1] == '\n' || err.data[l - 1] == ' '))
				err.data[--l] = 0;
		}
		r = cn_error_set(-EIO, "zfs %s %s: %s%s%s", argv[1], argv[argc - 1], how,
				 *msg ? ": " : "", msg);
	}
	cn_buf_free(&err);
	if (r == 0 && out && cn_buf_append(out, "", 1) == 0)
		out->len--;
	return r;
}

int cn_zfs_snapshot_create(const char *dataset, const char *path, int64_t when,
			   struct cn_zfs_snapshot *snap)
{
	memset(snap, 0, sizeof(*snap));
	snprintf(snap->dataset, sizeof(snap->dataset), "%s", dataset);
	struct cn_buf out = {0};
	const char *get[] = {"zfs", "get", "-H", "-o", "value", "mountpoint", dataset, NULL};
	int r = zfs(get, &out);
	if (r < 0) {
		cn_buf_free(&out);
		return r;
	}
	char *mp = out.data ? (char *)out.data : (char *)"";
	mp[strcspn(mp, "\n")] = 0;
	if (mp[0] != '/') {
		r = cn_error_set(-EINVAL, "zfs dataset %s is not mounted at a directory (mountpoint "
					  "'%s')", dataset, mp);
		cn_buf_free(&out);
		return r;
	}
	snprintf(snap->mountpoint, sizeof(snap->mountpoint), "%s", mp);
	cn_buf_free(&out);
	size_t mlen = strlen(snap->mountpoint);
	while (mlen > 1 && snap->mountpoint[mlen - 1] == '/')
		snap->mountpoint[--mlen] = 0;
	const char *below = "";
	if (path) {
		size_t plen = strlen(path);
		if (!strcmp(snap->mountpoint, "/"))
			below = path + 1;
		else if (!strncmp(path, snap->mountpoint, mlen) && (path[mlen] == 0 || path[mlen] == '/'))
			below = path[mlen] ? path + mlen + 1 : "";
		else
			return cn_error_set(-EINVAL, "source path %s is not on zfs dataset %s (mounted "
						     "at %s)", path, dataset, snap->mountpoint);
		(void)plen;
	}
	time_t t = (time_t)when;
	struct tm tm;
	gmtime_r(&t, &tm);
	char stamp[32];
	strftime(stamp, sizeof(stamp), "%Y%m%dT%H%M%SZ", &tm);
	int n = snprintf(snap->name, sizeof(snap->name), "%s@" CN_ZFS_PREFIX "%s", dataset, stamp);
	if (n < 0 || (size_t)n >= sizeof(snap->name))
		return cn_error_set(-ENAMETOOLONG, "zfs dataset name too long: %s", dataset);
	n = snprintf(snap->read_path, sizeof(snap->read_path), "%s/.zfs/snapshot/" CN_ZFS_PREFIX "%s%s%s",
		     strcmp(snap->mountpoint, "/") ? snap->mountpoint : "", stamp, *below ? "/" : "",
		     below);
	if (n < 0 || (size_t)n >= sizeof(snap->read_path))
		return cn_error_set(-ENAMETOOLONG, "snapshot path too long for %s", dataset);
	const char *mk[] = {"zfs", "snapshot", snap->name, NULL};
	r = zfs(mk, NULL);
	if (r < 0)
		snap->name[0] = 0;
	return r;
}

int cn_zfs_snapshot_destroy(const struct cn_zfs_snapshot *snap)
{
	const char *at = strchr(snap->name, '@');
	if (!at || strncmp(at + 1, CN_ZFS_PREFIX, strlen(CN_ZFS_PREFIX)))
		return cn_error_set(-EINVAL, "refusing to destroy '%s': not a cairn snapshot",
				    snap->name);
	const char *rm[] = {"zfs", "destroy", snap->name, NULL};
	return zfs(rm, NULL);
}

int cn_zfs_destroy_stale(const char *dataset)
{
	struct cn_buf out = {0};
	const char *ls[] = {"zfs", "list", "-H", "-t", "snapshot", "-o", "name", "-d", "1",
			    dataset, NULL};
	int r = zfs(ls, &out), count = 0;
	size_t dlen = strlen(dataset);
	char *save = NULL;
	for (char *line = r == 0 && out.data ? strtok_r((char *)out.data, "\n", &save) : NULL;
	     line; line = strtok_r(NULL, "\n", &save)) {
		if (strncmp(line, dataset, dlen) || line[dlen] != '@' ||
		    strncmp(line + dlen + 1, CN_ZFS_PREFIX, strlen(CN_ZFS_PREFIX)))
			continue;
		struct cn_zfs_snapshot s;
		memset(&s, 0, sizeof(s));
		snprintf(s.name, sizeof(s.name), "%s", line);
		r = cn_zfs_snapshot_destroy(&s);
		if (r < 0)
			break;
		count++;
	}
	cn_buf_free(&out);
	return r < 0 ? r : count;
}
