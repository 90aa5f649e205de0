/* cn_pxar_format — the pxar archive format, version 1 (single archive), as
 * written by proxmox-backup-client 3.2.4 (pxar crate 0.10.2), plus the
 * catalog.pcat1 constants. Shared by the encoder (pxarenc) and the decoder
 * (pxardec). Spec: shared/spec/pxar.md, catalog.md; upstream truth:
 * proxmox/pxar src/format/mod.rs, src/format/acl.rs, src/encoder/mod.rs,
 * src/binary_tree_array.rs; proxmox-backup pbs-client/src/pxar/flags.rs,
 * pbs-datastore/src/catalog.rs.
 *
 * Everything on disk is little-endian, with no padding or alignment between
 * items. The structs below document the layouts; code serialises fields
 * explicitly with cn_put_le64()/cn_le64() (common/cn_util.h) instead of
 * writing structs, so host layout never matters.
 */
#ifndef CN_PXAR_FORMAT_H
#define CN_PXAR_FORMAT_H

#include <stddef.h>
#include <stdint.h>

/* Output callback used by the encoder and the catalog writer: consume len
 * bytes at data (borrowed for the duration of the call). Return 0, or a
 * negative code (with a cn_error message) to abort the producer, which then
 * returns that code. */
#ifndef CN_WRITE_FN_DEFINED
#define CN_WRITE_FN_DEFINED
typedef int (*cn_write_fn)(void *ctx, const uint8_t *data, size_t len);
#endif

/* ---- 1. Item header: 16 bytes before every item ------------------------ */
struct cn_pxar_header {          /* on disk: 16 bytes */
	uint64_t htype;          /* one of CN_PXAR_* below */
	uint64_t full_size;      /* 16 + content length */
};
#define CN_PXAR_HEADER_SIZE 16u

/* ---- 2. Item types (SipHash-derived constants, examples/mk-format-hashes.rs) */
#define CN_PXAR_FORMAT_VERSION      0x730f6c75df16a40dULL /* v2 only; never written by 3.2.4 */
#define CN_PXAR_PRELUDE             0xe309d79d9f7b771bULL /* v2 only */
#define CN_PXAR_ENTRY               0xd5956474e588acefULL /* Stat, 40 bytes */
#define CN_PXAR_ENTRY_V1            0x11da850a1c1cceffULL /* legacy Stat, 32 bytes, read only */
#define CN_PXAR_FILENAME            0x16701121063917b3ULL /* name + NUL */
#define CN_PXAR_SYMLINK             0x27f971e7dbf5dc5fULL /* target + NUL */
#define CN_PXAR_DEVICE              0x9fc9e906586d5ce9ULL /* major u64, minor u64 */
#define CN_PXAR_XATTR               0x0dab0229b57dcd03ULL /* name NUL value */
#define CN_PXAR_ACL_USER            0x2ce8540a457d55b8ULL /* uid u64, perms u64 */
#define CN_PXAR_ACL_GROUP           0x136e3eceb04c03abULL /* gid u64, perms u64 */
#define CN_PXAR_ACL_GROUP_OBJ       0x10868031e9582876ULL /* perms u64 */
#define CN_PXAR_ACL_DEFAULT         0xbbbb13415a6896f5ULL /* 4 x u64 perms */
#define CN_PXAR_ACL_DEFAULT_USER    0xc89357b40532cd1fULL /* uid u64, perms u64 */
#define CN_PXAR_ACL_DEFAULT_GROUP   0xf90a8a5816038ffeULL /* gid u64, perms u64 */
#define CN_PXAR_FCAPS               0x2da9dd9db5f7fb67ULL /* raw security.capability */
#define CN_PXAR_QUOTA_PROJID        0xe07540e82f7d1cbbULL /* projid u64 */
#define CN_PXAR_HARDLINK            0x51269c8422bd7275ULL /* offset u64 + path + NUL */
#define CN_PXAR_PAYLOAD             0x28147a1b0b7c1a25ULL /* file contents */
#define CN_PXAR_PAYLOAD_REF         0x419d3d6bc4ba977eULL /* v2 split only */
#define CN_PXAR_GOODBYE             0x2fec4fa642d5731dULL /* goodbye table */
#define CN_PXAR_GOODBYE_TAIL_MARKER 0xef5eed5b753e1555ULL /* hash of the tail item */
#define CN_PXAR_PAYLOAD_START_MARKER 0x834c68c2194a4ed2ULL /* v2 only */
#define CN_PXAR_PAYLOAD_TAIL_MARKER 0x6c72b78b984c81b5ULL /* v2 only */

