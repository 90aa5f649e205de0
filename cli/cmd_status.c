/* cairn status — the last runs of the config per target, from the run
 * history in the state directory:
 *   cairn status [--config FILE] [--last N] [--output-format json]
 * Per target: the last run, the newest snapshot of each source and its age,
 * the last restore test, then the last N runs.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/cli.h"
#include "cli/cli_common.h"
#include "cli/cli_sched.h"
#include "cli/cn_history.h"
#include "common/cn_error.h"
#include "common/cn_snapshot.h"

static void help(FILE *f)
{
	fprintf(f, "Usage: cairn status [--config FILE] [--last N] [--output-format json]\n\n"
		   "Per target of the config: the last run and its result, the newest snapshot\n"
		   "of each source and its age, the last restore test and its result, then the\n"
		   "last N (default 5) runs: start, duration, result, bytes read, bytes\n"
		   "uploaded, new chunks and the snapshot made. From the run history\n"
		   "(STATE/history.json; the state directory is the config's state-dir, else\n"
		   "$XDG_STATE_HOME/cairn, else /var/lib/cairn for root).\n"
		   "JSON: {TARGET: {\"last-run\", \"newest-snapshots\", \"last-restore-test\",\n"
		   "\"runs\"}}; a part that never happened is null (or an empty list).\n"
		   "Exit code 0, also when the last run failed (see the result column).\n");
}

static const char *str(json_t *o, const char *k)
{
	const char *s = json_string_value(json_object_get(o, k));
	return s ? s : "";
}

static double num(json_t *o, const char *k)
{
	json_t *v = json_object_get(o, k);
	return json_is_number(v) ? json_number_value(v) : 0;
}

/* What the weekly check asks of one target, over the whole history (newest
 * first): the last run, the newest published snapshot of each source with
 * its age, and the last restore test. Returns a new object. */
static json_t *target_summary(json_t *runs, const char *config_abs, const char *tname,
			      time_t now)
{
	json_t *last_run = json_null(), *last_test = json_null(), *newest = json_array();
	json_t *sources_seen = json_object();
	for (size_t i = json_array_size(runs); i-- > 0;) {
		json_t *rec = json_array_get(runs, i), *tr, *b;
		size_t k, j;
		if (strcmp(str(rec, "config"), config_abs) || json_is_true(json_object_get(rec, "dry-run")))
			continue;
		json_array_foreach(json_object_get(rec, "targets"), k, tr) {
			if (strcmp(str(tr, "name"), tname))
				continue;
			if (json_is_null(last_run)) {
				last_run = json_pack("{s:f, s:f, s:s}", "start", num(rec, "start"), "end",
						     num(rec, "end"), "result", str(tr, "result"));
				if (*str(tr, "message"))
					json_object_set_new(last_run, "message",
							    json_string(str(tr, "message")));
			}
			json_t *rt = json_object_get(tr, "restore-test");
			if (json_is_null(last_test) && json_is_object(rt))
				last_test = json_pack("{s:f, s:f, s:f, s:b}", "time", num(rec, "end"),
						      "sampled", num(rt, "sampled"), "failed",
						      num(rt, "failed"),
						      "ok", num(rt, "failed") == 0 && num(rt, "sampled") > 0);
			json_array_foreach(json_object_get(tr, "backups"), j, b) {
				const char *snap = str(b, "snapshot"), *t = strrchr(snap, '/');
				int64_t when;
				if (strcmp(str(b, "result"), "ok") || !t ||
				    json_object_get(sources_seen, str(b, "source")) ||
				    cn_snapshot_parse_time(t + 1, &when) < 0)
					continue;
				json_object_set_new(sources_seen, str(b, "source"), json_true());
				json_array_append_new(newest, json_pack("{s:s, s:s, s:I, s:I}", "source",
									str(b, "source"), "snapshot", snap,
									"time", (json_int_t)when,
									"age", (json_int_t)(now - when)));
			}
		}
	}
	json_decref(sources_seen);
	return json_pack("{s:o, s:o, s:o}", "last-run", last_run, "newest-snapshots", newest,
			 "last-restore-test", last_test);
}

/* "3 d 4 h", "5 h 12 min", "40 min": an age for people. */
static void human_age(double secs, char *out, size_t len)
{
	long s = secs < 0 ? 0 : (long)secs;
	if (s >= 86400)
		snprintf(out, len, "%ld d %ld h", s / 86400, s % 86400 / 3600);
	else if (s >= 3600)
		snprintf(out, len, "%ld h %ld min", s / 3600, s % 3600 / 60);
	else
		snprintf(out, len, "%ld min", s / 60);
}

static void print_when(const char *label, double t)
{
	time_t st = (time_t)t;
	struct tm tm;
	char when[32];
	localtime_r(&st, &tm);
	strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S", &tm);
	printf("  %-20s %s", label, when);
}

/* The summary lines of one target in the text form. */
static void print_summary(json_t *sum)
{
	json_t *lr = json_object_get(sum, "last-run"), *lt = json_object_get(sum, "last-restore-test");
	json_t *snaps = json_object_get(sum, "newest-snapshots"), *sn;
	size_t k;
	char age[32];
	if (json_is_object(lr)) {
		print_when("last run:", num(lr, "start"));
		printf(", %s%s%s\n", str(lr, "result"), *str(lr, "message") ? ": " : "",
		       str(lr, "message"));
	}
	if (!json_array_size(snaps))
		printf("  %-20s none\n", "newest snapshot:");
	json_array_foreach(snaps, k, sn) {
		human_age(num(sn, "age"), age, sizeof(age));
		printf("  %-20s %s (%s), %s old\n", "newest snapshot:", str(sn, "snapshot"),
		       str(sn, "source"), age);
	}
	if (json_is_object(lt)) {
		print_when("last restore test:", num(lt, "time"));
		printf(", %s: %.0f sampled, %.0f failed\n",
		       json_is_true(json_object_get(lt, "ok")) ? "ok" : "FAILED", num(lt, "sampled"),
		       num(lt, "failed"));
	} else {
		printf("  %-20s none recorded\n", "last restore test:");
	}
}

