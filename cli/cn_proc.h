/* cn_proc — running helper programs (zfs, hook commands) from the cairn
 * command: no shell unless the caller asks for one, stdin fed from a
 * buffer, stdout/stderr captured, a time limit, and an environment without
 * cairn's secrets (PBS_PASSWORD, PBS_PASSWORD_FD/_FILE,
 * PBS_ENCRYPTION_PASSWORD, PBS_REPOSITORY's credentials are not secret but
 * the password variables are removed). Called from the single-threaded
 * supervisor of `cairn run`. */
#ifndef CN_PROC_H
#define CN_PROC_H

#include <stddef.h>

#include "common/cn_util.h"

struct cn_proc_result {
	int exited;      /* 1: exited normally, code in status */
	int status;      /* exit code, or the signal that ended it */
	int timed_out;   /* killed after the time limit */
};

/* Runs argv[0] (looked up in PATH) with argv. in/in_len go to its stdin
 * (NULL: /dev/null). out and err (may be NULL: discarded) receive stdout
 * and stderr. timeout_s 0 = no limit; on expiry the process group gets
 * SIGTERM, then SIGKILL after 5 s. Returns 0 when the program ran (see
 * *res for how it ended) or a negative code with a message when it could
 * not be started. */
int cn_proc_run(const char *const *argv, const void *in, size_t in_len, struct cn_buf *out,
		struct cn_buf *err, unsigned timeout_s, struct cn_proc_result *res);

/* "exit code 3", "killed by signal 15", "timed out after N s" into buf. */
void cn_proc_describe(const struct cn_proc_result *res, unsigned timeout_s, char *buf,
		      size_t len);

#endif
