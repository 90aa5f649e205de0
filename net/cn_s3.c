/* S3 client over libcurl (SigV4) with libxml2 for XML bodies. */
#include "net/cn_s3.h"

#include <curl/curl.h>
#include <errno.h>
#include <libxml/parser.h>
#include <libxml/tree.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/cn_error.h"
#include "common/cn_log.h"

#define ERRBODY_MAX (64u << 10)
#define GET_BUFFER_SIZE (256L << 10) /* curl's receive buffer for a GET */
#define WHERE_MAX 2600 /* "S3 METHOD endpoint bucket key (access key id)" */
#define EMPTY_SHA256 "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

struct cn_s3 {
	struct cn_s3_config cfg;
	char name[1400];      /* "s3://bucket/prefix at endpoint" */
	char endpoint[600];   /* for messages: what requests go to */
	char base_url[1200];  /* requests' URL up to (excluding) "/key" */
	char sigv4[128];      /* "aws:amz:REGION:s3" */
	pthread_mutex_t mu;   /* guards idle */
	CURL **idle;
	size_t nidle, capidle;
	int cancelled;        /* atomic */
	uint64_t progress;    /* atomic: bytes moved */
	int single_deletes;   /* atomic: the service lacks multi-object delete */
};

/* ---- client ------------------------------------------------------------- */

static pthread_once_t global_once = PTHREAD_ONCE_INIT;
static int global_ok;

static void global_init(void)
{
	global_ok = curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK;
	xmlInitParser();
}

int cn_s3_new(const struct cn_s3_config *cfg, struct cn_s3 **out)
{
	pthread_once(&global_once, global_init);
	if (!global_ok)
		return cn_error_set(-EIO, "libcurl initialisation failed");
	if (!cfg->bucket[0] || !cfg->access_key[0])
		return cn_error_set(-EINVAL, "S3: bucket or credentials missing");
	struct cn_s3 *s = calloc(1, sizeof(*s));
	if (!s)
		return cn_error_set(-ENOMEM, "out of memory");
	s->cfg = *cfg;
	if (!s->cfg.region[0])
		snprintf(s->cfg.region, sizeof(s->cfg.region), "us-east-1");
	if (s->cfg.connect_timeout <= 0)
		s->cfg.connect_timeout = 10;
	if (s->cfg.low_speed_time <= 0)
		s->cfg.low_speed_time = 30;
	if (s->cfg.max_attempts <= 0)
		s->cfg.max_attempts = 5;
	const char *scheme = "https://";
	char host[520];
	if (cfg->endpoint[0]) {
		const char *h = strstr(cfg->endpoint, "://");
		scheme = strncmp(cfg->endpoint, "http://", 7) == 0 ? "http://" : "https://";
		snprintf(host, sizeof(host), "%s", h ? h + 3 : cfg->endpoint);
	} else {
		snprintf(host, sizeof(host), "s3.%s.amazonaws.com", s->cfg.region);
	}
	int path_style = cfg->addressing == CN_S3_ADDR_PATH ||
			 (cfg->addressing == CN_S3_ADDR_AUTO && cfg->endpoint[0]);
	if (path_style)
		snprintf(s->base_url, sizeof(s->base_url), "%s%s/%s", scheme, host, cfg->bucket);
	else
		snprintf(s->base_url, sizeof(s->base_url), "%s%s.%s", scheme, cfg->bucket, host);
	snprintf(s->endpoint, sizeof(s->endpoint), "%s%s", scheme, host);
	snprintf(s->sigv4, sizeof(s->sigv4), "aws:amz:%s:s3", s->cfg.region);
	snprintf(s->name, sizeof(s->name), "s3://%s%s%s at %s", cfg->bucket,
		 cfg->prefix[0] ? "/" : "", cfg->prefix, s->endpoint);
	pthread_mutex_init(&s->mu, NULL);
	*out = s;
	return 0;
}

void cn_s3_free(struct cn_s3 *s)
{
	if (!s)
		return;
	for (size_t i = 0; i < s->nidle; i++)
		curl_easy_cleanup(s->idle[i]);
	free(s->idle);
	pthread_mutex_destroy(&s->mu);
	explicit_bzero(&s->cfg, sizeof(s->cfg));
	free(s);
}

const char *cn_s3_name(const struct cn_s3 *s)
{
	return s->name;
}

const struct cn_s3_config *cn_s3_config(const struct cn_s3 *s)
{
	return &s->cfg;
}

void cn_s3_cancel(struct cn_s3 *s)
{
	__atomic_store_n(&s->cancelled, 1, __ATOMIC_SEQ_CST);
}

uint64_t cn_s3_progress(const struct cn_s3 *s)
{
	return __atomic_load_n(&s->progress, __ATOMIC_RELAXED);
}

static int is_cancelled(const struct cn_s3 *s)
{
	return __atomic_load_n(&s->cancelled, __ATOMIC_SEQ_CST);
}

static CURL *handle_get(struct cn_s3 *s)
{
	CURL *h = NULL;
	pthread_mutex_lock(&s->mu);
	if (s->nidle > 0)
		h = s->idle[--s->nidle];
	pthread_mutex_unlock(&s->mu);
	return h ? h : curl_easy_init();
}

