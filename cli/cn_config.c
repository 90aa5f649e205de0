/* cn_config — see cn_config.h. libinih does the INI syntax; a line-counting
 * reader wrapped around it gives every handler call its line number and
 * registers section headers itself (inih does not report empty sections),
 * so unknown sections and keys are reported with FILE:LINE. */
#include "cli/cn_config.h"

#include <ctype.h>
#include <stdarg.h>
#include <errno.h>
#include <fcntl.h>
#include <ini.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/cn_error.h"
#include "common/cn_snapshot.h"
#include "engine/cn_backup.h"
#include "pxar/cn_pattern.h"
#include "net/cn_pbs_repo.h"
#include "net/cn_s3.h"

const char *const cn_config_syncthing_excludes[] = {
	".stfolder", ".stversions", ".syncthing.*.tmp", "~syncthing~*.tmp",
};
const size_t cn_config_n_syncthing_excludes = CN_ARRAY_SIZE(cn_config_syncthing_excludes);

#define MAX_LINE 4096
#define INIH_MAX_SECTION 50 /* inih's MAX_SECTION: longer headers are cut */

enum section_kind { SEC_NONE, SEC_CAIRN, SEC_SOURCE, SEC_TARGET };

struct parse_ctx {
	FILE *f;
	const char *path;
	int line;             /* line last handed to inih */
	int err;              /* first error (negative) */
	char msg[1024];
	struct cn_config *c;
	enum section_kind kind;
	size_t index;         /* current source/target */
	/* keys seen in the current section (single-valued ones may not repeat) */
	char seen[32][32];
	size_t n_seen;
};

