/* cli_sched — what the scheduled-run commands (run, config check, status,
 * verify --restore-test) share: the --config option, loading the file
 * with the CLI's wording and exit code, and the plan text. */
#ifndef CAIRN_CLI_SCHED_H
#define CAIRN_CLI_SCHED_H

#include <stdio.h>

#include "cli/cn_config.h"

/* Loads path (NULL: $CAIRN_CONFIG, else /etc/cairn/cairn.conf) into *cfg.
 * Prints "cairn CMD: <problem>" and returns CLI_EXIT_CONFIG on failure,
 * else 0. */
int cli_sched_load(const char *cmd, const char *path, struct cn_config **cfg);

/* Prints what a run of cfg does (sources, excludes, targets, retention,
 * hooks, state) on f. */
void cli_sched_print_plan(FILE *f, const struct cn_config *cfg);

/* Opens a local target's datastore (created when missing and create is
 * set) or connects a PBS target with its token file, into *e (a
 * struct cli_endpoint from cli_common.h). 0 or a negative code with a
 * message. */
struct cli_endpoint;
int cli_sched_open_target(const struct cn_config_target *t, int create, struct cli_endpoint *e);

/* The snapshot group (ns, type, id) of source s into *g. */
struct cn_snapshot_id;
void cli_sched_group(const struct cn_config *c, const struct cn_config_source *s,
		     struct cn_snapshot_id *g);

/* Restore test (cli/cn_restore_test.h) of every source of c on the open
 * target endpoint e (its name tname for messages); live[i] is source i's
 * live directory (NULL: skipped). Returns a new JSON object {sampled,
 * failed, sources: {NAME: report}}; when something failed, the first
 * problem is copied into err (else err is ""), each one logged. */
#include <jansson.h>
struct cn_crypt_config;
json_t *cli_sched_restore_test(const struct cn_config *c, const char *tname,
			       struct cli_endpoint *e, const char *const *live, unsigned sample,
			       const struct cn_crypt_config *crypt, char *err, size_t errlen);

/* The config's keyfile (opened with keyfile-password-file when given),
 * or *crypt NULL when there is none. 0 or a negative code with a
 * message. */
int cli_sched_load_key(const struct cn_config *c, struct cn_crypt_config **crypt);

/* `cairn verify --restore-test [--sample N] [--config FILE]`: argv as
 * given to `cairn verify`. Returns an exit code: 0 every file matched,
 * 4 some restored file failed or differed, 1 a test could not run,
 * 8 bad config. */
int cli_restore_test_command(int argc, char **argv);

#endif
