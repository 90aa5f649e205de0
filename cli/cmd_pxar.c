/* cairn pxar — standalone pxar archives, like upstream's `pxar` tool:
 *   cairn pxar create ARCHIVE.pxar DIR [--exclude PAT]...
 *   cairn pxar extract ARCHIVE.pxar DIR [PATTERN]...
 *   cairn pxar list ARCHIVE.pxar [PATH]
 * No datastore is involved. */
#include "cli/cli.h"
#include "cli/cli_common.h"
#include "common/cn_error.h"
#include "common/cn_log.h"
#include "common/cn_util.h"
#include "pxar/cn_pxar_decoder.h"
#include "pxar/cn_catalog_writer.h"
#include "engine/cn_pxar_extract.h"
#include "engine/cn_walker.h"

#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void help_main(FILE *f)
{
	fprintf(f, "Usage: cairn pxar SUBCOMMAND ...\n\n"
		   "Create, extract and list standalone pxar archives (no datastore).\n\n"
		   "Subcommands:\n"
		   "  create ARCHIVE.pxar DIR [--exclude PAT]...   archive a directory tree\n"
		   "  extract ARCHIVE.pxar DIR [PATTERN]...        restore into DIR\n"
		   "  list ARCHIVE.pxar [PATH]                     list entries\n\n"
		   "Run 'cairn pxar SUBCOMMAND --help' for options.\n");
}

static void help_create(FILE *f)
{
	fprintf(f, "Usage: cairn pxar create [OPTIONS] ARCHIVE.pxar DIR\n\n"
		   "Archives the tree at DIR as a pxar (format v1) archive, byte-compatible\n"
		   "with proxmox-backup-client 3.2.4. ARCHIVE must not exist yet.\n\n"
		   "Options:\n"
		   "  --exclude PAT          exclude paths matching PAT (repeatable; glob\n"
		   "                         semantics of upstream's --exclude, '!' re-includes)\n"
		   "  --all-file-systems     descend into other mounted file systems\n"
		   "  --entries-max N        limit of entries held in memory (default 1048576)\n"
		   "  --catalog FILE         also write the catalog (catalog.pcat1) to FILE\n"
		   "  -h, --help\n");
}

static void help_extract(FILE *f)
{
	fprintf(f, "Usage: cairn pxar extract [OPTIONS] ARCHIVE.pxar DIR [PATTERN]...\n\n"
		   "Restores the archive into DIR (created if missing). PATTERNs select what\n"
		   "to restore, as upstream `pxar extract`'s do: a path from the archive root\n"
		   "(a file or a whole subtree; when every PATTERN without '!' is a path,\n"
		   "they are found through the goodbye tables without reading the rest), or\n"
		   "a glob (* ? [..], \\ escapes) that matches the whole path or any part\n"
		   "after a '/' (a leading '/' anchors it at the root). '!PATTERN' excludes;\n"
		   "the last PATTERN matching an entry decides, and entries none matches\n"
		   "follow their directory. With only '!' patterns everything else is\n"
		   "restored. Entries keep their archive path below DIR.\n"
		   "Nothing is written outside DIR; existing files are not replaced\n"
		   "unless --overwrite is given.\n\n"
		   "Options:\n"
		   "  --overwrite            replace existing files, symlinks, hardlinks\n"
		   "  --allow-existing-dirs  extract into directories that already exist\n"
		   "  --strict               stop at the first error\n"
		   "  --no-owner, --ignore-ownership\n"
		   "                         do not restore owners (needed to restore files of\n"
		   "                         other users without errors when not root)\n"
		   "  --no-xattrs, --no-acls, --no-fcaps\n"
		   "                         do not restore these (file capabilities are\n"
		   "                         skipped also when stored as an xattr)\n"
		   "  --no-device-nodes, --no-fifos, --no-sockets\n"
		   "  --payload-input FILE   payload stream (.ppxar) of a split archive\n"
		   "  -h, --help\n\n"
		   "Exit codes: 0 ok, 1 failure, 2 usage, 3 some entries failed.\n");
}

static void help_list(FILE *f)
{
	fprintf(f, "Usage: cairn pxar list [OPTIONS] ARCHIVE.pxar [PATH]\n\n"
		   "Lists the entries of the archive (or of PATH and below) in archive order,\n"
		   "one quoted path per line, or with -v/--verbose in `pxar list` long form:\n"
		   "mode, uid/gid, mtime, size (major,minor for devices), path, link target.\n\n"
		   "Options:\n"
		   "  -v, --verbose          long listing\n"
		   "  --payload-input FILE   payload stream (.ppxar) of a split archive\n"
		   "  -h, --help\n");
}