static int fail(struct parse_ctx *p, int line, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static int fail(struct parse_ctx *p, int line, const char *fmt, ...)
{
	if (p->err)
		return 0;
	char what[768];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	snprintf(p->msg, sizeof(p->msg), "%s:%d: %s", p->path, line, what);
	p->err = -EINVAL;
	return 0;
}

static char *xstrdup(struct parse_ctx *p, const char *s)
{
	char *d = strdup(s);
	if (!d && !p->err) {
		p->err = -ENOMEM;
		snprintf(p->msg, sizeof(p->msg), "out of memory");
	}
	return d;
}

static int parse_bool(const char *v, int *out)
{
	static const char *yes[] = {"yes", "true", "on", "1"}, *no[] = {"no", "false", "off", "0"};
	for (size_t i = 0; i < 4; i++) {
		if (!strcasecmp(v, yes[i])) {
			*out = 1;
			return 0;
		}
		if (!strcasecmp(v, no[i])) {
			*out = 0;
			return 0;
		}
	}
	return -1;
}

static int parse_uint(const char *v, unsigned max, unsigned *out)
{
	char *end;
	errno = 0;
	unsigned long n = strtoul(v, &end, 10);
	if (!*v || !isdigit((unsigned char)*v) || *end || errno || n > max)
		return -1;
	*out = (unsigned)n;
	return 0;
}

/* A new [source NAME] / [target NAME] / [cairn] header at line. */
static void open_section(struct parse_ctx *p, const char *hdr, int line)
{
	p->n_seen = 0;
	p->kind = SEC_NONE;
	char kind[16], name[64], extra[2];
	int n = sscanf(hdr, "%15s %63s %1s", kind, name, extra);
	if (n == 1 && !strcmp(kind, "cairn")) {
		p->kind = SEC_CAIRN;
		return;
	}
	if (n != 2 || (strcmp(kind, "source") && strcmp(kind, "target"))) {
		fail(p, line, "unknown section [%s] (expected [cairn], [source NAME] or "
			      "[target NAME])", hdr);
		return;
	}
	for (const char *s = name; *s; s++)
		if (!isalnum((unsigned char)*s) && !strchr("-_.", *s)) {
			fail(p, line, "section name '%s' may only hold letters, digits, '-', '_' "
				      "and '.'", name);
			return;
		}
	struct cn_config *c = p->c;
	if (!strcmp(kind, "source")) {
		for (size_t i = 0; i < c->n_sources; i++)
			if (!strcmp(c->sources[i].name, name)) {
				fail(p, line, "source '%s' is defined twice (first at line %d)", name,
				     c->sources[i].line);
				return;
			}
		void *n2 = realloc(c->sources, (c->n_sources + 1) * sizeof(*c->sources));
		if (!n2) {
			fail(p, line, "out of memory");
			return;
		}
		c->sources = n2;
		struct cn_config_source *s = &c->sources[c->n_sources];
		memset(s, 0, sizeof(*s));
		s->line = line;
		s->syncthing_excludes = 1;
		s->name = xstrdup(p, name);
		p->index = c->n_sources++;
		p->kind = SEC_SOURCE;
	} else {
		for (size_t i = 0; i < c->n_targets; i++)
			if (!strcmp(c->targets[i].name, name)) {
				fail(p, line, "target '%s' is defined twice (first at line %d)", name,
				     c->targets[i].line);
				return;
			}
		void *n2 = realloc(c->targets, (c->n_targets + 1) * sizeof(*c->targets));
		if (!n2) {
			fail(p, line, "out of memory");
			return;
		}
		c->targets = n2;
		struct cn_config_target *t = &c->targets[c->n_targets];
		memset(t, 0, sizeof(*t));
		t->line = line;
		t->kind = -1;
		t->gc = 1;
		t->name = xstrdup(p, name);
		p->index = c->n_targets++;
		p->kind = SEC_TARGET;
	}
}

/* fgets-like reader: counts lines, rejects lines longer than inih's
 * buffer, and handles section headers before inih sees them. */
static char *reader(char *str, int num, void *stream)
{
	struct parse_ctx *p = stream;
	if (p->err)
		return NULL;
	if (!fgets(str, num, p->f))
		return NULL;
	p->line++;
	size_t len = strlen(str);
	if (len == (size_t)num - 1 && str[len - 1] != '\n' && !feof(p->f)) {
		fail(p, p->line, "line too long (at most %d characters)", num - 3);
		return NULL;
	}
	const char *s = str;
	while (*s == ' ' || *s == '\t')
		s++;
	if (*s == '[') {
		const char *end = strchr(s, ']');
		char hdr[256];
		if (end && (size_t)(end - s - 1) < sizeof(hdr)) {
			memcpy(hdr, s + 1, (size_t)(end - s - 1));
			hdr[end - s - 1] = 0;
			if (strlen(hdr) >= INIH_MAX_SECTION) {
				fail(p, p->line, "section header too long");
				return NULL;
			}
			open_section(p, hdr, p->line);
		}
	}
	return str;
}

/* Single-valued keys may appear once per section. */
static int once(struct parse_ctx *p, const char *name)
{
	for (size_t i = 0; i < p->n_seen; i++)
		if (!strcmp(p->seen[i], name))
			return fail(p, p->line, "'%s' is given twice in this section", name);
	if (p->n_seen < CN_ARRAY_SIZE(p->seen))
		snprintf(p->seen[p->n_seen++], sizeof(p->seen[0]), "%s", name);
	return 1;
}

static int set_str(struct parse_ctx *p, const char *name, const char *value, char **slot)
{
	if (!once(p, name))
		return 0;
	if (!*value)
		return fail(p, p->line, "'%s' needs a value", name);
	*slot = xstrdup(p, value);
	return *slot != NULL;
}

static int set_bool(struct parse_ctx *p, const char *name, const char *value, int *slot)
{
	if (!once(p, name))
		return 0;
	if (parse_bool(value, slot) < 0)
		return fail(p, p->line, "'%s' takes yes or no, not '%s'", name, value);
	return 1;
}

static int set_uint(struct parse_ctx *p, const char *name, const char *value, unsigned max,
		    unsigned *slot)
{
	if (!once(p, name))
		return 0;
	if (parse_uint(value, max, slot) < 0)
		return fail(p, p->line, "'%s' takes a number from 0 to %u, not '%s'", name, max,
			    value);
	return 1;
}

static int add_exclude(struct parse_ctx *p, struct cn_config_source *s, const char *pattern)
{
	struct cn_pattern *pat;
	size_t len = strlen(pattern);
	const char *body = pattern;
	enum cn_match_type type = CN_MATCH_EXCLUDE;
	if (*body == '!') {
		body++;
		len--;
		type = CN_MATCH_INCLUDE;
	}
	if (cn_pattern_parse(body, len, type, &pat) < 0)
		return fail(p, p->line, "exclude pattern '%s': %s", pattern, cn_error_message());
	cn_pattern_free(pat);
	char **n = realloc(s->excludes, (s->n_excludes + 1) * sizeof(char *));
	if (!n)
		return fail(p, p->line, "out of memory");
	s->excludes = n;
	if (!(s->excludes[s->n_excludes] = xstrdup(p, pattern)))
		return 0;
	s->n_excludes++;
	return 1;
}

static int check_secret_file(const char *what, const char *path);

static int cairn_key(struct parse_ctx *p, const char *name, const char *value)
{
	struct cn_config *c = p->c;
	if (!strcmp(name, "backup-id")) {
		if (cn_snapshot_check_id(value) < 0)
			return fail(p, p->line, "backup-id: %s", cn_error_message());
		return set_str(p, name, value, &c->backup_id);
	}
	if (!strcmp(name, "state-dir"))
		return set_str(p, name, value, &c->state_dir);
	if (!strcmp(name, "metrics-file"))
		return set_str(p, name, value, &c->metrics_file);
	if (!strcmp(name, "keyfile") || !strcmp(name, "keyfile-password-file")) {
		int is_key = !strcmp(name, "keyfile");
		if (value[0] != '/')
			return fail(p, p->line, "%s must be an absolute path, not '%s'", name, value);
		if (check_secret_file(is_key ? "key file" : "key password file", value) < 0)
			return fail(p, p->line, "%s", cn_error_message());
		return set_str(p, name, value, is_key ? &c->keyfile : &c->keyfile_password_file);
	}
	if (!strcmp(name, "on-success"))
		return set_str(p, name, value, &c->on_success);
	if (!strcmp(name, "on-failure"))
		return set_str(p, name, value, &c->on_failure);
	if (!strcmp(name, "hook-timeout"))
		return set_uint(p, name, value, 86400, &c->hook_timeout);
	if (!strcmp(name, "threads"))
		return set_uint(p, name, value, 256, &c->threads);
	if (!strcmp(name, "stall-timeout")) {
		if (!once(p, name))
			return 0;
		if (parse_uint(value, 86400, &c->stall_timeout) < 0 || c->stall_timeout == 0)
			return fail(p, p->line, "'stall-timeout' takes a number from 1 to 86400, not '%s'",
				    value);
		return 1;
	}
	if (!strcmp(name, "restore-test-sample"))
		return set_uint(p, name, value, 100000, &c->restore_test_sample);
	if (!strcmp(name, "restore-test-every-days"))
		return set_uint(p, name, value, 3650, &c->restore_test_every);
	if (!strcmp(name, "history-keep"))
		return set_uint(p, name, value, 1000000, &c->history_keep);
	return fail(p, p->line, "unknown key '%s' in [cairn]", name);
}

static int source_key(struct parse_ctx *p, const char *name, const char *value)
{
	struct cn_config_source *s = &p->c->sources[p->index];
	if (!strcmp(name, "archive")) {
		if (cn_backup_check_archive_name(value) < 0)
			return fail(p, p->line, "archive: %s", cn_error_message());
		return set_str(p, name, value, &s->archive);
	}
	if (!strcmp(name, "path")) {
		if (value[0] != '/')
			return fail(p, p->line, "path must be absolute, not '%s'", value);
		return set_str(p, name, value, &s->path);
	}
	if (!strcmp(name, "zfs-dataset")) {
		if (!*value || value[0] == '/' || strchr(value, '@') || strchr(value, ' '))
			return fail(p, p->line, "zfs-dataset is a dataset name like rpool/media, not "
						"'%s'", value);
		return set_str(p, name, value, &s->zfs_dataset);
	}
	if (!strcmp(name, "backup-id")) {
		if (cn_snapshot_check_id(value) < 0)
			return fail(p, p->line, "backup-id: %s", cn_error_message());
		return set_str(p, name, value, &s->backup_id);
	}
	if (!strcmp(name, "backup-type")) {
		if (cn_snapshot_check_type(value) < 0)
			return fail(p, p->line, "backup-type: %s", cn_error_message());
		return set_str(p, name, value, &s->backup_type);
	}
	if (!strcmp(name, "ns")) {
		if (cn_snapshot_check_ns(value) < 0)
			return fail(p, p->line, "ns: %s", cn_error_message());
		return set_str(p, name, value, &s->ns);
	}
	if (!strcmp(name, "exclude")) {
		if (!*value)
			return fail(p, p->line, "exclude needs a pattern");
		return add_exclude(p, s, value);
	}
	if (!strcmp(name, "syncthing-excludes"))
		return set_bool(p, name, value, &s->syncthing_excludes);
	if (!strcmp(name, "all-file-systems"))
		return set_bool(p, name, value, &s->all_file_systems);
	if (!strcmp(name, "skip-lost-found"))
		return set_bool(p, name, value, &s->skip_lost_found);
	if (!strcmp(name, "change-detection-mode")) {
		static const char *modes[] = {"legacy", "data", "metadata"};
		static const int values[] = {CN_CDM_LEGACY, CN_CDM_DATA, CN_CDM_METADATA};
		if (!once(p, name))
			return 0;
		for (size_t i = 0; i < CN_ARRAY_SIZE(modes); i++)
			if (!strcmp(value, modes[i])) {
				s->change_detection = values[i];
				return 1;
			}
		return fail(p, p->line, "change-detection-mode is legacy, data or metadata, not '%s'", value);
	}
	return fail(p, p->line, "unknown key '%s' in [source %s]", name, s->name);
}

static int target_key(struct parse_ctx *p, const char *name, const char *value)
{
	struct cn_config_target *t = &p->c->targets[p->index];
	static const char *keeps[] = {"keep-last", "keep-hourly", "keep-daily", "keep-weekly",
				      "keep-monthly", "keep-yearly"};
	unsigned *slots[] = {&t->keep.last, &t->keep.hourly, &t->keep.daily, &t->keep.weekly,
			     &t->keep.monthly, &t->keep.yearly};
	for (size_t i = 0; i < CN_ARRAY_SIZE(keeps); i++)
		if (!strcmp(name, keeps[i]))
			return set_uint(p, name, value, 1000000, slots[i]);
	if (!strcmp(name, "type")) {
		if (!once(p, name))
			return 0;
		if (!strcmp(value, "local"))
			t->kind = CN_CONFIG_LOCAL;
		else if (!strcmp(value, "pbs"))
			t->kind = CN_CONFIG_PBS;
		else if (!strcmp(value, "s3"))
			t->kind = CN_CONFIG_S3;
		else
			return fail(p, p->line, "type is local, pbs or s3, not '%s'", value);
		return 1;
	}
	if (!strcmp(name, "path")) {
		if (value[0] != '/')
			return fail(p, p->line, "path must be absolute, not '%s'", value);
		return set_str(p, name, value, &t->path);
	}
	if (!strcmp(name, "repository")) {
		struct cn_pbs_repo repo;
		if (cn_pbs_repo_parse(value, &repo) < 0)
			return fail(p, p->line, "repository: %s", cn_error_message());
		return set_str(p, name, value, &t->repository);
	}
	if (!strcmp(name, "fingerprint")) {
		uint8_t fp[32];
		if (cn_pbs_fingerprint_parse(value, fp) < 0)
			return fail(p, p->line, "fingerprint: %s", cn_error_message());
		return set_str(p, name, value, &t->fingerprint);
	}
	if (!strcmp(name, "token-file")) {
		if (value[0] != '/')
			return fail(p, p->line, "token-file must be an absolute path, not '%s'", value);
		if (cn_config_check_token_file(value) < 0)
			return fail(p, p->line, "%s", cn_error_message());
		return set_str(p, name, value, &t->token_file);
	}
	if (!strcmp(name, "bucket") || !strcmp(name, "prefix")) {
		/* checked as the s3:// URL of --store checks them */
		int is_bucket = name[0] == 'b';
		struct cn_s3_config sc;
		char url[1200];
		snprintf(url, sizeof(url), "s3://%s%s", is_bucket ? "" : "b/", value);
		if (is_bucket && strchr(value, '/'))
			return fail(p, p->line, "bucket: a bucket name has no '/'");
		if (cn_s3_config_parse_url(url, &sc) < 0)
			return fail(p, p->line, "%s: %s", name, cn_error_message());
		return set_str(p, name, is_bucket ? sc.bucket : sc.prefix,
			       is_bucket ? &t->bucket : &t->prefix);
	}
	if (!strcmp(name, "endpoint")) {
		if (strncmp(value, "http://", 7) != 0 && strncmp(value, "https://", 8) != 0)
			return fail(p, p->line, "endpoint must begin with http:// or https://, not '%s'",
				    value);
		return set_str(p, name, value, &t->endpoint);
	}
	if (!strcmp(name, "region"))
		return set_str(p, name, value, &t->region);
	if (!strcmp(name, "profile"))
		return set_str(p, name, value, &t->profile);
	if (!strcmp(name, "credentials-file")) {
		if (value[0] != '/')
			return fail(p, p->line, "credentials-file must be an absolute path, not '%s'",
				    value);
		if (cn_config_check_token_file(value) < 0)
			return fail(p, p->line, "%s", cn_error_message());
		return set_str(p, name, value, &t->credentials_file);
	}
	if (!strcmp(name, "addressing")) {
		if (!once(p, name))
			return 0;
		if (!strcmp(value, "path"))
			t->addressing = CN_S3_ADDR_PATH;
		else if (!strcmp(value, "virtual"))
			t->addressing = CN_S3_ADDR_VIRTUAL;
		else
			return fail(p, p->line, "addressing is path or virtual, not '%s'", value);
		return 1;
	}
	if (!strcmp(name, "gc"))
		return set_bool(p, name, value, &t->gc);
	if (!strcmp(name, "catch-up"))
		return set_bool(p, name, value, &t->catch_up);
	return fail(p, p->line, "unknown key '%s' in [target %s]", name, t->name);
}

static int handler(void *user, const char *section, const char *name, const char *value)
{
	struct parse_ctx *p = user;
	(void)section; /* the reader tracked it, with its line */
	if (p->err)
		return 0;
	switch (p->kind) {
	case SEC_CAIRN:
		return cairn_key(p, name, value);
	case SEC_SOURCE:
		return source_key(p, name, value);
	case SEC_TARGET:
		return target_key(p, name, value);
	default:
		return fail(p, p->line, "'%s' outside a section (start with [cairn], [source NAME] "
					"or [target NAME])", name);
	}
}

/* Whole-file checks: required keys, combinations, uniqueness. */
static int validate(struct parse_ctx *p)
{
	struct cn_config *c = p->c;
	if (c->n_sources == 0)
		return fail(p, p->line, "no [source NAME] section");
	if (c->n_targets == 0)
		return fail(p, p->line, "no [target NAME] section");
	for (size_t i = 0; i < c->n_sources; i++) {
		struct cn_config_source *s = &c->sources[i];
		if (!s->path && !s->zfs_dataset)
			return fail(p, s->line, "source '%s' needs a path (or a zfs-dataset)", s->name);
		if (!s->archive) {
			char a[128];
			snprintf(a, sizeof(a), "%s.pxar", s->name);
			if (cn_backup_check_archive_name(a) < 0)
				return fail(p, s->line, "source '%s' needs an archive name: %s", s->name,
					    cn_error_message());
			if (!(s->archive = xstrdup(p, a)))
				return 0;
		}
		if (!s->backup_type && !(s->backup_type = xstrdup(p, "host")))
			return 0;
		if (s->syncthing_excludes) {
			/* defaults first, so a user's "!.stversions" can re-include */
			char **n = realloc(s->excludes, (s->n_excludes + cn_config_n_syncthing_excludes) *
								sizeof(char *));
			if (!n)
				return fail(p, s->line, "out of memory");
			s->excludes = n;
			memmove(s->excludes + cn_config_n_syncthing_excludes, s->excludes,
				s->n_excludes * sizeof(char *));
			for (size_t k = 0; k < cn_config_n_syncthing_excludes; k++)
				s->excludes[k] = NULL;
			s->n_excludes += cn_config_n_syncthing_excludes;
			for (size_t k = 0; k < cn_config_n_syncthing_excludes; k++)
				if (!(s->excludes[k] = xstrdup(p, cn_config_syncthing_excludes[k])))
					return 0;
		}
		char id[CN_BACKUP_ID_MAX + 1];
		cn_config_backup_id(c, s, id, sizeof(id));
		for (size_t j = 0; j < i; j++) {
			char id2[CN_BACKUP_ID_MAX + 1];
			cn_config_backup_id(c, &c->sources[j], id2, sizeof(id2));
			const char *ns1 = s->ns ? s->ns : "", *ns2 = c->sources[j].ns ? c->sources[j].ns : "";
			if (!strcmp(id, id2) && !strcmp(s->backup_type, c->sources[j].backup_type) &&
			    !strcmp(ns1, ns2))
				return fail(p, s->line, "sources '%s' and '%s' would both write group "
							"%s/%s: give each its own backup-id",
					    c->sources[j].name, s->name, s->backup_type, id);
		}
	}
	for (size_t i = 0; i < c->n_targets; i++) {
		struct cn_config_target *t = &c->targets[i];
		if ((int)t->kind == -1)
			return fail(p, t->line, "target '%s' needs 'type = local', 'type = pbs' or "
						"'type = s3'", t->name);
		int s3_keys = t->bucket || t->prefix || t->endpoint || t->region ||
			      t->credentials_file || t->profile || t->addressing;
		if (t->kind != CN_CONFIG_S3 && s3_keys)
			return fail(p, t->line, "target '%s' is no s3 target: bucket, prefix, endpoint, "
						"region, credentials-file, profile and addressing "
						"belong to 'type = s3'", t->name);
		if (t->kind == CN_CONFIG_S3) {
			if (!t->bucket)
				return fail(p, t->line, "s3 target '%s' needs a bucket", t->name);
			if (t->path || t->repository || t->fingerprint || t->token_file)
				return fail(p, t->line, "s3 target '%s' takes no path, repository, "
							"fingerprint or token-file", t->name);
		} else if (t->kind == CN_CONFIG_LOCAL) {
			if (!t->path)
				return fail(p, t->line, "local target '%s' needs a path", t->name);
			if (t->repository || t->fingerprint || t->token_file)
				return fail(p, t->line, "local target '%s' takes no repository, "
							"fingerprint or token-file", t->name);
		} else {
			if (!t->repository)
				return fail(p, t->line, "pbs target '%s' needs a repository", t->name);
			if (!t->token_file)
				return fail(p, t->line, "pbs target '%s' needs a token-file (the secret "
							"is never written in the config)", t->name);
			if (t->path)
				return fail(p, t->line, "pbs target '%s' takes no path", t->name);
		}
	}
	if (c->keyfile_password_file && !c->keyfile)
		return fail(p, 1, "keyfile-password-file is given but no keyfile");
	if (!c->hook_timeout)
		c->hook_timeout = 300;
	if (!c->stall_timeout)
		c->stall_timeout = 30;
	if (!c->restore_test_every)
		c->restore_test_every = 7;
	if (!c->history_keep)
		c->history_keep = 500;
	return 1;
}

int cn_config_load(const char *path, struct cn_config **out)
{
	*out = NULL;
	FILE *f = fopen(path, "re");
	if (!f)
		return cn_error_sys(-errno, "cannot open config file %s", path);
	struct cn_config *c = calloc(1, sizeof(*c));
	struct parse_ctx *p = calloc(1, sizeof(*p));
	if (!c || !p || !(c->path = strdup(path))) {
		fclose(f);
		free(p);
		cn_config_free(c);
		return cn_error_set(-ENOMEM, "out of memory");
	}
	p->f = f;
	p->path = path;
	p->c = c;
	/* Debian's libinih takes its options at run time: values verbatim
	 * (no inline comments), no continuation lines, long lines on the
	 * heap, stop at the first error so its line is the one reported. */
	ini_allow_inline_comments = false;
	ini_allow_multiline = false;
	ini_use_stack = false;
	ini_allow_realloc = false;
	ini_max_line = MAX_LINE;
	ini_initial_alloc = MAX_LINE;
	ini_stop_on_first_error = true;
	int line = ini_parse_stream(reader, p, handler, p);
	if (!p->err && ferror(f))
		p->err = cn_error_sys(-EIO, "reading %s", path);
	fclose(f);
	if (!p->err && line > 0)
		fail(p, line, "syntax error (expected KEY = VALUE, [SECTION], or a comment "
			      "starting with # or ;)");
	if (!p->err && line < 0)
		p->err = cn_error_set(-ENOMEM, "out of memory");
	if (!p->err)
		validate(p);
	int r = p->err;
	if (r < 0) {
		if (p->msg[0])
			cn_error_set(r, "%s", p->msg);
		cn_config_free(c);
	} else {
		*out = c;
	}
	free(p);
	return r;
}

void cn_config_free(struct cn_config *c)
{
	if (!c)
		return;
	for (size_t i = 0; i < c->n_sources; i++) {
		struct cn_config_source *s = &c->sources[i];
		free(s->name);
		free(s->archive);
		free(s->path);
		free(s->zfs_dataset);
		free(s->backup_id);
		free(s->backup_type);
		free(s->ns);
		for (size_t k = 0; k < s->n_excludes; k++)
			free(s->excludes[k]);
		free(s->excludes);
	}
	for (size_t i = 0; i < c->n_targets; i++) {
		struct cn_config_target *t = &c->targets[i];
		free(t->name);
		free(t->path);
		free(t->repository);
		free(t->fingerprint);
		free(t->token_file);
		free(t->bucket);
		free(t->prefix);
		free(t->endpoint);
		free(t->region);
		free(t->credentials_file);
		free(t->profile);
	}
	free(c->sources);
	free(c->targets);
	free(c->path);
	free(c->backup_id);
	free(c->state_dir);
	free(c->metrics_file);
	free(c->keyfile);
	free(c->keyfile_password_file);
	free(c->on_success);
	free(c->on_failure);
	free(c);
}

static int check_secret_fd(int fd, const char *what, const char *path)
{
	struct stat st;
	if (fstat(fd, &st) < 0)
		return cn_error_sys(-errno, "%s %s", what, path);
	if (!S_ISREG(st.st_mode))
		return cn_error_set(-EINVAL, "%s %s is not a regular file", what, path);
	if (st.st_mode & (S_IROTH | S_IWOTH))
		return cn_error_set(-EPERM, "%s %s is accessible by other users (mode %04o): "
					    "refusing to use it; run 'chmod o-rwx %s'",
				    what, path, (unsigned)(st.st_mode & 07777), path);
	return 0;
}

static int check_secret_file(const char *what, const char *path)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0) {
		if (errno == ENOENT)
			return cn_error_set(-ENOENT, "%s %s does not exist", what, path);
		if (errno == ELOOP)
			return cn_error_set(-EINVAL, "%s %s is a symbolic link", what, path);
		return cn_error_sys(-errno, "%s %s", what, path);
	}
	int r = check_secret_fd(fd, what, path);
	close(fd);
	return r;
}

