/* cn_pxar_select — path and pattern selection of archive entries (see
 * cn_pxar_select.h). Every argument becomes a cn_pattern matched against
 * the entry's path from the root without its leading '/': paths and
 * '/'-led globs anchored, other globs with pathpatterns' suffix rule. */
#include "engine/cn_pxar_select.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/cn_error.h"
#include "common/cn_util.h"
#include "engine/cn_pattern.h"

struct cn_pxar_select {
	struct cn_pattern **list;
	size_t n, cap;
	size_t includes;          /* include entries in list */
	int root_included;        /* an include of the root itself ("/", ".") */
	/* the first include when it is a path and every later include a path
	 * inside it: the subtree decoded alone (NULL: the whole archive) */
	char *lookup;
	int lookup_possible;      /* no include so far that rules lookup out */
};

int cn_pxar_select_new(struct cn_pxar_select **out)
{
	*out = calloc(1, sizeof(**out));
	if (!*out)
		return cn_error_set(-ENOMEM, "out of memory");
	(*out)->lookup_possible = 1;
	return 0;
}

void cn_pxar_select_free(struct cn_pxar_select *s)
{
	if (!s)
		return;
	for (size_t i = 0; i < s->n; i++)
		cn_pattern_free(s->list[i]);
	free(s->list);
	free(s->lookup);
	free(s);
}

static int is_glob(const char *s, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (s[i] == '*' || s[i] == '?' || s[i] == '[' || s[i] == '\\')
			return 1;
	return 0;
}

/* Appends p[0..len) to b without "." components and repeated or leading
 * slashes (".." stays: the decoder refuses such names, so the lookup or
 * match finds nothing rather than leaving the root). */
static int append_normalised(struct cn_buf *b, const char *p, size_t len)
{
	size_t start = b->len;
	for (size_t i = 0; i < len;) {
		while (i < len && p[i] == '/')
			i++;
		size_t j = i;
		while (j < len && p[j] != '/')
			j++;
		if (j > i && !(j - i == 1 && p[i] == '.')) {
			if (b->len > start && cn_buf_append(b, "/", 1) < 0)
				return -ENOMEM;
			if (cn_buf_append(b, p + i, j - i) < 0)
				return -ENOMEM;
		}
		i = j;
	}
	return 0;
}

/* Puts a backslash before every glob character of b's text and before a
 * leading '!' (a path with such characters in a name, matched as it is). */
static int escape_glob(struct cn_buf *b)
{
	struct cn_buf out = {0};
	for (size_t i = 0; i < b->len; i++) {
		char c = (char)b->data[i];
		int special = c == '*' || c == '?' || c == '[' || c == '\\' || (i == 0 && c == '!');
		if ((special && cn_buf_append(&out, "\\", 1) < 0) ||
		    cn_buf_append(&out, &c, 1) < 0) {
			cn_buf_free(&out);
			return -ENOMEM;
		}
	}
	cn_buf_free(b);
	*b = out;
	return 0;
}

/* Whether path is dir or lies below it. */
static int inside(const char *dir, const struct cn_buf *path)
{
	size_t n = strlen(dir);
	return path->len >= n && memcmp(path->data, dir, n) == 0 &&
	       (path->len == n || path->data[n] == '/');
}

static int push(struct cn_pxar_select *s, struct cn_pattern *p)
{
	if (s->n == s->cap) {
		size_t cap = s->cap ? 2 * s->cap : 8;
		struct cn_pattern **l = realloc(s->list, cap * sizeof(*l));
		if (!l)
			return -ENOMEM;
		s->list = l;
		s->cap = cap;
	}
	s->list[s->n++] = p;
	return 0;
}

