/* cn_tls — TLS client connections with proxmox-backup-client's trust rule
 * (pbs-client/src/http_client.rs): a certificate chain that OpenSSL
 * verifies against the system CAs (and the host name) is accepted;
 * otherwise the leaf certificate's SHA-256 fingerprint (over its DER form)
 * must equal the pinned one. The same rule is installed into libcurl's
 * SSL_CTX for REST calls, so both paths trust exactly the same servers.
 * Also: TCP connect with timeout and retry with exponential backoff. */
#ifndef CN_TLS_H
#define CN_TLS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Trust settings plus what the last handshake saw. One per connection
 * attempt owner; the verify callback writes seen/fp_seen. */
struct cn_tls_pin {
	int have_fp;          /* fp is set: accept a leaf with this fingerprint */
	uint8_t fp[32];
	char host[260];       /* host name checked during chain validation */
	/* Results of the last verification: */
	int checked;          /* the verify callback ran */
	int chain_ok;         /* chain + host name verified with the CAs */
	int fp_mismatch;      /* pin given and the leaf did not match */
	char chain_error[128];/* OpenSSL's reason when the chain failed */
	char seen[96];        /* fingerprint of the leaf presented */
};

/* Initialises a pin: host for name checks, fingerprint text or NULL.
 * Returns 0 or -EINVAL with a message (bad fingerprint). */
int cn_tls_pin_init(struct cn_tls_pin *pin, const char *host, const char *fingerprint);

/* Installs the trust rule into an OpenSSL SSL_CTX (passed as void * so
 * that this header stays free of OpenSSL types; libcurl's
 * CURLOPT_SSL_CTX_FUNCTION hands one over). pin must outlive ctx's use.
 * Also loads the system CA paths. Returns 0 or -CN_E_TLS. */
int cn_tls_ctx_setup(void *ssl_ctx, struct cn_tls_pin *pin);

/* After a failed handshake: sets and returns an error (-CN_E_TLS) whose
 * message explains a trust failure with the fingerprint seen, e.g.
 * "certificate fingerprint mismatch for HOST: expected X, server presented
 * Y", or, without a pin, the chain error and "server fingerprint: Y (pass
 * it with --fingerprint to trust this server)". If pin shows no trust
 * failure, uses fallback (a transport-level reason). */
int cn_tls_pin_error(const struct cn_tls_pin *pin, const char *fallback);

struct cn_tls;

/* Connection parameters. */
struct cn_tls_connect_opts {
	int timeout_ms;  /* per attempt, TCP connect and TLS handshake (0 = 10000) */
	int attempts;    /* connection attempts (0 = 3); backoff 250 ms, doubling */
};

/* Resolves host, connects with timeout (retrying refused/unreachable/timed
 * out connections with backoff), performs the TLS handshake (SNI = host
 * unless it is an IP) and applies the trust rule of *pin (copied; the
 * results of verification are copied back into *pin). On success *out is
 * a blocking connection; the caller frees it with cn_tls_free(). Returns
 * 0, -CN_E_TLS (trust failure: no retry), or another negative code. */
int cn_tls_connect(const char *host, uint16_t port, struct cn_tls_pin *pin,
		   const struct cn_tls_connect_opts *opts, struct cn_tls **out);

/* Underlying socket (for poll). */
int cn_tls_fd(const struct cn_tls *t);

/* Switches the socket to non-blocking mode. Returns 0 or -errno. */
int cn_tls_set_nonblocking(struct cn_tls *t);

/* Reads up to len bytes: returns n > 0, 0 at orderly end of stream,
 * -EAGAIN when it would block, or another negative code with a message. */
ssize_t cn_tls_read(struct cn_tls *t, void *buf, size_t len);

/* Writes up to len bytes: returns n > 0, -EAGAIN when it would block, or a
 * negative code with a message. A write that returned -EAGAIN must be
 * retried with the same bytes. */
ssize_t cn_tls_write(struct cn_tls *t, const void *buf, size_t len);

/* Whether decrypted bytes are buffered inside TLS (poll would not see them). */
int cn_tls_pending(const struct cn_tls *t);

/* Shuts the transport down in both directions without a TLS close_notify
 * (used to abandon a session); the object stays valid until cn_tls_free. */
void cn_tls_shutdown(struct cn_tls *t);

/* Closes and frees. NULL is ok. */
void cn_tls_free(struct cn_tls *t);

#endif
