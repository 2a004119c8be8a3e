/* engine/filter.c — nfdump's filter language over eng_flow rows (docs/FILTERS.md; nfdump's
 * grammar.y/scanner.l are the model). Text is split into tokens, parsed by recursive descent
 * into a small tree (not binds tighter than and, and tighter than or, as in nfdump), and the
 * tree is compiled BPF-style into a line of leaf tests, each with a jump for "true" and one
 * for "false". Jumps only go forward, so matching is a loop that ends after at most one step
 * per test, with no recursion and no allocation.
 *
 * The text is untrusted (it comes from HTTP): its length and parenthesis depth are capped, every
 * number is range-checked, and the first error is reported with its 1-based byte column. */
#include "engine/query.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

/* ---------------------------------------------------------------------------------------------
 * The compiled form. */

/* What a leaf reads. Numbers first, then addresses. */
enum {
    F_SRC_PORT,
    F_DST_PORT,
    F_PROTO,
    F_TOS,
    F_FLAGS,
    F_SRC_AS,
    F_DST_AS,
    F_IN_IF,
    F_OUT_IF,
    F_VLAN,
    F_SRC_MASK,
    F_DST_MASK,
    F_BYTES,
    F_PACKETS,
    F_DURATION, /* last_ms - first_ms, 0 if negative */
    F_BPS,
    F_PPS,
    F_BPP,
    F_ICMP_TYPE, /* dst_port >> 8 */
    F_ICMP_CODE, /* dst_port & 0xff */
    F_DIRECTION,
    F_SRC,
    F_DST,
    F_EXPORTER,
    F_NEXTHOP,
    F_COUNT
};

#define COL(c) ENG_COLMASK(ENG_COL_##c)
static const uint32_t field_cols[F_COUNT] = {
    [F_SRC_PORT] = COL(SRC_PORT),
    [F_DST_PORT] = COL(DST_PORT),
    [F_PROTO] = COL(PROTO),
    [F_TOS] = COL(TOS),
    [F_FLAGS] = COL(TCP_FLAGS),
    [F_SRC_AS] = COL(SRC_AS),
    [F_DST_AS] = COL(DST_AS),
    [F_IN_IF] = COL(IN_IF),
    [F_OUT_IF] = COL(OUT_IF),
    [F_VLAN] = COL(VLAN),
    [F_SRC_MASK] = COL(SRC_MASK),
    [F_DST_MASK] = COL(DST_MASK),
    [F_BYTES] = COL(BYTES),
    [F_PACKETS] = COL(PACKETS),
    [F_DURATION] = COL(FIRST) | COL(LAST),
    [F_BPS] = COL(FIRST) | COL(LAST) | COL(BYTES),
    [F_PPS] = COL(FIRST) | COL(LAST) | COL(PACKETS),
    [F_BPP] = COL(BYTES) | COL(PACKETS),
    [F_ICMP_TYPE] = COL(DST_PORT),
    [F_ICMP_CODE] = COL(DST_PORT),
    [F_DIRECTION] = COL(DIRECTION),
    [F_SRC] = COL(SRC),
    [F_DST] = COL(DST),
    [F_EXPORTER] = COL(EXPORTER),
    [F_NEXTHOP] = COL(NEXTHOP),
};

enum {
    OP_TRUE,    /* any */
    OP_NUM,     /* field <cmp> val */
    OP_NUM_IN,  /* field in nums[idx .. idx+n), sorted, unique */
    OP_ADDR,    /* address field in prefix nets[idx] */
    OP_ADDR_IN, /* address field in any of nets[idx .. idx+n) */
    OP_V4,      /* src is an IPv4 (v4-mapped) address */
    OP_V6,
};

enum { C_EQ, C_NE, C_LT, C_LE, C_GT, C_GE, C_ALL /* (x & val) == val */ };

typedef struct flt_ins {
    uint8_t op, field, cmp;
    uint32_t jt, jf; /* next instruction; n = accept, n + 1 = reject */
    uint32_t idx, n;
    uint64_t val;
} flt_ins;

/* A prefix as two masked 64-bit words (loaded in host order from the 16 address bytes, with
 * the mask built the same way), so a test is two ANDs and two compares. */
typedef struct flt_net {
    uint64_t v[2], m[2];
} flt_net;

struct qry_filter {
    flt_ins *ins;
    uint32_t n;
    uint32_t cols;
    uint64_t *nums;
    flt_net *nets;
    ns_addr *addrs; /* the derived "src or dst must be one of these" set */
    size_t naddrs;
};

/* ---------------------------------------------------------------------------------------------
 * Matching. */

static uint64_t duration_ms(const eng_flow *r)
{
    /* unsigned difference: exact even when the signed one would overflow */
    return r->last_ms > r->first_ms ? (uint64_t)r->last_ms - (uint64_t)r->first_ms : 0;
}

/* a * m / d, saturating at UINT64_MAX (d > 0) */
static uint64_t mul_div(uint64_t a, uint64_t m, uint64_t d)
{
    unsigned __int128 x = (unsigned __int128)a * m / d;
    return x > UINT64_MAX ? UINT64_MAX : (uint64_t)x;
}

static uint64_t num_field(unsigned f, const eng_flow *r)
{
    switch (f) {
    case F_SRC_PORT:
        return r->src_port;
    case F_DST_PORT:
        return r->dst_port;
    case F_PROTO:
        return r->proto;
    case F_TOS:
        return r->tos;
    case F_FLAGS:
        return r->tcp_flags;
    case F_SRC_AS:
        return r->src_as;
    case F_DST_AS:
        return r->dst_as;
    case F_IN_IF:
        return r->in_if;
    case F_OUT_IF:
        return r->out_if;
    case F_VLAN:
        return r->vlan;
    case F_SRC_MASK:
        return r->src_mask;
    case F_DST_MASK:
        return r->dst_mask;
    case F_BYTES:
        return r->bytes;
    case F_PACKETS:
        return r->packets;
    case F_DURATION:
        return duration_ms(r);
    case F_BPS: {
        /* a flow with no duration counts as lasting one second (nfdump says 0) */
        uint64_t d = duration_ms(r);
        return d ? mul_div(r->bytes, 8000, d) : mul_div(r->bytes, 8, 1);
    }
    case F_PPS: {
        uint64_t d = duration_ms(r);
        return d ? mul_div(r->packets, 1000, d) : r->packets;
    }
    case F_BPP:
        return r->packets ? r->bytes / r->packets : 0;
    case F_ICMP_TYPE:
        return (uint64_t)(r->dst_port >> 8);
    case F_ICMP_CODE:
        return (uint64_t)(r->dst_port & 0xffu);
    case F_DIRECTION:
        return r->direction;
    default:
        return 0;
    }
}

static const ns_addr *addr_field(unsigned f, const eng_flow *r)
{
    switch (f) {
    case F_SRC:
        return &r->src;
    case F_DST:
        return &r->dst;
    case F_EXPORTER:
        return &r->exporter;
    default:
        return &r->nexthop;
    }
}

static bool cmp_u64(unsigned c, uint64_t x, uint64_t v)
{
    switch (c) {
    case C_EQ:
        return x == v;
    case C_NE:
        return x != v;
    case C_LT:
        return x < v;
    case C_LE:
        return x <= v;
    case C_GT:
        return x > v;
    case C_GE:
        return x >= v;
    default:
        return (x & v) == v;
    }
}

static bool in_sorted(const uint64_t *a, uint32_t n, uint64_t x)
{
    uint32_t lo = 0, hi = n;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (a[mid] == x)
            return true;
        if (a[mid] < x)
            lo = mid + 1;
        else
            hi = mid;
    }
    return false;
}

static void net_make(const ns_prefix *x, flt_net *n)
{
    uint8_t mb[16] = {0};
    for (unsigned i = 0; i < x->len && i < 128; i++)
        mb[i / 8] |= (uint8_t)(0x80u >> (i % 8));
    memcpy(n->m, mb, sizeof mb);
    memcpy(n->v, x->addr.b, sizeof n->v);
    n->v[0] &= n->m[0];
    n->v[1] &= n->m[1];
}

static bool net_match(const flt_net *n, const ns_addr *a)
{
    uint64_t w[2];
    memcpy(w, a->b, sizeof w);
    return ((w[0] & n->m[0]) == n->v[0]) & ((w[1] & n->m[1]) == n->v[1]);
}

static bool test(const qry_filter *f, const flt_ins *in, const eng_flow *r)
{
    switch (in->op) {
    case OP_TRUE:
        return true;
    case OP_NUM:
        return cmp_u64(in->cmp, num_field(in->field, r), in->val);
    case OP_NUM_IN:
        return in_sorted(f->nums + in->idx, in->n, num_field(in->field, r));
    case OP_ADDR:
        return net_match(&f->nets[in->idx], addr_field(in->field, r));
    case OP_ADDR_IN: {
        const ns_addr *a = addr_field(in->field, r);
        for (uint32_t i = 0; i < in->n; i++)
            if (net_match(&f->nets[in->idx + i], a))
                return true;
        return false;
    }
    case OP_V4:
        return ns_addr_is_v4(&r->src);
    case OP_V6:
        return !ns_addr_is_v4(&r->src);
    default:
        return false;
    }
}

