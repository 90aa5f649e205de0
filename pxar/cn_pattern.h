/* cn_pattern — exclude/include path patterns with the semantics of
 * proxmox's pathpatterns crate (git wildmatch port) as used by
 * proxmox-backup-client (--exclude, .pxarexclude) and `pxar extract`:
 *
 *  - parse: a leading '!' inverts the given match type; trailing '/'s are
 *    stripped and restrict the pattern to directories (a pattern of only
 *    slashes becomes "/" for directories); '\' escapes; empty patterns,
 *    NUL bytes, a trailing '\' and bad character classes are errors.
 *  - glob (PATH_NAME): '*' and '?' never match '/'; a double star
 *    (only as a whole path component) matches across '/', and "a/",
 *    double star, "/b" also matches "a/b"; classes [abc] [a-z] [^x]
 *    [[:digit:]] ...
 *  - a pattern matches a path (e.g. "/dir/file") if it matches the whole
 *    path or any suffix after a '/' ("file", "dir/file"), unless it is
 *    ANCHORED, then only the whole path.
 *  - in a list the LAST matching pattern decides.
 */
#ifndef CN_PATTERN_H
#define CN_PATTERN_H

#include <stddef.h>
#include <stdint.h>

enum cn_match_type {
	CN_MATCH_NONE = 0,     /* nothing matched (list result only) */
	CN_MATCH_INCLUDE = 1,
	CN_MATCH_EXCLUDE = 2,
};

/* Match flags, values as pathpatterns' MatchFlag. */
#define CN_PATTERN_ANCHORED            0x0001u
#define CN_PATTERN_MATCH_DIRECTORIES   0x0100u
#define CN_PATTERN_MATCH_REGULAR_FILES 0x0200u
#define CN_PATTERN_MATCH_SYMLINKS      0x0400u
#define CN_PATTERN_MATCH_SOCKETS       0x0800u
#define CN_PATTERN_MATCH_FIFOS         0x1000u
#define CN_PATTERN_MATCH_CHARDEVS      0x2000u
#define CN_PATTERN_MATCH_BLOCKDEVS     0x4000u
#define CN_PATTERN_ANY_FILE_TYPE       0x7f00u

struct cn_pattern;  /* opaque, one compiled pattern */

/* Parses pattern[0..len) (see above). type is the match type without '!'.
 * On success *out is a new pattern the caller frees with cn_pattern_free.
 * Returns 0 or -EINVAL with a message. */
int cn_pattern_parse(const char *pattern, size_t len, enum cn_match_type type,
		     struct cn_pattern **out);

/* Frees a pattern (NULL is fine). */
void cn_pattern_free(struct cn_pattern *p);

/* Adds flag bits (e.g. CN_PATTERN_ANCHORED). */
void cn_pattern_add_flags(struct cn_pattern *p, unsigned flags);

/* Accessors: match type, flags, and the stored glob text (without '!' and
 * trailing slashes, NUL-terminated, owned by p). */
enum cn_match_type cn_pattern_type(const struct cn_pattern *p);
unsigned cn_pattern_flags(const struct cn_pattern *p);
const char *cn_pattern_text(const struct cn_pattern *p);

/* Whether the glob alone matches text exactly (no suffix logic, no mode). */
int cn_pattern_glob_matches(const struct cn_pattern *p, const char *text, size_t len);

/* Whether p matches path (suffix rule unless ANCHORED) and, when mode is not
 * 0, whether mode's file type is allowed by p's flags. */
int cn_pattern_matches(const struct cn_pattern *p, const char *path, size_t len,
		       uint32_t mode);

/* The type of the last pattern in list[0..n) matching path/mode, or
 * CN_MATCH_NONE. */
enum cn_match_type cn_pattern_list_match(struct cn_pattern *const *list, size_t n,
					 const char *path, size_t len, uint32_t mode);

/* Whether any pattern in the list restricts file types (so the caller
 * must supply a mode). */
int cn_pattern_list_needs_mode(struct cn_pattern *const *list, size_t n);

#endif
