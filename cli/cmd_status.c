/* cairn status — the last runs of the config per target, from the run
 * history in the state directory:
 *   cairn status [--config FILE] [--last N] [--output-format json]
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

static void help(FILE *f)
{
	fprintf(f, "Usage: cairn status [--config FILE] [--last N] [--output-format json]\n\n"
		   "Shows the last N (default 5) runs of the config per target: start, duration,\n"
		   "result, bytes read, bytes uploaded, new chunks and the snapshot made, from\n"
		   "the run history (STATE/history.json; the state directory is the config's\n"
		   "state-dir, else $XDG_STATE_HOME/cairn, else /var/lib/cairn for root).\n"
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
		json_object_set_new(out, tname, rows);
	}
	if (json) {
		cli_json_print(out);
	} else {
		printf("config %s, history %s/history.json\n", config_abs, state);
		for (size_t t = 0; t < cfg->n_targets; t++) {
			const char *tname = cfg->targets[t].name;
			json_t *rows = json_object_get(out, tname), *row;
			size_t k;
			printf("\ntarget %s:\n", tname);
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
