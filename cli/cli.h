/* cli — shared pieces of the cairn command: the command table entry type,
 * exit codes and error printing. Each command lives in cli/cmd_<name>.c,
 * defines one `const struct cli_command cli_cmd_<name>` and is listed in
 * the table in cli/main.c (and in cli/meson.build). */
#ifndef CAIRN_CLI_H
#define CAIRN_CLI_H

#include <stdio.h>

/* Exit codes of the cairn command (documented in main.c's usage too). */
enum {
	CLI_EXIT_OK = 0,       /* success */
	CLI_EXIT_ERROR = 1,    /* the operation failed; message on stderr */
	CLI_EXIT_USAGE = 2,    /* bad command line */
	CLI_EXIT_PARTIAL = 3,  /* finished, but some entries failed (listed on stderr) */
	CLI_EXIT_CORRUPT = 4,  /* stored data failed verification (digest, CRC, checksum) */
	CLI_EXIT_NOSPACE = 5,  /* no space left where data was being written */
	CLI_EXIT_LOCKED = 6,   /* another backup of the same group is running */
	CLI_EXIT_BUSY = 7,     /* cairn run: another run of the same config is running */
	CLI_EXIT_CONFIG = 8,   /* the config file is missing or invalid */
};

struct cli_command {
	const char *name;
	const char *summary;   /* one line for `cairn --help` */
	/* Runs the command; argv[0] is the command name. Returns an exit code. */
	int (*run)(int argc, char **argv);
};

/* Prints "cairn: <context>: <cn_error_message()>" on stderr and returns
 * CLI_EXIT_ERROR. */
int cli_error(const char *context);

/* Prints "cairn <cmd>: <msg>" plus a hint to use --help; returns
 * CLI_EXIT_USAGE. */
int cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Prints s in double quotes, escaped by cn_escape (control bytes, C1
 * controls and invalid UTF-8 as \xNN, '"' and '\\' with a backslash),
 * like Rust's {:?} for paths, which upstream's listings use. */
void cli_print_quoted(FILE *f, const char *s);

/* Prints the version, git revision, kernels and library versions on f
 * (cairn --version and cairn version; cli/cmd_version.c). */
void cli_version_print(FILE *f);

#endif
