/* Tests of engine/base.h: time, size, duration, host:port and address parsing, the bounds-
 * checked cursor, the JSON string escaper, the warning rate limiter and the netsaw.conf
 * table (defaults, file loading with file:line errors, listen replacement, reload diff). */
#include "engine/base.h"

#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Criterion's eq(str, …) trips -Wwrite-strings / -Wcast-qual here; compare with strcmp and
 * print both sides ourselves. */
#define ASSERT_STR(got, want)                                                                      \
    do {                                                                                           \
        const char *got_ = (got), *want_ = (want);                                                 \
        cr_assert(eq(int, strcmp(got_, want_), 0), "got \"%s\", expected \"%s\"", got_, want_);    \
    } while (0)
#define ASSERT_HAS(text, part)                                                                     \
    do {                                                                                           \
        const char *text_ = (text), *part_ = (part);                                               \
        cr_assert(strstr(text_, part_) != NULL, "\"%s\" does not contain \"%s\"", text_, part_);   \
    } while (0)

/* ---------------------------------------------------------------------------------------------
 * ns_time_parse. Expected values worked out by hand: 2024-01-01T00:00:00Z is 1704067200 s
 * (19723 days after 1970-01-01); 2024-01-02T03:04:05Z is that + 86400 + 11045. */

static int64_t time_ok(const char *s)
{
    int64_t ms = INT64_MIN;
    int rc = ns_time_parse(s, &ms);
    cr_assert(eq(int, rc, 0), "ns_time_parse(\"%s\") = %d", s, rc);
    return ms;
}

static int time_rc(const char *s)
{
    int64_t ms = 0;
    return ns_time_parse(s, &ms);
}

Test(base_time, epoch_seconds_and_fractions)
{
    cr_assert(eq(i64, time_ok("0"), 0));
    cr_assert(eq(i64, time_ok("1704164645"), 1704164645000LL));
    cr_assert(eq(i64, time_ok("1704164645.25"), 1704164645250LL));
    cr_assert(eq(i64, time_ok("1704164645.123"), 1704164645123LL));
    cr_assert(eq(i64, time_ok("1.5"), 1500));
}

Test(base_time, rfc3339_utc)
{
    cr_assert(eq(i64, time_ok("2024-01-02T03:04:05Z"), 1704164645000LL));
    cr_assert(eq(i64, time_ok("2024-01-02t03:04:05z"), 1704164645000LL));
    cr_assert(eq(i64, time_ok("2024-01-02 03:04:05Z"), 1704164645000LL));
    cr_assert(eq(i64, time_ok("1970-01-01T00:00:00Z"), 0));
    /* 2024-01-01 + 31 (January) + 28 days = Feb 29 of a leap year */
    cr_assert(eq(i64, time_ok("2024-02-29T00:00:00Z"), 1709164800000LL));
    /* 2000-01-01 is 946684800; + 31 + 29 days (2000 is a leap year) */
    cr_assert(eq(i64, time_ok("2000-03-01T00:00:00Z"), 951868800000LL));
}

Test(base_time, rfc3339_offsets)
{
    /* +02:00: local 03:04:05 is 01:04:05 UTC */
    cr_assert(eq(i64, time_ok("2024-01-02T03:04:05+02:00"), 1704164645000LL - 7200000));
    /* -05:30: local 03:04:05 is 08:34:05 UTC */
    cr_assert(eq(i64, time_ok("2024-01-02T03:04:05-05:30"), 1704164645000LL + 19800000));
    /* crossing midnight backwards into the previous year */
    cr_assert(eq(i64, time_ok("2024-01-01T00:30:00+01:00"), 1704067200000LL - 1800000));
    cr_assert(eq(i64, time_ok("2024-01-02T03:04:05+00:00"), 1704164645000LL));
}

Test(base_time, rfc3339_fractional_seconds)
{
    cr_assert(eq(i64, time_ok("2024-01-02T03:04:05.123Z"), 1704164645123LL));
    cr_assert(eq(i64, time_ok("2024-01-02T03:04:05.5Z"), 1704164645500LL));
    cr_assert(eq(i64, time_ok("2024-01-02T03:04:05.05Z"), 1704164645050LL));
    /* digits past milliseconds are dropped, not rounded */
    cr_assert(eq(i64, time_ok("2024-01-02T03:04:05.123999Z"), 1704164645123LL));
    cr_assert(eq(i64, time_ok("2024-01-02T03:04:05.5+02:00"), 1704164645500LL - 7200000));
    /* before the epoch the fraction still moves forward in time */
    cr_assert(eq(i64, time_ok("1969-12-31T23:59:59.5Z"), -500));
}

