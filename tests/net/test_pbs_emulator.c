/* Integration test of net/ against the PBS emulator (tests/pbs_emulator):
 * backups through the PBS target with hand-made plain DataBlob chunks,
 * restore through the PBS source (parallel chunk downloads), incremental
 * backup reusing the previous index, REST calls (groups, snapshots,
 * status, prune, forget), and the failures: wrong or missing fingerprint,
 * wrong token or password, unreachable server, server killed, garbage,
 * reset streams and GOAWAY mid-upload, garbage upgrade and REST answers,
 * and abort. Each case starts its own emulator on loopback. */
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/cn_error.h"
#include "common/cn_util.h"
#include "net/cn_pbs.h"
#include "net/cn_pbs_source.h"
#include "net/cn_pbs_target.h"
#include "tests/net/pbs_emu.h"
#include "../unit/cn_test.h"

#define TOKEN_ID PBS_EMU_TOKEN_ID
#define TOKEN_SECRET PBS_EMU_TOKEN_SECRET
#define USER_PW PBS_EMU_USER_PW
#define NCHUNKS 24

static void sha256(const uint8_t *d, size_t n, uint8_t out[32])
{
	unsigned int len = 32;
	ck_assert_int_eq(EVP_Digest(d, n, out, &len, EVP_sha256(), NULL), 1);
}

static uint32_t crc32_le(const uint8_t *p, size_t n)
{
	uint32_t c = 0xffffffffu;
	for (size_t i = 0; i < n; i++) {
		c ^= p[i];
		for (int k = 0; k < 8; k++)
			c = (c >> 1) ^ (0xedb88320u & (0u - (c & 1)));
	}
	return ~c;
}

/* A plain (uncompressed, unencrypted) DataBlob: magic, CRC32, data. */
static void make_blob(const uint8_t *data, size_t len, struct cn_buf *out)
{
	static const uint8_t magic[8] = {66, 171, 56, 7, 190, 131, 112, 161};
	uint8_t crc[4];
	out->len = 0;
	cn_put_le32(crc, crc32_le(data, len));
	ck_assert_int_eq(cn_buf_append(out, magic, 8), 0);
	ck_assert_int_eq(cn_buf_append(out, crc, 4), 0);
	ck_assert_int_eq(cn_buf_append(out, data, len), 0);
}

/* Deterministic chunk contents; chunk 5 repeats chunk 2 (dedup within a
 * snapshot); seed varies the data between backups. */
static size_t chunk_data(int i, unsigned seed, uint8_t *buf)
{
	size_t len = 1000 + (size_t)((i * 7919u + seed * 31u) % 200000u);
	uint32_t x = (uint32_t)(i + 1) * 2654435761u + seed;
	for (size_t k = 0; k < len; k++) {
		x = x * 1103515245u + 12345u;
		buf[k] = (uint8_t)(x >> 16);
	}
	return len;
}

/* Chunk i of a backup with seed: half of the chunks change with the
 * seed, half stay; chunk 5 repeats chunk 2. Encoded as a plain blob. */
static struct cn_chunk *make_chunk(int i, unsigned seed, uint8_t *buf)
{
	struct cn_buf blob = {0};
	int src = i == 5 ? 2 : i;
	size_t len = chunk_data(src, src % 2 ? seed : 0, buf);
	struct cn_chunk *c = cn_chunk_new(len + 12);
	ck_assert_ptr_nonnull(c);
	make_blob(buf, len, &blob);
	memcpy(c->data, blob.data, blob.len);
	c->len = blob.len;
	c->plain_size = len;
	sha256(buf, len, c->digest);
	cn_buf_free(&blob);
	return c;
}

struct backup_result {
	uint8_t digests[NCHUNKS][32];
	uint64_t size;
	uint8_t csum[32];
	struct cn_buf manifest;   /* previous manifest got from begin */
	int64_t prev_time;
	struct cn_pbs_target_stats stats;
};

static void manifest_json(const struct cn_snapshot_id *id, const char *files_json, struct cn_buf *blob)
{
	char json[2048];
	int n = snprintf(json, sizeof(json),
			 "{\"backup-type\":\"%s\",\"backup-id\":\"%s\",\"backup-time\":%lld,"
			 "\"files\":[%s],\"signature\":null,\"unprotected\":{}}",
			 id->type, id->id, (long long)id->time, files_json);
	make_blob((const uint8_t *)json, (size_t)n, blob);
}

/* Parses .didx bytes: digests and end offsets of its entries. */
static size_t parse_didx(const struct cn_buf *b, uint8_t (*digests)[32], uint64_t *ends, size_t max)
{
	ck_assert_uint_ge(b->len, 4096);
	ck_assert_uint_eq((b->len - 4096) % 40, 0);
	size_t n = (b->len - 4096) / 40;
	ck_assert_uint_le(n, max);
	for (size_t i = 0; i < n; i++) {
		const uint8_t *e = b->data + 4096 + 40 * i;
		if (ends)
			ends[i] = cn_le64(e);
		memcpy(digests[i], e + 8, 32);
	}
	return n;
}

