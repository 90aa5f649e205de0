/* Test helper (tests and benchmarks only): runs the PBS emulator
 * (tests/pbs_emulator/server.py, Debian's /usr/bin/python3) on loopback
 * with a datastore "store1", a token and a user, and connects net/ to it. */
#ifndef CN_TEST_PBS_EMU_H
#define CN_TEST_PBS_EMU_H

#include <sys/types.h>

#include "net/cn_pbs.h"

#define PBS_EMU_TOKEN_ID "root@pam!t1"
#define PBS_EMU_TOKEN_SECRET "s3cr3t-token-value-8c1f"
#define PBS_EMU_USER "alice@pbs"
#define PBS_EMU_USER_PW "pw-for-alice-77"

struct pbs_emu {
	pid_t pid;
	int port;
	char fp[96];     /* the server certificate's fingerprint */
	char base[64];   /* temp dir: datastore ds/, cert/, auth.json */
	char ds[128];
};

/* Starts the emulator with extra arguments (NULL-terminated, may be NULL).
 * A zeroed e gets a fresh temp dir; a stopped e restarts on the same
 * datastore and certificate. The source tree is $CN_TEST_SRCDIR (or ".").
 * Emulator stderr is shown only when $CN_TEST_EMU_LOG is set. Returns 0
 * or -1 (message on stderr). */
int pbs_emu_start(struct pbs_emu *e, const char *const *extra);

/* Stops the emulator (SIGTERM, wait). */
void pbs_emu_stop(struct pbs_emu *e);

/* Stops it and removes the temp dir. */
void pbs_emu_cleanup(struct pbs_emu *e);

/* CPU seconds (user + system) the emulator process has used so far. */
double pbs_emu_cpu_seconds(const struct pbs_emu *e);

/* cn_pbs_connect to the emulator's store1 as auth_id with secret and
 * fingerprint fp (NULL: from the environment). */
int pbs_emu_connect(const struct pbs_emu *e, const char *auth_id, const char *secret, const char *fp,
		    struct cn_pbs **out);

#endif
