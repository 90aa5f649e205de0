/* DataBlob, CRC-32 and crypt primitives: known answers (spec and vectors
 * made independently with Python's zlib/zstandard/cryptography), round
 * trips of every variant, and every corruption and truncation class. */
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

#include "common/cn_error.h"
#include "common/cn_util.h"
#include "store/cn_blob.h"
#include "store/cn_crc32.h"
#include "store/cn_crypt.h"
#include "cn_test.h"

static uint8_t *unhex(const char *hex, size_t *len)
{
	size_t n = strlen(hex) / 2;
	uint8_t *b = malloc(n ? n : 1);
	ck_assert_ptr_nonnull(b);
	ck_assert_int_eq(cn_hex_decode(hex, b, n), 0);
	*len = n;
	return b;
}

/* deterministic pseudo random bytes (xorshift), incompressible */
static void fill_random(uint8_t *p, size_t n, uint64_t seed)
{
	uint64_t x = seed | 1;
	for (size_t i = 0; i < n; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		p[i] = (uint8_t)(x >> 32);
	}
}

/* compressible text */
static void fill_text(uint8_t *p, size_t n)
{
	static const char *words[] = {"backup ", "chunk ", "index ", "datastore ", "\n",
				      "snapshot ", "proxmox ", "cairn "};
	size_t o = 0, i = 0;
	while (o < n) {
		const char *w = words[(i * 7 + i / 3) % 8];
		for (size_t k = 0; w[k] && o < n; k++)
			p[o++] = (uint8_t)w[k];
		i++;
	}
}

static const uint8_t test_key[32] = {0,  1,  2,  3,  4,  5,  6,  7,  8,  9,  10,
				     11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21,
				     22, 23, 24, 25, 26, 27, 28, 29, 30, 31};

static struct cn_crypt_config *key_config(uint8_t first)
{
	uint8_t k[32];
	memcpy(k, test_key, 32);
	k[0] = first;
	struct cn_crypt_config *c;
	ck_assert_int_eq(cn_crypt_config_new(k, &c), 0);
	return c;
}

static uint32_t crc_bitwise(const uint8_t *p, size_t n)
{
	uint32_t c = 0xffffffff;
	for (size_t i = 0; i < n; i++) {
		c ^= p[i];
		for (int k = 0; k < 8; k++)
			c = (c >> 1) ^ (0xedb88320 & (0u - (c & 1)));
	}
	return ~c;
}

START_TEST(test_crc32)
{
	ck_assert_uint_eq(cn_crc32(0, "123456789", 9), 0xcbf43926);
	ck_assert_uint_eq(cn_crc32(0, "", 0), 0);
	ck_assert_uint_eq(cn_crc32(0, "hello", 5), 0x3610a686);
	/* every length and alignment against the bitwise definition */
	uint8_t buf[300];
	fill_random(buf, sizeof(buf), 42);
	for (size_t off = 0; off < 9; off++)
		for (size_t n = 0; n + off <= sizeof(buf); n += 7)
			ck_assert_uint_eq(cn_crc32(0, buf + off, n), crc_bitwise(buf + off, n));
	/* pieces chain */
	uint32_t c = cn_crc32(0, buf, 100);
	c = cn_crc32(c, buf + 100, 200);
	ck_assert_uint_eq(c, crc_bitwise(buf, 300));
}
END_TEST

/* Every CRC-32 kernel this CPU can run against the portable slice-by-8:
 * every length to 1100 (all the head/block/tail splits of the 16-, 64- and
 * 256-byte steps) at every misalignment to 64, random lengths to 64 KiB
 * with random start values, one large buffer, and results chained across
 * kernels. */
START_TEST(test_crc32_impls)
{
	size_t big = (5u << 20) + 77;
	uint8_t *buf = malloc(big + 64);
	ck_assert_ptr_nonnull(buf);
	fill_random(buf, big + 64, 7);
	ck_assert_str_eq(cn_crc32_impl_name(0), "slice8");
	ck_assert_int_eq(cn_crc32_impl_supported(0), 1);
	ck_assert_int_eq(cn_crc32_impl_supported(cn_crc32_impl_best()), 1);
	ck_assert_ptr_null(cn_crc32_impl_name(cn_crc32_impl_count()));
	int checked = 0;
	for (int i = 1; i < cn_crc32_impl_count(); i++) {
		if (!cn_crc32_impl_supported(i))
			continue;
		checked++;
		ck_assert_uint_eq(cn_crc32_impl(i, 0, "123456789", 9), 0xcbf43926);
		for (size_t off = 0; off < 64; off++)
			for (size_t n = 0; n <= 1100; n++)
				ck_assert_uint_eq(cn_crc32_impl(i, 0, buf + off, n),
						  cn_crc32_impl(0, 0, buf + off, n));
		uint64_t x = 0x9e3779b97f4a7c15ull;
		for (int k = 0; k < 2000; k++) {
			x ^= x << 13, x ^= x >> 7, x ^= x << 17;
			size_t off = x % 64, n = (x >> 8) % (64u << 10);
			uint32_t start = (uint32_t)(x >> 32);
			ck_assert_uint_eq(cn_crc32_impl(i, start, buf + off, n),
					  cn_crc32_impl(0, start, buf + off, n));
		}
		for (size_t off = 0; off < 3; off++)
			ck_assert_uint_eq(cn_crc32_impl(i, 0, buf + off, big),
					  cn_crc32_impl(0, 0, buf + off, big));
		/* pieces through different kernels chain to the whole */
		uint32_t c = cn_crc32_impl(i, 0, buf, 1000);
		c = cn_crc32_impl(0, c, buf + 1000, 333);
		c = cn_crc32_impl(i, c, buf + 1333, 70000);
		ck_assert_uint_eq(c, cn_crc32_impl(0, 0, buf, 71333));
		ck_assert_uint_eq(c, crc_bitwise(buf, 71333));
	}
	/* the dispatcher's choice, through the public entry point */
	ck_assert_uint_eq(cn_crc32(0, buf + 5, big), cn_crc32_impl(0, 0, buf + 5, big));
	if (!checked)
		fprintf(stderr, "test_crc32_impls: this CPU runs no fast CRC-32 kernel\n");
	free(buf);
}
END_TEST

