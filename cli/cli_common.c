#include "cli/cli_common.h"
#include "cli/cli_trust.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#include "common/cn_error.h"
#include "engine/cn_target_local.h"
#include "net/cn_pbs.h"
#include "net/cn_pbs_source.h"
#include "net/cn_pbs_target.h"
#include "net/cn_s3.h"
#include "net/cn_s3_source.h"
#include "net/cn_s3_target.h"
#include "store/cn_datastore.h"
#include "store/cn_keyfile.h"

int cli_parse_common_only(struct cli_common *c, int argc, char **argv, int first,
			  void (*help)(FILE *f))
{
	static const struct option opts[] = {CLI_COMMON_LONG_OPTIONS, {0}};
	int o, rc;
	optind = first;
	while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		if ((rc = cli_common_option(c, o, optarg)) < 0)
			return -rc;
		if (rc)
			continue;
		if (o == 'h') {
			help(stdout);
			return CLI_EXIT_OK;
		}
		return cli_usage_error(c->cmd, "unknown option");
	}
	return -1;
}

int cli_common_option(struct cli_common *c, int opt, const char *arg)
{
	switch (opt) {
	case OPT_STORE:
		if (c->nstores == CLI_MAX_ENDPOINTS)
			return -cli_usage_error(c->cmd, "at most %d --store options", CLI_MAX_ENDPOINTS);
		c->stores[c->nstores++] = arg;
		return 1;
	case OPT_REPOSITORY:
		if (c->nrepos == CLI_MAX_ENDPOINTS)
			return -cli_usage_error(c->cmd, "at most %d --repository options",
						CLI_MAX_ENDPOINTS);
		c->repos[c->nrepos++] = arg;
		return 1;
	case OPT_FINGERPRINT: {
		uint8_t fp[32];
		if (c->nfps == CLI_MAX_ENDPOINTS)
			return -cli_usage_error(c->cmd, "at most %d --fingerprint options",
						CLI_MAX_ENDPOINTS);
		if (*arg && cn_pbs_fingerprint_parse(arg, fp) < 0)
			return -cli_usage_error(c->cmd, "--fingerprint: %s", cn_error_message());
		c->fps[c->nfps++] = arg;
		return 1;
	}
	case OPT_KEYFILE:
		c->keyfile = arg;
		return 1;
	case OPT_NS:
		if (cn_snapshot_check_ns(arg) < 0)
			return -cli_usage_error(c->cmd, "%s", cn_error_message());
		c->ns = arg;
		return 1;
	case OPT_OUTPUT_FORMAT:
		if (!strcmp(arg, "json") || !strcmp(arg, "json-pretty"))
			c->json = 1;
		else if (!strcmp(arg, "text"))
			c->json = 0;
		else
			return -cli_usage_error(c->cmd, "--output-format is text or json, not '%s'", arg);
		return 1;
	default:
		return 0;
	}
}

void cli_default_store(char *out, size_t len)
{
	const char *env = getenv("CAIRN_STORE");
	const char *xdg = getenv("XDG_DATA_HOME");
	const char *home = getenv("HOME");
	if (env && *env)
		snprintf(out, len, "%s", env);
	else if (geteuid() == 0)
		snprintf(out, len, "/var/lib/cairn");
	else if (xdg && *xdg)
		snprintf(out, len, "%s/cairn", xdg);
	else
		snprintf(out, len, "%s/.local/share/cairn", home ? home : ".");
}

void cli_config_file(const char *name, char *out, size_t len)
{
	const char *xdg = getenv("XDG_CONFIG_HOME");
	const char *home = getenv("HOME");
	if (xdg && *xdg)
		snprintf(out, len, "%s/cairn/%s", xdg, name);
	else
		snprintf(out, len, "%s/.config/cairn/%s", home ? home : ".", name);
}

static int open_store(const char *path, int create, struct cli_endpoint *e)
{
	struct stat st;
	int exists = stat(path, &st) == 0;
	if (!exists && !(create & CLI_OPEN_CREATE)) {
		fprintf(stderr, "cairn: no datastore at %s (make one with 'cairn backup', or give "
				"--store DIR)\n", path);
		return CLI_EXIT_ERROR;
	}
	if (!exists) {
		int r = cn_mkdir_p(path, 0700);
		if (r < 0) {
			fprintf(stderr, "cairn: %s\n", cn_error_message());
			return cli_exit_code(r);
		}
		rmdir(path); /* the datastore creates the last component itself */
	}
	char mark[4096];
	snprintf(mark, sizeof(mark), "%s/.chunks", path);
	int is_store = stat(mark, &st) == 0;
	if (exists && !is_store && !(create & CLI_OPEN_CREATE)) {
		fprintf(stderr, "cairn: %s is not a datastore (no .chunks directory)\n", path);
		return CLI_EXIT_ERROR;
	}
	struct cn_datastore_opts o;
	cn_datastore_opts_init(&o);
	o.skip_index_check = (create & CLI_OPEN_NO_INDEX) != 0;
	int r = cn_datastore_open(path, !is_store, &o, &e->ds);
	if (r < 0) {
		fprintf(stderr, "cairn: datastore %s: %s\n", path, cn_error_message());
		return cli_exit_code(r);
	}
	snprintf(e->name, sizeof(e->name), "local:%s", path);
	return 0;
}

