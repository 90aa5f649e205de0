#include "net/cn_pbs.h"

#include <curl/curl.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/cn_error.h"
#include "common/cn_log.h"
#include "common/cn_util.h"

#define REST_BODY_MAX (64u << 20)
#define TICKET_RENEW_MS (15 * 60 * 1000)  /* as proxmox-backup-client */

struct cn_pbs {
	struct cn_pbs_repo repo;
	pthread_mutex_t mu;          /* serialises REST calls on curl */
	CURL *curl;
	struct cn_tls_pin pin;       /* template; curl's verify callback writes into it */
	struct cn_tls_connect_opts copts;
	int io_timeout_ms;
	char *auth_headers;          /* "Name: value\r\n" lines; holds the secret or ticket */
	char *auth_get;              /* the same without CSRF (for GET) */
	char *ticket;                /* user login: current ticket (renewed), else NULL */
	int64_t ticket_ms;           /* when it was issued (monotonic) */
	char base_url[320];
};

const struct cn_pbs_repo *cn_pbs_repo_of(const struct cn_pbs *p)
{
	return &p->repo;
}

void cn_pbs_name(const struct cn_pbs *p, char *out, size_t out_size)
{
	/* two servers behind one address differ by port */
	if (p->repo.port != 8007)
		snprintf(out, out_size, "pbs:%.80s:%u:%s", p->repo.host, (unsigned)p->repo.port,
			 p->repo.store);
	else
		snprintf(out, out_size, "pbs:%.80s:%s", p->repo.host, p->repo.store);
}

void cn_pbs_set_io_timeout(struct cn_pbs *p, int ms)
{
	if (ms > 0)
		p->io_timeout_ms = ms;
}

int cn_pbs_encode_credential(const char *in, char *out, size_t out_size)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t n = 0;
	for (; *in; in++) {
		unsigned char c = (unsigned char)*in;
		int enc = c <= 0x20 || c >= 0x7f || strchr("\"#<>`?{}", c) != NULL;
		if (n + (enc ? 3 : 1) >= out_size)
			return -ENAMETOOLONG;
		if (enc) {
			out[n++] = '%';
			out[n++] = hex[c >> 4];
			out[n++] = hex[c & 15];
		} else {
			out[n++] = (char)c;
		}
	}
	out[n] = '\0';
	return 0;
}

static void wipe_free(char *s)
{
	if (s) {
		explicit_bzero(s, strlen(s));
		free(s);
	}
}

/* Wipes a string held inside a jansson value (a password in a request, a
 * ticket in an answer) before the value is released: jansson frees
 * without clearing. */
static void wipe_json_string(json_t *s)
{
	if (json_is_string(s))
		explicit_bzero((char *)json_string_value(s), json_string_length(s));
}

/* Frees a curl header list after wiping it: its lines carry the API
 * token secret or the ticket cookie. */
static void free_headers(struct curl_slist *h)
{
	for (struct curl_slist *l = h; l; l = l->next)
		explicit_bzero(l->data, strlen(l->data));
	curl_slist_free_all(h);
}

static CURLcode ctx_fn(CURL *c, void *sslctx, void *parm)
{
	(void)c;
	return cn_tls_ctx_setup(sslctx, parm) == 0 ? CURLE_OK : CURLE_SSL_CERTPROBLEM;
}

static size_t body_cb(char *ptr, size_t size, size_t nmemb, void *ud)
{
	struct cn_buf *b = ud;
	size_t n = size * nmemb;
	if (b->len + n > REST_BODY_MAX || cn_buf_append(b, ptr, n) < 0)
		return 0;
	return n;
}

static int retryable_curl(CURLcode c)
{
	/* Only failures before anything was sent: retrying them never
	 * repeats a non-idempotent call (prune, forget). */
	return c == CURLE_COULDNT_CONNECT || c == CURLE_COULDNT_RESOLVE_HOST;
}

static void renew_ticket(struct cn_pbs *p);

/* One REST call. method GET/DELETE take the query in path; POST sends
 * body_json. with_auth=0 for the login itself. */
