/* cairn run — one scheduled run of the config file (what the systemd timer
 * starts every night):
 *   cairn run [--config FILE] [--dry-run] [--metrics-file PATH] [--restore-test]
 *
 * Shape of a run:
 *   supervisor (this process, single-threaded)
 *     - loads the config, takes the run lock (flock on
 *       STATE/run-<hash of the config path>.lock, non-blocking: a second
 *       run exits at once with CLI_EXIT_BUSY; the kernel drops the lock
 *       when a run dies, so a stale lock never blocks);
 *     - destroys ZFS snapshots left by a killed run and takes new ones;
 *     - forks the worker and waits; SIGTERM/SIGINT/SIGHUP are forwarded to
 *       it and remembered;
 *     - destroys the ZFS snapshots (always: failure, crash, signal),
 *       writes the run record into the history, the metrics file, runs the
 *       on-success/on-failure hook with the record on stdin.
 *   worker (child process): connects the targets, backs up every source
 *     to every target in one read (cn_backup_run), checks on each target
 *     that the snapshot is there, prunes each target by its retention
 *     (local: prune + GC; PBS: the server's prune API), runs the restore
 *     test when due, and sends its part of the record to the supervisor
 *     as JSON through a pipe.
 * The split keeps cleanup out of signal handlers and makes it happen even
 * when the worker crashes.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <openssl/sha.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/cli_common.h"
#include "cli/cli_s3admin.h"
#include "cli/cli_sched.h"
#include "cli/cli_snapadmin.h"
#include "cli/cn_history.h"
#include "cli/cn_proc.h"
#include "cli/cn_zfs.h"
#include "common/cn_error.h"
#include "common/cn_log.h"
#include "engine/cn_backup.h"
#include "engine/cn_sync.h"
#include "net/cn_pbs.h"
#include "net/cn_pbs_target.h"
#include "net/cn_s3.h"
#include "net/cn_s3_target.h"
#include "store/cn_datastore.h"
#include "store/cn_gc.h"
#include "store/cn_prune.h"

static volatile sig_atomic_t got_signal;

static void on_signal(int sig)
{
	got_signal = sig;
}

static void help(FILE *f)
{
	fprintf(f,
		"Usage: cairn run [--config FILE] [--dry-run] [--metrics-file PATH]\n"
		"                 [--restore-test | --no-restore-test]\n\n"
		"One scheduled run of the config file (default /etc/cairn/cairn.conf or\n"
		"$CAIRN_CONFIG): backs up every source to every target in one read of the\n"
		"source, prunes each target by its retention (local stores: prune and garbage\n"
		"collection; PBS: the server's prune), runs the restore test when it is due,\n"
		"records the run in the history (see 'cairn status'), writes the metrics\n"
		"file and runs the on-success / on-failure hook with the run summary JSON on\n"
		"stdin. Sources with a zfs-dataset are read from a ZFS snapshot taken for the\n"
		"run and destroyed afterwards, also when the run fails or is stopped.\n\n"
		"Options:\n"
		"  --config FILE          the config file\n"
		"  --dry-run              connect and show what prune would remove; no backup,\n"
		"                         no changes, no history record\n"
		"  --metrics-file PATH    Prometheus textfile (overrides the config key)\n"
		"  --restore-test         do the restore test now (sample from the config, or 5)\n"
		"  --no-restore-test      skip it even when due\n"
		"\nExit codes: 0 everything succeeded; 3 finished with warnings (a target or\n"
		"source failed, files were skipped, a prune or the restore test failed);\n"
		"1 no snapshot was made anywhere (or the run was stopped); 7 another run of\n"
		"this config is running; 8 invalid config.\n");
}

static double now_real(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* ---------------------------------------------------------------- worker */

struct worker {
	const struct cn_config *cfg;
	int dry_run;
	int restore_test;       /* sample size, 0 = none */
	const struct cn_crypt_config *crypt; /* the config's keyfile, or NULL */
	const char **read_from; /* per source: directory to read, NULL = skip */
	const char **skip_why;  /* per source: why it is skipped */
	struct cli_endpoint *eps;
	int *open_ok;
	int *given_up;          /* per target: its backup failed in this run */
	json_t **tj;            /* per target record */
	json_t **sj;            /* per source record */
};

static void mark_failed(json_t *o, const char *msg)
{
	json_object_set_new(o, "result", json_string("failed"));
	json_t *m = json_object_get(o, "message");
	if (!json_is_string(m))
		json_object_set_new(o, "message", json_string(msg));
}

/* 1 if snapshot id is listed on target i, 0 if not, <0 error. */
static int snapshot_present(struct worker *w, size_t i, const struct cn_snapshot_id *id)
{
	struct cn_source *src;
	int r = cli_endpoint_source(&w->eps[i], &src);
	if (r < 0)
		return r;
	struct cn_snapshot_info *list = NULL;
	size_t n = 0;
	r = src->ops->list_snapshots(src, id, &list, &n);
	int found = 0;
	for (size_t k = 0; r >= 0 && k < n; k++)
		if (list[k].id.time == id->time && !strcmp(list[k].id.id, id->id) &&
		    !strcmp(list[k].id.type, id->type))
			found = 1;
	free(list);
	src->ops->destroy(src);
	return r < 0 ? r : found;
}

