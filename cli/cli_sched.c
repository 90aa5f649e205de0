#include "cli/cli_sched.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/cli_common.h"
#include "cli/cn_restore_test.h"
#include "common/cn_log.h"
#include "common/cn_error.h"
#include "net/cn_pbs.h"
#include "net/cn_s3.h"
#include "store/cn_datastore.h"

int cli_sched_load(const char *cmd, const char *path, struct cn_config **cfg)
{
	if (!path)
		path = getenv("CAIRN_CONFIG");
	if (!path || !*path)
		path = CN_CONFIG_DEFAULT_PATH;
	int r = cn_config_load(path, cfg);
	if (r < 0) {
		fprintf(stderr, "cairn %s: %s\n", cmd, cn_error_message());
		if (r == -ENOENT && !strcmp(path, CN_CONFIG_DEFAULT_PATH))
			fprintf(stderr, "cairn %s: write one (see contrib/cairn.conf.example) or give "
					"--config FILE\n", cmd);
		return CLI_EXIT_CONFIG;
	}
	return 0;
}

static void print_keep(FILE *f, const struct cn_config_keep *k)
{
	if (!cn_config_keeps_something(k)) {
		fprintf(f, "no pruning (no keep-* option)");
		return;
	}
	const char *names[] = {"last", "hourly", "daily", "weekly", "monthly", "yearly"};
	const unsigned v[] = {k->last, k->hourly, k->daily, k->weekly, k->monthly, k->yearly};
	const char *sep = "keep ";
	for (size_t i = 0; i < 6; i++)
		if (v[i]) {
			fprintf(f, "%s%u %s", sep, v[i], names[i]);
			sep = ", ";
		}
}

void cli_sched_print_plan(FILE *f, const struct cn_config *c)
{
	char state[4096];
	cn_config_state_dir(c, state, sizeof(state));
	fprintf(f, "config %s: valid\n", c->path);
	fprintf(f, "a run backs up %zu source(s) in one read each to %zu target(s):\n",
		c->n_sources, c->n_targets);
	for (size_t i = 0; i < c->n_sources; i++) {
		const struct cn_config_source *s = &c->sources[i];
		char id[CN_BACKUP_ID_MAX + 1];
		cn_config_backup_id(c, s, id, sizeof(id));
		fprintf(f, "  source %s: %s -> %s%s%s%s/%s/<time>/%s\n", s->name,
			s->path ? s->path : "(the dataset's mountpoint)", s->ns ? "ns " : "",
			s->ns ? s->ns : "", s->ns ? ": " : "", s->backup_type, id, s->archive);
		fprintf(f, "  snapshot group %s/%s", s->backup_type, id);
		if (s->zfs_dataset)
			fprintf(f, ", read from a ZFS snapshot %s@cairn-<time> (destroyed after the run)",
				s->zfs_dataset);
		fprintf(f, "\n");
		for (size_t k = 0; k < s->n_excludes; k++)
			fprintf(f, "    exclude %s\n", s->excludes[k]);
	}
	for (size_t i = 0; i < c->n_targets; i++) {
		const struct cn_config_target *t = &c->targets[i];
		if (t->kind == CN_CONFIG_LOCAL)
			fprintf(f, "  target %s: local datastore %s\n", t->name, t->path);
		else if (t->kind == CN_CONFIG_S3)
			fprintf(f, "  target %s: S3 bucket %s%s%s at %s (credentials from %s%s)\n",
				t->name, t->bucket, t->prefix && t->prefix[0] ? "/" : "",
				t->prefix ? t->prefix : "",
				t->endpoint ? t->endpoint : "$AWS_ENDPOINT_URL or AWS",
				t->credentials_file ? t->credentials_file : "the environment",
				c->keyfile ? "" : ", not encrypted");
		else
			fprintf(f, "  target %s: PBS %s (%s, token file %s)\n", t->name, t->repository,
				t->fingerprint ? "pinned fingerprint" : "system CA trust", t->token_file);
		fprintf(f, "    then prune: ");
		print_keep(f, &t->keep);
		if (t->kind == CN_CONFIG_LOCAL)
			fprintf(f, "%s", t->gc ? "; then garbage collection" : "; no garbage collection");
		fprintf(f, "\n");
	}
	if (c->restore_test_sample)
		fprintf(f, "restore test: %u files per target and source, every %u day(s)\n",
			c->restore_test_sample, c->restore_test_every);
	fprintf(f, "run history in %s/history.json\n", state);
	if (c->metrics_file)
		fprintf(f, "metrics written to %s\n", c->metrics_file);
	if (c->on_success)
		fprintf(f, "on success run: %s\n", c->on_success);
	if (c->on_failure)
		fprintf(f, "on failure run: %s\n", c->on_failure);
}

