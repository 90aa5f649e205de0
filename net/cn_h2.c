#include "net/cn_h2.h"

#include <errno.h>
#include <nghttp2/nghttp2.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "common/cn_error.h"
#include "common/cn_log.h"
#include "common/cn_util.h"
#include "net/cn_pbs_http.h"

#define WINDOW_MAX ((1u << 31) - 2)   /* upstream client's windows */
#define RESPONSE_MAX (64u << 20)      /* no PBS answer is larger than a chunk */
#define OUT_HIGH (512u << 10)         /* buffered TLS output before writing */

struct cn_h2_req {
	struct cn_h2_req *prev, *next;  /* in the session's active list */
	int32_t stream_id;
	const uint8_t *body;
	size_t len, off;
	int status;
	struct cn_buf resp;
	int done;
	int detached;
	int err;                 /* negative code when failed */
	char errmsg[320];
	char name[48];           /* endpoint, for messages */
};

struct cn_h2 {
	pthread_mutex_t mu;
	pthread_cond_t cond;
	pthread_t thread;
	int thread_started;
	nghttp2_session *ng;
	struct cn_tls *tls;
	int wakefd;
	char authority[300];
	struct cn_h2_opts opts;

	struct cn_h2_req *active;  /* submitted and not done */
	size_t nactive;
	int stop;                  /* cn_h2_free: leave now */
	int closing;               /* cn_h2_close: GOAWAY submitted, exit when flushed */
	int err;                   /* session error (negative), 0 while alive */
	char errmsg[300];

	uint32_t goaway_sent;      /* error code of a GOAWAY nghttp2 sent (peer misbehaved) */
	uint32_t goaway_rcvd;      /* error code of the peer's GOAWAY */
	int got_goaway;
	char proto_error[160];     /* nghttp2's complaint about the peer's data */
	struct cn_buf out;         /* I/O thread only */
	size_t out_off;
	int64_t last_progress_ms;  /* I/O thread only */
	atomic_uint_fast64_t moved; /* bytes sent and received (cn_h2_progress) */
};

static int64_t now_ms(void)
{
	return cn_monotonic_ns() / 1000000;
}

static void wake(struct cn_h2 *h)
{
	uint64_t one = 1;
	ssize_t r = write(h->wakefd, &one, sizeof(one));
	(void)r;
}

static void unlink_req(struct cn_h2 *h, struct cn_h2_req *r)
{
	if (r->prev)
		r->prev->next = r->next;
	else if (h->active == r)
		h->active = r->next;
	if (r->next)
		r->next->prev = r->prev;
	r->prev = r->next = NULL;
	h->nactive--;
}

static void free_req(struct cn_h2_req *r)
{
	cn_buf_free(&r->resp);
	free(r);
}

/* Marks r done (with lock held); frees it when its owner let go. */
static void complete(struct cn_h2 *h, struct cn_h2_req *r)
{
	unlink_req(h, r);
	r->done = 1;
	if (r->detached)
		free_req(r);
	pthread_cond_broadcast(&h->cond);
}

/* Kills the session (lock held): records the error from the calling
 * thread's cn_error message and fails every pending request. */
static void die(struct cn_h2 *h, int code)
{
	if (h->err == 0) {
		h->err = code < 0 ? code : -EIO;
		snprintf(h->errmsg, sizeof(h->errmsg), "%s", cn_error_message());
		if (!h->errmsg[0])
			snprintf(h->errmsg, sizeof(h->errmsg), "%s", cn_strerror(h->err));
	}
	while (h->active) {
		struct cn_h2_req *r = h->active;
		r->err = h->err;
		snprintf(r->errmsg, sizeof(r->errmsg), "%s", h->errmsg);
		if (r->stream_id > 0)
			nghttp2_session_set_stream_user_data(h->ng, r->stream_id, NULL);
		complete(h, r);
	}
	pthread_cond_broadcast(&h->cond);
}

/* ---- nghttp2 callbacks (run in the I/O thread with the lock held) ---- */

