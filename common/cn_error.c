#include "common/cn_error.h"
#include "common/cn_util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CN_ERROR_MSG_MAX 1024

/* Per-thread, like errno: no thread ever sees another's message. */
static _Thread_local char tl_msg[CN_ERROR_MSG_MAX];
static _Thread_local int tl_code;

static const char *const project_msgs[] = {
	[CN_E_MAGIC - CN_E_BASE] = "wrong magic number",
	[CN_E_CRC - CN_E_BASE] = "CRC32 mismatch",
	[CN_E_DIGEST - CN_E_BASE] = "digest mismatch",
	[CN_E_TRUNCATED - CN_E_BASE] = "truncated data",
	[CN_E_FORMAT - CN_E_BASE] = "invalid format",
	[CN_E_CRYPT - CN_E_BASE] = "wrong key or password, or cryptography failed",
	[CN_E_NOKEY - CN_E_BASE] = "data is encrypted but no key was given",
	[CN_E_CHECKSUM - CN_E_BASE] = "checksum mismatch",
	[CN_E_PROTOCOL - CN_E_BASE] = "protocol violation",
	[CN_E_REMOTE - CN_E_BASE] = "server reported an error",
	[CN_E_AUTH - CN_E_BASE] = "authentication failed",
	[CN_E_TLS - CN_E_BASE] = "TLS error",
	[CN_E_LOCKED - CN_E_BASE] = "locked by another process",
	[CN_E_PATH - CN_E_BASE] = "invalid or unsafe path",
	[CN_E_TAG - CN_E_BASE] = "authentication tag mismatch (data altered, or another key)",
	[CN_E_MISMATCH - CN_E_BASE] = "stored data does not match what it should be",
	[CN_E_MISSING - CN_E_BASE] = "referenced data is missing",
};

int cn_error_is_unavailable(int code)
{
	switch (code < 0 ? -code : code) {
	case ETIMEDOUT:
	case ECANCELED:
	case ECONNREFUSED:
	case ECONNRESET:
	case ECONNABORTED:
	case EHOSTUNREACH:
	case ENETUNREACH:
	case ENETDOWN:
	case ENOTCONN:
	case EPIPE:
	case CN_E_PROTOCOL:
	case CN_E_TLS:
	case CN_E_AUTH:
		return 1;
	default:
		return 0;
	}
}

int cn_error_is_corruption(int code)
{
	switch (code < 0 ? -code : code) {
	case CN_E_MAGIC:
	case CN_E_CRC:
	case CN_E_DIGEST:
	case CN_E_TRUNCATED:
	case CN_E_FORMAT:
	case CN_E_CHECKSUM:
	case CN_E_TAG:
	case CN_E_MISMATCH:
	case CN_E_MISSING:
		return 1;
	default:
		return 0;
	}
}

const char *cn_strerror(int code)
{
	if (code < 0)
		code = -code;
	if (code > CN_E_BASE && code < CN_E_MAX)
		return project_msgs[code - CN_E_BASE];
	if (code == 0)
		return "success";
	/* strerror_r (GNU) may return a static string; strerrordesc_np is
	 * thread-safe and never allocates. */
	const char *s = strerrordesc_np(code);
	return s ? s : "unknown error";
}

int cn_error_setv(int code, const char *fmt, va_list ap)
{
	/* Messages name paths from archives and servers: control bytes and
	 * invalid UTF-8 are escaped here, so that no printer of a message
	 * can be made to send terminal escapes. */
	char raw[CN_ERROR_MSG_MAX];
	tl_code = code;
	vsnprintf(raw, sizeof(raw), fmt, ap);
	cn_escape(raw, strlen(raw), 0, tl_msg, sizeof(tl_msg));
	return code;
}

int cn_error_set(int code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	cn_error_setv(code, fmt, ap);
	va_end(ap);
	return code;
}

int cn_error_sys(int code, const char *what, ...)
{
	char buf[CN_ERROR_MSG_MAX / 2];
	va_list ap;
	va_start(ap, what);
	vsnprintf(buf, sizeof(buf), what, ap);
	va_end(ap);
	return cn_error_set(code, "%s: %s", buf, cn_strerror(code));
}

int cn_error_prefix(int code, const char *fmt, ...)
{
	char ctx[CN_ERROR_MSG_MAX];
	char old[CN_ERROR_MSG_MAX];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(ctx, sizeof(ctx), fmt, ap);
	va_end(ap);
	if (tl_msg[0])
		memcpy(old, tl_msg, sizeof(old));
	else
		snprintf(old, sizeof(old), "%s", cn_strerror(code));
	/* Compose in a buffer large enough for both, then truncate. */
	char joined[2 * CN_ERROR_MSG_MAX + 2];
	snprintf(joined, sizeof(joined), "%s: %s", ctx, old);
	cn_escape(joined, strlen(joined), 0, tl_msg, sizeof(tl_msg));
	tl_code = code;
	return code;
}

const char *cn_error_message(void)
{
	return tl_msg;
}

int cn_error_code(void)
{
	return tl_code;
}

void cn_error_clear(void)
{
	tl_msg[0] = '\0';
	tl_code = 0;
}
