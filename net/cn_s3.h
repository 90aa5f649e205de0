/* cn_s3 — a small S3 client over libcurl: GET (whole and ranged), PUT,
 * HEAD, DELETE and ListObjectsV2 on one bucket, signed with AWS Signature
 * V4 (CURLOPT_AWS_SIGV4). XML bodies (listings, <Error> answers) are parsed
 * with libxml2.
 *
 * Keys given to the calls are relative to the configured prefix: with
 * prefix "cairn", key ".chunks/0001/…" is the object "cairn/.chunks/0001/…".
 *
 * Every request carries x-amz-content-sha256 (the payload's SHA-256; curl
 * 7.88 needs the header explicitly for radosgw). Failures that may pass
 * (HTTP 500/502/503/504, SlowDown, refused or dropped connections) are
 * retried with exponential backoff; connect and low-speed timeouts bound
 * how long a stalled endpoint can hold a call. Error messages name the
 * endpoint, bucket, key and access key id, never the secret key.
 *
 * Threading: every call may be made from several threads at once; the
 * client keeps a pool of curl handles (one per concurrent call, reused, so
 * are their connections). cn_s3_cancel and cn_s3_progress may be called
 * from any thread.
 */
#ifndef CN_S3_H
#define CN_S3_H

#include <stddef.h>
#include <stdint.h>

#include "common/cn_util.h"
#include "net/cn_s3_config.h"

struct cn_s3;

/* Creates a client for cfg (copied; call cn_s3_config_resolve first).
 * Makes no request. 0, -EINVAL or -ENOMEM. Freed with cn_s3_free. */
int cn_s3_new(const struct cn_s3_config *cfg, struct cn_s3 **out);

/* Frees the client and its handles. */
void cn_s3_free(struct cn_s3 *s);

/* "s3://bucket/prefix (http://endpoint)" for messages. Borrowed. */
const char *cn_s3_name(const struct cn_s3 *s);

/* The configuration (prefix, bucket, ...). Borrowed. */
const struct cn_s3_config *cn_s3_config(const struct cn_s3 *s);

/* Checks that the bucket exists and the credentials are accepted (HEAD on
 * the bucket). 0, -ENOENT (no such bucket), -EACCES (refused), -EIO. */
int cn_s3_check_bucket(struct cn_s3 *s);

/* Reads the whole object into out (appended; out is the caller's).
 * 0, -ENOENT if there is no such object, else <0. */
int cn_s3_get(struct cn_s3 *s, const char *key, struct cn_buf *out);

/* Hands the object's bytes to write(ctx, data, n) as they arrive, from
 * the client's receive buffer (borrowed for the call), instead of
 * collecting them: restart(ctx) comes first and again before a retried
 * request starts over. A negative return of write ends the call with
 * that code (its message kept; no retry). cancelled(ctx), if given, is
 * asked about once a second, also while no byte arrives: nonzero ends
 * the call (and its retries) with -ECANCELED. 0, -ENOENT if there is no
 * such object, else <0. A body shorter than its Content-Length is an
 * error, as for cn_s3_get. */
int cn_s3_get_to(struct cn_s3 *s, const char *key, void (*restart)(void *ctx),
		 int (*write)(void *ctx, const uint8_t *data, size_t n),
		 int (*cancelled)(void *ctx), void *ctx);

/* Reads len bytes at offset off of the object into out (appended). */
int cn_s3_get_range(struct cn_s3 *s, const char *key, uint64_t off, uint64_t len,
		    struct cn_buf *out);

/* Stores data (borrowed for the call) as the object key, replacing it. */
int cn_s3_put(struct cn_s3 *s, const char *key, const void *data, size_t len);

/* 0 if the object exists (its size in *size if size is not NULL),
 * -ENOENT if not, else <0. */
int cn_s3_head(struct cn_s3 *s, const char *key, uint64_t *size);

/* Deletes the object; a missing object is not an error. */
int cn_s3_delete(struct cn_s3 *s, const char *key);

/* Deletes n objects (keys relative); a missing object is not an error.
 * status (n entries, may be NULL) gets 0 or a negative code per key.
 * Returns 0 when every key is gone, else the first failure's code with a
 * message naming the keys that failed. */
int cn_s3_delete_keys(struct cn_s3 *s, const char *const *keys, size_t n, int *status);

/* Called by cn_s3_list once per object (is_prefix 0: key and size) or
 * common prefix (is_prefix 1, with a delimiter). Keys are relative to the
 * client's prefix. A non-zero return stops the listing and is returned. */
typedef int (*cn_s3_list_fn)(void *ctx, const char *key, uint64_t size, int is_prefix);

/* Lists keys beginning with prefix (relative), all pages; with delimiter
 * (e.g. "/"; NULL for none) keys past the next delimiter are rolled up
 * into common prefixes. Keys come in S3's (byte) order. */
int cn_s3_list(struct cn_s3 *s, const char *prefix, const char *delimiter, cn_s3_list_fn fn,
	       void *ctx);

/* Called by cn_s3_list_objects once per object: key (relative), size and
 * LastModified (seconds since the epoch, 0 if the service sent none). A
 * non-zero return stops the listing and is returned. */
typedef int (*cn_s3_list_mtime_fn)(void *ctx, const char *key, uint64_t size, int64_t mtime);

/* Lists every object below prefix (relative; no delimiter), all pages, in
 * S3's order, with their modification times (what garbage collection ages
 * chunks by). 0 or a negative code. */
int cn_s3_list_objects(struct cn_s3 *s, const char *prefix, cn_s3_list_mtime_fn fn, void *ctx);

/* Makes running and later calls fail promptly with -ECANCELED. */
void cn_s3_cancel(struct cn_s3 *s);

/* Bytes sent and received so far (moves while a transfer makes progress). */
uint64_t cn_s3_progress(const struct cn_s3 *s);

#endif
