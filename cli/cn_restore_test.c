#include "cli/cn_restore_test.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/cn_error.h"
#include "common/cn_log.h"
#include "engine/cn_backup.h"
#include "pxar/cn_catalog_reader.h"
#include "engine/cn_restore.h"

struct candidate {
	char *path;     /* below the archive root, no leading '/' */
	uint64_t size;
	int64_t mtime;
};

struct pick {
	const char *prefix;   /* "media.pxar.didx/" */
	size_t prefix_len;
	struct candidate *c;
	size_t n, want;
	uint64_t seen;
	int err;
};

/* Reservoir sampling over the catalog's regular files. */
static int on_entry(void *ctx, const char *path, const struct cn_catalog_entry *e)
{
	struct pick *p = ctx;
	if (e->type != 'f' || strncmp(path, p->prefix, p->prefix_len))
		return 0;
	const char *rel = path + p->prefix_len;
	/* .pxarexclude-cli is made by the backup from its exclude list */
	if (!*rel || strpbrk(rel, "*?[\\") || !strcmp(rel, ".pxarexclude-cli"))
		return 0;
	p->seen++;
	size_t slot;
	if (p->n < p->want)
		slot = p->n++;
	else if ((slot = (size_t)(arc4random_uniform((uint32_t)(p->seen > UINT32_MAX ? UINT32_MAX : p->seen)))) >=
		 p->want)
		return 0;
	char *dup = strdup(rel);
	if (!dup) {
		p->err = -ENOMEM;
		return -ENOMEM;
	}
	free(p->c[slot].path);
	p->c[slot] = (struct candidate){dup, e->size, e->mtime};
	return 0;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *f)
{
	(void)st;
	(void)f;
	if (flag == FTW_DP)
		rmdir(path);
	else
		unlink(path);
	return 0;
}

/* 1 identical, 0 different, 2 the live file b is no longer a regular file
 * (changed since it was listed), <0 error (message set). */
static int same_content(const char *a, const char *b)
{
	/* The live file may have been swapped for a FIFO since it was listed:
	 * cn_open_regular refuses that instead of blocking the nightly run. */
	int fa = cn_open_regular(a, 0, NULL);
	int fb = fa < 0 ? -1 : cn_open_regular(b, O_NOFOLLOW, NULL);
	int r = 1;
	if (fa < 0 || fb < 0) {
		r = fa < 0 ? fa : (fb == -EINVAL || fb == -ELOOP) ? 2 : fb;
		goto out;
	}
	static __thread uint8_t ba[1 << 16], bb[1 << 16];
	for (;;) {
		ssize_t na = read(fa, ba, sizeof(ba));
		if (na < 0) {
			r = cn_error_sys(-errno, "read %s", a);
			break;
		}
		ssize_t nb = na ? 0 : read(fb, bb, 1);
		if (na == 0) {
			r = nb == 0;
			break;
		}
		if (cn_read_full(fb, bb, (size_t)na) < 0 || memcmp(ba, bb, (size_t)na)) {
			r = 0;
			break;
		}
	}
out:
	if (fa >= 0)
		close(fa);
	if (fb >= 0)
		close(fb);
	return r;
}

static void add_failure(json_t *arr, const char *path, const char *error)
{
	json_array_append_new(arr, json_pack("{s:s, s:s}", "path", path, "error", error));
}

