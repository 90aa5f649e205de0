/* cn_pbs_http — pure parsers for what a PBS server sends back: the HTTP/1
 * response head of the protocol upgrade, and API reply bodies ({"data": …}
 * on success, plain error text otherwise; proxmox-rest-server formatter).
 * They take untrusted bytes and are fuzzed (tests/fuzz/fuzz_pbs_json.c). */
#ifndef CN_PBS_HTTP_H
#define CN_PBS_HTTP_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/cn_target.h"

/* An HTTP/1.x response head. */
struct cn_pbs_http_head {
	int status;           /* 100..599 */
	int connection_upgrade; /* "Connection" lists "upgrade" */
	char upgrade[64];     /* value of the Upgrade header ("" if none) */
	int64_t content_length; /* -1 if absent */
};

/* Parses a response head from buf. Returns the head's length including the
 * final CRLFCRLF (> 0), 0 if more bytes are needed, or -CN_E_PROTOCOL with
 * a message when it is not an HTTP/1.x response (heads are limited to
 * 16 KiB). */
int cn_pbs_http_parse_head(const uint8_t *buf, size_t len, struct cn_pbs_http_head *h);

/* Interprets an API reply. For a 2xx status, body must be a JSON object
 * with "data": *data gets a new reference to it (json null included) and 0
 * is returned; otherwise -CN_E_PROTOCOL. For other statuses the body is
 * the server's message: the return code is -CN_E_AUTH (401, 403), -ENOENT
 * (404) or -CN_E_REMOTE, with the message "server error <status>: <text>"
 * (text cleaned of control bytes and cut at 300 bytes). data may be NULL
 * when the caller only wants the status checked. */
int cn_pbs_reply_data(int status, const uint8_t *body, size_t len, json_t **data);

/* Like cn_pbs_reply_data for raw downloads: 0 for 2xx (the body is the
 * payload), else the error as above. */
int cn_pbs_reply_check(int status, const uint8_t *body, size_t len);

/* Normalises "the server has no such thing": returns -ENOENT (keeping the
 * message) when r is -ENOENT or a -CN_E_REMOTE whose message says not
 * found / does not exist / No such file (upstream answers several of these
 * with status 400), else r unchanged. */
int cn_pbs_enoent(int r);

/* Copies up to max bytes of untrusted text into out (out_size > 0),
 * replacing control and non-ASCII bytes by '?'; trailing whitespace is
 * dropped. */
void cn_pbs_clean_text(const uint8_t *in, size_t len, size_t max, char *out, size_t out_size);

/* Converts the "data" array of GET admin/datastore/{store}/snapshots into
 * cn_snapshot_info records (ns copied into each), sorted by type, id and
 * time. Unfinished snapshots (listed without their manifest: a backup the
 * server did not complete) are left out. *out is malloc'd (caller frees;
 * NULL when n is 0). Entries with a missing or invalid type/id/time make
 * the whole reply -CN_E_PROTOCOL. */
int cn_pbs_parse_snapshots(json_t *data, const char *ns, struct cn_snapshot_info **out, size_t *n);

/* One backup group of GET …/groups. */
struct cn_pbs_group {
	char type[8];
	char id[CN_BACKUP_ID_MAX + 1];
	int64_t last_backup;
	uint64_t backup_count;
};

/* Converts the "data" array of GET …/groups (sorted by type, id). */
int cn_pbs_parse_groups(json_t *data, struct cn_pbs_group **out, size_t *n);

/* One item of a prune answer. */
struct cn_pbs_prune_item {
	struct cn_snapshot_id id;
	int keep;
	int protected_;
};

/* Converts the "data" array of POST …/prune (ns copied into each id). */
int cn_pbs_parse_prune(json_t *data, const char *ns, struct cn_pbs_prune_item **out, size_t *n);

#endif
