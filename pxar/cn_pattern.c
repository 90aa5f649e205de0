/* cn_pattern — pathpatterns-compatible globbing (see cn_pattern.h).
 * The matcher is a port of the algorithm of git's wildmatch.c in the shape
 * pathpatterns uses: a pattern is compiled into components (literal, '?',
 * '*', '**', class) and matched recursively with the NoMatch / AbortAll /
 * AbortToStarStar results that bound the backtracking. */
#include "pxar/cn_pattern.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/cn_error.h"
#include "common/cn_util.h"

enum comp_kind { C_LIT, C_QMARK, C_STAR, C_STARSTAR, C_CLASS };

struct comp {
	enum comp_kind kind;
	size_t off, len;        /* C_LIT: bytes in p->lit */
	uint8_t set[32];        /* C_CLASS: bitmap of matching bytes */
	int negated;
};

struct cn_pattern {
	enum cn_match_type type;
	unsigned flags;
	char *text;             /* stored pattern, NUL-terminated */
	uint8_t *lit;           /* literal bytes of all C_LIT components */
	size_t lit_len;
	struct comp *comps;
	size_t n;
};

enum mres { M_MATCH, M_NOMATCH, M_ABORT_ALL, M_ABORT_TO_STARSTAR };

static void set_bit(uint8_t *set, unsigned c) { set[c >> 3] |= (uint8_t)(1u << (c & 7)); }
static int has_bit(const uint8_t *set, unsigned c) { return set[c >> 3] >> (c & 7) & 1; }

/* Rust's u8::is_ascii_* predicates, which pathpatterns uses for [[:x:]]. */
static int is_alpha(int b) { return (b >= 'a' && b <= 'z') || (b >= 'A' && b <= 'Z'); }
static int is_digit(int b) { return b >= '0' && b <= '9'; }
static int is_graphic(int b) { return b >= 0x21 && b <= 0x7e; }
static int named_class(const char *name, int b)
{
	if (!strcmp(name, "alnum")) return is_alpha(b) || is_digit(b);
	if (!strcmp(name, "alpha")) return is_alpha(b);
	if (!strcmp(name, "blank")) return b == ' ' || b == '\t';
	if (!strcmp(name, "cntrl")) return b < 0x20 || b == 0x7f;
	if (!strcmp(name, "digit")) return is_digit(b);
	if (!strcmp(name, "graph")) return is_graphic(b);
	if (!strcmp(name, "lower")) return b >= 'a' && b <= 'z';
	if (!strcmp(name, "print")) return b >= 0x20 && b <= 0x7f;
	if (!strcmp(name, "punct")) return is_graphic(b) && !is_alpha(b) && !is_digit(b);
	if (!strcmp(name, "space")) return b == ' ' || b == '\t' || b == '\n' || b == '\f' || b == '\r';
	if (!strcmp(name, "upper")) return b >= 'A' && b <= 'Z';
	if (!strcmp(name, "xdigit")) return is_digit(b) || (b >= 'a' && b <= 'f') || (b >= 'A' && b <= 'F');
	return 0;
}

static const char *const class_names[] = {
	"alnum", "alpha", "blank", "cntrl", "digit", "graph", "lower",
	"print", "punct", "space", "upper", "xdigit",
};

/* Parses a class starting at pat[begin] == '['; returns the index of its
 * closing ']' in *end. */
