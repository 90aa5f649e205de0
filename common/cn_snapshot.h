/* cn_snapshot — snapshot identity shared by every layer: namespace,
 * backup type, backup id and backup time, and their PBS text forms
 * ("host/ID/2024-05-01T02:00:00Z", namespace prefix "ns/a/ns/b/"). */
#ifndef CN_SNAPSHOT_H
#define CN_SNAPSHOT_H

#include <stddef.h>
#include <stdint.h>

#define CN_NS_MAX 256        /* upstream: total namespace length */
#define CN_NS_DEPTH_MAX 7    /* upstream: namespace depth */
#define CN_BACKUP_ID_MAX 128 /* generous; upstream's id regex limits the charset */

struct cn_snapshot_id {
	char ns[CN_NS_MAX + 1];        /* "" for the root namespace, else "a/b" */
	char type[8];                  /* "host", "vm" or "ct" */
	char id[CN_BACKUP_ID_MAX + 1];
	int64_t time;                  /* backup time, seconds since the epoch, UTC */
};

/* Formats t as RFC 3339 UTC with second precision ("YYYY-MM-DDTHH:MM:SSZ")
 * into out (at least 21 bytes). Returns 0 or -EINVAL. */
int cn_snapshot_format_time(int64_t t, char *out, size_t out_size);

/* Parses "YYYY-MM-DDTHH:MM:SSZ" (also accepts "+00:00"). Returns 0 or
 * -EINVAL with a message. */
int cn_snapshot_parse_time(const char *s, int64_t *t);

/* Checks a backup id (upstream BACKUP_ID_REGEX: [A-Za-z0-9_][A-Za-z0-9._-]*)
 * and a type ("host", "vm", "ct"). Return 0 or -EINVAL with a message. */
int cn_snapshot_check_id(const char *id);
int cn_snapshot_check_type(const char *type);

/* Checks a namespace "a/b" (each component like a backup id, depth and
 * length within upstream's limits; "" is the root). 0 or -EINVAL. */
int cn_snapshot_check_ns(const char *ns);

/* Parses "TYPE/ID/TIME" into id (ns left as is). 0 or -EINVAL. */
int cn_snapshot_parse(const char *s, struct cn_snapshot_id *id);

/* The group or snapshot path relative to a datastore root, with the
 * namespace prefix: "ns/a/ns/b/host/ID" or ".../host/ID/TIME". Returns 0
 * or -ENAMETOOLONG. */
int cn_snapshot_group_path(const struct cn_snapshot_id *id, char *out, size_t out_size);
int cn_snapshot_path(const struct cn_snapshot_id *id, char *out, size_t out_size);

#endif
