/* cairn verify --restore-test — restore a random sample of files from the
 * newest snapshot of every source on every target of the config, compare
 * them with the source (cli/cn_restore_test.h) and report:
 *   cairn verify --restore-test [--sample N] [--config FILE] [--output-format json]
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/cli_common.h"
#include "cli/cli_sched.h"
#include "common/cn_error.h"
#include "common/cn_log.h"
#include "net/cn_pbs.h"
#include "net/cn_s3.h"
#include "store/cn_datastore.h"

static void help(FILE *f)
{
	fprintf(f, "Usage: cairn verify --restore-test [--sample N] [--config FILE]\n"
		   "                    [--output-format json]\n\n"
		   "For every target and source of the config file (default\n"
		   "/etc/cairn/cairn.conf), restores N randomly chosen files (default: the\n"
		   "config's restore-test-sample, else 20) of the newest snapshot into a private\n"
		   "temporary directory and compares each with the source file when that is\n"
		   "unchanged since the snapshot; changed files are only checked to restore.\n"
		   "Exit codes: 0 every file restored and matched, 4 some file failed or\n"
		   "differed, 1 a test could not run (target down, no snapshot), 8 bad config.\n");
}

int cli_restore_test_command(int argc, char **argv)
{
	enum { O_RT = 1000, O_SAMPLE };
	static const struct option opts[] = {
		{"restore-test", no_argument, NULL, O_RT},
		{"sample", required_argument, NULL, O_SAMPLE},
		{"config", required_argument, NULL, 'c'},
		{"output-format", required_argument, NULL, 'o'},
		{"help", no_argument, NULL, 'h'},
		{0},
	};
	const char *path = NULL;
	long sample = 0;
	int json = 0, o;
	optind = 1;
	while ((o = getopt_long(argc, argv, "+hc:", opts, NULL)) != -1) {
		switch (o) {
		case 'h':
			help(stdout);
			return CLI_EXIT_OK;
		case O_RT:
			break;
		case O_SAMPLE: {
			char *end;
			sample = strtol(optarg, &end, 10);
			if (*end || sample < 1 || sample > 100000)
				return cli_usage_error("verify", "--sample takes 1..100000");
			break;
		}
		case 'c':
			path = optarg;
			break;
		case 'o':
			if (!strcmp(optarg, "json"))
				json = 1;
			else if (strcmp(optarg, "text"))
				return cli_usage_error("verify", "--output-format is text or json");
			break;
		default:
			return cli_usage_error("verify", "unknown option for --restore-test");
		}
	}
	if (optind != argc)
		return cli_usage_error("verify", "--restore-test takes no snapshot argument");
	struct cn_config *cfg;
	int rc = cli_sched_load("verify", path, &cfg);
	if (rc)
		return rc;
	if (!sample)
		sample = cfg->restore_test_sample ? cfg->restore_test_sample : 20;
	struct cn_crypt_config *crypt = NULL;
	if (cli_sched_load_key(cfg, &crypt) < 0) {
		fprintf(stderr, "cairn verify: %s: %s\n", cfg->path, cn_error_message());
		cn_config_free(cfg);
		return CLI_EXIT_CONFIG;
	}
	const char **live = calloc(cfg->n_sources, sizeof(char *));
	for (size_t si = 0; live && si < cfg->n_sources; si++)
		live[si] = cfg->sources[si].path; /* zfs sources without path: skipped */
	json_t *out = json_object();
	int exit_code = CLI_EXIT_OK;
	for (size_t i = 0; live && i < cfg->n_targets; i++) {
		const struct cn_config_target *t = &cfg->targets[i];
		struct cli_endpoint e;
		cn_error_clear();
		if (cli_sched_open_target(t, 0, &e) < 0) {
			fprintf(stderr, "cairn verify: target %s: %s\n", t->name, cn_error_message());
			json_object_set_new(out, t->name, json_pack("{s:s}", "error", cn_error_message()));
			exit_code = CLI_EXIT_ERROR;
			continue;
		}
		char err[1024];
		json_t *rep = cli_sched_restore_test(cfg, t->name, &e, live, (unsigned)sample, crypt,
						     err, sizeof(err));
		cn_datastore_close(e.ds);
		cn_pbs_free(e.pbs);
		cn_s3_free(e.s3);
		json_int_t failed = json_integer_value(json_object_get(rep, "failed"));
		if (failed && exit_code == CLI_EXIT_OK)
			exit_code = CLI_EXIT_CORRUPT;
		json_t *srcs = json_object_get(rep, "sources"), *sr;
		const char *sname;
		json_object_foreach(srcs, sname, sr) {
			/* damage found (e.g. another snapshot's manifest) is exit 4,
			 * and stays so when another source fails otherwise */
			if (json_is_true(json_object_get(sr, "corrupt")))
				exit_code = CLI_EXIT_CORRUPT;
			else if (json_object_get(sr, "error") && exit_code != CLI_EXIT_CORRUPT)
				exit_code = CLI_EXIT_ERROR;
			if (json)
				continue;
			if (json_object_get(sr, "error")) {
				printf("target %s, source %s: cannot test: %s\n", t->name, sname,
				       json_string_value(json_object_get(sr, "error")));
				continue;
			}
			printf("target %s, source %s, snapshot %s: %lld sampled, %lld identical, "
			       "%lld changed since (restored only), %lld failed\n",
			       t->name, sname, json_string_value(json_object_get(sr, "snapshot")),
			       json_integer_value(json_object_get(sr, "sampled")),
			       json_integer_value(json_object_get(sr, "identical")),
			       json_integer_value(json_object_get(sr, "changed")),
			       json_integer_value(json_object_get(sr, "failed")));
			json_t *f;
			size_t k;
			json_array_foreach(json_object_get(sr, "failures"), k, f)
				printf("  FAILED %s: %s\n", json_string_value(json_object_get(f, "path")),
				       json_string_value(json_object_get(f, "error")));
		}
		json_object_set_new(out, t->name, rep);
	}
	if (json)
		cli_json_print(out);
	else
		json_decref(out);
	free(live);
	cn_crypt_config_free(crypt);
	cn_config_free(cfg);
	return exit_code;
}
