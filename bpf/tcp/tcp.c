// tcp: retransmitted segments per peer, a log2 histogram of smoothed RTT
// samples, and resets sent and received. Tracepoints only (tcp:*): their
// fields come from tracefs at run time, no kernel struct is dereferenced.
#include <uapi/linux/ptrace.h>
#include <ebpfreceiver.h>

#ifndef MAX_PEERS
#define MAX_PEERS 4096
#endif
#ifndef RTT
#define RTT 0
#endif
#define RTT_SLOTS 32 // 2^31 us ≈ 36 min; longer srtt lands in the last slot

// tcp_send_reset's format (Linux 6.10+) has a field of type enum sk_rst_reason,
// which BCC copies into the args struct it generates; headers older than the
// running kernel do not declare it. The field is not read here, only its
// 4-byte size matters, so a placeholder declaration completes the type.
enum sk_rst_reason { SK_RST_REASON_PLACEHOLDER_FOR_BCC };

#define FAMILY_INET 2
#define FAMILY_INET6 10

// The peer as the kernel sees it from this host: its address (IPv4 stored
// IPv4-mapped, ::ffff:a.b.c.d, so one key serves both families) and its port
// in host byte order (the tracepoint already converted it).
struct peer_key {
    u8 addr[16];
    u16 port;
};

struct rtt_value {
    u64 count;
    u64 sum_us;
};

BPF_PERCPU_HASH(retransmits, struct peer_key, u64, MAX_PEERS);
BPF_PERCPU_ARRAY(retransmits_dropped, u64, 1);
#if RTT
BPF_PERCPU_ARRAY(rtt, struct rtt_value, RTT_SLOTS);
#endif
// index 0: resets sent (transmit), 1: resets received (receive)
BPF_PERCPU_ARRAY(resets, u64, 2);

// Fires once per retransmitted skb. Since Linux 6.x it fires for failed
// attempts too (err != 0), e.g. -EBUSY while the original copy is still in a
// host queue; only err == 0 means a segment went out again, so only those count
// (RetransSegs in /proc/net/snmp also skips the early -EBUSY/-ENOMEM exits).
TRACEPOINT_PROBE(tcp, tcp_retransmit_skb) {
#ifdef TP_TCP_RETRANSMIT_SKB_HAS_ERR // defined by the sidecar when tracefs has the field
    if (args->err != 0)
        return 0;
#endif
    struct peer_key key = {};
    if (args->family == FAMILY_INET) {
        key.addr[10] = 0xff;
        key.addr[11] = 0xff;
        __builtin_memcpy(&key.addr[12], args->daddr, 4);
    } else if (args->family == FAMILY_INET6) {
        __builtin_memcpy(key.addr, args->daddr_v6, 16);
    } else {
        return 0;
    }
    key.port = args->dport;
    u64 zero = 0;
    u64 *count = retransmits.lookup_or_try_init(&key, &zero);
    if (count)
        (*count)++;
    else
        count_dropped(retransmits_dropped.lookup(DROPPED_KEY));
    return 0;
}

#if RTT
// Fires for every segment an established socket receives; srtt is the
// smoothed RTT in microseconds (srtt_us >> 3). 0 means no RTT sample yet.
// Opt-in (parameter rtt): on a busy server it fires ~4 times per request,
// the only hook of this program that runs on the data path.
TRACEPOINT_PROBE(tcp, tcp_probe) {
    u64 srtt = args->srtt;
    if (srtt == 0)
        return 0;
    u32 slot = log2_slot(srtt, RTT_SLOTS);
    struct rtt_value *v = rtt.lookup(&slot);
    if (v) {
        v->count++;
        v->sum_us += srtt;
    }
    return 0;
}
#endif

TRACEPOINT_PROBE(tcp, tcp_send_reset) {
    int idx = 0;
    u64 *count = resets.lookup(&idx);
    if (count)
        (*count)++;
    return 0;
}

TRACEPOINT_PROBE(tcp, tcp_receive_reset) {
    int idx = 1;
    u64 *count = resets.lookup(&idx);
    if (count)
        (*count)++;
    return 0;
}