bool qry_filter_match(const qry_filter *f, const eng_flow *r)
{
    if (!f)
        return true;
    uint32_t pc = 0;
    while (pc < f->n) {
        const flt_ins *in = &f->ins[pc];
        pc = test(f, in, r) ? in->jt : in->jf; /* always > pc: the loop ends */
    }
    return pc == f->n;
}

/* A filter that reads only source and destination addresses (host, net, ip versions), over a
 * view whose columns it reads are dictionaries: each address test is made once per distinct
 * value of its column, then each row walks the program through its codes. No row is built and
 * no column expanded. */
bool qry_filter_by_dict(const qry_filter *f, const eng_colview *v)
{
    if (!f || f->cols == 0 || (f->cols & ~(COL(SRC) | COL(DST))) != 0 || f->n > 256)
        return false;
    return (!(f->cols & COL(SRC)) || v->dict[ENG_COL_SRC]) &&
           (!(f->cols & COL(DST)) || v->dict[ENG_COL_DST]);
}

/* The address column a test of an address-only filter reads. */
static eng_col ins_col(const flt_ins *in)
{
    return in->op == OP_V4 || in->op == OP_V6 || in->field == F_SRC ? ENG_COL_SRC : ENG_COL_DST;
}

/* qry_filter_select_dict for programs of many tests: each row walks the program. */
static size_t select_dict_walk(const qry_filter *f, const eng_colview *v, uint8_t **scratch,
                               size_t *scap, uint32_t *out)
{
    /* per test: the column it reads and its answer for each of that column's values */
    size_t need = 0;
    for (uint32_t pc = 0; pc < f->n; pc++) {
        const flt_ins *in = &f->ins[pc];
        if (in->op == OP_TRUE)
            continue;
        eng_col c = ins_col(in);
        need += v->dict[c]->n;
    }
    if (need > *scap) {
        uint8_t *p = realloc(*scratch, need);
        if (!p)
            return SIZE_MAX;
        *scratch = p;
        *scap = need;
    }
    const uint8_t *ans[256];
    const uint32_t *codes[256];
    uint8_t *at = *scratch;
    eng_flow r;
    memset(&r, 0, sizeof r);
    for (uint32_t pc = 0; pc < f->n; pc++) {
        const flt_ins *in = &f->ins[pc];
        ans[pc] = NULL;
        if (in->op == OP_TRUE)
            continue;
        eng_col c = ins_col(in);
        const eng_coldict *d = v->dict[c];
        for (size_t k = 0; k < d->n; k++) {
            /* the test reads the value where a row would hold it */
            memcpy(c == ENG_COL_SRC ? r.src.b : r.dst.b, d->vals + k * 16, 16);
            at[k] = test(f, in, &r);
        }
        ans[pc] = at;
        codes[pc] = d->codes;
        at += d->n;
    }
    size_t m = 0;
    for (size_t k = 0; k < v->n; k++) {
        uint32_t i = v->idx ? v->idx[k] : (uint32_t)k, pc = 0;
        while (pc < f->n)
            pc = !ans[pc] || ans[pc][codes[pc][i]] ? f->ins[pc].jt : f->ins[pc].jf;
        if (pc == f->n)
            out[m++] = i;
    }
    return m;
}

/* The codes of dictionary d (values ascending) whose value lies in net n: one run of codes,
 * [*lo, *hi), found by two binary searches instead of a test a value. */
static void net_codes(const flt_net *n, const eng_coldict *d, size_t *lo, size_t *hi)
{
    uint8_t first[16], last[16];
    uint64_t w[2] = {n->v[0] | ~n->m[0], n->v[1] | ~n->m[1]};
    memcpy(first, n->v, 16);
    memcpy(last, w, 16);
    size_t a = 0, b = d->n;
    while (a < b) { /* the first value not below the net's first address */
        size_t mid = a + (b - a) / 2;
        if (memcmp(d->vals + mid * 16, first, 16) < 0)
            a = mid + 1;
        else
            b = mid;
    }
    *lo = a;
    b = d->n;
    while (a < b) { /* the first value above its last address */
        size_t mid = a + (b - a) / 2;
        if (memcmp(d->vals + mid * 16, last, 16) <= 0)
            a = mid + 1;
        else
            b = mid;
    }
    *hi = a;
}

/* Sets bit in ans[k] for each value k of d that test in passes. */
static void dict_answers(const qry_filter *f, const flt_ins *in, eng_col c, const eng_coldict *d,
                         uint8_t bit, uint8_t *ans)
{
    size_t lo, hi;
    if (in->op == OP_ADDR || in->op == OP_ADDR_IN) {
        /* a net is a run of the ascending values */
        uint32_t nn = in->op == OP_ADDR ? 1 : in->n;
        for (uint32_t j = 0; j < nn; j++) {
            net_codes(&f->nets[in->idx + j], d, &lo, &hi);
            for (size_t k = lo; k < hi; k++)
                ans[k] |= bit;
        }
        return;
    }
    eng_flow r;
    memset(&r, 0, sizeof r);
    for (size_t k = 0; k < d->n; k++) {
        /* the test reads the value where a row would hold it */
        memcpy(c == ENG_COL_SRC ? r.src.b : r.dst.b, d->vals + k * 16, 16);
        if (test(f, in, &r))
            ans[k] |= bit;
    }
}

/* Whether f passes a row whose tests answer as the bits of x: test pc's answer is bit bitof[pc]
 * of x (UINT32_MAX: an instruction that always passes). */
static bool program_passes(const qry_filter *f, const uint32_t *bitof, uint32_t x)
{
    uint32_t pc = 0;
    while (pc < f->n)
        pc = bitof[pc] == UINT32_MAX || (x >> bitof[pc] & 1) ? f->ins[pc].jt : f->ins[pc].jf;
    return pc == f->n;
}

/* qry_filter_select_dict for programs of at most two tests, each one net on an address column
 * (`net A/len` is `src net A/len or dst net A/len`): a net is one run of its dictionary's codes
 * (net_codes), so a row's answers are two range tests of its codes, without answer arrays or
 * lookups, and the program's outcome for the four combinations of answers is a mask of 4 bits.
 * The per-value answers and table of the general path cost a 10M-row /16 two lookups and a
 * table read a row, most of its selection. */
typedef struct sel_ranges {
    const uint32_t *c[2];   /* the codes each test reads (the second test may be absent) */
    uint32_t lo[2], len[2]; /* test t passes when c[t][i] - lo[t] < len[t] (unsigned) */
    uint32_t tt;            /* bit x: the program's outcome when the answers are x's bits */
} sel_ranges;

