/* cli_trust — which certificate the cairn command trusts for a PBS
 * repository, as proxmox-backup-client decides it: a pin given for that
 * repository (--fingerprint, or PBS_FINGERPRINT for a single repository),
 * else a fingerprint remembered for its host:port, else the system CAs.
 * On a terminal an untrusted certificate is shown and, once the user
 * accepts it, remembered in $XDG_CONFIG_HOME/cairn/fingerprints (default
 * ~/.config/cairn/fingerprints; lines "HOST:PORT FINGERPRINT", mode 0600,
 * replaced atomically). Without a terminal nothing is accepted silently. */
#ifndef CAIRN_CLI_TRUST_H
#define CAIRN_CLI_TRUST_H

#include <stddef.h>

struct cn_pbs;

/* The remembered-fingerprints file's path into out. */
void cli_trust_file(char *out, size_t len);

/* Looks hostport ("HOST:PORT", IPv6 hosts in brackets) up in the
 * remembered file: returns 1 and the fingerprint in fp, or 0 when it is
 * not there (or there is no readable file). */
int cli_trust_lookup(const char *hostport, char fp[96]);

/* Remembers fp for hostport, replacing an older line for it. Returns 0 or
 * a negative code with a message naming the file. */
int cli_trust_remember(const char *hostport, const char *fp);

/* Connects to repository repo (NULL: $PBS_REPOSITORY) with the trust rule
 * above. pin: the --fingerprint for this repository (NULL or "": none);
 * env_pin: whether PBS_FINGERPRINT may stand in for a missing pin. cmd
 * names the command in messages and prompts. Returns 0 and *out (the
 * caller's, cn_pbs_free), or a negative code with a message that, for an
 * untrusted certificate, names host:port, the fingerprint and how to pin
 * it. */
int cli_trust_connect(const char *cmd, const char *repo, const char *pin, int env_pin,
		      struct cn_pbs **out);

#endif
