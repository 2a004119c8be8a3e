/* ingest/packet.h — decoding of a captured packet header (the first bytes of a frame) into the
 * addresses, ports, protocol, TCP flags, TOS and VLAN of a flow row. Internal to ingest/: used
 * for sFlow sampled_header records and for IPFIX dataLinkFrameSection (IE 315). Knows nothing
 * of either export protocol. Stateless and thread-safe. */
#ifndef ING_PACKET_H
#define ING_PACKET_H

#include "ingest/ingest.h"

/* Header protocols (sFlow v5 header_protocol numbering; IPFIX frame sections are Ethernet). */
enum {
    ING_PKT_ETHERNET = 1, /* ISO 8802-3 / Ethernet II, with 802.1Q / 802.1ad / QinQ tags */
    ING_PKT_IPV4 = 11,    /* the header starts with an IPv4 header */
    ING_PKT_IPV6 = 12,    /* the header starts with an IPv6 header */
};

/* Errors (the range -11150..-11159 of ING_E_SFLOW_*'s block; see ingest/sflow.h). */
enum {
    ING_E_PKT_PROTO = -11150,  /* header protocol not one of ING_PKT_* */
    ING_E_PKT_NOT_IP = -11151, /* the frame does not carry IPv4/IPv6 (ARP, LLDP, ...) */
    ING_E_PKT_IP = -11152,     /* an IP header that is not one (wrong version, IHL < 5) */
};

/* Caps on what a sampled header controls. */
#define ING_PKT_MAX_VLAN_TAGS 4 /* stacked 802.1Q/802.1ad tags walked */
#define ING_PKT_MAX_MPLS      8 /* MPLS labels walked before giving up */
#define ING_PKT_MAX_EXTHDR    8 /* IPv6 extension headers walked */

/* Decodes the packet header in frame (header_protocol is one of ING_PKT_*) into f:
 *   vlan      the outer VLAN id (the first tag of an 802.1Q / 802.1ad / 0x9100 stack), written
 *             whenever a tag was read, even if the function then fails (non-IP frame);
 *   src, dst, proto, tos (IPv4 TOS byte, IPv6 traffic class);
 *   src_port, dst_port for TCP/UDP (not for non-first fragments); ICMP/ICMPv6:
 *             dst_port = type << 8 | code and src_port = 0, as nfdump shows them;
 *   tcp_flags the TCP flags byte (CWR..FIN).
 * On success all of src, dst, proto, tos, src_port, dst_port and tcp_flags are written (ports
 * and flags 0 when the header does not reach them); other members of f are left as they are.
 * On failure only vlan may have been written.
 * IPv6 extension headers hop-by-hop (0), routing (43), fragment (44) and destination options
 * (60) are walked, at most ING_PKT_MAX_EXTHDR; proto is the header that follows them. A header
 * cut inside L4 (or inside the IPv4 options / IPv6 extension headers) still gives the L3 fields.
 * Ethernet frames may also carry MPLS (0x8847/0x8848, IP under the bottom label) or an
 * 802.2 LLC/SNAP header.
 * Returns 0 when at least an IP header was decoded, else NS_E_TRUNC (cut before the IP header
 * was complete), ING_E_PKT_PROTO, ING_E_PKT_NOT_IP or ING_E_PKT_IP. */
int ing__packet_decode(ns_cur frame, uint32_t header_protocol, eng_flow *f);

/* Names an ING_E_PKT_* code; codes outside -11100..-11199 go to ing_strerror(), so
 * ing_strerror() may delegate that block to ing__sflow_strerror() without a loop. Thread-safe. */
const char *ing__packet_strerror(int rc);

#endif