static int on_header(nghttp2_session *s, const nghttp2_frame *frame, const uint8_t *name,
		     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags, void *ud)
{
	(void)flags;
	(void)ud;
	if (frame->hd.type != NGHTTP2_HEADERS)
		return 0;
	struct cn_h2_req *r = nghttp2_session_get_stream_user_data(s, frame->hd.stream_id);
	if (!r || namelen != 7 || memcmp(name, ":status", 7) != 0)
		return 0;
	int st = 0;
	for (size_t i = 0; i < valuelen && i < 3; i++)
		st = st * 10 + (value[i] - '0');
	if (valuelen == 3 && st >= 100 && st < 600 && st != 100)
		r->status = st;
	return 0;
}

static int on_data(nghttp2_session *s, uint8_t flags, int32_t stream_id, const uint8_t *data,
		   size_t len, void *ud)
{
	(void)flags;
	(void)ud;
	struct cn_h2_req *r = nghttp2_session_get_stream_user_data(s, stream_id);
	if (!r)
		return 0;
	if (r->resp.len + len > RESPONSE_MAX || cn_buf_append(&r->resp, data, len) < 0) {
		r->err = -CN_E_PROTOCOL;
		snprintf(r->errmsg, sizeof(r->errmsg), "%s: answer larger than %u bytes", r->name,
			 RESPONSE_MAX);
		nghttp2_submit_rst_stream(s, NGHTTP2_FLAG_NONE, stream_id, NGHTTP2_CANCEL);
	}
	return 0;
}

static int on_close(nghttp2_session *s, int32_t stream_id, uint32_t error_code, void *ud)
{
	struct cn_h2 *h = ud;
	struct cn_h2_req *r = nghttp2_session_get_stream_user_data(s, stream_id);
	if (!r)
		return 0;
	if (r->err == 0 && (error_code != NGHTTP2_NO_ERROR || r->status == 0)) {
		r->err = -CN_E_PROTOCOL;
		snprintf(r->errmsg, sizeof(r->errmsg), "%s: stream closed by server without an answer (%s)",
			 r->name, nghttp2_http2_strerror(error_code));
	}
	complete(h, r);
	return 0;
}

static int on_frame_send(nghttp2_session *s, const nghttp2_frame *frame, void *ud)
{
	(void)s;
	struct cn_h2 *h = ud;
	if (frame->hd.type == NGHTTP2_GOAWAY && frame->goaway.error_code != NGHTTP2_NO_ERROR)
		h->goaway_sent = frame->goaway.error_code;
	return 0;
}

static int on_frame_recv(nghttp2_session *s, const nghttp2_frame *frame, void *ud)
{
	(void)s;
	struct cn_h2 *h = ud;
	if (frame->hd.type == NGHTTP2_GOAWAY) {
		h->goaway_rcvd = frame->goaway.error_code;
		h->got_goaway = 1;
	}
	return 0;
}

/* nghttp2 found the peer's bytes invalid (it then ends the session). */
static int on_error(nghttp2_session *s, int lib_error_code, const char *msg, size_t len, void *ud)
{
	(void)s;
	(void)lib_error_code;
	struct cn_h2 *h = ud;
	if (!h->proto_error[0])
		snprintf(h->proto_error, sizeof(h->proto_error), "%.*s", (int)len, msg);
	return 0;
}

static ssize_t read_body(nghttp2_session *s, int32_t stream_id, uint8_t *buf, size_t length,
			 uint32_t *data_flags, nghttp2_data_source *src, void *ud)
{
	(void)s;
	(void)stream_id;
	(void)ud;
	struct cn_h2_req *r = src->ptr;
	size_t n = r->len - r->off;
	if (n > length)
		n = length;
	if (n)
		memcpy(buf, r->body + r->off, n);
	r->off += n;
	if (r->off == r->len)
		*data_flags |= NGHTTP2_DATA_FLAG_EOF;
	return (ssize_t)n;
}

/* Large DATA frames: fewer frames for the peer to parse per chunk. */
static ssize_t frame_len(nghttp2_session *s, uint8_t frame_type, int32_t stream_id,
			 int32_t session_window, int32_t stream_window, uint32_t remote_max_frame,
			 void *ud)
{
	(void)s;
	(void)frame_type;
	(void)stream_id;
	struct cn_h2 *h = ud;
	int64_t n = (int64_t)h->opts.max_frame;
	if (n > session_window)
		n = session_window;
	if (n > stream_window)
		n = stream_window;
	if (n > (int64_t)remote_max_frame)
		n = remote_max_frame;
	return n < 1 ? 1 : (ssize_t)n;
}

/* ---- the I/O thread ---- */

