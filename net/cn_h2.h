/* cn_h2 — an HTTP/2 client session (nghttp2) over a TLS connection that
 * was upgraded from HTTP/1.1 (PBS backup and reader protocols: after the
 * 101 answer both sides speak HTTP/2 with prior knowledge, spec §4).
 *
 * One I/O thread per session owns the socket; any thread may submit
 * requests and wait for them, so many requests are in flight at once
 * (chunk uploads, parallel chunk downloads). Flow-control windows are
 * opened wide (as upstream's client: 2^31-2) and large DATA frames are
 * used, so throughput is bounded by the peer's windows and the link.
 *
 * When the connection breaks (peer closed, reset, garbage, timeout) the
 * session is dead: every pending and later request fails with the
 * session's error. */
#ifndef CN_H2_H
#define CN_H2_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "common/cn_util.h"
#include "net/cn_tls.h"

struct cn_h2;
struct cn_h2_req;

/* Session tuning (0 = default). */
struct cn_h2_opts {
	int io_timeout_ms;   /* a pending request with no bytes from the peer for this long kills the session (120000) */
	size_t max_frame;    /* largest DATA frame we send (1 MiB, further limited by the peer's setting) */
};

/* Takes over tls (already upgraded; the caller no longer uses or frees it)
 * and any bytes read past the 101 head (early, len early_len: the peer's
 * first HTTP/2 frames), starts the HTTP/2 client session and its I/O
 * thread. host_port is sent as :authority. Returns 0 and *out, or a
 * negative code with a message (tls is freed then too). */
int cn_h2_start(struct cn_tls *tls, const uint8_t *early, size_t early_len,
		const char *host_port, const struct cn_h2_opts *opts, struct cn_h2 **out);

/* Submits a request. path is the endpoint with query ("dynamic_chunk?wid=1&…",
 * no leading '/'); content_type may be NULL; body (len bytes, may be NULL)
 * is borrowed and must stay valid until the request is done. Returns 0 and
 * *out (freed with cn_h2_req_free), or a negative code (dead session). */
int cn_h2_submit(struct cn_h2 *h, const char *method, const char *path,
		 const char *content_type, const uint8_t *body, size_t len,
		 struct cn_h2_req **out);

/* Blocks until r is done. Returns 0 if a response arrived (see status and
 * body), or the session's negative error code with its message. */
int cn_h2_wait(struct cn_h2 *h, struct cn_h2_req *r);

/* Non-blocking: 1 if r is done (answered or failed), else 0. */
int cn_h2_req_done(struct cn_h2 *h, struct cn_h2_req *r);

/* HTTP status of a done request (0 if it failed without an answer). */
int cn_h2_req_status(const struct cn_h2_req *r);

/* Response body of a done request; the caller may take over its storage
 * (e.g. swap it into its own cn_buf). */
struct cn_buf *cn_h2_req_body(struct cn_h2_req *r);

/* Frees a request. A request that is not done yet is detached first (its
 * answer will be discarded); its body must still stay valid until the
 * session is freed. NULL is ok. */
void cn_h2_req_free(struct cn_h2 *h, struct cn_h2_req *r);

/* Submit + wait + interpret as an API reply (cn_pbs_reply_data): *data
 * (may be NULL) gets a new reference to "data". Errors are prefixed with
 * the method and endpoint name (without the query). */
int cn_h2_call(struct cn_h2 *h, const char *method, const char *path,
	       const char *content_type, const uint8_t *body, size_t len, json_t **data);

/* GET + wait for a raw download: on 2xx the body replaces out's contents.
 * Errors as cn_h2_call. */
int cn_h2_download(struct cn_h2 *h, const char *path, struct cn_buf *out);

/* Returns 0 while the session is alive, else its negative error code and
 * sets the calling thread's message to the session's error. */
int cn_h2_error(struct cn_h2 *h);

/* Kills the session from any thread (e.g. while another one waits in
 * cn_h2_wait): every pending and later request fails with -ECANCELED and
 * the message why, and the I/O thread stops. The session is still freed
 * with cn_h2_free. */
void cn_h2_cancel(struct cn_h2 *h, const char *why);

/* Bytes sent and received on the session so far (any thread): moves
 * while the connection makes progress. */
uint64_t cn_h2_progress(struct cn_h2 *h);

/* Ends the session gracefully: waits until everything submitted is sent
 * and answered, sends GOAWAY and closes. Returns 0 or the session error. */
int cn_h2_close(struct cn_h2 *h);

/* Stops the I/O thread, drops the connection without a graceful end (a
 * backup session is discarded by the server), fails pending requests and
 * frees the session. Requests still held must be freed before. NULL ok. */
void cn_h2_free(struct cn_h2 *h);

/* Formats a query-string component: percent-encodes everything but
 * unreserved characters. Returns 0 or -ENAMETOOLONG. */
int cn_h2_urlencode(const char *in, char *out, size_t out_size);

#endif