/* In-place encoding gives the bytes of cn_blob_encode_chunk (_ALWAYS with
 * alt, _NONE without; unencrypted, where output is deterministic), in place
 * when stored as they are; encrypted blobs decode back. */
START_TEST(test_encode_inplace)
{
	static const size_t sizes[] = {0, 1, 100, 4095, 65536, 1 << 20};
	struct cn_blob_ctx *ctx;
	struct cn_crypt_config *key = key_config(3);
	ck_assert_int_eq(cn_blob_ctx_new(&ctx), 0);
	size_t max = 1 << 20;
	uint8_t *src = malloc(max), *buf = malloc(44 + max), *alt = malloc(44 + max);
	for (int kind = 0; kind < 2; kind++) {
		if (kind)
			fill_random(src, max, 9);
		else
			fill_text(src, max);
		for (size_t si = 0; si < CN_ARRAY_SIZE(sizes); si++) {
			size_t len = sizes[si];
			for (int enc = 0; enc < 2; enc++) {
				for (int use_alt = 0; use_alt < 2; use_alt++) {
					const struct cn_crypt_config *cc = enc ? key : NULL;
					uint8_t *data = buf + 44, *blob, dg[32];
					size_t blen;
					memcpy(data, src, len);
					ck_assert_int_eq(cn_blob_encode_chunk_inplace(ctx, data, len, cc,
						use_alt ? alt : NULL, dg, &blob, &blen), 0);
					struct cn_chunk *ref;
					ck_assert_int_eq(cn_blob_encode_chunk_ctx(ctx, src, len, cc,
						use_alt ? CN_BLOB_COMPRESS_ALWAYS : CN_BLOB_COMPRESS_NONE, &ref), 0);
					ck_assert_mem_eq(dg, ref->digest, 32);
					ck_assert_uint_eq(blen, ref->len);
					int type = cn_blob_type(blob, blen);
					int zstd = type == CN_BLOB_ZSTD || type == CN_BLOB_ENCRYPTED_ZSTD;
					ck_assert_int_eq(type, cn_blob_type(ref->data, ref->len));
					ck_assert_ptr_eq(blob, zstd ? alt : data - (enc ? 44 : 12));
					if (!enc)
						ck_assert_mem_eq(blob, ref->data, blen);
					struct cn_buf d = {0};
					ck_assert_int_eq(cn_blob_decode_ctx(ctx, blob, blen, cc, dg, &d), 0);
					ck_assert_uint_eq(d.len, len);
					if (len)
						ck_assert_mem_eq(d.data, src, len);
					cn_buf_free(&d);
					cn_chunk_unref(ref);
				}
			}
		}
	}
	free(src);
	free(buf);
	free(alt);
	cn_blob_ctx_free(ctx);
	cn_crypt_config_free(key);
}
END_TEST

/* The view checks as much as the copying decoder: CRC, digest, magic. */
START_TEST(test_decode_view_rejects)
{
	uint8_t data[5000], dg[32], other[32];
	fill_random(data, sizeof(data), 3);
	ck_assert_int_eq(cn_chunk_digest(NULL, data, sizeof(data), dg), 0);
	memset(other, 0x55, sizeof(other));
	struct cn_buf b = {0}, scratch = {0};
	const uint8_t *v;
	size_t vlen;
	ck_assert_int_eq(cn_blob_encode(data, sizeof(data), NULL, CN_BLOB_COMPRESS_NONE, &b), 0);
	ck_assert_int_eq(cn_blob_decode_view(NULL, b.data, b.len, NULL, dg, &scratch, &v, &vlen), 0);
	ck_assert_int_eq(cn_blob_decode_view(NULL, b.data, b.len, NULL, other, &scratch, &v, &vlen),
			 -CN_E_DIGEST);
	ck_assert_int_eq(cn_blob_decode_view(NULL, b.data, b.len, NULL, NULL, &scratch, &v, &vlen), 0);
	b.data[100] ^= 1;
	ck_assert_int_eq(cn_blob_decode_view(NULL, b.data, b.len, NULL, NULL, &scratch, &v, &vlen),
			 -CN_E_CRC);
	/* with a digest, damage is still named by the CRC (computed only then) */
	ck_assert_int_eq(cn_blob_decode_view(NULL, b.data, b.len, NULL, dg, &scratch, &v, &vlen),
			 -CN_E_CRC);
	ck_assert_ptr_nonnull(strstr(cn_error_message(), "CRC"));
	b.data[100] ^= 1;
	b.data[0] ^= 1;
	ck_assert_int_eq(cn_blob_decode_view(NULL, b.data, b.len, NULL, NULL, &scratch, &v, &vlen),
			 -CN_E_MAGIC);
	ck_assert_int_eq(cn_blob_decode_view(NULL, b.data, 5, NULL, NULL, &scratch, &v, &vlen),
			 -CN_E_TRUNCATED);
	cn_buf_free(&b);
	cn_buf_free(&scratch);
}
END_TEST