static int open_repo(const struct cli_common *c, const char *repo, const char *pin,
		     int env_pin, struct cli_endpoint *e)
{
	struct cn_pbs *pbs;
	int r = cli_trust_connect(c->cmd, repo, pin, env_pin, &pbs);
	if (r < 0) {
		fprintf(stderr, "cairn: repository %s: %s\n", repo ? repo : "$PBS_REPOSITORY",
			cn_error_message());
		return cli_exit_code(r);
	}
	e->pbs = pbs;
	cn_pbs_name(pbs, e->name, sizeof(e->name));
	return 0;
}

int cli_is_s3(const char *store)
{
	return strncmp(store, "s3://", 5) == 0;
}

int cli_open_s3(struct cn_s3_config *cfg, struct cli_endpoint *e)
{
	struct cn_s3 *s3 = NULL;
	int r = cn_s3_config_resolve(cfg);
	if (r == 0)
		r = cn_s3_new(cfg, &s3);
	explicit_bzero(cfg->secret_key, sizeof(cfg->secret_key));
	explicit_bzero(cfg->session_token, sizeof(cfg->session_token));
	if (r == 0)
		r = cn_s3_check_bucket(s3);
	if (r < 0) {
		cn_s3_free(s3);
		return r;
	}
	e->s3 = s3;
	snprintf(e->name, sizeof(e->name), "%s", cn_s3_name(s3));
	return 0;
}

static int open_s3_url(const char *url, struct cli_endpoint *e)
{
	struct cn_s3_config cfg;
	memset(&cfg, 0, sizeof(cfg));
	int r = cn_s3_config_parse_url(url, &cfg);
	return r < 0 ? r : cli_open_s3(&cfg, e);
}

int cli_open_endpoints(const struct cli_common *c, int create, size_t max,
		       struct cli_endpoints *eps)
{
	memset(eps, 0, sizeof(*eps));
	size_t want = c->nstores + c->nrepos;
	const char *env_repo = getenv("PBS_REPOSITORY");
	if (want == 0 && env_repo && *env_repo)
		want = 1;
	if (want > max) {
		cli_usage_error(c->cmd, "this command reads from one place: give one --store or "
					"--repository");
		return CLI_EXIT_USAGE;
	}
	/* Pins pair with repositories in order; PBS_FINGERPRINT names one
	 * server, so it stands in only where one repository is selected. */
	size_t nrepos = c->nrepos ? c->nrepos : (size_t)(c->nstores == 0 && env_repo && *env_repo);
	if (c->nfps && c->nfps != nrepos) {
		cli_usage_error(c->cmd, "%zu --fingerprint option(s) for %zu repository(ies): give "
					"one per --repository, in the same order ('' for none)",
				c->nfps, nrepos);
		return CLI_EXIT_USAGE;
	}
	int env_pin = c->nfps == 0 && nrepos == 1;
	int partial = (create & CLI_OPEN_PARTIAL) != 0;
	int r = 0, first = 0;
	char path[4096];
	cli_default_store(path, sizeof(path));
	size_t nplaces = want ? want : 1; /* nothing selected: the default store */
	for (size_t i = 0; i < nplaces && (!r || partial); i++) {
		struct cli_endpoint *e = &eps->e[eps->n];
		const char *what;
		if (i < c->nstores && cli_is_s3(c->stores[i]) && !(create & CLI_OPEN_S3)) {
			what = c->stores[i];
			fprintf(stderr, "cairn %s: s3:// stores are not supported by '%s' yet (%s)\n",
				c->cmd, c->cmd, what);
			r = CLI_EXIT_USAGE;
		} else if (i < c->nstores && cli_is_s3(c->stores[i])) {
			what = c->stores[i];
			r = open_s3_url(what, e);
			if (r < 0) {
				fprintf(stderr, "cairn: %s: %s\n", what, cn_error_message());
				r = cli_exit_code(r);
			}
		} else if (i < c->nstores) {
			what = c->stores[i];
			r = open_store(what, create, e);
		} else if (i - c->nstores < c->nrepos) {
			size_t k = i - c->nstores;
			what = c->repos[k];
			r = open_repo(c, what, c->nfps ? c->fps[k] : NULL, env_pin, e);
		} else if (env_repo && *env_repo) {
			what = env_repo;
			r = open_repo(c, NULL, c->nfps ? c->fps[0] : NULL, env_pin, e);
		} else {
			what = path;
			r = open_store(path, create, e);
		}
		if (r == 0) {
			eps->n++;
			continue;
		}
		if (!first)
			first = r;
		if (partial) {
			memset(e, 0, sizeof(*e));
			snprintf(eps->failed[eps->nfailed++], sizeof(eps->failed[0]), "%.255s", what);
		}
	}
	if (partial && eps->n > 0 && eps->nfailed > 0) {
		for (size_t i = 0; i < eps->nfailed; i++)
			fprintf(stderr, "cairn %s: %s could not be opened (see above); going on without "
					"it\n", c->cmd, eps->failed[i]);
		return 0;
	}
	if (first) {
		if (partial && eps->nfailed > 1)
			fprintf(stderr, "cairn %s: none of the %zu targets could be opened\n", c->cmd,
				eps->nfailed);
		cli_close_endpoints(eps);
	}
	return first;
}

