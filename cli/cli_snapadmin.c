#include "cli/cli_snapadmin.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "common/cn_error.h"
#include "net/cn_pbs.h"
#include "net/cn_s3_layout.h"
#include "store/cn_datastore.h"
#include "store/cn_manifest.h"

/* The snapshot directory of id in a local store into out. */
static int local_dir(struct cn_datastore *ds, const struct cn_snapshot_id *id, char *out,
		     size_t len)
{
	char rel[1024];
	int r = cn_snapshot_path(id, rel, sizeof(rel));
	if (r < 0)
		return r;
	if (snprintf(out, len, "%s/%s", cn_datastore_path(ds), rel) >= (int)len)
		return cn_error_set(-ENAMETOOLONG, "snapshot path too long");
	return 0;
}

/* -ENOENT with a message unless id is a finished snapshot of ds. */
static int local_exists(struct cn_datastore *ds, const struct cn_snapshot_id *id)
{
	struct cn_buf probe = {0};
	int r = cn_datastore_read_file(ds, id, CN_MANIFEST_BLOB_NAME, &probe);
	cn_buf_free(&probe);
	if (r == -ENOENT) {
		char snap[512];
		cn_snapshot_path(id, snap, sizeof(snap));
		return cn_error_set(-ENOENT, "snapshot %s not found in %s", snap,
				    cn_datastore_path(ds));
	}
	return r;
}

static int admin_set_protected(void *ctx, const struct cn_snapshot_id *id, int on)
{
	struct cli_endpoint *e = ctx;
	if (e->s3)
		return cn_s3_set_protected(e->s3, id, on);
	if (!e->ds)
		return cn_pbs_set_protected(e->pbs, id, on);
	int r = local_exists(e->ds, id);
	return r < 0 ? r : cn_datastore_set_protected(e->ds, id, on);
}

static int admin_forget(void *ctx, const struct cn_snapshot_id *id)
{
	struct cli_endpoint *e = ctx;
	if (e->s3)
		return cn_s3_forget(e->s3, id);
	if (!e->ds)
		return cn_pbs_forget(e->pbs, id);
	int r = local_exists(e->ds, id);
	return r < 0 ? r : cn_datastore_remove_snapshot(e->ds, id, 0);
}

void cli_endpoint_admin(struct cli_endpoint *e, struct cn_sync_admin *out)
{
	out->set_protected = admin_set_protected;
	out->forget = admin_forget;
	out->ctx = e;
}

/* -ENOENT with a message unless the PBS lists id. PBS answers "not
 * protected" for a snapshot it does not have (get_protection only looks
 * for the .protected file), so the flag alone cannot tell a typo. */
static int pbs_exists(struct cli_endpoint *e, const struct cn_snapshot_id *id)
{
	struct cn_snapshot_info *list = NULL;
	size_t n = 0;
	int r = cn_pbs_list_snapshots(e->pbs, id, &list, &n);
	if (r < 0)
		return r;
	int found = 0;
	for (size_t i = 0; i < n && !found; i++)
		found = list[i].id.time == id->time && !strcmp(list[i].id.type, id->type) &&
			!strcmp(list[i].id.id, id->id);
	free(list);
	if (!found) {
		char snap[512];
		cn_snapshot_path(id, snap, sizeof(snap));
		return cn_error_set(-ENOENT, "snapshot %s not found in %s", snap, e->name);
	}
	return 0;
}

int cli_endpoint_get_protected(struct cli_endpoint *e, const struct cn_snapshot_id *id)
{
	if (!e->pbs && !e->ds)
		return cn_error_set(-EINVAL, "no store");
	if (e->pbs) {
		int r = pbs_exists(e, id);
		return r < 0 ? r : cn_pbs_get_protected(e->pbs, id);
	}
	char dir[4096], path[4200];
	int r = local_exists(e->ds, id);
	if (r == 0)
		r = local_dir(e->ds, id, dir, sizeof(dir));
	if (r < 0)
		return r;
	snprintf(path, sizeof(path), "%s/.protected", dir);
	return access(path, F_OK) == 0;
}

/* The manifest of a local snapshot, decoded (no key: the signature is
 * kept as it is, and notes are outside it). */
static int local_manifest(struct cn_datastore *ds, const struct cn_snapshot_id *id,
			  struct cn_manifest **m)
{
	struct cn_buf raw = {0};
	int r = local_exists(ds, id);
	if (r == 0)
		r = cn_datastore_read_file(ds, id, CN_MANIFEST_BLOB_NAME, &raw);
	if (r == 0)
		r = cn_manifest_decode(raw.data, raw.len, NULL, m);
	cn_buf_free(&raw);
	return r;
}

