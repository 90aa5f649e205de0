#include "tests/net/pbs_emu.h"

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

int pbs_emu_start(struct pbs_emu *e, const char *const *extra)
{
	char auth[128], certdir[128], cert[160], key[160], server[512], dsarg[160];
	const char *src = getenv("CN_TEST_SRCDIR");
	if (!e->base[0]) {
		strcpy(e->base, "/tmp/cn_pbs_emu_XXXXXX");
		if (!mkdtemp(e->base))
			return -1;
		snprintf(e->ds, sizeof(e->ds), "%s/ds", e->base);
		if (mkdir(e->ds, 0700) < 0)
			return -1;
	}
	snprintf(auth, sizeof(auth), "%s/auth.json", e->base);
	snprintf(certdir, sizeof(certdir), "%s/cert", e->base);
	snprintf(cert, sizeof(cert), "%s/cert.pem", certdir);
	snprintf(key, sizeof(key), "%s/key.pem", certdir);
	snprintf(server, sizeof(server), "%s/tests/pbs_emulator/server.py", src ? src : ".");
	snprintf(dsarg, sizeof(dsarg), "store1=%s", e->ds);
	FILE *f = fopen(auth, "w");
	if (!f)
		return -1;
	fprintf(f, "{\"users\":{\"%s\":\"%s\"},\"tokens\":{\"%s\":\"%s\"}}", PBS_EMU_USER, PBS_EMU_USER_PW,
		PBS_EMU_TOKEN_ID, PBS_EMU_TOKEN_SECRET);
	fclose(f);

	const char *argv[40] = {"/usr/bin/python3", server, "--datastore", dsarg, "--port", "0",
				"--auth-config", auth};
	int n = 8;
	if (access(cert, R_OK) == 0) {
		argv[n++] = "--cert";
		argv[n++] = cert;
		argv[n++] = "--key";
		argv[n++] = key;
	} else {
		argv[n++] = "--cert-out";
		argv[n++] = certdir;
	}
	for (int i = 0; extra && extra[i] && n < 38; i++)
		argv[n++] = extra[i];
	argv[n] = NULL;

	int pfd[2];
	if (pipe(pfd) < 0)
		return -1;
	e->pid = fork();
	if (e->pid < 0)
		return -1;
	if (e->pid == 0) {
		dup2(pfd[1], 1);
		close(pfd[0]);
		close(pfd[1]);
		int devnull = open("/dev/null", O_WRONLY);
		if (devnull >= 0 && !getenv("CN_TEST_EMU_LOG"))
			dup2(devnull, 2);
		execv(argv[0], (char *const *)argv);
		_exit(127);
	}
	close(pfd[1]);
	FILE *out = fdopen(pfd[0], "r");
	char line[256] = "";
	int ok = out && fgets(line, sizeof(line), out) && sscanf(line, "READY %d %95s", &e->port, e->fp) == 2;
	if (out)
		fclose(out);
	if (!ok) {
		fprintf(stderr, "PBS emulator did not start (%s)\n", server);
		pbs_emu_stop(e);
		return -1;
	}
	return 0;
}

void pbs_emu_stop(struct pbs_emu *e)
{
	if (e->pid > 0) {
		kill(e->pid, SIGTERM);
		waitpid(e->pid, NULL, 0);
		e->pid = 0;
	}
}

void pbs_emu_cleanup(struct pbs_emu *e)
{
	char cmd[128];
	pbs_emu_stop(e);
	if (e->base[0]) {
		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", e->base);
		if (system(cmd) != 0)
			fprintf(stderr, "cannot remove %s\n", e->base);
		e->base[0] = '\0';
	}
}

double pbs_emu_cpu_seconds(const struct pbs_emu *e)
{
	char path[64], buf[1024];
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)e->pid);
	FILE *f = fopen(path, "r");
	if (!f)
		return 0;
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	/* fields after the ")" of the command name: state is field 3,
	 * utime 14, stime 15 */
	char *p = strrchr(buf, ')');
	unsigned long ut = 0, st = 0;
	if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
		return 0;
	return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

int pbs_emu_connect(const struct pbs_emu *e, const char *auth_id, const char *secret, const char *fp,
		    struct cn_pbs **out)
{
	char repo[256];
	snprintf(repo, sizeof(repo), "%s@127.0.0.1:%d:store1", auth_id, e->port);
	struct cn_pbs_opts o = {.repository = repo, .fingerprint = fp, .secret = secret,
				.connect_timeout_ms = 3000, .connect_attempts = 2, .io_timeout_ms = 20000};
	return cn_pbs_connect(&o, out);
}
