#include "net/cn_tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "common/cn_error.h"
#include "common/cn_log.h"
#include "net/cn_pbs_repo.h"

struct cn_tls {
	int fd;
	SSL_CTX *ctx;
	SSL *ssl;
	struct cn_tls_pin pin;   /* the verify callback's argument lives here */
};

int cn_tls_pin_init(struct cn_tls_pin *pin, const char *host, const char *fingerprint)
{
	memset(pin, 0, sizeof(*pin));
	snprintf(pin->host, sizeof(pin->host), "%s", host);
	if (fingerprint && *fingerprint) {
		int r = cn_pbs_fingerprint_parse(fingerprint, pin->fp);
		if (r < 0)
			return r;
		pin->have_fp = 1;
	}
	return 0;
}

/* Writes to a socket the peer has closed raise SIGPIPE, which would kill
 * the process; the library must not depend on the caller ignoring it.
 * OpenSSL writes with write(2), so SIGPIPE is blocked in the calling
 * thread around TLS writes and a SIGPIPE they raised is consumed. */
static void sigpipe_block(sigset_t *old)
{
	sigset_t s;
	sigemptyset(&s);
	sigaddset(&s, SIGPIPE);
	pthread_sigmask(SIG_BLOCK, &s, old);
}

static void sigpipe_unblock(const sigset_t *old)
{
	sigset_t s, pending;
	sigemptyset(&s);
	sigaddset(&s, SIGPIPE);
	if (!sigismember(old, SIGPIPE) && sigpending(&pending) == 0 && sigismember(&pending, SIGPIPE)) {
		struct timespec zero = {0, 0};
		sigtimedwait(&s, NULL, &zero);
	}
	pthread_sigmask(SIG_SETMASK, old, NULL);
}

static int is_ip_literal(const char *host)
{
	unsigned char tmp[16];
	return inet_pton(AF_INET, host, tmp) == 1 || inet_pton(AF_INET6, host, tmp) == 1;
}

/* The whole certificate decision (upstream's verify callback): chain +
 * host name first; failing that, the leaf's fingerprint against the pin. */
static int verify_cb(X509_STORE_CTX *xctx, void *arg)
{
	struct cn_tls_pin *pin = arg;
	X509 *leaf = X509_STORE_CTX_get0_cert(xctx);
	uint8_t fp[32];
	unsigned int fplen = 0;

	pin->checked = 1;
	pin->chain_ok = 0;
	pin->fp_mismatch = 0;
	pin->seen[0] = '\0';
	pin->chain_error[0] = '\0';
	if (leaf && X509_digest(leaf, EVP_sha256(), fp, &fplen) == 1 && fplen == 32)
		cn_pbs_fingerprint_format(fp, pin->seen);

	if (X509_verify_cert(xctx) == 1) {
		pin->chain_ok = 1;
		return 1;
	}
	snprintf(pin->chain_error, sizeof(pin->chain_error), "%s",
		 X509_verify_cert_error_string(X509_STORE_CTX_get_error(xctx)));
	if (pin->have_fp && fplen == 32) {
		if (memcmp(fp, pin->fp, 32) == 0) {
			/* Pinned: the SSL's verify result must read OK too
			 * (libcurl checks SSL_get_verify_result). */
			X509_STORE_CTX_set_error(xctx, X509_V_OK);
			return 1;
		}
		pin->fp_mismatch = 1;
	}
	return 0;
}

int cn_tls_ctx_setup(void *ssl_ctx, struct cn_tls_pin *pin)
{
	SSL_CTX *ctx = ssl_ctx;
	X509_VERIFY_PARAM *param = SSL_CTX_get0_param(ctx);

	if (SSL_CTX_set_default_verify_paths(ctx) != 1)
		cn_log_debug("TLS: no system CA paths available");
	ERR_clear_error();
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	SSL_CTX_set_cert_verify_callback(ctx, verify_cb, pin);
	if (is_ip_literal(pin->host)) {
		if (X509_VERIFY_PARAM_set1_ip_asc(param, pin->host) != 1)
			return cn_error_set(-CN_E_TLS, "TLS: cannot set IP %s for verification", pin->host);
	} else if (X509_VERIFY_PARAM_set1_host(param, pin->host, 0) != 1) {
		return cn_error_set(-CN_E_TLS, "TLS: cannot set host %s for verification", pin->host);
	}
	return 0;
}