void cli_close_endpoints(struct cli_endpoints *eps)
{
	for (size_t i = 0; i < eps->n; i++) {
		cn_datastore_close(eps->e[i].ds);
		cn_pbs_free(eps->e[i].pbs);
		cn_s3_free(eps->e[i].s3);
	}
	eps->n = 0;
}

int cli_endpoint_target(struct cli_endpoint *e, struct cn_target **out)
{
	if (e->ds)
		return cn_target_local_new(e->ds, out);
	if (e->s3)
		return cn_s3_target_new(e->s3, NULL, out);
	return cn_pbs_target_new(e->pbs, NULL, out);
}

int cli_endpoint_source(struct cli_endpoint *e, struct cn_source **out)
{
	if (e->ds)
		return cn_source_local_new(e->ds, out);
	if (e->s3)
		return cn_s3_source_new(e->s3, out);
	return cn_pbs_source_new(e->pbs, out);
}

int cli_read_password(const char *prompt, char *buf, size_t len)
{
	int fd = open("/dev/tty", O_RDWR | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	struct termios old, quiet;
	int have = tcgetattr(fd, &old) == 0;
	if (have) {
		quiet = old;
		quiet.c_lflag &= ~(tcflag_t)ECHO;
		tcsetattr(fd, TCSAFLUSH, &quiet);
	}
	(void)!write(fd, prompt, strlen(prompt));
	ssize_t n = read(fd, buf, len - 1);
	(void)!write(fd, "\n", 1);
	if (have)
		tcsetattr(fd, TCSAFLUSH, &old);
	close(fd);
	if (n < 0)
		return -EIO;
	buf[n] = 0;
	buf[strcspn(buf, "\r\n")] = 0;
	return 0;
}

int cli_load_key_file(const char *keyfile, const char *password, struct cn_crypt_config **crypt)
{
	*crypt = NULL;
	uint8_t *json;
	size_t len;
	int r = cn_read_file(keyfile, 1u << 20, &json, &len);
	struct cn_keyfile *kf = NULL;
	if (r == 0) {
		r = cn_keyfile_parse(json, len, &kf);
		explicit_bzero(json, len);
		free(json);
	}
	if (r < 0)
		return cn_error_prefix(r, "key file %s", keyfile);
	char pw[1024] = "";
	if (cn_keyfile_kdf(kf) != CN_KDF_NONE) {
		const char *env = getenv("PBS_ENCRYPTION_PASSWORD");
		if (password)
			snprintf(pw, sizeof(pw), "%s", password);
		else if (env)
			snprintf(pw, sizeof(pw), "%s", env);
		else if (cli_read_password("Encryption key password: ", pw, sizeof(pw)) < 0) {
			cn_keyfile_free(kf);
			return cn_error_set(-EINVAL, "key file %s needs a password: set "
						     "PBS_ENCRYPTION_PASSWORD or run on a terminal", keyfile);
		}
	}
	uint8_t key[32];
	r = cn_keyfile_decrypt(kf, pw, strlen(pw), key, NULL);
	cn_keyfile_free(kf);
	explicit_bzero(pw, sizeof(pw));
	if (r == 0)
		r = cn_crypt_config_new(key, crypt);
	explicit_bzero(key, sizeof(key));
	return r < 0 ? cn_error_prefix(r, "key file %s", keyfile) : 0;
}

int cli_load_key(const struct cli_common *c, struct cn_crypt_config **crypt)
{
	*crypt = NULL;
	if (!c->keyfile)
		return 0;
	if (cli_load_key_file(c->keyfile, NULL, crypt) < 0) {
		fprintf(stderr, "cairn: %s\n", cn_error_message());
		return CLI_EXIT_ERROR;
	}
	return 0;
}

int cli_exit_code(int err)
{
	if (cn_error_is_corruption(err))
		return CLI_EXIT_CORRUPT;
	switch (err) {
	case 0:
		return CLI_EXIT_OK;
	case -ENOSPC:
	case -EDQUOT:
		return CLI_EXIT_NOSPACE;
	case -CN_E_LOCKED:
		return CLI_EXIT_LOCKED;
	default:
		return CLI_EXIT_ERROR;
	}
}

int cli_stdout_done(void)
{
	errno = 0;
	if (fflush(stdout) == 0 && !ferror(stdout))
		return 0;
	int e = errno ? errno : EIO;
	if (e == EPIPE)
		return 0;
	return cn_error_sys(-e, "writing the listing");
}

int cli_fail(const struct cli_common *c, int err, const char *context)
{
	const char *msg = cn_error_message();
	if (!*msg)
		msg = cn_strerror(err);
	cli_progress_done();
	if (context && *context)
		fprintf(stderr, "cairn %s: %s: %s\n", c->cmd, context, msg);
	else
		fprintf(stderr, "cairn %s: %s\n", c->cmd, msg);
	int code = cli_exit_code(err);
	if (c->json)
		cli_json_print(json_pack("{s:s, s:s, s:i}", "error", msg, "context",
					 context ? context : "", "exit-code", code));
	return code;
}

int cli_parse_snapshot(const struct cli_common *c, const char *arg, int allow_group,
		       struct cn_snapshot_id *id)
{
	memset(id, 0, sizeof(*id));
	if (c->ns)
		snprintf(id->ns, sizeof(id->ns), "%s", c->ns);
	if (cn_snapshot_parse(arg, id) == 0)
		return 0;
	const char *slash = strchr(arg, '/');
	if (allow_group && slash && !strchr(slash + 1, '/') &&
	    (size_t)(slash - arg) < sizeof(id->type) &&
	    strlen(slash + 1) < sizeof(id->id)) {
		memcpy(id->type, arg, (size_t)(slash - arg));
		id->type[slash - arg] = 0;
		snprintf(id->id, sizeof(id->id), "%s", slash + 1);
		if (cn_snapshot_check_type(id->type) == 0 && cn_snapshot_check_id(id->id) == 0)
			return 0;
	}
	cli_usage_error(c->cmd, "'%s' is not a snapshot (TYPE/ID/TIME, e.g. "
				"host/nas/2024-05-01T02:00:00Z)%s", arg,
			allow_group ? " or a group (host/nas)" : "");
	return CLI_EXIT_USAGE;
}

int cli_latest_snapshot(const struct cli_common *c, struct cn_source *src,
			struct cn_snapshot_id *id)
{
	if (id->time)
		return 0;
	struct cn_snapshot_info *list;
	size_t n;
	int r = src->ops->list_snapshots(src, id, &list, &n);
	if (r < 0)
		return cli_fail(c, r, "listing snapshots");
	int found = 0;
	for (size_t i = 0; i < n; i++)
		if (!strcmp(list[i].id.type, id->type) && !strcmp(list[i].id.id, id->id) &&
		    list[i].id.time > id->time) {
			id->time = list[i].id.time;
			found = 1;
		}
	free(list);
	if (!found) {
		fprintf(stderr, "cairn %s: group %s/%s has no snapshot\n", c->cmd, id->type, id->id);
		return CLI_EXIT_ERROR;
	}
	return 0;
}

void cli_snapshot_text(const struct cn_snapshot_id *id, char *out, size_t len)
{
	if (cn_snapshot_path(id, out, len) < 0)
		snprintf(out, len, "%s/%s", id->type, id->id);
}

void cli_human_bytes(uint64_t n, char *out, size_t len)
{
	static const char *units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
	double v = (double)n;
	size_t u = 0;
	while (v >= 1024 && u + 1 < CN_ARRAY_SIZE(units)) {
		v /= 1024;
		u++;
	}
	if (u == 0)
		snprintf(out, len, "%llu B", (unsigned long long)n);
	else
		snprintf(out, len, "%.2f %s", v, units[u]);
}

static int progress_active;

int cli_progress_enabled(void)
{
	return isatty(STDERR_FILENO);
}

void cli_progress_line(const char *fmt, ...)
{
	if (!cli_progress_enabled())
		return;
	char line[256];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	fprintf(stderr, "\r\033[K%s", line);
	fflush(stderr);
	progress_active = 1;
}

void cli_progress_done(void)
{
	if (progress_active) {
		fprintf(stderr, "\r\033[K");
		fflush(stderr);
		progress_active = 0;
	}
}

void cli_json_print(json_t *v)
{
	if (!v)
		return;
	json_dumpf(v, stdout, JSON_INDENT(2) | JSON_SORT_KEYS);
	fputc('\n', stdout);
	json_decref(v);
}