/* Runs one backup the way the engine does. Returns 0 or the first error
 * (the target is aborted then). fixed_too adds a small .fidx. */
static int run_backup(struct cn_pbs *conn, const struct cn_snapshot_id *id, unsigned seed, int fixed_too,
		      struct backup_result *res)
{
	struct cn_target *t;
	struct cn_buf prev = {0}, blob = {0}, previdx = {0};
	int64_t prev_time;
	uint8_t *buf = malloc(256 * 1024);
	EVP_MD_CTX *csum = EVP_MD_CTX_new();
	int r, h = -1;
	char files[1024];

	memset(res, 0, sizeof(*res));
	ck_assert_int_eq(cn_pbs_target_new(conn, &(struct cn_pbs_target_opts){.max_inflight = 8}, &t), 0);
	if ((r = t->ops->begin(t, id, &prev, &prev_time)) < 0)
		goto out;
	res->manifest = prev;
	res->prev_time = prev_time;
	prev = (struct cn_buf){0};
	if (prev_time >= 0) {
		/* An archive the previous snapshot lacks: -ENOENT, session goes on. */
		ck_assert_int_eq(t->ops->load_previous_index(t, "nothere.pxar.didx", &previdx), -ENOENT);
		r = t->ops->load_previous_index(t, "root.pxar.didx", &previdx);
		if (r < 0)
			goto out;
		uint8_t known[64][32];
		size_t nk = parse_didx(&previdx, known, NULL, 64);
		if ((r = t->ops->add_known(t, (const uint8_t(*)[32])known, nk)) < 0)
			goto out;
	}
	if ((h = t->ops->index_open(t, "root.pxar.didx", CN_INDEX_DYNAMIC, 0, 0)) < 0) {
		r = h;
		goto out;
	}
	EVP_DigestInit_ex(csum, EVP_sha256(), NULL);
	for (int i = 0; i < NCHUNKS; i++) {
		struct cn_chunk *c = make_chunk(i, seed, buf);
		size_t len = c->plain_size;
		memcpy(res->digests[i], c->digest, 32);
		if ((r = t->ops->has_chunk(t, res->digests[i])) >= 0)
			r = r ? 0 : t->ops->put_chunk(t, c);
		cn_chunk_unref(c);
		if (r < 0)
			goto out;
		res->size += len;
		struct cn_index_entry e = {.end_offset = res->size};
		memcpy(e.digest, res->digests[i], 32);
		uint8_t le[8];
		cn_put_le64(le, res->size);
		EVP_DigestUpdate(csum, le, 8);
		EVP_DigestUpdate(csum, e.digest, 32);
		if ((r = t->ops->index_append(t, h, &e, 1)) < 0)
			goto out;
	}
	unsigned int cl = 32;
	EVP_DigestFinal_ex(csum, res->csum, &cl);
	if ((r = t->ops->index_close(t, h, NCHUNKS, res->size, res->csum)) < 0)
		goto out;
	char hex[65], fhex[65] = "";
	cn_hex_encode(res->csum, 32, hex);
	uint64_t fsize = 5000;
	if (fixed_too) {
		uint8_t fd[32];
		for (size_t k = 0; k < fsize; k++)
			buf[k] = (uint8_t)(k * 3 + seed);
		sha256(buf, fsize, fd);
		int fh = t->ops->index_open(t, "disk.img.fidx", CN_INDEX_FIXED, fsize, 4u << 20);
		if (fh < 0) {
			r = fh;
			goto out;
		}
		struct cn_chunk *c = cn_chunk_new(fsize + 12);
		make_blob(buf, fsize, &blob);
		memcpy(c->data, blob.data, blob.len);
		c->len = blob.len;
		c->plain_size = fsize;
		memcpy(c->digest, fd, 32);
		r = t->ops->put_chunk(t, c);
		cn_chunk_unref(c);
		struct cn_index_entry e = {.end_offset = fsize};
		memcpy(e.digest, fd, 32);
		uint8_t fcs[32];
		sha256(fd, 32, fcs);
		if (r < 0 || (r = t->ops->index_append(t, fh, &e, 1)) < 0 ||
		    (r = t->ops->index_close(t, fh, 1, fsize, fcs)) < 0)
			goto out;
		cn_hex_encode(fcs, 32, fhex);
	}
	int n = snprintf(files, sizeof(files),
			 "{\"filename\":\"root.pxar.didx\",\"crypt-mode\":\"none\",\"size\":%llu,\"csum\":\"%s\"}",
			 (unsigned long long)res->size, hex);
	if (fixed_too)
		snprintf(files + n, sizeof(files) - (size_t)n,
			 ",{\"filename\":\"disk.img.fidx\",\"crypt-mode\":\"none\",\"size\":%llu,\"csum\":\"%s\"}",
			 (unsigned long long)fsize, fhex);
	manifest_json(id, files, &blob);
	if ((r = t->ops->put_blob(t, "index.json.blob", blob.data, blob.len)) < 0)
		goto out;
	r = t->ops->finish(t);
out:
	if (r < 0) {
		/* keep the message across abort */
		char msg[1024];
		snprintf(msg, sizeof(msg), "%s", cn_error_message());
		t->ops->abort(t);
		cn_error_set(r, "%s", msg);
	}
	cn_pbs_target_stats(t, &res->stats);
	t->ops->destroy(t);
	EVP_MD_CTX_free(csum);
	cn_buf_free(&prev);
	cn_buf_free(&blob);
	cn_buf_free(&previdx);
	free(buf);
	return r;
}