START_TEST(test_magics_derivation)
{
	static const char *names[4] = {
		"Proxmox Backup uncompressed blob v1.0",
		"Proxmox Backup zstd compressed blob v1.0",
		"Proxmox Backup encrypted blob v1.0",
		"Proxmox Backup zstd compressed encrypted blob v1.0",
	};
	for (int t = 0; t < 4; t++) {
		uint8_t d[32];
		ck_assert_int_eq(EVP_Digest(names[t], strlen(names[t]), d, NULL, EVP_sha256(), NULL), 1);
		ck_assert_mem_eq(cn_blob_magic(t), d, 8);
	}
}
END_TEST

START_TEST(test_plain_known_answer)
{
	struct cn_buf b = {0}, d = {0};
	size_t n;
	uint8_t *want = unhex("42ab3807be8370a186a6103668656c6c6f", &n);
	ck_assert_int_eq(cn_blob_encode((const uint8_t *)"hello", 5, NULL, CN_BLOB_COMPRESS_NONE, &b), 0);
	ck_assert_uint_eq(b.len, n);
	ck_assert_mem_eq(b.data, want, n);
	/* compression of 5 bytes never pays: same bytes */
	b.len = 0;
	ck_assert_int_eq(cn_blob_encode((const uint8_t *)"hello", 5, NULL, CN_BLOB_COMPRESS_ALWAYS, &b), 0);
	ck_assert_mem_eq(b.data, want, n);
	ck_assert_int_eq(cn_blob_decode(want, n, NULL, NULL, &d), 0);
	ck_assert_uint_eq(d.len, 5);
	ck_assert_mem_eq(d.data, "hello", 5);
	ck_assert_int_eq(cn_blob_check(want, n), CN_BLOB_PLAIN);
	free(want);
	cn_buf_free(&b);
	cn_buf_free(&d);
}
END_TEST

/* the zstd frame of the plain path equals Python zstandard's streaming
 * level-1 output (no content size, descriptor 0x00), as the official
 * client's; the encrypted path's equals the one-shot output */
static const char *kat_stream =
	"28b52ffd0048fd0300f2441015a0b70d8064fed4083a910f55cd65777736fd5a8f018967b59a7856ab8967b5"
	"9a7856ab8967b59a787636a501729a3c1d9cce4d0a426c14c4111e7c38afb3291d2720e03703b738e730479c"
	"739823ce39cc11e71ce688730e73c4398739c2398739e29cc31c71ce618e38e730479c739823ce39cc11eddc"
	"18279501";
static const char *kat_encz =
	"e6591bbf0bbfd80bdea590f8111111111111111111111111111111115193269352f3ca7bd4b080893b4f27cd"
	"68a9f2fc1025e98c4e31464fbf58323b58ddd065feb9f0007a4e455964c1519f911325d7cf0686b9d534894a"
	"2fbd1571764f5dbe5177e5807cd4d806c7d71f2cedf9ee32146c8d50d6d02e13f7f03863bd029b97845b724c"
	"251f5280c2c99b67a6d18044e7e5f2136c605dbeef23794f18a4708270f48b5b2dca7211fa9c306c440a961a"
	"34283052b6";

static size_t kat_text(uint8_t *buf)
{
	size_t o = 0;
	for (int i = 0; i < 40; i++)
		o += (size_t)sprintf((char *)buf + o, "line %d of a compressible text blob\n", i % 7);
	return o;
}

START_TEST(test_zstd_known_answer)
{
	uint8_t text[2000];
	size_t tlen = kat_text(text), n;
	ck_assert_uint_eq(tlen, 1400);
	uint8_t *frame = unhex(kat_stream, &n);
	struct cn_buf b = {0}, d = {0};
	enum cn_blob_type type;
	ck_assert_int_eq(cn_blob_encode_ctx(NULL, text, tlen, NULL, CN_BLOB_COMPRESS, &b, &type), 0);
	ck_assert_int_eq(type, CN_BLOB_ZSTD);
	ck_assert_mem_eq(b.data, cn_blob_magic(CN_BLOB_ZSTD), 8);
	ck_assert_uint_eq(b.len, 12 + n);
	ck_assert_mem_eq(b.data + 12, frame, n);
	ck_assert_uint_eq(cn_le32(b.data + 8), cn_crc32(0, frame, n));
	ck_assert_int_eq(cn_blob_decode(b.data, b.len, NULL, NULL, &d), 0);
	ck_assert_uint_eq(d.len, tlen);
	ck_assert_mem_eq(d.data, text, tlen);
	free(frame);

	/* encrypted + compressed blob made by Python (key 00..1f, IV 11..11) */
	uint8_t *blob = unhex(kat_encz, &n);
	struct cn_crypt_config *c = key_config(0);
	d.len = 0;
	ck_assert_int_eq(cn_blob_decode(blob, n, c, NULL, &d), 0);
	ck_assert_uint_eq(d.len, tlen);
	ck_assert_mem_eq(d.data, text, tlen);
	/* our encryption of the same text: same compressed length (one-shot
	 * level 1 with content size), other IV */
	b.len = 0;
	ck_assert_int_eq(cn_blob_encode_ctx(NULL, text, tlen, c, CN_BLOB_COMPRESS, &b, &type), 0);
	ck_assert_int_eq(type, CN_BLOB_ENCRYPTED_ZSTD);
	ck_assert_uint_eq(b.len, n);
	ck_assert_mem_ne(b.data + 12, blob + 12, 16);
	free(blob);
	cn_crypt_config_free(c);
	cn_buf_free(&b);
	cn_buf_free(&d);
}
END_TEST