int cn_tls_pin_error(const struct cn_tls_pin *pin, const char *fallback)
{
	if (pin->checked && pin->fp_mismatch) {
		char want[96];
		cn_pbs_fingerprint_format(pin->fp, want);
		return cn_error_set(-CN_E_TLS,
			"certificate fingerprint mismatch for %s: expected %s, server presented %s",
			pin->host, want, pin->seen);
	}
	if (pin->checked && !pin->chain_ok && !pin->have_fp)
		return cn_error_set(-CN_E_TLS,
			"certificate verification failed for %s (%s); server certificate fingerprint: %s "
			"(pass it with --fingerprint or PBS_FINGERPRINT to trust this server)",
			pin->host, pin->chain_error, pin->seen);
	return cn_error_set(-CN_E_TLS, "TLS connection to %s failed: %s", pin->host,
			    fallback ? fallback : "handshake error");
}

static void ssl_error_text(char *buf, size_t size)
{
	unsigned long e = ERR_get_error();
	if (e)
		ERR_error_string_n(e, buf, size);
	else
		snprintf(buf, size, "%s", errno ? strerror(errno) : "connection closed");
	ERR_clear_error();
}

static int retryable(int code)
{
	return code == -ECONNREFUSED || code == -ETIMEDOUT || code == -EHOSTUNREACH ||
	       code == -ENETUNREACH || code == -EAGAIN || code == -ECONNRESET;
}

/* One TCP connect to one address, bounded by timeout_ms. */
static int connect_addr(const struct addrinfo *ai, int timeout_ms, int *fdp)
{
	int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, ai->ai_protocol);
	if (fd < 0)
		return -errno;
	if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
		if (errno != EINPROGRESS) {
			int e = -errno;
			close(fd);
			return e;
		}
		struct pollfd p = {.fd = fd, .events = POLLOUT};
		int n;
		do
			n = poll(&p, 1, timeout_ms);
		while (n < 0 && errno == EINTR);
		if (n == 0) {
			close(fd);
			return -ETIMEDOUT;
		}
		int err = 0;
		socklen_t len = sizeof(err);
		if (n < 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
			err = errno;
		if (err) {
			close(fd);
			return -err;
		}
	}
	int one = 1, idle = 120;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
	setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
	/* Blocking from here on, with timeouts for the handshake and the
	 * HTTP/1 upgrade exchange. */
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
	struct timeval tv = {.tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	*fdp = fd;
	return 0;
}

static int tcp_connect(const char *host, uint16_t port, int timeout_ms, int *fdp)
{
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_family = AF_UNSPEC};
	struct addrinfo *res = NULL;
	char portstr[8];
	snprintf(portstr, sizeof(portstr), "%u", (unsigned)port);
	int g = getaddrinfo(host, portstr, &hints, &res);
	if (g != 0) {
		int code = g == EAI_AGAIN ? -EAGAIN : -EHOSTUNREACH;
		return cn_error_set(code, "cannot resolve %s: %s", host, gai_strerror(g));
	}
	int r = -EHOSTUNREACH;
	for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
		r = connect_addr(ai, timeout_ms, fdp);
		if (r == 0)
			break;
	}
	freeaddrinfo(res);
	if (r < 0)
		return cn_error_sys(r, "connecting to %s port %u", host, (unsigned)port);
	return 0;
}

