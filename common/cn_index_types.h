/* cn_index_types — the index vocabulary shared by store/ (index files),
 * engine/ (pipelines) and net/ (index upload): kinds and entries. */
#ifndef CN_INDEX_TYPES_H
#define CN_INDEX_TYPES_H

#include <stdint.h>

enum cn_index_kind {
	CN_INDEX_DYNAMIC, /* .didx: (end offset, digest) entries */
	CN_INDEX_FIXED,   /* .fidx: digests of fixed-size chunks */
};

/* One index entry as the engine appends it, in stream order. For fixed
 * indexes end_offset is the end of that fixed chunk in the image. */
struct cn_index_entry {
	uint64_t end_offset;
	uint8_t digest[32];
};

#endif
