/* cairn snapshot — snapshots of a store or repository:
 *   cairn snapshot list [GROUP]
 *   cairn snapshot files SNAPSHOT [ARCHIVE [PATH]]   (manifest, or the catalog)
 *   cairn snapshot forget SNAPSHOT
 *   cairn snapshot protected SNAPSHOT on|off|show
 *   cairn snapshot notes SNAPSHOT show|update TEXT
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli_common.h"
#include "cli/cli_snapadmin.h"
#include "common/cn_error.h"
#include "engine/cn_backup.h"
#include "pxar/cn_catalog_reader.h"
#include "engine/cn_restore.h"

static void help(FILE *f)
{
	fprintf(f, "Usage: cairn snapshot list [OPTIONS] [GROUP]\n"
		   "       cairn snapshot files [OPTIONS] SNAPSHOT [ARCHIVE [PATH]]\n"
		   "       cairn snapshot forget [OPTIONS] SNAPSHOT\n"
		   "       cairn snapshot protected [OPTIONS] SNAPSHOT on|off|show\n"
		   "       cairn snapshot notes [OPTIONS] SNAPSHOT show|update TEXT\n\n"
		   "list:  the snapshots (of GROUP, TYPE/ID, or of all groups) with their size.\n"
		   "files: without ARCHIVE, the files of SNAPSHOT (archives, catalog, manifest)\n"
		   "       with sizes; with ARCHIVE (media.pxar), its entries from the catalog,\n"
		   "       below PATH if given (no archive data is read).\n"
		   "forget: removes SNAPSHOT (its chunks go at the next gc); a protected\n"
		   "       snapshot is refused.\n"
		   "protected: marks SNAPSHOT protected (prune and forget keep it), unmarks it,\n"
		   "       or shows the flag (a .protected file in a local store, as PBS).\n"
		   "notes: shows or replaces the notes of SNAPSHOT (kept in the manifest's\n"
		   "       unprotected part, as PBS keeps them; the signature is unaffected).\n\n"
		   "Options:\n" CLI_COMMON_HELP);
}

static int do_list(struct cli_common *c, struct cn_source *src, const char *group_arg)
{
	struct cn_snapshot_id group = {0};
	if (c->ns)
		snprintf(group.ns, sizeof(group.ns), "%s", c->ns);
	if (group_arg) {
		int e = cli_parse_snapshot(c, group_arg, 1, &group);
		if (e)
			return e;
	}
	struct cn_snapshot_info *list;
	size_t n;
	int r = src->ops->list_snapshots(src, &group, &list, &n);
	if (r < 0)
		return cli_fail(c, r, src->name);
	cn_restore_list_sizes(src, list, n);
	json_t *arr = c->json ? json_array() : NULL;
	for (size_t i = 0; i < n; i++) {
		char snap[512], sz[32];
		cli_snapshot_text(&list[i].id, snap, sizeof(snap));
		cli_human_bytes(list[i].size, sz, sizeof(sz));
		if (arr)
			json_array_append_new(arr, json_pack("{s:s, s:I, s:b, s:b}", "snapshot", snap,
							     "size", (json_int_t)list[i].size,
							     "protected", list[i].protected_,
							     "damaged", list[i].damaged));
		else
			printf("%-60s %12s%s%s\n", snap, list[i].damaged ? "?" : sz,
			       list[i].protected_ ? "  protected" : "",
			       list[i].damaged ? "  manifest damaged or unreadable (cairn verify)" : "");
	}
	if (arr)
		cli_json_print(arr);
	free(list);
	return CLI_EXIT_OK;
}

struct cat_ctx {
	json_t *arr;
	size_t prefix;
};

static int print_entry(void *ctx, const char *path, const struct cn_catalog_entry *e)
{
	struct cat_ctx *cc = ctx;
	const char *rel = strlen(path) >= cc->prefix ? path + cc->prefix : path;
	if (cc->arr) {
		json_t *o = json_pack("{s:s, s:s#}", "path", *rel ? rel : "/", "type", &e->type, 1);
		if (e->type == 'f') {
			json_object_set_new(o, "size", json_integer((json_int_t)e->size));
			json_object_set_new(o, "mtime", json_integer(e->mtime));
		}
		json_array_append_new(cc->arr, o);
	} else if (e->type == 'f') {
		char t[32] = "";
		cn_snapshot_format_time(e->mtime, t, sizeof(t));
		printf("%c %12llu %s ", e->type, (unsigned long long)e->size, t);
		cli_print_quoted(stdout, *rel ? rel : "/");
		putchar('\n');
	} else {
		printf("%c %12s %20s ", e->type, "", "");
		cli_print_quoted(stdout, *rel ? rel : "/");
		putchar('\n');
	}
	return 0;
}

static int do_files(struct cli_common *c, struct cn_source *src, const char *snap_arg,
		    const char *archive, const char *path)
{
	struct cn_snapshot_id id;
	int e = cli_parse_snapshot(c, snap_arg, 1, &id);
	if (e || (e = cli_latest_snapshot(c, src, &id)))
		return e;
	struct cn_crypt_config *crypt = NULL;
	if ((e = cli_load_key(c, &crypt)))
		return e;
	struct cn_manifest *m = NULL;
	struct cn_index *idx = NULL;
	struct cn_buf cat = {0};
	struct cn_catalog_reader *cr = NULL;
	/* the archives are listed without the key, as PBS does; their
	 * contents need it */
	int r = archive ? cn_restore_open(src, &id, crypt, &m)
			: cn_restore_open_listing(src, &id, crypt, &m);
	if (r == 0 && !archive) {
		json_t *arr = c->json ? json_array() : NULL;
		for (size_t i = 0; i < cn_manifest_file_count(m); i++) {
			const char *name;
			uint64_t size;
			enum cn_crypt_mode mode;
			cn_manifest_file_at(m, i, &name, &size, NULL, &mode);
			char sz[32];
			cli_human_bytes(size, sz, sizeof(sz));
			if (arr)
				json_array_append_new(arr, json_pack("{s:s, s:I, s:s}", "filename", name,
								     "size", (json_int_t)size, "crypt-mode",
								     cn_crypt_mode_name(mode)));
			else
				printf("%-40s %12s  %s\n", name, sz, cn_crypt_mode_name(mode));
		}
		if (arr)
			cli_json_print(arr);
		goto out;
	}
	if (r == 0)
		r = cn_restore_load_index(src, m, CN_CATALOG_INDEX_NAME, &idx);
	if (r == 0)
		r = cn_restore_read_stream(src, idx, crypt, &cat);
	if (r == 0)
		r = cn_catalog_reader_open(cat.data, cat.len, &cr);
	if (r == 0) {
		/* NAME.pxar also names a split archive (NAME.mpxar.didx in the
		 * catalog), as for restore */
		char root[512];
		struct cn_archive_files af;
		size_t al = strlen(archive);
		int has_didx = al > 5 && !strcmp(archive + al - 5, ".didx");
		if (cn_restore_archive_files(m, archive, &af) == 0)
			snprintf(root, sizeof(root), "%s", af.name);
		else
			snprintf(root, sizeof(root), "%s%s", archive, has_didx ? "" : ".didx");
		char full[4096];
		while (path && *path == '/')
			path++;
		if (path && *path)
			snprintf(full, sizeof(full), "%s/%s", root, path);
		else
			snprintf(full, sizeof(full), "%s", root);
		struct cat_ctx cc = {.arr = c->json ? json_array() : NULL, .prefix = strlen(root)};
		r = cn_catalog_list(cr, full, print_entry, &cc);
		if (r == -ENOENT)
			r = cn_error_set(-ENOENT, "%s is not in the catalog of this snapshot", full);
		if (cc.arr) {
			if (r == 0)
				cli_json_print(cc.arr);
			else
				json_decref(cc.arr);
		}
	}
