/* cn_s3_config — where an S3 store is and how to sign for it: the
 * configuration of a cn_s3 client, filled from an s3:// URL, the config
 * file of scheduled runs and the environment as the AWS tools read it.
 * Plain data; no request is made here.
 */
#ifndef CN_S3_CONFIG_H
#define CN_S3_CONFIG_H

enum cn_s3_addressing {
	CN_S3_ADDR_AUTO,    /* path-style with an endpoint, virtual-hosted without */
	CN_S3_ADDR_PATH,    /* http://host/bucket/key */
	CN_S3_ADDR_VIRTUAL, /* http://bucket.host/key */
};

struct cn_s3_config {
	char endpoint[512];        /* "http://127.0.0.1:7480"; "" = AWS for region */
	char region[64];           /* "" = us-east-1 */
	char bucket[256];
	char prefix[512];          /* no leading or trailing '/'; "" = bucket root */
	enum cn_s3_addressing addressing;
	char access_key[256];
	char secret_key[256];      /* never printed */
	char session_token[2048];  /* AWS_SESSION_TOKEN, optional */
	char ca_bundle[1024];      /* PEM file; "" = system default */
	char credentials_file[1024]; /* AWS format; "" = env or ~/.aws/credentials */
	char profile[128];         /* section; "" = AWS_PROFILE or "default" */
	long connect_timeout;      /* seconds; 0 = 10 */
	long low_speed_time;       /* seconds under 1 byte/s before a call fails; 0 = 30 */
	int max_attempts;          /* per request; 0 = 5 */
};

/* Splits "s3://BUCKET[/PREFIX]" into cfg->bucket and cfg->prefix (other
 * fields untouched). 0, or -EINVAL with a message. */
int cn_s3_config_parse_url(const char *url, struct cn_s3_config *cfg);

/* Fills what cfg leaves empty from the environment as the AWS tools do:
 * AWS_ENDPOINT_URL, AWS_REGION / AWS_DEFAULT_REGION (else us-east-1),
 * AWS_CA_BUNDLE, and the credentials: AWS_ACCESS_KEY_ID +
 * AWS_SECRET_ACCESS_KEY (+ AWS_SESSION_TOKEN), else the credentials file
 * (cfg->credentials_file, AWS_SHARED_CREDENTIALS_FILE or
 * ~/.aws/credentials), section cfg->profile, AWS_PROFILE or "default".
 * 0, or -EINVAL (no credentials, unreadable file, bad endpoint) with a
 * message. */
int cn_s3_config_resolve(struct cn_s3_config *cfg);

#endif