START_TEST(test_crypt_known_answer)
{
	struct cn_crypt_config *c = key_config(0);
	size_t n;
	uint8_t *idk = unhex("7c2c013efd07f3b25717a485263343cd4d292a4b65c200bb3b18ea227abe225c", &n);
	ck_assert_mem_eq(cn_crypt_id_key(c), idk, 32);
	free(idk);
	uint8_t fp[32], *want = unhex("0eabd4460b6eb9ca345023dee2b778c790e54a1683b9659c0a57ae199090159b", &n);
	cn_crypt_fingerprint(c, fp);
	ck_assert_mem_eq(fp, want, 32);
	char text[CN_FINGERPRINT_TEXT_SIZE];
	cn_fingerprint_format(fp, 0, text);
	ck_assert_uint_eq(strlen(text), 95);
	ck_assert(strncmp(text, "0e:ab:d4:46:0b:6e:b9:ca:", 24) == 0);
	uint8_t back[32];
	ck_assert_int_eq(cn_fingerprint_parse(text, back), 0);
	ck_assert_mem_eq(back, fp, 32);
	cn_fingerprint_format(fp, 1, text);
	ck_assert_str_eq(text, "0e:ab:d4:46:0b:6e:b9:ca");
	ck_assert_int_eq(cn_fingerprint_parse(text, back), -EINVAL);
	ck_assert_int_eq(cn_fingerprint_parse("0e-ab:d4:46:0b:6e:b9:ca:34:50:23:de:e2:b7:78:c7:90:e5:4a:16:83:b9:65:9c:0a:57:ae:19:90:90:15:9b", back), -EINVAL);
	free(want);

	/* encrypted blob made by Python: decode, keyed digest */
	uint8_t *blob = unhex("7b6785be222d4cf05431e6b211111111111111111111111111111111d58bf428"
			      "9224e62e00b7307b1963f3ea2879b16d1f7d881f2e43cd7bdb28f6ac3731dbf9", &n);
	uint8_t *digest = unhex("c7dccb2873a3dd9ef22bef8928db499928a738748ee543e0bcae0a71da46b47d", &n);
	n = 64;
	struct cn_buf d = {0};
	ck_assert_int_eq(cn_blob_decode(blob, n, c, digest, &d), 0);
	ck_assert_uint_eq(d.len, 20);
	ck_assert_mem_eq(d.data, "hello encrypted blob", 20);
	uint8_t dg[32];
	ck_assert_int_eq(cn_chunk_digest(c, d.data, d.len, dg), 0);
	ck_assert_mem_eq(dg, digest, 32);
	/* the unkeyed digest is not accepted for an encrypted chunk */
	ck_assert_int_eq(cn_chunk_digest(NULL, d.data, d.len, dg), 0);
	d.len = 0;
	ck_assert_int_eq(cn_blob_decode(blob, n, c, dg, &d), -CN_E_DIGEST);
	ck_assert_uint_eq(d.len, 0);
	/* no key, wrong key */
	ck_assert_int_eq(cn_blob_decode(blob, n, NULL, NULL, &d), -CN_E_NOKEY);
	struct cn_crypt_config *other = key_config(1);
	ck_assert_int_eq(cn_blob_decode(blob, n, other, NULL, &d), -CN_E_TAG);
	ck_assert_uint_eq(d.len, 0);
	cn_crypt_config_free(other);
	cn_crypt_config_free(c);
	free(blob);
	free(digest);
	cn_buf_free(&d);
}
END_TEST

START_TEST(test_hmac_known_answer)
{
	/* RFC 4231 test case 2 cannot be used (the key is id_key, derived);
	 * check HMAC against OpenSSL's one-shot EVP_Q_mac-free path instead:
	 * HMAC(id_key, m) computed by hand from two SHA-256 passes */
	struct cn_crypt_config *c = key_config(0);
	const uint8_t *k = cn_crypt_id_key(c);
	uint8_t ipad[64 + 3], opad[64 + 32], inner[32], want[32], tag[32];
	memset(ipad, 0x36, 64);
	memset(opad, 0x5c, 64);
	for (int i = 0; i < 32; i++) {
		ipad[i] ^= k[i];
		opad[i] ^= k[i];
	}
	memcpy(ipad + 64, "abc", 3);
	EVP_Digest(ipad, 67, inner, NULL, EVP_sha256(), NULL);
	memcpy(opad + 64, inner, 32);
	EVP_Digest(opad, 96, want, NULL, EVP_sha256(), NULL);
	ck_assert_int_eq(cn_crypt_auth_tag(c, (const uint8_t *)"abc", 3, tag), 0);
	ck_assert_mem_eq(tag, want, 32);
	cn_crypt_config_free(c);
}
END_TEST

