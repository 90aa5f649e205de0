/* libFuzzer target: .didx/.fidx parsing (cn_index.h). Whatever parses is
 * walked completely and rewritten with the writer, which must reproduce
 * the checksum and the entries. */
#include <stdlib.h>
#include <string.h>

#include "common/cn_util.h"
#include "store/cn_index.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct cn_index *idx = NULL, *again = NULL;
	struct cn_index_writer *w = NULL;
	struct cn_buf out = {0};
	uint8_t uuid[16], csum[32], csum2[32];

	if (cn_index_parse(data, size, &idx) < 0)
		return 0;
	size_t n = cn_index_count(idx);
	uint64_t total = cn_index_size(idx), prev_end = 0;
	cn_index_uuid(idx, uuid);
	if (cn_index_writer_new(cn_index_kind(idx), uuid, cn_index_ctime(idx), total,
				cn_index_chunk_size(idx), &w) < 0)
		abort();
	for (size_t i = 0; i < n; i++) {
		struct cn_index_entry e;
		uint64_t start, end;
		size_t found;
		cn_index_entry(idx, i, &start, &end, e.digest);
		if (start != prev_end || end <= start || end > total)
			abort();
		if (cn_index_find(idx, start, &found) < 0 || found != i ||
		    cn_index_find(idx, end - 1, &found) < 0 || found != i)
			abort();
		prev_end = end;
		e.end_offset = end;
		if (cn_index_writer_append(w, &e, 1) < 0)
			abort();
	}
	if (prev_end != total)
		abort();
	if (cn_index_writer_finish(w, &out, csum2) < 0)
		abort();
	cn_index_csum(idx, csum);
	if (memcmp(csum, csum2, 32) != 0 || cn_index_verify(idx, total, csum2) < 0)
		abort();
	if (cn_index_parse(out.data, out.len, &again) < 0 || cn_index_count(again) != n)
		abort();
	cn_index_free(again);
	cn_index_writer_free(w);
	cn_index_free(idx);
	cn_buf_free(&out);
	return 0;
}
