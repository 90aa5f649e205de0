/* cairn catalog — reading catalog.pcat1 files:
 *   cairn catalog list CATALOG.pcat1 [PATH]
 * prints every entry (at or below PATH) in the form of upstream's
 * `catalog dump`: type letter, quoted "./path", and for files size and
 * mtime. */
#include "cli/cli.h"
#include "cli/cli_common.h"
#include "common/cn_error.h"
#include "common/cn_util.h"
#include "pxar/cn_catalog_reader.h"

#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Catalogs are read whole; this bounds what a bad path can make us load. */
#define MAX_CATALOG (4ull << 30)

static void help(FILE *f)
{
	fprintf(f, "Usage: cairn catalog list [OPTIONS] CATALOG.pcat1 [PATH]\n\n"
		   "Lists the entries of a catalog (as written by `cairn pxar create\n"
		   "--catalog` or a backup) at or below PATH (e.g. root.pxar.didx/etc),\n"
		   "one per line like upstream's `catalog dump`:\n"
		   "  TYPE \"./path\" [SIZE MTIME]\n"
		   "TYPE: d directory, f file, l symlink, h hardlink, b/c device, p fifo, s socket.\n\n"
		   "Options:\n  -h, --help\n");
}

static int print_entry(void *ctx, const char *path, const struct cn_catalog_entry *e)
{
	(void)ctx;
	char *p = malloc(strlen(path) + 3);
	if (!p)
		return cn_error_set(-ENOMEM, "out of memory");
	sprintf(p, "./%s", path);
	printf("%c ", e->type);
	cli_print_quoted(stdout, p);
	free(p);
	if (e->type == 'f') {
		char mt[64];
		time_t t = (time_t)e->mtime;
		struct tm tm;
		if (localtime_r(&t, &tm))
			strftime(mt, sizeof(mt), "%FT%TZ", &tm);
		else
			snprintf(mt, sizeof(mt), "%" PRId64, e->mtime);
		printf(" %" PRIu64 " %s", e->size, mt);
	}
	putchar('\n');
	return 0;
}

static int cmd_list(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	int o;
	optind = 1;
	while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		if (o == 'h') {
			help(stdout);
			return CLI_EXIT_OK;
		}
		return cli_usage_error("catalog list", "bad option");
	}
	if (argc - optind < 1 || argc - optind > 2)
		return cli_usage_error("catalog list", "expected CATALOG.pcat1 [PATH]");
	uint8_t *data = NULL;
	size_t len = 0;
	struct cn_catalog_reader *r = NULL;
	int rc = cn_read_file(argv[optind], MAX_CATALOG, &data, &len);
	if (rc == 0)
		rc = cn_catalog_reader_open(data, len, &r);
	if (rc == 0)
		rc = cn_catalog_list(r, argc - optind == 2 ? argv[optind + 1] : NULL, print_entry, NULL);
	cn_catalog_reader_free(r);
	free(data);
	if (rc == 0)
		rc = cli_stdout_done();
	return rc < 0 ? cli_error(argv[optind]) : CLI_EXIT_OK;
}

static int run(int argc, char **argv)
{
	if (argc >= 2 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) {
		help(stdout);
		return CLI_EXIT_OK;
	}
	if (argc >= 2 && !strcmp(argv[1], "list"))
		return cmd_list(argc - 1, argv + 1);
	help(stderr);
	return CLI_EXIT_USAGE;
}

const struct cli_command cli_cmd_catalog = {
	.name = "catalog",
	.summary = "list the contents of a catalog (catalog.pcat1)",
	.run = run,
};