static void handle_put(struct cn_s3 *s, CURL *h)
{
	pthread_mutex_lock(&s->mu);
	if (s->nidle == s->capidle) {
		size_t nc = s->capidle ? s->capidle * 2 : 8;
		CURL **ni = realloc(s->idle, nc * sizeof(*ni));
		if (!ni) {
			pthread_mutex_unlock(&s->mu);
			curl_easy_cleanup(h);
			return;
		}
		s->idle = ni;
		s->capidle = nc;
	}
	s->idle[s->nidle++] = h;
	pthread_mutex_unlock(&s->mu);
}

/* ---- requests ----------------------------------------------------------- */

/* Percent-encodes s as SigV4 wants (unreserved characters kept; '/' kept
 * when keep_slash). Returns 0 or -ENAMETOOLONG. */
static int uri_encode(const char *s, int keep_slash, char *out, size_t n)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t o = 0;
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		int keep = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
			   c == '-' || c == '_' || c == '.' || c == '~' || (keep_slash && c == '/');
		if (o + 4 > n)
			return -ENAMETOOLONG;
		if (keep) {
			out[o++] = (char)c;
		} else {
			out[o++] = '%';
			out[o++] = hex[c >> 4];
			out[o++] = hex[c & 15];
		}
	}
	out[o] = '\0';
	return 0;
}

/* key relative to the client's prefix → full object key */
static int full_key(const struct cn_s3 *s, const char *key, char *out, size_t n)
{
	int w = s->cfg.prefix[0] ? snprintf(out, n, "%s/%s", s->cfg.prefix, key)
				 : snprintf(out, n, "%s", key);
	return (w < 0 || (size_t)w >= n) ? -ENAMETOOLONG : 0;
}

enum method { M_GET, M_HEAD, M_PUT, M_DELETE, M_POST };

struct req {
	struct cn_s3 *s;
	enum method method;
	const char *key;       /* relative key for messages; NULL: the bucket */
	const char *query;     /* canonical query string or NULL */
	const uint8_t *body;   /* PUT and POST */
	size_t body_len, body_off;
	const char *content_md5; /* base64, or NULL for no Content-MD5 header */
	struct cn_buf *out;    /* 2xx response body, or NULL */
	/* or the 2xx body handed to sink_write (sink_err: its failure) */
	void (*sink_restart)(void *ctx);
	int (*sink_write)(void *ctx, const uint8_t *data, size_t n);
	int (*sink_cancelled)(void *ctx); /* optional: the caller gave up */
	void *sink_ctx;
	int sink_err;
	size_t out_start;
	int has_range;
	uint64_t range_off, range_len;
	long status;
	struct cn_buf err;     /* non-2xx body (bounded) */
	uint64_t length;       /* HEAD: Content-Length */
};

static size_t on_write(char *data, size_t size, size_t nmemb, void *ud)
{
	struct req *q = ud;
	size_t n = size * nmemb;
	__atomic_fetch_add(&q->s->progress, n, __ATOMIC_RELAXED);
	if (q->status == 0)
		return n; /* not reached: status is set by the header callback */
	if (q->status >= 200 && q->status < 300) {
		if (q->sink_write) {
			int r = q->sink_write(q->sink_ctx, (const uint8_t *)data, n);
			if (r < 0)
				q->sink_err = r;
			return r < 0 ? 0 : n;
		}
		if (!q->out)
			return n;
		return cn_buf_append(q->out, data, n) < 0 ? 0 : n;
	}
	if (q->err.len + n > ERRBODY_MAX)
		return n;
	return cn_buf_append(&q->err, data, n) < 0 ? 0 : n;
}

static size_t on_header(char *data, size_t size, size_t nmemb, void *ud)
{
	struct req *q = ud;
	size_t n = size * nmemb;
	/* answers without a body (HEAD, DELETE) are progress too */
	__atomic_fetch_add(&q->s->progress, n, __ATOMIC_RELAXED);
	if (n > 5 && memcmp(data, "HTTP/", 5) == 0) {
		const char *sp = memchr(data, ' ', n);
		q->status = sp ? strtol(sp + 1, NULL, 10) : 0;
		q->err.len = 0;
	}
	return n;
}

static size_t on_read(char *buf, size_t size, size_t nmemb, void *ud)
{
	struct req *q = ud;
	size_t n = size * nmemb;
	size_t left = q->body_len - q->body_off;
	if (n > left)
		n = left;
	memcpy(buf, q->body + q->body_off, n);
	q->body_off += n;
	__atomic_fetch_add(&q->s->progress, n, __ATOMIC_RELAXED);
	return n;
}

/* CAIRN_S3_TRACE: request and answer headers on stderr, each line whole
 * and prefixed ("> " sent, "< " received) under stderr's lock, so that the
 * lines of concurrent uploads do not interleave (curl's own verbose output
 * writes prefix and text in separate calls). */