static int rest(struct cn_pbs *p, const char *method, const char *path, const char *body_json,
		int with_auth, json_t **data)
{
	char url[4608], errbuf[CURL_ERROR_SIZE];
	struct cn_buf body = {0};
	struct curl_slist *hdrs = NULL;
	long status = 0;
	int r;

	if (snprintf(url, sizeof(url), "%s/%s", p->base_url, path) >= (int)sizeof(url))
		return cn_error_set(-ENAMETOOLONG, "request URL too long");
	if (with_auth)
		renew_ticket(p);
	pthread_mutex_lock(&p->mu);
	CURL *c = p->curl;
	curl_easy_reset(c);
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
	curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "https");
	curl_easy_setopt(c, CURLOPT_HTTP_VERSION, CURL_HTTP_VERSION_1_1);
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, (long)p->copts.timeout_ms);
	/* a call fails when no byte moves for the timeout, not after a
	 * total time: a long listing that flows is fine */
	curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L);
	curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, (long)(p->io_timeout_ms + 999) / 1000);
	curl_easy_setopt(c, CURLOPT_TCP_NODELAY, 1L);
	curl_easy_setopt(c, CURLOPT_USERAGENT, "cairn/0.1 (proxmox-backup-client compatible)");
	curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 1L);
	curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, p->pin.have_fp ? 0L : 2L);
	curl_easy_setopt(c, CURLOPT_SSL_CTX_FUNCTION, ctx_fn);
	curl_easy_setopt(c, CURLOPT_SSL_CTX_DATA, &p->pin);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, body_cb);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &body);
	if (body_json) {
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, body_json);
		hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
	}
	if (with_auth) {
		/* The auth lines are "Name: value\r\n"; curl wants them one by one. */
		const char *src = strcmp(method, "GET") == 0 ? p->auth_get : p->auth_headers;
		char *copy = strdup(src), *save = NULL;
		for (char *line = copy ? strtok_r(copy, "\r\n", &save) : NULL; line;
		     line = strtok_r(NULL, "\r\n", &save))
			hdrs = curl_slist_append(hdrs, line);
		wipe_free(copy);
	}
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);

	CURLcode cc = CURLE_OK;
	int delay_ms = 250;
	int attempts = p->copts.attempts;
	for (int a = 1; a <= attempts; a++) {
		errbuf[0] = '\0';
		body.len = 0;
		p->pin.checked = 0;
		cc = curl_easy_perform(c);
		if (cc == CURLE_OK || !retryable_curl(cc) || a == attempts)
			break;
		cn_log_warning("%s %s: %s (attempt %d of %d, retrying in %d ms)", method, p->repo.host,
			       errbuf[0] ? errbuf : curl_easy_strerror(cc), a, attempts, delay_ms);
		struct timespec ts = {.tv_sec = delay_ms / 1000, .tv_nsec = (delay_ms % 1000) * 1000000L};
		nanosleep(&ts, NULL);
		delay_ms *= 2;
	}
	if (cc == CURLE_OK)
		curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
	struct cn_tls_pin pin = p->pin;
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, NULL);
	pthread_mutex_unlock(&p->mu);
	free_headers(hdrs);

	if (cc != CURLE_OK) {
		const char *why = errbuf[0] ? errbuf : curl_easy_strerror(cc);
		if (cc == CURLE_PEER_FAILED_VERIFICATION || cc == CURLE_SSL_CONNECT_ERROR ||
		    (pin.checked && (pin.fp_mismatch || (!pin.chain_ok && !pin.have_fp))))
			r = cn_tls_pin_error(&pin, why);
		else
			r = cn_error_set(cc == CURLE_OPERATION_TIMEDOUT ? -ETIMEDOUT : -EIO, "%s:%u: %s",
					 p->repo.host, (unsigned)p->repo.port, why);
	} else {
		r = cn_pbs_reply_data((int)status, body.data, body.len, data);
	}
	if (!with_auth && body.data) /* the login answer: it holds the ticket */
		explicit_bzero(body.data, body.cap);
	cn_buf_free(&body);
	if (r < 0) {
		char name[64];
		snprintf(name, sizeof(name), "%.*s", (int)strcspn(path, "?"), path);
		return cn_error_prefix(r, "%s %s", method, name);
	}
	return 0;
}