/* An open archive (and optional payload stream). */
struct archive {
	int fd, pfd;
	struct cn_pxar_input in, payload;
};

static int archive_open(struct archive *a, const char *path, const char *payload)
{
	a->fd = a->pfd = -1;
	a->fd = cn_open_regular(path, 0, NULL);
	if (a->fd < 0)
		return cn_error_prefix(a->fd, "cannot open archive");
	int rc = cn_pxar_input_fd(&a->in, a->fd);
	if (rc < 0)
		return cn_error_prefix(rc, "'%s'", path);
	if (payload) {
		a->pfd = cn_open_regular(payload, 0, NULL);
		if (a->pfd < 0)
			return cn_error_prefix(a->pfd, "cannot open payload");
		rc = cn_pxar_input_fd(&a->payload, a->pfd);
		if (rc < 0)
			return cn_error_prefix(rc, "'%s'", payload);
	}
	return 0;
}

static void archive_close(struct archive *a)
{
	if (a->fd >= 0)
		close(a->fd);
	if (a->pfd >= 0)
		close(a->pfd);
}

struct list_ctx {
	int verbose;
};

static int list_one(void *ctx, const struct cn_pxar_entry *e)
{
	struct list_ctx *c = ctx;
	if (c->verbose) {
		char line[8192 + 256];
		cn_pxar_format_entry(e, line, sizeof(line));
		puts(line);
	} else {
		char *p = malloc(e->path_len + 2);
		if (!p)
			return cn_error_set(-ENOMEM, "out of memory");
		p[0] = '/';
		memcpy(p + 1, e->path, e->path_len + 1);
		cli_print_quoted(stdout, p);
		putchar('\n');
		free(p);
	}
	return 0;
}

static int cmd_list(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "verbose", no_argument, NULL, 'v' },
		{ "payload-input", required_argument, NULL, 'P' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	struct list_ctx c = { 0 };
	const char *payload = NULL;
	int o;
	optind = 1;
	while ((o = getopt_long(argc, argv, "vh", opts, NULL)) != -1) {
		switch (o) {
		case 'v': c.verbose = 1; break;
		case 'P': payload = optarg; break;
		case 'h': help_list(stdout); return CLI_EXIT_OK;
		default: return cli_usage_error("pxar list", "bad option");
		}
	}
	if (argc - optind < 1 || argc - optind > 2)
		return cli_usage_error("pxar list", "expected ARCHIVE.pxar [PATH]");
	struct cn_pxar_select *sel;
	if (cn_pxar_select_from_path(argc - optind == 2 ? argv[optind + 1] : NULL, &sel) < 0)
		return cli_usage_error("pxar list", "%s", cn_error_message());
	struct archive a;
	int rc = archive_open(&a, argv[optind], payload);
	if (rc == 0)
		rc = cn_pxar_list(&a.in, payload ? &a.payload : NULL, sel, list_one, &c);
	archive_close(&a);
	cn_pxar_select_free(sel);
	if (rc == 0)
		rc = cli_stdout_done();
	return rc < 0 ? cli_error(argv[optind]) : CLI_EXIT_OK;
}