int cn_restore_test(struct cn_source *src, const struct cn_snapshot_id *group,
		    const char *archive, const char *live_path, unsigned sample,
		    const struct cn_crypt_config *crypt, json_t **report)
{
	*report = NULL;
	struct cn_snapshot_info *list = NULL;
	size_t nlist = 0;
	int r = src->ops->list_snapshots(src, group, &list, &nlist);
	if (r < 0)
		return r;
	struct cn_snapshot_id id = *group;
	id.time = 0;
	for (size_t i = 0; i < nlist; i++)
		if (!strcmp(list[i].id.type, group->type) && !strcmp(list[i].id.id, group->id) &&
		    list[i].id.time > id.time)
			id.time = list[i].id.time;
	free(list);
	if (!id.time)
		return cn_error_set(-ENOENT, "%s has no snapshot of %s/%s", src->name, group->type,
				    group->id);
	char snap[512];
	if (cn_snapshot_path(&id, snap, sizeof(snap)) < 0)
		snprintf(snap, sizeof(snap), "%s/%s", id.type, id.id);

	struct cn_manifest *m = NULL;
	struct cn_index *idx = NULL;
	struct cn_buf cat = {0};
	struct cn_catalog_reader *cr = NULL;
	struct pick pk = {0};
	char prefix[300], tmp[4096] = "";
	json_t *failures = json_array();
	uint64_t identical = 0, changed = 0, failed = 0;
	snprintf(prefix, sizeof(prefix), "%s.didx/", archive);
	pk.prefix = prefix;
	pk.prefix_len = strlen(prefix);
	pk.want = sample;
	pk.c = calloc(sample ? sample : 1, sizeof(*pk.c));
	if (!pk.c || !failures) {
		r = cn_error_set(-ENOMEM, "out of memory");
		goto out;
	}
	r = cn_restore_open(src, &id, crypt, &m);
	if (r == 0)
		r = cn_restore_load_index(src, m, CN_CATALOG_INDEX_NAME, &idx);
	if (r == 0)
		r = cn_restore_read_stream(src, idx, crypt, &cat);
	if (r == 0)
		r = cn_catalog_reader_open(cat.data, cat.len, &cr);
	if (r == 0)
		r = cn_catalog_list(cr, NULL, on_entry, &pk);
	if (r == 0 && pk.err)
		r = cn_error_set(pk.err, "out of memory");
	if (r < 0) {
		cn_error_prefix(r, "restore test of %s on %s", snap, src->name);
		goto out;
	}
	const char *tmpdir = getenv("TMPDIR");
	snprintf(tmp, sizeof(tmp), "%s/cairn-restore-test-XXXXXX", tmpdir && *tmpdir ? tmpdir : "/tmp");
	if (!mkdtemp(tmp)) {
		r = cn_error_sys(-errno, "creating a temporary directory in %s",
				 tmpdir && *tmpdir ? tmpdir : "/tmp");
		tmp[0] = 0;
		goto out;
	}
	for (size_t i = 0; i < pk.n; i++) {
		const struct candidate *c = &pk.c[i];
		/* the catalog's name as it is: a '[' or '*' in it is no glob */
		struct cn_pxar_select *sel = NULL;
		cn_error_clear();
		int rr = cn_pxar_select_new(&sel);
		if (rr == 0)
			rr = cn_pxar_select_add_path(sel, c->path);
		struct cn_restore_opts ro = {.select = sel, .threads = 2, .crypt = crypt};
		struct cn_restore_stats rs;
		if (rr == 0)
			rr = cn_restore_archive(src, &id, archive, tmp, &ro, &rs);
		cn_pxar_select_free(sel);
		char got[8192], live[8192];
		snprintf(got, sizeof(got), "%s/%s", tmp, c->path);
		snprintf(live, sizeof(live), "%s/%s", live_path, c->path);
		struct stat gs, ls;
		if (rr < 0) {
			add_failure(failures, c->path, cn_error_message());
			failed++;
			continue;
		}
		if (lstat(got, &gs) < 0 || !S_ISREG(gs.st_mode) || (uint64_t)gs.st_size != c->size) {
			add_failure(failures, c->path, "restored file missing or of the wrong size");
			failed++;
			continue;
		}
		if (lstat(live, &ls) < 0 || !S_ISREG(ls.st_mode) || (uint64_t)ls.st_size != c->size ||
		    (int64_t)ls.st_mtime != c->mtime || (int64_t)ls.st_mtime >= id.time) {
			/* changed since the snapshot (or modified in its second) */
			changed++;
		} else {
			int same = same_content(got, live);
			if (same == 1) {
				identical++;
			} else if (same == 2) {
				changed++;
			} else {
				add_failure(failures, c->path, same == 0 ? "restored content differs from "
									   "the unchanged source file"
									 : cn_error_message());
				failed++;
			}
		}
		unlink(got);
	}
	*report = json_pack("{s:s, s:s, s:I, s:I, s:I, s:I, s:O}", "snapshot", snap, "archive",
			    archive, "sampled", (json_int_t)pk.n, "identical", (json_int_t)identical,
			    "changed", (json_int_t)changed, "failed", (json_int_t)failed, "failures",
			    failures);
	r = failed ? cn_error_set(-EIO, "restore test of %s on %s: %llu of %zu files failed", snap,
				  src->name, (unsigned long long)failed, pk.n)
		   : 0;
out:
	if (tmp[0])
		nftw(tmp, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
	for (size_t i = 0; pk.c && i < pk.n; i++)
		free(pk.c[i].path);
	free(pk.c);
	json_decref(failures);
	cn_catalog_reader_free(cr);
	cn_buf_free(&cat);
	cn_index_free(idx);
	cn_manifest_free(m);
	return r;
}