Test(base_time, errors)
{
    cr_assert(eq(int, time_rc(""), NS_E_PARSE));
    cr_assert(eq(int, time_rc("garbage"), NS_E_PARSE));
    cr_assert(eq(int, time_rc("2024-01-02T03:04:05"), NS_E_PARSE)); /* no offset */
    cr_assert(eq(int, time_rc("2024-01-02T03:04:05+0200"), NS_E_PARSE));
    cr_assert(eq(int, time_rc("2024-01-02T03:04:05.Z"), NS_E_PARSE));
    cr_assert(eq(int, time_rc("2024-01-02T03:04:05Zjunk"), NS_E_PARSE));
    cr_assert(eq(int, time_rc("2024-1-02T03:04:05Z"), NS_E_PARSE));
    cr_assert(eq(int, time_rc("2024-01-02"), NS_E_PARSE));
    cr_assert(eq(int, time_rc("2024-13-02T03:04:05Z"), NS_E_RANGE));
    cr_assert(eq(int, time_rc("2024-00-02T03:04:05Z"), NS_E_RANGE));
    cr_assert(eq(int, time_rc("2024-01-32T03:04:05Z"), NS_E_RANGE));
    cr_assert(eq(int, time_rc("2024-01-02T24:04:05Z"), NS_E_RANGE));
    cr_assert(eq(int, time_rc("2024-01-02T03:60:05Z"), NS_E_RANGE));
}

Test(base_time, failed_parse_leaves_output_alone)
{
    int64_t ms = 42;
    cr_assert(lt(int, ns_time_parse("2024-13-02T03:04:05Z", &ms), 0));
    cr_assert(eq(i64, ms, 42));
}

/* RFC 3339 §5.7 limits the day by month and year: "2024-02-30" must not become March 1st. */
Test(base_time, day_beyond_end_of_month_is_rejected)
{
    cr_assert(lt(int, time_rc("2024-02-30T00:00:00Z"), 0));
    cr_assert(lt(int, time_rc("2023-02-29T00:00:00Z"), 0)); /* 2023 is not a leap year */
    cr_assert(lt(int, time_rc("2024-04-31T00:00:00Z"), 0));
    cr_assert(lt(int, time_rc("1900-02-29T00:00:00Z"), 0)); /* century, not a leap year */
    cr_assert(eq(i64, time_ok("2000-02-29T00:00:00Z"), 951782400000LL)); /* 400th: leap */
    cr_assert(eq(i64, time_ok("2024-04-30T23:59:59Z"), 1714521599000LL));
}

/* ---------------------------------------------------------------------------------------------
 * ns_size_parse and ns_duration_parse */

static uint64_t size_ok(const char *s)
{
    uint64_t v = 0;
    int rc = ns_size_parse(s, &v);
    cr_assert(eq(int, rc, 0), "ns_size_parse(\"%s\") = %d", s, rc);
    return v;
}

static int size_rc(const char *s)
{
    uint64_t v = 0;
    return ns_size_parse(s, &v);
}

Test(base_size, suffixes_are_powers_of_1024)
{
    cr_assert(eq(u64, size_ok("0"), 0));
    cr_assert(eq(u64, size_ok("12345"), 12345));
    cr_assert(eq(u64, size_ok("1K"), 1024));
    cr_assert(eq(u64, size_ok("1KB"), 1024));
    cr_assert(eq(u64, size_ok("1kb"), 1024));
    cr_assert(eq(u64, size_ok("500M"), 500ULL << 20));
    cr_assert(eq(u64, size_ok("10G"), 10ULL << 30));
    cr_assert(eq(u64, size_ok("10g"), 10ULL << 30));
    cr_assert(eq(u64, size_ok("2T"), 2ULL << 40));
    /* the largest value that still fits */
    cr_assert(eq(u64, size_ok("17179869183G"), 17179869183ULL << 30));
}

Test(base_size, bad_suffix_and_overflow)
{
    cr_assert(eq(int, size_rc(""), NS_E_PARSE));
    cr_assert(eq(int, size_rc("G"), NS_E_PARSE));
    cr_assert(eq(int, size_rc("10X"), NS_E_PARSE));
    cr_assert(eq(int, size_rc("10GBB"), NS_E_PARSE));
    cr_assert(eq(int, size_rc("10 G"), NS_E_PARSE));
    cr_assert(eq(int, size_rc("-1"), NS_E_PARSE));
    cr_assert(eq(int, size_rc("lots"), NS_E_PARSE));
    cr_assert(eq(int, size_rc("17179869184G"), NS_E_RANGE)); /* 2^34 G = 2^64 */
    cr_assert(eq(int, size_rc("16777216T"), NS_E_RANGE));    /* 2^24 T = 2^64 */
    cr_assert(eq(int, size_rc("99999999999999999999"), NS_E_RANGE));
}

static uint64_t dur_ok(const char *s)
{
    uint64_t v = 12345;
    int rc = ns_duration_parse(s, &v);
    cr_assert(eq(int, rc, 0), "ns_duration_parse(\"%s\") = %d", s, rc);
    return v;
}

