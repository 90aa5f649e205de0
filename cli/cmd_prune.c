/* cairn prune — removes snapshots of a group by PBS retention rules:
 *   cairn prune GROUP [--keep-last N] [--keep-hourly N] ... [--dry-run]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli_common.h"
#include "cli/cli_s3admin.h"
#include "common/cn_error.h"
#include "net/cn_pbs.h"
#include "store/cn_prune.h"

static void help(FILE *f)
{
	fprintf(f, "Usage: cairn prune [OPTIONS] GROUP\n\n"
		   "Removes the snapshots of GROUP (TYPE/ID) that no keep option selects, as\n"
		   "Proxmox Backup Server prunes: keep-last, then -hourly, -daily, -weekly,\n"
		   "-monthly, -yearly each keep the newest snapshot of N distinct periods.\n"
		   "Protected snapshots are always kept. Without any keep option nothing is\n"
		   "removed. Space is freed by the next 'cairn gc'.\n\nOptions:\n"
		   "  --keep-last N, --keep-hourly N, --keep-daily N, --keep-weekly N,\n"
		   "  --keep-monthly N, --keep-yearly N\n"
		   "  --dry-run              only show what would be removed\n"
		   CLI_COMMON_HELP);
}

enum { OPT_LAST = OPT_FIRST_COMMAND_OPTION, OPT_HOURLY, OPT_DAILY, OPT_WEEKLY, OPT_MONTHLY,
       OPT_YEARLY, OPT_DRY };

static void row(json_t *arr, const struct cn_snapshot_id *id, const char *mark)
{
	char snap[512];
	cli_snapshot_text(id, snap, sizeof(snap));
	if (arr)
		json_array_append_new(arr, json_pack("{s:s, s:s}", "snapshot", snap, "mark", mark));
	else
		printf("%-60s %s\n", snap, mark);
}

static int cmd_prune(int argc, char **argv)
{
	struct cli_common c = {.cmd = "prune"};
	static const struct option opts[] = {
		CLI_COMMON_LONG_OPTIONS,
		{"keep-last", required_argument, NULL, OPT_LAST},
		{"keep-hourly", required_argument, NULL, OPT_HOURLY},
		{"keep-daily", required_argument, NULL, OPT_DAILY},
		{"keep-weekly", required_argument, NULL, OPT_WEEKLY},
		{"keep-monthly", required_argument, NULL, OPT_MONTHLY},
		{"keep-yearly", required_argument, NULL, OPT_YEARLY},
		{"dry-run", no_argument, NULL, OPT_DRY},
		{0},
	};
	struct cn_prune_keep keep = {0};
	int dry = 0, o, rc;
	while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		if ((rc = cli_common_option(&c, o, optarg)) < 0)
			return -rc;
		if (rc)
			continue;
		unsigned *slot = NULL;
		switch (o) {
		case 'h':
			help(stdout);
			return CLI_EXIT_OK;
		case OPT_DRY:
			dry = 1;
			continue;
		case OPT_LAST: slot = &keep.last; break;
		case OPT_HOURLY: slot = &keep.hourly; break;
		case OPT_DAILY: slot = &keep.daily; break;
		case OPT_WEEKLY: slot = &keep.weekly; break;
		case OPT_MONTHLY: slot = &keep.monthly; break;
		case OPT_YEARLY: slot = &keep.yearly; break;
		default:
			return cli_usage_error(c.cmd, "unknown option");
		}
		char *end;
		unsigned long v = strtoul(optarg, &end, 10);
		if (*end || !*optarg || v > 1000000)
			return cli_usage_error(c.cmd, "keep options take a number, not '%s'", optarg);
		*slot = (unsigned)v;
	}
	if (argc - optind != 1)
		return cli_usage_error(c.cmd, "give one GROUP (TYPE/ID)");
	struct cn_snapshot_id group;
	int exit_code = cli_parse_snapshot(&c, argv[optind], 1, &group);
	if (exit_code)
		return exit_code;
	if (group.time)
		return cli_usage_error(c.cmd, "give a group (TYPE/ID), not a snapshot");
	struct cli_endpoints eps;
	if ((exit_code = cli_open_endpoints(&c, CLI_OPEN_NO_INDEX | CLI_OPEN_S3, 1, &eps)))
		return exit_code;
	json_t *arr = c.json ? json_array() : NULL;
	int r;
	size_t removed = 0;
	if (eps.e[0].ds || eps.e[0].s3) {
		struct cn_prune_entry *list = NULL;
		size_t n = 0;
		r = eps.e[0].ds ? cn_datastore_prune_group(eps.e[0].ds, &group, &keep, dry, &list, &n)
				: cli_s3_prune_group(eps.e[0].s3, &group, &keep, dry, &list, &n);
		for (size_t i = 0; r >= 0 && i < n; i++)
			row(arr, &list[i].id, list[i].mark == CN_PRUNE_REMOVE
						      ? (dry ? "would remove" : (list[i].removed ? "removed" : "remove failed"))
						      : cn_prune_mark_name(list[i].mark));
		if (r >= 0)
			removed = (size_t)r;
		free(list);
	} else {
		struct cn_pbs_keep pk = {(int)keep.last, (int)keep.hourly, (int)keep.daily,
					 (int)keep.weekly, (int)keep.monthly, (int)keep.yearly};
		struct cn_pbs_prune_item *list = NULL;
		size_t n = 0;
		r = cn_pbs_prune(eps.e[0].pbs, &group, &pk, dry, &list, &n);
		for (size_t i = 0; r >= 0 && i < n; i++) {
			row(arr, &list[i].id, list[i].keep ? "keep" : (dry ? "would remove" : "removed"));
			removed += !list[i].keep;
		}
		free(list);
	}
	if (r < 0) {
		json_decref(arr);
		exit_code = cli_fail(&c, r, argv[optind]);
	} else if (arr) {
		cli_json_print(arr);
	} else {
		printf("%zu snapshot(s) %s\n", removed, dry ? "would be removed" : "removed");
	}
	cli_close_endpoints(&eps);
	return exit_code;
}

const struct cli_command cli_cmd_prune = {
	.name = "prune",
	.summary = "remove old snapshots of a group (keep-* options, --dry-run)",
	.run = cmd_prune,
};
