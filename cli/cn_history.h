/* cn_history — the record of scheduled runs and what is derived from it:
 * the run history in the state directory (STATE/history.json, a JSON
 * array of run records, newest last, replaced atomically after each run
 * and trimmed to the newest `history-keep`), and the Prometheus
 * node-exporter textfile (docs/metrics.md lists the metrics).
 *
 * A run record is the run summary JSON that hooks get on stdin; its fields
 * are documented in docs/metrics.md too. */
#ifndef CN_HISTORY_H
#define CN_HISTORY_H

#include <jansson.h>
#include <stddef.h>

/* Loads STATE/history.json: *runs is a new JSON array (empty when the file
 * does not exist), the caller's reference. A damaged file is renamed to
 * history.json.bad with a warning and an empty history returned, so that
 * monitoring never stops recording. 0 or a negative code. */
int cn_history_load(const char *state_dir, json_t **runs);

/* Appends record (borrowed) to the history in state_dir, keeps the newest
 * keep records, and replaces the file atomically. 0 or a negative code. */
int cn_history_append(const char *state_dir, json_t *record, size_t keep);

/* The newest record of config (its path as recorded) in runs, or NULL
 * (borrowed). */
json_t *cn_history_last(json_t *runs, const char *config);

/* Writes the metrics of config's runs (history runs, borrowed) to path
 * atomically (mode 0644): a reader sees the old file or the new one,
 * never a part. 0 or a negative code with a message. */
int cn_metrics_write(const char *path, json_t *runs, const char *config);

#endif
