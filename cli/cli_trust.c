#include "cli/cli_trust.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli_common.h"
#include "common/cn_error.h"
#include "common/cn_log.h"
#include "common/cn_util.h"
#include "net/cn_pbs.h"

#define TRUST_FILE_MAX (1u << 20)

void cli_trust_file(char *out, size_t len)
{
	cli_config_file("fingerprints", out, len);
}

/* Splits one line of the file into its key and its fingerprint
 * (normalised to lower case with ':'). Returns 1 for a well-formed line. */
static int parse_line(const char *line, size_t len, char *key, size_t key_size, char fp[96])
{
	char buf[512];
	if (len >= sizeof(buf))
		return 0;
	memcpy(buf, line, len);
	buf[len] = '\0';
	char *save = NULL;
	char *k = strtok_r(buf, " \t\r", &save);
	char *f = k ? strtok_r(NULL, " \t\r", &save) : NULL;
	uint8_t raw[32];
	if (!f || strtok_r(NULL, " \t\r", &save) || strlen(k) >= key_size)
		return 0;
	cn_error_clear();
	if (cn_pbs_fingerprint_parse(f, raw) < 0) {
		cn_error_clear();
		return 0;
	}
	snprintf(key, key_size, "%s", k);
	cn_pbs_fingerprint_format(raw, fp);
	return 1;
}

int cli_trust_lookup(const char *hostport, char fp[96])
{
	char path[4096], key[300], found[96];
	uint8_t *data = NULL;
	size_t len = 0;
	cli_trust_file(path, sizeof(path));
	if (cn_read_file(path, TRUST_FILE_MAX, &data, &len) < 0) {
		cn_error_clear();
		return 0;
	}
	int hit = 0;
	for (size_t pos = 0; pos < len && !hit;) {
		const char *line = (const char *)data + pos;
		const char *nl = memchr(line, '\n', len - pos);
		size_t n = nl ? (size_t)(nl - line) : len - pos;
		if (parse_line(line, n, key, sizeof(key), found) && !strcmp(key, hostport)) {
			memcpy(fp, found, 96);
			hit = 1;
		}
		pos += n + 1;
	}
	free(data);
	return hit;
}

int cli_trust_remember(const char *hostport, const char *fp)
{
	char path[4096], key[300], old[96];
	uint8_t *data = NULL;
	size_t len = 0;
	struct cn_buf out = {0};
	cli_trust_file(path, sizeof(path));
	int r = cn_read_file(path, TRUST_FILE_MAX, &data, &len);
	if (r < 0 && r != -ENOENT)
		return r;
	cn_error_clear();
	r = 0;
	/* every other well-formed line stays as it was */
	for (size_t pos = 0; pos < len && r == 0;) {
		const char *line = (const char *)data + pos;
		const char *nl = memchr(line, '\n', len - pos);
		size_t n = nl ? (size_t)(nl - line) : len - pos;
		if (parse_line(line, n, key, sizeof(key), old) && strcmp(key, hostport))
			r = cn_buf_append(&out, line, n) < 0 || cn_buf_append(&out, "\n", 1) < 0 ? -ENOMEM : 0;
		pos += n + 1;
	}
	free(data);
	char entry[512];
	int n = snprintf(entry, sizeof(entry), "%s %s\n", hostport, fp);
	if (r == 0 && (n < 0 || (size_t)n >= sizeof(entry)))
		r = cn_error_set(-ENAMETOOLONG, "host name too long: %s", hostport);
	if (r == 0 && cn_buf_append(&out, entry, (size_t)n) < 0)
		r = -ENOMEM;
	if (r == -ENOMEM)
		cn_error_set(r, "out of memory");
	char dir[4096];
	snprintf(dir, sizeof(dir), "%s", path);
	char *slash = strrchr(dir, '/');
	if (slash && slash != dir)
		*slash = '\0';
	if (r == 0 && slash && slash != dir)
		r = cn_mkdir_p(dir, 0700);
	if (r == 0)
		r = cn_write_file_atomic(path, out.data, out.len, 0600, 1);
	cn_buf_free(&out);
	return r < 0 ? cn_error_prefix(r, "remembering the fingerprint in %s", path) : 0;
}

