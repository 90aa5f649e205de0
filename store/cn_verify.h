/* cn_verify — verification of a snapshot in a local datastore, as upstream
 * src/backup/verify.rs: every file listed in the manifest is checked
 * (blobs: size, SHA-256, container CRC; indexes: parse, size and checksum
 * against the manifest) and every chunk the indexes reference is re-read
 * and decoded (CRC, decompression, and the digest; encrypted chunks
 * without the key only by CRC, as the server does; with the key fully).
 * A corrupt chunk is renamed "<digest>.<n>.bad" (n = 0..9, as upstream)
 * and dropped from the LMDB index, so the next backup uploads it again and
 * GC later removes the .bad file. */
#ifndef CN_VERIFY_H
#define CN_VERIFY_H

#include <stdint.h>

#include "common/cn_snapshot.h"
#include "store/cn_crypt.h"

struct cn_datastore;

struct cn_verify_result {
	uint64_t files;          /* files listed in the manifest */
	uint64_t bad_files;      /* missing or not matching the manifest */
	uint64_t chunks;         /* distinct chunks checked */
	uint64_t bad_chunks;     /* corrupt (renamed to .bad) */
	uint64_t missing_chunks; /* referenced but absent */
	uint64_t bad_manifest;   /* 1: the manifest is damaged, another snapshot's
				  * or (with a key) unsigned; nothing else checked */
	uint64_t bytes;          /* plain bytes decoded */
};

/* Verifies snapshot id. The manifest must be id's (backup-type, -id and
 * -time). crypt (may be NULL) also checks the manifest signature, which an
 * encrypted snapshot's manifest must carry, and decrypts encrypted chunks;
 * it must be the backup's key (a manifest made with another key: error,
 * nothing is quarantined). update_manifest: record the
 * result in the manifest's unprotected "verify_state" ({"state":
 * "ok"|"failed", "upid": ...}) as upstream does. Holds the snapshot
 * directory's shared flock meanwhile (-CN_E_LOCKED if it is being removed).
 * Returns the number of problems found (0 = ok) or a negative code when
 * verification could not run. *res (may be NULL) gets the counts. */
int cn_datastore_verify_snapshot(struct cn_datastore *ds, const struct cn_snapshot_id *id,
				 const struct cn_crypt_config *crypt, int update_manifest,
				 struct cn_verify_result *res);

#endif
