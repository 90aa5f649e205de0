/* Prune selection: the cases of upstream tests/prune.rs (proxmox-backup
 * 3.2.4) as a table, plus unfinished snapshots, ISO week years and the
 * group-level application with dry-run and protection. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <time.h>

#include "common/cn_error.h"
#include "common/cn_snapshot.h"
#include "store/cn_datastore.h"
#include "store/cn_prune.h"

#define MAXN 16

struct prune_case {
	const char *name;
	/* snapshot times; a leading '!' = protected, '~' = unfinished */
	const char *list[MAXN];
	struct cn_prune_keep keep;
	int return_kept; /* expect lists the kept ones (else the removed ones) */
	const char *expect[MAXN]; /* oldest first, as upstream's reversed list */
};

#define L_SIMPLE "2019-12-02T11:59:15Z", "2019-12-03T11:59:15Z", "2019-12-04T11:59:15Z", \
		 "2019-12-04T12:59:15Z"
#define L_SIMPLE2 "2018-11-15T11:59:15Z", "2019-11-15T11:59:15Z", "2019-11-21T11:59:15Z", \
		  "2019-11-22T11:59:15Z", "2019-11-29T11:59:15Z", "2019-12-01T11:59:15Z", \
		  "2019-12-02T11:59:15Z", "2019-12-03T11:59:15Z", "2019-12-04T11:59:15Z"
#define L_HOURLY "2019-11-15T09:39:15Z", "2019-11-15T10:49:15Z", "2019-11-15T10:59:15Z", \
		 "2019-11-15T11:39:15Z", "2019-11-15T11:49:15Z", "2019-11-15T11:59:15Z"
#define L_PROT "!2019-11-15T09:39:15Z", "2019-11-15T10:39:15Z", "2019-11-15T10:49:15Z", \
	       "!2019-11-15T10:59:15Z"

static const struct prune_case cases[] = {
	/* test_prune_protected */
	{"protected last1", {L_PROT}, {.last = 1}, 0, {"2019-11-15T10:39:15Z"}},
	{"protected hourly1", {L_PROT}, {.hourly = 1}, 0, {"2019-11-15T10:39:15Z"}},
	/* test_prune_hourly */
	{"hourly3", {L_HOURLY}, {.hourly = 3}, 0,
	 {"2019-11-15T10:49:15Z", "2019-11-15T11:39:15Z", "2019-11-15T11:49:15Z"}},
	{"hourly2 kept", {L_HOURLY}, {.hourly = 2}, 1,
	 {"2019-11-15T10:59:15Z", "2019-11-15T11:59:15Z"}},
	/* test_prune_simple2 */
	{"daily1 kept", {L_SIMPLE2}, {.daily = 1}, 1, {"2019-12-04T11:59:15Z"}},
	{"last1 daily1 kept", {L_SIMPLE2}, {.last = 1, .daily = 1}, 1,
	 {"2019-12-03T11:59:15Z", "2019-12-04T11:59:15Z"}},
	{"daily1 weekly1 kept", {L_SIMPLE2}, {.daily = 1, .weekly = 1}, 1,
	 {"2019-12-01T11:59:15Z", "2019-12-04T11:59:15Z"}},
	{"daily weekly monthly kept", {L_SIMPLE2}, {.daily = 1, .weekly = 1, .monthly = 1}, 1,
	 {"2019-11-22T11:59:15Z", "2019-12-01T11:59:15Z", "2019-12-04T11:59:15Z"}},
	{"monthly1 yearly1 kept", {L_SIMPLE2}, {.monthly = 1, .yearly = 1}, 1,
	 {"2018-11-15T11:59:15Z", "2019-12-04T11:59:15Z"}},
	/* test_prune_simple */
	{"last4", {L_SIMPLE}, {.last = 4}, 0, {NULL}},
	{"last3", {L_SIMPLE}, {.last = 3}, 0, {"2019-12-02T11:59:15Z"}},
	{"last2", {L_SIMPLE}, {.last = 2}, 0, {"2019-12-02T11:59:15Z", "2019-12-03T11:59:15Z"}},
	{"last1", {L_SIMPLE}, {.last = 1}, 0,
	 {"2019-12-02T11:59:15Z", "2019-12-03T11:59:15Z", "2019-12-04T11:59:15Z"}},
	{"last0", {L_SIMPLE}, {.last = 0}, 0,
	 {"2019-12-02T11:59:15Z", "2019-12-03T11:59:15Z", "2019-12-04T11:59:15Z",
	  "2019-12-04T12:59:15Z"}},
	{"last2 daily2", {L_SIMPLE}, {.last = 2, .daily = 2}, 0, {NULL}},
	{"daily3", {L_SIMPLE}, {.daily = 3}, 0, {"2019-12-04T11:59:15Z"}},
	{"daily2", {L_SIMPLE}, {.daily = 2}, 0, {"2019-12-02T11:59:15Z", "2019-12-04T11:59:15Z"}},
	{"weekly5", {L_SIMPLE}, {.weekly = 5}, 0,
	 {"2019-12-02T11:59:15Z", "2019-12-03T11:59:15Z", "2019-12-04T11:59:15Z"}},
	{"daily1 weekly5", {L_SIMPLE}, {.daily = 1, .weekly = 5}, 0,
	 {"2019-12-02T11:59:15Z", "2019-12-03T11:59:15Z", "2019-12-04T11:59:15Z"}},
	{"monthly6", {L_SIMPLE}, {.monthly = 6}, 0,
	 {"2019-12-02T11:59:15Z", "2019-12-03T11:59:15Z", "2019-12-04T11:59:15Z"}},
	{"yearly7", {L_SIMPLE}, {.yearly = 7}, 0,
	 {"2019-12-02T11:59:15Z", "2019-12-03T11:59:15Z", "2019-12-04T11:59:15Z"}},
	{"weekly monthly yearly", {L_SIMPLE}, {.weekly = 5, .monthly = 6, .yearly = 7}, 0,
	 {"2019-12-02T11:59:15Z", "2019-12-03T11:59:15Z", "2019-12-04T11:59:15Z"}},
	/* Unfinished snapshots (remove_incomplete_snapshots): the newest one
	 * is kept only when no finished snapshot is newer. */
	{"partial newest kept", {"2019-12-02T11:59:15Z", "~2019-12-03T11:59:15Z", "~2019-12-04T11:59:15Z"},
	 {.last = 1}, 1, {"2019-12-02T11:59:15Z", "2019-12-04T11:59:15Z"}},
	{"partial older removed", {"~2019-12-02T11:59:15Z", "2019-12-03T11:59:15Z"},
	 {.last = 5}, 0, {"2019-12-02T11:59:15Z"}},
	/* ISO week year: 2020-12-31 (Thu) and 2021-01-01 (Fri) are both in
	 * week 2020/53, so keep-weekly=2 keeps 2021-01-01 and 2020-12-27 (week 52). */
	{"iso week year", {"2020-12-27T10:00:00Z", "2020-12-31T10:00:00Z", "2021-01-01T10:00:00Z"},
	 {.weekly = 2}, 1, {"2020-12-27T10:00:00Z", "2021-01-01T10:00:00Z"}},
	/* yearly counts calendar years, not ISO years */
	{"yearly across new year", {"2020-12-31T10:00:00Z", "2021-01-01T10:00:00Z"},
	 {.yearly = 2}, 1, {"2020-12-31T10:00:00Z", "2021-01-01T10:00:00Z"}},
};

