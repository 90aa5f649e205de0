/* libFuzzer target: what a PBS server sends back to net/ — the HTTP/1
 * response head of the protocol upgrade, API reply bodies ({"data": …} or
 * error text) with the list parsers behind them, and the strings a user
 * or server hands over (repository, fingerprint). The first byte selects
 * the HTTP status used for the reply. Checks properties and abort()s on a
 * violation: a parsed head lies within the input, error messages are
 * printable, fingerprints round-trip. */
#include <stdlib.h>
#include <string.h>

#include "common/cn_error.h"
#include "net/cn_pbs_http.h"
#include "net/cn_pbs_repo.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_printable(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || (unsigned char)*s >= 0x7f)
			abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const int statuses[] = {200, 200, 200, 201, 400, 401, 403, 404, 500, 101};
	struct cn_pbs_http_head h;
	int n = cn_pbs_http_parse_head(data, size, &h);
	if (n > 0 && ((size_t)n > size || h.status < 100 || h.status > 999))
		abort();
	if (size == 0)
		return 0;

	int status = statuses[data[0] % 10];
	json_t *d = NULL;
	int r = cn_pbs_reply_data(status, data + 1, size - 1, &d);
	if (r < 0) {
		if (d)
			abort();
		/* Server text is cleaned before it reaches a message. */
		if (status >= 300)
			check_printable(cn_error_message());
	} else {
		struct cn_snapshot_info *si = NULL;
		struct cn_pbs_group *g = NULL;
		struct cn_pbs_prune_item *p = NULL;
		size_t k;
		if (cn_pbs_parse_snapshots(d, "ns", &si, &k) == 0) {
			for (size_t i = 0; i + 1 < k; i++)
				if (strcmp(si[i].id.type, si[i + 1].id.type) > 0)
					abort();
			free(si);
		}
		if (cn_pbs_parse_groups(d, &g, &k) == 0)
			free(g);
		if (cn_pbs_parse_prune(d, "", &p, &k) == 0)
			free(p);
		json_decref(d);
	}

	/* Repository and fingerprint strings. */
	char *s = malloc(size);
	memcpy(s, data + 1, size - 1);
	s[size - 1] = '\0';
	struct cn_pbs_repo repo;
	if (cn_pbs_repo_parse(s, &repo) == 0) {
		char back[600];
		struct cn_pbs_repo again;
		if (cn_pbs_repo_format(&repo, back, sizeof(back)) < 0 || cn_pbs_repo_parse(back, &again) < 0 ||
		    strcmp(again.store, repo.store) || strcmp(again.host, repo.host) ||
		    strcmp(again.auth_id, repo.auth_id) || again.port != repo.port)
			abort();
	}
	uint8_t fp[32], fp2[32];
	if (cn_pbs_fingerprint_parse(s, fp) == 0) {
		char text[96];
		cn_pbs_fingerprint_format(fp, text);
		if (cn_pbs_fingerprint_parse(text, fp2) < 0 || memcmp(fp, fp2, 32))
			abort();
	}
	free(s);
	return 0;
}
