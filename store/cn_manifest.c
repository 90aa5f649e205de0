/* index.json.blob as upstream pbs-datastore/src/manifest.rs; JSON text
 * written the way serde_json writes it (pretty and canonical forms). */
#include "store/cn_manifest.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/cn_error.h"
#include "store/cn_blob.h"

struct cn_manifest {
	json_t *root; /* the whole document, unknown keys included */
};

static const char *mode_names[] = {
	[CN_CRYPT_MODE_NONE] = "none",
	[CN_CRYPT_MODE_ENCRYPT] = "encrypt",
	[CN_CRYPT_MODE_SIGN_ONLY] = "sign-only",
};

const char *cn_crypt_mode_name(enum cn_crypt_mode mode)
{
	return (unsigned)mode < CN_ARRAY_SIZE(mode_names) ? mode_names[mode] : "?";
}

int cn_crypt_mode_parse(const char *name, enum cn_crypt_mode *mode)
{
	for (size_t i = 0; i < CN_ARRAY_SIZE(mode_names); i++) {
		if (strcmp(name, mode_names[i]) == 0) {
			*mode = (enum cn_crypt_mode)i;
			return 0;
		}
	}
	return -EINVAL;
}

/* ---- serde_json-compatible writer --------------------------------------- */

static int put(struct cn_buf *b, const char *s, size_t n)
{
	return cn_buf_append(b, s, n) < 0 ? cn_error_set(-ENOMEM, "out of memory") : 0;
}

static int puts_(struct cn_buf *b, const char *s)
{
	return put(b, s, strlen(s));
}

/* serde_json escapes '"', '\\' and control characters (\b \t \n \f \r
 * by name, others as \u00xx with lowercase hex); everything else,
 * including '/' and non-ASCII UTF-8, is written verbatim. */
static int put_string(struct cn_buf *b, const char *s, size_t n)
{
	static const char hex[] = "0123456789abcdef";
	int r = put(b, "\"", 1);
	size_t start = 0;
	for (size_t i = 0; i < n && r == 0; i++) {
		unsigned char c = (unsigned char)s[i];
		char esc[7];
		const char *e = NULL;
		size_t elen = 2;
		switch (c) {
		case '"': e = "\\\""; break;
		case '\\': e = "\\\\"; break;
		case '\b': e = "\\b"; break;
		case '\t': e = "\\t"; break;
		case '\n': e = "\\n"; break;
		case '\f': e = "\\f"; break;
		case '\r': e = "\\r"; break;
		default:
			if (c < 0x20) {
				memcpy(esc, "\\u00", 4);
				esc[4] = hex[c >> 4];
				esc[5] = hex[c & 15];
				e = esc;
				elen = 6;
			}
		}
		if (!e)
			continue;
		r = put(b, s + start, i - start);
		if (r == 0)
			r = put(b, e, elen);
		start = i + 1;
	}
	if (r == 0)
		r = put(b, s + start, n - start);
	return r ? r : put(b, "\"", 1);
}

int cn_json_put_string(struct cn_buf *out, const char *s, size_t n)
{
	return put_string(out, s, n);
}