/* catch-up: copies what target i lacks of the configured sources' groups
 * from the first other target that opened (engine/cn_sync.h), before the
 * backups, so both hold the same history after a night one was down. */
static void catch_up_target(struct worker *w, size_t i)
{
	const struct cn_config *c = w->cfg;
	const struct cn_config_target *t = &c->targets[i];
	size_t from = c->n_targets;
	for (size_t k = 0; k < c->n_targets && from == c->n_targets; k++)
		if (k != i && w->open_ok[k])
			from = k;
	if (from == c->n_targets) {
		cn_log_warning("target %s: catch-up: no other target could be opened", t->name);
		return;
	}
	struct cn_snapshot_id *groups = calloc(c->n_sources ? c->n_sources : 1, sizeof(*groups));
	struct cn_sync_stats st = {0};
	struct cn_sync_opts so = {.dry_run = w->dry_run};
	int r = groups ? 0 : cn_error_set(-ENOMEM, "out of memory");
	for (size_t si = 0; r == 0 && si < c->n_sources; si++)
		cli_sched_group(c, &c->sources[si], &groups[si]);
	/* one call per group: each carries its own namespace */
	for (size_t si = 0; r == 0 && si < c->n_sources; si++) {
		int e = cli_endpoint_sync(&w->eps[from], &w->eps[i], groups[si].ns, &groups[si], 1,
					  &so, &st);
		if (e < 0 && st.copied + st.present + st.failed == 0)
			r = e;
		else if (e < 0)
			cn_log_error("target %s: catch-up from %s: %s", t->name, c->targets[from].name,
				     cn_error_message());
	}
	json_object_set_new(w->tj[i], "caught-up", json_integer((json_int_t)st.copied));
	json_object_set_new(w->tj[i], "caught-up-from", json_string(c->targets[from].name));
	if (r < 0 || st.failed) {
		char m[1200];
		snprintf(m, sizeof(m), "catch-up from %s: %s", c->targets[from].name,
			 r < 0 ? cn_error_message() : "some snapshots could not be copied (see the log)");
		mark_failed(w->tj[i], m);
		cn_log_error("target %s: %s", t->name, m);
	}
	cn_log_notice("target %s: %s %zu snapshot(s) from %s (%zu already there, %zu older than "
		      "its newest)", t->name, w->dry_run ? "catch-up would copy" : "caught up",
		      st.copied, c->targets[from].name, st.present, st.skipped_older);
	free(groups);
}

