/* cn_restore_test — automated restore tests: restore a random sample of
 * files of the newest snapshot of a group from a target into a private
 * temporary directory (mode 0700 under $TMPDIR, removed afterwards) and
 * compare each with the live source file when that file is unchanged
 * since the snapshot (same size and mtime as the catalog records);
 * changed or vanished source files are only checked to restore with the
 * recorded size. Files whose names hold glob characters (* ? [ \) are not
 * sampled (the extractor would read the name as a pattern). */
#ifndef CN_RESTORE_TEST_H
#define CN_RESTORE_TEST_H

#include <jansson.h>

#include "store/cn_crypt.h"

#include "common/cn_snapshot.h"
#include "engine/cn_target.h"

/* Tests group (ns/type/id) on src: archive ("media.pxar") of its newest
 * snapshot, sample files, compared with files below live_path. *report is
 * a new JSON object {snapshot, sampled, identical, changed, failed,
 * failures: [{path, error}]} (caller's reference), also when files
 * failed. Returns 0 when every sampled file restored and matched, -EIO
 * when some failed (report says which), or another negative code with a
 * message when the test could not run (no snapshot, unreadable catalog);
 * then *report is NULL. */
int cn_restore_test(struct cn_source *src, const struct cn_snapshot_id *group,
		    const char *archive, const char *live_path, unsigned sample,
		    const struct cn_crypt_config *crypt, json_t **report);

#endif