START_TEST(test_prune_table)
{
	const struct prune_case *c = &cases[_i];
	struct cn_prune_item items[MAXN];
	enum cn_prune_mark marks[MAXN];
	const char *names[MAXN];
	size_t n = 0;
	for (size_t k = 0; k < MAXN && c->list[k]; k++)
		n++;
	/* Feed them newest first (the table is oldest first): selection must
	 * not depend on the order. */
	for (size_t k = 0; k < n; k++) {
		const char *s = c->list[n - 1 - k];
		names[k] = s;
		items[k].protected_ = s[0] == '!';
		items[k].finished = s[0] != '~';
		ck_assert_int_eq(cn_snapshot_parse_time(s + (s[0] == '!' || s[0] == '~'), &items[k].time), 0);
	}
	ck_assert_int_eq(cn_prune_select(items, n, &c->keep, marks), 0);
	/* collect the selected ones oldest first */
	const char *got[MAXN];
	size_t ng = 0;
	for (int64_t last = INT64_MIN;;) {
		size_t best = n;
		for (size_t k = 0; k < n; k++) {
			int kept = marks[k] != CN_PRUNE_REMOVE;
			if (kept == c->return_kept && items[k].time > last &&
			    (best == n || items[k].time < items[best].time))
				best = k;
		}
		if (best == n)
			break;
		last = items[best].time;
		const char *s = names[best];
		got[ng++] = s + (s[0] == '!' || s[0] == '~');
	}
	size_t ne = 0;
	while (ne < MAXN && c->expect[ne])
		ne++;
	if (ng != ne)
		ck_abort_msg("case '%s': %zu selected, expected %zu", c->name, ng, ne);
	for (size_t k = 0; k < ne; k++)
		ck_assert_msg(!strcmp(got[k], c->expect[k]), "case '%s': #%zu is %s, expected %s",
			      c->name, k, got[k], c->expect[k]);
}
END_TEST