/* every variant, sizes around the edges */
START_TEST(test_roundtrip_all_variants)
{
	static const size_t sizes[] = {0, 1, 2, 11, 12, 43, 44, 100, 4095, 8192, 65536, 1 << 20};
	struct cn_crypt_config *c = key_config(0);
	struct cn_blob_ctx *ctx;
	ck_assert_int_eq(cn_blob_ctx_new(&ctx), 0);
	uint8_t *data = malloc(1 << 20);
	for (int kind = 0; kind < 2; kind++) {
		if (kind)
			fill_random(data, 1 << 20, 7);
		else
			fill_text(data, 1 << 20);
		for (size_t si = 0; si < CN_ARRAY_SIZE(sizes); si++) {
			size_t len = sizes[si];
			for (int enc = 0; enc < 2; enc++) {
				for (int comp = 0; comp < 3; comp++) {
					struct cn_buf b = {0}, d = {0};
					enum cn_blob_type type;
					const struct cn_crypt_config *cc = enc ? c : NULL;
					ck_assert_int_eq(cn_blob_encode_ctx(ctx, data, len, cc, comp, &b, &type), 0);
					ck_assert_int_eq(cn_blob_check(b.data, b.len), (int)type);
					ck_assert_int_eq(enc, type == CN_BLOB_ENCRYPTED || type == CN_BLOB_ENCRYPTED_ZSTD);
					int zstd = type == CN_BLOB_ZSTD || type == CN_BLOB_ENCRYPTED_ZSTD;
					size_t hdr = enc ? 44 : 12;
					if (zstd)
						ck_assert_uint_lt(b.len, hdr + len);
					else
						ck_assert_uint_eq(b.len, hdr + len);
					if (comp == CN_BLOB_COMPRESS_NONE || len < 2)
						ck_assert(!zstd);
					/* compressible text of a useful size is compressed */
					if (!kind && comp && len >= 100)
						ck_assert(zstd);
					if (kind && len >= 100)
						ck_assert(!zstd);
					uint8_t dg[32];
					ck_assert_int_eq(cn_chunk_digest(cc, data, len, dg), 0);
					ck_assert_int_eq(cn_blob_decode_ctx(ctx, b.data, b.len, cc, dg, &d), 0);
					ck_assert_uint_eq(d.len, len);
					if (len)
						ck_assert_mem_eq(d.data, data, len);
					/* the view: the same content, in place for a plain blob */
					const uint8_t *v = NULL;
					size_t vlen = 7;
					d.len = 3;
					ck_assert_int_eq(cn_blob_decode_view(ctx, b.data, b.len, cc, dg, &d, &v, &vlen), 0);
					ck_assert_uint_eq(vlen, len);
					if (len)
						ck_assert_mem_eq(v, data, len);
					if (type == CN_BLOB_PLAIN)
						ck_assert_ptr_eq(v, b.data + 12);
					else
						ck_assert(v == d.data && d.len == len);
					cn_buf_free(&b);
					cn_buf_free(&d);
				}
			}
		}
	}
	free(data);
	cn_blob_ctx_free(ctx);
	cn_crypt_config_free(c);
}
END_TEST

START_TEST(test_encode_chunk)
{
	size_t len = 300000;
	uint8_t *data = malloc(len);
	fill_text(data, len);
	struct cn_crypt_config *c = key_config(0);
	for (int enc = 0; enc < 2; enc++) {
		const struct cn_crypt_config *cc = enc ? c : NULL;
		struct cn_chunk *ch;
		ck_assert_int_eq(cn_blob_encode_chunk(data, len, cc, CN_BLOB_COMPRESS, &ch), 0);
		uint8_t dg[32];
		ck_assert_int_eq(cn_chunk_digest(cc, data, len, dg), 0);
		ck_assert_mem_eq(ch->digest, dg, 32);
		ck_assert_uint_eq(ch->plain_size, len);
		ck_assert_int_eq(cn_blob_type(ch->data, ch->len), enc ? CN_BLOB_ENCRYPTED_ZSTD : CN_BLOB_ZSTD);
		/* same bytes as cn_blob_encode apart from the random IV */
		struct cn_buf b = {0}, d = {0};
		ck_assert_int_eq(cn_blob_encode(data, len, cc, CN_BLOB_COMPRESS, &b), 0);
		ck_assert_uint_eq(b.len, ch->len);
		if (!enc)
			ck_assert_mem_eq(b.data, ch->data, b.len);
		ck_assert_int_eq(cn_blob_decode(ch->data, ch->len, cc, ch->digest, &d), 0);
		ck_assert_mem_eq(d.data, data, len);
		/* a wrong expected digest */
		dg[5] ^= 1;
		d.len = 0;
		ck_assert_int_eq(cn_blob_decode(ch->data, ch->len, cc, dg, &d), -CN_E_DIGEST);
		ck_assert_str_ne(cn_error_message(), "");
		cn_buf_free(&b);
		cn_buf_free(&d);
		cn_chunk_unref(ch);
	}
	cn_crypt_config_free(c);
	free(data);
}
END_TEST