static void backup_source(struct worker *w, size_t si)
{
	const struct cn_config *c = w->cfg;
	const struct cn_config_source *s = &c->sources[si];
	json_t *sj = w->sj[si];
	struct cn_target *targets[64];
	struct cn_source *sources[64] = {0};
	size_t tidx[64], nt = 0;
	char fcdir[4096];
	int metadata = s->change_detection == CN_CDM_METADATA;
	if (metadata) {
		/* the file caches live with the run state: they must survive
		 * reboots, and deleting them only costs one slower run */
		char state[4000];
		cn_config_state_dir(c, state, sizeof(state));
		snprintf(fcdir, sizeof(fcdir), "%s/filecache", state);
		if (cn_mkdir_p(fcdir, 0700) < 0) {
			cn_log_warning("file cache directory %s not usable (%s); every file will be read",
				       fcdir, cn_error_message());
			metadata = 0;
		}
	}
	for (size_t i = 0; i < c->n_targets && nt < CN_ARRAY_SIZE(targets); i++) {
		if (!w->open_ok[i])
			continue;
		if (cli_endpoint_target(&w->eps[i], &targets[nt]) < 0) {
			cn_log_error("target %s: %s", c->targets[i].name, cn_error_message());
			continue;
		}
		if (metadata && cli_endpoint_source(&w->eps[i], &sources[nt]) < 0)
			sources[nt] = NULL;
		tidx[nt++] = i;
	}
	struct cn_backup_archive arch = {.name = s->archive, .path = w->read_from[si]};
	struct cn_backup_opts bo = {0};
	cli_sched_group(w->cfg, s, &bo.id);
	bo.archives = &arch;
	bo.n_archives = 1;
	bo.threads = c->threads;
	bo.stall_timeout_ms = c->stall_timeout * 1000;
	bo.excludes = (const char *const *)s->excludes;
	bo.n_excludes = s->n_excludes;
	bo.all_file_systems = s->all_file_systems;
	bo.skip_lost_found = s->skip_lost_found;
	bo.change_detection = (enum cn_change_detection)s->change_detection;
	bo.crypt = w->crypt;
	if (metadata) {
		bo.filecache_dir = fcdir;
		bo.sources = sources;
	}
	struct cn_backup_stats st;
	memset(&st, 0, sizeof(st));
	char (*terr)[CN_BACKUP_TARGET_ERROR_MAX] = calloc(nt ? nt : 1, sizeof(*terr));
	st.target_errors = terr;
	int r = nt ? 0 : cn_error_set(-ENOTCONN, "no target could be reached");
	if (r == 0) {
		cn_log_notice("source %s: backing up %s to %zu target(s)", s->name, w->read_from[si],
			      nt);
		r = cn_backup_run(targets, nt, &bo, &st);
	}
	char snap[512] = "";
	if (r == 0)
		cli_snapshot_text(&st.id, snap, sizeof(snap));
	json_object_set_new(sj, "snapshot", json_string(snap));
	json_object_set_new(sj, "files", json_integer((json_int_t)st.files));
	json_object_set_new(sj, "dirs", json_integer((json_int_t)st.dirs));
	json_object_set_new(sj, "bytes-read", json_integer((json_int_t)st.bytes_read));
	json_object_set_new(sj, "archive-bytes", json_integer((json_int_t)st.stream_bytes));
	json_object_set_new(sj, "chunks", json_integer((json_int_t)st.chunks));
	json_object_set_new(sj, "new-chunks", json_integer((json_int_t)st.chunks_new));
	json_object_set_new(sj, "new-bytes", json_integer((json_int_t)st.bytes_new));
	json_object_set_new(sj, "new-bytes-stored", json_integer((json_int_t)st.bytes_new_encoded));
	json_object_set_new(sj, "skipped", json_integer((json_int_t)st.skipped));
	json_object_set_new(sj, "files-reused", json_integer((json_int_t)st.files_reused));
	json_object_set_new(sj, "chunks-missing", json_integer((json_int_t)st.chunks_missing));
	json_object_set_new(sj, "duration", json_real(st.duration));
	size_t ok = 0;
	char errmsg[1024];
	snprintf(errmsg, sizeof(errmsg), "%s", r < 0 ? cn_error_message() : "");
	for (size_t k = 0; k < nt; k++) {
		size_t i = tidx[k];
		json_t *tj = w->tj[i];
		uint64_t uploaded = 0;
		if (c->targets[i].kind == CN_CONFIG_PBS) {
			struct cn_pbs_target_stats ps;
			cn_pbs_target_stats(targets[k], &ps);
			uploaded = ps.bytes_uploaded;
		} else if (c->targets[i].kind == CN_CONFIG_S3) {
			struct cn_s3_target_stats ss;
			cn_s3_target_stats(targets[k], &ss);
			uploaded = ss.bytes_uploaded;
		}
		/* a target the backup gave up (stalled, unreachable, refused)
		 * is not asked again whether it has the snapshot, and not
		 * pruned: each call would wait for the same timeout */
		const char *failed = terr && terr[k][0] ? terr[k] : NULL;
		if (failed)
			w->given_up[i] = 1;
		int present = r == 0 && !failed ? snapshot_present(w, i, &st.id) : 0;
		if (present == 1) {
			ok++;
			if (c->targets[i].kind == CN_CONFIG_LOCAL)
				uploaded = st.bytes_new_encoded;
		}
		json_t *b = json_pack("{s:s, s:s, s:s, s:I}", "source", s->name, "snapshot",
				      present == 1 ? snap : "", "result", present == 1 ? "ok" : "failed",
				      "bytes-uploaded", (json_int_t)uploaded);
		if (present != 1) {
			char m[1200];
			snprintf(m, sizeof(m), "backup of %s: %s", s->name,
				 failed ? failed : r < 0 ? errmsg : present < 0 ? cn_error_message()
				 : "the snapshot is not on this target (see the log)");
			json_object_set_new(b, "message", json_string(m));
			mark_failed(tj, m);
			cn_log_error("target %s: %s", c->targets[i].name, m);
		}
		json_array_append_new(json_object_get(tj, "backups"), b);
		json_object_set_new(tj, "bytes-uploaded",
				    json_integer(json_integer_value(json_object_get(tj, "bytes-uploaded")) +
						 (json_int_t)uploaded));
		json_object_set_new(tj, "new-chunks",
				    json_integer(json_integer_value(json_object_get(tj, "new-chunks")) +
						 (json_int_t)st.chunks_new));
		targets[k]->ops->destroy(targets[k]);
		if (sources[k])
			sources[k]->ops->destroy(sources[k]);
	}
	free(terr);
	json_object_set_new(sj, "targets-ok", json_integer((json_int_t)ok));
	json_object_set_new(sj, "targets-total", json_integer((json_int_t)c->n_targets));
	if (r < 0) {
		mark_failed(sj, errmsg);
		cn_log_error("source %s: %s", s->name, errmsg);
	} else if (ok < c->n_targets || st.skipped || st.chunks_missing) {
		json_object_set_new(sj, "result", json_string("partial"));
		if (st.chunks_missing)
			json_object_set_new(sj, "message",
					    json_sprintf("a store lacked %llu chunks of the previous "
							 "snapshot (stored again; verify the older ones)",
							 (unsigned long long)st.chunks_missing));
		else if (st.skipped)
			json_object_set_new(sj, "message",
					    json_sprintf("%llu entries could not be read and were skipped",
							 (unsigned long long)st.skipped));
		else
			json_object_set_new(sj, "message",
					    json_sprintf("published on %zu of %zu targets", ok,
							 c->n_targets));
	}
	if (r == 0)
		cn_log_notice("source %s: snapshot %s on %zu of %zu target(s), %llu new chunks", s->name,
			      snap, ok, c->n_targets, (unsigned long long)st.chunks_new);
}