static struct cn_snapshot_id snap(int64_t time)
{
	struct cn_snapshot_id id = {.ns = "", .type = "host", .id = "test", .time = time};
	return id;
}

struct fetch_job {
	struct cn_source *src;
	const uint8_t (*digests)[32];
	size_t first, n;
	int err;
};

static void *fetch_thread(void *arg)
{
	struct fetch_job *j = arg;
	struct cn_buf b = {0};
	for (size_t i = j->first; i < j->first + j->n && !j->err; i++) {
		uint8_t d[32];
		if (j->src->ops->get_chunk(j->src, j->digests[i], &b) < 0 || b.len < 12) {
			j->err = -1;
			break;
		}
		sha256(b.data + 12, b.len - 12, d);
		if (memcmp(d, j->digests[i], 32) != 0 || crc32_le(b.data + 12, b.len - 12) != cn_le32(b.data + 8))
			j->err = -2;
	}
	cn_buf_free(&b);
	return NULL;
}

/* Restores snapshot id through the source and checks every byte. */
static void check_restore(struct cn_pbs *conn, const struct cn_snapshot_id *id, const struct backup_result *res)
{
	struct cn_source *src;
	struct cn_buf b = {0};
	uint8_t digests[64][32];
	uint64_t ends[64];
	ck_assert_int_eq(cn_pbs_source_new(conn, &src), 0);
	ck_assert_int_eq(src->ops->open(src, id), 0);
	/* The server rewrites the manifest (maybe compressed): check that
	 * it is a blob with a valid CRC. */
	ck_assert_int_eq(src->ops->get_file(src, "index.json.blob", &b), 0);
	ck_assert_uint_gt(b.len, 12);
	ck_assert_uint_eq(crc32_le(b.data + 12, b.len - 12), cn_le32(b.data + 8));
	ck_assert_int_eq(src->ops->get_file(src, "root.pxar.didx", &b), 0);
	size_t n = parse_didx(&b, digests, ends, 64);
	ck_assert_uint_eq(n, NCHUNKS);
	ck_assert_mem_eq(digests, res->digests, sizeof(res->digests));
	ck_assert_uint_eq(ends[n - 1], res->size);
	ck_assert_int_eq(src->ops->get_file(src, "missing.blob", &b), -ENOENT);

	/* Four threads fetch chunks concurrently on the one session. */
	pthread_t th[4];
	struct fetch_job jobs[4];
	for (int i = 0; i < 4; i++) {
		jobs[i] = (struct fetch_job){.src = src, .digests = (const uint8_t(*)[32])digests,
					     .first = (size_t)i * NCHUNKS / 4, .n = NCHUNKS / 4};
		ck_assert_int_eq(pthread_create(&th[i], NULL, fetch_thread, &jobs[i]), 0);
	}
	for (int i = 0; i < 4; i++) {
		pthread_join(th[i], NULL);
		ck_assert_int_eq(jobs[i].err, 0);
	}
	uint8_t unknown[32] = {1, 2, 3};
	ck_assert_int_lt(src->ops->get_chunk(src, unknown, &b), 0);
	cn_buf_free(&b);
	src->ops->destroy(src);
}

/* Total chunk uploads the emulator counted (its stats file). */
static long emu_chunks_new(const struct pbs_emu *e)
{
	char path[192];
	snprintf(path, sizeof(path), "%s/.emulator-stats.json", e->ds);
	json_t *j = json_load_file(path, 0, NULL);
	ck_assert_ptr_nonnull(j);
	long v = (long)json_integer_value(json_object_get(json_object_get(j, "totals"), "chunks_uploaded"));
	json_decref(j);
	return v;
}