static int cmd_extract(int argc, char **argv)
{
	enum { O_OVERWRITE = 256, O_EXISTING, O_STRICT, O_NOOWNER, O_NOXATTRS, O_NOACLS, O_NOFCAPS,
	       O_NODEV, O_NOFIFO, O_NOSOCK, O_PAYLOAD };
	static const struct option opts[] = {
		{ "overwrite", no_argument, NULL, O_OVERWRITE },
		{ "allow-existing-dirs", no_argument, NULL, O_EXISTING },
		{ "strict", no_argument, NULL, O_STRICT },
		{ "no-owner", no_argument, NULL, O_NOOWNER },
		{ "ignore-ownership", no_argument, NULL, O_NOOWNER },
		{ "no-xattrs", no_argument, NULL, O_NOXATTRS },
		{ "no-acls", no_argument, NULL, O_NOACLS },
		{ "no-fcaps", no_argument, NULL, O_NOFCAPS },
		{ "no-device-nodes", no_argument, NULL, O_NODEV },
		{ "no-fifos", no_argument, NULL, O_NOFIFO },
		{ "no-sockets", no_argument, NULL, O_NOSOCK },
		{ "payload-input", required_argument, NULL, O_PAYLOAD },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	struct cn_pxar_extract_opts xo = { 0 };
	struct cn_pxar_extract_stats st;
	const char *payload = NULL;
	int o;
	optind = 1;
	while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (o) {
		case O_OVERWRITE: xo.overwrite = 1; break;
		case O_EXISTING: xo.allow_existing_dirs = 1; break;
		case O_STRICT: xo.strict = 1; break;
		case O_NOOWNER: xo.no_owner = 1; break;
		case O_NOXATTRS: xo.no_xattrs = 1; break;
		case O_NOACLS: xo.no_acls = 1; break;
		case O_NOFCAPS: xo.no_fcaps = 1; break;
		case O_NODEV: xo.no_devices = 1; break;
		case O_NOFIFO: xo.no_fifos = 1; break;
		case O_NOSOCK: xo.no_sockets = 1; break;
		case O_PAYLOAD: payload = optarg; break;
		case 'h': help_extract(stdout); return CLI_EXIT_OK;
		default: return cli_usage_error("pxar extract", "bad option");
		}
	}
	if (argc - optind < 2)
		return cli_usage_error("pxar extract", "expected ARCHIVE.pxar DIR [PATTERN]...");
	struct cn_pxar_select *sel;
	if (cn_pxar_select_new(&sel) < 0)
		return cli_error("pxar extract");
	for (int i = optind + 2; i < argc; i++)
		if (cn_pxar_select_add(sel, argv[i], 0) < 0) {
			cn_pxar_select_free(sel);
			return cli_usage_error("pxar extract", "%s", cn_error_message());
		}
	struct archive a;
	int rc = archive_open(&a, argv[optind], payload);
	if (rc == 0) {
		xo.select = sel;
		xo.payload = payload ? &a.payload : NULL;
		rc = cn_pxar_extract(&a.in, argv[optind + 1], &xo, &st);
	}
	archive_close(&a);
	cn_pxar_select_free(sel);
	if (rc == 0 || (rc == -EIO && st.errors)) {
		cn_log_info("restored %llu dirs, %llu files (%llu bytes, %llu sparse), %llu symlinks, "
			    "%llu hardlinks, %llu devices, %llu fifos, %llu sockets",
			    (unsigned long long)st.dirs, (unsigned long long)st.files,
			    (unsigned long long)st.bytes, (unsigned long long)st.sparse_bytes,
			    (unsigned long long)st.symlinks, (unsigned long long)st.hardlinks,
			    (unsigned long long)st.devices, (unsigned long long)st.fifos,
			    (unsigned long long)st.sockets);
	}
	if (rc == -EIO && st.errors) {
		cli_error(argv[optind]);
		return CLI_EXIT_PARTIAL;
	}
	if (rc < 0) {
		cli_error(argv[optind]);
		/* a full target stopped the extraction: exit 5 as restore's */
		return cli_exit_code(rc) == CLI_EXIT_NOSPACE ? CLI_EXIT_NOSPACE : CLI_EXIT_ERROR;
	}
	return CLI_EXIT_OK;
}

static int write_fd(void *ctx, const uint8_t *data, size_t len)
{
	int rc = cn_write_full(*(int *)ctx, data, len);
	return rc < 0 ? cn_error_sys(rc, "writing output") : 0;
}

