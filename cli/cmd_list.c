/* cairn list — the backup groups of a store or repository, with their
 * snapshot count, newest snapshot and size:
 *   cairn list [--store DIR | --repository R] [--output-format json]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli_common.h"
#include "common/cn_error.h"
#include "engine/cn_restore.h"

static void help(FILE *f)
{
	fprintf(f, "Usage: cairn list [OPTIONS]\n\n"
		   "Lists the backup groups (TYPE/ID) with their number of snapshots, the\n"
		   "newest one and the size of the newest one.\n\nOptions:\n" CLI_COMMON_HELP);
}

static int cmd_list(int argc, char **argv)
{
	struct cli_common c = {.cmd = "list"};
	int parsed = cli_parse_common_only(&c, argc, argv, 1, help);
	if (parsed >= 0)
		return parsed;
	if (optind != argc)
		return cli_usage_error(c.cmd, "no arguments expected");
	struct cli_endpoints eps;
	int exit_code = cli_open_endpoints(&c, CLI_OPEN_NO_INDEX | CLI_OPEN_S3, 1, &eps);
	if (exit_code)
		return exit_code;
	struct cn_source *src = NULL;
	struct cn_snapshot_info *list = NULL;
	size_t n = 0;
	struct cn_snapshot_id all = {0};
	if (c.ns)
		snprintf(all.ns, sizeof(all.ns), "%s", c.ns);
	int r = cli_endpoint_source(&eps.e[0], &src);
	if (r == 0)
		r = src->ops->list_snapshots(src, &all, &list, &n);
	if (r < 0) {
		exit_code = cli_fail(&c, r, eps.e[0].name);
		goto out;
	}
	json_t *arr = c.json ? json_array() : NULL;
	if (!c.json)
		printf("%-40s %9s  %-21s %12s\n", "group", "snapshots", "last", "size");
	/* the list is sorted by group, then time: one row per run of a group */
	for (size_t i = 0; i < n;) {
		size_t j = i;
		while (j < n && !strcmp(list[j].id.type, list[i].id.type) &&
		       !strcmp(list[j].id.id, list[i].id.id))
			j++;
		struct cn_snapshot_info *last = &list[j - 1];
		char group[300], t[32], sz[32];
		cn_restore_list_sizes(src, last, 1); /* where the listing did not tell */
		snprintf(group, sizeof(group), "%s/%s", last->id.type, last->id.id);
		cn_snapshot_format_time(last->id.time, t, sizeof(t));
		cli_human_bytes(last->size, sz, sizeof(sz));
		if (arr)
			json_array_append_new(arr, json_pack("{s:s, s:I, s:s, s:I}", "group", group,
							     "count", (json_int_t)(j - i), "last", t,
							     "size", (json_int_t)last->size));
		else
			printf("%-40s %9zu  %-21s %12s\n", group, j - i, t, sz);
		i = j;
	}
	if (arr)
		cli_json_print(arr);
out:
	free(list);
	if (src)
		src->ops->destroy(src);
	cli_close_endpoints(&eps);
	return exit_code;
}

const struct cli_command cli_cmd_list = {
	.name = "list",
	.summary = "list backup groups",
	.run = cmd_list,
};