/* Adds arg; literal: a path taken as it is (no '!', no glob). */
static int add_arg(struct cn_pxar_select *s, const char *arg, int exclude, int literal)
{
	enum cn_match_type type = exclude ? CN_MATCH_EXCLUDE : CN_MATCH_INCLUDE;
	size_t len = strlen(arg);
	const char *body = arg;
	if (!literal && len > 0 && body[0] == '!') {
		type = type == CN_MATCH_INCLUDE ? CN_MATCH_EXCLUDE : CN_MATCH_INCLUDE;
		body++;
		len--;
	}
	if (len == 0)
		return cn_error_set(-EINVAL, "empty path or pattern '%s'", arg);
	int dir_only = len > 0 && body[len - 1] == '/';
	int glob = !literal && is_glob(body, len);
	int anchored = !glob || (len > 0 && body[0] == '/');
	struct cn_buf text = {0}, lookup_path = {0};
	int rc = 0;
	if (glob) {
		while (len > 0 && body[0] == '/')
			body++, len--;
		rc = cn_buf_append(&text, body, len);
	} else {
		rc = append_normalised(&text, body, len);
		if (rc == 0)
			rc = cn_buf_append(&lookup_path, text.data, text.len);
		if (rc == 0 && text.len == 0) {
			/* the root: everything, or with '!' nothing */
			if (type == CN_MATCH_INCLUDE) {
				s->root_included = 1;
				s->includes++;
				s->lookup_possible = 0;
				free(s->lookup);
				s->lookup = NULL;
				cn_buf_free(&text);
				cn_buf_free(&lookup_path);
				return 0;
			}
			rc = cn_buf_append(&text, "**", 2);
		} else if (rc == 0 && dir_only) {
			rc = cn_buf_append(&text, "/", 1);
		}
	}
	struct cn_pattern *p = NULL;
	if (rc == 0 && literal)
		rc = escape_glob(&text);
	if (rc == 0)
		rc = cn_pattern_parse((const char *)text.data, text.len, type, &p);
	if (rc == -EINVAL)
		rc = cn_error_prefix(rc, "path or pattern '%s'", arg);
	else if (rc < 0)
		rc = cn_error_set(rc, "out of memory");
	if (rc == 0 && anchored)
		cn_pattern_add_flags(p, CN_PATTERN_ANCHORED);
	if (rc == 0 && (rc = push(s, p)) < 0) {
		cn_pattern_free(p);
		rc = cn_error_set(rc, "out of memory");
	}
	if (rc == 0 && type == CN_MATCH_INCLUDE) {
		if (s->includes++ == 0 && !glob) {
			s->lookup = strndup((const char *)lookup_path.data, lookup_path.len);
			if (!s->lookup)
				rc = cn_error_set(-ENOMEM, "out of memory");
		} else if (s->lookup && (glob || !inside(s->lookup, &lookup_path))) {
			free(s->lookup);
			s->lookup = NULL;
			s->lookup_possible = 0;
		}
	}
	cn_buf_free(&text);
	cn_buf_free(&lookup_path);
	return rc;
}

int cn_pxar_select_add(struct cn_pxar_select *s, const char *arg, int exclude)
{
	return add_arg(s, arg, exclude, 0);
}

int cn_pxar_select_add_path(struct cn_pxar_select *s, const char *path)
{
	return add_arg(s, path, 0, 1);
}

int cn_pxar_select_from_path(const char *arg, struct cn_pxar_select **out)
{
	int rc = cn_pxar_select_new(out);
	if (rc == 0 && arg && *arg && (rc = cn_pxar_select_add(*out, arg, 0)) < 0) {
		cn_pxar_select_free(*out);
		*out = NULL;
	}
	return rc;
}

int cn_pxar_select_everything(const struct cn_pxar_select *s)
{
	return !s || s->n == 0;
}

const char *cn_pxar_select_lookup(const struct cn_pxar_select *s)
{
	return s && s->lookup_possible ? s->lookup : NULL;
}

int cn_pxar_select_initial(const struct cn_pxar_select *s)
{
	return !s || s->includes == 0 || s->root_included;
}

int cn_pxar_select_entry(const struct cn_pxar_select *s, int inherited,
			 const struct cn_pxar_entry *e)
{
	if (!s || s->n == 0)
		return inherited;
	switch (cn_pattern_list_match(s->list, s->n, e->path, e->path_len, (uint32_t)e->mode)) {
	case CN_MATCH_INCLUDE:
		return 1;
	case CN_MATCH_EXCLUDE:
		return 0;
	default:
		return inherited;
	}
}
