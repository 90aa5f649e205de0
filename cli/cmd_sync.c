/* cairn sync — copies the snapshots one store or PBS lacks from another:
 *   cairn sync --from SRC --to DST [GROUP|SNAPSHOT]...
 * (engine/cn_sync.h does the work; this picks the places and reports). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli/cli_common.h"
#include "cli/cli_snapadmin.h"
#include "common/cn_error.h"
#include "engine/cn_sync.h"

enum {
	OPT_FROM = OPT_FIRST_COMMAND_OPTION,
	OPT_TO,
	OPT_FROM_FP,
	OPT_TO_FP,
	OPT_FROM_PW,
	OPT_TO_PW,
	OPT_DRY,
	OPT_REMOVE,
};

static void help(FILE *f)
{
	fprintf(f,
		"Usage: cairn sync --from SRC --to DST [OPTIONS] [GROUP|SNAPSHOT]...\n\n"
		"Copies every snapshot that DST lacks from SRC (of the groups or snapshots\n"
		"given, else of every group), oldest first. SRC and DST are each a local\n"
		"datastore (a path: anything containing a '/'), an S3 bucket\n"
		"s3://BUCKET[/PREFIX] (endpoint and credentials from $AWS_ENDPOINT_URL,\n"
		"$AWS_ACCESS_KEY_ID, ...: docs/s3.md) or a Proxmox Backup Server\n"
		"repository [[USER@REALM[!TOKEN]@]HOST[:PORT]:]STORE.\n\n"
		"A snapshot appears at DST only once all of it is there (its manifest goes\n"
		"last), so an interrupted sync leaves no half snapshot: run it again. Only\n"
		"chunks DST does not hold travel, and each is verified first (CRC; for\n"
		"unencrypted chunks also digest and size). Encrypted snapshots are copied\n"
		"as they are, without the key. Protected flags and notes come along.\n"
		"A snapshot older than DST's newest of its group cannot be added there\n"
		"(PBS refuses it) and is reported as skipped (exit code 3).\n\n"
		"Options:\n"
		"  --from SRC                 where the snapshots come from\n"
		"  --to DST                   where they go (a missing local datastore is created;\n"
		"                             a bucket must exist)\n"
		"  --from-fingerprint FP      certificate pin of a PBS SRC\n"
		"  --to-fingerprint FP        certificate pin of a PBS DST\n"
		"  --from-password-file FILE  password/token secret of a PBS SRC\n"
		"  --to-password-file FILE    the same for DST (both default to $PBS_PASSWORD,\n"
		"                             $PBS_PASSWORD_FILE)\n"
		"  --dry-run                  only report what would be copied (would-copy) or\n"
		"                             removed (would-remove); changes and creates nothing\n"
		"  --remove-vanished          also remove DST snapshots of the selected groups\n"
		"                             (all groups when none is named) that SRC no longer\n"
		"                             has; protected ones are kept (kept-protected)\n"
		"  --ns NS                    namespace on both sides (default the root)\n"
		"  --output-format FMT        text (default) or json\n"
		"  -h, --help                 this help\n\n"
		"Exit codes: 0 all done, 3 something skipped or failed while the rest was\n"
		"copied, 1 nothing could be copied, 4 corrupt data found at SRC, 5 DST is full.\n");
}

/* Opens one side: an s3:// URL as a bucket (endpoint and credentials from
 * the environment), a path (contains '/') as a local datastore, else a
 * PBS repository, with its own pin and password file. */
static int open_side(const char *cmd, const char *where, const char *fp, const char *pwfile,
		     int create, struct cli_endpoints *eps)
{
	struct cli_common c = {.cmd = cmd};
	if (cli_is_s3(where) || strchr(where, '/')) {
		c.stores[c.nstores++] = where;
	} else {
		c.repos[c.nrepos++] = where;
		if (fp)
			c.fps[c.nfps++] = fp;
	}
	/* the secret comes from the environment: a password file given for
	 * this side stands in for PBS_PASSWORD while it connects */
	char *saved = NULL;
	if (pwfile && c.nrepos) {
		const char *pw = getenv("PBS_PASSWORD");
		saved = pw ? strdup(pw) : NULL;
		unsetenv("PBS_PASSWORD");
		setenv("PBS_PASSWORD_FILE", pwfile, 1);
	}
	int code = cli_open_endpoints(&c, create | CLI_OPEN_S3, 1, eps);
	if (pwfile && c.nrepos) {
		unsetenv("PBS_PASSWORD_FILE");
		if (saved) {
			setenv("PBS_PASSWORD", saved, 1);
			memset(saved, 0, strlen(saved));
			free(saved);
		}
	}
	return code;
}

