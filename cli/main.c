/* cairn — command line entry point and subcommand dispatcher.
 *
 * Usage: cairn [-v|-q] COMMAND [ARGS...]; `cairn --help`, `cairn COMMAND
 * --help`. Commands are table entries (struct cli_command, cli/cli.h),
 * one file per command: cli/cmd_<name>.c.
 *
 * Exit codes (enum in cli/cli.h):
 *   0  success
 *   1  the operation failed (the message is printed on stderr)
 *   2  usage error (unknown command or option, missing argument)
 *   3  finished with warnings: some entries could not be processed
 *      (backup: unreadable or vanished files skipped, or one of several
 *      targets failed; restore/extract: some files or metadata not restored)
 *   4  stored data is corrupt (chunk digest/CRC, index or manifest checksum)
 *   5  no space left on the device being written
 *   6  locked: another backup of the same group is running
 *   7  busy: another `cairn run` of the same config is running
 *   8  the config file is missing or invalid
 */
#include "cli/cli.h"
#include "common/cn_error.h"
#include "common/cn_log.h"
#include "common/cn_util.h"

#include <malloc.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

extern const struct cli_command cli_cmd_backup, cli_cmd_restore, cli_cmd_list,
	cli_cmd_snapshot, cli_cmd_verify, cli_cmd_prune, cli_cmd_gc, cli_cmd_key,
	cli_cmd_benchmark, cli_cmd_pxar, cli_cmd_catalog, cli_cmd_run, cli_cmd_config,
	cli_cmd_status, cli_cmd_version, cli_cmd_mount, cli_cmd_sync;

static const struct cli_command *const commands[] = {
	&cli_cmd_backup, &cli_cmd_restore, &cli_cmd_list, &cli_cmd_snapshot,
	&cli_cmd_verify, &cli_cmd_prune, &cli_cmd_gc, &cli_cmd_key,
	&cli_cmd_benchmark, &cli_cmd_pxar, &cli_cmd_catalog, &cli_cmd_run, &cli_cmd_config,
	&cli_cmd_status, &cli_cmd_version, &cli_cmd_mount, &cli_cmd_sync,
};

int cli_error(const char *context)
{
	const char *msg = cn_error_message();
	if (context && *context)
		fprintf(stderr, "cairn: %s: %s\n", context, *msg ? msg : "unknown error");
	else
		fprintf(stderr, "cairn: %s\n", *msg ? msg : "unknown error");
	return CLI_EXIT_ERROR;
}

int cli_usage_error(const char *cmd, const char *fmt, ...)
{
	va_list ap;
	fprintf(stderr, "cairn %s: ", cmd);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nTry 'cairn %s --help'.\n", cmd);
	return CLI_EXIT_USAGE;
}

void cli_print_quoted(FILE *f, const char *s)
{
	size_t len = strlen(s);
	char small[1024];
	size_t need = cn_escape(s, len, 1, NULL, 0) + 1;
	char *buf = need <= sizeof(small) ? small : malloc(need);
	if (!buf) {
		fputs("\"(out of memory)\"", f);
		return;
	}
	cn_escape(s, len, 1, buf, need);
	fprintf(f, "\"%s\"", buf);
	if (buf != small)
		free(buf);
}

/* Whether stderr is connected to the systemd journal: JOURNAL_STREAM holds
 * "DEVICE:INODE" of the journal stream, compared with stderr as systemd's
 * documentation asks (a child whose stderr was redirected inherits the
 * variable but not the stream). */
static int stderr_is_journal(void)
{
	const char *js = getenv("JOURNAL_STREAM");
	unsigned long long dev, ino;
	struct stat st;
	if (!js || sscanf(js, "%llu:%llu", &dev, &ino) != 2 || fstat(STDERR_FILENO, &st) < 0)
		return 0;
	return (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

static void usage(FILE *f)
{
	fprintf(f, "Usage: cairn [-v|--verbose] [-q|--quiet] COMMAND [ARGS...]\n"
		   "       cairn --version\n\n"
		   "A backup engine speaking the Proxmox Backup Server formats.\n\nCommands:\n");
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		fprintf(f, "  %-10s %s\n", commands[i]->name, commands[i]->summary);
	fprintf(f, "\nRun 'cairn COMMAND --help' for a command's options.\n"
		   "Exit codes: 0 success, 1 failure, 2 usage error, 3 finished with warnings\n"
		   "(skipped files, failed entries or targets), 4 corrupt data, 5 no space\n"
		   "left, 6 locked by another backup, 7 another run of the config is running,\n"
		   "8 bad config file.\n");
}

int main(int argc, char **argv)
{
	enum cn_log_level level = CN_LOG_NOTICE;
	int i = 1;
	for (; i < argc && argv[i][0] == '-'; i++) {
		if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
			usage(stdout);
			return CLI_EXIT_OK;
		} else if (!strcmp(argv[i], "--version")) {
			cli_version_print(stdout);
			return CLI_EXIT_OK;
		} else if (!strcmp(argv[i], "-v") || !strcmp(argv[i], "--verbose")) {
			level = level < CN_LOG_DEBUG ? level + 1 : level;
		} else if (!strcmp(argv[i], "-q") || !strcmp(argv[i], "--quiet")) {
			level = CN_LOG_WARNING;
		} else {
			fprintf(stderr, "cairn: unknown option '%s'\n", argv[i]);
			usage(stderr);
			return CLI_EXIT_USAGE;
		}
	}
	cn_log_setup(level, stderr_is_journal());
	/* A server that closes its connection must give an error on that
	 * target, not kill the process (and with it the other targets). */
	signal(SIGPIPE, SIG_IGN);
	/* Chunk-sized buffers (MiBs, allocated by one thread and freed by
	 * another) go straight to mmap and back to the system when freed;
	 * glibc's default would raise the threshold after the first free and
	 * keep them in per-thread arenas, so RSS would creep up with the size
	 * of the data set. */
	mallopt(M_MMAP_THRESHOLD, 1 << 20);
	/* Fixing the threshold also fixes glibc's trim threshold at 128 KiB:
	 * each free that left more than that at the heap top gave it back
	 * with brk, and every brk that shrinks the heap of a threaded
	 * process is a TLB shootdown on the CPUs of its threads. Freeing
	 * an LMDB writer's pages page by page did that thousands of times
	 * (9 % of a no-change metadata-mode run over 100,000 files). Below
	 * 1 MiB (the mmap threshold) allocations are small, so 16 MiB kept
	 * at the top is memory the process just used. */
	mallopt(M_TRIM_THRESHOLD, 16 << 20);
	if (i >= argc) {
		usage(stderr);
		return CLI_EXIT_USAGE;
	}
	for (size_t c = 0; c < sizeof(commands) / sizeof(commands[0]); c++)
		if (!strcmp(argv[i], commands[c]->name))
			return commands[c]->run(argc - i, argv + i);
	fprintf(stderr, "cairn: unknown command '%s'\n", argv[i]);
	usage(stderr);
	return CLI_EXIT_USAGE;
}