/* Shows an untrusted certificate and asks whether to trust it, as
 * proxmox-backup-client does. 1: accepted; 0: refused or no answer. */
static int ask(const char *cmd, const char *hostport, const char *fp, const char *remembered)
{
	char path[4096];
	cli_trust_file(path, sizeof(path));
	if (remembered[0])
		fprintf(stderr, "cairn %s: WARNING: the certificate of %s does not match the "
				"fingerprint remembered in %s (%s)\n", cmd, hostport, path, remembered);
	else
		fprintf(stderr, "cairn %s: the certificate of %s is not signed by a trusted "
				"authority\n", cmd, hostport);
	fprintf(stderr, "fingerprint: %s\n", fp);
	for (int tries = 0; tries < 5; tries++) {
		char line[64];
		fprintf(stderr, "Are you sure you want to continue connecting? (y/n): ");
		fflush(stderr);
		if (!fgets(line, sizeof(line), stdin))
			return 0;
		line[strcspn(line, "\r\n")] = '\0';
		if (!strcmp(line, "y") || !strcmp(line, "Y") || !strcmp(line, "yes"))
			return 1;
		if (!strcmp(line, "n") || !strcmp(line, "N") || !strcmp(line, "no"))
			return 0;
	}
	return 0;
}

int cli_trust_connect(const char *cmd, const char *repo, const char *pin, int env_pin,
		      struct cn_pbs **out)
{
	struct cn_pbs_repo rp;
	int r = cn_pbs_repo_from_env(repo, &rp);
	if (r < 0)
		return r;
	char hostport[300];
	snprintf(hostport, sizeof(hostport), "%s:%u", rp.host, (unsigned)rp.port);
	const char *env = getenv("PBS_FINGERPRINT");
	if ((!pin || !*pin) && env_pin && env && *env)
		pin = env;
	int pinned = pin && *pin;
	char remembered[96] = "", seen[96] = "";
	if (!pinned)
		cli_trust_lookup(hostport, remembered);
	struct cn_pbs_opts po = {.repository = repo, .fingerprint = pinned ? pin : remembered,
				 .presented_fp = seen};
	r = cn_pbs_connect(&po, out);
	/* a pin the user gave is final; only what cairn chose may be asked */
	if (r != -CN_E_TLS || !seen[0] || pinned)
		return r;
	if (!isatty(STDIN_FILENO) || !isatty(STDERR_FILENO)) {
		char path[4096];
		cli_trust_file(path, sizeof(path));
		if (remembered[0])
			return cn_error_set(-CN_E_TLS,
				"the certificate of %s changed: %s remembers %s, the server presents %s; "
				"if the server's certificate was replaced, pin the new one with "
				"--fingerprint %s, or delete its line there and accept it on a terminal",
				hostport, path, remembered, seen, seen);
		return cn_error_set(-CN_E_TLS,
			"the certificate of %s is not trusted (no known authority signed it and it "
			"is not pinned); it has the fingerprint %s: if that is your server's, pin it "
			"with --fingerprint %s (or PBS_FINGERPRINT), or run cairn once on a terminal "
			"to accept and remember it", hostport, seen, seen);
	}
	if (!ask(cmd, hostport, seen, remembered))
		return cn_error_set(-CN_E_TLS, "the certificate of %s (fingerprint %s) was not "
					       "accepted", hostport, seen);
	if (cli_trust_remember(hostport, seen) < 0)
		cn_log_warning("%s; the certificate is trusted for this run only", cn_error_message());
	po.fingerprint = seen;
	po.presented_fp = NULL;
	return cn_pbs_connect(&po, out);
}