static int parse_class(const uint8_t *pat, size_t len, size_t begin, struct comp *c, size_t *end)
{
	size_t i = begin + 1;
	int prev = -1;

	memset(c, 0, sizeof(*c));
	c->kind = C_CLASS;
	if (i < len && pat[i] == '^') {
		c->negated = 1;
		i++;
	}
	if (i == len)
		return cn_error_set(-EINVAL, "unclosed character class in pattern, starting at byte %zu", begin);
	while (i != len) {
		int new_prev = -1;
		uint8_t ch = pat[i];
		if (ch == 0)
			return cn_error_set(-EINVAL, "null-byte in pattern");
		if (ch == '[' && i + 1 < len && pat[i + 1] == ':') {
			size_t k;
			for (k = 0; k < CN_ARRAY_SIZE(class_names); k++) {
				size_t nl = strlen(class_names[k]);
				if (len - (i + 1) >= nl + 3 && !memcmp(pat + i + 2, class_names[k], nl) &&
				    pat[i + 2 + nl] == ':' && pat[i + 3 + nl] == ']') {
					for (int b = 0; b < 256; b++)
						if (named_class(class_names[k], b))
							set_bit(c->set, (unsigned)b);
					i += nl + 3;
					break;
				}
			}
			if (k == CN_ARRAY_SIZE(class_names))
				return cn_error_set(-EINVAL, "malformed named character class in pattern, starting at byte %zu", begin);
		} else if (ch == ']') {
			*end = i;
			return 0;
		} else if (ch == '\\') {
			i++;
			if (i == len)
				return cn_error_set(-EINVAL, "trailing backslash in pattern");
			set_bit(c->set, pat[i]);
			new_prev = pat[i];
		} else if (ch == '-' && prev >= 0) {
			/* range prev..end; prev was already listed, which the
			 * range covers anyway */
			i++;
			if (i == len)
				return cn_error_set(-EINVAL, "unclosed character class in pattern, starting at byte %zu", begin);
			uint8_t e = pat[i];
			if (e == '\\') {
				i++;
				if (i == len)
					return cn_error_set(-EINVAL, "unclosed character class in pattern, starting at byte %zu", begin);
				e = pat[i];
			}
			unsigned lo = (unsigned)prev < e ? (unsigned)prev : e;
			unsigned hi = (unsigned)prev < e ? e : (unsigned)prev;
			for (unsigned b = lo; b <= hi; b++)
				set_bit(c->set, b);
		} else {
			set_bit(c->set, ch);
			new_prev = ch;
		}
		prev = new_prev;
		i++;
	}
	return cn_error_set(-EINVAL, "unclosed character class in pattern, starting at byte %zu", begin);
}

static int push_comp(struct cn_pattern *p, size_t *cap, const struct comp *c)
{
	if (p->n == *cap) {
		size_t nc = *cap ? *cap * 2 : 8;
		struct comp *n = realloc(p->comps, nc * sizeof(*n));
		if (!n)
			return -ENOMEM;
		p->comps = n;
		*cap = nc;
	}
	p->comps[p->n++] = *c;
	return 0;
}

/* Closes the literal being collected (bytes lit_start..p->lit_len). */
static int flush_lit(struct cn_pattern *p, size_t *cap, size_t *lit_start)
{
	if (p->lit_len == *lit_start)
		return 0;
	struct comp c = { .kind = C_LIT, .off = *lit_start, .len = p->lit_len - *lit_start };
	*lit_start = p->lit_len;
	return push_comp(p, cap, &c);
}

int cn_pattern_parse(const char *pattern, size_t len, enum cn_match_type type,
		     struct cn_pattern **out)
{
	const uint8_t *pat = (const uint8_t *)pattern;
	unsigned flags = CN_PATTERN_ANY_FILE_TYPE;
	int rc;

	*out = NULL;
	if (len > 0 && pat[0] == '!') {
		type = type == CN_MATCH_INCLUDE ? CN_MATCH_EXCLUDE : CN_MATCH_INCLUDE;
		pat++;
		len--;
	}
	/* trailing slashes: directory-only; only slashes: "/" */
	size_t keep = len;
	while (keep > 0 && pat[keep - 1] == '/')
		keep--;
	if (keep == 0 && len > 0) {
		pat = (const uint8_t *)"/";
		len = 1;
		flags = CN_PATTERN_MATCH_DIRECTORIES;
	} else if (keep < len) {
		len = keep;
		flags = CN_PATTERN_MATCH_DIRECTORIES;
	}
	if (len == 0)
		return cn_error_set(-EINVAL, "empty pattern");
	if (memchr(pat, 0, len))
		return cn_error_set(-EINVAL, "null-byte in pattern");

