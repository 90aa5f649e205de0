/* libFuzzer target: the pxar decoder and accessor (cn_pxar_decoder.h).
 * The input is a unified (v1) archive. Everything is decoded, file
 * contents are read, and for an archive the decoder accepts completely,
 * the property that makes single-file restore sound is checked: every
 * decoded entry (up to 64) is found again through the goodbye tables at
 * the same offset (abort() otherwise). The accessor and the lister also
 * run on every input, accepted or not. */
#include <stdlib.h>
#include <string.h>

#include "pxar/cn_pxar_decoder.h"
#include "engine/cn_pxar_extract.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_CHECK 64

static int count_entry(void *ctx, const struct cn_pxar_entry *e)
{
	(void)e;
	(*(size_t *)ctx)++;
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct cn_pxar_input in;
	struct cn_pxar_decoder *d = NULL;
	struct cn_pxar_accessor *a = NULL;
	const struct cn_pxar_entry *e;
	char *paths[MAX_CHECK];
	uint64_t offs[MAX_CHECK];
	size_t n = 0, listed = 0, decoded = 0;
	uint8_t buf[4096];
	int rc;

	cn_pxar_input_mem(&in, data, size);
	if (cn_pxar_decoder_new(&in, NULL, &d) < 0)
		abort(); /* only the payload input can fail here */
	while ((rc = cn_pxar_decoder_next(d, &e)) > 0) {
		if (e->kind == CN_PXAR_KIND_DIR_END)
			continue;
		decoded++;
		if (e->kind == CN_PXAR_KIND_FILE) {
			/* content lies inside the input: reading it must work */
			uint64_t left = e->file_size, off = 0;
			while (left) {
				size_t k = left < sizeof(buf) ? (size_t)left : sizeof(buf);
				if (cn_pxar_decoder_read(d, off, buf, k) < 0)
					abort();
				off += k;
				left -= k;
			}
		}
		if (n < MAX_CHECK) {
			paths[n] = strdup(e->path);
			offs[n++] = e->entry_offset;
		}
	}
	cn_pxar_decoder_free(d);

	if (cn_pxar_accessor_open(&in, NULL, &a) == 0) {
		struct cn_pxar_range r;
		for (size_t i = 0; i < n; i++) {
			int found = cn_pxar_lookup(a, paths[i], &r);
			if (rc == 0 && (found != 1 || r.entry_offset != offs[i]))
				abort(); /* accepted archive, entry not found where decoded */
			if (found == 1) {
				const struct cn_pxar_entry *x;
				if (cn_pxar_accessor_entry(a, &r, paths[i], &x) == 0 &&
				    x->kind == CN_PXAR_KIND_HARDLINK)
					(void)cn_pxar_follow_hardlink(a, x, &r);
			}
		}
		(void)cn_pxar_lookup(a, "a/b/c", &r);
		cn_pxar_accessor_free(a);
	} else if (rc == 0) {
		abort(); /* the decoder accepted what the accessor refuses */
	}
	if (cn_pxar_list(&in, NULL, NULL, count_entry, &listed) == 0 && (rc != 0 || listed != decoded))
		abort(); /* lister and decoder disagree */
	for (size_t i = 0; i < n; i++)
		free(paths[i]);
	return 0;
}
