/* cairn mount — an archive of a snapshot as a read-only file system (FUSE):
 *   cairn mount SNAPSHOT ARCHIVE MOUNTPOINT [--store DIR | --repository R]
 *               [--keyfile KEY] [--daemon] [-o allow_other] [--threads N]
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli/cli_common.h"
#include "common/cn_error.h"
#include "engine/cn_mount.h"

static void help(FILE *f)
{
	fprintf(f,
		"Usage: cairn mount [OPTIONS] SNAPSHOT ARCHIVE MOUNTPOINT\n\n"
		"Mounts ARCHIVE (e.g. media.pxar, split or not) of SNAPSHOT (TYPE/ID/TIME, or\n"
		"TYPE/ID for the newest) read-only at the directory MOUNTPOINT with FUSE.\n"
		"Nothing is read before it is needed: a directory when it is listed, a file's\n"
		"data chunk by chunk as it is read, each chunk checked against its digest.\n"
		"A damaged chunk makes reads of the files in it fail with EIO (logged on\n"
		"stderr); everything else stays readable.\n\n"
		"The command stays in the foreground until the mount is left with\n"
		"'fusermount3 -u MOUNTPOINT' or 'umount MOUNTPOINT', or until it gets\n"
		"SIGINT (Ctrl-C) or SIGTERM, which unmount it cleanly. With --daemon it\n"
		"detaches once the mount is in place; leave the mount the same way. A\n"
		"detached mount keeps its messages only when stderr is a file or the\n"
		"journal (e.g. 2>>/var/log/cairn-mount.log).\n\n"
		"Files show owner, group, permissions, mtime, xattrs and ACLs as archived,\n"
		"and the kernel checks access against them (default_permissions). Only the\n"
		"user who mounted can enter the mount unless -o allow_other is given (for\n"
		"non-root users it needs user_allow_other in /etc/fuse.conf). Hardlinked\n"
		"files show one inode; link counts show 1. Run as root, cairn raises the\n"
		"kernel's read-ahead on the mount to 1 MiB (its read_ahead_kb in\n"
		"/sys/class/bdi) for faster sequential reads.\n\n"
		"Options:\n"
		"  --daemon               detach once mounted\n"
		"  -o allow_other         let other users in (access as archived)\n"
		"  --threads N            read-ahead threads per archive stream (default 2).\n"
		"                         Memory: the chunk cache holds 2*N+5 chunks per\n"
		"                         stream (a split archive has two), each with its\n"
		"                         stored form (chunks are 4 MiB on average, at most\n"
		"                         16 MiB): with the default 9 slots, typically\n"
		"                         40-80 MiB per stream, at most about 300 MiB\n"
		"  --debug                libfuse's request trace on stderr\n"
		CLI_COMMON_HELP
		"\nExit codes: 0 unmounted cleanly, 1 failure (could not mount), 2 usage,\n"
		"4 the snapshot's manifest or index is damaged.\n");
}

enum { OPT_DAEMON = OPT_FIRST_COMMAND_OPTION, OPT_THREADS, OPT_DEBUG };

/* --daemon: the parent waits on this pipe for the child's exit code
 * (0 = mounted) and exits with it. */
struct daemon_ctl {
	int fd;  /* write end in the child, -1 without --daemon */
};

static void report(struct daemon_ctl *d, int code)
{
	if (d->fd < 0)
		return;
	unsigned char b = (unsigned char)code;
	if (write(d->fd, &b, 1) != 1) {
		/* the parent is gone: nothing to tell */
	}
	close(d->fd);
	d->fd = -1;
}

static void on_mounted(void *ctx)
{
	struct daemon_ctl *d = ctx;
	if (d->fd < 0)
		return;
	/* detached: no terminal or pipe is held open; stderr stays where it
	 * goes when that is a file or the journal (a socket) */
	int null = open("/dev/null", O_RDWR);
	struct stat st;
	if (null >= 0) {
		dup2(null, STDIN_FILENO);
		dup2(null, STDOUT_FILENO);
		if (fstat(STDERR_FILENO, &st) < 0 || !(S_ISREG(st.st_mode) || S_ISSOCK(st.st_mode)))
			dup2(null, STDERR_FILENO);
		if (null > STDERR_FILENO)
			close(null);
	}
	report(d, CLI_EXIT_OK);
}

/* Forks; the parent waits for the child's word and returns -1 - code
 * for its own exit, the child returns 0 with d->fd set. */
