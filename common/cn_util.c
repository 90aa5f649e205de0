#include "common/cn_util.h"
#include "common/cn_error.h"

#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

void cn_hex_encode(const uint8_t *in, size_t len, char *out)
{
	static const char digits[] = "0123456789abcdef";
	for (size_t i = 0; i < len; i++) {
		out[2 * i] = digits[in[i] >> 4];
		out[2 * i + 1] = digits[in[i] & 15];
	}
	out[2 * len] = '\0';
}

static int hex_val(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

int cn_hex_decode(const char *hex, uint8_t *out, size_t len)
{
	if (strlen(hex) != 2 * len)
		return -EINVAL;
	for (size_t i = 0; i < len; i++) {
		int hi = hex_val(hex[2 * i]), lo = hex_val(hex[2 * i + 1]);
		if (hi < 0 || lo < 0)
			return -EINVAL;
		out[i] = (uint8_t)(hi << 4 | lo);
	}
	return 0;
}

int cn_read_full(int fd, void *buf, size_t len)
{
	uint8_t *p = buf;
	while (len) {
		ssize_t n = read(fd, p, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			return -CN_E_TRUNCATED;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

int cn_write_full(int fd, const void *buf, size_t len)
{
	const uint8_t *p = buf;
	while (len) {
		ssize_t n = write(fd, p, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

int cn_pwrite_full(int fd, const void *buf, size_t len, uint64_t off)
{
	const uint8_t *p = buf;
	while (len) {
		ssize_t n = pwrite(fd, p, len, (off_t)off);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += n;
		off += (uint64_t)n;
		len -= (size_t)n;
	}
	return 0;
}

int cn_open_regular(const char *path, int extra_flags, struct stat *st)
{
	struct stat own;
	if (!st)
		st = &own;
	int flags = O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK | extra_flags;
	int fd = open(path, flags);
	if (fd < 0)
		return cn_error_sys(-errno, "open %s", path);
	int r = 0;
	if (fstat(fd, st) < 0)
		r = cn_error_sys(-errno, "stat %s", path);
	else if (!S_ISREG(st->st_mode))
		r = cn_error_set(-EINVAL, "%s: not a regular file", path);
	else if (!(extra_flags & O_NONBLOCK) && fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) < 0)
		r = cn_error_sys(-errno, "fcntl %s", path);
	if (r < 0) {
		close(fd);
		return r;
	}
	return fd;
}

int cn_read_file(const char *path, size_t max_size, uint8_t **out, size_t *out_len)
{
	struct stat st;
	int fd = cn_open_regular(path, 0, &st);
	if (fd < 0)
		return fd;
	if ((uint64_t)st.st_size > max_size) {
		close(fd);
		return cn_error_set(-EFBIG, "%s: file too large (%lld bytes, limit %zu)",
				    path, (long long)st.st_size, max_size);
	}
	size_t len = (size_t)st.st_size;
	uint8_t *data = malloc(len ? len : 1);
	if (!data) {
		close(fd);
		return cn_error_set(-ENOMEM, "%s: out of memory", path);
	}
	int r = cn_read_full(fd, data, len);
	close(fd);
	if (r < 0) {
		free(data);
		return cn_error_sys(r, "read %s", path);
	}
	*out = data;
	*out_len = len;
	return 0;
}

int cn_fsync_dir_of(const char *path, int is_dir)
{
	char dir[PATH_MAX];
	if (is_dir) {
		snprintf(dir, sizeof(dir), "%s", path);
	} else {
		const char *slash = strrchr(path, '/');
		if (!slash)
			snprintf(dir, sizeof(dir), ".");
		else if (slash == path)
			snprintf(dir, sizeof(dir), "/");
		else
			snprintf(dir, sizeof(dir), "%.*s", (int)(slash - path), path);
	}
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return cn_error_sys(-errno, "open directory %s", dir);
	int r = fsync(fd) < 0 ? cn_error_sys(-errno, "fsync directory %s", dir) : 0;
	close(fd);
	return r;
}

int cn_write_file_atomic(const char *path, const void *data, size_t len,
			 mode_t mode, int durable)
{
	char tmp[PATH_MAX];
	if ((size_t)snprintf(tmp, sizeof(tmp), "%s.tmp_XXXXXX", path) >= sizeof(tmp))
		return cn_error_set(-ENAMETOOLONG, "%s: path too long", path);
	int fd = mkostemp(tmp, O_CLOEXEC);
	if (fd < 0)
		return cn_error_sys(-errno, "create temporary file for %s", path);
	int r = cn_write_full(fd, data, len);
	if (r < 0) {
		cn_error_sys(r, "write %s", tmp);
		goto fail;
	}
	if (fchmod(fd, mode) < 0) {
		r = cn_error_sys(-errno, "chmod %s", tmp);
		goto fail;
	}
	if (durable && fsync(fd) < 0) {
		r = cn_error_sys(-errno, "fsync %s", tmp);
		goto fail;
	}
	if (close(fd) < 0) {
		fd = -1;
		r = cn_error_sys(-errno, "close %s", tmp);
		goto fail;
	}
	fd = -1;
	if (rename(tmp, path) < 0) {
		r = cn_error_sys(-errno, "rename %s to %s", tmp, path);
		goto fail;
	}
	return durable ? cn_fsync_dir_of(path, 0) : 0;
fail:
	if (fd >= 0)
		close(fd);
	unlink(tmp);
	return r;
}

int cn_mkdir_p(const char *path, mode_t mode)
{
	char buf[PATH_MAX];
	size_t len = strlen(path);
	if (len == 0 || len >= sizeof(buf))
		return cn_error_set(-ENAMETOOLONG, "invalid directory path '%s'", path);
	memcpy(buf, path, len + 1);
	for (char *p = buf + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(buf, mode) < 0 && errno != EEXIST)
			return cn_error_sys(-errno, "mkdir %s", buf);
		*p = '/';
	}
	if (mkdir(buf, mode) < 0 && errno != EEXIST)
		return cn_error_sys(-errno, "mkdir %s", buf);
	return 0;
}

int cn_buf_reserve(struct cn_buf *b, size_t extra)
{
	if (b->cap - b->len >= extra)
		return 0;
	size_t need = b->len + extra;
	if (need < b->len)
		return -ENOMEM;
	size_t cap = b->cap ? b->cap : 256;
	while (cap < need) {
		if (cap > SIZE_MAX / 2) {
			cap = need;
			break;
		}
		cap *= 2;
	}
	uint8_t *p = realloc(b->data, cap);
	if (!p)
		return -ENOMEM;
	b->data = p;
	b->cap = cap;
	return 0;
}

int cn_buf_append(struct cn_buf *b, const void *data, size_t len)
{
	int r = cn_buf_reserve(b, len);
	if (r < 0)
		return r;
	if (len)
		memcpy(b->data + b->len, data, len);
	b->len += len;
	return 0;
}

void cn_buf_free(struct cn_buf *b)
{
	free(b->data);
	b->data = NULL;
	b->len = b->cap = 0;
}

/* Length of the valid UTF-8 sequence of two or more bytes at p (n bytes
 * left), 0 when there is none. */
static size_t utf8_seq(const unsigned char *p, size_t n)
{
	size_t len;
	unsigned char lo = 0x80, hi = 0xbf;
	if (p[0] >= 0xc2 && p[0] <= 0xdf)
		len = 2;
	else if (p[0] >= 0xe0 && p[0] <= 0xef)
		len = 3;
	else if (p[0] >= 0xf0 && p[0] <= 0xf4)
		len = 4;
	else
		return 0;
	if (p[0] == 0xe0)
		lo = 0xa0; /* overlong */
	else if (p[0] == 0xed)
		hi = 0x9f; /* surrogates */
	else if (p[0] == 0xf0)
		lo = 0x90; /* overlong */
	else if (p[0] == 0xf4)
		hi = 0x8f; /* above U+10FFFF */
	if (n < len || p[1] < lo || p[1] > hi)
		return 0;
	for (size_t i = 2; i < len; i++)
		if (p[i] < 0x80 || p[i] > 0xbf)
			return 0;
	return len;
}

size_t cn_escape(const char *s, size_t len, int quote, char *out, size_t outlen)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *p = (const unsigned char *)s;
	size_t total = 0, pos = 0;
	int full = outlen == 0;
	for (size_t i = 0; i < len;) {
		char unit[4];
		const char *u = unit;
		size_t ul, adv = 1;
		size_t seq = p[i] >= 0x80 ? utf8_seq(p + i, len - i) : 0;
		if (seq && !(p[i] == 0xc2 && p[i + 1] < 0xa0)) {
			u = s + i;
			ul = adv = seq;
		} else if (p[i] == '\n' || p[i] == '\t') {
			unit[0] = '\\';
			unit[1] = p[i] == '\n' ? 'n' : 't';
			ul = 2;
		} else if (p[i] < 0x20 || p[i] >= 0x7f) {
			unit[0] = '\\';
			unit[1] = 'x';
			unit[2] = hex[p[i] >> 4];
			unit[3] = hex[p[i] & 15];
			ul = 4;
		} else if (quote && (p[i] == '"' || p[i] == '\\')) {
			unit[0] = '\\';
			unit[1] = (char)p[i];
			ul = 2;
		} else {
			u = s + i;
			ul = 1;
		}
		if (!full && pos + ul < outlen) {
			memcpy(out + pos, u, ul);
			pos += ul;
		} else {
			full = 1;
		}
		total += ul;
		i += adv;
	}
	if (outlen)
		out[pos] = 0;
	return total;
}

/* cachestat(2)'s arguments (linux/mman.h from 6.5 on; Debian 12's
 * headers predate it). */
struct cn_cachestat_range {
	uint64_t off, len;
};
struct cn_cachestat {
	uint64_t nr_cache, nr_dirty, nr_writeback, nr_evicted, nr_recently_evicted;
};
#ifndef __NR_cachestat
#define __NR_cachestat 451 /* the same on every architecture */
#endif

static int cached_by_cachestat(int fd, size_t len)
{
	struct cn_cachestat_range range = {0, len};
	struct cn_cachestat cs;
	if (syscall(__NR_cachestat, fd, &range, &cs, 0) < 0)
		return -errno;
	long page = sysconf(_SC_PAGESIZE);
	return cs.nr_cache >= (len + (size_t)page - 1) / (size_t)page;
}

static int cached_by_mincore(int fd, size_t len)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE), pages = (len + page - 1) / page;
	unsigned char small[1024], *vec = pages <= sizeof(small) ? small : malloc(pages);
	if (!vec)
		return -ENOMEM;
	/* a mapping touches no page: mincore reports, it does not fault in */
	void *map = mmap(NULL, len, PROT_READ, MAP_SHARED, fd, 0);
	int r = 1;
	if (map == MAP_FAILED)
		r = -errno;
	else if (mincore(map, len, vec) < 0)
		r = -errno;
	for (size_t i = 0; r == 1 && i < pages; i++)
		if (!(vec[i] & 1))
			r = 0;
	if (map != MAP_FAILED)
		munmap(map, len);
	if (vec != small)
		free(vec);
	return r;
}

int cn_file_cached(int fd, size_t len, enum cn_residency_method how)
{
	if (len == 0)
		return 1;
	if (how != CN_RESIDENCY_MINCORE) {
		int r = cached_by_cachestat(fd, len);
		/* (ENOSYS before 6.5; a seccomp filter may answer EPERM) */
		if (r >= 0 || how == CN_RESIDENCY_CACHESTAT)
			return r;
	}
	return cached_by_mincore(fd, len);
}

void cn_mark_huge_tail(void *buf, size_t len)
{
#ifdef MADV_HUGEPAGE
	if (len > CN_HUGE_PAGE)
		(void)madvise((uint8_t *)buf + CN_HUGE_PAGE, len - CN_HUGE_PAGE, MADV_HUGEPAGE);
#else
	(void)buf;
	(void)len;
#endif
}

int64_t cn_monotonic_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}