/* Appends "&key=value" (value percent-encoded) to q. */
static int qadd(char *q, size_t size, const char *key, const char *value)
{
	char enc[1024];
	size_t len = strlen(q);
	if (cn_h2_urlencode(value, enc, sizeof(enc)) < 0)
		return -ENAMETOOLONG;
	int n = snprintf(q + len, size - len, "%s%s=%s", len ? "&" : "", key, enc);
	if (n < 0 || (size_t)n >= size - len)
		return -ENAMETOOLONG;
	return 0;
}

static int qadd_int(char *q, size_t size, const char *key, int64_t v)
{
	char num[24];
	snprintf(num, sizeof(num), "%lld", (long long)v);
	return qadd(q, size, key, num);
}

int cn_pbs_snapshot_query(const struct cn_pbs *p, const struct cn_snapshot_id *id, char *out,
			  size_t out_size)
{
	out[0] = '\0';
	if (qadd(out, out_size, "store", p->repo.store) < 0 ||
	    qadd(out, out_size, "backup-type", id->type) < 0 ||
	    qadd(out, out_size, "backup-id", id->id) < 0 ||
	    qadd_int(out, out_size, "backup-time", id->time) < 0 ||
	    (id->ns[0] && qadd(out, out_size, "ns", id->ns) < 0))
		return -ENAMETOOLONG;
	return 0;
}

static int64_t now_ms(void)
{
	return cn_monotonic_ns() / 1000000;
}

/* Installs new credentials (taking ownership) and wipes the old ones.
 * Under the lock: REST calls on other threads copy them from there. */
static void set_auth(struct cn_pbs *p, char *get, char *all, char *ticket)
{
	pthread_mutex_lock(&p->mu);
	char *og = p->auth_get, *oa = p->auth_headers, *ot = p->ticket;
	p->auth_get = get;
	p->auth_headers = all;
	p->ticket = ticket;
	p->ticket_ms = now_ms();
	pthread_mutex_unlock(&p->mu);
	wipe_free(og);
	wipe_free(oa);
	wipe_free(ot);
}

static int login(struct cn_pbs *p, const char *password)
{
	json_t *req = json_pack("{s:s, s:s}", "username", p->repo.user, "password", password);
	char *body = req ? json_dumps(req, JSON_COMPACT) : NULL;
	json_t *data = NULL;
	int r;
	wipe_json_string(json_object_get(req, "password"));
	json_decref(req);
	if (!body)
		return cn_error_set(-ENOMEM, "out of memory");
	r = rest(p, "POST", "access/ticket", body, 0, &data);
	wipe_free(body);
	if (r < 0)
		return cn_error_prefix(r, "login as %s", p->repo.user);
	json_t *tv = json_object_get(data, "ticket");
	const char *ticket = json_string_value(tv);
	const char *csrf = json_string_value(json_object_get(data, "CSRFPreventionToken"));
	if (!ticket || !csrf || strpbrk(csrf, "\r\n")) {
		wipe_json_string(tv);
		json_decref(data);
		return cn_error_set(-CN_E_PROTOCOL, "login as %s: answer lacks ticket or CSRF token", p->repo.user);
	}
	size_t cap = strlen(ticket) * 3 + strlen(csrf) + 128;
	char *enc = malloc(cap), *get = malloc(cap), *all = malloc(cap), *tcopy = strdup(ticket);
	if (!enc || !get || !all || !tcopy || cn_pbs_encode_credential(ticket, enc, cap) < 0) {
		wipe_json_string(tv);
		json_decref(data);
		wipe_free(enc);
		free(get);
		free(all);
		wipe_free(tcopy);
		return cn_error_set(-ENOMEM, "out of memory");
	}
	snprintf(get, cap, "Cookie: PBSAuthCookie=%s\r\n", enc);
	snprintf(all, cap, "Cookie: PBSAuthCookie=%s\r\nCSRFPreventionToken: %s\r\n", enc, csrf);
	wipe_json_string(tv);
	json_decref(data);
	wipe_free(enc);
	set_auth(p, get, all, tcopy);
	return 0;
}

