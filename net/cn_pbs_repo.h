/* cn_pbs_repo — the repository string and client environment of
 * proxmox-backup-client: "[[AUTHID@]HOST[:PORT]:]DATASTORE" (upstream
 * BACKUP_REPO_URL_REGEX, pbs-client/src/backup_repo.rs), the secret from
 * PBS_PASSWORD / PBS_PASSWORD_FD / PBS_PASSWORD_FILE, and the defaults
 * root@pam, localhost, 8007. Pure parsing; no I/O except reading the
 * secret. */
#ifndef CN_PBS_REPO_H
#define CN_PBS_REPO_H

#include <stddef.h>
#include <stdint.h>

#define CN_PBS_DEFAULT_PORT 8007

struct cn_pbs_repo {
	char auth_id[192];      /* "user@realm" or "user@realm!token"; default "root@pam" */
	char user[160];         /* "user@realm" part of auth_id */
	int is_token;           /* auth_id names an API token */
	char host[260];         /* as written in URLs: "pbs.example", "[fe80::1]"; default "localhost" */
	char connect_host[260]; /* for the resolver: IPv6 without brackets */
	uint16_t port;          /* default 8007 */
	char store[33];         /* datastore id, 3..32 safe-id chars */
};

/* Parses a repository string into *out (fully overwritten). Returns 0 or
 * -EINVAL with a message naming the bad part (never echoing more than the
 * string itself, which holds no secret). */
int cn_pbs_repo_parse(const char *s, struct cn_pbs_repo *out);

/* Parses arg, or the PBS_REPOSITORY environment variable when arg is NULL.
 * Returns 0, -ENOENT with a message if neither is given, or -EINVAL. */
int cn_pbs_repo_from_env(const char *arg, struct cn_pbs_repo *out);

/* Formats the canonical string "auth@host:port:store" into out. Returns
 * 0 or -ENAMETOOLONG. */
int cn_pbs_repo_format(const struct cn_pbs_repo *r, char *out, size_t out_size);

/* Reads the password or token secret as proxmox-backup-client does: the
 * first of PBS_PASSWORD, PBS_PASSWORD_FD (a file descriptor number),
 * PBS_PASSWORD_FILE (a path) that is set wins; only its first line is used.
 * *out is a malloc'd string the caller releases with cn_pbs_secret_free().
 * Returns 0, -ENOENT (no variable set, no message) or a negative code with
 * a message that never contains the secret. */
int cn_pbs_secret_from_env(char **out);

/* Wipes and frees a secret. NULL is ok. */
void cn_pbs_secret_free(char *secret);

/* Formats a SHA-256 certificate fingerprint as upstream prints it: 32
 * lowercase hex pairs joined by ':' (95 characters + NUL into out). */
void cn_pbs_fingerprint_format(const uint8_t fp[32], char out[96]);

/* Parses a fingerprint: 32 hex pairs joined by ':' (either case), or 64
 * plain hex digits. Returns 0 or -EINVAL with a message. */
int cn_pbs_fingerprint_parse(const char *s, uint8_t fp[32]);

#endif