/* Fills h->out from nghttp2 (lock held). Returns 0 or a negative code. */
static int produce(struct cn_h2 *h)
{
	if (h->out_off == h->out.len) {
		h->out.len = 0;
		h->out_off = 0;
	}
	while (h->out.len - h->out_off < OUT_HIGH) {
		const uint8_t *p;
		ssize_t n = nghttp2_session_mem_send(h->ng, &p);
		if (n < 0)
			return cn_error_set(-CN_E_PROTOCOL, "HTTP/2: %s", nghttp2_strerror((int)n));
		if (n == 0)
			break;
		if (cn_buf_append(&h->out, p, (size_t)n) < 0)
			return cn_error_set(-ENOMEM, "out of memory");
	}
	return 0;
}

/* Sets the error for a session the peer spoiled (invalid data, GOAWAY);
 * returns 0 if there is no such reason. */
static int session_end_error(struct cn_h2 *h)
{
	if (h->proto_error[0] || h->goaway_sent)
		return cn_error_set(-CN_E_PROTOCOL, "server sent invalid HTTP/2 data (%s)",
				    h->proto_error[0] ? h->proto_error : nghttp2_http2_strerror(h->goaway_sent));
	if (h->got_goaway)
		return cn_error_set(-CN_E_PROTOCOL, "server ended the HTTP/2 session (GOAWAY %s)",
				    nghttp2_http2_strerror(h->goaway_rcvd));
	return 0;
}

static void *io_thread(void *arg)
{
	struct cn_h2 *h = arg;
	uint8_t *rbuf = malloc(1 << 16);
	int r = 0;

	h->last_progress_ms = now_ms();
	pthread_mutex_lock(&h->mu);
	if (!rbuf) {
		cn_error_set(-ENOMEM, "out of memory");
		die(h, -ENOMEM);
	}
	while (!h->stop && h->err == 0) {
		r = produce(h);
		if (r < 0) {
			die(h, r);
			break;
		}
		int want_write = h->out.len > h->out_off;
		if (!want_write && !nghttp2_session_want_read(h->ng) && !nghttp2_session_want_write(h->ng)) {
			if (!h->closing) {
				if (!session_end_error(h))
					cn_error_set(-CN_E_PROTOCOL, "server ended the HTTP/2 session");
				die(h, -CN_E_PROTOCOL);
			}
			break;
		}
		int pending_reqs = h->nactive > 0;
		pthread_mutex_unlock(&h->mu);

		struct pollfd pf[2] = {
			{.fd = cn_tls_fd(h->tls), .events = POLLIN | (want_write ? POLLOUT : 0)},
			{.fd = h->wakefd, .events = POLLIN},
		};
		int n = cn_tls_pending(h->tls) ? 0 : 1000;
		n = poll(pf, 2, n);
		if (n < 0 && errno != EINTR) {
			r = cn_error_sys(-errno, "poll");
			pthread_mutex_lock(&h->mu);
			die(h, r);
			break;
		}
		if (pf[1].revents & POLLIN) {
			uint64_t v;
			ssize_t rr = read(h->wakefd, &v, sizeof(v));
			(void)rr;
		}
		/* Write before reading: an answer we read may need no reply,
		 * but our queued frames always need to go. */
		if (want_write && (pf[0].revents & (POLLOUT | POLLERR | POLLHUP))) {
			ssize_t w = cn_tls_write(h->tls, h->out.data + h->out_off, h->out.len - h->out_off);
			if (w > 0) {
				h->out_off += (size_t)w;
				h->last_progress_ms = now_ms();
				atomic_fetch_add(&h->moved, (uint64_t)w);
			} else if (w != -EAGAIN) {
				pthread_mutex_lock(&h->mu);
				cn_error_prefix((int)w, "connection to server lost");
				die(h, (int)w);
				break;
			}
		}
		int readable = (pf[0].revents & (POLLIN | POLLERR | POLLHUP)) || cn_tls_pending(h->tls);
		int failed = 0;
		while (readable) {
			ssize_t got = cn_tls_read(h->tls, rbuf, 1 << 16);
			if (got == -EAGAIN)
				break;
			pthread_mutex_lock(&h->mu);
			if (got == 0) {
				/* Name what the peer did last before closing. */
				if (!session_end_error(h))
					cn_error_set(-EPIPE, "connection to server lost: closed by the server");
				die(h, cn_error_code());
				failed = 1;
				break;
			}
			if (got < 0) {
				cn_error_prefix((int)got, "connection to server lost");
				die(h, (int)got);
				failed = 1;
				break;
			}
			h->last_progress_ms = now_ms();
			atomic_fetch_add(&h->moved, (uint64_t)got);
			ssize_t used = nghttp2_session_mem_recv(h->ng, rbuf, (size_t)got);
			if (used < 0) {
				cn_error_set(-CN_E_PROTOCOL, "server sent invalid HTTP/2 data: %s",
					     nghttp2_strerror((int)used));
				die(h, -CN_E_PROTOCOL);
				failed = 1;
				break;
			}
			pthread_mutex_unlock(&h->mu);
		}
		if (failed)
			break;
		pthread_mutex_lock(&h->mu);
		if (pending_reqs && h->opts.io_timeout_ms > 0 &&
		    now_ms() - h->last_progress_ms > h->opts.io_timeout_ms) {
			cn_error_set(-ETIMEDOUT, "no data from server for %d s", h->opts.io_timeout_ms / 1000);
			die(h, -ETIMEDOUT);
			break;
		}
	}
	pthread_mutex_unlock(&h->mu);
	free(rbuf);
	return NULL;
}