START_TEST(test_backup_restore_incremental)
{
	struct pbs_emu e = {0};
	struct cn_pbs *conn;
	struct backup_result r1, r2;
	ck_assert_int_eq(pbs_emu_start(&e, NULL), 0);
	ck_assert_int_eq(pbs_emu_connect(&e, TOKEN_ID, TOKEN_SECRET, e.fp, &conn), 0);

	struct cn_snapshot_id id1 = snap(1700000000), id2 = snap(1700000100);
	ck_assert_msg(run_backup(conn, &id1, 1, 0, &r1) == 0, "%s", cn_error_message());
	ck_assert_uint_eq(r1.manifest.len, 0);  /* no previous snapshot */
	ck_assert_int_eq(r1.prev_time, -1);
	ck_assert_uint_eq(r1.stats.chunks_uploaded, NCHUNKS - 1);  /* chunk 5 = chunk 2 */
	ck_assert_uint_eq(r1.stats.chunks_skipped, 0);
	ck_assert_uint_ge(r1.stats.appends, 1);
	ck_assert_int_eq(emu_chunks_new(&e), NCHUNKS - 1);
	check_restore(conn, &id1, &r1);

	/* Second backup: the unchanged half comes from the previous index. */
	ck_assert_msg(run_backup(conn, &id2, 2, 1, &r2) == 0, "%s", cn_error_message());
	ck_assert_int_eq(r2.prev_time, id1.time);
	ck_assert_uint_gt(r2.manifest.len, 12);
	ck_assert_uint_eq(crc32_le(r2.manifest.data + 12, r2.manifest.len - 12), cn_le32(r2.manifest.data + 8));
	/* the odd chunks changed (11: chunk 5 repeats the even chunk 2),
	 * plus the fixed index's chunk; the emulator saw exactly those */
	ck_assert_uint_eq(r2.stats.chunks_uploaded, NCHUNKS / 2 - 1 + 1);
	ck_assert_int_eq(emu_chunks_new(&e), NCHUNKS - 1 + NCHUNKS / 2);
	check_restore(conn, &id2, &r2);

	/* A backup older than the last one is refused with the server's text. */
	struct backup_result r3;
	struct cn_snapshot_id old = snap(1600000000);
	ck_assert_int_eq(run_backup(conn, &old, 3, 0, &r3), -CN_E_REMOTE);
	ck_assert_ptr_nonnull(strstr(cn_error_message(), "older than last backup"));
	cn_buf_free(&r3.manifest);

	/* REST: groups, snapshots, status, prune, forget. */
	struct cn_pbs_group *g;
	size_t n;
	ck_assert_int_eq(cn_pbs_list_groups(conn, "", &g, &n), 0);
	ck_assert_uint_eq(n, 1);
	ck_assert_str_eq(g[0].id, "test");
	ck_assert_uint_eq(g[0].backup_count, 2);
	free(g);
	struct cn_snapshot_info *si;
	ck_assert_int_eq(cn_pbs_list_snapshots(conn, NULL, &si, &n), 0);
	ck_assert_uint_eq(n, 2);
	ck_assert_int_eq(si[0].id.time, id1.time);
	ck_assert_int_eq(si[1].id.time, id2.time);
	free(si);
	struct cn_pbs_status st;
	ck_assert_int_eq(cn_pbs_status(conn, &st), 0);
	ck_assert_uint_gt(st.total, 0);
	struct cn_pbs_prune_item *pi;
	struct cn_pbs_keep keep = {.last = 1};
	ck_assert_int_eq(cn_pbs_prune(conn, &id1, &keep, 1, &pi, &n), 0);
	ck_assert_uint_eq(n, 2);
	for (size_t i = 0; i < n; i++)
		ck_assert_int_eq(pi[i].keep, pi[i].id.time == id2.time);
	free(pi);
	ck_assert_int_eq(cn_pbs_forget(conn, &id1), 0);
	ck_assert_msg(cn_pbs_forget(conn, &id1) == -ENOENT, "%s", cn_error_message());
	struct cn_source *src;
	ck_assert_int_eq(cn_pbs_source_new(conn, &src), 0);
	struct cn_snapshot_id grp = snap(0);
	ck_assert_int_eq(src->ops->list_snapshots(src, &grp, &si, &n), 0);
	ck_assert_uint_eq(n, 1);
	ck_assert_int_eq(si[0].id.time, id2.time);
	free(si);
	src->ops->destroy(src);

	cn_buf_free(&r1.manifest);
	cn_buf_free(&r2.manifest);
	cn_pbs_free(conn);
	pbs_emu_cleanup(&e);
}
END_TEST

START_TEST(test_password_login)
{
	struct pbs_emu e = {0};
	struct cn_pbs *conn;
	struct backup_result r;
	ck_assert_int_eq(pbs_emu_start(&e, NULL), 0);
	ck_assert_msg(pbs_emu_connect(&e, "alice@pbs", USER_PW, e.fp, &conn) == 0, "%s", cn_error_message());
	struct cn_snapshot_id id = snap(1700000000);
	ck_assert_msg(run_backup(conn, &id, 1, 0, &r) == 0, "%s", cn_error_message());
	/* Ticket renewal (upstream: every 15 minutes), then a restore with
	 * the renewed ticket. */
	ck_assert_msg(cn_pbs_renew_ticket(conn, 1) == 0, "%s", cn_error_message());
	check_restore(conn, &id, &r);
	cn_pbs_free(conn);
	ck_assert_int_eq(pbs_emu_connect(&e, "alice@pbs", "wrong", e.fp, &conn), -CN_E_AUTH);
	ck_assert_ptr_null(strstr(cn_error_message(), "wrong"));
	cn_buf_free(&r.manifest);
	pbs_emu_cleanup(&e);
}
END_TEST