static int on_trace(CURL *h, curl_infotype type, char *data, size_t len, void *ud)
{
	(void)h, (void)ud;
	const char *prefix = type == CURLINFO_HEADER_OUT ? "> " :
			     type == CURLINFO_HEADER_IN ? "< " : NULL;
	if (!prefix)
		return 0;
	flockfile(stderr);
	size_t i = 0;
	while (i < len) {
		size_t j = i;
		while (j < len && data[j] != '\n')
			j++;
		size_t n = j - i;
		if (n && data[i + n - 1] == '\r')
			n--;
		if (n) {
			fputs_unlocked(prefix, stderr);
			fwrite_unlocked(data + i, 1, n, stderr);
			fputc_unlocked('\n', stderr);
		}
		i = j + 1;
	}
	funlockfile(stderr);
	return 0;
}

/* Whether q's caller no longer wants its answer. */
static int unwanted(const struct req *q)
{
	return q->sink_cancelled && q->sink_cancelled(q->sink_ctx);
}

/* curl asks about once a second even while no byte moves. */
static int on_progress(void *ud, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un)
{
	(void)dt, (void)dn, (void)ut, (void)un;
	const struct req *q = ud;
	return is_cancelled(q->s) || unwanted(q) ? 1 : 0;
}

/* Code and Message of an S3 <Error> body, into code/msg ("" if none). */
static void parse_error_body(const struct cn_buf *b, char *code, size_t cn, char *msg, size_t mn)
{
	code[0] = msg[0] = '\0';
	if (b->len == 0)
		return;
	xmlDocPtr doc = xmlReadMemory((const char *)b->data, (int)b->len, NULL, NULL,
				      XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING);
	if (!doc)
		return;
	xmlNodePtr root = xmlDocGetRootElement(doc);
	for (xmlNodePtr n = root ? root->children : NULL; n; n = n->next) {
		if (n->type != XML_ELEMENT_NODE)
			continue;
		char *dst = NULL;
		size_t dn = 0;
		if (xmlStrcmp(n->name, BAD_CAST "Code") == 0)
			dst = code, dn = cn;
		else if (xmlStrcmp(n->name, BAD_CAST "Message") == 0)
			dst = msg, dn = mn;
		if (!dst)
			continue;
		xmlChar *t = xmlNodeGetContent(n);
		snprintf(dst, dn, "%s", t ? (const char *)t : "");
		xmlFree(t);
	}
	xmlFreeDoc(doc);
}

static int retriable_curl(CURLcode c)
{
	return c == CURLE_COULDNT_CONNECT || c == CURLE_SEND_ERROR || c == CURLE_RECV_ERROR ||
	       c == CURLE_GOT_NOTHING || c == CURLE_PARTIAL_FILE || c == CURLE_COULDNT_RESOLVE_HOST;
}

/* The error code of a call curl could not complete: what the connection
 * did where curl says so (see cn_error_is_unavailable), else -EIO. */
static int curl_code_errno(CURLcode c)
{
	switch (c) {
	case CURLE_COULDNT_CONNECT:
		return -ECONNREFUSED;
	case CURLE_COULDNT_RESOLVE_HOST:
		return -EHOSTUNREACH;
	case CURLE_SEND_ERROR:
	case CURLE_RECV_ERROR:
	case CURLE_GOT_NOTHING:
	case CURLE_PARTIAL_FILE:
		return -ECONNRESET;
	case CURLE_SSL_CONNECT_ERROR:
	case CURLE_PEER_FAILED_VERIFICATION:
		return -CN_E_TLS;
	default:
		return -EIO;
	}
}

static int retriable_status(long st, const char *code)
{
	return st == 500 || st == 502 || st == 503 || st == 504 || strcmp(code, "SlowDown") == 0 ||
	       strcmp(code, "RequestTimeout") == 0 || strcmp(code, "InternalError") == 0;
}

/* Sleeps ms milliseconds in small steps; returns early when cancelled or
 * no longer wanted. */
static void backoff_sleep(const struct req *q, long ms)
{
	while (ms > 0 && !is_cancelled(q->s) && !unwanted(q)) {
		long step = ms < 50 ? ms : 50;
		struct timespec ts = {0, step * 1000000L};
		nanosleep(&ts, NULL);
		ms -= step;
	}
}

static const char *method_name(enum method m)
{
	static const char *const names[] = {"GET", "HEAD", "PUT", "DELETE", "POST"};
	return names[m];
}

/* "s3 ENDPOINT bucket B key K (access key id A)" into out. */
static void where(const struct req *q, char *out, size_t n)
{
	const struct cn_s3 *s = q->s;
	char fk[1200];
	if (q->key && full_key(s, q->key, fk, sizeof(fk)) < 0)
		snprintf(fk, sizeof(fk), "%s", q->key);
	snprintf(out, n, "S3 %s %s bucket %s%s%s (access key id %s)", method_name(q->method),
		 s->endpoint, s->cfg.bucket, q->key ? " key " : "", q->key ? fk : "",
		 s->cfg.access_key);
}

