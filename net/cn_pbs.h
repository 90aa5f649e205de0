/* cn_pbs — a connection to one Proxmox Backup Server datastore: the
 * repository, the trust rule (system CAs or a pinned fingerprint), the
 * credentials (API token or user password → ticket), plain REST calls
 * over libcurl, and the opening of upgraded HTTP/2 sessions for the backup
 * and reader protocols (net/cn_pbs_target.h, net/cn_pbs_source.h).
 *
 * Secrets: the password / token secret is kept only in memory (wiped on
 * free), sent only in request headers, and never written to logs, error
 * messages or child processes. */
#ifndef CN_PBS_H
#define CN_PBS_H

#include <stddef.h>
#include <stdint.h>

#include "engine/cn_target.h"
#include "net/cn_h2.h"
#include "net/cn_pbs_http.h"
#include "net/cn_pbs_repo.h"

struct cn_pbs;

struct cn_pbs_opts {
	const char *repository;   /* NULL: $PBS_REPOSITORY */
	const char *fingerprint;  /* NULL: $PBS_FINGERPRINT (may be unset: CA validation only);
				   * "": no pin, the environment is not read */
	const char *secret;       /* password or token secret; NULL: PBS_PASSWORD, _FD, _FILE */
	int connect_timeout_ms;   /* per attempt (0 = 10000) */
	int connect_attempts;     /* (0 = 3), exponential backoff from 250 ms */
	int io_timeout_ms;        /* HTTP/2 sessions and REST calls (0 = 120000) */
	char *presented_fp;       /* optional, 96 bytes, caller's: when the connection
				   * fails because the certificate is neither valid for
				   * the system CAs nor matches the pin, the server's
				   * fingerprint ("aa:bb:..."), else "" */
};

/* Parses the repository, reads the secret, sets up TLS trust and logs in
 * (user: POST access/ticket; token: header only), then checks the server
 * with GET version so that a wrong fingerprint or refused credentials
 * fail here with a clear message (and, for a certificate nobody trusts,
 * opts->presented_fp lets the caller ask its user). Returns 0 and *out (freed with
 * cn_pbs_free), or a negative code: -EINVAL (bad repository/fingerprint),
 * -ENOENT (no secret), -CN_E_TLS, -CN_E_AUTH, network errors. */
int cn_pbs_connect(const struct cn_pbs_opts *opts, struct cn_pbs **out);

/* Frees the connection and wipes its secrets. NULL is ok. */
void cn_pbs_free(struct cn_pbs *p);

/* The parsed repository (borrowed, valid while p lives). */
const struct cn_pbs_repo *cn_pbs_repo_of(const struct cn_pbs *p);

/* Renews the login ticket (POST access/ticket with the current ticket as
 * password) if it is older than 15 minutes, or always with force; REST
 * calls and session openings do this on their own. No-op for API tokens.
 * Returns 0 or a negative code with a message (-CN_E_AUTH if refused). */
int cn_pbs_renew_ticket(struct cn_pbs *p, int force);

/* A short name for messages, "pbs:HOST:STORE" ("pbs:HOST:PORT:STORE"
 * for a port other than 8007), into out. */
void cn_pbs_name(const struct cn_pbs *p, char *out, size_t out_size);

/* Sets how long a REST call or an HTTP/2 session may wait without a byte
 * from the server (ms > 0) for the calls and sessions started from now
 * on: a backup gives it its stall timeout, so that a server that stops
 * answering while a session is set up or a listing is read fails the
 * target as soon as one that stops during the upload. Call before
 * sessions are opened from other threads. */
void cn_pbs_set_io_timeout(struct cn_pbs *p, int ms);

/* The server's version as "VERSION-RELEASE" (e.g. "3.2-4") into out. */
int cn_pbs_version(struct cn_pbs *p, char *out, size_t out_size);

/* The parts of GET version, as the server sent them ("" where absent;
 * too long values are cut). */