START_TEST(test_verify_chunk)
{
	uint8_t text[5000];
	fill_text(text, sizeof(text));
	struct cn_crypt_config *c = key_config(0);
	for (int enc = 0; enc < 2; enc++) {
		const struct cn_crypt_config *cc = enc ? c : NULL;
		struct cn_chunk *ch;
		ck_assert_int_eq(cn_blob_encode_chunk(text, sizeof(text), cc, CN_BLOB_COMPRESS, &ch), 0);
		int type = enc ? CN_BLOB_ENCRYPTED_ZSTD : CN_BLOB_ZSTD;
		ck_assert_int_eq(cn_blob_verify_chunk(NULL, ch->data, ch->len, cc, ch->digest, 5000), type);
		ck_assert_int_eq(cn_blob_verify_chunk(NULL, ch->data, ch->len, cc, ch->digest, 0), type);
		ck_assert_int_eq(cn_blob_verify_chunk(NULL, ch->data, ch->len, cc, ch->digest, 4999), -CN_E_FORMAT);
		uint8_t bad[32];
		memcpy(bad, ch->digest, 32);
		bad[31] ^= 0x40;
		ck_assert_int_eq(cn_blob_verify_chunk(NULL, ch->data, ch->len, cc, bad, 5000), -CN_E_DIGEST);
		/* without the key an encrypted chunk is checked up to its CRC */
		ck_assert_int_eq(cn_blob_verify_chunk(NULL, ch->data, ch->len, NULL, bad, 5000), enc ? type : -CN_E_DIGEST);
		ch->data[ch->len - 1] ^= 1;
		ck_assert_int_eq(cn_blob_verify_chunk(NULL, ch->data, ch->len, NULL, ch->digest, 5000), -CN_E_CRC);
		cn_chunk_unref(ch);
	}
	cn_crypt_config_free(c);
}
END_TEST

START_TEST(test_size_limits)
{
	uint8_t small[16] = {0};
	struct cn_buf b = {0};
	struct cn_chunk *ch = NULL;
	/* the length is checked before the data is touched */
	ck_assert_int_eq(cn_blob_encode(small, CN_BLOB_MAX_SIZE + 1u, NULL, 0, &b), -EFBIG);
	ck_assert_int_eq(cn_blob_encode_chunk(small, CN_CHUNK_MAX_SIZE + 1u, NULL, 1, &ch), -EFBIG);
	ck_assert_ptr_null(ch);
	ck_assert_int_eq(cn_blob_encode(small, 16, NULL, 7, &b), -EINVAL);

	/* a zstd bomb: 129 MiB of zeros in a tiny frame is refused */
	ZSTD_CCtx *z = ZSTD_createCCtx();
	uint8_t *zeros = calloc(1, 1 << 20);
	struct cn_buf frame = {0};
	cn_buf_append(&frame, cn_blob_magic(CN_BLOB_ZSTD), 8);
	cn_buf_append(&frame, "\0\0\0\0", 4);
	cn_buf_reserve(&frame, 1 << 20);
	for (int i = 0; i < 129; i++) {
		ZSTD_inBuffer in = {zeros, 1 << 20, 0};
		ZSTD_EndDirective e = i == 128 ? ZSTD_e_end : ZSTD_e_continue;
		size_t r;
		do {
			ZSTD_outBuffer out = {frame.data + frame.len, frame.cap - frame.len, 0};
			r = ZSTD_compressStream2(z, &out, &in, e);
			ck_assert(!ZSTD_isError(r));
			frame.len += out.pos;
		} while (in.pos < in.size || (e == ZSTD_e_end && r));
	}
	cn_put_le32(frame.data + 8, cn_crc32(0, frame.data + 12, frame.len - 12));
	struct cn_buf d = {0};
	ck_assert_int_eq(cn_blob_decode(frame.data, frame.len, NULL, NULL, &d), -CN_E_FORMAT);
	ck_assert_uint_eq(d.len, 0);
	ZSTD_freeCCtx(z);
	free(zeros);
	cn_buf_free(&frame);
	cn_buf_free(&d);
	cn_buf_free(&b);
}
END_TEST

START_TEST(test_concatenated_frames)
{
	uint8_t a[5000], bb[3000];
	fill_text(a, sizeof(a));
	fill_random(bb, sizeof(bb), 3);
	uint8_t fa[ZSTD_COMPRESSBOUND(5000)], fb[ZSTD_COMPRESSBOUND(3000)];
	size_t na = ZSTD_compress(fa, sizeof(fa), a, sizeof(a), 1);
	size_t nb = ZSTD_compress(fb, sizeof(fb), bb, sizeof(bb), 3);
	struct cn_buf blob = {0}, d = {0};
	cn_buf_append(&blob, cn_blob_magic(CN_BLOB_ZSTD), 8);
	cn_buf_append(&blob, "\0\0\0\0", 4);
	cn_buf_append(&blob, fa, na);
	cn_buf_append(&blob, fb, nb);
	cn_put_le32(blob.data + 8, cn_crc32(0, blob.data + 12, blob.len - 12));
	ck_assert_int_eq(cn_blob_decode(blob.data, blob.len, NULL, NULL, &d), 0);
	ck_assert_uint_eq(d.len, 8000);
	ck_assert_mem_eq(d.data, a, 5000);
	ck_assert_mem_eq(d.data + 5000, bb, 3000);
	/* a frame cut short (CRC fixed up) is a format error, not a crash */
	blob.len -= 3;
	cn_put_le32(blob.data + 8, cn_crc32(0, blob.data + 12, blob.len - 12));
	d.len = 0;
	ck_assert_int_eq(cn_blob_decode(blob.data, blob.len, NULL, NULL, &d), -CN_E_FORMAT);
	/* an empty zstd payload is empty content (as upstream decode_all) */
	blob.len = 12;
	cn_put_le32(blob.data + 8, 0);
	ck_assert_int_eq(cn_blob_decode(blob.data, blob.len, NULL, NULL, &d), 0);
	ck_assert_uint_eq(d.len, 0);
	cn_buf_free(&blob);
	cn_buf_free(&d);
}
END_TEST