static int set_options(struct req *q, CURL *h, const char *url, struct curl_slist **hdrs)
{
	const struct cn_s3 *s = q->s;
	char line[2200];
	char sha[65];
	if (q->method == M_PUT || q->method == M_POST) {
		uint8_t d[32];
		unsigned int dl = 0;
		if (EVP_Digest(q->body, q->body_len, d, &dl, EVP_sha256(), NULL) != 1)
			return -EIO;
		cn_hex_encode(d, 32, sha);
	} else {
		snprintf(sha, sizeof(sha), "%s", EMPTY_SHA256);
	}
	snprintf(line, sizeof(line), "x-amz-content-sha256: %s", sha);
	*hdrs = curl_slist_append(*hdrs, line);
	if (s->cfg.session_token[0]) {
		snprintf(line, sizeof(line), "x-amz-security-token: %s", s->cfg.session_token);
		*hdrs = curl_slist_append(*hdrs, line);
	}
	if (q->content_md5) {
		snprintf(line, sizeof(line), "Content-MD5: %s", q->content_md5);
		*hdrs = curl_slist_append(*hdrs, line);
	}
	if (q->method == M_POST) /* else curl adds a form type */
		*hdrs = curl_slist_append(*hdrs, "Content-Type: application/xml");
	if (q->has_range) {
		snprintf(line, sizeof(line), "Range: bytes=%llu-%llu",
			 (unsigned long long)q->range_off,
			 (unsigned long long)(q->range_off + q->range_len - 1));
		*hdrs = curl_slist_append(*hdrs, line);
	}
	/* no "Expect:" override: curl 7.88 would sign the empty header */
	if (!*hdrs)
		return -ENOMEM;
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, *hdrs);
	curl_easy_setopt(h, CURLOPT_AWS_SIGV4, s->sigv4);
	curl_easy_setopt(h, CURLOPT_USERNAME, s->cfg.access_key);
	curl_easy_setopt(h, CURLOPT_PASSWORD, s->cfg.secret_key);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	if (getenv("CAIRN_S3_TRACE")) { /* request and answer headers on stderr (no secret) */
		curl_easy_setopt(h, CURLOPT_DEBUGFUNCTION, on_trace);
		curl_easy_setopt(h, CURLOPT_VERBOSE, 1L);
	}
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, s->cfg.connect_timeout);
	curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1L);
	curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, s->cfg.low_speed_time);
	curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
	curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
	curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_progress);
	curl_easy_setopt(h, CURLOPT_XFERINFODATA, q);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_write);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, q);
	curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(h, CURLOPT_HEADERDATA, q);
	if (s->cfg.ca_bundle[0])
		curl_easy_setopt(h, CURLOPT_CAINFO, s->cfg.ca_bundle);
	switch (q->method) {
	case M_GET:
		/* chunk-sized answers: a larger receive buffer than curl's 16 KiB
		 * takes them in a tenth of the reads and write callbacks */
		curl_easy_setopt(h, CURLOPT_BUFFERSIZE, GET_BUFFER_SIZE);
		break;
	case M_HEAD:
		curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
		break;
	case M_PUT:
		curl_easy_setopt(h, CURLOPT_UPLOAD, 1L);
		curl_easy_setopt(h, CURLOPT_READFUNCTION, on_read);
		curl_easy_setopt(h, CURLOPT_READDATA, q);
		curl_easy_setopt(h, CURLOPT_INFILESIZE_LARGE, (curl_off_t)q->body_len);
		break;
	case M_DELETE:
		curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, "DELETE");
		break;
	case M_POST:
		curl_easy_setopt(h, CURLOPT_POST, 1L);
		curl_easy_setopt(h, CURLOPT_POSTFIELDS, (const char *)q->body);
		curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)q->body_len);
		break;
	}
	return 0;
}

/* Runs q with retries. Returns 0 with q->status set to the final HTTP
 * status (any), or <0 with a message when no answer came. */
