/* cn_pxar_select — path and pattern selection of archive entries (see
 * cn_pxar_select.h). Every argument becomes a cn_pattern matched against
 * the entry's path from the root without its leading '/': paths and
 * '/'-led globs anchored, other globs with pathpatterns' suffix rule. */
#include "pxar/cn_pxar_select.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/cn_error.h"
#include "common/cn_util.h"
#include "pxar/cn_pattern.h"

struct cn_pxar_select {
	struct cn_pattern **list;
	size_t n, cap;
	size_t includes;          /* includes added (the root's too) */
	int root_included;        /* an include of the root itself ("/", ".") */
	/* when every include is a path: the outermost of them (none inside
	 * another), in archive order, each subtree decoded alone; none: the
	 * whole archive */
	char **lookups;
	size_t nlookups;
	int decode_all;           /* an include that is a glob or the root */
};

int cn_pxar_select_new(struct cn_pxar_select **out)
{
	*out = calloc(1, sizeof(**out));
	if (!*out)
		return cn_error_set(-ENOMEM, "out of memory");
	return 0;
}

void cn_pxar_select_free(struct cn_pxar_select *s)
{
	if (!s)
		return;
	for (size_t i = 0; i < s->n; i++)
		cn_pattern_free(s->list[i]);
	free(s->list);
	for (size_t i = 0; i < s->nlookups; i++)
		free(s->lookups[i]);
	free(s->lookups);
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

/* Whether path[0..len) is dir or lies below it. */
static int inside(const char *dir, const char *path, size_t len)
{
	size_t n = strlen(dir);
	return len >= n && memcmp(path, dir, n) == 0 && (len == n || path[n] == '/');
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

/* A path character's rank in archive order: the end, then '/', then the
 * bytes a name can hold. */
static int path_rank(char c)
{
	return c == 0 ? 0 : c == '/' ? 1 : (unsigned char)c + 1;
}

/* Orders paths as the archive holds them: by components, each compared
 * bytewise as pxar sorts a directory's entries. */
static int archive_order(const char *a, const char *b)
{
	for (;; a++, b++) {
		int ra = path_rank(*a), rb = path_rank(*b);
		if (ra != rb || ra == 0)
			return ra - rb;
	}
}

/* Records one more include: path[0..len) (normalised) or, for a glob or
 * the root, NULL. Paths are looked up unless one is inside another
 * (then only the outer one) or there is any other include. */
static int note_include(struct cn_pxar_select *s, const char *path, size_t len)
{
	s->includes++;
	if (s->decode_all)
		return 0;
	if (!path) {
		s->decode_all = 1;
		for (size_t i = 0; i < s->nlookups; i++)
			free(s->lookups[i]);
		s->nlookups = 0;
		return 0;
	}
	for (size_t i = 0; i < s->nlookups; i++)
		if (inside(s->lookups[i], path, len))
			return 0;
	char *p = strndup(path, len);
	char **l = p ? realloc(s->lookups, (s->nlookups + 1) * sizeof(*l)) : NULL;
	if (!l) {
		free(p);
		return cn_error_set(-ENOMEM, "out of memory");
	}
	s->lookups = l;
	size_t kept = 0, at = 0;
	for (size_t i = 0; i < s->nlookups; i++) {
		if (inside(p, l[i], strlen(l[i]))) {
			free(l[i]);
			continue;
		}
		l[kept++] = l[i];
		if (archive_order(l[i], p) < 0)
			at = kept;
	}
	memmove(l + at + 1, l + at, (kept - at) * sizeof(*l));
	l[at] = p;
	s->nlookups = kept + 1;
	return 0;
}

/* Adds arg; literal: a path taken as it is (no '!', no glob). */
static int add_arg(struct cn_pxar_select *s, const char *arg, int exclude, int literal)
{
	enum cn_match_type type = exclude ? CN_MATCH_EXCLUDE : CN_MATCH_INCLUDE;
	const char *body = arg;
	if (!literal && body[0] == '!') {
		type = type == CN_MATCH_INCLUDE ? CN_MATCH_EXCLUDE : CN_MATCH_INCLUDE;
		body++;
	}
	size_t len = strlen(body);
	if (len == 0)
		return cn_error_set(-EINVAL, "empty path or pattern '%s'", arg);
	int glob = !literal && is_glob(body, len);
	/* a path is anchored at the root; so is a pattern led by '/'; an
	 * exclude of a bare name (no '/' but a trailing one) leaves that name
	 * out at any depth, as gitignore and a backup's --exclude do */
	size_t inner = len;
	while (inner > 0 && body[inner - 1] == '/')
		inner--;
	int bare_name = type == CN_MATCH_EXCLUDE && !literal && inner > 0 &&
			!memchr(body, '/', inner) && strcmp(body, ".") && strcmp(body, "..");
	int anchored = (!glob && !bare_name) || body[0] == '/';
	struct cn_buf text = {0};
	char *path = NULL;        /* the normalised path, when no glob */
	size_t path_len = 0;
	int rc;
	if (glob) {
		while (len > 0 && body[0] == '/')
			body++, len--;
		rc = cn_buf_append(&text, body, len);
	} else {
		rc = append_normalised(&text, body, len);
		path_len = text.len;
		if (rc == 0 && !(path = strndup(text.data ? (const char *)text.data : "", path_len)))
			rc = -ENOMEM;
		if (rc == 0 && path_len == 0 && type == CN_MATCH_INCLUDE) {
			/* the root itself: everything */
			s->root_included = 1;
			rc = note_include(s, NULL, 0);
			goto out;
		}
		if (rc == 0 && literal)
			rc = escape_glob(&text);
		/* the root excluded: everything below it; a trailing '/': directories */
		if (rc == 0 && (path_len == 0 || body[len - 1] == '/'))
			rc = cn_buf_append(&text, path_len == 0 ? "**" : "/", path_len == 0 ? 2 : 1);
	}
	struct cn_pattern *p = NULL;
	if (rc == 0)
		rc = cn_pattern_parse((const char *)text.data, text.len, type, &p);
	if (rc == -EINVAL) {
		rc = cn_error_prefix(rc, "path or pattern '%s'", arg);
		goto out;
	}
	if (rc == 0 && anchored)
		cn_pattern_add_flags(p, CN_PATTERN_ANCHORED);
	if (rc == 0 && (rc = push(s, p)) < 0)
		cn_pattern_free(p);
	if (rc == 0 && type == CN_MATCH_INCLUDE)
		rc = note_include(s, path, path_len);
	if (rc == -ENOMEM)
		rc = cn_error_set(rc, "out of memory");
out:
	free(path);
	cn_buf_free(&text);
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

size_t cn_pxar_select_lookups(const struct cn_pxar_select *s)
{
	return s ? s->nlookups : 0;
}

const char *cn_pxar_select_lookup(const struct cn_pxar_select *s, size_t i)
{
	return i < cn_pxar_select_lookups(s) ? s->lookups[i] : NULL;
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