struct cn_pbs_server_version {
	char version[64];  /* "3.2" */
	char release[64];  /* "4" */
	char repoid[128];  /* the git commit of the server's build */
};

/* GET version into *out. 0 or a negative code with a message
 * (-CN_E_PROTOCOL: no "version" in the answer). */
int cn_pbs_server_version(struct cn_pbs *p, struct cn_pbs_server_version *out);

/* Datastore usage in bytes (GET …/status). */
struct cn_pbs_status {
	uint64_t total, used, avail;
};
int cn_pbs_status(struct cn_pbs *p, struct cn_pbs_status *st);

/* Lists the backup groups of namespace ns ("" = root). *out is malloc'd
 * (caller frees), sorted by type and id. */
int cn_pbs_list_groups(struct cn_pbs *p, const char *ns, struct cn_pbs_group **out, size_t *n);

/* Lists snapshots of group (type and id; time ignored) in group->ns, or of
 * all groups of the namespace when group is NULL or group->id is "".
 * *out is malloc'd (caller frees), sorted by type, id, time. */
int cn_pbs_list_snapshots(struct cn_pbs *p, const struct cn_snapshot_id *group,
			  struct cn_snapshot_info **out, size_t *n);

/* Retention options of prune; 0 means "not given". */
struct cn_pbs_keep {
	int last, hourly, daily, weekly, monthly, yearly;
};

/* Prunes the group of id (type, id, ns) with keep; dry_run only reports.
 * *out (malloc'd, caller frees) lists each snapshot and whether it is
 * kept. */
int cn_pbs_prune(struct cn_pbs *p, const struct cn_snapshot_id *group, const struct cn_pbs_keep *keep,
		 int dry_run, struct cn_pbs_prune_item **out, size_t *n);

/* Deletes ("forgets") one snapshot. -ENOENT if it does not exist. */
int cn_pbs_forget(struct cn_pbs *p, const struct cn_snapshot_id *id);

/* The protected flag of a snapshot (GET …/protected): 1, 0, or a
 * negative code (-ENOENT: no such snapshot). */
int cn_pbs_get_protected(struct cn_pbs *p, const struct cn_snapshot_id *id);

/* Sets or clears it (PUT …/protected). 0 or a negative code. */
int cn_pbs_set_protected(struct cn_pbs *p, const struct cn_snapshot_id *id, int on);

/* A snapshot's notes (GET …/notes) into *out (malloc'd, the caller
 * frees; "" when none). 0 or a negative code. */
int cn_pbs_get_notes(struct cn_pbs *p, const struct cn_snapshot_id *id, char **out);

/* Replaces them (PUT …/notes). 0 or a negative code. */
int cn_pbs_set_notes(struct cn_pbs *p, const struct cn_snapshot_id *id, const char *notes);

/* Opens an upgraded HTTP/2 session: protocol is
 * "proxmox-backup-protocol-v1" (path "backup") or
 * "proxmox-backup-reader-protocol-v1" (path "reader"); query is the
 * already-encoded query string. A fresh TLS connection is made (same
 * trust rule, connect retries). Returns 0 and *out (cn_h2_free), or a
 * negative code with the server's message (e.g. 400 "backup timestamp is
 * older than last backup."). */
int cn_pbs_open_session(struct cn_pbs *p, const char *protocol, const char *path,
			const char *query, struct cn_h2 **out);

/* Builds the standard session query "store=…&backup-type=…&backup-id=…&
 * backup-time=…[&ns=…]" for id into out. Returns 0 or -ENAMETOOLONG. */
int cn_pbs_snapshot_query(const struct cn_pbs *p, const struct cn_snapshot_id *id, char *out,
			  size_t out_size);

/* Percent-encodes a ticket or token secret for the Cookie and
 * Authorization headers as upstream does (controls, space, '"', '#', '<',
 * '>', '`', '?', '{', '}' and non-ASCII bytes). Returns 0 or -ENAMETOOLONG. */
int cn_pbs_encode_credential(const char *in, char *out, size_t out_size);

#endif