int cn_h2_start(struct cn_tls *tls, const uint8_t *early, size_t early_len,
		const char *host_port, const struct cn_h2_opts *opts, struct cn_h2 **out)
{
	struct cn_h2 *h = calloc(1, sizeof(*h));
	nghttp2_session_callbacks *cbs = NULL;
	nghttp2_option *nopt = NULL;
	int r;

	if (!h) {
		cn_tls_free(tls);
		return cn_error_set(-ENOMEM, "out of memory");
	}
	h->tls = tls;
	h->wakefd = -1;
	pthread_mutex_init(&h->mu, NULL);
	pthread_cond_init(&h->cond, NULL);
	snprintf(h->authority, sizeof(h->authority), "%s", host_port);
	if (opts)
		h->opts = *opts;
	if (h->opts.io_timeout_ms == 0)
		h->opts.io_timeout_ms = 120000;
	if (h->opts.max_frame == 0)
		h->opts.max_frame = 1u << 20;

	h->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (h->wakefd < 0) {
		r = cn_error_sys(-errno, "eventfd");
		goto fail;
	}
	if ((r = cn_tls_set_nonblocking(tls)) < 0) {
		cn_error_sys(r, "socket");
		goto fail;
	}
	if (nghttp2_session_callbacks_new(&cbs) != 0 || nghttp2_option_new(&nopt) != 0) {
		r = cn_error_set(-ENOMEM, "out of memory");
		goto fail;
	}
	nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
	nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data);
	nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_close);
	nghttp2_session_callbacks_set_on_frame_send_callback(cbs, on_frame_send);
	nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
	nghttp2_session_callbacks_set_error_callback2(cbs, on_error);
	nghttp2_session_callbacks_set_data_source_read_length_callback(cbs, frame_len);
	/* Many chunk uploads and downloads share one connection. */
	nghttp2_option_set_peer_max_concurrent_streams(nopt, 100);
	if (nghttp2_session_client_new2(&h->ng, cbs, h, nopt) != 0) {
		r = cn_error_set(-ENOMEM, "HTTP/2 session setup failed");
		goto fail;
	}
	nghttp2_settings_entry iv[] = {
		{NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
		{NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, WINDOW_MAX},
		{NGHTTP2_SETTINGS_MAX_FRAME_SIZE, 4u << 20},
	};
	if (nghttp2_submit_settings(h->ng, NGHTTP2_FLAG_NONE, iv, CN_ARRAY_SIZE(iv)) != 0 ||
	    nghttp2_session_set_local_window_size(h->ng, NGHTTP2_FLAG_NONE, 0, WINDOW_MAX) != 0) {
		r = cn_error_set(-CN_E_PROTOCOL, "HTTP/2 settings failed");
		goto fail;
	}
	if (early_len > 0) {
		ssize_t used = nghttp2_session_mem_recv(h->ng, early, early_len);
		if (used < 0) {
			r = cn_error_set(-CN_E_PROTOCOL, "server sent invalid HTTP/2 data: %s",
					 nghttp2_strerror((int)used));
			goto fail;
		}
	}
	if (pthread_create(&h->thread, NULL, io_thread, h) != 0) {
		r = cn_error_set(-EAGAIN, "cannot start the HTTP/2 I/O thread");
		goto fail;
	}
	h->thread_started = 1;
	nghttp2_session_callbacks_del(cbs);
	nghttp2_option_del(nopt);
	*out = h;
	return 0;
fail:
	nghttp2_session_callbacks_del(cbs);
	nghttp2_option_del(nopt);
	cn_h2_free(h);
	return r;
}