int cn_pbs_renew_ticket(struct cn_pbs *p, int force)
{
	char *old = NULL;
	int r = 0;
	pthread_mutex_lock(&p->mu);
	if (p->ticket && (force || now_ms() - p->ticket_ms > TICKET_RENEW_MS))
		old = strdup(p->ticket);
	pthread_mutex_unlock(&p->mu);
	if (old)
		r = login(p, old);
	wipe_free(old);
	return r;
}

/* Renewal before a call; a failure is only a warning since the old
 * ticket stays valid for two hours. */
static void renew_ticket(struct cn_pbs *p)
{
	if (cn_pbs_renew_ticket(p, 0) < 0)
		cn_log_warning("renewing the login ticket for %s: %s", p->repo.user, cn_error_message());
}

static int token_auth(struct cn_pbs *p, const char *secret)
{
	size_t cap = strlen(secret) * 3 + strlen(p->repo.auth_id) + 64;
	char *enc = malloc(cap), *all = malloc(cap), *get = malloc(cap);
	if (!enc || !all || !get || cn_pbs_encode_credential(secret, enc, cap) < 0) {
		wipe_free(enc);
		free(all);
		free(get);
		return cn_error_set(-ENOMEM, "out of memory");
	}
	snprintf(all, cap, "Authorization: PBSAPIToken %s:%s\r\n", p->repo.auth_id, enc);
	snprintf(get, cap, "%s", all);
	wipe_free(enc);
	set_auth(p, get, all, NULL);
	return 0;
}

int cn_pbs_connect(const struct cn_pbs_opts *opts, struct cn_pbs **out)
{
	struct cn_pbs *p = calloc(1, sizeof(*p));
	char *secret = NULL;
	int r;

	if (!p)
		return cn_error_set(-ENOMEM, "out of memory");
	pthread_mutex_init(&p->mu, NULL);
	if (opts->presented_fp)
		opts->presented_fp[0] = '\0';
	p->copts.timeout_ms = opts->connect_timeout_ms > 0 ? opts->connect_timeout_ms : 10000;
	p->copts.attempts = opts->connect_attempts > 0 ? opts->connect_attempts : 3;
	p->io_timeout_ms = opts->io_timeout_ms > 0 ? opts->io_timeout_ms : 120000;

	if ((r = cn_pbs_repo_from_env(opts->repository, &p->repo)) < 0)
		goto fail;
	const char *fp = opts->fingerprint ? opts->fingerprint : getenv("PBS_FINGERPRINT");
	if ((r = cn_tls_pin_init(&p->pin, p->repo.connect_host, fp)) < 0)
		goto fail;
	snprintf(p->base_url, sizeof(p->base_url), "https://%s:%u/api2/json", p->repo.host,
		 (unsigned)p->repo.port);

	if (opts->secret) {
		secret = strdup(opts->secret);
		if (!secret) {
			r = cn_error_set(-ENOMEM, "out of memory");
			goto fail;
		}
	} else if ((r = cn_pbs_secret_from_env(&secret)) < 0) {
		if (r == -ENOENT)
			cn_error_set(r, "no %s for %s: set PBS_PASSWORD or PBS_PASSWORD_FILE",
				     p->repo.is_token ? "API token secret" : "password", p->repo.auth_id);
		goto fail;
	}

	p->curl = curl_easy_init();
	if (!p->curl) {
		r = cn_error_set(-ENOMEM, "cannot initialise libcurl");
		goto fail;
	}
	r = p->repo.is_token ? token_auth(p, secret) : login(p, secret);
	cn_pbs_secret_free(secret);
	secret = NULL;
	if (r < 0)
		goto fail;
	char version[64];
	if ((r = cn_pbs_version(p, version, sizeof(version))) < 0)
		goto fail;
	cn_log_debug("connected to %s:%u (server version %s)", p->repo.host, (unsigned)p->repo.port, version);
	*out = p;
	return 0;
fail:
	cn_pbs_secret_free(secret);
	/* a trust failure (not a transport one): the verify callback saw a
	 * leaf that neither the CAs nor the pin accept */
	if (r == -CN_E_TLS && opts->presented_fp && p->pin.checked && !p->pin.chain_ok &&
	    (p->pin.fp_mismatch || !p->pin.have_fp) && p->pin.seen[0])
		snprintf(opts->presented_fp, 96, "%s", p->pin.seen);
	cn_error_prefix(r, "repository %s:%s", p->repo.host[0] ? p->repo.host : "?", p->repo.store);
	cn_pbs_free(p);
	return r;
}

