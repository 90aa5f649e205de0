#include "cli/cn_history.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/cn_error.h"
#include "common/cn_log.h"
#include "common/cn_util.h"

#define HISTORY_MAX_BYTES (256u << 20)

static void history_path(const char *state_dir, char *out, size_t len)
{
	snprintf(out, len, "%s/history.json", state_dir);
}

int cn_history_load(const char *state_dir, json_t **runs)
{
	char path[4096];
	history_path(state_dir, path, sizeof(path));
	uint8_t *data;
	size_t len;
	*runs = NULL;
	int r = cn_read_file(path, HISTORY_MAX_BYTES, &data, &len);
	if (r == -ENOENT) {
		cn_error_clear();
		*runs = json_array();
		return *runs ? 0 : cn_error_set(-ENOMEM, "out of memory");
	}
	if (r < 0)
		return r;
	json_error_t je;
	json_t *v = json_loadb((const char *)data, len, 0, &je);
	free(data);
	if (!v || !json_is_array(v)) {
		char bad[4200];
		snprintf(bad, sizeof(bad), "%s.bad", path);
		cn_log_warning("run history %s is damaged (%s); moved to %s, starting a new one", path,
			       v ? "not an array" : je.text, bad);
		json_decref(v);
		rename(path, bad);
		v = json_array();
		if (!v)
			return cn_error_set(-ENOMEM, "out of memory");
	}
	*runs = v;
	return 0;
}

int cn_history_append(const char *state_dir, json_t *record, size_t keep)
{
	json_t *runs;
	int r = cn_mkdir_p(state_dir, 0700);
	if (r < 0)
		return r;
	r = cn_history_load(state_dir, &runs);
	if (r < 0)
		return r;
	json_array_append(runs, record);
	while (keep && json_array_size(runs) > keep)
		json_array_remove(runs, 0);
	char *text = json_dumps(runs, JSON_INDENT(1) | JSON_PRESERVE_ORDER);
	json_decref(runs);
	if (!text)
		return cn_error_set(-ENOMEM, "out of memory");
	char path[4096];
	history_path(state_dir, path, sizeof(path));
	r = cn_write_file_atomic(path, text, strlen(text), 0600, 1);
	free(text);
	return r;
}

json_t *cn_history_last(json_t *runs, const char *config)
{
	for (size_t i = json_array_size(runs); i-- > 0;) {
		json_t *rec = json_array_get(runs, i);
		const char *c = json_string_value(json_object_get(rec, "config"));
		if (c && !strcmp(c, config))
			return rec;
	}
	return NULL;
}

/* Prometheus label values: backslash, quote and newline escaped. */
static void label(const char *in, char *out, size_t len)
{
	size_t k = 0;
	for (; *in && k + 3 < len; in++) {
		if (*in == '\\' || *in == '"') {
			out[k++] = '\\';
			out[k++] = *in;
		} else if (*in == '\n') {
			out[k++] = '\\';
			out[k++] = 'n';
		} else {
			out[k++] = *in;
		}
	}
	out[k] = 0;
}

static double num(json_t *o, const char *key)
{
	json_t *v = json_object_get(o, key);
	return json_is_number(v) ? json_number_value(v) : 0;
}

struct metric {
	const char *name, *help, *type;
};

static const struct metric M[] = {
	{"cairn_run_last_start_timestamp_seconds", "Start of the last run.", "gauge"},
	{"cairn_run_last_duration_seconds", "Duration of the last run.", "gauge"},
	{"cairn_run_last_success", "1 if the last run succeeded completely (exit code 0).", "gauge"},
	{"cairn_run_last_exit_code", "Exit code of the last run.", "gauge"},
	{"cairn_run_last_success_timestamp_seconds", "End of the last fully successful run.", "gauge"},
	{"cairn_source_last_success_timestamp_seconds", "End of the last run that published this source's snapshot on at least one target.", "gauge"},
	{"cairn_source_last_success", "1 if the last run published the source's snapshot on every target.", "gauge"},
	{"cairn_source_last_bytes_read", "File content bytes read from the source in the last run.", "gauge"},
	{"cairn_source_last_files", "Files in the source's last snapshot.", "gauge"},
	{"cairn_source_last_chunks", "Chunks referenced by the last snapshot.", "gauge"},
	{"cairn_source_last_new_chunks", "Chunks that were new in the last run.", "gauge"},
	{"cairn_source_last_new_bytes", "Plain bytes of the new chunks of the last run.", "gauge"},
	{"cairn_source_last_skipped_entries", "Entries that could not be read in the last run.", "gauge"},
	{"cairn_source_last_missing_chunks", "Chunks of the previous snapshot a store had lost, stored again by the last run.", "gauge"},
	{"cairn_target_last_success_timestamp_seconds", "End of the last run in which every backup and the prune on this target succeeded.", "gauge"},
	{"cairn_target_last_success", "1 if the last run succeeded on this target.", "gauge"},
	{"cairn_target_last_bytes_uploaded", "Encoded bytes sent to or stored on the target in the last run.", "gauge"},
	{"cairn_target_last_pruned_snapshots", "Snapshots removed by the last run's prune.", "gauge"},
	{"cairn_target_last_restore_test_failures", "Files that failed the last restore test on this target.", "gauge"},
	{"cairn_target_last_restore_test_timestamp_seconds", "End of the last run that did a restore test on this target.", "gauge"},
	{"cairn_target_last_caught_up_snapshots", "Snapshots the last run's catch-up copied to this target from another.", "gauge"},
};