START_TEST(test_trust_and_auth_failures)
{
	struct pbs_emu e = {0};
	struct cn_pbs *conn;
	ck_assert_int_eq(pbs_emu_start(&e, NULL), 0);
	/* Wrong fingerprint: refused, both fingerprints in the message. */
	const char *wrong = "00:11:22:33:44:55:66:77:88:99:aa:bb:cc:dd:ee:ff:"
			    "00:11:22:33:44:55:66:77:88:99:aa:bb:cc:dd:ee:ff";
	ck_assert_int_eq(pbs_emu_connect(&e, TOKEN_ID, TOKEN_SECRET, wrong, &conn), -CN_E_TLS);
	ck_assert_msg(strstr(cn_error_message(), e.fp) != NULL, "%s", cn_error_message());
	ck_assert_ptr_nonnull(strstr(cn_error_message(), "mismatch"));
	ck_assert_ptr_null(strstr(cn_error_message(), TOKEN_SECRET));
	/* The same rule on the sockets that carry the HTTP/2 sessions. */
	struct cn_tls_pin pin;
	struct cn_tls *tls = NULL;
	ck_assert_int_eq(cn_tls_pin_init(&pin, "127.0.0.1", wrong), 0);
	ck_assert_int_eq(cn_tls_connect("127.0.0.1", (uint16_t)e.port, &pin, NULL, &tls), -CN_E_TLS);
	ck_assert_msg(strstr(cn_error_message(), e.fp) != NULL, "%s", cn_error_message());
	ck_assert_int_eq(pin.fp_mismatch, 1);
	ck_assert_int_eq(cn_tls_pin_init(&pin, "127.0.0.1", e.fp), 0);
	ck_assert_int_eq(cn_tls_connect("127.0.0.1", (uint16_t)e.port, &pin, NULL, &tls), 0);
	ck_assert_int_eq(pin.chain_ok, 0);  /* self-signed: accepted by the pin alone */
	cn_tls_free(tls);
	/* No fingerprint, self-signed: refused, the seen fingerprint shown. */
	unsetenv("PBS_FINGERPRINT");
	ck_assert_int_eq(pbs_emu_connect(&e, TOKEN_ID, TOKEN_SECRET, NULL, &conn), -CN_E_TLS);
	ck_assert_msg(strstr(cn_error_message(), e.fp) != NULL, "%s", cn_error_message());
	/* PBS_FINGERPRINT from the environment, upper case accepted. */
	char upper[96];
	for (int i = 0; i < 96; i++)
		upper[i] = (char)(e.fp[i] >= 'a' && e.fp[i] <= 'f' ? e.fp[i] - 32 : e.fp[i]);
	setenv("PBS_FINGERPRINT", upper, 1);
	ck_assert_msg(pbs_emu_connect(&e, TOKEN_ID, TOKEN_SECRET, NULL, &conn) == 0, "%s", cn_error_message());
	unsetenv("PBS_FINGERPRINT");
	/* The backup session's own TLS connection is pinned too: checked by
	 * a full session below. */
	struct cn_source *src;
	struct cn_snapshot_info *si;
	size_t n;
	ck_assert_int_eq(cn_pbs_source_new(conn, &src), 0);
	ck_assert_int_eq(src->ops->list_snapshots(src, NULL, &si, &n), 0);
	ck_assert_uint_eq(n, 0);
	struct cn_snapshot_id id = snap(1700000000);
	ck_assert_int_lt(src->ops->open(src, &id), 0);  /* no such snapshot */
	src->ops->destroy(src);
	cn_pbs_free(conn);
	/* Wrong token secret. */
	ck_assert_int_eq(pbs_emu_connect(&e, TOKEN_ID, "not-the-secret", e.fp, &conn), -CN_E_AUTH);
	ck_assert_ptr_null(strstr(cn_error_message(), "not-the-secret"));
	/* Unknown token. */
	ck_assert_int_eq(pbs_emu_connect(&e, "root@pam!nope", TOKEN_SECRET, e.fp, &conn), -CN_E_AUTH);
	ck_assert_ptr_null(strstr(cn_error_message(), TOKEN_SECRET));
	/* Secret from PBS_PASSWORD_FILE. */
	char pwfile[128];
	snprintf(pwfile, sizeof(pwfile), "%s/pw", e.base);
	FILE *f = fopen(pwfile, "w");
	fprintf(f, "%s\n", TOKEN_SECRET);
	fclose(f);
	unsetenv("PBS_PASSWORD");
	unsetenv("PBS_PASSWORD_FD");
	setenv("PBS_PASSWORD_FILE", pwfile, 1);
	ck_assert_msg(pbs_emu_connect(&e, TOKEN_ID, NULL, e.fp, &conn) == 0, "%s", cn_error_message());
	cn_pbs_free(conn);
	unsetenv("PBS_PASSWORD_FILE");
	ck_assert_int_eq(pbs_emu_connect(&e, TOKEN_ID, NULL, e.fp, &conn), -ENOENT);
	ck_assert_ptr_nonnull(strstr(cn_error_message(), "PBS_PASSWORD"));

	/* Nobody listening: refused after the retries, quickly. */
	int port = e.port;
	pbs_emu_stop(&e);
	e.port = port;
	ck_assert_int_eq(pbs_emu_connect(&e, TOKEN_ID, TOKEN_SECRET, e.fp, &conn), -EIO);
	ck_assert_msg(strstr(cn_error_message(), "127.0.0.1") != NULL, "%s", cn_error_message());
	pbs_emu_cleanup(&e);
}
END_TEST