/* Encodes the four variants of a 2000-byte text into blobs[4]. */
static void make_variants(struct cn_crypt_config *c, struct cn_buf blobs[4], uint8_t *text,
			  size_t len)
{
	static const int enc[4] = {0, 0, 1, 1}, comp[4] = {0, 1, 0, 1};
	for (int t = 0; t < 4; t++) {
		enum cn_blob_type type;
		memset(&blobs[t], 0, sizeof(blobs[t]));
		ck_assert_int_eq(cn_blob_encode_ctx(NULL, text, len, enc[t] ? c : NULL,
						    comp[t] ? CN_BLOB_COMPRESS_ALWAYS : 0, &blobs[t], &type), 0);
		ck_assert_int_eq((int)type, t);
	}
}

/* Flip every bit class at every byte position: each flip is detected,
 * with the code of the position class. */
START_TEST(test_bit_flips)
{
	struct cn_crypt_config *c = key_config(0);
	uint8_t text[2000], dg[2][32];
	fill_text(text, sizeof(text));
	cn_chunk_digest(NULL, text, sizeof(text), dg[0]);
	cn_chunk_digest(c, text, sizeof(text), dg[1]);
	struct cn_buf blobs[4], d = {0}, scratch = {0};
	make_variants(c, blobs, text, sizeof(text));
	uint8_t copy[4096];
	for (int t = 0; t < 4; t++) {
		int enc = t >= 2;
		uint8_t *b = blobs[t].data;
		ck_assert_uint_le(blobs[t].len, sizeof(copy));
		size_t n = blobs[t].len;
		for (size_t pos = 0; pos < n; pos++) {
			for (int bit = 0; bit < 8; bit += 3) {
				b[pos] ^= (uint8_t)(1 << bit);
				d.len = 0;
				int r = cn_blob_decode(b, n, c, dg[enc], &d);
				int want;
				if (pos < 8)
					want = -CN_E_MAGIC;
				else if (pos < 12)
					want = -CN_E_CRC;
				else if (enc && pos < 44)
					want = -CN_E_TAG; /* IV and tag are outside the CRC */
				else
					want = -CN_E_CRC;
				ck_assert_msg(r == want, "type %d pos %zu bit %d: %d (%s), want %d", t,
					      pos, bit, r, cn_error_message(), want);
				ck_assert_uint_eq(d.len, 0);
				/* in place (on a copy): the same verdict, except that a
				 * plain blob whose content matches its digest is not
				 * CRC-checked, so a damaged CRC field alone passes */
				const uint8_t *v;
				size_t vlen;
				memcpy(copy, b, n);
				if (t == CN_BLOB_PLAIN && pos >= 8 && pos < 12)
					want = 0;
				r = cn_blob_decode_inplace(NULL, copy, n, c, dg[enc], &scratch, &v, &vlen);
				ck_assert_msg(r == want, "in place: type %d pos %zu bit %d: %d, want %d", t,
					      pos, bit, r, want);
				b[pos] ^= (uint8_t)(1 << bit);
			}
		}
		/* past the CRC (fixed up): the cipher, zstd or digest check catches it */
		size_t hdr = enc ? 44 : 12;
		for (size_t pos = hdr; pos < n; pos += 5) {
			b[pos] ^= 0x10;
			cn_put_le32(b + 8, cn_crc32(0, b + hdr, n - hdr));
			d.len = 0;
			int r = cn_blob_decode(b, n, c, dg[enc], &d);
			const uint8_t *v;
			size_t vlen;
			memcpy(copy, b, n);
			int ri = cn_blob_decode_inplace(NULL, copy, n, c, dg[enc], &scratch, &v, &vlen);
			ck_assert_int_eq(ri, r);
			if (enc)
				ck_assert_int_eq(r, -CN_E_TAG);
			else if (t == CN_BLOB_PLAIN)
				ck_assert_int_eq(r, -CN_E_DIGEST);
			else if (r == 0) /* e.g. a larger window size: same content */
				ck_assert(d.len == sizeof(text) && memcmp(d.data, text, d.len) == 0);
			else
				ck_assert_msg(r == -CN_E_FORMAT || r == -CN_E_DIGEST, "pos %zu: %d", pos, r);
			b[pos] ^= 0x10;
		}
		cn_put_le32(b + 8, cn_crc32(0, b + hdr, n - hdr));
		d.len = 0;
		ck_assert_int_eq(cn_blob_decode(b, n, c, dg[enc], &d), 0);
		/* intact, in place: plain and encrypted blobs decode within
		 * themselves, compressed ones into the scratch buffer */
		const uint8_t *v;
		size_t vlen;
		memcpy(copy, b, n);
		ck_assert_int_eq(cn_blob_decode_inplace(NULL, copy, n, c, dg[enc], &scratch, &v, &vlen),
				 0);
		ck_assert_uint_eq(vlen, sizeof(text));
		ck_assert_mem_eq(v, text, vlen);
		if (t == CN_BLOB_PLAIN || t == CN_BLOB_ENCRYPTED)
			ck_assert_ptr_eq(v, copy + hdr);
		else
			ck_assert_ptr_eq(v, scratch.data);
		/* no key for an encrypted blob */
		if (enc) {
			memcpy(copy, b, n);
			ck_assert_int_eq(cn_blob_decode_inplace(NULL, copy, n, NULL, dg[enc], &scratch, &v,
								&vlen), -CN_E_NOKEY);
		}
		cn_buf_free(&blobs[t]);
	}
	cn_buf_free(&d);
	cn_buf_free(&scratch);
	cn_crypt_config_free(c);
}
END_TEST