int cli_endpoint_get_notes(struct cli_endpoint *e, const struct cn_snapshot_id *id, char **out)
{
	*out = NULL;
	if (e->pbs)
		return cn_pbs_get_notes(e->pbs, id, out);
	struct cn_manifest *m = NULL;
	int r = local_manifest(e->ds, id, &m);
	if (r < 0)
		return r;
	const char *notes = json_string_value(json_object_get(cn_manifest_unprotected(m), "notes"));
	*out = strdup(notes ? notes : "");
	cn_manifest_free(m);
	return *out ? 0 : cn_error_set(-ENOMEM, "out of memory");
}

/* Writes the snapshot's manifest anew with the notes replaced, as
 * upstream's update_manifest: under the manifest lock (.index.json.lck in
 * the snapshot directory, upstream's older place, which PBS ignores
 * otherwise), to a temporary file that is synced and renamed over it. */
static int local_set_notes(struct cn_datastore *ds, const struct cn_snapshot_id *id,
			   const char *text)
{
	char dir[4096], lock[4200], tmp[4200], dst[4200];
	int r = local_dir(ds, id, dir, sizeof(dir));
	if (r < 0)
		return r;
	snprintf(lock, sizeof(lock), "%s/.index.json.lck", dir);
	snprintf(tmp, sizeof(tmp), "%s/.index.json.blob.tmp", dir);
	snprintf(dst, sizeof(dst), "%s/%s", dir, CN_MANIFEST_BLOB_NAME);
	int lfd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	if (lfd < 0)
		return errno == ENOENT ? local_exists(ds, id) : cn_error_sys(-errno, "open %s", lock);
	if (flock(lfd, LOCK_EX) < 0) {
		r = cn_error_sys(-errno, "lock %s", lock);
		close(lfd);
		return r;
	}
	struct cn_manifest *m = NULL;
	struct cn_buf blob = {0};
	r = local_manifest(ds, id, &m);
	if (r == 0 && json_object_set_new(cn_manifest_unprotected(m), "notes", json_string(text)) < 0)
		r = cn_error_set(-EINVAL, "notes must be UTF-8 text");
	if (r == 0)
		r = cn_manifest_encode(m, NULL, &blob);
	if (r == 0) {
		int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
		if (fd < 0) {
			r = cn_error_sys(-errno, "create %s", tmp);
		} else {
			if (write(fd, blob.data, blob.len) != (ssize_t)blob.len || fsync(fd) < 0)
				r = cn_error_sys(errno ? -errno : -EIO, "write %s", tmp);
			if (close(fd) < 0 && r == 0)
				r = cn_error_sys(-errno, "write %s", tmp);
			if (r == 0 && rename(tmp, dst) < 0)
				r = cn_error_sys(-errno, "rename %s", tmp);
			if (r < 0)
				unlink(tmp);
		}
	}
	if (r == 0) {
		int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (dfd >= 0) {
			fsync(dfd);
			close(dfd);
		}
	}
	cn_buf_free(&blob);
	cn_manifest_free(m);
	close(lfd);
	return r;
}

int cli_endpoint_set_notes(struct cli_endpoint *e, const struct cn_snapshot_id *id,
			   const char *text)
{
	if (e->pbs)
		return cn_pbs_set_notes(e->pbs, id, text);
	return local_set_notes(e->ds, id, text);
}

int cli_endpoint_sync(struct cli_endpoint *from, struct cli_endpoint *to, const char *ns,
		      const struct cn_snapshot_id *sel, size_t nsel, struct cn_sync_opts *opts,
		      struct cn_sync_stats *st)
{
	struct cn_source *src = NULL, *dlist = NULL;
	struct cn_target *dst = NULL;
	if (to)
		cli_endpoint_admin(to, &opts->admin);
	int r = cli_endpoint_source(from, &src);
	if (r == 0 && to)
		r = cli_endpoint_source(to, &dlist);
	if (r == 0 && !opts->dry_run)
		r = to ? cli_endpoint_target(to, &dst) : cn_error_set(-EINVAL, "no destination");
	if (r == 0)
		r = cn_sync_run(src, dlist, dst, ns, sel, nsel, opts, st);
	if (dst)
		dst->ops->destroy(dst);
	if (dlist)
		dlist->ops->destroy(dlist);
	if (src)
		src->ops->destroy(src);
	return r;
}