out:;
	int code = CLI_EXIT_OK;
	if (r < 0) {
		char snap[512];
		cli_snapshot_text(&id, snap, sizeof(snap));
		code = cli_fail(c, r, snap);
	}
	cn_catalog_reader_free(cr);
	cn_buf_free(&cat);
	cn_index_free(idx);
	cn_manifest_free(m);
	cn_crypt_config_free(crypt);
	return code;
}

/* forget / protected / notes: args are what follows SNAPSHOT. */
static int do_manage(struct cli_common *c, struct cli_endpoint *e, const char *sub,
		     const char *snap_arg, char **args)
{
	struct cn_snapshot_id id;
	int code = cli_parse_snapshot(c, snap_arg, 0, &id);
	if (code)
		return code;
	char snap[512];
	cli_snapshot_text(&id, snap, sizeof(snap));
	struct cn_sync_admin a;
	cli_endpoint_admin(e, &a);
	int r = 0;
	json_t *out = NULL;
	if (!strcmp(sub, "forget")) {
		r = a.forget(a.ctx, &id);
		if (r == -EPERM)
			r = cn_error_set(-EPERM, "snapshot is protected: unprotect it first "
						 "(cairn snapshot protected %s off)", snap);
		if (r == 0)
			out = json_pack("{s:s, s:b}", "snapshot", snap, "removed", 1);
	} else if (!strcmp(sub, "protected")) {
		const char *what = args[0];
		if (!strcmp(what, "on") || !strcmp(what, "off"))
			r = a.set_protected(a.ctx, &id, !strcmp(what, "on"));
		if (r == 0)
			r = cli_endpoint_get_protected(e, &id);
		if (r >= 0) {
			out = json_pack("{s:s, s:b}", "snapshot", snap, "protected", r);
			r = 0;
		}
	} else {
		char *notes = NULL;
		if (!strcmp(args[0], "update"))
			r = cli_endpoint_set_notes(e, &id, args[1]);
		if (r == 0)
			r = cli_endpoint_get_notes(e, &id, &notes);
		if (r == 0)
			out = json_pack("{s:s, s:s}", "snapshot", snap, "notes", notes);
		free(notes);
	}
	if (r < 0)
		return cli_fail(c, r, snap);
	if (c->json) {
		cli_json_print(out);
		return CLI_EXIT_OK;
	}
	json_t *v;
	if ((v = json_object_get(out, "notes")))
		fputs(json_string_value(v), stdout), putchar('\n');
	else if ((v = json_object_get(out, "protected")))
		printf("%s %s\n", snap, json_is_true(v) ? "protected" : "not protected");
	else
		printf("removed %s\n", snap);
	json_decref(out);
	return CLI_EXIT_OK;
}