int cli_sched_open_target(const struct cn_config_target *t, int create, struct cli_endpoint *e)
{
	memset(e, 0, sizeof(*e));
	if (t->kind == CN_CONFIG_LOCAL) {
		char mark[4200];
		struct stat st;
		snprintf(mark, sizeof(mark), "%s/.chunks", t->path);
		int is_store = stat(mark, &st) == 0;
		if (!is_store && !create)
			return cn_error_set(-ENOENT, "no datastore at %s yet", t->path);
		if (!is_store) {
			/* the datastore makes the last component itself */
			char parent[4096];
			snprintf(parent, sizeof(parent), "%s", t->path);
			char *slash = strrchr(parent, '/');
			if (slash && slash != parent) {
				*slash = 0;
				int r = cn_mkdir_p(parent, 0700);
				if (r < 0)
					return r;
			}
			if (stat(t->path, &st) == 0)
				rmdir(t->path); /* an empty directory made by an admin */
		}
		int r = cn_datastore_open(t->path, !is_store, NULL, &e->ds);
		if (r < 0)
			return cn_error_prefix(r, "datastore %s", t->path);
		snprintf(e->name, sizeof(e->name), "local:%s", t->path);
		return 0;
	}
	if (t->kind == CN_CONFIG_S3) {
		struct cn_s3_config sc;
		memset(&sc, 0, sizeof(sc));
		snprintf(sc.bucket, sizeof(sc.bucket), "%s", t->bucket);
		snprintf(sc.prefix, sizeof(sc.prefix), "%s", t->prefix ? t->prefix : "");
		snprintf(sc.endpoint, sizeof(sc.endpoint), "%s", t->endpoint ? t->endpoint : "");
		snprintf(sc.region, sizeof(sc.region), "%s", t->region ? t->region : "");
		snprintf(sc.credentials_file, sizeof(sc.credentials_file), "%s",
			 t->credentials_file ? t->credentials_file : "");
		snprintf(sc.profile, sizeof(sc.profile), "%s", t->profile ? t->profile : "");
		sc.addressing = (enum cn_s3_addressing)t->addressing;
		return cli_open_s3(&sc, e);
	}
	char secret[4096];
	int r = cn_config_read_token(t, secret, sizeof(secret));
	if (r < 0)
		return r;
	struct cn_pbs_opts po = {.repository = t->repository, .fingerprint = t->fingerprint,
				 .secret = secret};
	struct cn_pbs *pbs = NULL;
	r = cn_pbs_connect(&po, &pbs);
	explicit_bzero(secret, sizeof(secret));
	if (r < 0)
		return r; /* net's message names the repository */
	e->pbs = pbs;
	cn_pbs_name(pbs, e->name, sizeof(e->name));
	return 0;
}

void cli_sched_group(const struct cn_config *c, const struct cn_config_source *s,
		     struct cn_snapshot_id *g)
{
	memset(g, 0, sizeof(*g));
	if (s->ns)
		snprintf(g->ns, sizeof(g->ns), "%s", s->ns);
	snprintf(g->type, sizeof(g->type), "%s", s->backup_type);
	cn_config_backup_id(c, s, g->id, sizeof(g->id));
}

int cli_sched_load_key(const struct cn_config *c, struct cn_crypt_config **crypt)
{
	char pw[1024];
	*crypt = NULL;
	if (!c->keyfile)
		return 0;
	if (c->keyfile_password_file &&
	    cn_config_read_secret("key password file", c->keyfile_password_file, pw, sizeof(pw)) < 0)
		return -EINVAL;
	int r = cli_load_key_file(c->keyfile, c->keyfile_password_file ? pw : NULL, crypt);
	explicit_bzero(pw, sizeof(pw));
	return r;
}

json_t *cli_sched_restore_test(const struct cn_config *c, const char *tname,
			       struct cli_endpoint *e, const char *const *live, unsigned sample,
			       const struct cn_crypt_config *crypt, char *err, size_t errlen)
{
	err[0] = 0;
	json_t *all = json_object();
	json_int_t failed = 0, sampled = 0;
	struct cn_source *src = NULL;
	if (cli_endpoint_source(e, &src) < 0) {
		snprintf(err, errlen, "%s", cn_error_message());
		failed++;
	}
	for (size_t si = 0; src && si < c->n_sources; si++) {
		const struct cn_config_source *s = &c->sources[si];
		if (!live[si])
			continue;
		struct cn_snapshot_id g;
		cli_sched_group(c, s, &g);
		json_t *rep = NULL;
		cn_error_clear();
		int r = cn_restore_test(src, &g, s->archive, live[si], sample, crypt, &rep);
		if (!rep) {
			rep = json_pack("{s:s, s:b}", "error", cn_error_message(), "corrupt",
					cn_error_is_corruption(r));
			failed++;
		} else {
			failed += json_integer_value(json_object_get(rep, "failed"));
			sampled += json_integer_value(json_object_get(rep, "sampled"));
		}
		if (r < 0) {
			cn_log_error("target %s: %s", tname, cn_error_message());
			if (!err[0])
				snprintf(err, errlen, "%s", cn_error_message());
		}
		json_object_set_new(all, s->name, rep);
	}
	if (src)
		src->ops->destroy(src);
	cn_log_notice("target %s: restore test of %lld file(s), %lld failed", tname,
		      (long long)sampled, (long long)failed);
	return json_pack("{s:I, s:I, s:o}", "sampled", sampled, "failed", failed, "sources", all);
}