static void prune_target(struct worker *w, size_t i)
{
	const struct cn_config *c = w->cfg;
	const struct cn_config_target *t = &c->targets[i];
	json_t *tj = w->tj[i];
	if (!cn_config_keeps_something(&t->keep))
		return;
	size_t removed = 0;
	json_t *would = json_array();
	for (size_t si = 0; si < c->n_sources; si++) {
		struct cn_snapshot_id g;
		cli_sched_group(w->cfg, &c->sources[si], &g);
		int r;
		if (w->eps[i].ds || w->eps[i].s3) {
			struct cn_prune_keep k = {t->keep.last, t->keep.hourly, t->keep.daily,
						  t->keep.weekly, t->keep.monthly, t->keep.yearly};
			struct cn_prune_entry *list = NULL;
			size_t n = 0;
			r = w->eps[i].ds ? cn_datastore_prune_group(w->eps[i].ds, &g, &k, w->dry_run,
								    &list, &n)
					 : cli_s3_prune_group(w->eps[i].s3, &g, &k, w->dry_run, &list,
							      &n);
			for (size_t x = 0; r >= 0 && x < n; x++)
				if (list[x].mark == CN_PRUNE_REMOVE) {
					char s[512];
					cli_snapshot_text(&list[x].id, s, sizeof(s));
					json_array_append_new(would, json_string(s));
				}
			if (r > 0)
				removed += (size_t)r;
			free(list);
		} else {
			struct cn_pbs_keep pk = {(int)t->keep.last, (int)t->keep.hourly,
						 (int)t->keep.daily, (int)t->keep.weekly,
						 (int)t->keep.monthly, (int)t->keep.yearly};
			struct cn_pbs_prune_item *list = NULL;
			size_t n = 0;
			r = cn_pbs_prune(w->eps[i].pbs, &g, &pk, w->dry_run, &list, &n);
			for (size_t x = 0; r >= 0 && x < n; x++)
				if (!list[x].keep) {
					char s[512];
					cli_snapshot_text(&list[x].id, s, sizeof(s));
					json_array_append_new(would, json_string(s));
					removed++;
				}
			free(list);
		}
		if (r < 0) {
			char m[1200];
			snprintf(m, sizeof(m), "prune of %s/%s: %s", g.type, g.id, cn_error_message());
			mark_failed(tj, m);
			cn_log_error("target %s: %s", t->name, m);
		}
	}
	json_object_set_new(tj, "pruned", json_integer((json_int_t)removed));
	json_object_set_new(tj, w->dry_run ? "would-prune" : "pruned-snapshots", would);
	cn_log_notice("target %s: %s %zu snapshot(s)", t->name,
		      w->dry_run ? "prune would remove" : "pruned", removed);
	if ((w->eps[i].ds || w->eps[i].s3) && t->gc && !w->dry_run) {
		struct cn_gc_stats gs;
		memset(&gs, 0, sizeof(gs));
		int r = w->eps[i].ds ? cn_datastore_gc(w->eps[i].ds, NULL, &gs)
				     : cli_s3_gc(w->eps[i].s3, NULL, &gs);
		if (r < 0) {
			char m[1200];
			snprintf(m, sizeof(m), "garbage collection: %s", cn_error_message());
			mark_failed(tj, m);
			cn_log_error("target %s: %s", t->name, m);
		} else {
			json_object_set_new(tj, "gc-removed-chunks", json_integer((json_int_t)gs.removed_chunks));
			json_object_set_new(tj, "gc-removed-bytes", json_integer((json_int_t)gs.removed_bytes));
		}
	}
}

static void restore_test_target(struct worker *w, size_t i)
{
	const struct cn_config *c = w->cfg;
	const char **live = calloc(c->n_sources, sizeof(char *));
	if (!live)
		return;
	/* compare with the real path (a ZFS source's mountpoint), not the snapshot */
	for (size_t si = 0; si < c->n_sources; si++)
		live[si] = json_string_value(json_object_get(w->sj[si], "path"));
	char err[1024];
	json_t *rep = cli_sched_restore_test(c, c->targets[i].name, &w->eps[i], live,
					     (unsigned)w->restore_test, w->crypt, err, sizeof(err));
	free(live);
	if (err[0])
		mark_failed(w->tj[i], err);
	json_object_set_new(w->tj[i], "restore-test", rep);
}