int cn_config_check_token_file(const char *path)
{
	return check_secret_file("token file", path);
}

int cn_config_read_token(const struct cn_config_target *t, char *buf, size_t len)
{
	if (!t->token_file)
		return cn_error_set(-ENOENT, "target %s has no token-file", t->name);
	return cn_config_read_secret("token file", t->token_file, buf, len);
}

int cn_config_read_secret(const char *what, const char *path, char *buf, size_t len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return check_secret_file(what, path);
	int r = check_secret_fd(fd, what, path);
	ssize_t n = 0;
	if (r == 0) {
		n = read(fd, buf, len - 1);
		if (n < 0)
			r = cn_error_sys(-errno, "reading %s %s", what, path);
	}
	close(fd);
	if (r < 0)
		return r;
	buf[n] = 0;
	size_t lead = strspn(buf, " \t");
	memmove(buf, buf + lead, (size_t)n - lead + 1);
	buf[strcspn(buf, "\r\n")] = 0;
	size_t l = strlen(buf);
	while (l && isspace((unsigned char)buf[l - 1]))
		buf[--l] = 0;
	if (!l)
		return cn_error_set(-EINVAL, "%s %s is empty", what, path);
	return 0;
}

void cn_config_state_dir(const struct cn_config *c, char *out, size_t len)
{
	const char *xdg = getenv("XDG_STATE_HOME");
	const char *home = getenv("HOME");
	if (c && c->state_dir)
		snprintf(out, len, "%s", c->state_dir);
	else if (xdg && *xdg)
		snprintf(out, len, "%s/cairn", xdg);
	else if (geteuid() == 0)
		snprintf(out, len, "/var/lib/cairn");
	else
		snprintf(out, len, "%s/.local/state/cairn", home ? home : ".");
}

void cn_config_backup_id(const struct cn_config *c, const struct cn_config_source *s,
			 char *out, size_t len)
{
	if (s->backup_id) {
		snprintf(out, len, "%s", s->backup_id);
	} else if (c->backup_id) {
		snprintf(out, len, "%s", c->backup_id);
	} else {
		char host[256] = "";
		gethostname(host, sizeof(host) - 1);
		host[strcspn(host, ".")] = 0;
		snprintf(out, len, "%s", *host ? host : "localhost");
	}
}

int cn_config_keeps_something(const struct cn_config_keep *k)
{
	return k->last || k->hourly || k->daily || k->weekly || k->monthly || k->yearly;
}