static int perform(struct req *q)
{
	struct cn_s3 *s = q->s;
	char url[4600], enc[3300], fk[1200];
	if (q->key) {
		if (full_key(s, q->key, fk, sizeof(fk)) < 0 || uri_encode(fk, 1, enc, sizeof(enc)) < 0)
			return cn_error_set(-ENAMETOOLONG, "S3 key too long: %s", q->key);
		snprintf(url, sizeof(url), "%s/%s", s->base_url, enc);
	} else {
		snprintf(url, sizeof(url), "%s/", s->base_url);
	}
	if (q->query) {
		size_t ul = strlen(url);
		if (ul + strlen(q->query) + 2 > sizeof(url))
			return cn_error_set(-ENAMETOOLONG, "S3 query too long");
		snprintf(url + ul, sizeof(url) - ul, "?%s", q->query);
	}
	q->out_start = q->out ? q->out->len : 0;
	CURL *h = handle_get(s);
	if (!h)
		return cn_error_set(-ENOMEM, "out of memory for a curl handle");
	int r = 0;
	long delay = 200;
	for (int attempt = 1;; attempt++) {
		if (is_cancelled(s) || unwanted(q)) {
			char w[WHERE_MAX];
			where(q, w, sizeof(w));
			r = cn_error_set(-ECANCELED, "%s: cancelled", w);
			break;
		}
		struct curl_slist *hdrs = NULL;
		curl_easy_reset(h);
		q->status = 0;
		q->body_off = 0;
		q->err.len = 0;
		if (q->out)
			q->out->len = q->out_start;
		q->sink_err = 0;
		if (q->sink_restart)
			q->sink_restart(q->sink_ctx);
		r = set_options(q, h, url, &hdrs);
		CURLcode cc = r < 0 ? CURLE_OUT_OF_MEMORY : curl_easy_perform(h);
		curl_slist_free_all(hdrs);
		if (r < 0) {
			r = cn_error_set(r, "S3 request setup failed");
			break;
		}
		if (cc == CURLE_WRITE_ERROR && q->sink_err) {
			r = q->sink_err; /* the sink's message stands */
			break;
		}
		char code[128] = "", msg[512] = "";
		if (cc == CURLE_OK && (q->status < 200 || q->status >= 300))
			parse_error_body(&q->err, code, sizeof(code), msg, sizeof(msg));
		int again = cc == CURLE_OK ? retriable_status(q->status, code) : retriable_curl(cc);
		if (cc == CURLE_ABORTED_BY_CALLBACK && (is_cancelled(s) || unwanted(q)))
			continue; /* reported at the top of the loop */
		if (again && attempt < s->cfg.max_attempts) {
			cn_log(CN_LOG_DEBUG, "S3 %s %s: %s, retrying in %ld ms", method_name(q->method),
			       q->key ? q->key : "(bucket)",
			       cc == CURLE_OK ? (code[0] ? code : "server error")
					      : curl_easy_strerror(cc),
			       delay);
			backoff_sleep(q, delay);
			delay = delay * 2 > 5000 ? 5000 : delay * 2;
			continue;
		}
		if (cc != CURLE_OK) {
			char w[WHERE_MAX];
			const char *retried = attempt > 1 ? " (after retries)" : "";
			/* (a reused connection took no time to connect) */
			curl_off_t connected = 0;
			where(q, w, sizeof(w));
			if (cc != CURLE_OPERATION_TIMEDOUT)
				r = cn_error_set(curl_code_errno(cc), "%s: %s%s", w,
						 curl_easy_strerror(cc), retried);
			else if (curl_easy_getinfo(h, CURLINFO_PRETRANSFER_TIME_T, &connected) ==
					 CURLE_OK && connected > 0)
				r = cn_error_set(-ETIMEDOUT, "%s: the endpoint stalled: no byte "
						 "moved for %ld s%s", w, s->cfg.low_speed_time, retried);
			else
				r = cn_error_set(-ETIMEDOUT, "%s: no connection within %ld s%s", w,
						 s->cfg.connect_timeout, retried);
		} else if (q->method == M_HEAD) {
			curl_off_t cl = -1;
			curl_easy_getinfo(h, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &cl);
			q->length = cl < 0 ? 0 : (uint64_t)cl;
		}
		break;
	}
	handle_put(s, h);
	return r;
}

/* Turns a non-2xx answer into an error code and message. */
static int status_error(struct req *q)
{
	char code[128], msg[512], w[WHERE_MAX];
	parse_error_body(&q->err, code, sizeof(code), msg, sizeof(msg));
	where(q, w, sizeof(w));
	int e = -EIO;
	const char *hint = "";
	if (q->status == 404 && strcmp(code, "NoSuchBucket") == 0) {
		e = -ENXIO;
		hint = " (the bucket does not exist)";
	} else if (q->status == 404) {
		e = -ENOENT;
	} else if (q->status == 403 || q->status == 401) {
		e = -EACCES;
		if (strcmp(code, "SignatureDoesNotMatch") == 0)
			hint = " (wrong secret access key?)";
		else if (strcmp(code, "InvalidAccessKeyId") == 0)
			hint = " (unknown access key id)";
		else if (!code[0])
			hint = " (access denied: wrong credentials or no permission)";
	} else if (q->status == 507 || strcmp(code, "QuotaExceeded") == 0) {
		e = -ENOSPC;
	}
	return cn_error_set(e, "%s: HTTP %ld%s%s%s%s%s", w, q->status, code[0] ? " " : "", code,
			    msg[0] ? ": " : "", msg, hint);
}

static int run(struct req *q)
{
	int r = perform(q);
	if (r == 0 && (q->status < 200 || q->status >= 300))
		r = status_error(q);
	cn_buf_free(&q->err);
	return r;
}

int cn_s3_check_bucket(struct cn_s3 *s)
{
	/* a one-key listing: unlike HEAD it returns an <Error> body that says
	 * what is wrong (NoSuchBucket, SignatureDoesNotMatch, ...) */
	struct cn_buf body = {0};
	struct req q = {.s = s, .method = M_GET, .query = "list-type=2&max-keys=1", .out = &body};
	int r = run(&q);
	cn_buf_free(&body);
	if (r == -ENOENT || r == -ENXIO)
		return cn_error_set(-ENOENT, "%s", cn_error_message());
	return r;
}

int cn_s3_get(struct cn_s3 *s, const char *key, struct cn_buf *out)
{
	struct req q = {.s = s, .method = M_GET, .key = key, .out = out};
	return run(&q);
}

int cn_s3_get_to(struct cn_s3 *s, const char *key, void (*restart)(void *ctx),
		 int (*write)(void *ctx, const uint8_t *data, size_t n),
		 int (*cancelled)(void *ctx), void *ctx)
{
	struct req q = {.s = s, .method = M_GET, .key = key, .sink_restart = restart,
			.sink_write = write, .sink_cancelled = cancelled, .sink_ctx = ctx};
	return run(&q);
}