/* The worker's part of the record: {"sources": [...], "targets": [...]}. */
static json_t *worker_run(struct worker *w)
{
	const struct cn_config *c = w->cfg;
	for (size_t i = 0; i < c->n_targets; i++) {
		const struct cn_config_target *t = &c->targets[i];
		cn_error_clear();
		int r = cli_sched_open_target(t, !w->dry_run, &w->eps[i]);
		/* a server that stops answering fails its target within the
		 * stall timeout in every step: catch-up, session set-up, the
		 * upload, listings and prune */
		if (r == 0 && w->eps[i].pbs)
			cn_pbs_set_io_timeout(w->eps[i].pbs, (int)c->stall_timeout * 1000);
		json_object_set_new(w->tj[i], "endpoint",
				    json_string(r == 0 ? w->eps[i].name
						       : t->kind == CN_CONFIG_LOCAL ? t->path
						       : t->kind == CN_CONFIG_S3    ? t->bucket
										    : t->repository));
		if (r < 0) {
			char m[1200];
			snprintf(m, sizeof(m), "cannot open target: %s", cn_error_message());
			mark_failed(w->tj[i], m);
			cn_log_error("target %s: %s", t->name, m);
			continue;
		}
		w->open_ok[i] = 1;
	}
	for (size_t i = 0; i < c->n_targets; i++)
		if (w->open_ok[i] && c->targets[i].catch_up)
			catch_up_target(w, i);
	for (size_t si = 0; si < c->n_sources; si++) {
		if (!w->read_from[si]) {
			mark_failed(w->sj[si], w->skip_why[si] ? w->skip_why[si] : "skipped");
			json_object_set_new(w->sj[si], "targets-ok", json_integer(0));
			continue;
		}
		if (!w->dry_run)
			backup_source(w, si);
	}
	for (size_t i = 0; i < c->n_targets; i++)
		if (w->open_ok[i] && w->given_up[i])
			cn_log_warning("target %s: not pruned%s: its backup failed in this run",
				       c->targets[i].name, w->restore_test ? " or restore-tested" : "");
	for (size_t i = 0; i < c->n_targets; i++)
		if (w->open_ok[i] && !w->given_up[i])
			prune_target(w, i);
	if (w->restore_test && !w->dry_run)
		for (size_t i = 0; i < c->n_targets; i++)
			if (w->open_ok[i] && !w->given_up[i])
				restore_test_target(w, i);
	json_t *out = json_object(), *sa = json_array(), *ta = json_array();
	for (size_t si = 0; si < c->n_sources; si++)
		json_array_append(sa, w->sj[si]);
	for (size_t i = 0; i < c->n_targets; i++)
		json_array_append(ta, w->tj[i]);
	json_object_set_new(out, "sources", sa);
	json_object_set_new(out, "targets", ta);
	for (size_t i = 0; i < c->n_targets; i++)
		if (w->open_ok[i]) {
			cn_datastore_close(w->eps[i].ds);
			cn_pbs_free(w->eps[i].pbs);
			cn_s3_free(w->eps[i].s3);
		}
	return out;
}

/* ------------------------------------------------------------ supervisor */

static int take_lock(const char *state, const char *config_abs, char *lock_path, size_t len,
		     int *fd_out)
{
	unsigned char h[SHA256_DIGEST_LENGTH];
	SHA256((const unsigned char *)config_abs, strlen(config_abs), h);
	char hex[17];
	cn_hex_encode(h, 8, hex);
	snprintf(lock_path, len, "%s/run-%s.lock", state, hex);
	int fd = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0)
		return cn_error_sys(-errno, "opening the run lock %s", lock_path);
	if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
		int e = errno;
		close(fd);
		if (e == EWOULDBLOCK)
			return -EWOULDBLOCK;
		return cn_error_sys(-e, "locking %s", lock_path);
	}
	/* who holds it, for a curious admin (the lock itself is the flock) */
	char who[64];
	int n = snprintf(who, sizeof(who), "%ld\n", (long)getpid());
	if (ftruncate(fd, 0) == 0)
		(void)!pwrite(fd, who, (size_t)n, 0);
	*fd_out = fd;
	return 0;
}

static void run_hook(const struct cn_config *c, const char *cmd, const char *text)
{
	const char *argv[] = {"/bin/sh", "-c", cmd, NULL};
	struct cn_proc_result res;
	struct cn_buf err = {0};
	int r = cn_proc_run(argv, text, strlen(text), NULL, &err, c->hook_timeout, &res);
	if (r < 0) {
		cn_log_error("hook '%s': %s", cmd, cn_error_message());
	} else if (!res.exited || res.status) {
		char how[64];
		cn_proc_describe(&res, c->hook_timeout, how, sizeof(how));
		cn_buf_append(&err, "", 1);
		cn_log_error("hook '%s' failed (%s)%s%.300s", cmd, how, err.len > 1 ? ": " : "",
			     (const char *)err.data);
	}
	cn_buf_free(&err);
}

