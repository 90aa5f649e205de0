/* Runs a fuzz target's entry point without libFuzzer, for the normal
 * (gcc) test suite: every file of the corpus directories given as
 * arguments, then a fixed number of deterministic mutations of each
 * (bit flips, truncations, insertions, splices), so the entry points and
 * their checks run in every CI build, sanitizers included.
 *
 * usage: replay [-n MUTATIONS] DIR...   (exit 0, or abort() on a finding) */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/cn_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint64_t next(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

static void mutate(const uint8_t *in, size_t n, uint64_t *rng, uint8_t *out, size_t *out_n)
{
	memcpy(out, in, n);
	*out_n = n;
	switch (next(rng) % 5) {
	case 0: /* flip 1-4 bits */
	case 1:
		for (int k = 1 + (int)(next(rng) % 4); k > 0 && n; k--)
			out[next(rng) % n] ^= (uint8_t)(1u << (next(rng) % 8));
		break;
	case 2: /* truncate */
		*out_n = n ? (size_t)(next(rng) % n) : 0;
		break;
	case 3: { /* insert a byte */
		size_t at = n ? (size_t)(next(rng) % (n + 1)) : 0;
		memmove(out + at + 1, out + at, n - at);
		out[at] = (uint8_t)next(rng);
		*out_n = n + 1;
		break;
	}
	case 4: /* overwrite a byte with an interesting value */
		if (n) {
			static const uint8_t vals[] = {0, 1, 0x7f, 0x80, 0xff, '"', '{', '}', ':'};
			out[next(rng) % n] = vals[next(rng) % sizeof(vals)];
		}
		break;
	}
}

int main(int argc, char **argv)
{
	long mutations = 200;
	int i = 1, files = 0;
	if (argc > 2 && strcmp(argv[1], "-n") == 0) {
		mutations = atol(argv[2]);
		i = 3;
	}
	for (; i < argc; i++) {
		DIR *d = opendir(argv[i]);
		if (!d) {
			perror(argv[i]);
			return 1;
		}
		struct dirent *de;
		while ((de = readdir(d))) {
			char path[4096];
			uint8_t *data, *buf;
			size_t n, m;
			if (de->d_name[0] == '.')
				continue;
			snprintf(path, sizeof(path), "%s/%s", argv[i], de->d_name);
			if (cn_read_file(path, 64u << 20, &data, &n) < 0) {
				fprintf(stderr, "cannot read %s\n", path);
				return 1;
			}
			LLVMFuzzerTestOneInput(data, n);
			buf = malloc(n + 1);
			uint64_t rng = 0x9e3779b97f4a7c15ull ^ n;
			for (long k = 0; k < mutations; k++) {
				mutate(data, n, &rng, buf, &m);
				LLVMFuzzerTestOneInput(buf, m);
			}
			free(buf);
			free(data);
			files++;
		}
		closedir(d);
	}
	printf("replayed %d corpus files with %ld mutations each\n", files, mutations);
	return files ? 0 : 1;
}