int cn_s3_get_range(struct cn_s3 *s, const char *key, uint64_t off, uint64_t len,
		    struct cn_buf *out)
{
	if (len == 0)
		return 0;
	size_t start = out->len;
	struct req q = {.s = s, .method = M_GET, .key = key, .out = out, .has_range = 1,
			.range_off = off, .range_len = len};
	int r = run(&q);
	if (r == 0 && (q.status != 206 || out->len - start != len)) {
		char w[WHERE_MAX];
		where(&q, w, sizeof(w));
		r = cn_error_set(-CN_E_TRUNCATED, "%s: range %llu+%llu answered with %zu bytes", w,
				 (unsigned long long)off, (unsigned long long)len, out->len - start);
	}
	return r;
}

int cn_s3_put(struct cn_s3 *s, const char *key, const void *data, size_t len)
{
	struct req q = {.s = s, .method = M_PUT, .key = key, .body = data, .body_len = len};
	return run(&q);
}

int cn_s3_head(struct cn_s3 *s, const char *key, uint64_t *size)
{
	struct req q = {.s = s, .method = M_HEAD, .key = key};
	int r = run(&q);
	if (r == 0 && size)
		*size = q.length;
	return r;
}

int cn_s3_delete(struct cn_s3 *s, const char *key)
{
	struct req q = {.s = s, .method = M_DELETE, .key = key};
	int r = run(&q);
	return r == -ENOENT ? 0 : r;
}

/* ---- listing ------------------------------------------------------------ */

static const char *child_text(xmlNodePtr n, const char *name, xmlChar **hold)
{
	for (xmlNodePtr c = n->children; c; c = c->next) {
		if (c->type == XML_ELEMENT_NODE && xmlStrcmp(c->name, BAD_CAST name) == 0) {
			*hold = xmlNodeGetContent(c);
			return *hold ? (const char *)*hold : "";
		}
	}
	return NULL;
}

/* "2026-12-06T20:34:53.000Z" (S3's LastModified) as seconds since the
 * epoch; 0 when absent or not in that form. */
static int64_t parse_last_modified(const char *v)
{
	struct tm tm;
	memset(&tm, 0, sizeof(tm));
	if (!v || sscanf(v, "%d-%d-%dT%d:%d:%d", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour,
			 &tm.tm_min, &tm.tm_sec) != 6)
		return 0;
	tm.tm_year -= 1900;
	tm.tm_mon -= 1;
	return (int64_t)timegm(&tm);
}

/* Parses one ListObjectsV2 page: calls fn per entry, stores the next
 * continuation token in token ("" when the listing is complete). */
static int parse_list_page(struct cn_s3 *s, const struct cn_buf *b, size_t strip,
			   cn_s3_list_fn fn, cn_s3_list_mtime_fn fnm, void *ctx, char *token,
			   size_t tn)
{
	token[0] = '\0';
	xmlDocPtr doc = xmlReadMemory((const char *)b->data, (int)b->len, NULL, NULL,
				      XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING);
	xmlNodePtr root = doc ? xmlDocGetRootElement(doc) : NULL;
	if (!root || xmlStrcmp(root->name, BAD_CAST "ListBucketResult") != 0) {
		xmlFreeDoc(doc);
		return cn_error_set(-EIO, "S3 %s bucket %s: listing is not a ListBucketResult",
				    s->endpoint, s->cfg.bucket);
	}
	int r = 0, truncated = 0;
	for (xmlNodePtr n = root->children; n && r == 0; n = n->next) {
		if (n->type != XML_ELEMENT_NODE)
			continue;
		xmlChar *a = NULL, *z = NULL;
		if (xmlStrcmp(n->name, BAD_CAST "Contents") == 0) {
			const char *k = child_text(n, "Key", &a);
			const char *sz = child_text(n, "Size", &z);
			uint64_t size = sz ? strtoull(sz, NULL, 10) : 0;
			if (k && strlen(k) >= strip && fnm) {
				xmlChar *lm = NULL;
				int64_t mt = parse_last_modified(child_text(n, "LastModified", &lm));
				xmlFree(lm);
				r = fnm(ctx, k + strip, size, mt);
			} else if (k && strlen(k) >= strip) {
				r = fn(ctx, k + strip, size, 0);
			}
		} else if (xmlStrcmp(n->name, BAD_CAST "CommonPrefixes") == 0) {
			const char *p = child_text(n, "Prefix", &a);
			if (p && strlen(p) >= strip && fn)
				r = fn(ctx, p + strip, 0, 1);
		} else if (xmlStrcmp(n->name, BAD_CAST "IsTruncated") == 0) {
			a = xmlNodeGetContent(n);
			truncated = a && xmlStrcmp(a, BAD_CAST "true") == 0;
		} else if (xmlStrcmp(n->name, BAD_CAST "NextContinuationToken") == 0) {
			a = xmlNodeGetContent(n);
			snprintf(token, tn, "%s", a ? (const char *)a : "");
		}
		xmlFree(a);
		xmlFree(z);
	}
	xmlFreeDoc(doc);
	if (r == 0 && truncated && !token[0])
		r = cn_error_set(-EIO, "S3 %s bucket %s: truncated listing without a continuation "
				       "token", s->endpoint, s->cfg.bucket);
	if (!truncated)
		token[0] = '\0';
	return r;
}