/* A backup against an emulator with a fault; returns the error. */
static int faulty_backup(struct pbs_emu *e, const char *fault, const char *value, char *msg, size_t msgsize)
{
	const char *extra[] = {fault, value, NULL};
	struct cn_pbs *conn;
	struct backup_result r;
	ck_assert_int_eq(pbs_emu_start(e, value ? extra : (const char *[]){fault, NULL}), 0);
	ck_assert_int_eq(pbs_emu_connect(e, TOKEN_ID, TOKEN_SECRET, e->fp, &conn), 0);
	struct cn_snapshot_id id = snap(1700000000);
	int rc = run_backup(conn, &id, 1, 0, &r);
	snprintf(msg, msgsize, "%s", cn_error_message());
	cn_buf_free(&r.manifest);
	cn_pbs_free(conn);
	return rc;
}

/* After a failed backup nothing looks finished: no manifest on disk, and
 * (if the emulator still runs) the server has discarded the snapshot once
 * it noticed the dropped connection. */
static void check_no_snapshot(struct pbs_emu *e, int alive)
{
	char cmd[256];
	snprintf(cmd, sizeof(cmd), "ls %s/host/test/*/index.json.blob >/dev/null 2>&1", e->ds);
	if (alive) {
		struct cn_pbs *conn;
		struct cn_snapshot_info *si;
		size_t n = 1;
		ck_assert_int_eq(pbs_emu_connect(e, TOKEN_ID, TOKEN_SECRET, e->fp, &conn), 0);
		for (int i = 0; i < 50 && n > 0; i++) {
			ck_assert_int_eq(cn_pbs_list_snapshots(conn, NULL, &si, &n), 0);
			free(si);
			if (n > 0)
				usleep(100000);
		}
		ck_assert_uint_eq(n, 0);
		cn_pbs_free(conn);
	}
	ck_assert_int_ne(system(cmd), 0);
	pbs_emu_cleanup(e);
}

START_TEST(test_server_killed)
{
	struct pbs_emu e = {0};
	char msg[1024];
	int r = faulty_backup(&e, "--exit-after-chunks", "3", msg, sizeof(msg));
	ck_assert_msg(r < 0 && strstr(msg, "connection to server lost") != NULL, "%d %s", r, msg);
	check_no_snapshot(&e, 0);
}
END_TEST

START_TEST(test_server_garbage)
{
	struct pbs_emu e = {0};
	char msg[1024];
	int r = faulty_backup(&e, "--garbage-after-chunks", "2", msg, sizeof(msg));
	/* The bytes may parse as a (bogus) GOAWAY frame or not at all. */
	/* The bytes may parse as a (bogus) GOAWAY frame, as an invalid
	 * frame, or be overtaken by the server's reset of the connection. */
	ck_assert_msg(r < 0 && (strstr(msg, "invalid HTTP/2") || strstr(msg, "GOAWAY") ||
				strstr(msg, "connection to server lost")), "%d %s", r, msg);
	check_no_snapshot(&e, 1);
}
END_TEST

START_TEST(test_stream_reset)
{
	struct pbs_emu e = {0};
	char msg[1024];
	int r = faulty_backup(&e, "--reset-after-chunks", "1", msg, sizeof(msg));
	ck_assert_msg(r < 0 && strstr(msg, "chunk") != NULL, "%d %s", r, msg);
	check_no_snapshot(&e, 1);
}
END_TEST

START_TEST(test_goaway)
{
	struct pbs_emu e = {0};
	char msg[1024];
	int r = faulty_backup(&e, "--goaway-after-chunks", "2", msg, sizeof(msg));
	ck_assert_msg(r < 0, "%d %s", r, msg);
	check_no_snapshot(&e, 1);
}
END_TEST

START_TEST(test_garbage_upgrade)
{
	struct pbs_emu e = {0};
	char msg[1024];
	int r = faulty_backup(&e, "--garbage-on-upgrade", NULL, msg, sizeof(msg));
	ck_assert_msg(r == -CN_E_PROTOCOL && strstr(msg, "malformed HTTP") != NULL, "%d %s", r, msg);
	pbs_emu_cleanup(&e);
}
END_TEST