static int dur_rc(const char *s)
{
    uint64_t v = 0;
    return ns_duration_parse(s, &v);
}

Test(base_duration, units)
{
    cr_assert(eq(u64, dur_ok("0"), 0));
    cr_assert(eq(u64, dur_ok("30"), 30));
    cr_assert(eq(u64, dur_ok("90s"), 90));
    cr_assert(eq(u64, dur_ok("15m"), 900));
    cr_assert(eq(u64, dur_ok("2h"), 7200));
    cr_assert(eq(u64, dur_ok("7d"), 604800));
    cr_assert(eq(u64, dur_ok("1w"), 604800));
}

Test(base_duration, errors)
{
    cr_assert(eq(int, dur_rc(""), NS_E_PARSE));
    cr_assert(eq(int, dur_rc("m"), NS_E_PARSE));
    cr_assert(eq(int, dur_rc("5x"), NS_E_PARSE));
    cr_assert(eq(int, dur_rc("5mm"), NS_E_PARSE));
    cr_assert(eq(int, dur_rc("-5"), NS_E_PARSE));
    cr_assert(eq(int, dur_rc("99999999999999999999"), NS_E_RANGE));
    cr_assert(eq(int, dur_rc("30500568904944w"), NS_E_RANGE)); /* > 2^64 seconds */
}

/* ---------------------------------------------------------------------------------------------
 * ns_hostport_parse, ns_addr_parse / ns_addr_fmt */

Test(base_hostport, v4_v6_and_port_only)
{
    char host[64];
    uint16_t port = 0;
    cr_assert(eq(int, ns_hostport_parse("192.0.2.7:2055", host, sizeof host, &port), 0));
    ASSERT_STR(host, "192.0.2.7");
    cr_assert(eq(u16, port, 2055));
    cr_assert(eq(int, ns_hostport_parse("[2001:db8::1]:65535", host, sizeof host, &port), 0));
    ASSERT_STR(host, "2001:db8::1");
    cr_assert(eq(u16, port, 65535));
    cr_assert(eq(int, ns_hostport_parse("[::]:0", host, sizeof host, &port), 0));
    ASSERT_STR(host, "::");
    cr_assert(eq(u16, port, 0));
    cr_assert(eq(int, ns_hostport_parse(":8080", host, sizeof host, &port), 0));
    ASSERT_STR(host, "");
    cr_assert(eq(u16, port, 8080));
}

Test(base_hostport, rejects)
{
    char host[64];
    uint16_t port = 7;
    cr_assert(eq(int, ns_hostport_parse("2001:db8::1:80", host, sizeof host, &port), NS_E_PARSE));
    cr_assert(eq(int, ns_hostport_parse("::1:80", host, sizeof host, &port), NS_E_PARSE));
    cr_assert(eq(int, ns_hostport_parse("1.2.3.4:65536", host, sizeof host, &port), NS_E_RANGE));
    cr_assert(eq(int, ns_hostport_parse("1.2.3.4", host, sizeof host, &port), NS_E_PARSE));
    cr_assert(eq(int, ns_hostport_parse("1.2.3.4:", host, sizeof host, &port), NS_E_PARSE));
    cr_assert(eq(int, ns_hostport_parse("1.2.3.4:+80", host, sizeof host, &port), NS_E_PARSE));
    cr_assert(eq(int, ns_hostport_parse("1.2.3.4:80x", host, sizeof host, &port), NS_E_PARSE));
    cr_assert(eq(int, ns_hostport_parse("[::1]", host, sizeof host, &port), NS_E_PARSE));
    cr_assert(eq(int, ns_hostport_parse("[::1]80", host, sizeof host, &port), NS_E_PARSE));
    cr_assert(eq(int, ns_hostport_parse("example.com:80", host, sizeof host, &port), NS_E_PARSE));
    cr_assert(eq(int, ns_hostport_parse("1.2.3.400:80", host, sizeof host, &port), NS_E_PARSE));
    cr_assert(eq(int, ns_hostport_parse("192.0.2.7:2055", host, 4, &port), NS_E_RANGE));
    cr_assert(eq(u16, port, 7)); /* never written on failure */
}

static void addr_round_trip(const char *in, const char *want)
{
    ns_addr a;
    char out[64];
    cr_assert(eq(int, ns_addr_parse(in, &a), 0), "ns_addr_parse(\"%s\")", in);
    ASSERT_STR(ns_addr_fmt(&a, out, sizeof out), want);
}