static int cmd_snapshot(int argc, char **argv)
{
	struct cli_common c = {.cmd = "snapshot"};
	if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
		help(argc < 2 ? stderr : stdout);
		return argc < 2 ? CLI_EXIT_USAGE : CLI_EXIT_OK;
	}
	const char *sub = argv[1];
	int is_list = !strcmp(sub, "list"), is_files = !strcmp(sub, "files");
	int is_manage = !strcmp(sub, "forget") || !strcmp(sub, "protected") || !strcmp(sub, "notes");
	if (!is_list && !is_files && !is_manage)
		return cli_usage_error(c.cmd, "unknown subcommand '%s' (list, files, forget, protected, "
					      "notes)", sub);
	int parsed = cli_parse_common_only(&c, argc, argv, 2, help);
	if (parsed >= 0)
		return parsed;
	int nargs = argc - optind;
	if (is_list && nargs > 1)
		return cli_usage_error(c.cmd, "snapshot list takes at most a GROUP");
	if (is_files && (nargs < 1 || nargs > 3))
		return cli_usage_error(c.cmd, "snapshot files takes SNAPSHOT [ARCHIVE [PATH]]");
	if (!strcmp(sub, "forget") && nargs != 1)
		return cli_usage_error(c.cmd, "snapshot forget takes SNAPSHOT");
	if (!strcmp(sub, "protected") &&
	    (nargs != 2 || (strcmp(argv[optind + 1], "on") && strcmp(argv[optind + 1], "off") &&
			    strcmp(argv[optind + 1], "show"))))
		return cli_usage_error(c.cmd, "snapshot protected takes SNAPSHOT on|off|show");
	if (!strcmp(sub, "notes") &&
	    !((nargs == 2 && !strcmp(argv[optind + 1], "show")) ||
	      (nargs == 3 && !strcmp(argv[optind + 1], "update"))))
		return cli_usage_error(c.cmd, "snapshot notes takes SNAPSHOT show|update TEXT");
	struct cli_endpoints eps;
	int exit_code = cli_open_endpoints(&c, CLI_OPEN_NO_INDEX | (is_manage ? 0 : CLI_OPEN_S3), 1, &eps);
	if (exit_code)
		return exit_code;
	if (is_manage) {
		exit_code = do_manage(&c, &eps.e[0], sub, argv[optind], argv + optind + 1);
		cli_close_endpoints(&eps);
		return exit_code;
	}
	struct cn_source *src;
	int r = cli_endpoint_source(&eps.e[0], &src);
	if (r < 0) {
		exit_code = cli_fail(&c, r, eps.e[0].name);
	} else {
		if (is_list)
			exit_code = do_list(&c, src, nargs ? argv[optind] : NULL);
		else
			exit_code = do_files(&c, src, argv[optind], nargs > 1 ? argv[optind + 1] : NULL,
					     nargs > 2 ? argv[optind + 2] : NULL);
		src->ops->destroy(src);
	}
	cli_close_endpoints(&eps);
	return exit_code;
}

const struct cli_command cli_cmd_snapshot = {
	.name = "snapshot",
	.summary = "list, inspect, forget, protect or annotate snapshots",
	.run = cmd_snapshot,
};
