/* ingest/pcap.c — the UDP datagrams of a pcap or pcapng capture, for ns2flows-replay and offline
 * ingest. libpcap reads the file formats; we parse the link layer (Ethernet with 802.1Q/802.1ad
 * tags, Linux SLL/SLL2, raw IP, BSD loopback), IPv4 (RFC 791), IPv6 and its extension headers
 * (RFC 8200) and UDP (RFC 768), all through ns_cur. Fragments are counted, not reassembled. */
#include "ingest/ingest.h"

#include <errno.h>
#include <pcap/pcap.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

/* EtherTypes (IEEE registry). 0x9100 is the pre-802.1ad QinQ outer tag some switches still use. */
#define ETH_IPV4     0x0800u
#define ETH_IPV6     0x86ddu
#define ETH_VLAN     0x8100u
#define ETH_QINQ     0x88a8u
#define ETH_QINQ_OLD 0x9100u

/* The file-level number for raw IP. libpcap maps it to DLT_RAW when it reads a file, but accept
 * it as well in case a build passes it through unmapped. */
#define LINKTYPE_RAW 101

/* Address families found in DLT_NULL / DLT_LOOP headers: the writer's own AF_ values, so IPv6
 * differs per OS (Linux, NetBSD/OpenBSD, FreeBSD, macOS). */
#define BSD_AF_INET          2u
#define BSD_AF_INET6_LINUX   10u
#define BSD_AF_INET6_BSD     24u
#define BSD_AF_INET6_FREEBSD 28u
#define BSD_AF_INET6_DARWIN  30u

/* IP protocol numbers (IANA). */
#define PROTO_HOPOPTS  0u
#define PROTO_UDP      17u
#define PROTO_ROUTING  43u
#define PROTO_FRAGMENT 44u
#define PROTO_AH       51u
#define PROTO_DSTOPTS  60u

#define IP4_MF        0x2000u /* more fragments */
#define IP4_OFFSET    0x1fffu /* fragment offset, 8-byte units */
#define IP6_FRAG_MORE 0x0001u /* M flag in the fragment header's offset word */

/* Caps on counts a packet controls: each tag or extension header is at least 4 or 8 bytes, so
 * the cursor bounds the loops anyway; the caps turn silly stacks into "malformed". */
#define MAX_VLAN_TAGS 8
#define MAX_IP6_EXT   16

struct ing_pcap {
    pcap_t *pc;
    int dlt;
    int end_rc; /* after the end or an error: what every further call returns */
    bool done;
    char errmsg[PCAP_ERRBUF_SIZE + 64];
    ing_pcap_stats st;
};

/* Where one packet ended up; every packet read gets exactly one, so the counters add up to
 * st.packets. */
typedef enum { PKT_UDP, PKT_SKIP, PKT_FRAG, PKT_BAD } pkt_kind;

/* What the link layer carries. */
typedef enum { L3_OTHER, L3_V4, L3_V6, L3_BAD } l3_kind;