/* Content size limits the decoder enforces (src/format/mod.rs, util.rs). */
#define CN_PXAR_MAX_FILENAME_LEN   4096u   /* name bytes, without the NUL */
#define CN_PXAR_MAX_PATH_LEN       4096u   /* symlink target / hardlink path */
#define CN_PXAR_MAX_XATTR_NAME     255u
#define CN_PXAR_MAX_XATTR_VALUE    65536u
#define CN_PXAR_MAX_XATTR_CONTENT  (CN_PXAR_MAX_XATTR_NAME + 1 + CN_PXAR_MAX_XATTR_VALUE - 1) /* 65791 */

/* ---- 3. Stat: content of ENTRY, 40 bytes -------------------------------- */
struct cn_pxar_stat {            /* on disk: 40 bytes */
	uint64_t mode;           /*  0: st_mode (type + permission bits) */
	uint64_t flags;          /*  8: CN_PXAR_FLAG_* attribute bits (chattr/FAT) */
	uint32_t uid;            /* 16 */
	uint32_t gid;            /* 20 */
	int64_t  mtime_secs;     /* 24: floored seconds (negative times: secs-1, nanos complemented) */
	uint32_t mtime_nanos;    /* 32: 0..999999999 */
	uint32_t pad;            /* 36: always 0 */
};
#define CN_PXAR_STAT_SIZE    40u
#define CN_PXAR_STAT_V1_SIZE 32u  /* mode, flags, uid u32, gid u32, mtime u64 ns */

/* 3.1 Mode bits (octal, fixed by the format, equal to Linux values). */
#define CN_PXAR_IFMT   0170000u
#define CN_PXAR_IFSOCK 0140000u
#define CN_PXAR_IFLNK  0120000u
#define CN_PXAR_IFREG  0100000u
#define CN_PXAR_IFBLK  0060000u
#define CN_PXAR_IFDIR  0040000u
#define CN_PXAR_IFCHR  0020000u
#define CN_PXAR_IFIFO  0010000u
#define CN_PXAR_ISUID  04000u
#define CN_PXAR_ISGID  02000u
#define CN_PXAR_ISVTX  01000u

/* 3.2 Stat.flags bits stored per entry (pbs-client/src/pxar/flags.rs).
 * Source bits: FAT attributes (FAT_IOCTL_GET_ATTRIBUTES, vfat only) and
 * chattr flags (FS_IOC_GETFLAGS). */
#define CN_PXAR_FLAG_HIDDEN      0x2000ULL    /* FAT ATTR_HIDDEN 0x02 */
#define CN_PXAR_FLAG_SYSTEM      0x4000ULL    /* FAT ATTR_SYS 0x04 */
#define CN_PXAR_FLAG_ARCHIVE     0x8000ULL    /* FAT ATTR_ARCH 0x20 */
#define CN_PXAR_FLAG_APPEND      0x10000ULL   /* FS_APPEND_FL 0x20 */
#define CN_PXAR_FLAG_NOATIME     0x20000ULL   /* FS_NOATIME_FL 0x80 */
#define CN_PXAR_FLAG_COMPR       0x40000ULL   /* FS_COMPR_FL 0x4 */
#define CN_PXAR_FLAG_NOCOW       0x80000ULL   /* FS_NOCOW_FL 0x800000 */
#define CN_PXAR_FLAG_NODUMP      0x100000ULL  /* FS_NODUMP_FL 0x40 */
#define CN_PXAR_FLAG_DIRSYNC     0x200000ULL  /* FS_DIRSYNC_FL 0x10000 */
#define CN_PXAR_FLAG_IMMUTABLE   0x400000ULL  /* FS_IMMUTABLE_FL 0x10 */
#define CN_PXAR_FLAG_SYNC        0x800000ULL  /* FS_SYNC_FL 0x8 */
#define CN_PXAR_FLAG_NOCOMP      0x1000000ULL /* FS_NOCOMP_FL 0x400 */
#define CN_PXAR_FLAG_PROJINHERIT 0x2000000ULL /* FS_PROJINHERIT_FL 0x20000000 */