/* Last time (record "end") in runs of config at which test(entry) held for
 * the entry named name in array key ("sources"/"targets"), or for the run
 * itself when key is NULL. */
static double last_when(json_t *runs, const char *config, const char *key, const char *name,
			int (*test)(json_t *))
{
	for (size_t i = json_array_size(runs); i-- > 0;) {
		json_t *rec = json_array_get(runs, i);
		const char *c = json_string_value(json_object_get(rec, "config"));
		if (!c || strcmp(c, config) || json_is_true(json_object_get(rec, "dry-run")))
			continue;
		if (!key) {
			if (test(rec))
				return num(rec, "end");
			continue;
		}
		json_t *arr = json_object_get(rec, key), *e;
		size_t k;
		json_array_foreach(arr, k, e) {
			const char *n = json_string_value(json_object_get(e, "name"));
			if (n && !strcmp(n, name) && test(e))
				return num(rec, "end");
		}
	}
	return 0;
}

static int is_ok(json_t *o)
{
	const char *r = json_string_value(json_object_get(o, "result"));
	return r && !strcmp(r, "ok");
}

static int published(json_t *o)
{
	return num(o, "targets-ok") > 0;
}

static int restore_tested(json_t *o)
{
	return json_is_object(json_object_get(o, "restore-test"));
}

static void put(struct cn_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(struct cn_buf *b, const char *fmt, ...)
{
	char line[1024];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (n > 0)
		cn_buf_append(b, line, (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1);
}

static void header(struct cn_buf *b, size_t i)
{
	put(b, "# HELP %s %s\n# TYPE %s %s\n", M[i].name, M[i].help, M[i].name, M[i].type);
}

int cn_metrics_write(const char *path, json_t *runs, const char *config)
{
	struct cn_buf b = {0};
	json_t *last = cn_history_last(runs, config);
	char cfg[1024];
	label(config, cfg, sizeof(cfg));
	if (last) {
		const double v[5] = {num(last, "start"), num(last, "duration"),
				     num(last, "exit-code") == 0 ? 1 : 0, num(last, "exit-code"),
				     last_when(runs, config, NULL, NULL, is_ok)};
		for (size_t i = 0; i < 5; i++) {
			header(&b, i);
			put(&b, "%s{config=\"%s\"} %.3f\n", M[i].name, cfg, v[i]);
		}
		json_t *srcs = json_object_get(last, "sources"), *tgts = json_object_get(last, "targets");
		static const char *skeys[] = {NULL, NULL, "bytes-read", "files", "chunks", "new-chunks",
					      "new-bytes", "skipped", "chunks-missing"};
		for (size_t m = 0; m < CN_ARRAY_SIZE(skeys); m++) {
			header(&b, 5 + m);
			json_t *s;
			size_t k;
			json_array_foreach(srcs, k, s) {
				const char *n = json_string_value(json_object_get(s, "name"));
				char nl[512];
				label(n ? n : "", nl, sizeof(nl));
				double val = m == 0 ? last_when(runs, config, "sources", n, published)
					   : m == 1 ? is_ok(s)
						    : num(s, skeys[m]);
				put(&b, "%s{config=\"%s\",source=\"%s\"} %.3f\n", M[5 + m].name, cfg, nl, val);
			}
		}
		const size_t tbase = 5 + CN_ARRAY_SIZE(skeys); /* the target metrics in M */
		for (size_t m = 0; m < 7; m++) {
			header(&b, tbase + m);
			json_t *t;
			size_t k;
			json_array_foreach(tgts, k, t) {
				const char *n = json_string_value(json_object_get(t, "name"));
				char nl[512];
				label(n ? n : "", nl, sizeof(nl));
				json_t *rt = json_object_get(t, "restore-test");
				double val = m == 0 ? last_when(runs, config, "targets", n, is_ok)
					   : m == 1 ? is_ok(t)
					   : m == 2 ? num(t, "bytes-uploaded")
					   : m == 3 ? num(t, "pruned")
					   : m == 4 ? (rt ? num(rt, "failed") : 0)
					   : m == 5 ? last_when(runs, config, "targets", n, restore_tested)
						    : num(t, "caught-up");
				put(&b, "%s{config=\"%s\",target=\"%s\"} %.3f\n", M[tbase + m].name, cfg, nl,
				    val);
			}
		}
	}
	int r = cn_buf_append(&b, "", 0);
	if (r == 0)
		r = cn_write_file_atomic(path, b.data ? (const char *)b.data : "", b.len, 0644, 1);
	cn_buf_free(&b);
	return r;
}
