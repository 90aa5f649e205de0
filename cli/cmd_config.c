/* cairn config check — validates the config file of scheduled runs and
 * prints what a run would do:
 *   cairn config check [--config FILE]
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "cli/cli.h"
#include "cli/cli_sched.h"

static void help(FILE *f)
{
	fprintf(f, "Usage: cairn config check [--config FILE]\n\n"
		   "Reads the config file (default /etc/cairn/cairn.conf, or $CAIRN_CONFIG),\n"
		   "checks every key, value and token file, and prints what 'cairn run' would\n"
		   "do. Errors name FILE:LINE. Exit codes: 0 valid, 8 invalid, 2 usage.\n");
}

static int cmd_config(int argc, char **argv)
{
	static const struct option opts[] = {
		{"config", required_argument, NULL, 'c'},
		{"help", no_argument, NULL, 'h'},
		{0},
	};
	const char *path = NULL;
	int o;
	while ((o = getopt_long(argc, argv, "+hc:", opts, NULL)) != -1) {
		if (o == 'h') {
			help(stdout);
			return CLI_EXIT_OK;
		}
		if (o == 'c')
			path = optarg;
		else
			return cli_usage_error("config", "unknown option");
	}
	if (optind >= argc || strcmp(argv[optind], "check"))
		return cli_usage_error("config", "the subcommand is 'check'");
	/* options may also follow "check" */
	optind++;
	while ((o = getopt_long(argc, argv, "+hc:", opts, NULL)) != -1) {
		if (o == 'c')
			path = optarg;
		else if (o == 'h') {
			help(stdout);
			return CLI_EXIT_OK;
		} else
			return cli_usage_error("config", "unknown option");
	}
	if (optind != argc)
		return cli_usage_error("config", "unexpected argument '%s'", argv[optind]);
	struct cn_config *cfg;
	int rc = cli_sched_load("config check", path, &cfg);
	if (rc)
		return rc;
	cli_sched_print_plan(stdout, cfg);
	for (size_t i = 0; i < cfg->n_targets && !cfg->keyfile; i++)
		if (cfg->targets[i].kind == CN_CONFIG_S3)
			fprintf(stderr, "cairn config check: warning: s3 target '%s' gets backups "
					"unencrypted; an offsite copy should be encrypted (keyfile)\n",
				cfg->targets[i].name);
	/* a source that is not there now may be a file system mounted later,
	 * so this is a warning; a run fails on it */
	for (size_t i = 0; i < cfg->n_sources; i++) {
		const char *sp = cfg->sources[i].path;
		struct stat st;
		if (sp && stat(sp, &st) < 0)
			fprintf(stderr, "cairn config check: warning: source '%s': %s: %s (a run "
					"fails on it unless it is there by then)\n",
				cfg->sources[i].name, sp, strerror(errno));
		else if (sp && !S_ISDIR(st.st_mode))
			fprintf(stderr, "cairn config check: warning: source '%s': %s is not a "
					"directory\n", cfg->sources[i].name, sp);
	}
	cn_config_free(cfg);
	return CLI_EXIT_OK;
}

const struct cli_command cli_cmd_config = {
	.name = "config",
	.summary = "check the config file of scheduled runs (config check)",
	.run = cmd_config,
};