static void set_err(char *err, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Formats into the caller's err buffer, which may be NULL. */
static void set_err(char *err, size_t cap, const char *fmt, ...)
{
    va_list ap;
    if (!err || cap == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(err, cap, fmt, ap);
    va_end(ap);
}

/* libpcap reports failures as text only. A short read is the one cause worth telling apart (a
 * capture cut off while being written or copied); everything else is fallback. */
static int pcap_msg_rc(const char *msg, int fallback)
{
    return strstr(msg, "truncated") ? NS_E_TRUNC : fallback;
}

static bool dlt_supported(int dlt)
{
    switch (dlt) {
    case DLT_EN10MB:
    case DLT_LINUX_SLL:
    case DLT_LINUX_SLL2:
    case DLT_RAW:
    case LINKTYPE_RAW:
    case DLT_IPV4:
    case DLT_IPV6:
    case DLT_NULL:
    case DLT_LOOP:
        return true;
    default:
        return false;
    }
}

/* Steps over any VLAN tags (each: TCI(2) inner-type(2), stacked for QinQ) and names the
 * network layer. 802.3 frames have a length (< 0x0600) where the type would be: LLC, not IP. */
static l3_kind from_ethertype(ns_cur *c, uint16_t type)
{
    for (int tags = 0; type == ETH_VLAN || type == ETH_QINQ || type == ETH_QINQ_OLD; tags++) {
        if (tags == MAX_VLAN_TAGS)
            return L3_BAD;
        if (!ns_cur_skip(c, 2) || !ns_cur_u16(c, &type))
            return L3_BAD;
    }
    if (type == ETH_IPV4)
        return L3_V4;
    if (type == ETH_IPV6)
        return L3_V6;
    return L3_OTHER;
}

/* Raw IP has no link header: the version nibble of the first byte says which IP it is. */
static l3_kind from_version(const ns_cur *c)
{
    ns_cur peek = *c;
    uint8_t b;
    if (!ns_cur_u8(&peek, &b))
        return L3_BAD;
    if (b >> 4 == 4)
        return L3_V4;
    if (b >> 4 == 6)
        return L3_V6;
    return L3_BAD;
}

/* Consumes the link-layer header, leaving c at the network-layer header. */
static l3_kind link_layer(int dlt, ns_cur *c)
{
    uint16_t type;
    uint32_t af;
    switch (dlt) {
    case DLT_EN10MB: /* dst(6) src(6) type(2) */
        if (!ns_cur_skip(c, 12) || !ns_cur_u16(c, &type))
            return L3_BAD;
        return from_ethertype(c, type);
    case DLT_LINUX_SLL: /* pkttype(2) hatype(2) halen(2) addr(8) protocol(2) */
        if (!ns_cur_skip(c, 14) || !ns_cur_u16(c, &type))
            return L3_BAD;
        return from_ethertype(c, type);
    case DLT_LINUX_SLL2: /* protocol(2) reserved(2) ifindex(4) hatype(2) pkttype(1) halen(1)
                            addr(8) */
        if (!ns_cur_u16(c, &type) || !ns_cur_skip(c, 18))
            return L3_BAD;
        return from_ethertype(c, type);
    case DLT_RAW:
    case LINKTYPE_RAW:
        return from_version(c);
    case DLT_IPV4:
        return L3_V4; /* the IPv4 parser still checks the version */
    case DLT_IPV6:
        return L3_V6;
    case DLT_NULL:
    case DLT_LOOP:
        /* A 4-byte address family: network order for DLT_LOOP, the writing host's order for
         * DLT_NULL. AF values are small, so a value with high bits set was written
         * little-endian (the heuristic Wireshark uses too). */
        if (!ns_cur_u32(c, &af))
            return L3_BAD;
        if (af & 0xffff0000u)
            af = __builtin_bswap32(af);
        if (af == BSD_AF_INET)
            return L3_V4;
        if (af == BSD_AF_INET6_LINUX || af == BSD_AF_INET6_BSD || af == BSD_AF_INET6_FREEBSD ||
            af == BSD_AF_INET6_DARWIN)
            return L3_V6;
        return L3_OTHER;
    default:
        return L3_BAD; /* refused at open; kept for completeness */
    }
}

/* c: the captured bytes of the IP payload; wire: its length on the wire per the IP header.
 * The UDP length must fit what the IP header says was sent; if the capture's snap length cut
 * the datagram short, the payload is clamped to what was captured. */
static pkt_kind udp(ns_cur *c, size_t wire, ing_udp *u)
{
    uint16_t ulen;
    ns_cur payload;
    if (!ns_cur_u16(c, &u->sport) || !ns_cur_u16(c, &u->dport) || !ns_cur_u16(c, &ulen) ||
        !ns_cur_skip(c, 2))
        return PKT_BAD;
    if (ulen < 8 || ulen > wire)
        return PKT_BAD;
    size_t want = ulen - 8u;
    if (want > c->left)
        want = c->left;
    if (!ns_cur_sub(c, want, &payload)) /* cannot fail: want <= c->left */
        return PKT_BAD;
    u->payload = payload.p;
    u->len = payload.left;
    return PKT_UDP;
}

/* missing: bytes of the frame that were on the wire but not captured (snap length). */
static pkt_kind ipv4(ns_cur *c, size_t missing, ing_udp *u)
{
    size_t wire = c->left + missing;
    uint8_t vihl, proto;
    uint16_t tot, frag;
    uint32_t src, dst;
    ns_cur body;

    /* version/IHL(1) TOS(1) total(2) id(2) flags/offset(2) TTL(1) proto(1) csum(2) src dst */
    if (!ns_cur_u8(c, &vihl) || !ns_cur_skip(c, 1) || !ns_cur_u16(c, &tot) || !ns_cur_skip(c, 2) ||
        !ns_cur_u16(c, &frag) || !ns_cur_skip(c, 1) || !ns_cur_u8(c, &proto) ||
        !ns_cur_skip(c, 2) || !ns_cur_u32(c, &src) || !ns_cur_u32(c, &dst))
        return PKT_BAD;
    size_t ihl = (size_t)(vihl & 0x0fu) * 4u;
    if (vihl >> 4 != 4 || ihl < 20 || tot < ihl || tot > wire)
        return PKT_BAD;
    if (!ns_cur_skip(c, ihl - 20)) /* options */
        return PKT_BAD;
    /* The total length drops Ethernet padding and trailers; the capture may hold less. */
    size_t body_wire = tot - ihl;
    if (!ns_cur_sub(c, body_wire < c->left ? body_wire : c->left, &body))
        return PKT_BAD;
    if (proto != PROTO_UDP)
        return PKT_SKIP;
    if ((frag & IP4_MF) || (frag & IP4_OFFSET))
        return PKT_FRAG;
    ns_addr_from_v4(&u->src, src);
    ns_addr_from_v4(&u->dst, dst);
    return udp(&body, body_wire, u);
}

static pkt_kind ipv6(ns_cur *c, size_t missing, ing_udp *u)
{
    size_t wire = c->left + missing;
    uint32_t vtcfl;
    uint16_t plen;
    uint8_t nh;
    ns_cur body;
    bool fragment = false;

    /* version/class/flow(4) payload length(2) next header(1) hop limit(1) src(16) dst(16) */
    if (!ns_cur_u32(c, &vtcfl) || !ns_cur_u16(c, &plen) || !ns_cur_u8(c, &nh) ||
        !ns_cur_skip(c, 1) || !ns_cur_bytes(c, u->src.b, 16) || !ns_cur_bytes(c, u->dst.b, 16))
        return PKT_BAD;
    if (vtcfl >> 28 != 6 || (size_t)plen + 40u > wire)
        return PKT_BAD;
    /* Payload bytes on the wire not yet walked. A jumbogram (plen 0, RFC 2675) has no room for
     * its hop-by-hop header under this count, so it ends up malformed: not worth supporting. */
    size_t left_wire = plen;
    if (!ns_cur_sub(c, left_wire < c->left ? left_wire : c->left, &body))
        return PKT_BAD;

    for (int n = 0;; n++) {
        uint8_t next, len;
        uint16_t offm;
        size_t hlen;
        switch (nh) {
        case PROTO_UDP:
            return fragment ? PKT_FRAG : udp(&body, left_wire, u);
        case PROTO_HOPOPTS:
        case PROTO_ROUTING:
        case PROTO_DSTOPTS:
        case PROTO_AH:
            /* next(1) length(1) ...: length in 8-byte units not counting the first 8, except
             * AH (RFC 4302) which counts 4-byte units minus 2. */
            if (n == MAX_IP6_EXT || !ns_cur_u8(&body, &next) || !ns_cur_u8(&body, &len))
                return PKT_BAD;
            hlen = nh == PROTO_AH ? ((size_t)len + 2u) * 4u : ((size_t)len + 1u) * 8u;
            if (hlen > left_wire || !ns_cur_skip(&body, hlen - 2u))
                return PKT_BAD;
            break;
        case PROTO_FRAGMENT:
            /* next(1) reserved(1) offset<<3|M(2) id(4). An atomic fragment (offset 0, M 0,
             * RFC 6946) is a whole datagram: keep walking. A first fragment is walked to learn
             * its protocol; a later one has no headers to walk, so its next header decides. */
            hlen = 8;
            if (n == MAX_IP6_EXT || hlen > left_wire || !ns_cur_u8(&body, &next) ||
                !ns_cur_skip(&body, 1) || !ns_cur_u16(&body, &offm) || !ns_cur_skip(&body, 4))
                return PKT_BAD;
            if (offm >> 3 != 0)
                return next == PROTO_UDP ? PKT_FRAG : PKT_SKIP;
            if (offm & IP6_FRAG_MORE)
                fragment = true;
            break;
        default:
            return PKT_SKIP; /* TCP, ICMPv6, ESP, no next header, ... */
        }
        left_wire -= hlen;
        nh = next;
    }
}

static pkt_kind classify(int dlt, ns_cur *c, size_t missing, ing_udp *u)
{
    switch (link_layer(dlt, c)) {
    case L3_V4:
        return ipv4(c, missing, u);
    case L3_V6:
        return ipv6(c, missing, u);
    case L3_OTHER:
        return PKT_SKIP;
    case L3_BAD:
    default:
        return PKT_BAD;
    }
}

int ing_pcap_open(const char *path, ing_pcap **out, char *err, size_t errcap)
{
    char pcerr[PCAP_ERRBUF_SIZE] = "";
    ing_pcap *p;
    FILE *f;
    int rc;

    *out = NULL;
    /* Open the file ourselves so a missing or unreadable file is reported as -errno; libpcap
     * would fold it into text. On success pcap_close() closes f. */
    f = fopen(path, "rbe");
    if (!f) {
        rc = -errno;
        set_err(err, errcap, "%s: %s", path, strerror(errno));
        return rc;
    }
    p = calloc(1, sizeof *p);
    if (!p) {
        fclose(f);
        set_err(err, errcap, "%s: out of memory", path);
        return NS_E_NOMEM;
    }
    /* MICRO: libpcap scales nanosecond captures down, so ts.tv_usec is always microseconds. */
    p->pc = pcap_fopen_offline_with_tstamp_precision(f, PCAP_TSTAMP_PRECISION_MICRO, pcerr);
    if (!p->pc) {
        fclose(f); /* libpcap leaves f open when it refuses it */
        free(p);
        set_err(err, errcap, "%s: not a readable pcap/pcapng capture: %s", path, pcerr);
        return pcap_msg_rc(pcerr, NS_E_MAGIC);
    }
    p->dlt = pcap_datalink(p->pc);
    if (!dlt_supported(p->dlt)) {
        const char *name = pcap_datalink_val_to_name(p->dlt);
        set_err(err, errcap,
                "%s: link type %d (%s) not supported (Ethernet, Linux SLL/SLL2, raw IP and BSD "
                "loopback are)",
                path, p->dlt, name ? name : "unknown");
        ing_pcap_close(p);
        return NS_E_VERSION;
    }
    *out = p;
    return 0;
}

int ing_pcap_next(ing_pcap *p, ing_udp *u, char *err, size_t errcap)
{
    struct pcap_pkthdr *h;
    const u_char *data;

    while (!p->done) {
        int rc = pcap_next_ex(p->pc, &h, &data);
        if (rc == 0)
            continue; /* a live capture's timeout; files never return it */
        if (rc == PCAP_ERROR_BREAK) {
            p->done = true;
            p->end_rc = 0;
            break;
        }
        if (rc < 0) {
            /* A bad record header or a short last record: libpcap cannot resynchronise, so
             * this is the end of what can be read. */
            const char *msg = pcap_geterr(p->pc);
            p->done = true;
            p->end_rc = pcap_msg_rc(msg, NS_E_CORRUPT);
            snprintf(p->errmsg, sizeof p->errmsg, "after packet %llu: %s",
                     (unsigned long long)p->st.packets, msg);
            break;
        }

        p->st.packets++;
        memset(u, 0, sizeof *u);
        ns_cur c = ns_cur_make(data, h->caplen);
        size_t missing = h->len > h->caplen ? (size_t)(h->len - h->caplen) : 0;
        switch (classify(p->dlt, &c, missing, u)) {
        case PKT_UDP:
            p->st.udp++;
            u->ts_us = (int64_t)h->ts.tv_sec * 1000000 + (int64_t)h->ts.tv_usec;
            return 1;
        case PKT_SKIP:
            p->st.skipped++;
            break;
        case PKT_FRAG:
            p->st.fragments++;
            break;
        case PKT_BAD:
        default:
            p->st.malformed++;
            break;
        }
    }
    if (p->end_rc < 0)
        set_err(err, errcap, "%s", p->errmsg);
    return p->end_rc;
}

void ing_pcap_get_stats(const ing_pcap *p, ing_pcap_stats *st)
{
    if (p)
        *st = p->st;
    else
        memset(st, 0, sizeof *st);
}

void ing_pcap_close(ing_pcap *p)
{
    if (!p)
        return;
    if (p->pc)
        pcap_close(p->pc);
    free(p);
}
