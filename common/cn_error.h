/* cn_error — the one error facility of cairn.
 *
 * Convention (everywhere in the library): a function returns 0 (or a
 * non-negative count) on success and a negative errno-style code on failure.
 * Codes are either -errno values (-EINVAL, -EIO, -ENOSPC, ...) or one of the
 * project codes below, all of which live above the errno range.
 *
 * Alongside the code, the failing function records a human message with its
 * context (file, snapshot, digest, ...) through cn_error_set(); callers up
 * the stack may prepend context with cn_error_prefix().  The message is kept
 * per thread (like errno), so worker threads never clobber each other.  The
 * CLI decides how to print it and which exit code to use.
 */
#ifndef CN_ERROR_H
#define CN_ERROR_H

#include <errno.h>
#include <stdarg.h>

/* Project error codes (positive numbers; functions return them negated). */
enum {
	CN_E_BASE = 4096,
	CN_E_MAGIC,      /* wrong magic number: not the expected kind of data */
	CN_E_CRC,        /* CRC32 mismatch */
	CN_E_DIGEST,     /* content does not hash to the expected digest */
	CN_E_TRUNCATED,  /* data ends before its header says it should */
	CN_E_FORMAT,     /* structurally invalid data (bad sizes, ordering, ...) */
	CN_E_CRYPT,      /* wrong key or password, or the crypto library failed */
	CN_E_NOKEY,      /* encrypted data but no key given */
	CN_E_CHECKSUM,   /* index/manifest checksum mismatch */
	CN_E_PROTOCOL,   /* peer violated the protocol */
	CN_E_REMOTE,     /* peer answered with an error */
	CN_E_AUTH,       /* authentication refused */
	CN_E_TLS,        /* TLS failure, including fingerprint mismatch */
	CN_E_LOCKED,     /* a lock is held by someone else */
	CN_E_PATH,       /* hostile or invalid path */
	CN_E_TAG,        /* stored data fails its GCM authentication tag */
	CN_E_MISMATCH,   /* stored data is not what it claims to be: another
			  * snapshot's manifest, a signature gone, a downgrade */
	CN_E_MISSING,    /* a chunk or file that stored data refers to is absent */
	CN_E_MAX
};

/* Records code and a printf-style message for the calling thread and
 * returns code (which must be negative), so that callers can write
 * `return cn_error_set(-EINVAL, "bad size %zu", n);`. */
int cn_error_set(int code, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* Like cn_error_set() with a va_list. */
int cn_error_setv(int code, const char *fmt, va_list ap);

/* Records code with the message "<what>: <strerror(code)>", for the common
 * case of a failed system call on a named object. Returns code. */
int cn_error_sys(int code, const char *what, ...)
	__attribute__((format(printf, 2, 3)));

/* Prepends "<context>: " to the calling thread's current message and
 * returns code unchanged. If no message is set, the context and
 * cn_strerror(code) form the message. */
int cn_error_prefix(int code, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* The calling thread's last message (never NULL; "" when none). The pointer
 * stays valid until the thread's next cn_error_* call. */
const char *cn_error_message(void);

/* The calling thread's last recorded code (0 when none). */
int cn_error_code(void);

/* Clears the calling thread's message and code. */
void cn_error_clear(void);

/* 1 if code (negative or positive) says that stored data is damaged or
 * inconsistent (magic, CRC, digest, truncation, format, checksum, GCM tag,
 * mismatch, missing chunk), else 0: I/O, usage, key and network errors
 * are not. The CLI maps these to its "corrupt data" exit code. */
int cn_error_is_corruption(int code);

/* 1 if code (negative or positive) says that the server or source read
 * from cannot answer now: a timeout, a refused, reset or unreachable
 * connection, a cancelled call, a protocol, TLS or login failure. Asking
 * it for the next item would fail the same way (after the same timeout),
 * so a reader that skips a damaged item and goes on stops at these. */
int cn_error_is_unavailable(int code);

/* Static description of a code (negative or positive; errno or project
 * code). Never NULL. */
const char *cn_strerror(int code);

#endif
