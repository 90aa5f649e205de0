/* cairn verify — reads back and checks snapshots (manifest, blobs, indexes
 * and every chunk's digest):
 *   cairn verify [SNAPSHOT | GROUP] [--store DIR | --repository R]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli_common.h"
#include "cli/cli_sched.h"
#include "common/cn_error.h"
#include "engine/cn_restore.h"
#include "store/cn_verify.h"

static void help(FILE *f)
{
	fprintf(f, "Usage: cairn verify [OPTIONS] [SNAPSHOT | GROUP]\n\n"
		   "Verifies every snapshot (or the one given, or those of GROUP): the manifest,\n"
		   "each blob's size and checksum, each index against the manifest, and every\n"
		   "chunk (fetched, decoded, digest checked; an encrypted chunk without\n"
		   "--keyfile only by its CRC, as PBS's own verify). Problems are reported and\n"
		   "the check goes on. In a local datastore a corrupt chunk is renamed to\n"
		   "<digest>.0.bad (as PBS does), so the next backup of that data stores it\n"
		   "again.\n\nOptions:\n"
		   "  --threads N            read-ahead threads (default: twice the number of CPUs)\n"
		   CLI_COMMON_HELP
		   "  --restore-test         restore-test mode for the config file's targets\n"
		   "                         (see 'cairn verify --restore-test --help')\n"
		   "\nExit codes: 0 all fine, 4 some snapshot is damaged, 1 other failure.\n");
}

enum { OPT_THREADS = OPT_FIRST_COMMAND_OPTION };

/* The downgrade check (cn_restore_check_downgrade) of a snapshot that the
 * datastore's own verify found sound. 0 or a negative code. */
static int check_downgrade(struct cn_source *src, const struct cn_snapshot_id *id)
{
	struct cn_manifest *m;
	/* no key needed: what matters is whether it is signed or encrypted */
	int r = src->ops->open(src, id);
	struct cn_buf blob = {0};
	if (r == 0)
		r = src->ops->get_file(src, CN_MANIFEST_BLOB_NAME, &blob);
	if (r == 0 && (r = cn_manifest_decode(blob.data, blob.len, NULL, &m)) == 0) {
		r = cn_restore_check_downgrade(src, id, m);
		cn_manifest_free(m);
	}
	cn_buf_free(&blob);
	return r;
}