START_TEST(test_garbage_rest)
{
	struct pbs_emu e = {0};
	struct cn_pbs *conn;
	const char *extra[] = {"--garbage-rest", NULL};
	ck_assert_int_eq(pbs_emu_start(&e, extra), 0);
	ck_assert_int_eq(pbs_emu_connect(&e, TOKEN_ID, TOKEN_SECRET, e.fp, &conn), -CN_E_PROTOCOL);
	ck_assert_msg(strstr(cn_error_message(), "not JSON") != NULL, "%s", cn_error_message());
	pbs_emu_cleanup(&e);
}
END_TEST

START_TEST(test_abort)
{
	struct pbs_emu e = {0};
	struct cn_pbs *conn;
	struct cn_target *t;
	struct cn_buf prev = {0}, blob = {0};
	int64_t pt;
	uint8_t data[3000];
	ck_assert_int_eq(pbs_emu_start(&e, NULL), 0);
	ck_assert_int_eq(pbs_emu_connect(&e, TOKEN_ID, TOKEN_SECRET, e.fp, &conn), 0);
	ck_assert_int_eq(cn_pbs_target_new(conn, NULL, &t), 0);
	struct cn_snapshot_id id = snap(1700000000);
	ck_assert_int_eq(t->ops->begin(t, &id, &prev, &pt), 0);
	ck_assert_int_eq(pt, -1);
	int h = t->ops->index_open(t, "root.pxar.didx", CN_INDEX_DYNAMIC, 0, 0);
	ck_assert_int_ge(h, 0);
	for (int i = 0; i < 4; i++) {
		memset(data, i + 1, sizeof(data));
		struct cn_chunk *c = cn_chunk_new(sizeof(data) + 12);
		make_blob(data, sizeof(data), &blob);
		memcpy(c->data, blob.data, blob.len);
		c->len = blob.len;
		c->plain_size = sizeof(data);
		sha256(data, sizeof(data), c->digest);
		ck_assert_int_eq(t->ops->put_chunk(t, c), 0);
		cn_chunk_unref(c);
	}
	/* Finishing with an open index is refused by the server... */
	ck_assert_int_eq(t->ops->finish(t), -CN_E_REMOTE);
	ck_assert_ptr_nonnull(strstr(cn_error_message(), "open index writer"));
	/* ...and later calls report the same error. */
	ck_assert_int_eq(t->ops->put_blob(t, "x.blob", blob.data, blob.len), -CN_E_REMOTE);
	t->ops->abort(t);
	t->ops->destroy(t);
	cn_buf_free(&prev);
	cn_buf_free(&blob);
	cn_pbs_free(conn);
	check_no_snapshot(&e, 1);
}
END_TEST

/* A server that stops answering inside the session: the I/O timeout ends
 * the session with a clear error instead of hanging. */
START_TEST(test_server_hangs)
{
	struct pbs_emu e = {0};
	struct cn_pbs *conn;
	struct cn_target *t;
	struct cn_buf prev = {0};
	int64_t pt;
	char repo[128];
	const char *extra[] = {"--delay", "5", NULL};
	ck_assert_int_eq(pbs_emu_start(&e, extra), 0);
	snprintf(repo, sizeof(repo), "%s@127.0.0.1:%d:store1", TOKEN_ID, e.port);
	struct cn_pbs_opts o = {.repository = repo, .fingerprint = e.fp, .secret = TOKEN_SECRET,
				.io_timeout_ms = 1500};
	ck_assert_int_eq(cn_pbs_connect(&o, &conn), 0);
	ck_assert_int_eq(cn_pbs_target_new(conn, NULL, &t), 0);
	struct cn_snapshot_id id = snap(1700000000);
	ck_assert_int_eq(t->ops->begin(t, &id, &prev, &pt), -ETIMEDOUT);
	ck_assert_msg(strstr(cn_error_message(), "no data from server") != NULL, "%s", cn_error_message());
	t->ops->abort(t);
	t->ops->destroy(t);
	cn_buf_free(&prev);
	cn_pbs_free(conn);
	pbs_emu_cleanup(&e);
}
END_TEST

/* Two targets fed in turn, as the engine's fan-out does; B's server dies
 * mid-upload: B fails clearly and is aborted, A finishes and restores. */
