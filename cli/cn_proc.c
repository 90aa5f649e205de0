#include "cli/cn_proc.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/cn_error.h"
#include "common/cn_util.h"

extern char **environ;

static const char *const secret_vars[] = {
	"PBS_PASSWORD=", "PBS_PASSWORD_FD=", "PBS_PASSWORD_FILE=", "PBS_PASSWORD_CMD=",
	"PBS_ENCRYPTION_PASSWORD=", "PBS_ENCRYPTION_PASSWORD_FD=",
	"PBS_ENCRYPTION_PASSWORD_FILE=",
};

static char **clean_env(void)
{
	size_t n = 0;
	while (environ && environ[n])
		n++;
	char **env = calloc(n + 1, sizeof(char *));
	if (!env)
		return NULL;
	size_t k = 0;
	for (size_t i = 0; i < n; i++) {
		int secret = 0;
		for (size_t s = 0; s < CN_ARRAY_SIZE(secret_vars); s++)
			if (!strncmp(environ[i], secret_vars[s], strlen(secret_vars[s])))
				secret = 1;
		if (!secret)
			env[k++] = environ[i];
	}
	return env;
}

static double now_mono(void)
{
	return (double)cn_monotonic_ns() / 1e9;
}

int cn_proc_run(const char *const *argv, const void *in, size_t in_len, struct cn_buf *out,
		struct cn_buf *err, unsigned timeout_s, struct cn_proc_result *res)
{
	memset(res, 0, sizeof(*res));
	int pin[2] = {-1, -1}, pout[2] = {-1, -1}, perr[2] = {-1, -1}, pexec[2] = {-1, -1};
	char **env = clean_env();
	if (!env)
		return cn_error_set(-ENOMEM, "out of memory");
	if (pipe2(pin, O_CLOEXEC) < 0 || pipe2(pout, O_CLOEXEC) < 0 ||
	    pipe2(perr, O_CLOEXEC) < 0 || pipe2(pexec, O_CLOEXEC) < 0) {
		int e = -errno;
		for (int i = 0; i < 2; i++) {
			if (pin[i] >= 0) close(pin[i]);
			if (pout[i] >= 0) close(pout[i]);
			if (perr[i] >= 0) close(perr[i]);
			if (pexec[i] >= 0) close(pexec[i]);
		}
		free(env);
		return cn_error_sys(e, "pipe");
	}
	pid_t pid = fork();
	if (pid < 0) {
		int e = -errno;
		close(pin[0]); close(pin[1]); close(pout[0]); close(pout[1]);
		close(perr[0]); close(perr[1]); close(pexec[0]); close(pexec[1]);
		free(env);
		return cn_error_sys(e, "fork");
	}
	if (pid == 0) {
		setpgid(0, 0);
		signal(SIGPIPE, SIG_DFL);
		dup2(pin[0], 0);
		dup2(pout[1], 1);
		dup2(perr[1], 2);
		execvpe(argv[0], (char *const *)argv, env);
		int e = errno;
		(void)!write(pexec[1], &e, sizeof(e));
		_exit(127);
	}
	free(env);
	close(pin[0]);
	close(pout[1]);
	close(perr[1]);
	close(pexec[1]);
	int exec_errno = 0;
	ssize_t en = read(pexec[0], &exec_errno, sizeof(exec_errno));
	close(pexec[0]);
	if (en == (ssize_t)sizeof(exec_errno)) {
		close(pin[1]);
		close(pout[0]);
		close(perr[0]);
		waitpid(pid, NULL, 0);
		return cn_error_sys(-exec_errno, "cannot run %s", argv[0]);
	}
	if (!in)
		in_len = 0;
	if (in_len == 0) {
		close(pin[1]);
		pin[1] = -1;
	} else {
		fcntl(pin[1], F_SETFL, O_NONBLOCK);
	}
	size_t in_off = 0;
	double deadline = timeout_s ? now_mono() + timeout_s : 0, kill_at = 0;
	int open_out = 1, open_err = 1;
	void (*old_pipe)(int) = signal(SIGPIPE, SIG_IGN); /* a child that stops reading */
	while (open_out || open_err || pin[1] >= 0) {
		struct pollfd pf[3];
		int np = 0, iout = -1, ierr = -1, iin = -1;
		if (open_out) { pf[np] = (struct pollfd){pout[0], POLLIN, 0}; iout = np++; }
		if (open_err) { pf[np] = (struct pollfd){perr[0], POLLIN, 0}; ierr = np++; }
		if (pin[1] >= 0) { pf[np] = (struct pollfd){pin[1], POLLOUT, 0}; iin = np++; }
		int wait_ms = 500;
		int r = poll(pf, (nfds_t)np, wait_ms);
		if (r < 0 && errno != EINTR)
			break;
		double now = now_mono();
		if (deadline && now > deadline && !res->timed_out) {
			res->timed_out = 1;
			kill(-pid, SIGTERM);
			kill_at = now + 5;
		}
		if (kill_at && now > kill_at) {
			kill(-pid, SIGKILL);
			kill_at = 0;
		}
		if (r <= 0)
			continue;
		uint8_t buf[8192];
		if (iout >= 0 && pf[iout].revents) {
			ssize_t n = read(pout[0], buf, sizeof(buf));
			if (n > 0 && out)
				cn_buf_append(out, buf, (size_t)n);
			if (n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN))
				open_out = 0;
		}
		if (ierr >= 0 && pf[ierr].revents) {
			ssize_t n = read(perr[0], buf, sizeof(buf));
			if (n > 0 && err)
				cn_buf_append(err, buf, (size_t)n);
			if (n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN))
				open_err = 0;
		}
		if (iin >= 0 && pf[iin].revents) {
			ssize_t n = write(pin[1], (const uint8_t *)in + in_off, in_len - in_off);
			if (n > 0)
				in_off += (size_t)n;
			if ((n < 0 && errno != EAGAIN && errno != EINTR) || in_off == in_len) {
				close(pin[1]);
				pin[1] = -1;
			}
		}
	}
	if (pin[1] >= 0)
		close(pin[1]);
	close(pout[0]);
	close(perr[0]);
	int status;
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	signal(SIGPIPE, old_pipe);
	if (WIFEXITED(status)) {
		res->exited = 1;
		res->status = WEXITSTATUS(status);
	} else {
		res->status = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
	}
	return 0;
}

void cn_proc_describe(const struct cn_proc_result *res, unsigned timeout_s, char *buf,
		      size_t len)
{
	if (res->timed_out)
		snprintf(buf, len, "timed out after %u s", timeout_s);
	else if (res->exited)
		snprintf(buf, len, "exit code %d", res->status);
	else
		snprintf(buf, len, "killed by signal %d", res->status);
}