static int list_pages(struct cn_s3 *s, const char *prefix, const char *delimiter,
		      cn_s3_list_fn fn, cn_s3_list_mtime_fn fnm, void *ctx)
{
	char fp[1200], ep[3700], ed[64], et[3100], query[8000], token[1024] = "";
	if (full_key(s, prefix, fp, sizeof(fp)) < 0 || uri_encode(fp, 0, ep, sizeof(ep)) < 0)
		return cn_error_set(-ENAMETOOLONG, "S3 prefix too long: %s", prefix);
	if (uri_encode(delimiter ? delimiter : "", 0, ed, sizeof(ed)) < 0)
		return cn_error_set(-EINVAL, "S3 delimiter too long");
	size_t strip = s->cfg.prefix[0] ? strlen(s->cfg.prefix) + 1 : 0;
	struct cn_buf body = {0};
	int r = 0;
	do {
		if (uri_encode(token, 0, et, sizeof(et)) < 0) {
			r = cn_error_set(-EIO, "S3 continuation token too long");
			break;
		}
		/* parameters in canonical (sorted) order: the signature covers them */
		snprintf(query, sizeof(query), "%s%s%s%s%s%slist-type=2&prefix=%s",
			 token[0] ? "continuation-token=" : "", token[0] ? et : "",
			 token[0] ? "&" : "", delimiter ? "delimiter=" : "", delimiter ? ed : "",
			 delimiter ? "&" : "", ep);
		body.len = 0;
		struct req q = {.s = s, .method = M_GET, .query = query, .out = &body};
		r = run(&q);
		if (r == 0)
			r = parse_list_page(s, &body, strip, fn, fnm, ctx, token, sizeof(token));
	} while (r == 0 && token[0]);
	cn_buf_free(&body);
	return r;
}

int cn_s3_list(struct cn_s3 *s, const char *prefix, const char *delimiter, cn_s3_list_fn fn,
	       void *ctx)
{
	return list_pages(s, prefix, delimiter, fn, NULL, ctx);
}

int cn_s3_list_objects(struct cn_s3 *s, const char *prefix, cn_s3_list_mtime_fn fn, void *ctx)
{
	return list_pages(s, prefix, NULL, NULL, fn, ctx);
}

/* ---- deleting many objects ---------------------------------------------- */

/* The failures of a delete of many keys: per key (status), the first
 * code, how many, and the first keys for the message. */
struct delete_failures {
	int *status;
	int first;
	size_t failed;
	char msg[1024];
	size_t used;
};

/* Records the failure of key i (SIZE_MAX: one the answer names and the
 * request did not hold). */
static void note_failure(struct delete_failures *f, size_t i, int code, const char *key,
			 const char *why)
{
	if (f->status && i != SIZE_MAX)
		f->status[i] = code;
	if (!f->first)
		f->first = code;
	if (f->failed++ < 3 && f->used < sizeof(f->msg)) {
		int w = snprintf(f->msg + f->used, sizeof(f->msg) - f->used, "%s%s (%s)",
				 f->used ? ", " : "", key, why);
		if (w > 0)
			f->used += (size_t)w;
	}
}

/* Appends s to b with XML's five special characters escaped. */
static int xml_append_escaped(struct cn_buf *b, const char *s)
{
	int r = 0;
	for (; *s && r == 0; s++) {
		const char *e = *s == '&' ? "&amp;" : *s == '<' ? "&lt;" : *s == '>' ? "&gt;"
			      : *s == '"' ? "&quot;" : *s == '\'' ? "&apos;" : NULL;
		r = e ? cn_buf_append(b, e, strlen(e)) : cn_buf_append(b, s, 1);
	}
	return r;
}

/* The <Delete> body of a multi-object delete of keys (quiet: the answer
 * lists failures only). */
static int delete_body(const struct cn_s3 *s, const char *const *keys, size_t n,
		       struct cn_buf *b)
{
	static const char head[] = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
				   "<Delete xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">"
				   "<Quiet>true</Quiet>";
	int r = cn_buf_append(b, head, sizeof(head) - 1);
	char fk[1200];
	for (size_t i = 0; r == 0 && i < n; i++) {
		if (full_key(s, keys[i], fk, sizeof(fk)) < 0)
			return cn_error_set(-ENAMETOOLONG, "S3 key too long: %s", keys[i]);
		if ((r = cn_buf_append(b, "<Object><Key>", 13)) == 0 &&
		    (r = xml_append_escaped(b, fk)) == 0)
			r = cn_buf_append(b, "</Key></Object>", 15);
	}
	if (r == 0)
		r = cn_buf_append(b, "</Delete>", 9);
	return r < 0 ? cn_error_set(-ENOMEM, "out of memory") : 0;
}

/* Reads the <Error> entries of a DeleteResult into f (the others went).
 * -EIO if the answer is no DeleteResult. */
