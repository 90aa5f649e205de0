/* cli_common — what the datastore and repository commands share: the
 * common options (--store, --repository, --keyfile, --output-format), the
 * endpoints they select (local datastores and PBS repositories) as engine
 * targets/sources, the key, exit codes from error codes, snapshot
 * arguments, the progress line and JSON output. */
#ifndef CAIRN_CLI_COMMON_H
#define CAIRN_CLI_COMMON_H

#include <getopt.h>
#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "cli/cli.h"
#include "common/cn_snapshot.h"
#include "engine/cn_target.h"
#include "store/cn_crypt.h"

#define CLI_MAX_ENDPOINTS 8

enum {
	OPT_STORE = 1000,
	OPT_REPOSITORY,
	OPT_KEYFILE,
	OPT_OUTPUT_FORMAT,
	OPT_NS,
	OPT_FINGERPRINT,
	OPT_FIRST_COMMAND_OPTION, /* commands number their own options from here */
};

/* The long options every store/repository command accepts. */
#define CLI_COMMON_LONG_OPTIONS                                                \
	{"store", required_argument, NULL, OPT_STORE},                         \
	{"repository", required_argument, NULL, OPT_REPOSITORY},               \
	{"keyfile", required_argument, NULL, OPT_KEYFILE},                     \
	{"output-format", required_argument, NULL, OPT_OUTPUT_FORMAT},         \
	{"ns", required_argument, NULL, OPT_NS},                               \
	{"fingerprint", required_argument, NULL, OPT_FINGERPRINT},             \
	{"help", no_argument, NULL, 'h'}

#define CLI_COMMON_HELP                                                                      \
	"  --store DIR            local datastore (default: $XDG_DATA_HOME/cairn, or\n"       \
	"                         /var/lib/cairn for root; created by the first backup),\n" \
	"                         or an S3 bucket s3://BUCKET[/PREFIX] for backup, restore,\n" \
	"                         list, snapshot list|files (endpoint and credentials from\n" \
	"                         $AWS_ENDPOINT_URL, $AWS_ACCESS_KEY_ID, ...: docs/s3.md)\n" \
	"  --repository REPO      a Proxmox Backup Server, [[USER@REALM[!TOKEN]@]HOST[:PORT]:]STORE\n" \
	"                         (default: $PBS_REPOSITORY; secret from PBS_PASSWORD)\n"     \
	"  --fingerprint FP       certificate pin (SHA-256) of a --repository: one per\n"   \
	"                         --repository, matched in order ('' = no pin for that\n"   \
	"                         one); without it, $PBS_FINGERPRINT for a single\n"         \
	"                         repository, else the fingerprint remembered for its\n"     \
	"                         host:port, else the system CAs. On a terminal an\n"        \
	"                         untrusted certificate is shown and, if accepted,\n"        \
	"                         remembered in $XDG_CONFIG_HOME/cairn/fingerprints\n"       \
	"  --keyfile FILE         encryption key (cairn key create); password from\n"          \
	"                         $PBS_ENCRYPTION_PASSWORD or asked on the terminal\n"        \
	"  --ns NS                namespace (a/b), default the root\n"                          \
	"  --output-format FMT    text (default) or json\n"                                     \
	"  -h, --help             this help\n"

struct cli_common {
	const char *cmd;                   /* for messages: "backup" */
	const char *stores[CLI_MAX_ENDPOINTS];
	size_t nstores;
	const char *repos[CLI_MAX_ENDPOINTS];
	size_t nrepos;
	const char *fps[CLI_MAX_ENDPOINTS]; /* --fingerprint, in --repository order */
	size_t nfps;
	const char *keyfile;
	const char *ns;
	int json;
};

/* Handles opt if it is a common option: returns 1 (handled), 0 (not a
 * common option) or -CLI_EXIT_USAGE after printing the problem. */
int cli_common_option(struct cli_common *c, int opt, const char *arg);

/* Parses argv from index first for a command that takes only the common
 * options (and -h/--help, which prints help to stdout). Returns -1 when the
 * command should go on (optind then points at the first argument), or the
 * exit code to return at once (help shown, or a usage error printed). */
int cli_parse_common_only(struct cli_common *c, int argc, char **argv, int first,
			  void (*help)(FILE *f));

/* The default store directory ($CAIRN_STORE, else /var/lib/cairn for
 * root, else $XDG_DATA_HOME/cairn or ~/.local/share/cairn) into out. */
void cli_default_store(char *out, size_t len);

/* The path of cairn's per-user config file name ($XDG_CONFIG_HOME/cairn/
 * NAME, else ~/.config/cairn/NAME) into out. */
void cli_config_file(const char *name, char *out, size_t len);

/* One selected place: a local datastore, a PBS repository or an S3
 * bucket (exactly one of ds, pbs, s3 is set). */
struct cli_endpoint {
	char name[256];
	struct cn_datastore *ds;  /* local, or NULL */
	void *pbs;                /* struct cn_pbs *, or NULL */
	void *s3;                 /* struct cn_s3 *, or NULL */
};

struct cli_endpoints {
	struct cli_endpoint e[2 * CLI_MAX_ENDPOINTS];
	size_t n;
	/* with CLI_OPEN_PARTIAL: the places that could not be opened */
	char failed[2 * CLI_MAX_ENDPOINTS][256];
	size_t nfailed;
};