Test(base_addr, v4_is_mapped_and_formats_back)
{
    ns_addr a;
    static const uint8_t want[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 192, 0, 2, 1};
    cr_assert(eq(int, ns_addr_parse("192.0.2.1", &a), 0));
    cr_assert(eq(int, memcmp(a.b, want, 16), 0));
    cr_assert(ns_addr_is_v4(&a));
    ns_addr b;
    ns_addr_from_v4(&b, 0xc0000201u);
    cr_assert(eq(int, memcmp(a.b, b.b, 16), 0));
    addr_round_trip("192.0.2.1", "192.0.2.1");
    addr_round_trip("255.255.255.255", "255.255.255.255");
    addr_round_trip("0.0.0.0", "0.0.0.0");
    addr_round_trip("::ffff:10.1.2.3", "10.1.2.3"); /* the mapped form is IPv4 */
}

Test(base_addr, v6_formats_compressed)
{
    ns_addr a;
    addr_round_trip("2001:0db8:0000:0000:0000:0000:0000:0001", "2001:db8::1");
    addr_round_trip("2001:db8::1", "2001:db8::1");
    addr_round_trip("::", "::");
    addr_round_trip("::1", "::1");
    addr_round_trip("fe80::1:0:0:2", "fe80::1:0:0:2");
    addr_round_trip("2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1");
    cr_assert(eq(int, ns_addr_parse("2001:db8::1", &a), 0));
    cr_assert(not(ns_addr_is_v4(&a)));
    cr_assert(eq(int, ns_addr_parse("1.2.3", &a), NS_E_PARSE));
    cr_assert(eq(int, ns_addr_parse("", &a), NS_E_PARSE));
    cr_assert(eq(int, ns_addr_parse("2001:db8:::1", &a), NS_E_PARSE));
    cr_assert(eq(int, ns_addr_parse("[::1]", &a), NS_E_PARSE));
}

/* ---------------------------------------------------------------------------------------------
 * The cursor */

static const uint8_t cur_bytes[8] = {0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08};

Test(base_cursor, reads_at_the_exact_boundary_succeed)
{
    ns_cur c = ns_cur_make(cur_bytes, 8);
    uint64_t v64;
    cr_assert(ns_cur_u64(&c, &v64));
    cr_assert(eq(u64, v64, 0x0102030405060708ULL));
    cr_assert(eq(sz, c.left, 0));

    c = ns_cur_make(cur_bytes, 8);
    cr_assert(ns_cur_le64(&c, &v64));
    cr_assert(eq(u64, v64, 0x0807060504030201ULL));
    cr_assert(eq(sz, c.left, 0));

    uint32_t v32;
    c = ns_cur_make(cur_bytes + 4, 4);
    cr_assert(ns_cur_u32(&c, &v32));
    cr_assert(eq(u32, v32, 0x05060708u));
    c = ns_cur_make(cur_bytes + 4, 4);
    cr_assert(ns_cur_le32(&c, &v32));
    cr_assert(eq(u32, v32, 0x08070605u));
    cr_assert(eq(sz, c.left, 0));

    uint16_t v16;
    c = ns_cur_make(cur_bytes + 6, 2);
    cr_assert(ns_cur_u16(&c, &v16));
    cr_assert(eq(u16, v16, 0x0708));
    c = ns_cur_make(cur_bytes + 6, 2);
    cr_assert(ns_cur_le16(&c, &v16));
    cr_assert(eq(u16, v16, 0x0807));

    uint8_t v8, raw[3];
    c = ns_cur_make(cur_bytes + 7, 1);
    cr_assert(ns_cur_u8(&c, &v8));
    cr_assert(eq(u8, v8, 0x08));
    c = ns_cur_make(cur_bytes + 5, 3);
    cr_assert(ns_cur_bytes(&c, raw, 3));
    cr_assert(eq(int, memcmp(raw, cur_bytes + 5, 3), 0));
    c = ns_cur_make(cur_bytes, 8);
    cr_assert(ns_cur_skip(&c, 8));
    cr_assert(eq(sz, c.left, 0));
}

