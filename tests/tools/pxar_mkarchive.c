/* Test helper: writes the pxar archive and catalog of a directory with
 * cn_pxar_create, so that independent checkers (tests/pxar_check.py) can
 * inspect real output. Not the user-facing `cairn pxar` command.
 * Usage: pxar_mkarchive DIR ARCHIVE CATALOG [--exclude PATTERN]...
 *        [--skip-lost-found] [--all-file-systems] */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/cn_error.h"
#include "common/cn_util.h"
#include "pxar/cn_catalog_writer.h"
#include "engine/cn_walker.h"

static int fd_out(void *ctx, const uint8_t *data, size_t len)
{
	int rc = cn_write_full(*(int *)ctx, data, len);
	return rc < 0 ? cn_error_sys(rc, "write") : 0;
}

int main(int argc, char **argv)
{
	if (argc < 4) {
		fprintf(stderr, "usage: %s DIR ARCHIVE CATALOG [options]\n", argv[0]);
		return 2;
	}
	const char *ex[64];
	struct cn_pxar_create_opts o = { .excludes = ex, .archive_name = "root.pxar.didx" };
	for (int i = 4; i < argc; i++) {
		if (!strcmp(argv[i], "--exclude") && i + 1 < argc && o.n_excludes < 64)
			ex[o.n_excludes++] = argv[++i];
		else if (!strcmp(argv[i], "--skip-lost-found"))
			o.skip_lost_found = 1;
		else if (!strcmp(argv[i], "--all-file-systems"))
			o.all_file_systems = 1;
		else {
			fprintf(stderr, "unknown option %s\n", argv[i]);
			return 2;
		}
	}
	int afd = open(argv[2], O_WRONLY | O_CREAT | O_TRUNC, 0644);
	int cfd = open(argv[3], O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (afd < 0 || cfd < 0) {
		perror("open");
		return 1;
	}
	struct cn_catalog_writer *cw;
	struct cn_pxar_create_stats st;
	int rc = cn_catalog_writer_new(fd_out, &cfd, &cw);
	if (rc == 0)
		rc = cn_pxar_create(argv[1], &o, fd_out, &afd, cw, &st);
	if (rc == 0)
		rc = cn_catalog_writer_finish(cw);
	cn_catalog_writer_free(cw);
	close(afd);
	close(cfd);
	if (rc < 0) {
		fprintf(stderr, "error: %s\n", cn_error_message());
		return 1;
	}
	printf("files %llu dirs %llu hardlinks %llu bytes %llu archive %llu skipped %llu changed %llu\n",
	       (unsigned long long)st.files, (unsigned long long)st.dirs,
	       (unsigned long long)st.hardlinks, (unsigned long long)st.bytes_read,
	       (unsigned long long)st.archive_size, (unsigned long long)st.skipped,
	       (unsigned long long)st.changed);
	return 0;
}
