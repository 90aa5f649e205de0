/* cn_log — the one logging facility: levelled human lines on stderr.
 *
 * The library logs warnings (a skipped file, a retried connection) and
 * debug detail here; errors travel as return codes plus cn_error messages.
 * The level and the journal style are configured once by the CLI before any
 * thread starts (cn_log_setup); afterwards they are only read, so logging is
 * safe from any thread. Each line is written with one write(2) call so
 * lines from different threads never interleave.
 */
#ifndef CN_LOG_H
#define CN_LOG_H

enum cn_log_level {
	CN_LOG_ERROR = 3,   /* syslog priorities, for the journal prefix */
	CN_LOG_WARNING = 4,
	CN_LOG_NOTICE = 5,
	CN_LOG_INFO = 6,
	CN_LOG_DEBUG = 7,
};

/* Sets the most verbose level printed and whether lines carry syslog
 * priority prefixes ("<4>") for the systemd journal. Call before starting
 * threads. Default: CN_LOG_NOTICE, no prefixes. */
void cn_log_setup(enum cn_log_level max_level, int journal_prefix);

/* Whether a message of this level would be printed. */
int cn_log_enabled(enum cn_log_level level);

/* Prints one line at the given level (a trailing newline is added). */
void cn_log(enum cn_log_level level, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

#define cn_log_error(...)   cn_log(CN_LOG_ERROR, __VA_ARGS__)
#define cn_log_warning(...) cn_log(CN_LOG_WARNING, __VA_ARGS__)
#define cn_log_notice(...)  cn_log(CN_LOG_NOTICE, __VA_ARGS__)
#define cn_log_info(...)    cn_log(CN_LOG_INFO, __VA_ARGS__)
#define cn_log_debug(...)   cn_log(CN_LOG_DEBUG, __VA_ARGS__)

#endif