static void endpoint_name(const char *path, char *out, size_t size)
{
	size_t n = strcspn(path, "?");
	if (n >= size)
		n = size - 1;
	memcpy(out, path, n);
	out[n] = '\0';
}

int cn_h2_submit(struct cn_h2 *h, const char *method, const char *path,
		 const char *content_type, const uint8_t *body, size_t len,
		 struct cn_h2_req **out)
{
	struct cn_h2_req *r = calloc(1, sizeof(*r));
	char fullpath[4200], clen[24];
	if (!r)
		return cn_error_set(-ENOMEM, "out of memory");
	if (snprintf(fullpath, sizeof(fullpath), "/%s", path) >= (int)sizeof(fullpath)) {
		free(r);
		return cn_error_set(-ENAMETOOLONG, "request path too long");
	}
	endpoint_name(path, r->name, sizeof(r->name));
	r->body = body;
	r->len = body ? len : 0;
	snprintf(clen, sizeof(clen), "%zu", r->len);

#define NV(n, v) {(uint8_t *)(n), (uint8_t *)(v), strlen(n), strlen(v), NGHTTP2_NV_FLAG_NONE}
	nghttp2_nv nva[6] = {
		NV(":method", method),
		NV(":scheme", "https"),
		NV(":authority", h->authority),
		NV(":path", fullpath),
	};
	size_t nn = 4;
	if (content_type)
		nva[nn++] = (nghttp2_nv)NV("content-type", content_type);
	if (body)
		nva[nn++] = (nghttp2_nv)NV("content-length", clen);
#undef NV
	nghttp2_data_provider prov = {.source.ptr = r, .read_callback = read_body};

	pthread_mutex_lock(&h->mu);
	if (h->err) {
		int e = h->err;
		cn_error_set(e, "%s", h->errmsg);
		pthread_mutex_unlock(&h->mu);
		free(r);
		return e;
	}
	int32_t id = nghttp2_submit_request(h->ng, NULL, nva, nn, body ? &prov : NULL, r);
	if (id < 0) {
		pthread_mutex_unlock(&h->mu);
		cn_error_set(-CN_E_PROTOCOL, "HTTP/2 request %s: %s", r->name, nghttp2_strerror(id));
		free(r);
		return -CN_E_PROTOCOL;
	}
	r->stream_id = id;
	r->next = h->active;
	if (h->active)
		h->active->prev = r;
	h->active = r;
	h->nactive++;
	pthread_mutex_unlock(&h->mu);
	wake(h);
	*out = r;
	return 0;
}

int cn_h2_wait(struct cn_h2 *h, struct cn_h2_req *r)
{
	pthread_mutex_lock(&h->mu);
	while (!r->done)
		pthread_cond_wait(&h->cond, &h->mu);
	pthread_mutex_unlock(&h->mu);
	if (r->err)
		return cn_error_set(r->err, "%s", r->errmsg);
	return 0;
}

int cn_h2_req_done(struct cn_h2 *h, struct cn_h2_req *r)
{
	pthread_mutex_lock(&h->mu);
	int d = r->done;
	pthread_mutex_unlock(&h->mu);
	return d;
}

int cn_h2_req_status(const struct cn_h2_req *r)
{
	return r->status;
}

struct cn_buf *cn_h2_req_body(struct cn_h2_req *r)
{
	return &r->resp;
}

void cn_h2_req_free(struct cn_h2 *h, struct cn_h2_req *r)
{
	if (!r)
		return;
	pthread_mutex_lock(&h->mu);
	if (!r->done) {
		r->detached = 1;
		pthread_mutex_unlock(&h->mu);
		return;
	}
	pthread_mutex_unlock(&h->mu);
	free_req(r);
}

