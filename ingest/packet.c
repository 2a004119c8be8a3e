/* ingest/packet.c — a sampled packet header (sFlow v5 sampled_header, IPFIX
 * dataLinkFrameSection IE 315) to flow fields: Ethernet II / 802.3 LLC-SNAP with 802.1Q,
 * 802.1ad and 0x9100 tag stacks, MPLS, IPv4 (RFC 791) and IPv6 (RFC 8200) with extension
 * headers, then TCP/UDP ports, TCP flags and ICMP type/code. The header is a prefix of the frame
 * chosen by the exporter (often 128 bytes), so running out of bytes inside L4 is normal and still
 * gives the L3 fields; every byte is read through the bounded cursor. */
#include "ingest/packet.h"

#define ETH_IPV4     0x0800u
#define ETH_IPV6     0x86ddu
#define ETH_8021Q    0x8100u
#define ETH_8021AD   0x88a8u
#define ETH_QINQ_OLD 0x9100u /* pre-standard QinQ outer tag */
#define ETH_MPLS     0x8847u
#define ETH_MPLS_MC  0x8848u

#define IPP_ICMP   1u
#define IPP_TCP    6u
#define IPP_UDP    17u
#define IPP_ICMPV6 58u

/* What the walk has found so far; fields reach f only once an IP header is complete. */
typedef struct pkt {
    eng_flow *f;
    bool vlan_set; /* the outer tag was taken: inner tags (and an EoMPLS payload's) are not */
    int depth;     /* Ethernet inside MPLS (EoMPLS) is followed once, not recursively */
} pkt;

static int ethernet(pkt *k, ns_cur c);

/* Ports, TCP flags and ICMP type/code from what is left after the IP header(s). A header cut
 * here keeps what could be read. */
static void l4(ns_cur c, uint8_t proto, eng_flow *f)
{
    uint16_t sp, dp;
    uint8_t type, code, flags;
    switch (proto) {
    case IPP_TCP:
    case IPP_UDP:
        if (!ns_cur_u16(&c, &sp) || !ns_cur_u16(&c, &dp))
            return;
        f->src_port = sp;
        f->dst_port = dp;
        /* TCP: seq (4), ack (4), data offset (1), then the flags byte */
        if (proto == IPP_TCP && ns_cur_skip(&c, 9) && ns_cur_u8(&c, &flags))
            f->tcp_flags = flags;
        return;
    case IPP_ICMP:
    case IPP_ICMPV6:
        if (!ns_cur_u8(&c, &type) || !ns_cur_u8(&c, &code))
            return;
        f->src_port = 0;
        f->dst_port = (uint16_t)((unsigned)type << 8 | code);
        return;
    default:
        return;
    }
}

static void set_l3(eng_flow *f, const ns_addr *src, const ns_addr *dst, uint8_t proto, uint8_t tos)
{
    f->src = *src;
    f->dst = *dst;
    f->proto = proto;
    f->tos = tos;
    f->src_port = 0;
    f->dst_port = 0;
    f->tcp_flags = 0;
}

static int ipv4(pkt *k, ns_cur c)
{
    uint8_t vihl, tos, ttl, proto;
    uint16_t total, id, frag, sum;
    uint32_t s4, d4;
    ns_addr src, dst;
    if (c.left < 20)
        return NS_E_TRUNC;
    ns_cur_u8(&c, &vihl);
    ns_cur_u8(&c, &tos);
    ns_cur_u16(&c, &total);
    ns_cur_u16(&c, &id);
    ns_cur_u16(&c, &frag);
    ns_cur_u8(&c, &ttl);
    ns_cur_u8(&c, &proto);
    ns_cur_u16(&c, &sum);
    ns_cur_u32(&c, &s4);
    ns_cur_u32(&c, &d4);
    if (vihl >> 4 != 4 || (vihl & 0x0f) < 5)
        return ING_E_PKT_IP;
    ns_addr_from_v4(&src, s4);
    ns_addr_from_v4(&dst, d4);
    set_l3(k->f, &src, &dst, proto, tos);
    /* a non-first fragment starts with payload bytes, not an L4 header */
    if ((frag & 0x1fffu) != 0)
        return 0;
    if (!ns_cur_skip(&c, (size_t)(vihl & 0x0f) * 4u - 20u))
        return 0; /* cut inside the options: L3 only */
    l4(c, proto, k->f);
    return 0;
}