START_TEST(test_truncation)
{
	struct cn_crypt_config *c = key_config(0);
	uint8_t text[2000];
	fill_text(text, sizeof(text));
	struct cn_buf blobs[4], d = {0};
	make_variants(c, blobs, text, sizeof(text));
	for (int t = 0; t < 4; t++) {
		int enc = t >= 2;
		for (size_t n = 0; n < blobs[t].len; n++) {
			int r = cn_blob_decode(blobs[t].data, n, c, NULL, &d);
			int want = n < (enc ? 44u : 12u) ? -CN_E_TRUNCATED : -CN_E_CRC;
			ck_assert_msg(r == want, "type %d len %zu: %d want %d", t, n, r, want);
			ck_assert_uint_eq(d.len, 0);
		}
		/* and one byte too many */
		cn_buf_append(&blobs[t], "x", 1);
		ck_assert_int_eq(cn_blob_decode(blobs[t].data, blobs[t].len, c, NULL, &d), -CN_E_CRC);
		cn_buf_free(&blobs[t]);
	}
	/* garbage of any short length */
	ck_assert_int_eq(cn_blob_decode((const uint8_t *)"0123456789abcdef", 16, c, NULL, &d), -CN_E_MAGIC);
	ck_assert_int_eq(cn_blob_type((const uint8_t *)"01234567", 8), -CN_E_TRUNCATED);
	cn_buf_free(&d);
	cn_crypt_config_free(c);
}
END_TEST

START_TEST(test_probe)
{
	size_t len = 4u << 20;
	uint8_t *data = malloc(len);
	fill_random(data, len, 99);
	ck_assert_int_eq(cn_blob_probe_incompressible(data, len), 1);
	/* small inputs are never skipped */
	ck_assert_int_eq(cn_blob_probe_incompressible(data, 4096), 0);
	/* random data: probe or not, the stored bytes are the same */
	struct cn_buf a = {0}, b = {0};
	enum cn_blob_type ta, tb;
	ck_assert_int_eq(cn_blob_encode_ctx(NULL, data, len, NULL, CN_BLOB_COMPRESS, &a, &ta), 0);
	ck_assert_int_eq(cn_blob_encode_ctx(NULL, data, len, NULL, CN_BLOB_COMPRESS_ALWAYS, &b, &tb), 0);
	ck_assert_int_eq(ta, CN_BLOB_PLAIN);
	ck_assert_int_eq(tb, CN_BLOB_PLAIN);
	ck_assert_uint_eq(a.len, b.len);
	ck_assert_mem_eq(a.data, b.data, a.len);
	fill_text(data, len);
	ck_assert_int_eq(cn_blob_probe_incompressible(data, len), 0);
	/* half random, half text: still compressed */
	fill_random(data, len / 2, 5);
	ck_assert_int_eq(cn_blob_probe_incompressible(data, len), 0);
	a.len = 0;
	ck_assert_int_eq(cn_blob_encode_ctx(NULL, data, len, NULL, CN_BLOB_COMPRESS, &a, &ta), 0);
	ck_assert_int_eq(ta, CN_BLOB_ZSTD);
	/* zeros */
	memset(data, 0, len);
	ck_assert_int_eq(cn_blob_probe_incompressible(data, len), 0);
	cn_buf_free(&a);
	cn_buf_free(&b);
	free(data);
}
END_TEST

START_TEST(test_gcm_primitives)
{
	uint8_t key[32] = {7}, iv[16] = {9}, tag[16], ct[100], pt[100], back[100];
	fill_random(pt, sizeof(pt), 11);
	ck_assert_int_eq(cn_aes_gcm_seal(key, iv, pt, sizeof(pt), ct, tag), 0);
	ck_assert_int_eq(cn_aes_gcm_open(key, iv, ct, sizeof(ct), back, tag), 0);
	ck_assert_mem_eq(back, pt, sizeof(pt));
	tag[0] ^= 1;
	ck_assert_int_eq(cn_aes_gcm_open(key, iv, ct, sizeof(ct), back, tag), -CN_E_TAG);
	/* empty message still authenticates */
	ck_assert_int_eq(cn_aes_gcm_seal(key, iv, pt, 0, ct, tag), 0);
	ck_assert_int_eq(cn_aes_gcm_open(key, iv, ct, 0, back, tag), 0);
	/* in place */
	memcpy(back, pt, sizeof(pt));
	ck_assert_int_eq(cn_aes_gcm_seal(key, iv, back, sizeof(back), back, tag), 0);
	ck_assert_int_eq(cn_aes_gcm_open(key, iv, back, sizeof(back), back, tag), 0);
	ck_assert_mem_eq(back, pt, sizeof(pt));
}
END_TEST

CN_TEST_MAIN("blob", "blob", 0,
	     test_crc32,
	     test_crc32_impls,
	     test_decode_view_rejects,
	     test_encode_inplace,
	     test_magics_derivation,
	     test_plain_known_answer,
	     test_zstd_known_answer,
	     test_crypt_known_answer,
	     test_hmac_known_answer,
	     test_roundtrip_all_variants,
	     test_encode_chunk,
	     test_verify_chunk,
	     test_size_limits,
	     test_concatenated_frames,
	     test_bit_flips,
	     test_truncation,
	     test_probe,
	     test_gcm_primitives)
