/* libFuzzer target: the catalog reader (cn_catalog_reader.h). Whatever
 * opens is listed completely; for a catalog that lists without error, a
 * lookup of every listed path (up to 64) must not fail (abort()
 * otherwise). */
#include <stdlib.h>
#include <string.h>

#include "pxar/cn_catalog_reader.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_CHECK 64

struct seen {
	char *path[MAX_CHECK];
	char type[MAX_CHECK];
	size_t n;
};

static int record(void *ctx, const char *path, const struct cn_catalog_entry *e)
{
	struct seen *s = ctx;
	if (s->n < MAX_CHECK) {
		s->path[s->n] = strdup(path);
		s->type[s->n++] = e->type;
	}
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct cn_catalog_reader *r;
	struct seen s = { .n = 0 };
	if (cn_catalog_reader_open(data, size, &r) < 0)
		return 0;
	int rc = cn_catalog_list(r, NULL, record, &s);
	for (size_t i = 0; i < s.n; i++) {
		struct cn_catalog_entry e;
		int found = cn_catalog_lookup(r, s.path[i], &e);
		/* names are unique only in well-formed catalogs: a path may
		 * resolve through a same-named twin and not be found, but a
		 * catalog that listed cleanly must not fail the lookup */
		if (rc == 0 && found < 0)
			abort();
		free(s.path[i]);
	}
	(void)cn_catalog_list(r, "x/y", record, &s);
	cn_catalog_reader_free(r);
	return 0;
}