static int cmd_status(int argc, char **argv)
{
	static const struct option opts[] = {
		{"config", required_argument, NULL, 'c'},
		{"last", required_argument, NULL, 'n'},
		{"output-format", required_argument, NULL, 'o'},
		{"help", no_argument, NULL, 'h'},
		{0},
	};
	const char *path = NULL;
	int json = 0, o;
	long last = 5;
	while ((o = getopt_long(argc, argv, "+hc:n:", opts, NULL)) != -1) {
		switch (o) {
		case 'h':
			help(stdout);
			return CLI_EXIT_OK;
		case 'c':
			path = optarg;
			break;
		case 'n':
			last = strtol(optarg, NULL, 10);
			if (last < 1 || last > 100000)
				return cli_usage_error("status", "--last takes 1..100000");
			break;
		case 'o':
			if (!strcmp(optarg, "json"))
				json = 1;
			else if (strcmp(optarg, "text"))
				return cli_usage_error("status", "--output-format is text or json");
			break;
		default:
			return cli_usage_error("status", "unknown option");
		}
	}
	if (optind != argc)
		return cli_usage_error("status", "unexpected argument '%s'", argv[optind]);
	struct cn_config *cfg;
	int rc = cli_sched_load("status", path, &cfg);
	if (rc)
		return rc;
	char state[4096], config_abs[4096];
	cn_config_state_dir(cfg, state, sizeof(state));
	if (!realpath(cfg->path, config_abs))
		snprintf(config_abs, sizeof(config_abs), "%s", cfg->path);
	json_t *runs;
	if (cn_history_load(state, &runs) < 0) {
		fprintf(stderr, "cairn status: %s\n", cn_error_message());
		cn_config_free(cfg);
		return CLI_EXIT_ERROR;
	}
	/* per target: the newest `last` records, newest first */
	json_t *out = json_object();
	for (size_t t = 0; t < cfg->n_targets; t++) {
		const char *tname = cfg->targets[t].name;
		json_t *rows = json_array();
		for (size_t i = json_array_size(runs); i-- > 0 && json_array_size(rows) < (size_t)last;) {
			json_t *rec = json_array_get(runs, i), *tr;
			size_t k;
			if (strcmp(str(rec, "config"), config_abs) || json_is_true(json_object_get(rec, "dry-run")))
				continue;
			json_array_foreach(json_object_get(rec, "targets"), k, tr) {
				if (strcmp(str(tr, "name"), tname))
					continue;
				double read = 0;
				json_t *s;
				size_t j;
				json_array_foreach(json_object_get(rec, "sources"), j, s)
					read += num(s, "bytes-read");
				json_t *snaps = json_array(), *b;
				json_array_foreach(json_object_get(tr, "backups"), j, b)
					if (*str(b, "snapshot"))
						json_array_append_new(snaps, json_string(str(b, "snapshot")));
				json_t *row = json_pack("{s:f, s:f, s:s, s:f, s:f, s:f, s:o}", "start",
							num(rec, "start"), "duration", num(rec, "duration"),
							"result", str(tr, "result"), "bytes-read", read,
							"bytes-uploaded", num(tr, "bytes-uploaded"),
							"new-chunks", num(tr, "new-chunks"), "snapshots", snaps);
				if (*str(tr, "message"))
					json_object_set_new(row, "message", json_string(str(tr, "message")));
				json_array_append_new(rows, row);
			}
		}
		json_t *sum = target_summary(runs, config_abs, tname, time(NULL));
		json_object_set_new(sum, "runs", rows);
		json_object_set_new(out, tname, sum);
	}
	if (json) {
		cli_json_print(out);
	} else {
		printf("config %s, history %s/history.json\n", config_abs, state);
		for (size_t t = 0; t < cfg->n_targets; t++) {
			const char *tname = cfg->targets[t].name;
			json_t *sum = json_object_get(out, tname);
			json_t *rows = json_object_get(sum, "runs"), *row;
			size_t k;
			printf("\ntarget %s:\n", tname);
			print_summary(sum);
			if (!json_array_size(rows)) {
				printf("  no runs recorded\n");
				continue;
			}
			printf("  %-20s %9s %-11s %11s %11s %8s  %s\n", "start", "duration", "result",
			       "read", "uploaded", "new", "snapshot");
			json_array_foreach(rows, k, row) {
				time_t st = (time_t)num(row, "start");
				struct tm tm;
				char when[32], rd[32], up[32];
				localtime_r(&st, &tm);
				strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S", &tm);
				cli_human_bytes((uint64_t)num(row, "bytes-read"), rd, sizeof(rd));
				cli_human_bytes((uint64_t)num(row, "bytes-uploaded"), up, sizeof(up));
				json_t *snaps = json_object_get(row, "snapshots");
				printf("  %-20s %8.1fs %-11s %11s %11s %8.0f  %s\n", when,
				       num(row, "duration"), str(row, "result"), rd, up,
				       num(row, "new-chunks"),
				       json_array_size(snaps) ? json_string_value(json_array_get(snaps, 0))
							      : "-");
				if (*str(row, "message"))
					printf("      %s\n", str(row, "message"));
			}
		}
		json_decref(out);
	}
	json_decref(runs);
	cn_config_free(cfg);
	return CLI_EXIT_OK;
}

const struct cli_command cli_cmd_status = {
	.name = "status",
	.summary = "last scheduled runs per target (from the run history)",
	.run = cmd_status,
};