int cn_h2_call(struct cn_h2 *h, const char *method, const char *path,
	       const char *content_type, const uint8_t *body, size_t len, json_t **data)
{
	struct cn_h2_req *r;
	char name[48];
	endpoint_name(path, name, sizeof(name));
	int e = cn_h2_submit(h, method, path, content_type, body, len, &r);
	if (e < 0)
		return cn_error_prefix(e, "%s %s", method, name);
	e = cn_h2_wait(h, r);
	if (e == 0)
		e = cn_pbs_reply_data(r->status, r->resp.data, r->resp.len, data);
	cn_h2_req_free(h, r);
	if (e < 0)
		return cn_error_prefix(e, "%s %s", method, name);
	return 0;
}

int cn_h2_download(struct cn_h2 *h, const char *path, struct cn_buf *out)
{
	struct cn_h2_req *r;
	char name[48];
	endpoint_name(path, name, sizeof(name));
	int e = cn_h2_submit(h, "GET", path, NULL, NULL, 0, &r);
	if (e < 0)
		return cn_error_prefix(e, "GET %s", name);
	e = cn_h2_wait(h, r);
	if (e == 0)
		e = cn_pbs_reply_check(r->status, r->resp.data, r->resp.len);
	if (e == 0) {
		struct cn_buf tmp = *out;
		*out = r->resp;
		r->resp = tmp;
		r->resp.len = 0;
	}
	cn_h2_req_free(h, r);
	if (e < 0)
		return cn_error_prefix(e, "GET %s", name);
	return 0;
}

int cn_h2_error(struct cn_h2 *h)
{
	pthread_mutex_lock(&h->mu);
	int e = h->err;
	if (e)
		cn_error_set(e, "%s", h->errmsg);
	pthread_mutex_unlock(&h->mu);
	return e;
}

void cn_h2_cancel(struct cn_h2 *h, const char *why)
{
	pthread_mutex_lock(&h->mu);
	if (h->err == 0) {
		/* set directly: the calling thread's own message stays */
		h->err = -ECANCELED;
		snprintf(h->errmsg, sizeof(h->errmsg), "%s", why);
	}
	die(h, h->err);
	pthread_mutex_unlock(&h->mu);
	wake(h);
}

uint64_t cn_h2_progress(struct cn_h2 *h)
{
	return atomic_load(&h->moved);
}

int cn_h2_close(struct cn_h2 *h)
{
	pthread_mutex_lock(&h->mu);
	while (h->nactive > 0 && h->err == 0)
		pthread_cond_wait(&h->cond, &h->mu);
	if (h->err == 0) {
		h->closing = 1;
		nghttp2_session_terminate_session(h->ng, NGHTTP2_NO_ERROR);
	}
	pthread_mutex_unlock(&h->mu);
	wake(h);
	if (h->thread_started) {
		pthread_join(h->thread, NULL);
		h->thread_started = 0;
	}
	return cn_h2_error(h);
}

void cn_h2_free(struct cn_h2 *h)
{
	if (!h)
		return;
	if (h->thread_started) {
		pthread_mutex_lock(&h->mu);
		h->stop = 1;
		pthread_mutex_unlock(&h->mu);
		wake(h);
		pthread_join(h->thread, NULL);
	}
	cn_tls_shutdown(h->tls);
	if (h->ng) {
		pthread_mutex_lock(&h->mu);
		if (h->active) {
			cn_error_set(-ECANCELED, "session closed");
			die(h, -ECANCELED);
		}
		pthread_mutex_unlock(&h->mu);
		nghttp2_session_del(h->ng);
	}
	cn_tls_free(h->tls);
	if (h->wakefd >= 0)
		close(h->wakefd);
	cn_buf_free(&h->out);
	pthread_mutex_destroy(&h->mu);
	pthread_cond_destroy(&h->cond);
	free(h);
}

int cn_h2_urlencode(const char *in, char *out, size_t out_size)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t n = 0;
	for (; *in; in++) {
		unsigned char c = (unsigned char)*in;
		int plain = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
			    c == '-' || c == '_' || c == '.' || c == '~';
		if (n + (plain ? 1 : 3) >= out_size)
			return -ENAMETOOLONG;
		if (plain) {
			out[n++] = (char)c;
		} else {
			out[n++] = '%';
			out[n++] = hex[c >> 4];
			out[n++] = hex[c & 15];
		}
	}
	out[n] = '\0';
	return 0;
}