/* Each reader, one byte short: fails and the cursor has not moved. */
Test(base_cursor, one_byte_past_fails_and_leaves_the_cursor)
{
    uint64_t v64 = 99;
    uint32_t v32 = 99;
    uint16_t v16 = 99;
    uint8_t v8 = 99, raw[4] = {0};
    ns_cur c;
#define SHORT(len, call)                                                                           \
    do {                                                                                           \
        c = ns_cur_make(cur_bytes, len);                                                           \
        cr_assert(not(call), #call " with %d bytes", (int)(len));                                  \
        cr_assert(eq(sz, (size_t)(c.p - cur_bytes), 0));                                           \
        cr_assert(eq(sz, c.left, len));                                                            \
    } while (0)
    SHORT(7, ns_cur_u64(&c, &v64));
    SHORT(7, ns_cur_le64(&c, &v64));
    SHORT(3, ns_cur_u32(&c, &v32));
    SHORT(3, ns_cur_le32(&c, &v32));
    SHORT(1, ns_cur_u16(&c, &v16));
    SHORT(1, ns_cur_le16(&c, &v16));
    SHORT(0, ns_cur_u8(&c, &v8));
    SHORT(3, ns_cur_bytes(&c, raw, 4));
    SHORT(3, ns_cur_skip(&c, 4));
#undef SHORT
    cr_assert(eq(u64, v64, 99));
    cr_assert(eq(u32, v32, 99));
    cr_assert(eq(u16, v16, 99));
    cr_assert(eq(u8, v8, 99));
}

Test(base_cursor, sub_carves_and_steps_over)
{
    ns_cur c = ns_cur_make(cur_bytes, 8), sub = {0};
    uint8_t v8;
    cr_assert(ns_cur_skip(&c, 1));
    cr_assert(ns_cur_sub(&c, 3, &sub));
    cr_assert(eq(sz, (size_t)(sub.p - cur_bytes), 1));
    cr_assert(eq(sz, sub.left, 3));
    cr_assert(eq(sz, (size_t)(c.p - cur_bytes), 4));
    cr_assert(eq(sz, c.left, 4));
    /* the sub-cursor is bounded by its own length */
    uint32_t v32;
    cr_assert(not(ns_cur_u32(&sub, &v32)));
    cr_assert(ns_cur_u8(&sub, &v8));
    cr_assert(eq(u8, v8, 0x02));
    /* exactly what is left: ok; one more: refused, nothing moves */
    ns_cur c2 = c;
    cr_assert(ns_cur_sub(&c2, 4, &sub));
    cr_assert(eq(sz, c2.left, 0));
    ns_cur untouched = {(const uint8_t *)"x", 1};
    sub = untouched;
    cr_assert(not(ns_cur_sub(&c, 5, &sub)));
    cr_assert(eq(sz, (size_t)(c.p - cur_bytes), 4));
    cr_assert(eq(sz, c.left, 4));
    cr_assert(sub.p == untouched.p);
    cr_assert(ns_cur_sub(&c, 0, &sub));
    cr_assert(eq(sz, sub.left, 0));
    cr_assert(eq(sz, c.left, 4));
}

/* ---------------------------------------------------------------------------------------------
 * ns_buf_json_str */

static void json_is(const char *in, const char *want)
{
    ns_buf b = {0};
    ns_buf_json_str(&b, in);
    cr_assert(not(b.oom));
    ASSERT_STR(b.p, want);
    cr_assert(eq(sz, b.len, strlen(want)));
    ns_buf_free(&b);
}

Test(base_json, escapes_quotes_backslash_and_controls)
{
    json_is("", "\"\"");
    json_is("plain", "\"plain\"");
    json_is("a\"b", "\"a\\\"b\"");
    json_is("a\\b", "\"a\\\\b\"");
    json_is("\x01", "\"\\u0001\"");
    json_is("tab\there\nnl\r", "\"tab\\u0009here\\u000anl\\u000d\"");
    json_is("\x1f", "\"\\u001f\"");
    json_is("\x7f", "\"\x7f\""); /* DEL is allowed in JSON strings */
}

Test(base_json, invalid_utf8_becomes_replacement_char)
{
    json_is("\xff", "\"\\ufffd\"");
    json_is("a\x80z", "\"a\\ufffdz\"");
    json_is("\xc0\xaf", "\"\\ufffd\\ufffd\"");            /* overlong '/' */
    json_is("\xed\xa0\x80", "\"\\ufffd\\ufffd\\ufffd\""); /* a UTF-16 surrogate */
    json_is("\xc3", "\"\\ufffd\"");                       /* cut short at the end */
    json_is("\xe2\x82", "\"\\ufffd\\ufffd\"");
    json_is("\xf4\x90\x80\x80", "\"\\ufffd\\ufffd\\ufffd\\ufffd\""); /* above U+10FFFF */
}

Test(base_json, valid_multibyte_is_kept)
{
    json_is("caf\xc3\xa9", "\"caf\xc3\xa9\"");             /* é */
    json_is("\xe2\x82\xac", "\"\xe2\x82\xac\"");           /* € */
    json_is("\xf0\x9f\x98\x80!", "\"\xf0\x9f\x98\x80!\""); /* U+1F600 */
    json_is("\xf4\x8f\xbf\xbf", "\"\xf4\x8f\xbf\xbf\"");   /* U+10FFFF */
    json_is("\"\xc3\xa9\\", "\"\\\"\xc3\xa9\\\\\"");
}

Test(base_json, appends_to_what_is_there)
{
    ns_buf b = {0};
    ns_buf_printf(&b, "{%s:", "\"k\"");
    ns_buf_json_str(&b, "v");
    ns_buf_puts(&b, "}");
    ASSERT_STR(b.p, "{\"k\":\"v\"}");
    ns_buf_free(&b);
    cr_assert(eq(ptr, b.p, NULL));
}

/* ---------------------------------------------------------------------------------------------
 * ns_ratelimit: 5 pass per 60 s window, the rest are counted and reported by the first
 * message of a later window. */

Test(base_ratelimit, five_pass_then_suppressed_count_is_reported)
{
    ns_ratelimit rl = {0};
    uint32_t sup = 77;
    const int64_t t0 = 1704164645000LL;
    for (int i = 0; i < 5; i++) {
        cr_assert(ns_ratelimit_ok(&rl, t0 + i, &sup), "message %d", i);
        cr_assert(eq(u32, sup, 0));
    }
    for (int i = 0; i < 7; i++) {
        cr_assert(not(ns_ratelimit_ok(&rl, t0 + 100 + i, &sup)), "message %d", 5 + i);
        cr_assert(eq(u32, sup, 0));
    }
    /* still inside the window (starts at t0, 60 s long) */
    cr_assert(not(ns_ratelimit_ok(&rl, t0 + 59999, &sup)));
    /* the next window: the first message carries the 8 held back */
    cr_assert(ns_ratelimit_ok(&rl, t0 + 60000, &sup));
    cr_assert(eq(u32, sup, 8));
    cr_assert(ns_ratelimit_ok(&rl, t0 + 60001, &sup));
    cr_assert(eq(u32, sup, 0));
}

/* ---------------------------------------------------------------------------------------------
 * Configuration */

static char cfg_dir[64];

static void cfg_setup(void)
{
    strcpy(cfg_dir, "/tmp/ns2flows-test-base-XXXXXX");
    cr_assert(not(eq(ptr, mkdtemp(cfg_dir), NULL)));
}

static void cfg_teardown(void)
{
    char path[128];
    snprintf(path, sizeof path, "%s/netsaw.conf", cfg_dir);
    unlink(path);
    rmdir(cfg_dir);
}

/* Writes text as <cfg_dir>/netsaw.conf and returns its path (static storage). */
static const char *cfg_file(const char *text)
{
    static char path[128];
    snprintf(path, sizeof path, "%s/netsaw.conf", cfg_dir);
    FILE *f = fopen(path, "w");
    cr_assert(not(eq(ptr, f, NULL)));
    fputs(text, f);
    fclose(f);
    return path;
}

TestSuite(base_config, .init = cfg_setup, .fini = cfg_teardown);

Test(base_config, defaults)
{
    ns_config c;
    ns_config_defaults(&c);
    ASSERT_STR(c.db_path, "./SESSIONDB");
    cr_assert(eq(u64, c.db_budget, 10ULL << 30));
    cr_assert(eq(u64, c.retention_s, 0));
    cr_assert(eq(int, c.nlisten, 2));
    ASSERT_STR(c.listen[0], "0.0.0.0:2055");
    ASSERT_STR(c.listen[1], "[::]:2055");
    cr_assert(c.listen_is_default);
    cr_assert(eq(int, c.nlisten_sflow, 2));
    ASSERT_STR(c.listen_sflow[0], "0.0.0.0:6343");
    ASSERT_STR(c.listen_sflow[1], "[::]:6343");
    cr_assert(c.listen_sflow_is_default);
    cr_assert(eq(u64, c.ingest_threads, 0));
    ASSERT_STR(c.http_listen, "127.0.0.1:8080");
    ASSERT_STR(c.log_file, "");
    cr_assert(eq(int, (int)c.log_level, (int)NS_LOG_INFO));
    cr_assert(eq(u64, c.seal_delay_s, 2));
    cr_assert(eq(u64, c.max_exporters, 4096));
    char lp[4200];
    ns_config_log_path(&c, lp, sizeof lp);
    ASSERT_STR(lp, "./SESSIONDB/ns2flowslog.txt");
}

Test(base_config, file_with_comments_blank_lines_and_quotes)
{
    ns_config c;
    char err[512] = "";
    ns_config_defaults(&c);
    const char *path = cfg_file("# ns2flows test configuration\n"
                                "\n"
                                "   \n"
                                "db_path = /var/lib/ns2flows/SESSIONDB   # trailing comment\n"
                                "\tdb_budget=500M\n"
                                "retention = 7d\n"
                                "log_file = \"/tmp/my log.txt\"\n"
                                "log_level = debug\r\n"
                                "http_listen = \"\"\n"
                                "seal_delay = 5\n"
                                "max_exporters = 10\n"
                                "rcvbuf = 1M\n");
    int rc = ns_config_load(&c, path, err, sizeof err);
    cr_assert(eq(int, rc, 0), "%s", err);
    ASSERT_STR(c.db_path, "/var/lib/ns2flows/SESSIONDB");
    cr_assert(eq(u64, c.db_budget, 500ULL << 20));
    cr_assert(eq(u64, c.retention_s, 7 * 86400));
    ASSERT_STR(c.log_file, "/tmp/my log.txt");
    cr_assert(eq(int, (int)c.log_level, (int)NS_LOG_DEBUG));
    ASSERT_STR(c.http_listen, "");
    cr_assert(eq(u64, c.seal_delay_s, 5));
    cr_assert(eq(u64, c.max_exporters, 10));
    cr_assert(eq(u64, c.rcvbuf, 1ULL << 20));
    /* untouched keys keep their defaults */
    cr_assert(eq(int, c.nlisten, 2));
    char lp[4200];
    ns_config_log_path(&c, lp, sizeof lp);
    ASSERT_STR(lp, "/tmp/my log.txt");
}

/* Quoting keeps '#' literal; a '#' after the closing quote still starts a comment. */
Test(base_config, quoted_value_keeps_hash)
{
    ns_config c;
    char err[512] = "";
    ns_config_defaults(&c);
    const char *path = cfg_file("log_file = \"/tmp/a#b.txt\"  # the log\n");
    cr_assert(eq(int, ns_config_load(&c, path, err, sizeof err), 0), "%s", err);
    ASSERT_STR(c.log_file, "/tmp/a#b.txt");
}

Test(base_config, unknown_key_names_file_line_and_key)
{
    ns_config c;
    char err[512] = "", want[256];
    ns_config_defaults(&c);
    const char *path = cfg_file("# comment\n"
                                "db_budget = 1G\n"
                                "\n"
                                "colour = blue\n"
                                "retention = 1d\n");
    cr_assert(eq(int, ns_config_load(&c, path, err, sizeof err), NS_E_UNKNOWN_KEY));
    snprintf(want, sizeof want, "%s:4:", path);
    ASSERT_HAS(err, want);
    ASSERT_HAS(err, "colour");
    cr_assert(eq(u64, c.db_budget, 1ULL << 30)); /* lines before the error applied */
    cr_assert(eq(u64, c.retention_s, 0));        /* and none after it */
}

Test(base_config, bad_value_names_file_line_and_key)
{
    ns_config c;
    char err[512] = "", want[256];
    ns_config_defaults(&c);
    const char *path = cfg_file("retention = 1d\n"
                                "\n"
                                "db_budget = lots\n");
    cr_assert(eq(int, ns_config_load(&c, path, err, sizeof err), NS_E_PARSE));
    snprintf(want, sizeof want, "%s:3: db_budget:", path);
    ASSERT_HAS(err, want);
    ASSERT_HAS(err, "lots");
    cr_assert(eq(u64, c.db_budget, 10ULL << 30));
}

Test(base_config, out_of_range_and_malformed_lines)
{
    ns_config c;
    char err[512] = "", want[256];
    ns_config_defaults(&c);
    const char *path = cfg_file("db_budget = 1K\n"); /* min is 1 MiB */
    cr_assert(eq(int, ns_config_load(&c, path, err, sizeof err), NS_E_RANGE));
    snprintf(want, sizeof want, "%s:1: db_budget:", path);
    ASSERT_HAS(err, want);

    path = cfg_file("\nno equals sign here\n");
    cr_assert(eq(int, ns_config_load(&c, path, err, sizeof err), NS_E_PARSE));
    snprintf(want, sizeof want, "%s:2:", path);
    ASSERT_HAS(err, want);

    path = cfg_file("listen = 2001:db8::1:2055\n"); /* IPv6 needs brackets */
    cr_assert(eq(int, ns_config_load(&c, path, err, sizeof err), NS_E_PARSE));
    ASSERT_HAS(err, "listen");

    cr_assert(eq(int, ns_config_load(&c, "/nonexistent/netsaw.conf", err, sizeof err), -ENOENT));
    ASSERT_HAS(err, "/nonexistent/netsaw.conf");
}

Test(base_config, first_listen_replaces_defaults_later_ones_append)
{
    ns_config c;
    char err[512] = "";
    ns_config_defaults(&c);
    const char *path = cfg_file("listen = 192.0.2.1:9995\n"
                                "listen = [2001:db8::1]:9996, 10.0.0.1:9997\n");
    cr_assert(eq(int, ns_config_load(&c, path, err, sizeof err), 0), "%s", err);
    cr_assert(eq(int, c.nlisten, 3));
    ASSERT_STR(c.listen[0], "192.0.2.1:9995");
    ASSERT_STR(c.listen[1], "[2001:db8::1]:9996");
    ASSERT_STR(c.listen[2], "10.0.0.1:9997");
    cr_assert(not(c.listen_is_default));
    /* the sFlow list is its own: still the defaults */
    cr_assert(eq(int, c.nlisten_sflow, 2));
    ASSERT_STR(c.listen_sflow[0], "0.0.0.0:6343");

    path = cfg_file("listen_sflow = 127.0.0.1:16343\n"
                    "listen_sflow = [::1]:16344\n"
                    "listen = 192.0.2.2:9998\n");
    cr_assert(eq(int, ns_config_load(&c, path, err, sizeof err), 0), "%s", err);
    cr_assert(eq(int, c.nlisten_sflow, 2));
    ASSERT_STR(c.listen_sflow[0], "127.0.0.1:16343");
    ASSERT_STR(c.listen_sflow[1], "[::1]:16344");
    /* listen was no longer the default: a second file appends to it */
    cr_assert(eq(int, c.nlisten, 4));
    ASSERT_STR(c.listen[3], "192.0.2.2:9998");
}

Test(base_config, too_many_listen_addresses)
{
    ns_config c;
    char err[256] = "", val[1024] = "";
    ns_config_defaults(&c);
    for (int i = 0; i < NS_MAX_LISTEN; i++) {
        char one[32];
        snprintf(one, sizeof one, "%s10.0.0.%d:2055", i ? ", " : "", i + 1);
        strcat(val, one);
    }
    cr_assert(eq(int, ns_config_set(&c, "listen", val, err, sizeof err), 0), "%s", err);
    cr_assert(eq(int, c.nlisten, NS_MAX_LISTEN));
    cr_assert(
        eq(int, ns_config_set(&c, "listen", "10.0.0.99:2055", err, sizeof err), NS_E_TOO_MANY));
    cr_assert(eq(int, c.nlisten, NS_MAX_LISTEN));
}

Test(base_config, diff_names_only_changed_nonreloadable_keys)
{
    ns_config a, b;
    char buf[256], err[256];
    ns_config_defaults(&a);
    ns_config_defaults(&b);
    cr_assert(eq(int, ns_config_diff_nonreloadable(&a, &b, buf, sizeof buf), 0));
    ASSERT_STR(buf, "");
    /* reloadable ones: no complaint */
    cr_assert(eq(int, ns_config_set(&b, "db_budget", "1G", err, sizeof err), 0));
    cr_assert(eq(int, ns_config_set(&b, "retention", "1d", err, sizeof err), 0));
    cr_assert(eq(int, ns_config_set(&b, "log_level", "warn", err, sizeof err), 0));
    cr_assert(eq(int, ns_config_set(&b, "log_file", "/tmp/x.log", err, sizeof err), 0));
    cr_assert(eq(int, ns_config_diff_nonreloadable(&a, &b, buf, sizeof buf), 0));
    ASSERT_STR(buf, "");
    /* non-reloadable ones are named, in table order */
    cr_assert(eq(int, ns_config_set(&b, "rcvbuf", "16M", err, sizeof err), 0));
    cr_assert(eq(int, ns_config_set(&b, "http_listen", "127.0.0.1:9090", err, sizeof err), 0));
    cr_assert(eq(int, ns_config_diff_nonreloadable(&a, &b, buf, sizeof buf), 2));
    ASSERT_STR(buf, "http_listen, rcvbuf");
    cr_assert(eq(int, ns_config_set(&b, "listen", "0.0.0.0:2056", err, sizeof err), 0));
    cr_assert(eq(int, ns_config_set(&b, "db_path", "/srv/db", err, sizeof err), 0));
    cr_assert(eq(int, ns_config_diff_nonreloadable(&a, &b, buf, sizeof buf), 4));
    ASSERT_STR(buf, "db_path, listen, http_listen, rcvbuf");
    /* as many addresses as before, one of them different */
    cr_assert(
        eq(int, ns_config_set(&b, "listen_sflow", "0.0.0.0:6343, [::]:6344", err, sizeof err), 0));
    cr_assert(eq(int, ns_config_diff_nonreloadable(&a, &b, buf, sizeof buf), 5));
    ASSERT_STR(buf, "db_path, listen, listen_sflow, http_listen, rcvbuf");

    /* the same list reached another way is no change */
    ns_config c;
    ns_config_defaults(&c);
    cr_assert(eq(int, ns_config_set(&c, "listen", "[::]:2055", err, sizeof err), 0));
    ns_config_clear_listen(&c);
    cr_assert(eq(int, ns_config_set(&c, "listen", "0.0.0.0:2055, [::]:2055", err, sizeof err), 0));
    cr_assert(eq(int, ns_config_diff_nonreloadable(&a, &c, buf, sizeof buf), 0), "%s", buf);
}

static void *named_thread(void *arg)
{
    char *out = arg;
    ns_thread_name("rx-netflow");
    pthread_getname_np(pthread_self(), out, 16);
    out += 16;
    ns_thread_name("a-name-far-longer-than-linux-allows");
    pthread_getname_np(pthread_self(), out, 16);
    return NULL;
}

Test(base_thread, names_carry_the_prefix_and_fit_linux)
{
    char names[32] = {0};
    pthread_t th;
    cr_assert(eq(int, pthread_create(&th, NULL, named_thread, names), 0));
    pthread_join(th, NULL);
    cr_assert(eq(int, strcmp(names, "ns2f-rx-netflow"), 0), "%s", names);
    /* cut to Linux's 15 characters, not refused */
    cr_assert(eq(int, strcmp(names + 16, "ns2f-a-name-far"), 0), "%s", names + 16);
}