static int ipv6(pkt *k, ns_cur c)
{
    uint32_t vtf;
    uint16_t plen;
    uint8_t nh, hlim;
    ns_addr src, dst;
    if (c.left < 40)
        return NS_E_TRUNC;
    ns_cur_u32(&c, &vtf);
    ns_cur_u16(&c, &plen);
    ns_cur_u8(&c, &nh);
    ns_cur_u8(&c, &hlim);
    ns_cur_bytes(&c, src.b, 16);
    ns_cur_bytes(&c, dst.b, 16);
    if (vtf >> 28 != 6)
        return ING_E_PKT_IP;
    uint8_t tclass = (uint8_t)(vtf >> 20);
    for (int i = 0; nh == 0 || nh == 43 || nh == 44 || nh == 60; i++) {
        uint8_t next, len;
        uint16_t off;
        if (i == ING_PKT_MAX_EXTHDR || !ns_cur_u8(&c, &next) || !ns_cur_u8(&c, &len)) {
            set_l3(k->f, &src, &dst, nh, tclass); /* cut (or too many): L3 only */
            return 0;
        }
        if (nh == 44) { /* fragment: fixed 8 bytes; offset in the top 13 bits of the next 16 */
            if (!ns_cur_u16(&c, &off) || (off >> 3) != 0 || !ns_cur_skip(&c, 4)) {
                set_l3(k->f, &src, &dst, next, tclass);
                return 0;
            }
        } else if (!ns_cur_skip(&c, ((size_t)len + 1u) * 8u - 2u)) {
            set_l3(k->f, &src, &dst, next, tclass);
            return 0;
        }
        nh = next;
    }
    set_l3(k->f, &src, &dst, nh, tclass);
    l4(c, nh, k->f);
    return 0;
}

/* Label stack entries until the bottom-of-stack bit; then the payload's first nibble says what
 * it is: 4/6 IP, 0 a pseudowire control word (RFC 4385) before an Ethernet frame. */
static int mpls(pkt *k, ns_cur c)
{
    uint32_t lse = 0;
    for (int i = 0;; i++) {
        if (i == ING_PKT_MAX_MPLS)
            return ING_E_PKT_NOT_IP;
        if (!ns_cur_u32(&c, &lse))
            return NS_E_TRUNC;
        if (lse & 0x100u)
            break;
    }
    if (c.left < 1)
        return NS_E_TRUNC;
    switch (c.p[0] >> 4) {
    case 4:
        return ipv4(k, c);
    case 6:
        return ipv6(k, c);
    case 0:
        if (k->depth > 0)
            return ING_E_PKT_NOT_IP;
        k->depth++;
        if (!ns_cur_skip(&c, 4))
            return NS_E_TRUNC;
        return ethernet(k, c);
    default:
        return ING_E_PKT_NOT_IP;
    }
}

static int ethernet(pkt *k, ns_cur c)
{
    uint16_t type, tci;
    if (!ns_cur_skip(&c, 12) || !ns_cur_u16(&c, &type)) /* destination, source MAC */
        return NS_E_TRUNC;
    for (int tags = 0; type == ETH_8021Q || type == ETH_8021AD || type == ETH_QINQ_OLD; tags++) {
        if (tags == ING_PKT_MAX_VLAN_TAGS)
            return ING_E_PKT_NOT_IP;
        if (!ns_cur_u16(&c, &tci) || !ns_cur_u16(&c, &type))
            return NS_E_TRUNC;
        if (!k->vlan_set) {
            k->f->vlan = (uint16_t)(tci & 0x0fffu);
            k->vlan_set = true;
        }
    }
    if (type < 0x0600u) { /* 802.3 length field: only LLC/SNAP can carry an EtherType */
        uint8_t dsap, ssap, ctl;
        if (!ns_cur_u8(&c, &dsap) || !ns_cur_u8(&c, &ssap) || !ns_cur_u8(&c, &ctl))
            return NS_E_TRUNC;
        if (dsap != 0xaa || ssap != 0xaa || ctl != 0x03)
            return ING_E_PKT_NOT_IP;
        if (!ns_cur_skip(&c, 3) || !ns_cur_u16(&c, &type)) /* OUI, then the EtherType */
            return NS_E_TRUNC;
    }
    switch (type) {
    case ETH_IPV4:
        return ipv4(k, c);
    case ETH_IPV6:
        return ipv6(k, c);
    case ETH_MPLS:
    case ETH_MPLS_MC:
        return mpls(k, c);
    default:
        return ING_E_PKT_NOT_IP;
    }
}

int ing__packet_decode(ns_cur frame, uint32_t header_protocol, eng_flow *f)
{
    pkt k = {.f = f};
    switch (header_protocol) {
    case ING_PKT_ETHERNET:
        return ethernet(&k, frame);
    case ING_PKT_IPV4:
        return ipv4(&k, frame);
    case ING_PKT_IPV6:
        return ipv6(&k, frame);
    default:
        return ING_E_PKT_PROTO;
    }
}

const char *ing__packet_strerror(int rc)
{
    switch (rc) {
    case ING_E_PKT_PROTO:
        return "sampled header protocol not decoded";
    case ING_E_PKT_NOT_IP:
        return "sampled frame does not carry IP";
    case ING_E_PKT_IP:
        return "malformed IP header in sampled frame";
    default:
        /* the sFlow/packet block never goes back to ing_strerror, which may send it here */
        return rc <= -11100 && rc >= -11199 ? "unknown sFlow or packet error" : ing_strerror(rc);
    }
}