START_TEST(test_prune_marks)
{
	struct cn_prune_item items[3] = {
		{.time = 1000, .finished = 1, .protected_ = 1},
		{.time = 2000, .finished = 1},
		{.time = 3000, .finished = 0},
	};
	enum cn_prune_mark m[3];
	struct cn_prune_keep keep = {.last = 1};
	ck_assert_int_eq(cn_prune_select(items, 3, &keep, m), 0);
	ck_assert_int_eq(m[0], CN_PRUNE_PROTECTED);
	ck_assert_int_eq(m[1], CN_PRUNE_KEEP);
	ck_assert_int_eq(m[2], CN_PRUNE_KEEP_PARTIAL);
	ck_assert_str_eq(cn_prune_mark_name(m[2]), "keep-partial");
	ck_assert_int_eq(cn_prune_select(items, 0, &keep, m), 0);
}
END_TEST

/* Group-level prune on a real datastore: dry run changes nothing, then
 * the real run removes exactly the marked ones; protected survive; no
 * options keeps everything (as upstream's API). */
START_TEST(test_prune_group)
{
	char dir[] = "/tmp/cn_prune_XXXXXX";
	ck_assert_ptr_nonnull(mkdtemp(dir));
	/* a tmpfs when permitted: the 65536 chunk dirs are made much faster */
	int mounted = mount("tmpfs", dir, "tmpfs", 0, "size=64m") == 0;
	char root[64];
	snprintf(root, sizeof(root), "%s/ds", dir);
	struct cn_datastore *ds;
	struct cn_datastore_opts o;
	cn_datastore_opts_init(&o);
	o.sync_level = CN_SYNC_NONE;
	ck_assert_int_eq(cn_datastore_open(root, 1, &o, &ds), 0);
	struct cn_snapshot_id g = {.ns = "", .type = "host", .id = "box"};
	for (int i = 0; i < 5; i++) {
		struct cn_snapshot_id s = g;
		char path[4096];
		s.time = 1700000000 + i * 86400;
		/* snapshots made directly on disk: prune only needs the layout */
		snprintf(path, sizeof(path), "%s/host/box/", root);
		ck_assert_int_eq(cn_mkdir_p(path, 0755), 0);
		char t[32];
		cn_snapshot_format_time(s.time, t, sizeof(t));
		snprintf(path, sizeof(path), "%s/host/box/%s", root, t);
		ck_assert_int_eq(cn_mkdir_p(path, 0755), 0);
		snprintf(path, sizeof(path), "%s/host/box/%s/index.json.blob", root, t);
		ck_assert_int_eq(cn_write_file_atomic(path, "x", 1, 0644, 0), 0);
		if (i == 0)
			ck_assert_int_eq(cn_datastore_set_protected(ds, &s, 1), 0);
	}
	struct cn_prune_entry *res;
	size_t n;
	struct cn_prune_keep none = {0}, keep = {.last = 2};
	ck_assert_int_eq(cn_datastore_prune_group(ds, &g, &none, 0, &res, &n), 0);
	ck_assert_uint_eq(n, 5);
	free(res);
	ck_assert_int_eq(cn_datastore_prune_group(ds, &g, &keep, 1, &res, &n), 2);
	ck_assert_int_eq(res[0].mark, CN_PRUNE_PROTECTED);
	ck_assert_int_eq(res[1].mark, CN_PRUNE_REMOVE);
	ck_assert_int_eq(res[1].removed, 0);
	free(res);
	struct cn_ds_snapshot_info *list;
	ck_assert_int_eq(cn_datastore_list_snapshots(ds, &g, 0, &list, &n), 0);
	ck_assert_uint_eq(n, 5);
	free(list);
	ck_assert_int_eq(cn_datastore_prune_group(ds, &g, &keep, 0, &res, &n), 2);
	ck_assert_int_eq(res[2].removed, 1);
	free(res);
	ck_assert_int_eq(cn_datastore_list_snapshots(ds, &g, 0, &list, &n), 0);
	ck_assert_uint_eq(n, 3);
	ck_assert(list[0].protected_);
	ck_assert_int_eq(list[1].id.time, 1700000000 + 3 * 86400);
	ck_assert_int_eq(list[2].id.time, 1700000000 + 4 * 86400);
	free(list);
	cn_datastore_close(ds);
	if (mounted)
		umount2(dir, MNT_DETACH);
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	ck_assert_int_eq(system(cmd), 0);
}
END_TEST

int main(void)
{
	/* Periods are local time, as upstream's strftime_local: pin it. */
	setenv("TZ", "UTC", 1);
	tzset();
	Suite *s = suite_create("prune");
	TCase *tc = tcase_create("core");
	tcase_set_timeout(tc, 120);
	tcase_add_loop_test(tc, test_prune_table, 0, (int)(sizeof(cases) / sizeof(cases[0])));
	tcase_add_test(tc, test_prune_marks);
	tcase_add_test(tc, test_prune_group);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