	struct cn_pattern *p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	p->type = type;
	p->flags = flags;
	p->text = malloc(len + 1);
	p->lit = malloc(len);
	if (!p->text || !p->lit) {
		rc = -ENOMEM;
		goto fail;
	}
	memcpy(p->text, pat, len);
	p->text[len] = 0;

	size_t cap = 0, lit_start = 0;
	for (size_t i = 0; i < len; i++) {
		struct comp c = { 0 };
		switch (pat[i]) {
		case '\\':
			if (++i == len) {
				rc = cn_error_set(-EINVAL, "trailing backslash in pattern");
				goto fail;
			}
			p->lit[p->lit_len++] = pat[i];
			continue;
		case '?':
			c.kind = C_QMARK;
			break;
		case '*': {
			c.kind = C_STAR;
			if (i + 1 < len && pat[i + 1] == '*') {
				size_t beg = i;
				i++;
				while (i + 1 < len && pat[i + 1] == '*')
					i++;
				/* "**" only as a whole path component */
				if ((beg == 0 || pat[beg - 1] == '/') && (i + 1 == len || pat[i + 1] == '/'))
					c.kind = C_STARSTAR;
			}
			break;
		}
		case '[': {
			size_t end = i;
			if ((rc = flush_lit(p, &cap, &lit_start)) < 0)
				goto fail;
			if ((rc = parse_class(pat, len, i, &c, &end)) < 0)
				goto fail;
			i = end;
			if ((rc = push_comp(p, &cap, &c)) < 0)
				goto fail;
			continue;
		}
		default:
			p->lit[p->lit_len++] = pat[i];
			continue;
		}
		if ((rc = flush_lit(p, &cap, &lit_start)) < 0 || (rc = push_comp(p, &cap, &c)) < 0)
			goto fail;
	}
	if ((rc = flush_lit(p, &cap, &lit_start)) < 0)
		goto fail;
	*out = p;
	return 0;
fail:
	cn_pattern_free(p);
	return rc;
}

void cn_pattern_free(struct cn_pattern *p)
{
	if (!p)
		return;
	free(p->text);
	free(p->lit);
	free(p->comps);
	free(p);
}

void cn_pattern_add_flags(struct cn_pattern *p, unsigned flags) { p->flags |= flags; }
enum cn_match_type cn_pattern_type(const struct cn_pattern *p) { return p->type; }
unsigned cn_pattern_flags(const struct cn_pattern *p) { return p->flags; }
const char *cn_pattern_text(const struct cn_pattern *p) { return p->text; }

static int comp_ends_with_slash(const struct cn_pattern *p, const struct comp *c)
{
	return c->kind == C_LIT && p->lit[c->off + c->len - 1] == '/';
}

static int comp_starts_with_slash(const struct cn_pattern *p, const struct comp *c)
{
	if (c->kind != C_LIT)
		return 0;
	const uint8_t *l = p->lit + c->off;
	return l[0] == '/' || (l[0] == '\\' && c->len > 1 && l[1] == '/');
}

