/* cn_pbs_source — a restore source (engine/cn_target.h) reading from a PBS
 * datastore: snapshots are listed over REST; open() starts a reader
 * session (proxmox-backup-reader-protocol-v1, spec §6); get_file downloads
 * the manifest, index files and blobs; get_chunk fetches encoded chunks.
 *
 * get_chunk may be called from many threads at once: each call is its own
 * HTTP/2 stream on the shared session, so N prefetch workers mean N
 * parallel downloads. The server only serves chunks of indexes that were
 * downloaded in the same session (get_file of the .didx/.fidx first).
 * get_file and get_chunk replace the contents of their out buffer. A
 * chunk the session may not read (or that is missing) is an error after
 * the server's 3 s delay (upstream's 401). */
#ifndef CN_PBS_SOURCE_H
#define CN_PBS_SOURCE_H

#include "engine/cn_target.h"
#include "net/cn_pbs.h"

/* Creates a PBS source on conn (borrowed: must outlive the source).
 * Returns 0 and *out (released through its destroy op), or -ENOMEM. */
int cn_pbs_source_new(struct cn_pbs *conn, struct cn_source **out);

#endif