static int cmp_keys(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int indent(struct cn_buf *b, int level)
{
	int r = put(b, "\n", 1);
	for (int i = 0; i < level && r == 0; i++)
		r = put(b, "  ", 2);
	return r;
}

/* Writes v. pretty: serde's to_string_pretty layout; else canonical (no
 * whitespace; null and reals are errors). Object keys sorted bytewise.
 * skip1/skip2: top-level keys to leave out (canonical signing form). */
static int write_value(struct cn_buf *b, json_t *v, int pretty, int level, const char *skip1,
		       const char *skip2)
{
	char num[64];
	int r = 0;

	switch (json_typeof(v)) {
	case JSON_NULL:
		if (!pretty)
			return cn_error_set(-CN_E_FORMAT, "manifest: null value in signed data");
		return puts_(b, "null");
	case JSON_TRUE:
		return puts_(b, "true");
	case JSON_FALSE:
		return puts_(b, "false");
	case JSON_INTEGER:
		snprintf(num, sizeof(num), "%" JSON_INTEGER_FORMAT, json_integer_value(v));
		return puts_(b, num);
	case JSON_REAL: {
		if (!pretty)
			return cn_error_set(-CN_E_FORMAT, "manifest: real number in signed data");
		double d = json_real_value(v);
		for (int prec = 15; prec <= 17; prec++) {
			snprintf(num, sizeof(num), "%.*g", prec, d);
			if (strtod(num, NULL) == d)
				break;
		}
		if (!strpbrk(num, ".eEn")) /* serde writes 1.0, not 1 */
			strcat(num, ".0");
		return puts_(b, num);
	}
	case JSON_STRING:
		return put_string(b, json_string_value(v), json_string_length(v));
	case JSON_ARRAY: {
		size_t n = json_array_size(v);
		if (n == 0)
			return puts_(b, "[]");
		r = put(b, "[", 1);
		for (size_t i = 0; i < n && r == 0; i++) {
			if (i)
				r = put(b, ",", 1);
			if (r == 0 && pretty)
				r = indent(b, level + 1);
			if (r == 0)
				r = write_value(b, json_array_get(v, i), pretty, level + 1, NULL, NULL);
		}
		if (r == 0 && pretty)
			r = indent(b, level);
		return r ? r : put(b, "]", 1);
	}
	case JSON_OBJECT: {
		size_t n = 0, cap = json_object_size(v);
		const char **keys = malloc((cap ? cap : 1) * sizeof(*keys));
		const char *k;
		json_t *val;
		if (!keys)
			return cn_error_set(-ENOMEM, "out of memory");
		json_object_foreach(v, k, val) {
			if ((skip1 && strcmp(k, skip1) == 0) || (skip2 && strcmp(k, skip2) == 0))
				continue;
			keys[n++] = k;
		}
		qsort(keys, n, sizeof(*keys), cmp_keys);
		if (n == 0) {
			free(keys);
			return puts_(b, "{}");
		}
		r = put(b, "{", 1);
		for (size_t i = 0; i < n && r == 0; i++) {
			if (i)
				r = put(b, ",", 1);
			if (r == 0 && pretty)
				r = indent(b, level + 1);
			if (r == 0)
				r = put_string(b, keys[i], strlen(keys[i]));
			if (r == 0)
				r = pretty ? put(b, ": ", 2) : put(b, ":", 1);
			if (r == 0)
				r = write_value(b, json_object_get(v, keys[i]), pretty, level + 1, NULL,
						NULL);
		}
		free(keys);
		if (r == 0 && pretty)
			r = indent(b, level);
		return r ? r : put(b, "}", 1);
	}
	}
	return cn_error_set(-CN_E_FORMAT, "manifest: unknown JSON value");
}

/* ---- building and reading ---------------------------------------------- */

int cn_manifest_new(const struct cn_snapshot_id *id, struct cn_manifest **out)
{
	int r = cn_snapshot_check_type(id->type);
	if (r == 0)
		r = cn_snapshot_check_id(id->id);
	if (r < 0)
		return r;
	struct cn_manifest *m = calloc(1, sizeof(*m));
	if (!m)
		return cn_error_set(-ENOMEM, "out of memory");
	m->root = json_pack("{s:s,s:s,s:I,s:[],s:{},s:n}", "backup-type", id->type, "backup-id",
			    id->id, "backup-time", (json_int_t)id->time, "files", "unprotected",
			    "signature");
	if (!m->root) {
		free(m);
		return cn_error_set(-ENOMEM, "out of memory");
	}
	*out = m;
	return 0;
}

void cn_manifest_free(struct cn_manifest *m)
{
	if (!m)
		return;
	json_decref(m->root);
	free(m);
}

static int has_suffix(const char *s, const char *suffix)
{
	size_t n = strlen(s), k = strlen(suffix);
	return n > k && strcmp(s + n - k, suffix) == 0;
}

static int valid_filename(const char *name)
{
	return (has_suffix(name, ".didx") || has_suffix(name, ".fidx") || has_suffix(name, ".blob")) &&
	       !strchr(name, '/');
}

int cn_manifest_add_file(struct cn_manifest *m, const char *name, uint64_t size,
			 const uint8_t csum[32], enum cn_crypt_mode mode)
{
	char hex[65];
	if (!valid_filename(name))
		return cn_error_set(-EINVAL, "manifest: unknown archive type of \"%s\"", name);
	if (cn_manifest_find(m, name) >= 0)
		return cn_error_set(-EINVAL, "manifest: \"%s\" is already listed", name);
	if ((unsigned)mode >= CN_ARRAY_SIZE(mode_names) || size > INT64_MAX)
		return cn_error_set(-EINVAL, "manifest: bad crypt mode or size for \"%s\"", name);
	cn_hex_encode(csum, 32, hex);
	json_t *f = json_pack("{s:s,s:s,s:I,s:s}", "filename", name, "crypt-mode", mode_names[mode],
			      "size", (json_int_t)size, "csum", hex);
	if (!f || json_array_append_new(json_object_get(m->root, "files"), f) < 0)
		return cn_error_set(-ENOMEM, "out of memory");
	/* a signature over the old list would be wrong now */
	json_object_set_new(m->root, "signature", json_null());
	return 0;
}

const char *cn_manifest_backup_type(const struct cn_manifest *m)
{
	return json_string_value(json_object_get(m->root, "backup-type"));
}

const char *cn_manifest_backup_id(const struct cn_manifest *m)
{
	return json_string_value(json_object_get(m->root, "backup-id"));
}

int64_t cn_manifest_backup_time(const struct cn_manifest *m)
{
	return (int64_t)json_integer_value(json_object_get(m->root, "backup-time"));
}

size_t cn_manifest_file_count(const struct cn_manifest *m)
{
	return json_array_size(json_object_get(m->root, "files"));
}

void cn_manifest_file_at(const struct cn_manifest *m, size_t i, const char **name,
			 uint64_t *size, uint8_t csum[32], enum cn_crypt_mode *mode)
{
	/* the shape was validated on parse / add_file */
	json_t *f = json_array_get(json_object_get(m->root, "files"), i);
	json_t *cm = json_object_get(f, "crypt-mode");
	if (name)
		*name = json_string_value(json_object_get(f, "filename"));
	if (size)
		*size = (uint64_t)json_integer_value(json_object_get(f, "size"));
	if (csum && cn_hex_decode(json_string_value(json_object_get(f, "csum")), csum, 32) < 0)
		memset(csum, 0, 32);
	if (mode) {
		*mode = CN_CRYPT_MODE_NONE; /* missing: written by < 0.8 clients */
		if (cm)
			cn_crypt_mode_parse(json_string_value(cm), mode);
	}
}

int cn_manifest_find(const struct cn_manifest *m, const char *name)
{
	size_t n = cn_manifest_file_count(m);
	for (size_t i = 0; i < n; i++) {
		const char *fname;
		cn_manifest_file_at(m, i, &fname, NULL, NULL, NULL);
		if (strcmp(fname, name) == 0)
			return (int)i;
	}
	return -ENOENT;
}

int cn_manifest_verify_file(const struct cn_manifest *m, const char *name, uint64_t size,
			    const uint8_t csum[32])
{
	int i = cn_manifest_find(m, name);
	uint64_t want_size;
	uint8_t want[32];
	if (i < 0)
		return cn_error_set(-ENOENT, "manifest does not contain file '%s'", name);
	cn_manifest_file_at(m, (size_t)i, NULL, &want_size, want, NULL);
	if (size != want_size)
		return cn_error_set(-CN_E_CHECKSUM, "wrong size for file '%s' (%llu != %llu)", name,
				    (unsigned long long)want_size, (unsigned long long)size);
	if (memcmp(csum, want, 32) != 0)
		return cn_error_set(-CN_E_CHECKSUM, "wrong checksum for file '%s'", name);
	return 0;
}

json_t *cn_manifest_unprotected(struct cn_manifest *m)
{
	return json_object_get(m->root, "unprotected");
}

int cn_manifest_signed(const struct cn_manifest *m)
{
	return json_is_string(json_object_get(m->root, "signature"));
}

int cn_manifest_key_fingerprint(const struct cn_manifest *m, uint8_t fp[32])
{
	json_t *f = json_object_get(json_object_get(m->root, "unprotected"), "key-fingerprint");
	if (!f || json_is_null(f))
		return 0;
	if (!json_is_string(f) || cn_fingerprint_parse(json_string_value(f), fp) < 0)
		return cn_error_set(-CN_E_FORMAT, "manifest: malformed key-fingerprint");
	return 1;
}

/* upstream check_fingerprint: a manifest naming a key needs that key */
static int check_fingerprint(const struct cn_manifest *m, const struct cn_crypt_config *crypt)
{
	uint8_t fp[32], mine[32];
	char a[CN_FINGERPRINT_TEXT_SIZE], b[CN_FINGERPRINT_TEXT_SIZE];
	int r = cn_manifest_key_fingerprint(m, fp);
	if (r <= 0)
		return r;
	cn_fingerprint_format(fp, 1, a);
	if (!crypt)
		return cn_error_set(-CN_E_NOKEY, "missing key - manifest was created with key %s", a);
	cn_crypt_fingerprint(crypt, mine);
	if (memcmp(fp, mine, 32) != 0) {
		cn_fingerprint_format(mine, 1, b);
		return cn_error_set(-CN_E_CRYPT,
				    "wrong key - manifest's key %s does not match provided key %s", a, b);
	}
	return 0;
}

int cn_manifest_check_key(const struct cn_manifest *m, const struct cn_crypt_config *crypt)
{
	uint8_t fp[32];
	int r = check_fingerprint(m, crypt);
	if (r < 0 || !crypt || cn_manifest_signed(m))
		return r;
	/* Upstream accepts an unsigned manifest with a key ("not signed:
	 * warn/fail?"). One that names a key or lists encrypted files was
	 * signed when written: without its signature nothing in it (files,
	 * checksums, snapshot identity) can be trusted. */
	if (cn_manifest_key_fingerprint(m, fp) > 0 || cn_manifest_encrypted(m))
		return cn_error_set(-CN_E_MISMATCH, "the manifest of an encrypted snapshot carries "
						    "no signature (removed?), so it cannot be checked "
						    "against the key");
	return 0;
}

int cn_manifest_encrypted(const struct cn_manifest *m)
{
	size_t n = cn_manifest_file_count(m);
	for (size_t i = 0; i < n; i++) {
		enum cn_crypt_mode mode;
		cn_manifest_file_at(m, i, NULL, NULL, NULL, &mode);
		if (mode != CN_CRYPT_MODE_NONE)
			return 1;
	}
	return 0;
}

int cn_manifest_check_id(const struct cn_manifest *m, const struct cn_snapshot_id *id)
{
	const char *type = cn_manifest_backup_type(m), *bid = cn_manifest_backup_id(m);
	int64_t time = cn_manifest_backup_time(m);
	if (type && bid && !strcmp(type, id->type) && !strcmp(bid, id->id) && time == id->time)
		return 0;
	char want[32] = "?", got[32] = "?";
	cn_snapshot_format_time(id->time, want, sizeof(want));
	if (cn_snapshot_format_time(time, got, sizeof(got)) < 0)
		snprintf(got, sizeof(got), "%lld", (long long)time);
	return cn_error_set(-CN_E_MISMATCH,
			    "manifest belongs to snapshot %s/%s/%s, not to %s/%s/%s that was asked "
			    "for (files copied or swapped from another snapshot?)",
			    type ? type : "?", bid ? bid : "?", got, id->type, id->id, want);
}

static int canonical(json_t *root, struct cn_buf *out)
{
	return write_value(out, root, 0, 0, "unprotected", "signature");
}

int cn_manifest_canonical(const struct cn_manifest *m, struct cn_buf *out)
{
	return canonical(m->root, out);
}

static int signature_hex(json_t *root, const struct cn_crypt_config *crypt, char hex[65])
{
	struct cn_buf c = {0};
	uint8_t tag[32];
	int r = canonical(root, &c);
	if (r == 0)
		r = cn_crypt_auth_tag(crypt, c.data, c.len, tag);
	cn_buf_free(&c);
	if (r == 0)
		cn_hex_encode(tag, 32, hex);
	return r;
}

int cn_manifest_to_json(struct cn_manifest *m, const struct cn_crypt_config *crypt,
			struct cn_buf *out)
{
	if (crypt) {
		char hex[65], fp[CN_FINGERPRINT_TEXT_SIZE];
		uint8_t raw[32];
		int r = signature_hex(m->root, crypt, hex);
		if (r < 0)
			return r;
		cn_crypt_fingerprint(crypt, raw);
		cn_fingerprint_format(raw, 0, fp);
		if (json_object_set_new(m->root, "signature", json_string(hex)) < 0 ||
		    json_object_set_new(cn_manifest_unprotected(m), "key-fingerprint",
					json_string(fp)) < 0)
			return cn_error_set(-ENOMEM, "out of memory");
	}
	size_t start = out->len;
	int r = write_value(out, m->root, 1, 0, NULL, NULL);
	if (r < 0)
		out->len = start;
	return r;
}

int cn_manifest_encode(struct cn_manifest *m, const struct cn_crypt_config *crypt,
		       struct cn_buf *blob_out)
{
	struct cn_buf text = {0};
	int r = cn_manifest_to_json(m, crypt, &text);
	/* upstream: compressed, never encrypted (the server reads it) */
	if (r == 0)
		r = cn_blob_encode(text.data, text.len, NULL, CN_BLOB_COMPRESS_ALWAYS, blob_out);
	cn_buf_free(&text);
	return r;
}

static int fail(const char *what)
{
	return cn_error_set(-CN_E_FORMAT, "manifest: %s", what);
}

/* Checks the shape upstream's serde struct requires. */
static int validate(json_t *root)
{
	json_t *files, *f, *v;
	size_t i;
	uint8_t csum[32];
	enum cn_crypt_mode mode;

	if (!json_is_object(root))
		return fail("not a JSON object");
	if (!json_is_string(json_object_get(root, "backup-type")) ||
	    cn_snapshot_check_type(json_string_value(json_object_get(root, "backup-type"))) < 0)
		return fail("missing or invalid \"backup-type\"");
	if (!json_is_string(json_object_get(root, "backup-id")))
		return fail("missing or invalid \"backup-id\"");
	if (!json_is_integer(json_object_get(root, "backup-time")))
		return fail("missing or invalid \"backup-time\"");
	files = json_object_get(root, "files");
	if (!json_is_array(files))
		return fail("missing or invalid \"files\"");
	json_array_foreach(files, i, f) {
		if (!json_is_object(f))
			return fail("a \"files\" entry is not an object");
		v = json_object_get(f, "filename");
		if (!json_is_string(v) || !valid_filename(json_string_value(v)))
			return fail("a \"files\" entry has no valid \"filename\"");
		v = json_object_get(f, "size");
		if (!json_is_integer(v) || json_integer_value(v) < 0)
			return fail("a \"files\" entry has no valid \"size\"");
		v = json_object_get(f, "csum");
		if (!json_is_string(v) || cn_hex_decode(json_string_value(v), csum, 32) < 0)
			return fail("a \"files\" entry has no valid \"csum\"");
		v = json_object_get(f, "crypt-mode");
		if (v && (!json_is_string(v) || cn_crypt_mode_parse(json_string_value(v), &mode) < 0))
			return fail("a \"files\" entry has an invalid \"crypt-mode\"");
	}
	v = json_object_get(root, "unprotected");
	if (!v) {
		if (json_object_set_new(root, "unprotected", json_object()) < 0)
			return cn_error_set(-ENOMEM, "out of memory");
	} else if (!json_is_object(v)) {
		return fail("\"unprotected\" is not an object");
	}
	v = json_object_get(root, "signature");
	if (v && !json_is_null(v) && !json_is_string(v))
		return fail("\"signature\" is not a string");
	return 0;
}

int cn_manifest_parse_json(const uint8_t *json, size_t len, const struct cn_crypt_config *crypt,
			   struct cn_manifest **out)
{
	json_error_t err;
	json_t *root;
	int r;

	if (len > CN_MANIFEST_MAX_SIZE)
		return cn_error_set(-EFBIG, "manifest too large (%zu bytes)", len);
	root = json_loadb((const char *)json, len, JSON_REJECT_DUPLICATES, &err);
	if (!root)
		return cn_error_set(-CN_E_FORMAT, "manifest is not JSON: %s (line %d)", err.text,
				    err.line);
	r = validate(root);
	json_t *sig = json_object_get(root, "signature");
	if (r == 0 && crypt && json_is_string(sig)) {
		struct cn_manifest tmp = {root};
		char hex[65];
		r = check_fingerprint(&tmp, crypt);
		if (r == 0)
			r = signature_hex(root, crypt, hex);
		if (r == 0 && strcmp(hex, json_string_value(sig)) != 0)
			r = cn_error_set(-CN_E_CHECKSUM, "wrong signature in manifest");
	}
	if (r == 0 && !(*out = calloc(1, sizeof(**out))))
		r = cn_error_set(-ENOMEM, "out of memory");
	if (r < 0) {
		json_decref(root);
		return r;
	}
	(*out)->root = root;
	return 0;
}

int cn_manifest_decode(const uint8_t *blob, size_t len, const struct cn_crypt_config *crypt,
		       struct cn_manifest **out)
{
	struct cn_buf text = {0};
	int t = cn_blob_type(blob, len);
	if (t == CN_BLOB_ENCRYPTED || t == CN_BLOB_ENCRYPTED_ZSTD)
		return cn_error_set(-CN_E_FORMAT, "manifest blob is encrypted");
	int r = cn_blob_decode(blob, len, NULL, NULL, &text);
	if (r < 0) {
		cn_buf_free(&text); /* a failed decode may have grown it */
		return cn_error_prefix(r, "decode backup manifest blob failed");
	}
	r = cn_manifest_parse_json(text.data, text.len, crypt, out);
	cn_buf_free(&text);
	return r;
}