START_TEST(test_two_targets_one_dies)
{
	struct pbs_emu ea = {0}, eb = {0};
	struct cn_pbs *ca, *cb;
	const char *die[] = {"--exit-after-chunks", "5", NULL};
	ck_assert_int_eq(pbs_emu_start(&ea, NULL), 0);
	ck_assert_int_eq(pbs_emu_start(&eb, die), 0);
	ck_assert_int_eq(pbs_emu_connect(&ea, TOKEN_ID, TOKEN_SECRET, ea.fp, &ca), 0);
	ck_assert_int_eq(pbs_emu_connect(&eb, TOKEN_ID, TOKEN_SECRET, eb.fp, &cb), 0);
	struct cn_target *t[2];
	int h[2], alive[2] = {1, 1}, err[2] = {0, 0};
	char msg[2][512] = {"", ""};
	ck_assert_int_eq(cn_pbs_target_new(ca, NULL, &t[0]), 0);
	ck_assert_int_eq(cn_pbs_target_new(cb, NULL, &t[1]), 0);
	struct cn_snapshot_id id = snap(1700000000);
	struct backup_result res;
	memset(&res, 0, sizeof(res));
	uint8_t *buf = malloc(256 * 1024);
	EVP_MD_CTX *csum = EVP_MD_CTX_new();
	EVP_DigestInit_ex(csum, EVP_sha256(), NULL);
	for (int step = -1; step <= NCHUNKS; step++) {
		struct cn_chunk *c = NULL;
		struct cn_index_entry e;
		if (step >= 0 && step < NCHUNKS) {
			c = make_chunk(step, 1, buf);
			memcpy(res.digests[step], c->digest, 32);
			res.size += c->plain_size;
			e.end_offset = res.size;
			memcpy(e.digest, c->digest, 32);
			uint8_t le[8];
			cn_put_le64(le, res.size);
			EVP_DigestUpdate(csum, le, 8);
			EVP_DigestUpdate(csum, e.digest, 32);
		} else if (step == NCHUNKS) {
			unsigned int cl = 32;
			EVP_DigestFinal_ex(csum, res.csum, &cl);
		}
		for (int k = 0; k < 2; k++) {
			struct cn_target *tk = t[k];
			int r = 0;
			if (!alive[k])
				continue;
			if (step == -1) {
				struct cn_buf prev = {0};
				int64_t pt;
				r = tk->ops->begin(tk, &id, &prev, &pt);
				cn_buf_free(&prev);
				if (r == 0)
					r = h[k] = tk->ops->index_open(tk, "root.pxar.didx", CN_INDEX_DYNAMIC, 0, 0);
			} else if (c) {
				r = tk->ops->has_chunk(tk, c->digest);
				if (r >= 0)
					r = r ? 0 : tk->ops->put_chunk(tk, c);
				if (r >= 0)
					r = tk->ops->index_append(tk, h[k], &e, 1);
			} else {
				struct cn_buf blob = {0};
				char hex[65], files[256];
				cn_hex_encode(res.csum, 32, hex);
				snprintf(files, sizeof(files),
					 "{\"filename\":\"root.pxar.didx\",\"size\":%llu,\"csum\":\"%s\"}",
					 (unsigned long long)res.size, hex);
				manifest_json(&id, files, &blob);
				r = tk->ops->index_close(tk, h[k], NCHUNKS, res.size, res.csum);
				if (r == 0)
					r = tk->ops->put_blob(tk, "index.json.blob", blob.data, blob.len);
				if (r == 0)
					r = tk->ops->finish(tk);
				cn_buf_free(&blob);
			}
			if (r < 0) {
				err[k] = r;
				snprintf(msg[k], sizeof(msg[k]), "%s", cn_error_message());
				tk->ops->abort(tk);
				alive[k] = 0;
			}
		}
		cn_chunk_unref(c);
	}
	ck_assert_msg(alive[0] && err[0] == 0, "%s", msg[0]);
	ck_assert_msg(!alive[1] && err[1] < 0 && strstr(msg[1], "connection to server lost"), "%s", msg[1]);
	char name[64];
	snprintf(name, sizeof(name), "pbs:127.0.0.1:%d:store1", eb.port);
	ck_assert_msg(strstr(msg[1], name) != NULL, "%s", msg[1]);
	for (int k = 0; k < 2; k++)
		t[k]->ops->destroy(t[k]);
	check_restore(ca, &id, &res);
	EVP_MD_CTX_free(csum);
	free(buf);
	cn_pbs_free(ca);
	cn_pbs_free(cb);
	pbs_emu_cleanup(&ea);
	check_no_snapshot(&eb, 0);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("pbs_emulator_client");
	/* One case per test so that CK_RUN_CASE=name runs just one. */
#define CASE(fn) do { TCase *tc = tcase_create(#fn); tcase_set_timeout(tc, 120); tcase_add_test(tc, fn); suite_add_tcase(s, tc); } while (0)
	CASE(test_backup_restore_incremental);
	CASE(test_password_login);
	CASE(test_trust_and_auth_failures);
	CASE(test_server_killed);
	CASE(test_server_garbage);
	CASE(test_stream_reset);
	CASE(test_goaway);
	CASE(test_garbage_upgrade);
	CASE(test_garbage_rest);
	CASE(test_abort);
	CASE(test_two_targets_one_dies);
	CASE(test_server_hangs);
	return cn_test_run_suite(s);
}