static int cmd_verify(int argc, char **argv)
{
	struct cli_common c = {.cmd = "verify"};
	static const struct option opts[] = {
		CLI_COMMON_LONG_OPTIONS,
		{"threads", required_argument, NULL, OPT_THREADS},
		{0},
	};
	size_t threads = 0;
	int o, rc;
	for (int i = 1; i < argc; i++)
		if (!strcmp(argv[i], "--restore-test"))
			return cli_restore_test_command(argc, argv);
	while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		if ((rc = cli_common_option(&c, o, optarg)) < 0)
			return -rc;
		if (rc)
			continue;
		if (o == 'h') {
			help(stdout);
			return CLI_EXIT_OK;
		} else if (o == OPT_THREADS) {
			threads = (size_t)strtoul(optarg, NULL, 10);
		} else {
			return cli_usage_error(c.cmd, "unknown option");
		}
	}
	if (argc - optind > 1)
		return cli_usage_error(c.cmd, "give at most one SNAPSHOT or GROUP");
	struct cn_snapshot_id sel = {0};
	if (c.ns)
		snprintf(sel.ns, sizeof(sel.ns), "%s", c.ns);
	int exit_code;
	if (optind < argc && (exit_code = cli_parse_snapshot(&c, argv[optind], 1, &sel)))
		return exit_code;
	struct cn_crypt_config *crypt = NULL;
	if ((exit_code = cli_load_key(&c, &crypt)))
		return exit_code;
	struct cli_endpoints eps;
	if ((exit_code = cli_open_endpoints(&c, CLI_OPEN_NO_INDEX | CLI_OPEN_S3, 1, &eps))) {
		cn_crypt_config_free(crypt);
		return exit_code;
	}
	struct cn_source *src = NULL;
	struct cn_snapshot_info *list = NULL;
	size_t n = 0;
	int r = cli_endpoint_source(&eps.e[0], &src);
	if (r == 0)
		r = src->ops->list_snapshots(src, &sel, &list, &n);
	if (r < 0) {
		exit_code = cli_fail(&c, r, eps.e[0].name);
		goto out;
	}
	json_t *arr = c.json ? json_array() : NULL;
	size_t checked = 0, bad = 0, unchecked = 0;
	for (size_t i = 0; i < n; i++) {
		if (sel.time && list[i].id.time != sel.time)
			continue;
		char snap[512];
		cli_snapshot_text(&list[i].id, snap, sizeof(snap));
		struct cn_verify_stats st;
		if (eps.e[0].ds) {
			/* the datastore's own verify also quarantines corrupt
			 * chunks (<digest>.0.bad) so that the next backup
			 * stores them again, and records verify_state */
			struct cn_verify_result vr;
			memset(&vr, 0, sizeof(vr));
			r = cn_datastore_verify_snapshot(eps.e[0].ds, &list[i].id, crypt, 1, &vr);
			st = (struct cn_verify_stats){vr.files, vr.chunks, vr.bytes,
						      vr.bad_files + vr.bad_chunks + vr.missing_chunks};
			/* every problem found is damage: exit 4 */
			if (r > 0 && vr.bad_manifest)
				r = cn_error_set(-CN_E_CHECKSUM, "the manifest is damaged or not this "
								 "snapshot's (see the warning above)");
			else if (r > 0)
				r = cn_error_set(vr.bad_chunks || vr.bad_files ? -CN_E_CHECKSUM
									       : -CN_E_MISSING,
						 "%llu corrupt chunks, %llu missing chunks, %llu bad "
						 "files (see the warnings above)",
						 (unsigned long long)vr.bad_chunks,
						 (unsigned long long)vr.missing_chunks,
						 (unsigned long long)vr.bad_files);
			if (r == 0)
				r = check_downgrade(src, &list[i].id);
		} else {
			r = cn_verify_snapshot(src, &list[i].id, crypt, threads, &st);
		}
		checked++;
		if (r < 0) {
			bad++;
			int code = cli_exit_code(r);
			if (exit_code == CLI_EXIT_OK || code == CLI_EXIT_CORRUPT)
				exit_code = code == CLI_EXIT_OK ? CLI_EXIT_ERROR : code;
			if (!c.json)
				fprintf(stderr, "cairn verify: %s: %s\n", snap, cn_error_message());
		}
		/* a store that stopped answering would make every snapshot
		 * after this one wait for the same timeout */
		int unavailable = r < 0 && cn_error_is_unavailable(r);
		if (arr)
			json_array_append_new(arr, json_pack("{s:s, s:s, s:I, s:I, s:I, s:s?}",
							     "snapshot", snap, "state",
							     r < 0 ? "failed" : "ok", "chunks",
							     (json_int_t)st.chunks, "bytes",
							     (json_int_t)st.bytes, "failed-files",
							     (json_int_t)st.failed,
							     "error",
							     r < 0 ? cn_error_message() : NULL));
		else
			printf("%-60s %s (%llu chunks)\n", snap, r < 0 ? "FAILED" : "ok",
			       (unsigned long long)st.chunks);
		if (unavailable) {
			for (size_t k = i + 1; k < n; k++)
				unchecked += !sel.time || list[k].id.time == sel.time;
			break;
		}
	}
	if (arr)
		cli_json_print(arr);
	if (sel.time && checked == 0) {
		char snap[512];
		cli_snapshot_text(&sel, snap, sizeof(snap));
		fprintf(stderr, "cairn verify: snapshot %s not found\n", snap);
		exit_code = CLI_EXIT_ERROR;
	} else if (!c.json) {
		printf("%zu snapshot(s) verified, %zu failed\n", checked, bad);
	}
	if (unchecked)
		fprintf(stderr, "cairn verify: %zu snapshot(s) not checked: the store stopped "
				"answering\n", unchecked);
out:
	free(list);
	if (src)
		src->ops->destroy(src);
	cli_close_endpoints(&eps);
	cn_crypt_config_free(crypt);
	return exit_code;
}

const struct cli_command cli_cmd_verify = {
	.name = "verify",
	.summary = "verify snapshots (every chunk read and checked)",
	.run = cmd_verify,
};
