/* cn_pxar_encoder — writes a pxar v1 archive (or a v2 split archive, see
 * cn_pxar_encoder_new_split) as a byte stream, in the exact
 * item order and layout of the pxar 0.10.2 encoder that
 * proxmox-backup-client 3.2.4 uses (pxar src/encoder/mod.rs). It does no
 * file system access: the walker (cn_walker.h) feeds it entries in
 * archive order; it tracks stream positions and builds each directory's
 * goodbye table.
 *
 * Output goes through a cn_write_fn in pieces of up to 64 KiB (file data
 * may be passed through in larger pieces). Memory: the goodbye items of
 * the open directories (24 bytes per already written child) plus one
 * output buffer; never file contents.
 *
 * Call order: new(root metadata) { entries } finish(). A directory is
 * begin_dir ... end_dir; a regular file is begin_file, write* (exactly the
 * announced size in total), end_file. After any error the encoder is
 * unusable except for free().
 *
 * The tree walk that drives this encoder like proxmox-backup-client does,
 * cn_pxar_create(), lives in the engine layer (engine/cn_walker.h).
 */
#ifndef CN_PXAR_ENCODER_H
#define CN_PXAR_ENCODER_H

#include <stddef.h>
#include <stdint.h>

#include "common/cn_util.h"
#include "pxar/cn_pxar_format.h"

/* struct cn_pxar_xattr and struct cn_pxar_acl_entry are in cn_pxar_format.h
 * (shared with the decoder). */

/* Everything stored for one entry before its type-specific part. Filled
 * by the walker (or a test) with the cn_pxar_metadata_* helpers, which
 * own all pointed-to memory; release with cn_pxar_metadata_clear. A
 * zero-initialised struct is empty metadata. */
struct cn_pxar_metadata {
	struct cn_pxar_stat stat;
	struct cn_pxar_xattr *xattrs;            /* written in this order */
	size_t n_xattrs;
	struct cn_pxar_acl_entry *acl_users;     /* written in this order */
	size_t n_acl_users;
	struct cn_pxar_acl_entry *acl_groups;
	size_t n_acl_groups;
	int has_acl_group_obj;
	uint64_t acl_group_obj;
	int has_acl_default;
	struct cn_pxar_acl_default acl_default;
	struct cn_pxar_acl_entry *acl_default_users;
	size_t n_acl_default_users;
	struct cn_pxar_acl_entry *acl_default_groups;
	size_t n_acl_default_groups;
	int has_fcaps;
	uint8_t *fcaps;
	size_t fcaps_len;
	int has_quota_projid;
	uint64_t quota_projid;
};

/* Appends an xattr (copies name and value). Returns 0 or -ENOMEM. */
int cn_pxar_metadata_add_xattr(struct cn_pxar_metadata *m, const void *name, size_t name_len,
			       const void *value, size_t value_len);
/* Appends an ACL entry to one of the four lists (which: 0 users, 1 groups,
 * 2 default users, 3 default groups). Returns 0, -EINVAL or -ENOMEM. */
int cn_pxar_metadata_add_acl(struct cn_pxar_metadata *m, int which, uint64_t id, uint64_t perms);
/* Sets the file capabilities (copies). Returns 0 or -ENOMEM. */
int cn_pxar_metadata_set_fcaps(struct cn_pxar_metadata *m, const void *data, size_t len);
/* Frees everything the helpers allocated and zeroes *m. */
void cn_pxar_metadata_clear(struct cn_pxar_metadata *m);

/* Appends the items the encoder writes for m (ENTRY, XATTR, ACL...,
 * FCAPS, QUOTA_PROJID) to out, byte for byte as in an archive; two
 * entries have equal pxar metadata exactly when these bytes are equal
 * (used for change detection). 0 or -ENOMEM. */
int cn_pxar_metadata_encode(const struct cn_pxar_metadata *m, struct cn_buf *out);

struct cn_pxar_encoder;  /* opaque */

/* Starts an archive with the root directory's metadata (mode must be a
 * directory) and writes its entry. out/ctx are borrowed until free().
 * Returns 0 and *enc, or a negative code with a message. */
int cn_pxar_encoder_new(cn_write_fn out, void *ctx, const struct cn_pxar_metadata *root,
			struct cn_pxar_encoder **enc);

/* Starts a v2 split archive (pxar 1.0 EncoderImpl::new with a payload
 * output; spec pxar.md §8): the metadata stream (.mpxar) goes to meta_out
 * and begins with FORMAT_VERSION(2), then PRELUDE(prelude) when prelude
 * is not NULL, then the root entry; the payload stream (.ppxar) goes to
 * payload_out and begins with PAYLOAD_START_MARKER. Regular files then
 * carry PAYLOAD_REF in the metadata stream and their PAYLOAD header and
 * data go to the payload stream; finish() ends the payload stream with
 * PAYLOAD_TAIL_MARKER. Everything else is as cn_pxar_encoder_new(). The
 * prelude is copied; outputs and contexts are borrowed until free(). */
int cn_pxar_encoder_new_split(cn_write_fn meta_out, void *meta_ctx, cn_write_fn payload_out,
			      void *payload_ctx, const void *prelude, size_t prelude_len,
			      const struct cn_pxar_metadata *root, struct cn_pxar_encoder **enc);