static int daemonize(struct daemon_ctl *d)
{
	int p[2];
	if (pipe(p) < 0) {
		perror("cairn mount: pipe");
		return -1 - CLI_EXIT_ERROR;
	}
	pid_t pid = fork();
	if (pid < 0) {
		perror("cairn mount: fork");
		return -1 - CLI_EXIT_ERROR;
	}
	if (pid == 0) {
		close(p[0]);
		setsid();
		d->fd = p[1];
		return 0;
	}
	close(p[1]);
	unsigned char b;
	ssize_t n;
	while ((n = read(p[0], &b, 1)) < 0 && errno == EINTR)
		;
	close(p[0]);
	if (n == 1)
		return -1 - (int)b;
	int st;
	waitpid(pid, &st, 0);
	return -1 - CLI_EXIT_ERROR;
}

static int cmd_mount(int argc, char **argv)
{
	struct cli_common c = {.cmd = "mount"};
	static const struct option opts[] = {
		CLI_COMMON_LONG_OPTIONS,
		{"daemon", no_argument, NULL, OPT_DAEMON},
		{"threads", required_argument, NULL, OPT_THREADS},
		{"debug", no_argument, NULL, OPT_DEBUG},
		{0},
	};
	struct cn_mount_opts mo = {0};
	int daemon = 0, o, rc;
	while ((o = getopt_long(argc, argv, "ho:", opts, NULL)) != -1) {
		if ((rc = cli_common_option(&c, o, optarg)) < 0)
			return -rc;
		if (rc)
			continue;
		switch (o) {
		case 'h':
			help(stdout);
			return CLI_EXIT_OK;
		case 'o':
			for (char *s = optarg, *e; s && *s; s = e ? e + 1 : NULL) {
				e = strchr(s, ',');
				size_t n = e ? (size_t)(e - s) : strlen(s);
				if (n == 11 && !strncmp(s, "allow_other", 11))
					mo.allow_other = 1;
				else
					return cli_usage_error(c.cmd, "-o takes allow_other only");
			}
			break;
		case OPT_DAEMON:
			daemon = 1;
			break;
		case OPT_DEBUG:
			mo.debug = 1;
			break;
		case OPT_THREADS:
			mo.threads = (size_t)strtoul(optarg, NULL, 10);
			if (mo.threads == 0 || mo.threads > 64)
				return cli_usage_error(c.cmd, "--threads takes 1..64");
			break;
		default:
			return cli_usage_error(c.cmd, "unknown option");
		}
	}
	if (argc - optind != 3)
		return cli_usage_error(c.cmd, "give SNAPSHOT ARCHIVE MOUNTPOINT");
	const char *archive = argv[optind + 1], *mountpoint = argv[optind + 2];
	struct cn_snapshot_id id;
	int exit_code = cli_parse_snapshot(&c, argv[optind], 1, &id);
	if (exit_code)
		return exit_code;
	/* before any thread exists: the signals that unmount are then taken
	 * by cn_mount_run's sigwait thread, wherever they are sent */
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	struct daemon_ctl d = {.fd = -1};
	if (daemon && (rc = daemonize(&d)) < 0)
		return -1 - rc;
	struct cn_crypt_config *crypt = NULL;
	struct cli_endpoints eps = {0};
	struct cn_source *src = NULL;
	struct cn_mount *m = NULL;
	if ((exit_code = cli_load_key(&c, &crypt)))
		goto out;
	mo.crypt = crypt;
	if ((exit_code = cli_open_endpoints(&c, CLI_OPEN_NO_INDEX, 1, &eps)))
		goto out;
	int r = cli_endpoint_source(&eps.e[0], &src);
	if (r < 0) {
		exit_code = cli_fail(&c, r, eps.e[0].name);
		goto out;
	}
	if ((exit_code = cli_latest_snapshot(&c, src, &id)))
		goto out;
	char snap[512], ctx[700];
	cli_snapshot_text(&id, snap, sizeof(snap));
	snprintf(ctx, sizeof(ctx), "%s %s", snap, archive);
	if ((r = cn_mount_open(src, &id, archive, &mo, &m)) < 0) {
		exit_code = cli_fail(&c, r, ctx);
		goto out;
	}
	if ((r = cn_mount_run(m, mountpoint, on_mounted, &d)) < 0) {
		exit_code = cli_fail(&c, r, ctx);
		if (exit_code != CLI_EXIT_CORRUPT)
			exit_code = CLI_EXIT_ERROR;
	}
out:
	report(&d, exit_code);
	cn_mount_free(m);
	if (src)
		src->ops->destroy(src);
	cli_close_endpoints(&eps);
	cn_crypt_config_free(crypt);
	return exit_code;
}

const struct cli_command cli_cmd_mount = {
	.name = "mount",
	.summary = "mount an archive of a snapshot read-only (FUSE)",
	.run = cmd_mount,
};