struct report_ctx {
	json_t *arr;
	int progress;
	int dry_run;
};

static void on_snapshot(void *ctx, const struct cn_snapshot_id *id, enum cn_sync_action a,
			int err)
{
	struct report_ctx *rc = ctx;
	char snap[512];
	cli_snapshot_text(id, snap, sizeof(snap));
	const char *what = cn_sync_action_name(a);
	if (rc->dry_run && a == CN_SYNC_COPIED) /* nothing happened: say so */
		what = "would-copy";
	else if (rc->dry_run && a == CN_SYNC_REMOVED)
		what = "would-remove";
	if (rc->progress)
		cli_progress_done();
	if (err < 0)
		fprintf(stderr, "cairn sync: %s: %s\n", snap, cn_error_message());
	if (rc->arr) {
		json_t *o = json_pack("{s:s, s:s}", "snapshot", snap, "action", what);
		if (err < 0)
			json_object_set_new(o, "error", json_string(cn_error_message()));
		json_array_append_new(rc->arr, o);
	} else {
		printf("%-15s %s\n", what, snap);
	}
	fflush(stdout);
}

static void on_progress(void *ctx, const struct cn_sync_stats *st)
{
	struct report_ctx *rc = ctx;
	if (!rc->progress)
		return;
	char sent[32];
	cli_human_bytes(st->bytes_sent, sent, sizeof(sent));
	cli_progress_line("sync: %llu chunks sent (%s), %llu already there",
			  (unsigned long long)st->chunks_sent, sent,
			  (unsigned long long)st->chunks_reused);
}