static enum mres do_match(const struct cn_pattern *p, size_t ci, const uint8_t *t, size_t tl,
			  int skip_slash)
{
	while (ci != p->n) {
		const struct comp *c = &p->comps[ci];
		int skip = skip_slash;
		skip_slash = 0;
		switch (c->kind) {
		case C_LIT: {
			if (tl == 0)
				return M_ABORT_ALL;  /* '*' is non-greedy: nothing shorter left */
			const uint8_t *l = p->lit + c->off;
			size_t ll = c->len;
			if (skip) {
				l++;
				ll--;
			}
			if (tl < ll || memcmp(t, l, ll))
				return M_NOMATCH;
			t += ll;
			tl -= ll;
			break;
		}
		case C_QMARK:
			if (tl == 0)
				return M_ABORT_ALL;
			if (t[0] == '/')
				return M_NOMATCH;
			t++;
			tl--;
			break;
		case C_CLASS:
			if (tl == 0)
				return M_ABORT_ALL;
			if (has_bit(c->set, t[0]) == c->negated)
				return M_NOMATCH;
			t++;
			tl--;
			break;
		case C_STAR:
			if (ci + 1 == p->n && !memchr(t, '/', tl))
				return M_MATCH;
			for (;;) {
				if (tl == 0)
					return M_ABORT_ALL;
				enum mres r = do_match(p, ci + 1, t, tl, 0);
				if (r != M_NOMATCH)
					return r;
				if (t[0] == '/')
					return M_ABORT_TO_STARSTAR;
				t++;
				tl--;
			}
		case C_STARSTAR:
			if (ci + 1 == p->n)
				return M_MATCH;
			if ((ci == 0 || comp_ends_with_slash(p, &p->comps[ci - 1])) &&
			    comp_starts_with_slash(p, &p->comps[ci + 1])) {
				/* let "x/" "**" "/y" match "x/y" */
				if (do_match(p, ci + 1, t, tl, 1) == M_MATCH)
					return M_MATCH;
			}
			for (;;) {
				if (tl == 0)
					return M_ABORT_ALL;
				enum mres r = do_match(p, ci + 1, t, tl, 0);
				if (r != M_NOMATCH && r != M_ABORT_TO_STARSTAR)
					return r;
				t++;
				tl--;
			}
		}
		ci++;
	}
	return tl == 0 ? M_MATCH : M_NOMATCH;
}

int cn_pattern_glob_matches(const struct cn_pattern *p, const char *text, size_t len)
{
	return do_match(p, 0, (const uint8_t *)text, len, 0) == M_MATCH;
}

static int mode_ok(const struct cn_pattern *p, uint32_t mode)
{
	if ((p->flags & CN_PATTERN_ANY_FILE_TYPE) == CN_PATTERN_ANY_FILE_TYPE)
		return 1;
	unsigned f;
	switch (mode & S_IFMT) {
	case S_IFDIR: f = CN_PATTERN_MATCH_DIRECTORIES; break;
	case S_IFREG: f = CN_PATTERN_MATCH_REGULAR_FILES; break;
	case S_IFLNK: f = CN_PATTERN_MATCH_SYMLINKS; break;
	case S_IFSOCK: f = CN_PATTERN_MATCH_SOCKETS; break;
	case S_IFIFO: f = CN_PATTERN_MATCH_FIFOS; break;
	case S_IFCHR: f = CN_PATTERN_MATCH_CHARDEVS; break;
	case S_IFBLK: f = CN_PATTERN_MATCH_BLOCKDEVS; break;
	default: return 0;
	}
	return (p->flags & f) != 0;
}

int cn_pattern_matches(const struct cn_pattern *p, const char *path, size_t len, uint32_t mode)
{
	if (mode != 0 && !mode_ok(p, mode))
		return 0;
	if (p->flags & CN_PATTERN_ANCHORED)
		return cn_pattern_glob_matches(p, path, len);
	if (len == 0)
		return 0;
	/* every suffix after a '/', longest last, then the whole path */
	for (size_t start = len; start-- > 0;)
		if (path[start] == '/' && cn_pattern_glob_matches(p, path + start + 1, len - start - 1))
			return 1;
	return cn_pattern_glob_matches(p, path, len);
}

enum cn_match_type cn_pattern_list_match(struct cn_pattern *const *list, size_t n,
					 const char *path, size_t len, uint32_t mode)
{
	for (size_t i = n; i-- > 0;)
		if (cn_pattern_matches(list[i], path, len, mode))
			return list[i]->type;
	return CN_MATCH_NONE;
}

int cn_pattern_list_needs_mode(struct cn_pattern *const *list, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if ((list[i]->flags & CN_PATTERN_ANY_FILE_TYPE) != CN_PATTERN_ANY_FILE_TYPE)
			return 1;
	return 0;
}
