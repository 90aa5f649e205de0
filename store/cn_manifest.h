/* cn_manifest — the snapshot manifest index.json.blob, as upstream
 * pbs-datastore/src/manifest.rs:
 *
 *   {"backup-id","backup-time","backup-type","files":[{"crypt-mode","csum",
 *    "filename","size"}...],"signature":<hex|null>,"unprotected":{...}}
 *
 * written as serde_json's pretty printer does (keys sorted bytewise at every
 * level, 2-space indent, no trailing newline) and stored as a zstd-
 * compressed, never encrypted DataBlob. With a key, "signature" is
 * hex(HMAC-SHA256(id_key, canonical JSON without "signature" and
 * "unprotected")) and unprotected."key-fingerprint" the key's full
 * fingerprint. Reading keeps unknown keys (they are rewritten as read, and
 * count in the signature as upstream counts them).
 *
 * The JSON is held as a jansson tree; strings handed out are borrowed from
 * the manifest and valid until it is changed or freed.
 */
#ifndef CN_MANIFEST_H
#define CN_MANIFEST_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "common/cn_snapshot.h"
#include "common/cn_util.h"
#include "store/cn_crypt.h"

/* Appends s (n bytes) to out as a JSON string literal escaped exactly as
 * serde_json does (quotes included). Shared with the pxar prelude
 * writer. 0 or -ENOMEM. */
int cn_json_put_string(struct cn_buf *out, const char *s, size_t n);

#define CN_MANIFEST_BLOB_NAME "index.json.blob"
/* Largest manifest JSON accepted on read. */
#define CN_MANIFEST_MAX_SIZE (16u << 20)

enum cn_crypt_mode {
	CN_CRYPT_MODE_NONE,
	CN_CRYPT_MODE_ENCRYPT,
	CN_CRYPT_MODE_SIGN_ONLY,
};

/* "none", "encrypt", "sign-only". */
const char *cn_crypt_mode_name(enum cn_crypt_mode mode);
/* Parses those names: 0 and *mode set, or -EINVAL. */
int cn_crypt_mode_parse(const char *name, enum cn_crypt_mode *mode);

struct cn_manifest;

/* A new empty manifest for snapshot id (type, id and time are used; the
 * namespace is not part of the manifest). *out freed with
 * cn_manifest_free(). 0, -EINVAL or -ENOMEM. */
int cn_manifest_new(const struct cn_snapshot_id *id, struct cn_manifest **out);
/* Frees a manifest. NULL is ok. */
void cn_manifest_free(struct cn_manifest *m);

/* Appends a file entry. name must end in ".didx", ".fidx" or ".blob" and
 * not be listed yet (-EINVAL). size: index = stream size, blob = encoded
 * length; csum: index checksum, blob = SHA-256 of the encoded blob. */
int cn_manifest_add_file(struct cn_manifest *m, const char *name, uint64_t size,
			 const uint8_t csum[32], enum cn_crypt_mode mode);

/* Snapshot identity from the manifest (backup-type, backup-id, backup-time). */
const char *cn_manifest_backup_type(const struct cn_manifest *m);
const char *cn_manifest_backup_id(const struct cn_manifest *m);
int64_t cn_manifest_backup_time(const struct cn_manifest *m);

/* Number of listed files. */
size_t cn_manifest_file_count(const struct cn_manifest *m);
/* File i (< count). Any output may be NULL; *name is borrowed. */
void cn_manifest_file_at(const struct cn_manifest *m, size_t i, const char **name,
			 uint64_t *size, uint8_t csum[32], enum cn_crypt_mode *mode);
/* Index of the file called name, or -ENOENT. */
int cn_manifest_find(const struct cn_manifest *m, const char *name);
/* Compares a file's size and csum with the listed ones: 0, -ENOENT,
 * -CN_E_CHECKSUM (size or csum differ; the message says which). */
int cn_manifest_verify_file(const struct cn_manifest *m, const char *name, uint64_t size,
			    const uint8_t csum[32]);

/* The "unprotected" object (borrowed, never NULL): callers may read and
 * modify it with jansson (e.g. "notes", "verify_state"). Not signed. */
json_t *cn_manifest_unprotected(struct cn_manifest *m);

/* 1 if the manifest carries a signature (as read or last encoded), else 0. */
int cn_manifest_signed(const struct cn_manifest *m);

/* 1 and fp filled if unprotected."key-fingerprint" is present and valid,
 * 0 if absent, -CN_E_FORMAT if malformed. */
int cn_manifest_key_fingerprint(const struct cn_manifest *m, uint8_t fp[32]);

/* Checks that a manifest and a key fit (upstream check_fingerprint): a
 * manifest made with a key needs that key (-CN_E_NOKEY without a key,
 * -CN_E_CRYPT for another key). Stricter than upstream: with a key, a
 * manifest that lists an encrypted or signed file, or names a key, must
 * carry a signature (-CN_E_MISMATCH: removed, so nothing can be checked;
 * cn_manifest_parse_json verified a present one). Other unsigned
 * manifests fit anything. */
int cn_manifest_check_key(const struct cn_manifest *m, const struct cn_crypt_config *crypt);

/* 1 if some listed file has crypt-mode "encrypt" or "sign-only", else 0. */
int cn_manifest_encrypted(const struct cn_manifest *m);

/* Checks that the manifest's backup-type, backup-id and backup-time are
 * id's (the namespace is not in a manifest): 0, or -CN_E_MISMATCH with a
 * message naming the snapshot asked for and the one found, as when one
 * snapshot's files were copied into another's directory. */
int cn_manifest_check_id(const struct cn_manifest *m, const struct cn_snapshot_id *id);

/* The manifest's JSON text as upstream writes it (pretty, sorted). With
 * crypt: sets signature and unprotected.key-fingerprint first (the
 * manifest keeps them). Without: the signature stays as it is, as upstream
 * (null for a new manifest; a read one keeps its signature, which is what
 * a rewrite of only "unprotected" needs; cn_manifest_add_file resets it to
 * null). Appends to out. */
int cn_manifest_to_json(struct cn_manifest *m, const struct cn_crypt_config *crypt,
			struct cn_buf *out);

/* The canonical JSON that the signature covers (for tests and debugging):
 * no whitespace, sorted keys, without "signature" and "unprotected".
 * -CN_E_FORMAT if the value holds null or a real number (upstream rejects
 * null; reals are not produced by upstream and not supported here). */
int cn_manifest_canonical(const struct cn_manifest *m, struct cn_buf *out);

/* cn_manifest_to_json, then encoded as index.json.blob (zstd, never
 * encrypted) and appended to blob_out. */
int cn_manifest_encode(struct cn_manifest *m, const struct cn_crypt_config *crypt,
		       struct cn_buf *blob_out);

/* Parses manifest JSON text and validates its shape (-CN_E_FORMAT). With
 * crypt and a signature present: the key-fingerprint, if present, must be
 * crypt's (-CN_E_CRYPT) and the signature must verify (-CN_E_CHECKSUM).
 * Without crypt the signature is not checked (as upstream). *out freed
 * with cn_manifest_free(). */
int cn_manifest_parse_json(const uint8_t *json, size_t len, const struct cn_crypt_config *crypt,
			   struct cn_manifest **out);

/* Decodes index.json.blob (cn_blob_decode: CRC etc.; an encrypted blob is
 * -CN_E_FORMAT) and parses it with cn_manifest_parse_json. */
int cn_manifest_decode(const uint8_t *blob, size_t len, const struct cn_crypt_config *crypt,
		       struct cn_manifest **out);

#endif
