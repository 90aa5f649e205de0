/* cn_digest_set — an open-addressing hash set of 32-byte digests with one
 * byte of caller-defined state per digest (e.g. "upload pending" vs
 * "confirmed"). Digests are uniformly distributed already, so their first
 * eight bytes serve as the hash. Not thread-safe: the owner serialises
 * access. Memory: 33 bytes per slot, load factor kept below 3/4. */
#ifndef CN_DIGEST_SET_H
#define CN_DIGEST_SET_H

#include <stddef.h>
#include <stdint.h>

struct cn_digest_set;

/* Creates an empty set sized for about expected digests (0 = small).
 * Returns 0 and *out (freed with cn_digest_set_free), or -ENOMEM. */
int cn_digest_set_new(size_t expected, struct cn_digest_set **out);

/* Frees the set. NULL is ok. */
void cn_digest_set_free(struct cn_digest_set *s);

/* Inserts digest with state value. Returns 1 if it was new, 0 if it was
 * already present (its state is then left unchanged), or -ENOMEM. */
int cn_digest_set_add(struct cn_digest_set *s, const uint8_t digest[32], uint8_t value);

/* Looks digest up: returns 1 and stores its state in *value (if value is
 * not NULL) when present, 0 when absent. */
int cn_digest_set_get(const struct cn_digest_set *s, const uint8_t digest[32], uint8_t *value);

/* Changes the state of a present digest. Returns 1, or 0 if absent. */
int cn_digest_set_update(struct cn_digest_set *s, const uint8_t digest[32], uint8_t value);

/* Number of digests in the set. */
size_t cn_digest_set_count(const struct cn_digest_set *s);

#endif
