/* cairn version — the version, the git revision of the build and the
 * compiled-in features (chunker and CRC-32 kernels, library versions),
 * and with --repository the version of that Proxmox Backup Server:
 *   cairn version [--repository REPO [--fingerprint FP]] [--output-format json]
 * `cairn --version` prints the same text form (without a server). */
#include <getopt.h>
#include <jansson.h>
#include <lmdb.h>
#include <nghttp2/nghttp2.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <string.h>
#include <curl/curl.h>
#include <zstd.h>

#include "chunker/cn_chunker.h"
#include "cli/cli.h"
#include "cli/cli_common.h"
#include "cli/cn_version.h"
#include "net/cn_pbs.h"
#include "store/cn_crc32.h"

static void help(FILE *f)
{
	fprintf(f, "Usage: cairn version [--repository REPO [--fingerprint FP]] [--output-format text|json]\n"
		   "       cairn --version\n\n"
		   "Prints the version of cairn, the git revision it was built from (when built\n"
		   "from a git checkout), the chunker and CRC-32 kernels compiled in (the one\n"
		   "this CPU uses marked with *), and the versions of the libraries it runs with.\n"
		   "With --repository, also the version of that Proxmox Backup Server (it logs\n"
		   "in as for a backup; exit code 1 if it cannot be reached or refuses).\n\n"
		   "Options:\n"
		   "  --repository REPO      a Proxmox Backup Server, [[USER@REALM[!TOKEN]@]HOST[:PORT]:]STORE\n"
		   "                         (secret from PBS_PASSWORD; $PBS_REPOSITORY is not used here)\n"
		   "  --fingerprint FP       certificate pin (SHA-256) of the --repository\n"
		   "  --output-format FMT    text (default) or json\n"
		   "  -h, --help             this help\n");
}

/* The kernels of one family as "portable scalar* avx2", the chosen one starred;
 * kernels this CPU cannot run are left out. */
static void kernels(char *out, size_t len, int n, const char *(*name)(int),
		    int (*supported)(int), int best)
{
	size_t used = 0;
	out[0] = 0;
	for (int i = 0; i < n && used < len; i++) {
		if (!supported(i))
			continue;
		int w = snprintf(out + used, len - used, "%s%s%s", used ? " " : "", name(i),
				 i == best ? "*" : "");
		if (w < 0)
			break;
		used += (size_t)w;
	}
}

/* Whether the build knew its git revision: meson's vcs_tag puts the project
 * version in its place outside a git checkout. */
static int have_git_revision(void)
{
	return *CN_GIT_REVISION && strcmp(CN_GIT_REVISION, CN_VERSION) != 0;
}

/* Prints the text form on f; shared by `cairn version` and `cairn --version`. */
void cli_version_print(FILE *f)
{
	char chunker[128], crc[128];
	kernels(chunker, sizeof(chunker), cn_chunker_impl_count(), cn_chunker_impl_name,
		cn_chunker_impl_supported, cn_chunker_impl_best());
	kernels(crc, sizeof(crc), cn_crc32_impl_count(), cn_crc32_impl_name,
		cn_crc32_impl_supported, cn_crc32_impl_best());
	fprintf(f, "cairn %s%s%s%s\n", CN_VERSION, have_git_revision() ? " (git " : "",
		have_git_revision() ? CN_GIT_REVISION : "", have_git_revision() ? ")" : "");
	fprintf(f, "chunker kernels: %s\ncrc32 kernels: %s\n", chunker, crc);
	fprintf(f, "libraries: %s, zstd %s, curl %s, nghttp2 %s, jansson %s, %s\n",
		OpenSSL_version(OPENSSL_VERSION), ZSTD_versionString(),
		curl_version_info(CURLVERSION_NOW)->version, nghttp2_version(0)->version_str,
		jansson_version_str(), mdb_version(NULL, NULL, NULL));
}

/* Connects to repo (pinned with fp if given) and reads its version into
 * *v; the endpoint's name into name. Returns an exit code (0: ok; errors
 * are printed). */