void cn_pbs_free(struct cn_pbs *p)
{
	if (!p)
		return;
	if (p->curl)
		curl_easy_cleanup(p->curl);
	wipe_free(p->auth_headers);
	wipe_free(p->auth_get);
	wipe_free(p->ticket);
	pthread_mutex_destroy(&p->mu);
	free(p);
}

int cn_pbs_server_version(struct cn_pbs *p, struct cn_pbs_server_version *out)
{
	json_t *data = NULL;
	memset(out, 0, sizeof(*out));
	int r = rest(p, "GET", "version", NULL, 1, &data);
	if (r < 0)
		return r;
	const char *v = json_string_value(json_object_get(data, "version"));
	const char *rel = json_string_value(json_object_get(data, "release"));
	const char *repoid = json_string_value(json_object_get(data, "repoid"));
	if (!v) {
		json_decref(data);
		return cn_error_set(-CN_E_PROTOCOL, "GET version: answer lacks \"version\"");
	}
	snprintf(out->version, sizeof(out->version), "%s", v);
	snprintf(out->release, sizeof(out->release), "%s", rel ? rel : "");
	snprintf(out->repoid, sizeof(out->repoid), "%s", repoid ? repoid : "");
	json_decref(data);
	return 0;
}

int cn_pbs_version(struct cn_pbs *p, char *out, size_t out_size)
{
	struct cn_pbs_server_version v;
	int r = cn_pbs_server_version(p, &v);
	if (r == 0)
		snprintf(out, out_size, "%s%s%s", v.version, v.release[0] ? "-" : "", v.release);
	return r;
}

static int store_path(struct cn_pbs *p, const char *what, const char *query, char *out, size_t size)
{
	int n = snprintf(out, size, "admin/datastore/%s/%s%s%s", p->repo.store, what,
			 query && *query ? "?" : "", query ? query : "");
	return n < 0 || (size_t)n >= size ? cn_error_set(-ENAMETOOLONG, "request too long") : 0;
}

int cn_pbs_status(struct cn_pbs *p, struct cn_pbs_status *st)
{
	char path[512];
	json_t *data = NULL;
	int r = store_path(p, "status", NULL, path, sizeof(path));
	if (r < 0 || (r = rest(p, "GET", path, NULL, 1, &data)) < 0)
		return r;
	json_t *t = json_object_get(data, "total"), *u = json_object_get(data, "used"),
	       *a = json_object_get(data, "avail");
	if (!json_is_integer(t) || !json_is_integer(u) || !json_is_integer(a)) {
		json_decref(data);
		return cn_error_set(-CN_E_PROTOCOL, "GET status: malformed answer");
	}
	st->total = (uint64_t)json_integer_value(t);
	st->used = (uint64_t)json_integer_value(u);
	st->avail = (uint64_t)json_integer_value(a);
	json_decref(data);
	return 0;
}