static int handshake(struct cn_tls *t, const char *host, int timeout_ms)
{
	char err[256];
	t->ctx = SSL_CTX_new(TLS_client_method());
	if (!t->ctx)
		return cn_error_set(-CN_E_TLS, "TLS: cannot create context");
	SSL_CTX_set_min_proto_version(t->ctx, TLS1_2_VERSION);
	SSL_CTX_set_options(t->ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
	SSL_CTX_set_mode(t->ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	int r = cn_tls_ctx_setup(t->ctx, &t->pin);
	if (r < 0)
		return r;
	t->ssl = SSL_new(t->ctx);
	if (!t->ssl || SSL_set_fd(t->ssl, t->fd) != 1)
		return cn_error_set(-CN_E_TLS, "TLS: cannot create connection");
	if (!is_ip_literal(host))
		SSL_set_tlsext_host_name(t->ssl, host);
	errno = 0;
	sigset_t old;
	sigpipe_block(&old);
	int ok = SSL_connect(t->ssl) == 1;
	int e = errno;
	if (!ok)
		ssl_error_text(err, sizeof(err));
	sigpipe_unblock(&old);
	/* the socket's receive timeout: connected, but the server sends
	 * nothing (stopped, or overloaded) */
	if (!ok && (e == EAGAIN || e == EWOULDBLOCK))
		return cn_error_set(-ETIMEDOUT, "TLS handshake with %s: no answer within %d s "
				    "(the server accepted the connection but does not respond)",
				    host, (timeout_ms + 999) / 1000);
	if (!ok)
		return cn_tls_pin_error(&t->pin, err);
	return 0;
}

int cn_tls_connect(const char *host, uint16_t port, struct cn_tls_pin *pin,
		   const struct cn_tls_connect_opts *opts, struct cn_tls **out)
{
	int timeout_ms = opts && opts->timeout_ms > 0 ? opts->timeout_ms : 10000;
	int attempts = opts && opts->attempts > 0 ? opts->attempts : 3;
	int delay_ms = 250;
	int r = -EINVAL;

	for (int attempt = 1; attempt <= attempts; attempt++) {
		struct cn_tls *t = calloc(1, sizeof(*t));
		if (!t)
			return cn_error_set(-ENOMEM, "out of memory");
		t->fd = -1;
		t->pin = *pin;
		int silent = 0;
		r = tcp_connect(host, port, timeout_ms, &t->fd);
		if (r == 0) {
			r = handshake(t, host, timeout_ms);
			*pin = t->pin;
			if (r == 0) {
				*out = t;
				return 0;
			}
			silent = r == -ETIMEDOUT; /* not worth waiting for again */
		}
		cn_tls_free(t);
		if (!retryable(r) || attempt == attempts || silent)
			break;
		cn_log_warning("%s (attempt %d of %d, retrying in %d ms)", cn_error_message(),
			       attempt, attempts, delay_ms);
		struct timespec ts = {.tv_sec = delay_ms / 1000, .tv_nsec = (delay_ms % 1000) * 1000000L};
		nanosleep(&ts, NULL);
		delay_ms *= 2;
	}
	return r;
}

int cn_tls_fd(const struct cn_tls *t)
{
	return t->fd;
}

int cn_tls_set_nonblocking(struct cn_tls *t)
{
	int fl = fcntl(t->fd, F_GETFL);
	if (fl < 0 || fcntl(t->fd, F_SETFL, fl | O_NONBLOCK) < 0)
		return -errno;
	return 0;
}

/* Maps an SSL_read/SSL_write failure to a return code. */
static ssize_t io_error(struct cn_tls *t, int ret, const char *op)
{
	int e = SSL_get_error(t->ssl, ret);
	char err[256];
	switch (e) {
	case SSL_ERROR_WANT_READ:
	case SSL_ERROR_WANT_WRITE:
		return -EAGAIN;
	case SSL_ERROR_ZERO_RETURN:
		return 0;
	case SSL_ERROR_SYSCALL:
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			return -EAGAIN;
		if (errno == 0)
			return 0;
		return cn_error_sys(-errno, "TLS %s to %s", op, t->pin.host);
	default:
		ssl_error_text(err, sizeof(err));
		return cn_error_set(-CN_E_TLS, "TLS %s to %s failed: %s", op, t->pin.host, err);
	}
}

ssize_t cn_tls_read(struct cn_tls *t, void *buf, size_t len)
{
	size_t n = 0;
	errno = 0;
	ERR_clear_error();
	if (SSL_read_ex(t->ssl, buf, len, &n) == 1)
		return (ssize_t)n;
	return io_error(t, 0, "read");
}

ssize_t cn_tls_write(struct cn_tls *t, const void *buf, size_t len)
{
	size_t n = 0;
	sigset_t old;
	errno = 0;
	ERR_clear_error();
	sigpipe_block(&old);
	int ok = SSL_write_ex(t->ssl, buf, len, &n) == 1;
	ssize_t r = ok ? (ssize_t)n : io_error(t, 0, "write");
	sigpipe_unblock(&old);
	if (ok)
		return r;
	if (r == 0)
		return cn_error_set(-EPIPE, "TLS write to %s: connection closed by peer", t->pin.host);
	return r;
}

int cn_tls_pending(const struct cn_tls *t)
{
	return SSL_pending(t->ssl) > 0;
}

void cn_tls_shutdown(struct cn_tls *t)
{
	if (t && t->fd >= 0)
		shutdown(t->fd, SHUT_RDWR);
}

void cn_tls_free(struct cn_tls *t)
{
	if (!t)
		return;
	SSL_free(t->ssl);
	SSL_CTX_free(t->ctx);
	if (t->fd >= 0)
		close(t->fd);
	free(t);
}
