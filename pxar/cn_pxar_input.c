/* cn_pxar_input — where a decoder's bytes come from: random-access inputs
 * over a memory buffer and over a file descriptor (see cn_pxar_decoder.h).
 */
#include "pxar/cn_pxar_decoder.h"
#include "common/cn_error.h"

#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int mem_read_at(void *ctx, uint64_t off, void *buf, size_t len)
{
	/* The decoder checks bounds against size before calling. */
	memcpy(buf, (const uint8_t *)ctx + off, len);
	return 0;
}

void cn_pxar_input_mem(struct cn_pxar_input *in, const void *data, size_t len)
{
	*in = (struct cn_pxar_input){.read_at = mem_read_at, .size = len, .ctx = (void *)data};
}

static int fd_read_at(void *ctx, uint64_t off, void *buf, size_t len)
{
	int fd = (int)(intptr_t)ctx;
	uint8_t *p = buf;
	while (len) {
		ssize_t n = pread(fd, p, len, (off_t)off);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return cn_error_sys(-errno, "reading archive at offset %llu",
					    (unsigned long long)off);
		}
		if (n == 0)
			return cn_error_set(-CN_E_TRUNCATED, "archive file shrank while reading (offset %llu)",
					    (unsigned long long)off);
		p += n;
		len -= (size_t)n;
		off += (uint64_t)n;
	}
	return 0;
}

int cn_pxar_input_fd(struct cn_pxar_input *in, int fd)
{
	struct stat st;
	if (fstat(fd, &st) < 0)
		return cn_error_sys(-errno, "fstat archive");
	if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode))
		return cn_error_set(-EINVAL, "archive is not a regular file");
	*in = (struct cn_pxar_input){.read_at = fd_read_at, .size = (uint64_t)st.st_size,
				     .ctx = (void *)(intptr_t)fd};
	return 0;
}