/* Flags of cli_open_endpoints. */
#define CLI_OPEN_CREATE 1      /* make a missing local datastore */
#define CLI_OPEN_NO_INDEX 2    /* skip the chunk-index check at open: for
				* commands that never ask the index whether a
				* chunk is stored (restore, verify and a sync's
				* source read chunk files by name; list, prune
				* and gc do not look up chunks). An empty index
				* is otherwise rebuilt from all 65536 chunk
				* directories at open. */
#define CLI_OPEN_PARTIAL 4     /* writing to several places: one that cannot be
				* opened is dropped with a message naming it
				* (listed in eps->failed); fails only when
				* none opens */
#define CLI_OPEN_S3 8          /* the command handles s3:// stores; without
				* it one is refused with a clear message */

/* Opens what the options select (every --store and --repository, or
 * $PBS_REPOSITORY, or the default store); repositories with the
 * certificate trust of cli/cli_trust.h and the --fingerprint options
 * (none, or one per repository: else a usage error). create: CLI_OPEN_*
 * flags (0 or 1 as before: make a missing local datastore). max: at most
 * this many endpoints (1 for reading commands). Prints the problem and
 * returns an exit code != 0 on failure (with CLI_OPEN_PARTIAL: when
 * nothing could be opened). */
int cli_open_endpoints(const struct cli_common *c, int create, size_t max,
		       struct cli_endpoints *eps);
void cli_close_endpoints(struct cli_endpoints *eps);

struct cn_s3_config;

/* Opens the S3 bucket of cfg (bucket and prefix set; what it leaves empty
 * comes from the environment: cn_s3_config_resolve) as an endpoint and
 * checks that the bucket answers. cfg's secrets are wiped.
 * 0 or a negative code with a message. */
int cli_open_s3(struct cn_s3_config *cfg, struct cli_endpoint *e);

/* 1 if store names an S3 bucket ("s3://..."). */
int cli_is_s3(const char *store);

/* A target / source on an open endpoint (destroy with ops->destroy). */
int cli_endpoint_target(struct cli_endpoint *e, struct cn_target **out);
int cli_endpoint_source(struct cli_endpoint *e, struct cn_source **out);

/* Loads --keyfile if given (*crypt NULL otherwise). Password: for key
 * files with a KDF, $PBS_ENCRYPTION_PASSWORD or a terminal prompt.
 * Returns 0 or prints and returns an exit code. */
int cli_load_key(const struct cli_common *c, struct cn_crypt_config **crypt);

/* Loads the key in keyfile; a protected key file is opened with password
 * (NULL: PBS_ENCRYPTION_PASSWORD, else asked on the terminal). *crypt is
 * the caller's (cn_crypt_config_free). 0 or a negative code with a
 * message naming the file. */
int cli_load_key_file(const char *keyfile, const char *password, struct cn_crypt_config **crypt);

/* Reads a password from the terminal (/dev/tty) without echo into buf
 * (NUL-terminated, newline removed). 0 or -errno when there is no terminal. */
int cli_read_password(const char *prompt, char *buf, size_t len);

/* Exit codes for errors (see main.c): damaged or inconsistent stored data
 * (cn_error_is_corruption: digest, CRC, checksum, format, GCM tag,
 * mismatch, missing chunk) maps to CLI_EXIT_CORRUPT, -ENOSPC/-EDQUOT to
 * CLI_EXIT_NOSPACE, -CN_E_LOCKED to CLI_EXIT_LOCKED, the rest to
 * CLI_EXIT_ERROR. */
int cli_exit_code(int err);

/* After a listing written to stdout: 0, or the write's error (-errno,
 * "writing the listing: ..."). A reader that stopped reading (EPIPE, as
 * "| head") is no error. */
int cli_stdout_done(void);

/* Prints the calling thread's error message with context and returns
 * cli_exit_code(err). In JSON mode also prints {"error": ...} on stdout. */
int cli_fail(const struct cli_common *c, int err, const char *context);

/* Parses SNAPSHOT ("TYPE/ID/TIME") or, with allow_group, a group
 * ("TYPE/ID", time set to 0). ns from the options. Prints and returns an
 * exit code on failure, else 0. */
int cli_parse_snapshot(const struct cli_common *c, const char *arg, int allow_group,
		       struct cn_snapshot_id *id);

/* Resolves a group (time 0) to its newest snapshot on src. 0 or an exit
 * code (message printed). */
int cli_latest_snapshot(const struct cli_common *c, struct cn_source *src,
			struct cn_snapshot_id *id);

/* "host/ID/2024-...Z" (with "ns/a/..." prefix) into out. */
void cli_snapshot_text(const struct cn_snapshot_id *id, char *out, size_t len);

/* Human sizes: "1.23 GiB". */
void cli_human_bytes(uint64_t n, char *out, size_t len);

/* Progress line on stderr when it is a terminal (else nothing):
 * cli_progress_line("%s", ...) rewrites the line; cli_progress_done()
 * ends it. */
int cli_progress_enabled(void);
void cli_progress_line(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void cli_progress_done(void);

/* Prints a JSON value on stdout (pretty) and drops the reference. */
void cli_json_print(json_t *v);

#endif