static int parse_delete_result(const struct cn_s3 *s, const struct cn_buf *b,
			       const char *const *keys, size_t n, struct delete_failures *f)
{
	xmlDocPtr doc = xmlReadMemory((const char *)b->data, (int)b->len, NULL, NULL,
				      XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING);
	xmlNodePtr root = doc ? xmlDocGetRootElement(doc) : NULL;
	if (!root || xmlStrcmp(root->name, BAD_CAST "DeleteResult") != 0) {
		xmlFreeDoc(doc);
		return cn_error_set(-EIO, "S3 POST %s bucket %s (delete of %zu objects): the answer "
				    "is not a DeleteResult", s->endpoint, s->cfg.bucket, n);
	}
	size_t strip = s->cfg.prefix[0] ? strlen(s->cfg.prefix) + 1 : 0;
	for (xmlNodePtr e = root->children; e; e = e->next) {
		if (e->type != XML_ELEMENT_NODE || xmlStrcmp(e->name, BAD_CAST "Error") != 0)
			continue;
		xmlChar *k = NULL, *c = NULL, *m = NULL;
		const char *key = child_text(e, "Key", &k);
		const char *code = child_text(e, "Code", &c);
		const char *msg = child_text(e, "Message", &m);
		code = code ? code : "";
		if (key && strlen(key) >= strip && strcmp(code, "NoSuchKey") != 0) {
			/* failures are few: a linear search is enough */
			size_t i = 0;
			while (i < n && strcmp(keys[i], key + strip) != 0)
				i++;
			char why[600];
			snprintf(why, sizeof(why), "%s%s%s", code, msg && *msg ? ": " : "",
				 msg ? msg : "");
			int err = !strcmp(code, "AccessDenied") ? -EACCES : -EIO;
			note_failure(f, i < n ? i : SIZE_MAX, err, key + strip, why);
		}
		xmlFree(k);
		xmlFree(c);
		xmlFree(m);
	}
	xmlFreeDoc(doc);
	return 0;
}

/* One multi-object delete (POST /?delete) of at most 1000 keys. Returns 0
 * (failed keys in f), -EOPNOTSUPP when the service has no such request
 * (501 or NotImplemented), or another negative code for the request. */
static int delete_batch(struct cn_s3 *s, const char *const *keys, size_t n,
			struct delete_failures *f)
{
	struct cn_buf body = {0}, answer = {0};
	int r = delete_body(s, keys, n, &body);
	uint8_t md5[16];
	unsigned int ml = 0;
	char md5_b64[32];
	if (r == 0 && EVP_Digest(body.data, body.len, md5, &ml, EVP_md5(), NULL) != 1)
		r = cn_error_set(-EIO, "MD5 of a delete request failed");
	if (r == 0) {
		EVP_EncodeBlock((unsigned char *)md5_b64, md5, 16);
		struct req q = {.s = s, .method = M_POST, .query = "delete=", .body = body.data,
				.body_len = body.len, .content_md5 = md5_b64, .out = &answer};
		r = perform(&q);
		if (r == 0 && q.status >= 200 && q.status < 300) {
			r = parse_delete_result(s, &answer, keys, n, f);
		} else if (r == 0) {
			char code[128], msg[512];
			parse_error_body(&q.err, code, sizeof(code), msg, sizeof(msg));
			if (q.status == 501 || !strcmp(code, "NotImplemented"))
				r = -EOPNOTSUPP;
			else
				r = status_error(&q);
		}
		cn_buf_free(&q.err);
	}
	cn_buf_free(&body);
	cn_buf_free(&answer);
	return r;
}

int cn_s3_delete_keys(struct cn_s3 *s, const char *const *keys, size_t n, int *status)
{
	struct delete_failures f = {.status = status};
	if (status)
		memset(status, 0, n * sizeof(*status));
	int r = 0;
	size_t i;
	for (i = 0; i < n; i += 1000) {
		size_t k = n - i < 1000 ? n - i : 1000;
		if (__atomic_load_n(&s->single_deletes, __ATOMIC_RELAXED))
			r = -EOPNOTSUPP;
		else if ((r = delete_batch(s, keys + i, k, &f)) < 0 && r != -EOPNOTSUPP)
			break;
		if (r == 0)
			continue;
		/* the service lacks multi-object delete: one DELETE a key */
		if (!__atomic_exchange_n(&s->single_deletes, 1, __ATOMIC_RELAXED))
			cn_log_info("%s: no multi-object delete (501): one DELETE per object",
				    s->name);
		cn_error_clear();
		r = 0;
		for (size_t j = i; j < i + k; j++)
			if (cn_s3_delete(s, keys[j]) < 0)
				note_failure(&f, j, cn_error_code() ? cn_error_code() : -EIO, keys[j],
					     cn_error_message());
	}
	if (r < 0) {
		/* the request itself failed: none of its keys is known to be gone */
		for (size_t j = i; status && j < n; j++)
			status[j] = r;
		return r;
	}
	if (!f.failed)
		return 0;
	return cn_error_set(f.first, "S3 %s bucket %s: %zu of %zu deletes failed: %s%s",
			    s->endpoint, s->cfg.bucket, f.failed, n, f.msg,
			    f.failed > 3 ? ", ..." : "");
}