/* Encoder feature switches of flags.rs (not stored per entry; they decide
 * what the encoder records). Values as upstream Flags::WITH_*. */
#define CN_PXAR_WITH_2SEC_TIME     0x40ULL
#define CN_PXAR_WITH_READ_ONLY     0x80ULL
#define CN_PXAR_WITH_PERMISSIONS   0x100ULL
#define CN_PXAR_WITH_SYMLINKS      0x200ULL
#define CN_PXAR_WITH_DEVICE_NODES  0x400ULL
#define CN_PXAR_WITH_FIFOS         0x800ULL
#define CN_PXAR_WITH_SOCKETS       0x1000ULL
#define CN_PXAR_WITH_XATTRS        0x10000000ULL
#define CN_PXAR_WITH_ACL           0x20000000ULL
#define CN_PXAR_WITH_SELINUX       0x40000000ULL
#define CN_PXAR_WITH_FCAPS         0x80000000ULL
#define CN_PXAR_WITH_QUOTA_PROJID  0x100000000ULL
#define CN_PXAR_WITH_SUBVOLUME     0x4000000ULL
#define CN_PXAR_WITH_SUBVOLUME_RO  0x8000000ULL
#define CN_PXAR_WITH_OWNER         0x200000000ULL
#define CN_PXAR_EXCLUDE_FILE       0x1000000000000000ULL
#define CN_PXAR_EXCLUDE_SUBMOUNTS  0x4000000000000000ULL
#define CN_PXAR_EXCLUDE_NODUMP     0x8000000000000000ULL
/* The WITH_FLAG_* switches have the values of the CN_PXAR_FLAG_* bits. */
#define CN_PXAR_WITH_CHATTR (CN_PXAR_FLAG_APPEND | CN_PXAR_FLAG_NOATIME | CN_PXAR_FLAG_COMPR | \
	CN_PXAR_FLAG_NOCOW | CN_PXAR_FLAG_NODUMP | CN_PXAR_FLAG_DIRSYNC | CN_PXAR_FLAG_IMMUTABLE | \
	CN_PXAR_FLAG_SYNC | CN_PXAR_FLAG_NOCOMP | CN_PXAR_FLAG_PROJINHERIT)
#define CN_PXAR_WITH_FAT_ATTRS (CN_PXAR_FLAG_HIDDEN | CN_PXAR_FLAG_SYSTEM | CN_PXAR_FLAG_ARCHIVE)
/* Flags::DEFAULT (what proxmox-backup-client and `pxar create` use): all
 * of the above except WITH_2SEC_TIME, WITH_READ_ONLY, WITH_FLAG_NODUMP,
 * EXCLUDE_SUBMOUNTS; = 0x90000003ffefff00 (pinned in the unit test). */