static size_t select_ranges_rows(const sel_ranges *r, const uint32_t *idx, size_t k0, size_t n,
                                 size_t m, uint32_t *out)
{
    const uint32_t *c0 = r->c[0], *c1 = r->c[1];
    uint32_t lo0 = r->lo[0], lo1 = r->lo[1], len0 = r->len[0], len1 = r->len[1], tt = r->tt;
    for (size_t k = k0; k < n; k++) {
        uint32_t i = idx ? idx[k] : (uint32_t)k;
        uint32_t x = (uint32_t)(c0[i] - lo0 < len0) | (uint32_t)(c1[i] - lo1 < len1) << 1;
        out[m] = i;
        m += tt >> x & 1;
    }
    return m;
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define SEL_AVX512 1
/* select_ranges_rows for rows 0..n (no idx), 16 at a time: two compares give the answers as
 * bit masks, and the passing rows' numbers are compressed into out. */
__attribute__((target("avx512f"))) static size_t select_ranges_avx512(const sel_ranges *r, size_t n,
                                                                      uint32_t *out)
{
    const __m512i lo0 = _mm512_set1_epi32((int)r->lo[0]), lo1 = _mm512_set1_epi32((int)r->lo[1]);
    const __m512i len0 = _mm512_set1_epi32((int)r->len[0]),
                  len1 = _mm512_set1_epi32((int)r->len[1]);
    const __m512i step = _mm512_set1_epi32(16);
    __m512i row = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    /* the outcome of each combination as an all-or-nothing mask */
    uint32_t o0 = r->tt & 1 ? 0xffffu : 0, o1 = r->tt & 2 ? 0xffffu : 0,
             o2 = r->tt & 4 ? 0xffffu : 0, o3 = r->tt & 8 ? 0xffffu : 0;
    size_t m = 0, k = 0;
    for (; k + 16 <= n; k += 16) {
        __m512i a = _mm512_loadu_si512((const void *)(r->c[0] + k));
        __m512i b = _mm512_loadu_si512((const void *)(r->c[1] + k));
        uint32_t x = _mm512_cmplt_epu32_mask(_mm512_sub_epi32(a, lo0), len0);
        uint32_t y = _mm512_cmplt_epu32_mask(_mm512_sub_epi32(b, lo1), len1);
        uint32_t pass = ((o0 & ~x & ~y) | (o1 & x & ~y) | (o2 & ~x & y) | (o3 & x & y)) & 0xffffu;
        /* m <= k: the 16 lanes stored stay inside out's n rows */
        _mm512_storeu_si512((void *)(out + m), _mm512_maskz_compress_epi32((__mmask16)pass, row));
        m += (size_t)__builtin_popcount(pass);
        row = _mm512_add_epi32(row, step);
    }
    /* the upper halves cleared: left dirty, every SSE instruction after it (in this thread,
     * until the next clear) pays a transition; the tables of later queries ran a third slower */
    _mm256_zeroupper();
    return select_ranges_rows(r, NULL, k, n, m, out);
}
#endif

/* Fills *r when f is a program select_ranges can run (see sel_ranges) over v. */
static bool ranges_fit(const qry_filter *f, const eng_colview *v, sel_ranges *r)
{
    uint32_t nt = 0, bit[256];
    if (f->n > 256)
        return false;
    for (uint32_t pc = 0; pc < f->n; pc++) {
        const flt_ins *in = &f->ins[pc];
        bit[pc] = UINT32_MAX;
        if (in->op == OP_TRUE)
            continue;
        if (in->op != OP_ADDR || nt == 2)
            return false;
        const eng_coldict *d = v->dict[ins_col(in)];
        size_t lo, hi;
        net_codes(&f->nets[in->idx], d, &lo, &hi);
        if (hi > UINT32_MAX)
            return false;
        r->c[nt] = d->codes;
        r->lo[nt] = (uint32_t)lo;
        r->len[nt] = (uint32_t)(hi - lo);
        bit[pc] = nt++;
    }
    if (nt == 0)
        return false;
    if (nt == 1) { /* a second test that never passes */
        r->c[1] = r->c[0];
        r->lo[1] = 0;
        r->len[1] = 0;
    }
    r->tt = 0;
    for (uint32_t x = 0; x < 4; x++)
        r->tt |= (uint32_t)program_passes(f, bit, x) << x;
    return true;
}

static size_t select_dict(const qry_filter *f, const eng_colview *v, uint8_t **scratch,
                          size_t *scap, uint32_t *out, bool simd);

size_t qry_filter_select_dict(const qry_filter *f, const eng_colview *v, uint8_t **scratch,
                              size_t *scap, uint32_t *out)
{
    return select_dict(f, v, scratch, scap, out, true);
}

size_t qry__filter_select_dict_plain(const qry_filter *f, const eng_colview *v, uint8_t **scratch,
                                     size_t *scap, uint32_t *out)
{
    return select_dict(f, v, scratch, scap, out, false);
}

/* Tests of a program at most that walk rows through a table of outcomes (2^8 entries). */
#define DICT_TESTS 8

static size_t select_dict(const qry_filter *f, const eng_colview *v, uint8_t **scratch,
                          size_t *scap, uint32_t *out, bool simd)
{
    sel_ranges rg;
    if (ranges_fit(f, v, &rg)) {
#ifdef SEL_AVX512
        if (simd && !v->idx && __builtin_cpu_supports("avx512f"))
            return select_ranges_avx512(&rg, v->n, out);
#endif
        (void)simd;
        return select_ranges_rows(&rg, v->idx, 0, v->n, 0, out);
    }
    /* Each test's answer for each value of its column, as one bit of a byte a value (a column's
     * tests share its bytes); then the program's outcome for every combination of answers, so a
     * row costs a load a column and a table lookup, without a branch. */
    uint32_t ntests = 0, bitof[256];
    const eng_coldict *ds = v->dict[ENG_COL_SRC], *dd = v->dict[ENG_COL_DST];
    bool src = false, dst = false;
    for (uint32_t pc = 0; pc < f->n; pc++) {
        bitof[pc] = f->ins[pc].op == OP_TRUE ? UINT32_MAX : ntests++;
        if (f->ins[pc].op != OP_TRUE) {
            src |= ins_col(&f->ins[pc]) == ENG_COL_SRC;
            dst |= ins_col(&f->ins[pc]) == ENG_COL_DST;
        }
    }
    if (ntests > DICT_TESTS)
        return select_dict_walk(f, v, scratch, scap, out);
    size_t ns = src ? ds->n : 0, nd = dst ? dd->n : 0;
    size_t need = ns + nd + ((size_t)1 << ntests);
    if (need > *scap) {
        uint8_t *p = realloc(*scratch, need);
        if (!p)
            return SIZE_MAX;
        *scratch = p;
        *scap = need;
    }
    uint8_t *as = *scratch, *ad = as + ns, *tt = ad + nd;
    memset(as, 0, ns + nd);
    for (uint32_t pc = 0; pc < f->n; pc++) {
        const flt_ins *in = &f->ins[pc];
        if (bitof[pc] == UINT32_MAX)
            continue;
        eng_col c = ins_col(in);
        dict_answers(f, in, c, c == ENG_COL_SRC ? ds : dd, (uint8_t)(1u << bitof[pc]),
                     c == ENG_COL_SRC ? as : ad);
    }
    for (uint32_t x = 0; x < (1u << ntests); x++)
        tt[x] = program_passes(f, bitof, x);
    const uint32_t *cs = src ? ds->codes : NULL, *cd = dst ? dd->codes : NULL;
    const uint32_t *idx = v->idx;
    size_t m = 0;
    /* one loop a shape: the compiler keeps each free of branches */
#define SELECT_ROWS(ANS)                                                                           \
    for (size_t k = 0; k < v->n; k++) {                                                            \
        uint32_t i = idx ? idx[k] : (uint32_t)k;                                                   \
        out[m] = i;                                                                                \
        m += tt[ANS];                                                                              \
    }
    if (cs && cd) {
        SELECT_ROWS(as[cs[i]] | ad[cd[i]])
    } else if (cs) {
        SELECT_ROWS(as[cs[i]])
    } else if (cd) {
        SELECT_ROWS(ad[cd[i]])
    } else {
        SELECT_ROWS(0)
    }
#undef SELECT_ROWS
    return m;
}

uint32_t qry_filter_columns(const qry_filter *f)
{
    return f ? f->cols : 0;
}

size_t qry_filter_addrs(const qry_filter *f, ns_addr *out, size_t cap)
{
    if (!f || f->naddrs == 0 || f->naddrs > cap)
        return 0;
    memcpy(out, f->addrs, f->naddrs * sizeof *out);
    return f->naddrs;
}

static const char *const field_names[F_COUNT] = {
    [F_SRC_PORT] = "srcport",
    [F_DST_PORT] = "dstport",
    [F_PROTO] = "proto",
    [F_TOS] = "tos",
    [F_FLAGS] = "flags",
    [F_SRC_AS] = "srcas",
    [F_DST_AS] = "dstas",
    [F_IN_IF] = "inif",
    [F_OUT_IF] = "outif",
    [F_VLAN] = "vlan",
    [F_SRC_MASK] = "srcmask",
    [F_DST_MASK] = "dstmask",
    [F_BYTES] = "bytes",
    [F_PACKETS] = "packets",
    [F_DURATION] = "duration",
    [F_BPS] = "bps",
    [F_PPS] = "pps",
    [F_BPP] = "bpp",
    [F_ICMP_TYPE] = "icmptype",
    [F_ICMP_CODE] = "icmpcode",
    [F_DIRECTION] = "direction",
    [F_SRC] = "src",
    [F_DST] = "dst",
    [F_EXPORTER] = "exporter",
    [F_NEXTHOP] = "nexthop",
};

size_t qry_filter_ntests(const qry_filter *f)
{
    return f ? f->n : 0;
}

void qry_filter_test(const qry_filter *f, size_t i, qry_ftest *out)
{
    const flt_ins *in = &f->ins[i];
    static const qry_ft_kind kinds[] = {
        [OP_TRUE] = QRY_FT_TRUE, [OP_NUM] = QRY_FT_NUM,        [OP_NUM_IN] = QRY_FT_NUM_IN,
        [OP_ADDR] = QRY_FT_NET,  [OP_ADDR_IN] = QRY_FT_NET_IN, [OP_V4] = QRY_FT_SRC_V4,
        [OP_V6] = QRY_FT_SRC_V6};
    memset(out, 0, sizeof *out);
    out->kind = kinds[in->op];
    out->field = in->field < F_COUNT ? field_names[in->field] : "";
    out->cmp = (qry_fc)in->cmp;
    out->val = in->val;
    out->first = in->idx;
    out->n = in->op == OP_ADDR ? 1 : in->n;
    out->jt = in->jt;
    out->jf = in->jf;
}

uint64_t qry_filter_num(const qry_filter *f, size_t k)
{
    return f->nums[k];
}

void qry_filter_net(const qry_filter *f, size_t k, ns_addr *addr, ns_addr *mask)
{
    memcpy(addr->b, f->nets[k].v, 16);
    memcpy(mask->b, f->nets[k].m, 16);
}

unsigned qry_filter_host_sides(const qry_filter *f, ns_addr *a)
{
    static const uint64_t all[2] = {UINT64_MAX, UINT64_MAX};
    const flt_net *one = NULL;
    if (!f || f->n == 0)
        return 0;
    /* address tests only, on src or dst, every one against the same single address */
    for (uint32_t i = 0; i < f->n; i++) {
        const flt_ins *in = &f->ins[i];
        if ((in->op != OP_ADDR && in->op != OP_ADDR_IN) ||
            (in->field != F_SRC && in->field != F_DST))
            return 0;
        uint32_t cnt = in->op == OP_ADDR ? 1 : in->n;
        for (uint32_t k = 0; k < cnt; k++) {
            const flt_net *net = &f->nets[in->idx + k];
            if (memcmp(net->m, all, sizeof all) != 0 ||
                (one && memcmp(net->v, one->v, sizeof one->v) != 0))
                return 0;
            one = net;
        }
    }
    if (!one)
        return 0;
    /* then the filter is a function of (src is a, dst is a): four rows tell which */
    eng_flow r[4];
    ns_addr other;
    memcpy(a->b, one->v, 16);
    other = *a;
    other.b[15] ^= 1;
    memset(r, 0, sizeof r);
    const ns_addr *src[4] = {a, &other, a, &other}, *dst[4] = {&other, a, a, &other};
    bool m[4];
    for (int k = 0; k < 4; k++) {
        r[k].src = *src[k];
        r[k].dst = *dst[k];
        m[k] = qry_filter_match(f, &r[k]);
    }
    if (!m[2] || m[3])
        return 0;
    return (m[0] ? ENG_SIDE_SRC : 0) | (m[1] ? ENG_SIDE_DST : 0);
}

void qry_filter_free(qry_filter *f)
{
    if (!f)
        return;
    free(f->ins);
    free(f->nums);
    free(f->nets);
    free(f->addrs);
    free(f);
}

/* ---------------------------------------------------------------------------------------------
 * Tokens. Words are runs of [A-Za-z0-9_.:/-] (keywords, numbers, addresses, prefixes);
 * and/or/not and the comparison words become their own kinds. '#' starts a comment. */

/* T_BAD: a byte no token starts with; the tokenizer stops there and the parser reports it
 * when it gets that far, so errors come out in column order. */
enum { T_END, T_WORD, T_LP, T_RP, T_LB, T_RB, T_COMMA, T_AND, T_OR, T_NOT, T_CMP, T_BAD };

typedef struct tok {
    uint8_t kind;
    uint8_t cmp; /* T_CMP: C_* */
    uint32_t off, len;
} tok;

enum { N_LEAF, N_AND, N_OR, N_NOT };

/* A tree node. Children are kept as a list, newest first (so in reverse order), which is the
 * order code generation wants them. */
typedef struct node {
    uint8_t kind;
    int32_t child, next;
    flt_ins leaf;
} node;

typedef struct parser {
    const char *s;
    size_t len;
    tok *toks;
    size_t ntok, pos;
    node *nodes;
    size_t nnodes, capnodes;
    ns_prefix *pfx;
    size_t npfx, cappfx;
    uint64_t *nums;
    size_t nnums, capnums;
    ns_addr *addrs;
    size_t naddrs, capaddrs;
    int depth;
    int rc;
    char *err;
    size_t errcap;
} parser;

#define SHOWN        40 /* longest token quoted back in a message */
#define TOKTXT(p, t) (int)((t)->len > SHOWN ? SHOWN : (t)->len), (p)->s + (t)->off

__attribute__((format(printf, 3, 4))) static int fail_at(parser *p, size_t off, const char *fmt,
                                                         ...)
{
    if (p->rc != 0 && p->err && p->err[0])
        return -1; /* the first error wins */
    if (p->rc == 0)
        p->rc = NS_E_PARSE;
    if (p->err && p->errcap) {
        int n = snprintf(p->err, p->errcap, "col %zu: ", off + 1);
        if (n >= 0 && (size_t)n < p->errcap) {
            va_list ap;
            va_start(ap, fmt);
            vsnprintf(p->err + n, p->errcap - (size_t)n, fmt, ap);
            va_end(ap);
        }
    }
    return -1;
}

static int nomem(parser *p)
{
    p->rc = NS_E_NOMEM;
    if (p->err && p->errcap)
        snprintf(p->err, p->errcap, "out of memory compiling the filter");
    return -1;
}

static char lower(char c)
{
    return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static bool is_word_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || is_digit(c) || c == '_' ||
           c == '.' || c == ':' || c == '/' || c == '-';
}

static bool text_is(const char *s, size_t n, const char *kw)
{
    size_t k = strlen(kw);
    if (n != k)
        return false;
    for (size_t i = 0; i < n; i++)
        if (lower(s[i]) != kw[i])
            return false;
    return true;
}

static bool is_kw(const parser *p, const tok *t, const char *kw)
{
    return t->kind == T_WORD && text_is(p->s + t->off, t->len, kw);
}

static int tokenize(parser *p)
{
    static const struct {
        const char *w;
        uint8_t kind, cmp;
    } words[] = {
        {"and", T_AND, 0},   {"or", T_OR, 0},     {"not", T_NOT, 0},
        {"eq", T_CMP, C_EQ}, {"ne", T_CMP, C_NE}, {"lt", T_CMP, C_LT},
        {"le", T_CMP, C_LE}, {"gt", T_CMP, C_GT}, {"ge", T_CMP, C_GE},
    };
    const char *s = p->s;
    size_t i = 0, n = 0;
    p->toks = malloc((p->len + 1) * sizeof *p->toks); /* at most one token per byte, + end */
    if (!p->toks)
        return nomem(p);
    while (i < p->len) {
        char c = s[i];
        char c1 = i + 1 < p->len ? s[i + 1] : 0;
        if (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v') {
            i++;
            continue;
        }
        if (c == '#') {
            while (i < p->len && s[i] != '\n')
                i++;
            continue;
        }
        tok *t = &p->toks[n++];
        t->off = (uint32_t)i;
        t->len = 1;
        t->cmp = 0;
        switch (c) {
        case '(':
            t->kind = T_LP;
            break;
        case ')':
            t->kind = T_RP;
            break;
        case '[':
            t->kind = T_LB;
            break;
        case ']':
            t->kind = T_RB;
            break;
        case ',':
            t->kind = T_COMMA;
            break;
        case '&':
        case '|':
            t->kind = c1 == c ? (c == '&' ? T_AND : T_OR) : T_BAD;
            t->len = 2;
            break;
        case '!':
            t->kind = c1 == '=' ? T_CMP : T_NOT;
            t->cmp = C_NE;
            t->len = c1 == '=' ? 2 : 1;
            break;
        case '=':
            t->kind = T_CMP;
            t->cmp = C_EQ;
            t->len = c1 == '=' ? 2 : 1;
            break;
        case '<':
        case '>':
            t->kind = T_CMP;
            t->cmp = c == '<' ? (c1 == '=' ? C_LE : C_LT) : (c1 == '=' ? C_GE : C_GT);
            t->len = c1 == '=' ? 2 : 1;
            break;
        default:
            if (!is_word_char(c)) {
                t->kind = T_BAD;
                break;
            }
            size_t j = i;
            while (j < p->len && is_word_char(s[j]))
                j++;
            t->kind = T_WORD;
            t->len = (uint32_t)(j - i);
            for (size_t w = 0; w < sizeof words / sizeof words[0]; w++) {
                if (text_is(s + i, t->len, words[w].w)) {
                    t->kind = words[w].kind;
                    t->cmp = words[w].cmp;
                    break;
                }
            }
            break;
        }
        if (t->kind == T_BAD) {
            t->len = 1;
            break;
        }
        i += t->len;
    }
    if (n > 0 && p->toks[n - 1].kind == T_BAD) {
        p->ntok = n;
        return 0;
    }
    p->toks[n].kind = T_END;
    p->toks[n].off = (uint32_t)p->len;
    p->toks[n].len = 0;
    p->toks[n].cmp = 0;
    p->ntok = n + 1;
    return 0;
}

static const tok *cur(const parser *p)
{
    return &p->toks[p->pos];
}

static const tok *peek(const parser *p, size_t k)
{
    size_t i = p->pos + k;
    return &p->toks[i < p->ntok ? i : p->ntok - 1];
}

static int bad_char(parser *p, const tok *t)
{
    char c = p->s[t->off];
    unsigned char u = (unsigned char)c;
    if (c == '&' || c == '|')
        return fail_at(p, t->off, "expected '%c%c' (or '%s'), got a single '%c'", c, c,
                       c == '&' ? "and" : "or", c);
    if (u >= 0x20 && u < 0x7f)
        return fail_at(p, t->off, "unexpected character '%c'", c);
    return fail_at(p, t->off, "unexpected byte 0x%02x", u);
}

/* "col N: expected <what> after '<previous token>', got '<this token>'" */
static int expected(parser *p, const char *what)
{
    const tok *t = cur(p);
    const tok *prev = p->pos ? &p->toks[p->pos - 1] : NULL;
    if (t->kind == T_BAD)
        return bad_char(p, t);
    if (t->kind == T_END && prev)
        return fail_at(p, t->off, "expected %s after '%.*s'", what, TOKTXT(p, prev));
    if (t->kind == T_END)
        return fail_at(p, t->off, "expected %s", what);
    if (prev)
        return fail_at(p, t->off, "expected %s after '%.*s', got '%.*s'", what, TOKTXT(p, prev),
                       TOKTXT(p, t));
    return fail_at(p, t->off, "expected %s, got '%.*s'", what, TOKTXT(p, t));
}

/* ---------------------------------------------------------------------------------------------
 * Tree building. */

static int32_t new_node(parser *p, uint8_t kind)
{
    if (p->nnodes == p->capnodes) {
        size_t ncap = p->capnodes ? p->capnodes * 2 : 32;
        node *nn = realloc(p->nodes, ncap * sizeof *nn);
        if (!nn)
            return nomem(p);
        p->nodes = nn;
        p->capnodes = ncap;
    }
    node *n = &p->nodes[p->nnodes];
    memset(n, 0, sizeof *n);
    n->kind = kind;
    n->child = -1;
    n->next = -1;
    return (int32_t)p->nnodes++;
}

static int32_t new_leaf(parser *p, const flt_ins *in)
{
    int32_t i = new_node(p, N_LEAF);
    if (i >= 0)
        p->nodes[i].leaf = *in;
    return i;
}

static int32_t num_leaf(parser *p, uint8_t field, uint8_t cmp, uint64_t val)
{
    flt_ins in = {.op = OP_NUM, .field = field, .cmp = cmp, .val = val};
    return new_leaf(p, &in);
}

static void add_child(parser *p, int32_t parent, int32_t child)
{
    p->nodes[child].next = p->nodes[parent].child;
    p->nodes[parent].child = child;
}

/* kind(a, b) */
static int32_t join2(parser *p, uint8_t kind, int32_t a, int32_t b)
{
    if (a < 0 || b < 0)
        return -1;
    int32_t n = new_node(p, kind);
    if (n < 0)
        return -1;
    add_child(p, n, a);
    add_child(p, n, b);
    return n;
}

static int32_t proto_leaf(parser *p, uint8_t proto)
{
    return num_leaf(p, F_PROTO, C_EQ, proto);
}

/* ---------------------------------------------------------------------------------------------
 * Values. */

/* Decimal with an optional k/M/G/T suffix (powers of 1000, as nfdump), or 0x hex.
 * Returns 0, 1 (not a number) or 2 (does not fit in 64 bits). */
static int parse_number(const char *w, size_t n, uint64_t *out)
{
    uint64_t v = 0;
    size_t i = 0;
    if (n > 2 && w[0] == '0' && (w[1] == 'x' || w[1] == 'X')) {
        for (i = 2; i < n; i++) {
            char c = lower(w[i]);
            unsigned d;
            if (is_digit(c))
                d = (unsigned)(c - '0');
            else if (c >= 'a' && c <= 'f')
                d = (unsigned)(c - 'a' + 10);
            else
                return 1;
            if (v > UINT64_MAX >> 4)
                return 2;
            v = v << 4 | d;
        }
        *out = v;
        return 0;
    }
    if (n == 0 || !is_digit(w[0]))
        return 1;
    for (; i < n && is_digit(w[i]); i++) {
        unsigned d = (unsigned)(w[i] - '0');
        if (v > (UINT64_MAX - d) / 10)
            return 2;
        v = v * 10 + d;
    }
    if (i < n) {
        uint64_t m;
        if (i + 1 != n)
            return 1;
        switch (lower(w[i])) {
        case 'k':
            m = 1000ull;
            break;
        case 'm':
            m = 1000000ull;
            break;
        case 'g':
            m = 1000000000ull;
            break;
        case 't':
            m = 1000000000000ull;
            break;
        default:
            return 1;
        }
        if (v > UINT64_MAX / m)
            return 2;
        v *= m;
    }
    *out = v;
    return 0;
}

static const struct {
    const char *name;
    uint8_t num;
    bool bare; /* usable alone, as "tcp" */
} protos[] = {
    {"icmp", 1, true},   {"igmp", 2, false},      {"ipip", 4, false},       {"ipencap", 4, false},
    {"tcp", 6, true},    {"egp", 8, false},       {"udp", 17, true},        {"ipv6", 41, false},
    {"rsvp", 46, false}, {"gre", 47, true},       {"esp", 50, true},        {"ah", 51, true},
    {"icmp6", 58, true}, {"icmpv6", 58, false},   {"ipv6-icmp", 58, false}, {"eigrp", 88, false},
    {"ospf", 89, false}, {"pim", 103, false},     {"vrrp", 112, false},     {"l2tp", 115, false},
    {"sctp", 132, true}, {"udplite", 136, false},
};

static int proto_by_name(const parser *p, const tok *t, bool bare_only)
{
    for (size_t i = 0; i < sizeof protos / sizeof protos[0]; i++)
        if ((protos[i].bare || !bare_only) && is_kw(p, t, protos[i].name))
            return protos[i].num;
    return -1;
}

/* A numeric primitive: "port", "as", "bytes"... */
enum { S_NONE, S_PROTO, S_ICMP, S_FLAGS };
enum { D_NONE, D_SRC, D_DST, D_EITHER, D_BOTH, D_IN, D_OUT };
#define DQ(d) (1u << (d))
#define DQ_SD (DQ(D_SRC) | DQ(D_DST) | DQ(D_EITHER) | DQ(D_BOTH))
#define DQ_IO (DQ(D_IN) | DQ(D_OUT))
#define MAX32 UINT32_MAX
#define MAX64 UINT64_MAX

typedef struct numprim {
    const char *kw;
    const char *what; /* in "expected <what>" */
    const char *noun; /* in "<noun> 70000 out of range" */
    uint64_t max;
    int8_t fa, fb; /* src (in) field and dst (out) field; fb < 0: one field */
    uint8_t dirs;  /* DQ_* qualifiers allowed */
    uint8_t special;
} numprim;

static const numprim numprims[] = {
    {"port", "a port number", "port", 65535, F_SRC_PORT, F_DST_PORT, DQ_SD, S_NONE},
    {"as", "an AS number", "AS number", MAX32, F_SRC_AS, F_DST_AS, DQ_SD, S_NONE},
    {"mask", "a mask length", "mask", 255, F_SRC_MASK, F_DST_MASK, DQ_SD, S_NONE},
    {"if", "an interface index", "interface", MAX32, F_IN_IF, F_OUT_IF, DQ_IO, S_NONE},
    {"vlan", "a VLAN id", "VLAN id", 65535, F_VLAN, -1, DQ(D_SRC), S_NONE},
    {"tos", "a ToS value", "ToS", 255, F_TOS, -1, DQ(D_SRC), S_NONE},
    {"proto", "a protocol name or number", "protocol", 255, F_PROTO, -1, 0, S_PROTO},
    {"bytes", "a byte count", "bytes", MAX64, F_BYTES, -1, DQ(D_IN), S_NONE},
    {"packets", "a packet count", "packets", MAX64, F_PACKETS, -1, DQ(D_IN), S_NONE},
    {"duration", "a duration in milliseconds", "duration", MAX64, F_DURATION, -1, 0, S_NONE},
    {"bps", "a rate in bits per second", "bps", MAX64, F_BPS, -1, 0, S_NONE},
    {"pps", "a rate in packets per second", "pps", MAX64, F_PPS, -1, 0, S_NONE},
    {"bpp", "a number of bytes per packet", "bpp", MAX64, F_BPP, -1, 0, S_NONE},
    {"icmp-type", "an ICMP type", "ICMP type", 255, F_ICMP_TYPE, -1, 0, S_ICMP},
    {"icmp-code", "an ICMP code", "ICMP code", 255, F_ICMP_CODE, -1, 0, S_ICMP},
    {"flags", "TCP flags (letters of UAPRSFEC, X for all six, or a number)", "flags", 255, F_FLAGS,
     -1, 0, S_FLAGS},
};

/* Reads one value of np at the current token (and steps over it). */
static int parse_value(parser *p, const numprim *np, uint64_t *out)
{
    const tok *t = cur(p);
    uint64_t v = 0;
    if (t->kind != T_WORD)
        return expected(p, np->what);
    if (np->special == S_PROTO && !is_digit(p->s[t->off])) {
        int pr = proto_by_name(p, t, false);
        if (pr < 0)
            return fail_at(p, t->off, "unknown protocol '%.*s' (use a number 0..255)",
                           TOKTXT(p, t));
        p->pos++;
        *out = (uint64_t)pr;
        return 0;
    }
    int rc = parse_number(p->s + t->off, t->len, &v);
    if (rc == 1)
        return expected(p, np->what);
    if (rc == 2)
        return fail_at(p, t->off, "number '%.*s' is too large", TOKTXT(p, t));
    if (v > np->max)
        return fail_at(p, t->off, "%s %" PRIu64 " out of range (0..%" PRIu64 ")", np->noun, v,
                       np->max);
    p->pos++;
    *out = v;
    return 0;
}

static int push_num(parser *p, uint64_t v)
{
    if (p->nnums == p->capnums) {
        size_t ncap = p->capnums ? p->capnums * 2 : 16;
        uint64_t *nn = realloc(p->nums, ncap * sizeof *nn);
        if (!nn)
            return nomem(p);
        p->nums = nn;
        p->capnums = ncap;
    }
    p->nums[p->nnums++] = v;
    return 0;
}

static int push_pfx(parser *p, const ns_prefix *x)
{
    if (p->npfx == p->cappfx) {
        size_t ncap = p->cappfx ? p->cappfx * 2 : 8;
        ns_prefix *nn = realloc(p->pfx, ncap * sizeof *nn);
        if (!nn)
            return nomem(p);
        p->pfx = nn;
        p->cappfx = ncap;
    }
    p->pfx[p->npfx++] = *x;
    return 0;
}

static int cmp_u64_qsort(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Checks the '[' and reports an unclosed list; item() reads one entry. */
static int parse_list(parser *p, const char *what, int (*item)(parser *, const void *),
                      const void *arg, size_t *count)
{
    const tok *lb = cur(p);
    size_t n = 0;
    if (lb->kind != T_LB)
        return expected(p, "'[' to start a list");
    p->pos++;
    for (;;) {
        const tok *t = cur(p);
        if (t->kind == T_END)
            return fail_at(p, t->off, "expected ']' to close '[' at col %u", lb->off + 1u);
        if (t->kind == T_RB) {
            if (n == 0)
                return fail_at(p, t->off, "expected %s in the list, got an empty list", what);
            p->pos++;
            break;
        }
        if (t->kind == T_COMMA && n > 0) {
            p->pos++;
            if (cur(p)->kind == T_END)
                continue; /* "[80," : report the missing ']' */
        }
        if (item(p, arg) < 0)
            return -1;
        n++;
    }
    *count = n;
    return 0;
}

static int num_item(parser *p, const void *arg)
{
    uint64_t v = 0;
    if (parse_value(p, arg, &v) < 0)
        return -1;
    return push_num(p, v);
}

/* np's leaf on field fa and/or fb as the qualifier says: src/in → fa, dst/out → fb,
 * none/"src or dst" → either, "src and dst" → both. */
static int32_t dual(parser *p, int dir, const flt_ins *in, const numprim *np)
{
    flt_ins a = *in, b = *in;
    a.field = (uint8_t)np->fa;
    b.field = (uint8_t)np->fb;
    if (np->fb < 0 || dir == D_SRC || dir == D_IN)
        return new_leaf(p, &a);
    if (dir == D_DST || dir == D_OUT)
        return new_leaf(p, &b);
    return join2(p, dir == D_BOTH ? N_AND : N_OR, new_leaf(p, &a), new_leaf(p, &b));
}

static int flags_value(parser *p, const tok *t, uint64_t *out)
{
    uint64_t fl = 0;
    unsigned seen = 0;
    for (uint32_t i = 0; i < t->len; i++) {
        static const char letters[] = "fsrpauec";
        char c = lower(p->s[t->off + i]);
        const char *at = c ? strchr(letters, c) : NULL;
        unsigned bit = c == 'x' ? 0x100u : at ? 1u << (unsigned)(at - letters) : 0;
        if (!bit || (seen & bit))
            return fail_at(p, t->off + i,
                           "unknown or repeated TCP flag '%c' in '%.*s' (use U A P R S F E C, or "
                           "X for all six)",
                           p->s[t->off + i], TOKTXT(p, t));
        seen |= bit;
        fl |= c == 'x' ? 0x3fu : bit;
    }
    *out = fl;
    return 0;
}

/* "flags SA": those bits set (and TCP); "flags = SA": exactly those; "flags > 2": a number. */
static int32_t prim_flags(parser *p, const numprim *np)
{
    uint8_t cmp = C_EQ;
    bool have_cmp = false;
    uint64_t v = 0;
    if (cur(p)->kind == T_CMP) {
        cmp = cur(p)->cmp;
        have_cmp = true;
        p->pos++;
    }
    const tok *t = cur(p);
    if (t->kind != T_WORD)
        return expected(p, np->what);
    if (is_digit(p->s[t->off])) {
        if (parse_value(p, np, &v) < 0)
            return -1;
    } else {
        if (have_cmp && cmp != C_EQ)
            return fail_at(p, t->off, "flag letters compare with '=' only; use a number for '%s'",
                           cmp == C_NE ? "!=" : "<, >, <=, >=");
        if (flags_value(p, t, &v) < 0)
            return -1;
        p->pos++;
        if (!have_cmp)
            cmp = C_ALL;
    }
    return join2(p, N_AND, proto_leaf(p, 6), num_leaf(p, F_FLAGS, cmp, v));
}

static int32_t prim_num(parser *p, const numprim *np, int dir)
{
    flt_ins in = {.op = OP_NUM, .cmp = C_EQ};
    if (np->special == S_FLAGS)
        return prim_flags(p, np);
    if (is_kw(p, cur(p), "in")) {
        size_t start = p->nnums, n = 0;
        p->pos++;
        if (parse_list(p, np->what, num_item, np, &n) < 0)
            return -1;
        qsort(p->nums + start, n, sizeof *p->nums, cmp_u64_qsort);
        size_t u = 0;
        for (size_t i = 0; i < n; i++)
            if (u == 0 || p->nums[start + i] != p->nums[start + u - 1])
                p->nums[start + u++] = p->nums[start + i];
        p->nnums = start + u;
        in.op = OP_NUM_IN;
        in.idx = (uint32_t)start;
        in.n = (uint32_t)u;
    } else {
        if (cur(p)->kind == T_CMP) {
            in.cmp = cur(p)->cmp;
            p->pos++;
        }
        if (parse_value(p, np, &in.val) < 0)
            return -1;
    }
    int32_t leaf = dual(p, dir, &in, np);
    if (np->special == S_ICMP)
        return join2(p, N_AND, join2(p, N_OR, proto_leaf(p, 1), proto_leaf(p, 58)), leaf);
    return leaf;
}

/* ---------------------------------------------------------------------------------------------
 * Addresses. */

/* "10", "172.16", "192.168.1": nfdump's short IPv4 network forms, valid before a /len. */
static bool short_v4(const char *s, ns_addr *out)
{
    uint32_t v = 0;
    int octets = 0;
    while (*s) {
        unsigned o = 0;
        int digits = 0;
        while (is_digit(*s) && digits < 4) {
            o = o * 10 + (unsigned)(*s++ - '0');
            digits++;
        }
        if (digits == 0 || digits > 3 || o > 255 || octets == 4)
            return false;
        v |= o << (24 - 8 * octets);
        octets++;
        if (*s == '.' && s[1])
            s++;
        else if (*s)
            return false;
    }
    if (octets == 0)
        return false;
    ns_addr_from_v4(out, v);
    return true;
}

static void clear_host_bits(ns_prefix *x)
{
    for (unsigned bit = x->len; bit < 128; bit++)
        x->addr.b[bit / 8] &= (uint8_t) ~(0x80u >> (bit % 8));
}

/* Reads the word t as "A" or "A/len". Returns 1 (parsed; *had_len says which form, *v4 the
 * family), 0 (not an address; no message) or -1 (an address with a bad length; message set). */
static int word_prefix(parser *p, const tok *t, ns_prefix *out, bool *had_len, bool *v4)
{
    char buf[64];
    if (t->kind != T_WORD || t->len >= sizeof buf)
        return 0;
    memcpy(buf, p->s + t->off, t->len);
    buf[t->len] = 0;
    char *slash = strchr(buf, '/');
    if (slash)
        *slash = 0;
    *v4 = strchr(buf, ':') == NULL;
    if (ns_addr_parse(buf, &out->addr) < 0 && !(slash && *v4 && short_v4(buf, &out->addr)))
        return 0;
    unsigned max = *v4 ? 32 : 128, len = max;
    *had_len = slash != NULL;
    if (slash) {
        const char *q = slash + 1;
        size_t qoff = t->off + (size_t)(q - buf), nd = strlen(q);
        len = 0;
        for (size_t i = 0; i < nd; i++) {
            if (!is_digit(q[i]) || nd > 3)
                return fail_at(p, qoff, "expected a prefix length after '/', got '%s'", q);
            len = len * 10 + (unsigned)(q[i] - '0');
        }
        if (nd == 0)
            return fail_at(p, qoff, "expected a prefix length after '/'");
        if (len > max)
            return fail_at(p, qoff, "prefix length %u out of range (%s: 0..%u)", len,
                           *v4 ? "IPv4" : "IPv6", max);
    }
    out->len = (uint8_t)(*v4 ? len + 96 : len);
    clear_host_bits(out);
    return 1;
}

/* A contiguous IPv4 netmask ("255.255.0.0") as a prefix length, or -1. */
static int netmask_len(const ns_addr *m)
{
    if (!ns_addr_is_v4(m))
        return -1;
    uint32_t v =
        (uint32_t)m->b[12] << 24 | (uint32_t)m->b[13] << 16 | (uint32_t)m->b[14] << 8 | m->b[15];
    uint32_t inv = ~v;
    if (inv & (inv + 1u))
        return -1;
    int n = 0;
    while (n < 32 && (v & (0x80000000u >> n)))
        n++;
    return n;
}

enum { A_HOST, A_NET, A_EITHER }; /* what a bare address word may be */

typedef struct addr_item_arg {
    const char *what;
} addr_item_arg;

static int addr_item(parser *p, const void *arg)
{
    const addr_item_arg *a = arg;
    ns_prefix x;
    bool had_len = false, v4 = false;
    int rc = word_prefix(p, cur(p), &x, &had_len, &v4);
    if (rc < 0)
        return -1;
    if (rc == 0)
        return expected(p, a->what);
    p->pos++;
    return push_pfx(p, &x);
}

/* host/ip A, net A/len | A mask M | A M, and (kind A_EITHER) exporter A or A/len; each also
 * takes "in [list]" of addresses and prefixes. fa/fb are the address fields (fb < 0: one). */
static int32_t prim_addr(parser *p, int kind, int fa, int fb, int dir)
{
    static const char *const whats[] = {
        "an address",
        "a prefix (A/len or A mask M)",
        "an address or prefix",
    };
    const char *what = whats[kind];
    flt_ins in = {.op = OP_ADDR};
    numprim np = {.fa = (int8_t)fa, .fb = (int8_t)fb};
    if (is_kw(p, cur(p), "in")) {
        addr_item_arg arg = {"an address or prefix"};
        size_t start = p->npfx, n = 0;
        p->pos++;
        if (parse_list(p, arg.what, addr_item, &arg, &n) < 0)
            return -1;
        in.op = OP_ADDR_IN;
        in.idx = (uint32_t)start;
        in.n = (uint32_t)n;
        return dual(p, dir, &in, &np);
    }
    const tok *t = cur(p);
    ns_prefix x;
    bool had_len = false, v4 = false;
    int rc = word_prefix(p, t, &x, &had_len, &v4);
    if (rc < 0)
        return -1;
    if (rc == 0)
        return expected(p, what);
    if (kind == A_HOST && had_len)
        return fail_at(p, t->off,
                       "expected an address after '%.*s', got the prefix '%.*s' (use 'net')",
                       TOKTXT(p, &p->toks[p->pos - 1]), TOKTXT(p, t));
    p->pos++;
    if (kind == A_NET && !had_len) {
        /* "net A mask M" or nfdump's "net A M" */
        const tok *m = cur(p);
        ns_addr mask;
        char buf[64];
        bool kw = is_kw(p, m, "mask");
        if (kw) {
            p->pos++;
            m = cur(p);
        }
        bool is_addr = m->kind == T_WORD && m->len < sizeof buf;
        if (is_addr) {
            memcpy(buf, p->s + m->off, m->len);
            buf[m->len] = 0;
            is_addr = ns_addr_parse(buf, &mask) == 0;
        }
        if (!is_addr) {
            if (kw)
                return expected(p, "an IPv4 netmask");
            return fail_at(p, t->off,
                           "'%.*s' needs a prefix length (A/len) or a netmask (A mask M)",
                           TOKTXT(p, t));
        }
        if (!v4)
            return fail_at(p, t->off, "a netmask needs an IPv4 address; use '%.*s/len'",
                           TOKTXT(p, t));
        int ml = netmask_len(&mask);
        if (ml < 0)
            return fail_at(p, m->off, "netmask '%.*s' is not a contiguous IPv4 mask", TOKTXT(p, m));
        p->pos++;
        x.len = (uint8_t)(ml + 96);
        clear_host_bits(&x);
    }
    if (push_pfx(p, &x) < 0)
        return -1;
    in.idx = (uint32_t)(p->npfx - 1);
    return dual(p, dir, &in, &np);
}

/* ---------------------------------------------------------------------------------------------
 * The grammar:
 *   expr    := and ( ("or" | "||") and )*
 *   and     := unary ( ("and" | "&&") unary )*
 *   unary   := ("not" | "!")* primary
 *   primary := "(" expr ")" | [qualifier] primitive */

static int32_t parse_or(parser *p);

static int32_t bad_qualifier(parser *p, const tok *q, const tok *k)
{
    return fail_at(p, k->off, "'%.*s' cannot be used with '%.*s'", TOKTXT(p, q), TOKTXT(p, k));
}

static int32_t parse_primitive(parser *p)
{
    const tok *q = cur(p); /* the qualifier, if any */
    int dir = D_NONE;
    if (is_kw(p, q, "src") || is_kw(p, q, "dst")) {
        bool src = is_kw(p, q, "src");
        const tok *n1 = peek(p, 1), *n2 = peek(p, 2);
        dir = src ? D_SRC : D_DST;
        p->pos++;
        if ((n1->kind == T_OR || n1->kind == T_AND) && is_kw(p, n2, src ? "dst" : "src")) {
            dir = n1->kind == T_OR ? D_EITHER : D_BOTH;
            p->pos += 2;
        }
    } else if (is_kw(p, q, "in") || is_kw(p, q, "out")) {
        dir = is_kw(p, q, "in") ? D_IN : D_OUT;
        p->pos++;
    }
    const tok *k = cur(p);
    if (k->kind != T_WORD) {
        if (dir != D_NONE)
            return expected(p, "host, ip, net, port, as, if, mask, vlan, tos, bytes or packets");
        return expected(p, "a filter primitive");
    }
    for (size_t i = 0; i < sizeof numprims / sizeof numprims[0]; i++) {
        if (is_kw(p, k, numprims[i].kw)) {
            if (dir != D_NONE && !(numprims[i].dirs & DQ(dir)))
                return bad_qualifier(p, q, k);
            p->pos++;
            return prim_num(p, &numprims[i], dir);
        }
    }
    bool host = is_kw(p, k, "host") || is_kw(p, k, "ip");
    if (host || is_kw(p, k, "net")) {
        if (dir != D_NONE && !(DQ_SD & DQ(dir)))
            return bad_qualifier(p, q, k);
        p->pos++;
        return prim_addr(p, host ? A_HOST : A_NET, F_SRC, F_DST, dir);
    }
    if (dir != D_NONE)
        return expected(p, "host, ip, net, port, as, if, mask, vlan, tos, bytes or packets");

    p->pos++;
    if (is_kw(p, k, "any")) {
        flt_ins in = {.op = OP_TRUE};
        return new_leaf(p, &in);
    }
    if (is_kw(p, k, "ipv4") || is_kw(p, k, "inet") || is_kw(p, k, "ipv6") || is_kw(p, k, "inet6")) {
        flt_ins in = {.op = is_kw(p, k, "ipv4") || is_kw(p, k, "inet") ? OP_V4 : OP_V6};
        return new_leaf(p, &in);
    }
    if (is_kw(p, k, "exporter") || is_kw(p, k, "router") || is_kw(p, k, "next")) {
        /* exporter A | exporter A/len | exporter|router ip A | exporter|router net A/len |
         * next ip A: one address field, no src/dst */
        int field = is_kw(p, k, "next") ? F_NEXTHOP : F_EXPORTER;
        const tok *w = cur(p);
        if (is_kw(p, w, "ip") || is_kw(p, w, "host") || is_kw(p, w, "net")) {
            p->pos++;
            return prim_addr(p, is_kw(p, w, "net") ? A_NET : A_HOST, field, -1, D_NONE);
        }
        if (!is_kw(p, k, "exporter"))
            return expected(p, "'ip' or 'net'");
        return prim_addr(p, A_EITHER, field, -1, D_NONE);
    }
    if (is_kw(p, k, "flowdir")) {
        /* nfdump: ingress = 0, egress = 1; stored: 1 ingress, 2 egress */
        const tok *w = cur(p);
        uint64_t d = 0;
        if (is_kw(p, w, "ingress") || is_kw(p, w, "0"))
            d = ENG_DIR_INGRESS;
        else if (is_kw(p, w, "egress") || is_kw(p, w, "1"))
            d = ENG_DIR_EGRESS;
        else
            return expected(p, "'ingress' or 'egress'");
        p->pos++;
        return num_leaf(p, F_DIRECTION, C_EQ, d);
    }
    int pr = proto_by_name(p, k, true);
    if (pr == 1 && (is_kw(p, cur(p), "type") || is_kw(p, cur(p), "code"))) {
        /* nfdump's "icmp type N" / "icmp code N" */
        bool type = is_kw(p, cur(p), "type");
        p->pos++;
        for (size_t i = 0; i < sizeof numprims / sizeof numprims[0]; i++)
            if (strcmp(numprims[i].kw, type ? "icmp-type" : "icmp-code") == 0)
                return prim_num(p, &numprims[i], D_NONE);
    }
    if (pr >= 0)
        return proto_leaf(p, (uint8_t)pr);
    p->pos--;
    return expected(p, "a filter primitive (host, net, port, proto, any, ...)");
}

static int32_t parse_primary(parser *p)
{
    const tok *t = cur(p);
    if (t->kind == T_LP) {
        if (p->depth >= QRY_FILTER_MAX_DEPTH) {
            p->rc = NS_E_TOO_MANY;
            return fail_at(p, t->off, "parentheses nested deeper than %d", QRY_FILTER_MAX_DEPTH);
        }
        p->depth++;
        p->pos++;
        int32_t e = parse_or(p);
        if (e < 0)
            return -1;
        const tok *c = cur(p);
        if (c->kind == T_END)
            return fail_at(p, c->off, "expected ')' to close '(' at col %u", t->off + 1u);
        if (c->kind != T_RP)
            return expected(p, "'and', 'or' or ')'");
        p->depth--;
        p->pos++;
        return e;
    }
    if (t->kind != T_WORD)
        return expected(p, "a filter primitive");
    return parse_primitive(p);
}

static int32_t parse_unary(parser *p)
{
    unsigned nots = 0;
    while (cur(p)->kind == T_NOT) {
        nots++;
        p->pos++;
    }
    int32_t e = parse_primary(p);
    if (e < 0 || !(nots & 1))
        return e;
    int32_t n = new_node(p, N_NOT);
    if (n < 0)
        return -1;
    add_child(p, n, e);
    return n;
}

static int32_t parse_chain(parser *p, uint8_t op_tok, uint8_t kind, int32_t (*sub)(parser *))
{
    int32_t first = sub(p);
    if (first < 0 || cur(p)->kind != op_tok)
        return first;
    int32_t n = new_node(p, kind);
    if (n < 0)
        return -1;
    add_child(p, n, first);
    while (cur(p)->kind == op_tok) {
        p->pos++;
        int32_t c = sub(p);
        if (c < 0)
            return -1;
        add_child(p, n, c);
    }
    return n;
}

static int32_t parse_and(parser *p)
{
    return parse_chain(p, T_AND, N_AND, parse_unary);
}

static int32_t parse_or(parser *p)
{
    return parse_chain(p, T_OR, N_OR, parse_and);
}

/* ---------------------------------------------------------------------------------------------
 * Code generation: leaves are laid out from the end of the program backwards, so every jump
 * target already exists and lies after the instruction that jumps to it. t and f are where
 * "true" and "false" go; the result is the node's first instruction. */

static uint32_t count_leaves(const parser *p, int32_t ni)
{
    const node *n = &p->nodes[ni];
    if (n->kind == N_LEAF)
        return 1;
    uint32_t k = 0;
    for (int32_t c = n->child; c >= 0; c = p->nodes[c].next)
        k += count_leaves(p, c);
    return k;
}

static uint32_t gen(const parser *p, int32_t ni, uint32_t t, uint32_t f, flt_ins *code,
                    uint32_t *pos, uint32_t *cols)
{
    const node *n = &p->nodes[ni];
    uint32_t s;
    switch (n->kind) {
    case N_LEAF: {
        uint32_t at = --*pos;
        code[at] = n->leaf;
        code[at].jt = t;
        code[at].jf = f;
        if (n->leaf.op == OP_V4 || n->leaf.op == OP_V6)
            *cols |= COL(SRC);
        else if (n->leaf.op != OP_TRUE)
            *cols |= field_cols[n->leaf.field];
        return at;
    }
    case N_NOT:
        return gen(p, n->child, f, t, code, pos, cols);
    case N_AND: /* children newest first: the last one is generated first */
        s = t;
        for (int32_t c = n->child; c >= 0; c = p->nodes[c].next)
            s = gen(p, c, s, f, code, pos, cols);
        return s;
    default: /* N_OR */
        s = f;
        for (int32_t c = n->child; c >= 0; c = p->nodes[c].next)
            s = gen(p, c, t, s, code, pos, cols);
        return s;
    }
}

/* ---------------------------------------------------------------------------------------------
 * Addresses for index pruning: derive() appends to p->addrs a set S such that every row the
 * subtree matches has src or dst in S, or returns false (appending nothing) when it cannot. */

static bool push_addr(parser *p, const ns_addr *a)
{
    if (p->naddrs == p->capaddrs) {
        size_t ncap = p->capaddrs ? p->capaddrs * 2 : 8;
        ns_addr *nn = realloc(p->addrs, ncap * sizeof *nn);
        if (!nn)
            return false;
        p->addrs = nn;
        p->capaddrs = ncap;
    }
    p->addrs[p->naddrs++] = *a;
    return true;
}

static bool derive(parser *p, int32_t ni)
{
    const node *n = &p->nodes[ni];
    size_t mark = p->naddrs;
    if (n->kind == N_LEAF) {
        const flt_ins *in = &n->leaf;
        if ((in->op != OP_ADDR && in->op != OP_ADDR_IN) ||
            (in->field != F_SRC && in->field != F_DST))
            return false;
        uint32_t cnt = in->op == OP_ADDR ? 1 : in->n;
        for (uint32_t i = 0; i < cnt; i++) {
            const ns_prefix *x = &p->pfx[in->idx + i];
            if (x->len != 128 || !push_addr(p, &x->addr)) {
                p->naddrs = mark;
                return false;
            }
        }
        return true;
    }
    if (n->kind == N_NOT)
        return false;
    if (n->kind == N_OR) {
        for (int32_t c = n->child; c >= 0; c = p->nodes[c].next) {
            if (!derive(p, c)) {
                p->naddrs = mark;
                return false;
            }
        }
        return true;
    }
    /* N_AND: any child's set will do; keep the smallest */
    bool have = false;
    for (int32_t c = n->child; c >= 0; c = p->nodes[c].next) {
        size_t m2 = p->naddrs;
        if (!derive(p, c))
            continue;
        size_t k = p->naddrs - m2;
        if (!have || k < m2 - mark) {
            memmove(p->addrs + mark, p->addrs + m2, k * sizeof *p->addrs);
            p->naddrs = mark + k;
            have = true;
        } else {
            p->naddrs = m2;
        }
    }
    return have;
}

static int cmp_addr(const void *a, const void *b)
{
    return memcmp(a, b, sizeof(ns_addr));
}

/* ---------------------------------------------------------------------------------------------
 * Entry point. */

int qry_filter_compile(const char *text, qry_filter **out, char *err, size_t errcap)
{
    parser p = {.err = err, .errcap = errcap};
    qry_filter *f = NULL;
    int32_t root;
    *out = NULL;
    if (err && errcap)
        err[0] = 0;
    if (!text)
        text = "";
    p.s = text;
    p.len = strnlen(text, QRY_FILTER_MAX_LEN + 1);
    if (p.len > QRY_FILTER_MAX_LEN) {
        p.rc = NS_E_TOO_MANY;
        fail_at(&p, QRY_FILTER_MAX_LEN, "filter longer than %d bytes", QRY_FILTER_MAX_LEN);
        goto done;
    }
    if (tokenize(&p) < 0)
        goto done;
    if (cur(&p)->kind == T_END) {
        flt_ins any = {.op = OP_TRUE};
        root = new_leaf(&p, &any); /* nfdump: an empty filter is "any" */
    } else {
        root = parse_or(&p);
        if (root >= 0 && cur(&p)->kind != T_END) {
            const tok *t = cur(&p);
            if (t->kind == T_RP)
                fail_at(&p, t->off, "unexpected ')' without a matching '('");
            else
                expected(&p, "'and', 'or' or end of input");
            root = -1;
        }
    }
    if (root < 0)
        goto done;

    f = calloc(1, sizeof *f);
    if (!f) {
        nomem(&p);
        goto done;
    }
    uint32_t nleaves = count_leaves(&p, root), pos = nleaves;
    f->ins = malloc(nleaves * sizeof *f->ins);
    if (!f->ins) {
        nomem(&p);
        goto done;
    }
    f->n = nleaves;
    uint32_t start = gen(&p, root, nleaves, nleaves + 1, f->ins, &pos, &f->cols);
    if (start != 0 || pos != 0) { /* cannot happen: every leaf is laid out exactly once */
        p.rc = NS_E_CORRUPT;
        goto done;
    }
    if (derive(&p, root) && p.naddrs > 0) {
        qsort(p.addrs, p.naddrs, sizeof *p.addrs, cmp_addr);
        size_t u = 0;
        for (size_t i = 0; i < p.naddrs; i++)
            if (u == 0 || memcmp(&p.addrs[i], &p.addrs[u - 1], sizeof(ns_addr)) != 0)
                p.addrs[u++] = p.addrs[i];
        f->naddrs = u;
        f->addrs = p.addrs;
        p.addrs = NULL;
    }
    if (p.npfx) {
        f->nets = malloc(p.npfx * sizeof *f->nets);
        if (!f->nets) {
            nomem(&p);
            goto done;
        }
        for (size_t i = 0; i < p.npfx; i++)
            net_make(&p.pfx[i], &f->nets[i]);
    }
    f->nums = p.nums;
    p.nums = NULL;
    *out = f;
    f = NULL;
done:
    qry_filter_free(f);
    free(p.toks);
    free(p.nodes);
    free(p.nums);
    free(p.pfx);
    free(p.addrs);
    return p.rc;
}