static int cmd_create(int argc, char **argv)
{
	enum { O_EXCLUDE = 256, O_ALLFS, O_ENTRIES, O_CATALOG };
	static const struct option opts[] = {
		{ "exclude", required_argument, NULL, O_EXCLUDE },
		{ "all-file-systems", no_argument, NULL, O_ALLFS },
		{ "entries-max", required_argument, NULL, O_ENTRIES },
		{ "catalog", required_argument, NULL, O_CATALOG },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	struct cn_pxar_create_opts co = { 0 };
	struct cn_pxar_create_stats st;
	const char **ex = calloc((size_t)argc, sizeof(*ex));
	const char *catalog_path = NULL;
	int o, status = CLI_EXIT_OK;
	if (!ex)
		return cli_error("out of memory");
	optind = 1;
	while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		char *end;
		switch (o) {
		case O_EXCLUDE: ex[co.n_excludes++] = optarg; break;
		case O_ALLFS: co.all_file_systems = 1; break;
		case O_ENTRIES:
			co.entries_max = strtoul(optarg, &end, 10);
			if (*end || !co.entries_max) {
				free(ex);
				return cli_usage_error("pxar create", "bad --entries-max '%s'", optarg);
			}
			break;
		case O_CATALOG: catalog_path = optarg; break;
		case 'h': free(ex); help_create(stdout); return CLI_EXIT_OK;
		default: free(ex); return cli_usage_error("pxar create", "bad option");
		}
	}
	if (argc - optind != 2) {
		free(ex);
		return cli_usage_error("pxar create", "expected ARCHIVE.pxar DIR");
	}
	co.excludes = ex;
	const char *archive = argv[optind], *dir = argv[optind + 1];
	int fd = open(archive, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644), cfd = -1;
	struct cn_catalog_writer *cw = NULL;
	int rc = fd < 0 ? cn_error_sys(-errno, "cannot create '%s'", archive) : 0;
	if (rc == 0 && catalog_path) {
		cfd = open(catalog_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
		if (cfd < 0)
			rc = cn_error_sys(-errno, "cannot create '%s'", catalog_path);
		else
			rc = cn_catalog_writer_new(write_fd, &cfd, &cw);
		if (rc == 0) {
			/* as the official client: one directory per archive */
			const char *b = strrchr(archive, '/');
			b = b ? b + 1 : archive;
			char *name = malloc(strlen(b) + 6);
			if (!name)
				rc = cn_error_set(-ENOMEM, "out of memory");
			else {
				sprintf(name, "%s.didx", b);
				co.archive_name = name;
			}
		}
	}
	if (rc == 0)
		rc = cn_pxar_create(dir, &co, write_fd, &fd, cw, &st);
	if (rc == 0 && cw)
		rc = cn_catalog_writer_finish(cw);
	if (rc == 0 && fsync(fd) < 0)
		rc = cn_error_sys(-errno, "fsync '%s'", archive);
	if (rc == 0 && cfd >= 0 && fsync(cfd) < 0)
		rc = cn_error_sys(-errno, "fsync '%s'", catalog_path);
	cn_catalog_writer_free(cw);
	free((void *)co.archive_name);
	free(ex);
	if (cfd >= 0)
		close(cfd);
	if (fd >= 0)
		close(fd);
	if (rc < 0) {
		status = cli_error(archive);
		/* leave no half-written archive behind */
		if (fd >= 0)
			unlink(archive);
		if (cfd >= 0)
			unlink(catalog_path);
		return status;
	}
	cn_log_info("archived %llu dirs, %llu files (%llu bytes), %llu symlinks, %llu hardlinks, "
		    "%llu devices, %llu fifos, %llu sockets; %llu excluded; archive %llu bytes",
		    (unsigned long long)st.dirs, (unsigned long long)st.files,
		    (unsigned long long)st.bytes_read, (unsigned long long)st.symlinks,
		    (unsigned long long)st.hardlinks, (unsigned long long)st.devices,
		    (unsigned long long)st.fifos, (unsigned long long)st.sockets,
		    (unsigned long long)st.excluded, (unsigned long long)st.archive_size);
	if (st.changed)
		fprintf(stderr, "cairn: warning: %llu files changed while being read\n",
			(unsigned long long)st.changed);
	if (st.skipped) {
		fprintf(stderr, "cairn: %llu entries skipped (vanished, unreadable or changed type)\n",
			(unsigned long long)st.skipped);
		status = CLI_EXIT_PARTIAL;
	}
	return status;
}

static int run(int argc, char **argv)
{
	if (argc < 2) {
		help_main(stderr);
		return CLI_EXIT_USAGE;
	}
	if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
		help_main(stdout);
		return CLI_EXIT_OK;
	}
	if (!strcmp(argv[1], "create"))
		return cmd_create(argc - 1, argv + 1);
	if (!strcmp(argv[1], "extract"))
		return cmd_extract(argc - 1, argv + 1);
	if (!strcmp(argv[1], "list"))
		return cmd_list(argc - 1, argv + 1);
	fprintf(stderr, "cairn pxar: unknown subcommand '%s'\n", argv[1]);
	help_main(stderr);
	return CLI_EXIT_USAGE;
}

const struct cli_command cli_cmd_pxar = {
	.name = "pxar",
	.summary = "create, extract and list standalone pxar archives",
	.run = run,
};
