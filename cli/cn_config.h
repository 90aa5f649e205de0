/* cn_config — the configuration file of scheduled runs (`cairn run`,
 * `cairn config check`, `cairn status`, `cairn verify --restore-test`).
 *
 * Default path /etc/cairn/cairn.conf (CN_CONFIG_DEFAULT_PATH). INI syntax,
 * parsed with Debian's libinih (comments start a line with '#' or ';';
 * values are taken verbatim, so ';' inside a value is kept). Sections:
 *
 *   [cairn]                 global settings (optional)
 *   [source NAME]           one directory backed up as one snapshot
 *   [target NAME]           one local datastore or PBS repository
 *
 * The full key list with defaults is in contrib/cairn.conf.example and
 * cn_config.c. Unknown sections and keys, repeated single-valued keys and
 * bad values are errors; the message names FILE:LINE. Token files of PBS
 * targets are checked when the file is loaded: they must exist, be
 * regular files and not be readable or writable by others; the secret is
 * read later, only when a run connects (cn_config_read_token).
 *
 * This module lives in cli/ because the configuration is the command's
 * policy: the engine and the targets get plain options from it.
 *
 * The structs are plain read-only records owned by struct cn_config (one
 * allocation tree, freed by cn_config_free); callers never modify them. */
#ifndef CN_CONFIG_H
#define CN_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#define CN_CONFIG_DEFAULT_PATH "/etc/cairn/cairn.conf"

/* Syncthing's marker/version folders and temporary files (excluded by
 * default from every source; `syncthing-excludes = no` turns it off). */
extern const char *const cn_config_syncthing_excludes[];
extern const size_t cn_config_n_syncthing_excludes;

struct cn_config_keep {
	unsigned last, hourly, daily, weekly, monthly, yearly;
};

struct cn_config_source {
	char *name;            /* section name, "media" */
	int line;              /* line of the section header */
	char *archive;         /* "media.pxar" (default NAME.pxar) */
	char *path;            /* directory to back up; with zfs-dataset: the dataset's
				* mountpoint or a directory below it (default: the mountpoint) */
	char *zfs_dataset;     /* "rpool/media" or NULL */
	char *backup_id;       /* group id (default: [cairn] backup-id, else the host name) */
	char *backup_type;     /* "host" */
	char *ns;              /* namespace on every target, or NULL (root) */
	char **excludes;       /* patterns as in `cairn backup --exclude`, incl. the
				* Syncthing ones unless switched off */
	size_t n_excludes;
	int syncthing_excludes;
	int all_file_systems;
	int skip_lost_found;
	int change_detection;  /* enum cn_change_detection (default legacy) */
};

enum cn_config_target_kind { CN_CONFIG_LOCAL, CN_CONFIG_PBS, CN_CONFIG_S3 };

struct cn_config_target {
	char *name;            /* section name, "primary" */
	int line;
	enum cn_config_target_kind kind;
	char *path;            /* local: datastore directory */
	char *repository;      /* pbs: [[user@realm[!token]@]host[:port]:]store */
	char *fingerprint;     /* pbs: server certificate SHA-256, or NULL */
	char *token_file;      /* pbs: file holding the token secret (or password) */
	char *bucket;          /* s3: bucket name */
	char *prefix;          /* s3: key prefix in the bucket, or NULL */
	char *endpoint;        /* s3: http(s)://host[:port], or NULL ($AWS_ENDPOINT_URL / AWS) */
	char *region;          /* s3: or NULL ($AWS_REGION, us-east-1) */
	char *credentials_file; /* s3: AWS-format credentials file, or NULL (environment) */
	char *profile;         /* s3: its section, or NULL ($AWS_PROFILE, default) */
	int addressing;        /* s3: enum cn_s3_addressing (auto, path, virtual) */
	struct cn_config_keep keep; /* all 0 = no pruning */
	int gc;                /* local: garbage collection after prune (default yes) */
	int catch_up;          /* before the backups, sync what this target lacks
				* of the sources' groups from another target */
};

struct cn_config {
	char *path;            /* the file this was read from */
	char *backup_id;       /* default for sources; NULL = host name */
	char *state_dir;       /* NULL = default (cn_config_state_dir) */
	char *metrics_file;    /* NULL = none */
	char *keyfile;         /* encryption key (cairn key create) or NULL */
	char *keyfile_password_file; /* its password, for a protected key file */
	char *on_success, *on_failure; /* hook commands (run with /bin/sh -c) or NULL */
	unsigned hook_timeout; /* seconds, default 300 */
	unsigned threads;      /* 0 = number of CPUs */
	unsigned stall_timeout; /* seconds without progress before a target is given up (default 30) */
	unsigned restore_test_sample; /* files per target and source; 0 = off in runs */
	unsigned restore_test_every;  /* days between restore tests in runs (default 7) */
	unsigned history_keep; /* run records kept (default 500) */
	struct cn_config_source *sources;
	size_t n_sources;
	struct cn_config_target *targets;
	size_t n_targets;
};

/* Reads and validates the file at path. On success *out is the caller's
 * (cn_config_free). Errors: -ENOENT / -EACCES (cannot open), -EINVAL with
 * "PATH:LINE: what is wrong" for syntax, unknown keys, bad values, a
 * missing or too open token file, and missing required keys (then the
 * line of the section). */
int cn_config_load(const char *path, struct cn_config **out);

/* Frees everything (NULL is fine). */
void cn_config_free(struct cn_config *c);

/* Checks one token file: exists, is a regular file, no permission bits
 * for others. 0 or a negative code with a message naming the file. */
int cn_config_check_token_file(const char *path);

/* Reads the secret of a PBS target from its token file (first line,
 * trailing newline and whitespace removed) into buf (NUL-terminated). The
 * permission check is repeated. 0 or a negative code with a message. The
 * caller wipes buf when done. */
/* Reads a secret file (what: "key password file", ...) with the same
 * checks as a token file: into buf (len), surrounding white space and
 * anything after the first line removed. 0 or a negative code with a
 * message. */
int cn_config_read_secret(const char *what, const char *path, char *buf, size_t len);

int cn_config_read_token(const struct cn_config_target *t, char *buf, size_t len);

/* The state directory (run history, locks): [cairn] state-dir, else
 * $XDG_STATE_HOME/cairn, else /var/lib/cairn for root, else
 * ~/.local/state/cairn. Into out. */
void cn_config_state_dir(const struct cn_config *c, char *out, size_t len);

/* The backup id a source uses (its own, the global one, or the host name
 * up to the first dot) into out. */
void cn_config_backup_id(const struct cn_config *c, const struct cn_config_source *s,
			 char *out, size_t len);

/* Whether keep has any option set. */
int cn_config_keeps_something(const struct cn_config_keep *keep);

#endif
