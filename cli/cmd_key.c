/* cairn key — encryption key files compatible with proxmox-backup-client:
 *   cairn key create [PATH] [--kdf scrypt|pbkdf2|none] [--hint TEXT]
 *   cairn key show-fingerprint [PATH]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/cli_common.h"
#include "common/cn_error.h"
#include "store/cn_keyfile.h"

static void help(FILE *f)
{
	fprintf(f, "Usage: cairn key create [--kdf scrypt|pbkdf2|none] [--hint TEXT] [PATH]\n"
		   "       cairn key show-fingerprint [PATH]\n\n"
		   "create: makes a new random encryption key, protected by a password (scrypt,\n"
		   "        the default, or pbkdf2; the password comes from\n"
		   "        $PBS_ENCRYPTION_PASSWORD or is asked twice on the terminal) or stored\n"
		   "        in clear with --kdf none. Refuses to overwrite an existing file.\n"
		   "show-fingerprint: prints the key's fingerprint (asks for the password).\n"
		   "PATH defaults to $XDG_CONFIG_HOME/cairn/encryption-key.json\n"
		   "(~/.config/cairn/encryption-key.json). Keep a copy of the key elsewhere:\n"
		   "without it, encrypted backups cannot be restored.\n");
}

static void default_path(char *out, size_t len)
{
	cli_config_file("encryption-key.json", out, len);
}

enum { OPT_KDF = OPT_FIRST_COMMAND_OPTION, OPT_HINT };

static int get_new_password(char *pw, size_t len)
{
	const char *env = getenv("PBS_ENCRYPTION_PASSWORD");
	if (env) {
		snprintf(pw, len, "%s", env);
		return 0;
	}
	char again[1024];
	if (cli_read_password("New encryption key password: ", pw, len) < 0 ||
	    cli_read_password("Repeat password: ", again, sizeof(again)) < 0)
		return cn_error_set(-ENXIO, "no terminal to ask for a password: set "
					    "PBS_ENCRYPTION_PASSWORD or use --kdf none");
	int same = !strcmp(pw, again);
	explicit_bzero(again, sizeof(again));
	return same ? 0 : cn_error_set(-EINVAL, "the passwords differ");
}

static int cmd_key(int argc, char **argv)
{
	struct cli_common c = {.cmd = "key"};
	static const struct option opts[] = {
		{"kdf", required_argument, NULL, OPT_KDF},
		{"hint", required_argument, NULL, OPT_HINT},
		{"help", no_argument, NULL, 'h'},
		{0},
	};
	if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
		help(argc < 2 ? stderr : stdout);
		return argc < 2 ? CLI_EXIT_USAGE : CLI_EXIT_OK;
	}
	const char *sub = argv[1];
	int create = !strcmp(sub, "create");
	if (!create && strcmp(sub, "show-fingerprint"))
		return cli_usage_error(c.cmd, "unknown subcommand '%s' (create, show-fingerprint)", sub);
	enum cn_kdf kdf = CN_KDF_SCRYPT;
	const char *hint = NULL;
	int o;
	optind = 2;
	while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		if (o == 'h') {
			help(stdout);
			return CLI_EXIT_OK;
		} else if (o == OPT_KDF && create) {
			if (!strcmp(optarg, "scrypt"))
				kdf = CN_KDF_SCRYPT;
			else if (!strcmp(optarg, "pbkdf2"))
				kdf = CN_KDF_PBKDF2;
			else if (!strcmp(optarg, "none"))
				kdf = CN_KDF_NONE;
			else
				return cli_usage_error(c.cmd, "--kdf is scrypt, pbkdf2 or none");
		} else if (o == OPT_HINT && create) {
			hint = optarg;
		} else {
			return cli_usage_error(c.cmd, "unknown option");
		}
	}
	if (argc - optind > 1)
		return cli_usage_error(c.cmd, "give at most one PATH");
	char path[4096];
	if (optind < argc)
		snprintf(path, sizeof(path), "%s", argv[optind]);
	else
		default_path(path, sizeof(path));
	if (!create) {
		c.keyfile = path;
		struct cn_crypt_config *crypt;
		int e = cli_load_key(&c, &crypt);
		if (e)
			return e;
		uint8_t fp[32];
		char text[CN_FINGERPRINT_TEXT_SIZE];
		cn_crypt_fingerprint(crypt, fp);
		cn_fingerprint_format(fp, 0, text);
		cn_crypt_config_free(crypt);
		printf("%s\n", text);
		return CLI_EXIT_OK;
	}
	char pw[1024] = "";
	int r = 0;
	if (kdf != CN_KDF_NONE)
		r = get_new_password(pw, sizeof(pw));
	struct cn_buf json = {0};
	if (r == 0)
		r = cn_keyfile_create(NULL, kdf, pw, strlen(pw), hint, (int64_t)time(NULL), &json, NULL);
	explicit_bzero(pw, sizeof(pw));
	char dir[4096];
	snprintf(dir, sizeof(dir), "%s", path);
	char *slash = strrchr(dir, '/');
	if (r == 0 && slash && slash != dir) {
		*slash = 0;
		r = cn_mkdir_p(dir, 0700);
	}
	if (r == 0)
		r = cn_keyfile_save(path, json.data, json.len, 0);
	cn_buf_free(&json);
	if (r < 0)
		return cli_fail(&c, r, path);
	printf("created key %s; keep a copy in a safe place\n", path);
	return CLI_EXIT_OK;
}

const struct cli_command cli_cmd_key = {
	.name = "key",
	.summary = "create an encryption key, show its fingerprint",
	.run = cmd_key,
};
