/* cn_util — small helpers shared by every layer: hex, full reads/writes,
 * durable atomic file replacement, a growable byte buffer. No policy. */
#ifndef CN_UTIL_H
#define CN_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct stat;

#define CN_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* A transparent huge page (with 4 KiB base pages, as on x86-64). */
#define CN_HUGE_PAGE ((size_t)2 << 20)

/* n rounded up to whole huge pages. */
static inline size_t cn_huge_round_up(size_t n)
{
	return (n + CN_HUGE_PAGE - 1) & ~(CN_HUGE_PAGE - 1);
}

/* Asks the kernel for transparent huge pages in buf[CN_HUGE_PAGE..len)
 * (buf at a huge-page boundary; MADV_HUGEPAGE): a buffer that large
 * chunks fill is then faulted in 2 MiB at a time instead of 4 KiB, while
 * its first 2 MiB stay in small pages, so that one that only ever holds
 * a little stays as small as what was written. Only a hint: where the
 * kernel has no transparent huge pages nothing changes. */
void cn_mark_huge_tail(void *buf, size_t len);

/* Nanoseconds on the monotonic clock (CLOCK_MONOTONIC): for timeouts and
 * durations, never for dates. */
int64_t cn_monotonic_ns(void);

/* Writes 2*len lowercase hex digits plus a NUL into out (2*len+1 bytes). */
void cn_hex_encode(const uint8_t *in, size_t len, char *out);

/* Parses exactly 2*len hex digits (either case) from hex into out.
 * Returns 0, or -EINVAL if hex is not exactly that long or not hex. */
int cn_hex_decode(const char *hex, uint8_t *out, size_t len);

/* Reads exactly len bytes (retrying on EINTR and short reads). Returns 0,
 * -CN_E_TRUNCATED on early end of file, or -errno. Sets no message. */
int cn_read_full(int fd, void *buf, size_t len);

/* Writes exactly len bytes (retrying on EINTR and short writes). Returns 0
 * or -errno. Sets no message. */
int cn_write_full(int fd, const void *buf, size_t len);

/* Writes exactly len bytes at file offset off (pwrite, retrying on EINTR
 * and short writes). Returns 0 or -errno. Sets no message. */
int cn_pwrite_full(int fd, const void *buf, size_t len, uint64_t off);

/* Opens path read-only (O_CLOEXEC | O_NOCTTY | extra_flags, e.g.
 * O_NOFOLLOW) as a regular file to read: the open never blocks (it uses
 * O_NONBLOCK, taken off once the file is known to be regular), and a FIFO,
 * device, socket or directory is refused with -EINVAL ("not a regular
 * file"). st (may be NULL) receives the fstat of the open file. Returns
 * the fd, which the caller closes, or a negative code with a message. */
int cn_open_regular(const char *path, int extra_flags, struct stat *st);

/* Reads a whole regular file (at most max_size bytes; anything else is
 * refused without blocking, see cn_open_regular) into a malloc'd buffer that
 * the caller frees. Returns 0 and sets *out and *out_len, or a negative code
 * with a message (-EFBIG when the file is larger than max_size). */
int cn_read_file(const char *path, size_t max_size, uint8_t **out, size_t *out_len);

/* Replaces path atomically with data: writes "PATH.tmp_XXXXXX" in the
 * same directory, fsyncs it (if durable), renames it over path and fsyncs
 * the directory (if durable). On failure nothing named path changes and the
 * temp file is removed. mode is the new file's permission bits. Returns 0
 * or a negative code with a message. */
int cn_write_file_atomic(const char *path, const void *data, size_t len,
			 mode_t mode, int durable);

/* fsyncs the directory holding path (or path itself if it is a directory
 * and is_dir is set). Returns 0 or -errno with a message. */
int cn_fsync_dir_of(const char *path, int is_dir);

/* Creates a directory and its missing parents (like mkdir -p). Returns 0
 * (also when it exists) or -errno with a message. */
int cn_mkdir_p(const char *path, mode_t mode);

/* How cn_file_cached asks the kernel: cachestat(2) (Linux 6.5+), or a
 * mapping of the file and mincore(2) (any Linux). AUTO takes cachestat
 * and falls back to mincore where the kernel lacks it. */
enum cn_residency_method {
	CN_RESIDENCY_AUTO,
	CN_RESIDENCY_CACHESTAT,
	CN_RESIDENCY_MINCORE,
};

/* Whether all of the first len bytes of the regular file fd are in the
 * page cache, asked without reading anything (unlike a read with
 * RWF_NOWAIT, whose miss starts read-ahead). Returns 1 (all cached), 0
 * (some or all not), or -errno (-ENOSYS: cachestat asked for and the
 * kernel has none). Sets no message. Thread-safe. */
int cn_file_cached(int fd, size_t len, enum cn_residency_method how);

/* A growable byte buffer. Zero-initialise ({0}) before first use; free with
 * cn_buf_free(). data is owned by the buffer. */
struct cn_buf {
	uint8_t *data;
	size_t len;
	size_t cap;
};

/* Ensures room for at least extra more bytes. Returns 0 or -ENOMEM. */
int cn_buf_reserve(struct cn_buf *b, size_t extra);
/* Appends len bytes. Returns 0 or -ENOMEM. */
int cn_buf_append(struct cn_buf *b, const void *data, size_t len);
/* Releases the storage and zeroes the struct. */
void cn_buf_free(struct cn_buf *b);

/* Escapes the len bytes of s for a terminal or a log: control bytes
 * (below 0x20, 0x7f), C1 controls (U+0080..U+009F, which some terminals
 * obey as escape sequences) and bytes that are not part of valid UTF-8
 * become \xNN (newline and tab \n and \t); valid UTF-8 text is kept.
 * With quote set, '"' and '\\' are backslash-escaped too (for a name
 * shown between double quotes, as upstream's listings print paths).
 * Writes at most outlen bytes including the NUL to out (never a partial
 * escape or character; out may be NULL when outlen is 0) and returns the
 * length of the whole escaped text, as snprintf does. */
size_t cn_escape(const char *s, size_t len, int quote, char *out, size_t outlen);

/* Little-endian loads and stores (the on-disk byte order of PBS formats). */
static inline uint64_t cn_le64(const uint8_t *p)
{
	return (uint64_t)p[0] | (uint64_t)p[1] << 8 | (uint64_t)p[2] << 16 |
	       (uint64_t)p[3] << 24 | (uint64_t)p[4] << 32 | (uint64_t)p[5] << 40 |
	       (uint64_t)p[6] << 48 | (uint64_t)p[7] << 56;
}
static inline uint32_t cn_le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
	       (uint32_t)p[3] << 24;
}
static inline void cn_put_le64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}
static inline void cn_put_le32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

#endif
