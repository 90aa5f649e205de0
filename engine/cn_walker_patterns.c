/* cn_walker_patterns — the exclude patterns of a walk (the Archiver's
 * patterns and generate_pxar_excludes_cli in proxmox-backup-client 3.2.4):
 * the stack of patterns in force, the lines of a .pxarexclude file, and
 * how the command line's patterns are recorded in the archive (the
 * .pxarexclude-cli entry) and in the prelude of a split archive. Reading
 * a directory's .pxarexclude (opening it as any entry) stays in
 * cn_walker.c. */
#include "engine/cn_walker_impl.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/cn_error.h"
#include "common/cn_log.h"
#include "pxar/cn_pattern.h"
#include "store/cn_manifest.h"

int cn_wk_push_pattern(struct walker *w, struct cn_pattern *p)
{
	if (w->n_patterns == w->cap_patterns) {
		size_t nc = w->cap_patterns ? w->cap_patterns * 2 : 16;
		struct cn_pattern **n = realloc(w->patterns, nc * sizeof(*n));
		if (!n) {
			cn_pattern_free(p);
			return -ENOMEM;
		}
		w->patterns = n;
		w->cap_patterns = nc;
	}
	w->patterns[w->n_patterns++] = p;
	return 0;
}

void cn_wk_truncate_patterns(struct walker *w, size_t n)
{
	while (w->n_patterns > n)
		cn_pattern_free(w->patterns[--w->n_patterns]);
}

static int is_ascii_ws(int c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\f' || c == '\r';
}

/* One line of a .pxarexclude file (read_pxar_excludes). */
int cn_wk_pxarexclude_line(struct walker *w, char *line, size_t len)
{
	while (len > 0 && is_ascii_ws((unsigned char)line[0])) {
		line++;
		len--;
	}
	while (len > 0 && is_ascii_ws((unsigned char)line[len - 1]))
		len--;
	if (len == 0 || line[0] == '#')
		return 0;

	struct cn_buf buf = { 0 };
	enum cn_match_type type = CN_MATCH_EXCLUDE;
	int anchored = 0, rc = 0;
	const char *pat = line;
	size_t plen = len;

	if (line[0] == '/' || (len >= 2 && line[0] == '!' && line[1] == '/')) {
		/* anchored at this directory: prefix its path (no leading '/') */
		size_t skip = line[0] == '!';
		type = skip ? CN_MATCH_INCLUDE : CN_MATCH_EXCLUDE;
		if (cn_buf_append(&buf, w->path, w->path_len) < 0 ||
		    cn_buf_append(&buf, line + skip, len - skip) < 0) {
			cn_buf_free(&buf);
			return -ENOMEM;
		}
		pat = (const char *)buf.data;
		plen = buf.len;
		anchored = 1;
	} else if (line[0] == '!') {
		type = CN_MATCH_INCLUDE;
		pat++;
		plen--;
	}
	/* parse_pattern still interprets a leading '!' (inverting again) */
	struct cn_pattern *p;
	rc = cn_pattern_parse(pat, plen, type, &p);
	cn_buf_free(&buf);
	if (rc < 0) {
		if (rc == -ENOMEM)
			return rc;
		cn_log_error("bad pattern in \"%s\": %s", cn_wk_cur_path(w), cn_error_message());
		return 0;
	}
	if (anchored)
		cn_pattern_add_flags(p, CN_PATTERN_ANCHORED);
	return cn_wk_push_pattern(w, p);
}

/* generate_pxar_excludes_cli: one line per pattern, '!' for includes, '/'
 * appended for directory-only patterns. */
static int pxarexclude_cli_content(struct walker *w, size_t count, struct cn_buf *out)
{
	for (size_t i = 0; i < count; i++) {
		const struct cn_pattern *p = w->patterns[i];
		const char *t = cn_pattern_text(p);
		size_t tl = strlen(t);
		if (cn_pattern_type(p) == CN_MATCH_INCLUDE && cn_buf_append(out, "!", 1) < 0)
			return -ENOMEM;
		if (cn_buf_append(out, t, tl) < 0)
			return -ENOMEM;
		if (cn_pattern_flags(p) == CN_PATTERN_MATCH_DIRECTORIES &&
		    (out->len == 0 || out->data[out->len - 1] != '/') && cn_buf_append(out, "/", 1) < 0)
			return -ENOMEM;
		if (cn_buf_append(out, "\n", 1) < 0)
			return -ENOMEM;
	}
	return 0;
}

int cn_wk_encode_pxarexclude_cli(struct walker *w, size_t count)
{
	static const char name[] = ".pxarexclude-cli";
	struct cn_buf content = { 0 };
	struct cn_pxar_metadata m = { 0 };
	int rc = pxarexclude_cli_content(w, count, &content);

	m.stat.mode = CN_PXAR_IFREG | 0600;
	if (rc == 0 && w->cat)
		rc = cn_catalog_writer_add_file(w->cat, name, sizeof(name) - 1, content.len, 0);
	if (rc == 0)
		rc = cn_pxar_encoder_begin_file(w->enc, &m, name, sizeof(name) - 1, content.len, NULL);
	if (rc == 0)
		rc = cn_pxar_encoder_write(w->enc, content.data, content.len);
	if (rc == 0)
		rc = cn_pxar_encoder_end_file(w->enc);
	cn_buf_free(&content);
	return rc;
}

/* PbsClientPrelude { exclude_patterns } as serde_json::to_vec writes it */
int cn_wk_prelude_json(struct walker *w, struct cn_buf *out)
{
	struct cn_buf pats = { 0 };
	int rc = pxarexclude_cli_content(w, w->n_patterns, &pats);
	if (rc == 0)
		rc = cn_buf_append(out, "{\"exclude-patterns\":", 20);
	if (rc == 0)
		rc = cn_json_put_string(out, (const char *)pats.data, pats.len);
	if (rc == 0)
		rc = cn_buf_append(out, "}", 1);
	cn_buf_free(&pats);
	return rc < 0 ? -ENOMEM : 0;
}