#define CN_PXAR_FLAGS_DEFAULT (CN_PXAR_WITH_SYMLINKS | CN_PXAR_WITH_DEVICE_NODES | \
	CN_PXAR_WITH_FIFOS | CN_PXAR_WITH_SOCKETS | CN_PXAR_WITH_FAT_ATTRS | \
	(CN_PXAR_WITH_CHATTR & ~CN_PXAR_FLAG_NODUMP) | CN_PXAR_WITH_SUBVOLUME | \
	CN_PXAR_WITH_SUBVOLUME_RO | CN_PXAR_WITH_PERMISSIONS | CN_PXAR_WITH_OWNER | \
	CN_PXAR_WITH_XATTRS | CN_PXAR_WITH_ACL | CN_PXAR_WITH_SELINUX | CN_PXAR_WITH_FCAPS | \
	CN_PXAR_WITH_QUOTA_PROJID | CN_PXAR_EXCLUDE_NODUMP | CN_PXAR_EXCLUDE_FILE)

/* ---- 4./5. Item contents ------------------------------------------------ */
struct cn_pxar_device {          /* DEVICE, 16 bytes: glibc major()/minor() */
	uint64_t major;
	uint64_t minor;
};
#define CN_PXAR_DEVICE_SIZE 16u

/* XATTR: name bytes, one NUL, value bytes (no terminator after the value).
 * PBS stores only names starting "user." or "trusted.", plus
 * "security.NTACL"; "security.capability" goes to FCAPS; the POSIX ACL
 * xattrs go to ACL_* items. Order: as listxattr(2) returns them. */

/* ACL items. Permission bits: */
#define CN_PXAR_ACL_READ    4u
#define CN_PXAR_ACL_WRITE   2u
#define CN_PXAR_ACL_EXECUTE 1u
#define CN_PXAR_ACL_NO_MASK 0xffffffffffffffffULL /* absent field in ACL_DEFAULT */
struct cn_pxar_acl_user {        /* ACL_USER / ACL_DEFAULT_USER, 16 bytes */
	uint64_t uid;
	uint64_t permissions;
};
struct cn_pxar_acl_group {       /* ACL_GROUP / ACL_DEFAULT_GROUP, 16 bytes */
	uint64_t gid;
	uint64_t permissions;
};
struct cn_pxar_acl_group_obj {   /* ACL_GROUP_OBJ, 8 bytes; PBS writes it only
				  * when the access ACL has a mask entry */
	uint64_t permissions;
};
struct cn_pxar_acl_default {     /* ACL_DEFAULT, 32 bytes; missing = NO_MASK */
	uint64_t user_obj_permissions;
	uint64_t group_obj_permissions;
	uint64_t other_permissions;
	uint64_t mask_permissions;
};
#define CN_PXAR_ACL_USER_SIZE      16u
#define CN_PXAR_ACL_GROUP_SIZE     16u
#define CN_PXAR_ACL_GROUP_OBJ_SIZE 8u
#define CN_PXAR_ACL_DEFAULT_SIZE   32u
#define CN_PXAR_QUOTA_PROJID_SIZE  8u

/* HARDLINK content: offset u64 = (this FILENAME header position) - (target's
 * FILENAME header position), > 0; then the target path relative to the
 * archive root (no leading '/'), then NUL. */
#define CN_PXAR_HARDLINK_MIN_SIZE 9u

/* Entry order after FILENAME (or at archive start for the root):
 *   ENTRY, XATTR*, ACL_USER*, ACL_GROUP*, ACL_GROUP_OBJ?, ACL_DEFAULT?,
 *   ACL_DEFAULT_USER*, ACL_DEFAULT_GROUP*, FCAPS?, QUOTA_PROJID?, then
 *   regular: PAYLOAD; symlink: SYMLINK; device: DEVICE; fifo/socket: none;
 *   directory: (FILENAME child)* GOODBYE.
 * A hardlink (2nd+ occurrence) is FILENAME + HARDLINK, no ENTRY.
 * Children are sorted bytewise (memcmp) by name; a generated
 * ".pxarexclude-cli" goes last in the root directory. */

/* Entry pieces shared by the encoder (owned copies) and the decoder
 * (pointers into its buffers). */
/* One extended attribute (name without NUL). */
struct cn_pxar_xattr {
	uint8_t *name;
	size_t name_len;
	uint8_t *value;
	size_t value_len;
};