static int server_version(const char *repo, const char *fp, struct cn_pbs_server_version *v,
			  char *name, size_t name_len)
{
	struct cli_common c = {.cmd = "version"};
	c.repos[c.nrepos++] = repo;
	if (fp)
		c.fps[c.nfps++] = fp;
	struct cli_endpoints eps;
	int code = cli_open_endpoints(&c, CLI_OPEN_NO_INDEX, 1, &eps);
	if (code)
		return code;
	snprintf(name, name_len, "%s", eps.e[0].name);
	int r = cn_pbs_server_version(eps.e[0].pbs, v);
	cli_close_endpoints(&eps);
	return r < 0 ? cli_fail(&c, r, "server version") : 0;
}

static int cmd_version(int argc, char **argv)
{
	static const struct option opts[] = {
		{"output-format", required_argument, NULL, 'o'},
		{"repository", required_argument, NULL, 'r'},
		{"fingerprint", required_argument, NULL, 'f'},
		{"help", no_argument, NULL, 'h'},
		{0},
	};
	int json = 0, o;
	const char *repo = NULL, *fp = NULL;
	while ((o = getopt_long(argc, argv, "+h", opts, NULL)) != -1) {
		switch (o) {
		case 'h':
			help(stdout);
			return CLI_EXIT_OK;
		case 'o':
			if (!strcmp(optarg, "json"))
				json = 1;
			else if (strcmp(optarg, "text"))
				return cli_usage_error("version", "--output-format is text or json");
			break;
		case 'r':
			repo = optarg;
			break;
		case 'f':
			fp = optarg;
			break;
		default:
			return cli_usage_error("version", "unknown option");
		}
	}
	if (optind != argc)
		return cli_usage_error("version", "unexpected argument '%s'", argv[optind]);
	if (fp && !repo)
		return cli_usage_error("version", "--fingerprint goes with --repository");
	struct cn_pbs_server_version sv;
	char sname[256] = "";
	int code = 0;
	if (!json) {
		cli_version_print(stdout);
		fflush(stdout);
		if (repo && (code = server_version(repo, fp, &sv, sname, sizeof(sname))) == 0)
			printf("server %s: Proxmox Backup Server %s%s%s%s%s\n", sname, sv.version,
			       sv.release[0] ? "-" : "", sv.release, sv.repoid[0] ? ", repoid " : "",
			       sv.repoid);
		return code;
	}
	if (repo && (code = server_version(repo, fp, &sv, sname, sizeof(sname))) != 0)
		return code;
	json_t *chunker = json_array(), *crc = json_array();
	for (int i = 0; i < cn_chunker_impl_count(); i++)
		if (cn_chunker_impl_supported(i))
			json_array_append_new(chunker, json_string(cn_chunker_impl_name(i)));
	for (int i = 0; i < cn_crc32_impl_count(); i++)
		if (cn_crc32_impl_supported(i))
			json_array_append_new(crc, json_string(cn_crc32_impl_name(i)));
	json_t *out = json_pack("{s:s, s:s, s:o, s:s, s:o, s:s, s:{s:s, s:s, s:s, s:s, s:s, s:s}}",
				"version", CN_VERSION, "git-revision",
				have_git_revision() ? CN_GIT_REVISION : "",
				"chunker-kernels", chunker,
				"chunker-kernel", cn_chunker_impl_name(cn_chunker_impl_best()),
				"crc32-kernels", crc,
				"crc32-kernel", cn_crc32_impl_name(cn_crc32_impl_best()),
				"libraries", "openssl", OpenSSL_version(OPENSSL_VERSION),
				"zstd", ZSTD_versionString(),
				"curl", curl_version_info(CURLVERSION_NOW)->version,
				"nghttp2", nghttp2_version(0)->version_str,
				"jansson", jansson_version_str(),
				"lmdb", mdb_version(NULL, NULL, NULL));
	if (repo)
		json_object_set_new(out, "server",
				    json_pack("{s:s, s:s, s:s, s:s}", "repository", sname, "version",
					      sv.version, "release", sv.release, "repoid", sv.repoid));
	cli_json_print(out);
	return CLI_EXIT_OK;
}

const struct cli_command cli_cmd_version = {
	.name = "version",
	.summary = "version, git revision, kernels and libraries",
	.run = cmd_version,
};