int cn_pbs_list_groups(struct cn_pbs *p, const char *ns, struct cn_pbs_group **out, size_t *n)
{
	char q[1200] = "", path[1600];
	json_t *data = NULL;
	int r;
	if (ns && *ns && qadd(q, sizeof(q), "ns", ns) < 0)
		return cn_error_set(-ENAMETOOLONG, "namespace too long");
	if ((r = store_path(p, "groups", q, path, sizeof(path))) < 0 ||
	    (r = rest(p, "GET", path, NULL, 1, &data)) < 0)
		return r;
	r = cn_pbs_parse_groups(data, out, n);
	json_decref(data);
	return r;
}

int cn_pbs_list_snapshots(struct cn_pbs *p, const struct cn_snapshot_id *group,
			  struct cn_snapshot_info **out, size_t *n)
{
	char q[1600] = "", path[2000];
	json_t *data = NULL;
	const char *ns = group ? group->ns : "";
	int r;
	if ((ns[0] && qadd(q, sizeof(q), "ns", ns) < 0) ||
	    (group && group->id[0] &&
	     (qadd(q, sizeof(q), "backup-type", group->type) < 0 || qadd(q, sizeof(q), "backup-id", group->id) < 0)))
		return cn_error_set(-ENAMETOOLONG, "query too long");
	if ((r = store_path(p, "snapshots", q, path, sizeof(path))) < 0 ||
	    (r = rest(p, "GET", path, NULL, 1, &data)) < 0)
		return r;
	r = cn_pbs_parse_snapshots(data, ns, out, n);
	json_decref(data);
	return r;
}

int cn_pbs_prune(struct cn_pbs *p, const struct cn_snapshot_id *group, const struct cn_pbs_keep *keep,
		 int dry_run, struct cn_pbs_prune_item **out, size_t *n)
{
	char path[512];
	json_t *req = json_pack("{s:s, s:s, s:b}", "backup-type", group->type, "backup-id", group->id,
				"dry-run", dry_run);
	const struct {
		const char *name;
		int v;
	} ks[] = {
		{"keep-last", keep->last}, {"keep-hourly", keep->hourly}, {"keep-daily", keep->daily},
		{"keep-weekly", keep->weekly}, {"keep-monthly", keep->monthly}, {"keep-yearly", keep->yearly},
	};
	if (!req)
		return cn_error_set(-ENOMEM, "out of memory");
	for (size_t i = 0; i < CN_ARRAY_SIZE(ks); i++)
		if (ks[i].v > 0)
			json_object_set_new(req, ks[i].name, json_integer(ks[i].v));
	if (group->ns[0])
		json_object_set_new(req, "ns", json_string(group->ns));
	char *body = json_dumps(req, JSON_COMPACT);
	json_decref(req);
	json_t *data = NULL;
	int r = store_path(p, "prune", NULL, path, sizeof(path));
	if (!body)
		r = cn_error_set(-ENOMEM, "out of memory");
	if (r == 0)
		r = rest(p, "POST", path, body, 1, &data);
	free(body);
	if (r < 0)
		return r;
	r = cn_pbs_parse_prune(data, group->ns, out, n);
	json_decref(data);
	return r;
}

int cn_pbs_forget(struct cn_pbs *p, const struct cn_snapshot_id *id)
{
	char q[1600] = "", path[2000];
	if (qadd(q, sizeof(q), "backup-type", id->type) < 0 || qadd(q, sizeof(q), "backup-id", id->id) < 0 ||
	    qadd_int(q, sizeof(q), "backup-time", id->time) < 0 ||
	    (id->ns[0] && qadd(q, sizeof(q), "ns", id->ns) < 0))
		return cn_error_set(-ENAMETOOLONG, "query too long");
	int r = store_path(p, "snapshots", q, path, sizeof(path));
	if (r == 0)
		r = cn_pbs_enoent(rest(p, "DELETE", path, NULL, 1, NULL));
	return r;
}

/* The snapshot's parameters as a JSON object (for PUT bodies). */
static json_t *snapshot_params(const struct cn_snapshot_id *id)
{
	json_t *o = json_pack("{s:s, s:s, s:I}", "backup-type", id->type, "backup-id", id->id,
			      "backup-time", (json_int_t)id->time);
	if (o && id->ns[0])
		json_object_set_new(o, "ns", json_string(id->ns));
	return o;
}