static int cmd_sync(int argc, char **argv)
{
	struct cli_common c = {.cmd = "sync"};
	static const struct option opts[] = {
		{"from", required_argument, NULL, OPT_FROM},
		{"to", required_argument, NULL, OPT_TO},
		{"from-fingerprint", required_argument, NULL, OPT_FROM_FP},
		{"to-fingerprint", required_argument, NULL, OPT_TO_FP},
		{"from-password-file", required_argument, NULL, OPT_FROM_PW},
		{"to-password-file", required_argument, NULL, OPT_TO_PW},
		{"dry-run", no_argument, NULL, OPT_DRY},
		{"remove-vanished", no_argument, NULL, OPT_REMOVE},
		{"ns", required_argument, NULL, OPT_NS},
		{"output-format", required_argument, NULL, OPT_OUTPUT_FORMAT},
		{"help", no_argument, NULL, 'h'},
		{0},
	};
	const char *from = NULL, *to = NULL, *from_fp = NULL, *to_fp = NULL;
	const char *from_pw = NULL, *to_pw = NULL;
	struct cn_sync_opts so = {0};
	int o, rc;
	while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		if (o == OPT_NS || o == OPT_OUTPUT_FORMAT) {
			if ((rc = cli_common_option(&c, o, optarg)) < 0)
				return -rc;
			continue;
		}
		switch (o) {
		case 'h': help(stdout); return CLI_EXIT_OK;
		case OPT_FROM: from = optarg; break;
		case OPT_TO: to = optarg; break;
		case OPT_FROM_FP: from_fp = optarg; break;
		case OPT_TO_FP: to_fp = optarg; break;
		case OPT_FROM_PW: from_pw = optarg; break;
		case OPT_TO_PW: to_pw = optarg; break;
		case OPT_DRY: so.dry_run = 1; break;
		case OPT_REMOVE: so.remove_vanished = 1; break;
		default: return cli_usage_error(c.cmd, "unknown option");
		}
	}
	if (!from || !to)
		return cli_usage_error(c.cmd, "give --from SRC and --to DST");
	if (!strcmp(from, to))
		return cli_usage_error(c.cmd, "--from and --to are the same place");
	size_t nsel = (size_t)(argc - optind);
	struct cn_snapshot_id *sel = nsel ? calloc(nsel, sizeof(*sel)) : NULL;
	if (nsel && !sel)
		return cli_error("sync");
	for (size_t i = 0; i < nsel; i++) {
		int e = cli_parse_snapshot(&c, argv[optind + (int)i], 1, &sel[i]);
		if (e) {
			free(sel);
			return e;
		}
	}
	struct cli_endpoints src_eps, dst_eps;
	int code = open_side(c.cmd, from, from_fp, from_pw, CLI_OPEN_NO_INDEX, &src_eps);
	if (code) {
		free(sel);
		return code;
	}
	/* a dry run creates nothing: a local DST that does not exist yet is
	 * an empty one */
	struct stat sb;
	int dst_missing = so.dry_run && !cli_is_s3(to) && strchr(to, '/') && stat(to, &sb) < 0 &&
			  errno == ENOENT;
	dst_eps.n = 0;
	code = dst_missing ? 0
			   : open_side(c.cmd, to, to_fp, to_pw, so.dry_run ? 0 : CLI_OPEN_CREATE,
				       &dst_eps);
	if (code) {
		cli_close_endpoints(&src_eps);
		free(sel);
		return code;
	}
	struct report_ctx rctx = {.arr = c.json ? json_array() : NULL,
				  .progress = !c.json && cli_progress_enabled(),
				  .dry_run = so.dry_run};
	so.on_snapshot = on_snapshot;
	so.on_progress = on_progress;
	so.ctx = &rctx;
	struct cn_sync_stats st = {0};
	int r = cli_endpoint_sync(&src_eps.e[0], dst_missing ? NULL : &dst_eps.e[0], c.ns, sel, nsel,
				  &so, &st);
	if (rctx.progress)
		cli_progress_done();
	char sent[32];
	cli_human_bytes(st.bytes_sent, sent, sizeof(sent));
	if (r < 0 && st.copied + st.present + st.failed == 0) {
		/* the listing failed: nothing was tried */
		json_decref(rctx.arr);
		code = cli_fail(&c, r, "sync");
	} else {
		if (rctx.arr) {
			json_t *out = json_pack(
				"{s:o, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:b}", "snapshots",
				rctx.arr, "copied", (json_int_t)st.copied, "present",
				(json_int_t)st.present, "skipped-older", (json_int_t)st.skipped_older,
				"removed", (json_int_t)st.removed, "kept-protected",
				(json_int_t)st.kept_protected, "failed", (json_int_t)st.failed,
				"chunks-sent", (json_int_t)st.chunks_sent, "bytes-sent",
				(json_int_t)st.bytes_sent, "chunks-reused", (json_int_t)st.chunks_reused,
				"dry-run", so.dry_run);
			cli_json_print(out);
		} else {
			if (so.dry_run)
				printf("dry run: %zu to copy, %zu already present, %zu skipped (older "
				       "than the destination's newest), %zu to remove, %zu kept "
				       "(protected); nothing changed\n",
				       st.copied, st.present, st.skipped_older, st.removed,
				       st.kept_protected);
			else
				printf("%zu copied, %zu already present, %zu skipped (older than the "
				       "destination's newest), %zu removed, %zu kept (protected), %zu "
				       "failed; %llu chunks sent (%s), %llu already there\n",
				       st.copied, st.present, st.skipped_older, st.removed,
				       st.kept_protected, st.failed, (unsigned long long)st.chunks_sent,
				       sent, (unsigned long long)st.chunks_reused);
		}
		code = CLI_EXIT_OK;
		if (r < 0) {
			int e = cli_exit_code(r);
			/* corrupt source data and a full destination keep their own codes */
			code = e == CLI_EXIT_CORRUPT || e == CLI_EXIT_NOSPACE ? e
			       : st.copied ? CLI_EXIT_PARTIAL : CLI_EXIT_ERROR;
		} else if (st.skipped_older) {
			/* a vanished snapshot kept because it is protected is what
			 * protection is for (upstream's sync jobs only log it) */
			code = CLI_EXIT_PARTIAL;
		}
	}
	cli_close_endpoints(&dst_eps);
	cli_close_endpoints(&src_eps);
	free(sel);
	return code;
}

const struct cli_command cli_cmd_sync = {
	.name = "sync",
	.summary = "copy the snapshots a store or PBS lacks from another",
	.run = cmd_sync,
};
