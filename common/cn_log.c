#include "common/cn_log.h"
#include "common/cn_util.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* Written once by cn_log_setup() before threads exist, read-only after. */
static enum cn_log_level log_max_level = CN_LOG_NOTICE;
static int log_journal_prefix;

void cn_log_setup(enum cn_log_level max_level, int journal_prefix)
{
	log_max_level = max_level;
	log_journal_prefix = journal_prefix;
}

int cn_log_enabled(enum cn_log_level level)
{
	return level <= log_max_level;
}

void cn_log(enum cn_log_level level, const char *fmt, ...)
{
	static const char *const names[] = {
		[CN_LOG_ERROR] = "error: ",
		[CN_LOG_WARNING] = "warning: ",
		[CN_LOG_NOTICE] = "",
		[CN_LOG_INFO] = "",
		[CN_LOG_DEBUG] = "debug: ",
	};
	char line[2048], msg[2048];
	int n;
	va_list ap;

	if (!cn_log_enabled(level))
		return;
	if (log_journal_prefix)
		n = snprintf(line, sizeof(line), "<%d>", (int)level);
	else
		n = snprintf(line, sizeof(line), "%s", names[level]);
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	/* paths from archives may hold terminal escapes: printed escaped */
	cn_escape(msg, strlen(msg), 0, line + n, sizeof(line) - (size_t)n - 1);
	n += (int)strlen(line + n);
	line[n++] = '\n';
	/* One write per line: lines of concurrent threads stay whole. */
	ssize_t r = write(STDERR_FILENO, line, (size_t)n);
	(void)r;
}