/* GET admin/datastore/{store}/{what}?<snapshot> into *data. */
static int snapshot_get(struct cn_pbs *p, const char *what, const struct cn_snapshot_id *id,
			json_t **data)
{
	char q[1600] = "", path[2000];
	if (qadd(q, sizeof(q), "backup-type", id->type) < 0 || qadd(q, sizeof(q), "backup-id", id->id) < 0 ||
	    qadd_int(q, sizeof(q), "backup-time", id->time) < 0 ||
	    (id->ns[0] && qadd(q, sizeof(q), "ns", id->ns) < 0))
		return cn_error_set(-ENAMETOOLONG, "query too long");
	int r = store_path(p, what, q, path, sizeof(path));
	if (r == 0)
		r = cn_pbs_enoent(rest(p, "GET", path, NULL, 1, data));
	return r;
}

/* PUT admin/datastore/{store}/{what} with the snapshot and key = value. */
static int snapshot_put(struct cn_pbs *p, const char *what, const struct cn_snapshot_id *id,
			const char *key, json_t *value)
{
	char path[512];
	json_t *req = snapshot_params(id);
	if (!req || !value || json_object_set_new(req, key, value) < 0) {
		json_decref(req);
		return cn_error_set(-ENOMEM, "out of memory");
	}
	char *body = json_dumps(req, JSON_COMPACT);
	json_decref(req);
	int r = store_path(p, what, NULL, path, sizeof(path));
	if (!body)
		r = cn_error_set(-ENOMEM, "out of memory");
	if (r == 0)
		r = cn_pbs_enoent(rest(p, "PUT", path, body, 1, NULL));
	free(body);
	return r;
}

int cn_pbs_get_protected(struct cn_pbs *p, const struct cn_snapshot_id *id)
{
	json_t *data = NULL;
	int r = snapshot_get(p, "protected", id, &data);
	if (r == 0 && !json_is_boolean(data))
		r = cn_error_set(-CN_E_PROTOCOL, "protected: the server's answer is not a boolean");
	if (r == 0)
		r = json_is_true(data);
	json_decref(data);
	return r;
}

int cn_pbs_set_protected(struct cn_pbs *p, const struct cn_snapshot_id *id, int on)
{
	return snapshot_put(p, "protected", id, "protected", json_boolean(on));
}

int cn_pbs_get_notes(struct cn_pbs *p, const struct cn_snapshot_id *id, char **out)
{
	json_t *data = NULL;
	*out = NULL;
	int r = snapshot_get(p, "notes", id, &data);
	if (r == 0 && !json_is_string(data))
		r = cn_error_set(-CN_E_PROTOCOL, "notes: the server's answer is not a string");
	if (r == 0 && !(*out = strdup(json_string_value(data))))
		r = cn_error_set(-ENOMEM, "out of memory");
	json_decref(data);
	return r;
}

int cn_pbs_set_notes(struct cn_pbs *p, const struct cn_snapshot_id *id, const char *notes)
{
	return snapshot_put(p, "notes", id, "notes", json_string(notes));
}

/* Writes all of buf on the (blocking) TLS connection. */
static int write_all(struct cn_tls *t, const char *buf, size_t len)
{
	while (len > 0) {
		ssize_t w = cn_tls_write(t, buf, len);
		if (w == -EAGAIN)
			return cn_error_set(-ETIMEDOUT, "timeout sending the upgrade request");
		if (w < 0)
			return (int)w;
		buf += w;
		len -= (size_t)w;
	}
	return 0;
}