/* 1 when the encoder writes a split (v2) archive. */
int cn_pxar_encoder_is_split(const struct cn_pxar_encoder *enc);

/* Split archives: position in the payload stream (bytes written or
 * buffered, plus what advance() skipped). 0 for v1 archives. */
uint64_t cn_pxar_encoder_payload_position(const struct cn_pxar_encoder *enc);

/* Split archives: hands all buffered payload bytes to payload_out, so the
 * consumer has seen exactly cn_pxar_encoder_payload_position() bytes
 * (before it injects reused chunks there). 0 or a negative code. */
int cn_pxar_encoder_flush_payload(struct cn_pxar_encoder *enc);

/* Split archives: flushes the payload stream, then moves its position on
 * by size bytes that the caller places into the payload stream itself
 * (reused chunks of a previous snapshot; pxar Encoder::advance). The
 * encoder writes nothing for them. */
int cn_pxar_encoder_advance(struct cn_pxar_encoder *enc, uint64_t size);

/* Split archives: a regular file whose data already lies in the payload
 * stream at payload_offset (its PAYLOAD header) with size content bytes:
 * FILENAME, metadata, PAYLOAD_REF{payload_offset, size} (pxar
 * add_payload_ref). payload_offset must not lie before the current payload
 * position. Its goodbye item size counts only metadata bytes, as upstream.
 * *link_offset (may be NULL) as for begin_file. */
int cn_pxar_encoder_add_payload_ref(struct cn_pxar_encoder *enc, const struct cn_pxar_metadata *m,
				    const void *name, size_t name_len, uint64_t size,
				    uint64_t payload_offset, uint64_t *link_offset);

/* Stream position: bytes produced so far (flushed or buffered); for split
 * archives, of the metadata stream. */
uint64_t cn_pxar_encoder_position(const struct cn_pxar_encoder *enc);

/* Depth of open directories (1 = root only). */
size_t cn_pxar_encoder_depth(const struct cn_pxar_encoder *enc);

/* Starts a regular file: FILENAME, metadata, PAYLOAD header for size
 * bytes. *link_offset (may be NULL) receives the position of its FILENAME
 * header, for later cn_pxar_encoder_add_hardlink. */
int cn_pxar_encoder_begin_file(struct cn_pxar_encoder *enc, const struct cn_pxar_metadata *m,
			       const void *name, size_t name_len, uint64_t size,
			       uint64_t *link_offset);
/* Writes payload bytes of the current file; more than announced is an
 * error (-EINVAL). */
int cn_pxar_encoder_write(struct cn_pxar_encoder *enc, const void *data, size_t len);

/* File data that the caller puts into the output itself, without a copy
 * (e.g. read(2) into the output's buffer): direct_begin hands the output
 * what the encoder holds of the stream that carries file contents (the
 * payload stream of a split archive, the archive otherwise), so that the
 * caller's bytes follow it; direct_done(len) then counts len bytes of the
 * current file as written there, as cn_pxar_encoder_write would have. */
int cn_pxar_encoder_direct_begin(struct cn_pxar_encoder *enc);
int cn_pxar_encoder_direct_done(struct cn_pxar_encoder *enc, size_t len);
/* Ends the current file; fewer bytes than announced is an error. */
int cn_pxar_encoder_end_file(struct cn_pxar_encoder *enc);

/* Symlink entry: FILENAME, metadata, SYMLINK(target + NUL). */
int cn_pxar_encoder_add_symlink(struct cn_pxar_encoder *enc, const struct cn_pxar_metadata *m,
				const void *name, size_t name_len,
				const void *target, size_t target_len);
/* Device entry (mode must be a char/block device): DEVICE(major, minor). */
int cn_pxar_encoder_add_device(struct cn_pxar_encoder *enc, const struct cn_pxar_metadata *m,
			       const void *name, size_t name_len, uint64_t major, uint64_t minor);
/* FIFO or socket entry (metadata only). */
int cn_pxar_encoder_add_special(struct cn_pxar_encoder *enc, const struct cn_pxar_metadata *m,
				const void *name, size_t name_len);
/* Hardlink: FILENAME + HARDLINK(position - link_offset, target path +
 * NUL); target is relative to the archive root ("dir/file"). */
int cn_pxar_encoder_add_hardlink(struct cn_pxar_encoder *enc, const void *name, size_t name_len,
				 const void *target, size_t target_len, uint64_t link_offset);

/* Opens a subdirectory: FILENAME + metadata; children follow. */
int cn_pxar_encoder_begin_dir(struct cn_pxar_encoder *enc, const struct cn_pxar_metadata *m,
			      const void *name, size_t name_len);
/* Closes the innermost subdirectory with its goodbye table. */
int cn_pxar_encoder_end_dir(struct cn_pxar_encoder *enc);

/* Closes the root directory (goodbye table) and flushes all output. Only
 * the root may be open. */
int cn_pxar_encoder_finish(struct cn_pxar_encoder *enc);

/* Frees the encoder (NULL is fine); never writes. */
void cn_pxar_encoder_free(struct cn_pxar_encoder *enc);

/* cn_pxar_check_filename() is declared in cn_pxar_format.h. */

#endif
