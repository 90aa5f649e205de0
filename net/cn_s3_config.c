/* Where an S3 store is and how to sign for it: s3:// URLs, the AWS
 * environment variables and credentials files. */
#include "net/cn_s3_config.h"

#include <errno.h>
#include <ini.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/cn_error.h"

int cn_s3_config_parse_url(const char *url, struct cn_s3_config *cfg)
{
	if (strncmp(url, "s3://", 5) != 0)
		return cn_error_set(-EINVAL, "not an s3:// URL: %s", url);
	const char *b = url + 5;
	size_t bl = strcspn(b, "/");
	if (bl == 0 || bl >= sizeof(cfg->bucket))
		return cn_error_set(-EINVAL, "%s: bucket name missing or too long", url);
	for (size_t i = 0; i < bl; i++)
		if (!((b[i] >= 'a' && b[i] <= 'z') || (b[i] >= '0' && b[i] <= '9') || b[i] == '-' ||
		      b[i] == '.' || b[i] == '_' || (b[i] >= 'A' && b[i] <= 'Z')))
			return cn_error_set(-EINVAL, "%s: invalid bucket name", url);
	memcpy(cfg->bucket, b, bl);
	cfg->bucket[bl] = '\0';
	const char *p = b + bl;
	while (*p == '/')
		p++;
	size_t pl = strlen(p);
	while (pl > 0 && p[pl - 1] == '/')
		pl--;
	if (pl >= sizeof(cfg->prefix))
		return cn_error_set(-EINVAL, "%s: prefix too long", url);
	memcpy(cfg->prefix, p, pl);
	cfg->prefix[pl] = '\0';
	if (strstr(cfg->prefix, "//") || strstr(cfg->prefix, "..") )
		return cn_error_set(-EINVAL, "%s: prefix may not contain '//' or '..'", url);
	return 0;
}

static void copy_env(char *dst, size_t n, const char *name)
{
	const char *v = getenv(name);
	if (!dst[0] && v && *v)
		snprintf(dst, n, "%s", v);
}

struct cred_ctx {
	const char *profile;
	struct cn_s3_config *cfg;
	int found;
};

static int cred_line(void *user, const char *section, const char *name, const char *value)
{
	struct cred_ctx *c = user;
	if (strcmp(section, c->profile) != 0)
		return 1;
	c->found = 1;
	if (strcmp(name, "aws_access_key_id") == 0)
		snprintf(c->cfg->access_key, sizeof(c->cfg->access_key), "%s", value);
	else if (strcmp(name, "aws_secret_access_key") == 0)
		snprintf(c->cfg->secret_key, sizeof(c->cfg->secret_key), "%s", value);
	else if (strcmp(name, "aws_session_token") == 0)
		snprintf(c->cfg->session_token, sizeof(c->cfg->session_token), "%s", value);
	return 1;
}

static int load_credentials_file(struct cn_s3_config *cfg)
{
	char path[1100];
	const char *f = cfg->credentials_file[0] ? cfg->credentials_file
						  : getenv("AWS_SHARED_CREDENTIALS_FILE");
	int explicit = f && *f;
	if (explicit) {
		snprintf(path, sizeof(path), "%s", f);
	} else {
		const char *home = getenv("HOME");
		if (!home || !*home)
			return 0;
		snprintf(path, sizeof(path), "%s/.aws/credentials", home);
	}
	const char *profile = cfg->profile[0] ? cfg->profile : getenv("AWS_PROFILE");
	if (!profile || !*profile)
		profile = "default";
	FILE *fp = fopen(path, "r");
	if (!fp) {
		if (!explicit && errno == ENOENT)
			return 0;
		return cn_error_sys(-errno, "S3 credentials file %s", path);
	}
	struct cred_ctx c = {profile, cfg, 0};
	int line = ini_parse_file(fp, cred_line, &c);
	fclose(fp);
	if (line != 0)
		return cn_error_set(-EINVAL, "S3 credentials file %s: syntax error on line %d", path,
				    line);
	if (!c.found && explicit)
		return cn_error_set(-EINVAL, "S3 credentials file %s has no profile [%s]", path,
				    profile);
	return 0;
}

int cn_s3_config_resolve(struct cn_s3_config *cfg)
{
	copy_env(cfg->endpoint, sizeof(cfg->endpoint), "AWS_ENDPOINT_URL_S3");
	copy_env(cfg->endpoint, sizeof(cfg->endpoint), "AWS_ENDPOINT_URL");
	copy_env(cfg->region, sizeof(cfg->region), "AWS_REGION");
	copy_env(cfg->region, sizeof(cfg->region), "AWS_DEFAULT_REGION");
	if (!cfg->region[0])
		snprintf(cfg->region, sizeof(cfg->region), "us-east-1");
	copy_env(cfg->ca_bundle, sizeof(cfg->ca_bundle), "AWS_CA_BUNDLE");
	if (cfg->endpoint[0] && strncmp(cfg->endpoint, "http://", 7) != 0 &&
	    strncmp(cfg->endpoint, "https://", 8) != 0)
		return cn_error_set(-EINVAL, "S3 endpoint %s: must begin with http:// or https://",
				    cfg->endpoint);
	size_t el = strlen(cfg->endpoint);
	while (el > 0 && cfg->endpoint[el - 1] == '/')
		cfg->endpoint[--el] = '\0';
	if (!cfg->access_key[0] && !cfg->credentials_file[0]) {
		copy_env(cfg->access_key, sizeof(cfg->access_key), "AWS_ACCESS_KEY_ID");
		copy_env(cfg->secret_key, sizeof(cfg->secret_key), "AWS_SECRET_ACCESS_KEY");
		copy_env(cfg->session_token, sizeof(cfg->session_token), "AWS_SESSION_TOKEN");
	}
	if (!cfg->access_key[0] || !cfg->secret_key[0]) {
		int r = load_credentials_file(cfg);
		if (r < 0)
			return r;
	}
	if (!cfg->access_key[0] || !cfg->secret_key[0])
		return cn_error_set(-EINVAL,
				    "no S3 credentials: set AWS_ACCESS_KEY_ID and "
				    "AWS_SECRET_ACCESS_KEY, or a credentials file "
				    "(AWS_SHARED_CREDENTIALS_FILE, ~/.aws/credentials)");
	if (strchr(cfg->access_key, ':'))
		return cn_error_set(-EINVAL, "S3 access key id %s contains ':'", cfg->access_key);
	return 0;
}