/* ACL_USER/ACL_GROUP (and the default variants): uid or gid, permissions. */
struct cn_pxar_acl_entry {
	uint64_t id;
	uint64_t permissions;
};

/* Validates a file name as pxar does (defined in cn_pxar_encoder.c):
 * non-empty, no '/', not "." or "..", at most CN_PXAR_MAX_FILENAME_LEN
 * bytes. Returns 0 or -CN_E_PATH with a
 * message. (NUL bytes are rejected too.) */
int cn_pxar_check_filename(const void *name, size_t len);

/* ---- 6. Goodbye table --------------------------------------------------- */
struct cn_pxar_goodbye_item {    /* on disk: 24 bytes */
	uint64_t hash;           /* SipHash-2-4(K0,K1) of the name (no NUL) */
	uint64_t offset;         /* goodbye header pos - child's FILENAME pos */
	uint64_t size;           /* child bytes: FILENAME .. end of child */
};
#define CN_PXAR_GOODBYE_ITEM_SIZE 24u
/* Table = n items in BST order (cn_pxar_goodbye_permute) + 1 tail item
 * {CN_PXAR_GOODBYE_TAIL_MARKER, goodbye pos - dir ENTRY pos (root: pos - 0),
 * 16 + 24*(n+1)}; header full_size = 16 + 24*(n+1). */
#define CN_PXAR_HASH_KEY_0 0x83ac3f1cfbb450dbULL
#define CN_PXAR_HASH_KEY_1 0xaa4f1b6879369fbdULL

/* SipHash-2-4 with 64-bit output, keys k0/k1 as u64 (the key bytes are
 * k0 then k1 little-endian). Pure function. */
uint64_t cn_siphash24(uint64_t k0, uint64_t k1, const void *data, size_t len);

/* The goodbye hash of a file name: cn_siphash24(CN_PXAR_HASH_KEY_0,
 * CN_PXAR_HASH_KEY_1, name, len). */
uint64_t cn_pxar_hash_filename(const void *name, size_t len);

/* Fills slot[0..n) with indexes into an array sorted by hash so that
 * slot[i] is the element stored at BST position i (children of i at 2i+1,
 * 2i+2), exactly as pxar's binary_tree_array::copy. n == 0 does nothing. */
void cn_pxar_goodbye_permute(size_t n, size_t *slot);

/* ---- Catalog (catalog.pcat1) -------------------------------------------- */
/* magic: first 8 bytes of SHA-256("Proxmox Backup Catalog file v1.0") */
#define CN_CATALOG_MAGIC { 0x91, 0xfd, 0x60, 0xf9, 0xc4, 0x67, 0x58, 0xd5 }
#define CN_CATALOG_MAGIC_SIZE 8u
/* Entry type bytes. */
#define CN_CATALOG_DIR      'd'
#define CN_CATALOG_FILE     'f'
#define CN_CATALOG_SYMLINK  'l'
#define CN_CATALOG_HARDLINK 'h'
#define CN_CATALOG_BLOCKDEV 'b'
#define CN_CATALOG_CHARDEV  'c'
#define CN_CATALOG_FIFO     'p'
#define CN_CATALOG_SOCKET   's'
/* Layout: magic, directory tables (children before parents), root table,
 * u64 LE offset of the root table. Table at S: varint table_len (bytes
 * after it), varint count, entries: type byte, varint name_len, name,
 * then d: varint (S - child table start); f: varint size, signed varint
 * mtime seconds; others: nothing. */
#define CN_CATALOG_MAX_NAME 4095u   /* readers reject names >= 4096 bytes */

/* Varint encoders (catalog.md §2). Write at most 10 (u64) / 11 (i64) bytes
 * into out; return the number written. */
size_t cn_catalog_put_u64(uint8_t out[10], uint64_t v);
size_t cn_catalog_put_i64(uint8_t out[11], int64_t v);

#endif