/* Whether a restore test is due: none recorded within restore-test-every-days. */
static int restore_test_due(const struct cn_config *c, json_t *runs, const char *config_abs,
			    double now)
{
	if (!c->restore_test_sample)
		return 0;
	for (size_t i = json_array_size(runs); i-- > 0;) {
		json_t *rec = json_array_get(runs, i);
		const char *cf = json_string_value(json_object_get(rec, "config"));
		if (!cf || strcmp(cf, config_abs))
			continue;
		json_t *t;
		size_t k;
		json_array_foreach(json_object_get(rec, "targets"), k, t)
			if (json_object_get(t, "restore-test"))
				return now - json_number_value(json_object_get(rec, "start")) >
				       c->restore_test_every * 86400.0 - 3600;
	}
	return 1;
}

static int cmd_run(int argc, char **argv)
{
	enum { O_DRY = 1000, O_METRICS, O_RTEST, O_NO_RTEST };
	static const struct option opts[] = {
		{"config", required_argument, NULL, 'c'},
		{"dry-run", no_argument, NULL, O_DRY},
		{"metrics-file", required_argument, NULL, O_METRICS},
		{"restore-test", no_argument, NULL, O_RTEST},
		{"no-restore-test", no_argument, NULL, O_NO_RTEST},
		{"help", no_argument, NULL, 'h'},
		{0},
	};
	const char *path = NULL, *metrics = NULL;
	int dry = 0, rtest = -1, o;
	while ((o = getopt_long(argc, argv, "+hc:", opts, NULL)) != -1) {
		switch (o) {
		case 'h':
			help(stdout);
			return CLI_EXIT_OK;
		case 'c':
			path = optarg;
			break;
		case O_DRY:
			dry = 1;
			break;
		case O_METRICS:
			metrics = optarg;
			break;
		case O_RTEST:
			rtest = 1;
			break;
		case O_NO_RTEST:
			rtest = 0;
			break;
		default:
			return cli_usage_error("run", "unknown option");
		}
	}
	if (optind != argc)
		return cli_usage_error("run", "unexpected argument '%s'", argv[optind]);
	struct cn_config *cfg;
	int exit_code = cli_sched_load("run", path, &cfg);
	if (exit_code)
		return exit_code;
	struct cn_crypt_config *crypt = NULL;
	if (cli_sched_load_key(cfg, &crypt) < 0) {
		fprintf(stderr, "cairn run: %s: %s\n", cfg->path, cn_error_message());
		cn_config_free(cfg);
		return CLI_EXIT_CONFIG;
	}
	if (!metrics)
		metrics = cfg->metrics_file;
	char config_abs[4096], state[4096], lock_path[4300];
	if (!realpath(cfg->path, config_abs))
		snprintf(config_abs, sizeof(config_abs), "%s", cfg->path);
	cn_config_state_dir(cfg, state, sizeof(state));
	int lock_fd = -1, r = cn_mkdir_p(state, 0700);
	if (r == 0)
		r = take_lock(state, config_abs, lock_path, sizeof(lock_path), &lock_fd);
	if (r == -EWOULDBLOCK) {
		fprintf(stderr, "cairn run: another run of %s is in progress (lock %s is held); "
				"not starting a second one\n", config_abs, lock_path);
		cn_crypt_config_free(crypt);
		cn_config_free(cfg);
		return CLI_EXIT_BUSY;
	}
	if (r < 0) {
		fprintf(stderr, "cairn run: state directory %s: %s\n", state, cn_error_message());
		cn_crypt_config_free(crypt);
		cn_config_free(cfg);
		return CLI_EXIT_ERROR;
	}
	struct sigaction sig = {0};
	sig.sa_handler = on_signal;
	sigemptyset(&sig.sa_mask);
	sigaction(SIGTERM, &sig, NULL);
	sigaction(SIGINT, &sig, NULL);
	sigaction(SIGHUP, &sig, NULL);

	json_t *runs = NULL;
	if (cn_history_load(state, &runs) < 0) {
		cn_log_warning("run history: %s", cn_error_message());
		runs = json_array();
	}
	double start = now_real();
	size_t ns = cfg->n_sources, ntg = cfg->n_targets;
	struct cn_zfs_snapshot *zs = calloc(ns, sizeof(*zs));
	const char **read_from = calloc(ns, sizeof(char *));
	char **skip_why = calloc(ns, sizeof(char *));
	struct cli_endpoint *eps = calloc(ntg, sizeof(*eps));
	int *open_ok = calloc(ntg, sizeof(int)), *given_up = calloc(ntg, sizeof(int));
	json_t **sj = calloc(ns, sizeof(json_t *)), **tj = calloc(ntg, sizeof(json_t *));
	if (!zs || !read_from || !skip_why || !eps || !open_ok || !given_up || !sj || !tj) {
		fprintf(stderr, "cairn run: out of memory\n");
		exit(CLI_EXIT_ERROR);
	}
	int rsample = 0;
	if (rtest == 1)
		rsample = cfg->restore_test_sample ? (int)cfg->restore_test_sample : 5;
	else if (rtest == -1 && restore_test_due(cfg, runs, config_abs, start))
		rsample = (int)cfg->restore_test_sample;
	cn_log_notice("run of %s started%s", config_abs, dry ? " (dry run)" : "");

	for (size_t i = 0; i < ns; i++) {
		const struct cn_config_source *s = &cfg->sources[i];
		sj[i] = json_pack("{s:s, s:s, s:s}", "name", s->name, "archive", s->archive, "result",
				  "ok");
		if (s->path)
			json_object_set_new(sj[i], "path", json_string(s->path));
		read_from[i] = s->path;
		if (!s->zfs_dataset || dry)
			continue;
		if (got_signal)
			break;
		int k = cn_zfs_destroy_stale(s->zfs_dataset);
		if (k > 0)
			cn_log_warning("source %s: destroyed %d ZFS snapshot(s) left by an earlier run",
				       s->name, k);
		if (cn_zfs_snapshot_create(s->zfs_dataset, s->path, (int64_t)start, &zs[i]) < 0) {
			skip_why[i] = strdup(cn_error_message());
			read_from[i] = NULL;
			cn_log_error("source %s: %s", s->name, cn_error_message());
			continue;
		}
		cn_log_notice("source %s: reading ZFS snapshot %s at %s", s->name, zs[i].name,
			      zs[i].read_path);
		read_from[i] = zs[i].read_path;
		if (!s->path)
			json_object_set_new(sj[i], "path", json_string(zs[i].mountpoint));
		json_object_set_new(sj[i], "read-from", json_string(zs[i].read_path));
		json_object_set_new(sj[i], "zfs-snapshot", json_string(zs[i].name));
	}
	for (size_t i = 0; i < ntg; i++) {
		const struct cn_config_target *t = &cfg->targets[i];
		tj[i] = json_pack("{s:s, s:s, s:s, s:[], s:I, s:I}", "name", t->name, "kind",
				  t->kind == CN_CONFIG_LOCAL ? "local" : t->kind == CN_CONFIG_S3 ? "s3" : "pbs",
				  "result", "ok",
				  "backups", "bytes-uploaded", (json_int_t)0, "pruned", (json_int_t)0);
		if (t->catch_up)
			json_object_set_new(tj[i], "caught-up", json_integer(0));
	}

	/* the worker */
	json_t *wres = NULL;
	char why[512] = "";
	int pfd[2];
	pid_t pid = -1;
	if (!got_signal && pipe2(pfd, O_CLOEXEC) == 0) {
		fflush(NULL);
		pid_t supervisor = getpid();
		pid = fork();
		if (pid == 0) {
			close(pfd[0]);
			/* a supervisor killed outright must not leave the worker running
			 * with the lock (the next run cleans up its ZFS snapshot) */
			prctl(PR_SET_PDEATHSIG, SIGTERM);
			if (getppid() != supervisor)
				_exit(1);
			signal(SIGTERM, SIG_DFL);
			signal(SIGINT, SIG_DFL);
			signal(SIGHUP, SIG_DFL);
			struct worker w = {cfg, dry, rsample, crypt, read_from, (const char **)skip_why,
					   eps, open_ok, given_up, tj, sj};
			json_t *res = worker_run(&w);
			char *text = json_dumps(res, JSON_COMPACT);
			int ok = text && cn_write_full(pfd[1], text, strlen(text)) == 0;
			_exit(ok ? 0 : 1);
		}
		close(pfd[1]);
		if (pid < 0) {
			snprintf(why, sizeof(why), "cannot start the worker: %s", strerror(errno));
			close(pfd[0]);
		}
	}
	if (pid > 0) {
		struct cn_buf buf = {0};
		int forwarded = 0;
		for (;;) {
			if (got_signal && !forwarded) {
				kill(pid, SIGTERM);
				forwarded = 1;
			}
			uint8_t b[65536];
			ssize_t n = read(pfd[0], b, sizeof(b));
			if (n > 0) {
				cn_buf_append(&buf, b, (size_t)n);
				continue;
			}
			if (n < 0 && errno == EINTR)
				continue;
			break;
		}
		close(pfd[0]);
		int status;
		while (waitpid(pid, &status, 0) < 0) {
			if (errno != EINTR)
				break;
			if (got_signal && !forwarded) {
				kill(pid, SIGTERM);
				forwarded = 1;
			}
		}
		if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
			wres = json_loadb((const char *)buf.data, buf.len, 0, NULL);
		else if (WIFSIGNALED(status))
			snprintf(why, sizeof(why), "the run was stopped (worker ended by signal %d)",
				 WTERMSIG(status));
		else
			snprintf(why, sizeof(why), "the worker failed (exit status %d)",
				 WIFEXITED(status) ? WEXITSTATUS(status) : -1);
		cn_buf_free(&buf);
	}
	if (got_signal && !why[0] && !wres)
		snprintf(why, sizeof(why), "the run was stopped by signal %d", (int)got_signal);

	/* ZFS snapshots go, whatever happened */
	char zfs_err[1024] = "";
	for (size_t i = 0; i < ns; i++) {
		if (!zs[i].name[0])
			continue;
		if (cn_zfs_snapshot_destroy(&zs[i]) < 0) {
			snprintf(zfs_err, sizeof(zfs_err), "%s", cn_error_message());
			cn_log_error("source %s: %s", cfg->sources[i].name, zfs_err);
		} else {
			cn_log_info("source %s: destroyed ZFS snapshot %s", cfg->sources[i].name, zs[i].name);
		}
	}

	/* the record */
	double end = now_real();
	json_t *rec = json_object();
	json_object_set_new(rec, "config", json_string(config_abs));
	json_object_set_new(rec, "start", json_real(start));
	json_object_set_new(rec, "end", json_real(end));
	json_object_set_new(rec, "duration", json_real(end - start));
	json_object_set_new(rec, "dry-run", json_boolean(dry));
	json_t *sa = wres ? json_incref(json_object_get(wres, "sources")) : NULL;
	json_t *ta = wres ? json_incref(json_object_get(wres, "targets")) : NULL;
	if (!json_is_array(sa) || !json_is_array(ta)) {
		json_decref(sa);
		json_decref(ta);
		sa = json_array();
		ta = json_array();
		for (size_t i = 0; i < ns; i++) {
			mark_failed(sj[i], why[0] ? why : "the run did not finish");
			json_array_append(sa, sj[i]);
		}
		for (size_t i = 0; i < ntg; i++) {
			mark_failed(tj[i], why[0] ? why : "the run did not finish");
			json_array_append(ta, tj[i]);
		}
	}
	json_object_set_new(rec, "sources", sa);
	json_object_set_new(rec, "targets", ta);
	size_t published = 0, failures = 0;
	json_t *e;
	size_t k;
	json_array_foreach(sa, k, e) {
		published += json_integer_value(json_object_get(e, "targets-ok")) > 0;
		failures += strcmp(json_string_value(json_object_get(e, "result")) ?: "", "ok") != 0;
	}
	json_array_foreach(ta, k, e)
		failures += strcmp(json_string_value(json_object_get(e, "result")) ?: "", "ok") != 0;
	if (zfs_err[0])
		failures++;
	const char *result;
	if (got_signal || (!wres && why[0])) {
		result = got_signal ? "interrupted" : "failed";
		exit_code = CLI_EXIT_ERROR;
	} else if (dry) {
		result = failures ? "partial" : "ok";
		exit_code = failures ? CLI_EXIT_PARTIAL : CLI_EXIT_OK;
	} else if (published == 0) {
		result = "failed";
		exit_code = CLI_EXIT_ERROR;
	} else if (failures) {
		result = "partial";
		exit_code = CLI_EXIT_PARTIAL;
	} else {
		result = "ok";
		exit_code = CLI_EXIT_OK;
	}
	json_object_set_new(rec, "result", json_string(result));
	json_object_set_new(rec, "exit-code", json_integer(exit_code));
	if (why[0] || zfs_err[0])
		json_object_set_new(rec, "message", json_string(why[0] ? why : zfs_err));
	cn_log(exit_code == 0 ? CN_LOG_NOTICE : CN_LOG_ERROR,
	       "run of %s finished: %s (%zu of %zu source(s) published), %.1fs", config_abs, result,
	       published, ns, end - start);

	if (dry) {
		cli_json_print(json_incref(rec));
	} else {
		if (cn_history_append(state, rec, cfg->history_keep) < 0)
			cn_log_error("run history: %s", cn_error_message());
		json_array_append(runs, rec);
		if (metrics && cn_metrics_write(metrics, runs, config_abs) < 0)
			cn_log_error("metrics file: %s", cn_error_message());
		const char *hook = exit_code == 0 ? cfg->on_success : cfg->on_failure;
		if (hook) {
			char *text = json_dumps(rec, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
			if (text)
				run_hook(cfg, hook, text);
			free(text);
		}
	}
	json_decref(rec);
	json_decref(runs);
	json_decref(wres);
	for (size_t i = 0; i < ns; i++) {
		json_decref(sj[i]);
		free(skip_why[i]);
	}
	for (size_t i = 0; i < ntg; i++)
		json_decref(tj[i]);
	free(sj);
	free(tj);
	free(zs);
	free(read_from);
	free(skip_why);
	free(eps);
	free(open_ok);
	free(given_up);
	cn_crypt_config_free(crypt);
	cn_config_free(cfg);
	close(lock_fd);
	return exit_code;
}

const struct cli_command cli_cmd_run = {
	.name = "run",
	.summary = "one scheduled run of the config file (backup, prune, record)",
	.run = cmd_run,
};