int cn_pbs_open_session(struct cn_pbs *p, const char *protocol, const char *path,
			const char *query, struct cn_h2 **out)
{
	struct cn_tls_pin pin;
	struct cn_tls *tls = NULL;
	struct cn_pbs_http_head head;
	uint8_t *buf = NULL;
	size_t len = 0, cap = 32768;
	char *req = NULL;
	int r, hl = 0;

	/* curl's verify callback writes p->pin under the lock (REST calls on
	 * other threads): copy it there too. */
	pthread_mutex_lock(&p->mu);
	pin = p->pin;
	pthread_mutex_unlock(&p->mu);
	r = cn_tls_connect(p->repo.connect_host, p->repo.port, &pin, &p->copts, &tls);
	if (r < 0)
		return r;
	renew_ticket(p);
	pthread_mutex_lock(&p->mu);
	char *auth = strdup(p->auth_get);
	pthread_mutex_unlock(&p->mu);
	size_t reqcap = strlen(query) + (auth ? strlen(auth) : 0) + 1024;
	req = malloc(reqcap);
	buf = malloc(cap);
	if (!req || !buf || !auth) {
		wipe_free(auth);
		r = cn_error_set(-ENOMEM, "out of memory");
		goto fail;
	}
	int n = snprintf(req, reqcap,
			 "GET /api2/json/%s?%s HTTP/1.1\r\nHost: %s:%u\r\nConnection: upgrade\r\n"
			 "Upgrade: %s\r\nUser-Agent: cairn/0.1\r\n"
			 "Content-Type: application/x-www-form-urlencoded\r\n%s\r\n",
			 path, query, p->repo.host, (unsigned)p->repo.port, protocol, auth);
	wipe_free(auth);
	r = write_all(tls, req, (size_t)n);
	explicit_bzero(req, reqcap);
	if (r < 0)
		goto fail;
	for (;;) {
		ssize_t got = cn_tls_read(tls, buf + len, cap - len);
		if (got == -EAGAIN) {
			r = cn_error_set(-ETIMEDOUT, "no answer to the protocol upgrade for %d s",
					 (p->copts.timeout_ms + 999) / 1000);
			goto fail;
		}
		if (got < 0) {
			r = (int)got;
			goto fail;
		}
		if (got == 0 && hl == 0) {
			if (len > 0)
				r = cn_error_set(-CN_E_PROTOCOL, "malformed HTTP response from server "
						 "(connection closed inside the response head)");
			else
				r = cn_error_set(-EPIPE, "server closed the connection during the protocol upgrade");
			goto fail;
		}
		len += (size_t)got;
		if (hl == 0) {
			hl = cn_pbs_http_parse_head(buf, len, &head);
			if (hl < 0) {
				r = hl;
				goto fail;
			}
			if (hl == 0)
				continue;
			if (head.status == 101)
				break;
		}
		/* An error answer: collect its body (the message). */
		size_t want = head.content_length >= 0 ? (size_t)head.content_length : 4096;
		if (want > 4096)
			want = 4096;
		if (got == 0 || len - (size_t)hl >= want)
			break;
	}
	if (head.status != 101) {
		r = cn_pbs_reply_check(head.status == 200 ? 500 : head.status, buf + hl, len - (size_t)hl);
		if (head.status == 200)
			r = cn_error_set(-CN_E_PROTOCOL, "server did not switch to %s", protocol);
		goto fail;
	}
	if (!head.connection_upgrade || strcmp(head.upgrade, protocol) != 0) {
		r = cn_error_set(-CN_E_PROTOCOL, "server answered the upgrade with protocol '%s'", head.upgrade);
		goto fail;
	}
	char authority[300];
	snprintf(authority, sizeof(authority), "%s:%u", p->repo.host, (unsigned)p->repo.port);
	struct cn_h2_opts ho = {.io_timeout_ms = p->io_timeout_ms};
	r = cn_h2_start(tls, buf + hl, len - (size_t)hl, authority, &ho, out);
	tls = NULL;
	free(buf);
	free(req);
	if (r < 0)
		return cn_error_prefix(r, "%s session", path);
	return 0;
fail:
	free(buf);
	free(req);
	cn_tls_free(tls);
	return cn_error_prefix(r, "%s session on %s:%u", path, p->repo.host, (unsigned)p->repo.port);
}
