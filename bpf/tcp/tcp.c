// tcp: retransmitted segments per peer, a histogram of smoothed RTT
// samples, and resets sent and received, each by the container and pod of
// the socket's owner. Tracepoints only (tcp:*): their fields come from
// tracefs at run time.
//
// Whose socket: retransmits fire from timers and softirqs, where the current
// task is unrelated, so the cgroup is the socket's own: the cgroup v2 the
// kernel stored in the socket when its owner created it (for an accepted
// socket, the listener's), read through sk->sk_cgrp_data.cgroup->kn->id at
// offsets from the running kernel's BTF. A reset sent for no socket (a
// connection refused) has no owner: cgroup 0, the host.
#include <uapi/linux/ptrace.h>
#include <ebpfreceiver.h>

#ifndef MAX_PEERS
#define MAX_PEERS 4096
#endif
#ifndef RTT
#define RTT 0
#endif
#ifndef PER_PEER
#define PER_PEER 1
#endif
#ifndef MAX_CGROUPS
#define MAX_CGROUPS 256
#endif
#ifndef HISTOGRAM_SCALE
#define HISTOGRAM_SCALE 2
#endif
// RTT buckets from 2^2 us to 2^30 us (18 min); longer srtt lands in the last
// slot. The manifest's histogram says the same.
#define RTT_MIN_LOG2 2
#define RTT_MAX_LOG2 30
#define RTT_SLOTS LATENCY_SLOTS(HISTOGRAM_SCALE, RTT_MIN_LOG2, RTT_MAX_LOG2)

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
    u64 cgroup_id;
#if PER_PEER
    u8 addr[16];
    u16 port;
#endif
};

struct rtt_key {
    u64 cgroup_id;
    u32 slot;
};

struct rtt_value {
    u64 count;
    u64 sum_us;
};

struct reset_key {
    u64 cgroup_id;
    u32 direction; // 0: sent (transmit), 1: received (receive)
};

#if PER_PEER
BPF_PERCPU_HASH(retransmits, struct peer_key, u64, MAX_PEERS);
#else
BPF_PERCPU_HASH(retransmits_by_cgroup, struct peer_key, u64, MAX_CGROUPS);
#endif
BPF_PERCPU_ARRAY(retransmits_dropped, u64, 1);
#if RTT
// Shared by all CPUs (per CPU it would take RTT_SLOTS per cgroup per CPU),
// so the counts are added atomically.
BPF_HASH(rtt, struct rtt_key, struct rtt_value, MAX_CGROUPS * RTT_SLOTS);
BPF_PERCPU_ARRAY(rtt_dropped, u64, 1);
#endif
BPF_PERCPU_HASH(resets, struct reset_key, u64, MAX_CGROUPS * 2);
BPF_PERCPU_ARRAY(resets_dropped, u64, 1);

// The cgroup v2 id stored in a socket (0 for none, or a kernel without the
// offsets in its BTF).
static __always_inline u64 sock_cgroup_id(const void *sk) {
#if defined(BTF_OFFSET_SOCK_SK_CGRP_DATA) && defined(BTF_OFFSET_SOCK_CGROUP_DATA_CGROUP)
    void *cgrp = 0;
    if (!sk)
        return 0;
    bpf_probe_read_kernel(&cgrp, sizeof(cgrp),
                          sk + BTF_OFFSET_SOCK_SK_CGRP_DATA + BTF_OFFSET_SOCK_CGROUP_DATA_CGROUP);
    return cgroup_kn_id(cgrp);
#else
    return 0;
#endif
}

// Segments in a retransmitted skb: RetransSegs adds tcp_skb_pcount(skb), and
// a TSO/GSO skb carries several (a bulk sender's retransmits undercounted by
// one skb = one segment). tcp_skb_pcount() is TCP_SKB_CB(skb)->tcp_gso_segs:
// skb->cb (offset from BTF) holds struct tcp_skb_cb, whose u32 seq and u32
// end_seq are followed by the union that starts with u16 tcp_gso_segs (BTF
// cannot name that anonymous member; sidecar/tests/test_btf_layout.py checks
// the layout on the running kernel).
#define TCP_SKB_CB_GSO_SEGS 8
static __always_inline u64 retransmitted_segments(const void *skb) {
#ifdef BTF_OFFSET_SK_BUFF_CB
    u16 segs = 0;
    bpf_probe_read_kernel(&segs, sizeof(segs), skb + BTF_OFFSET_SK_BUFF_CB + TCP_SKB_CB_GSO_SEGS);
    return segs ? segs : 1;
#else
    return 1;
#endif
}

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
    key.cgroup_id = sock_cgroup_id(args->skaddr);
#if PER_PEER
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
#else
    if (args->family != FAMILY_INET && args->family != FAMILY_INET6)
        return 0;
    u64 zero = 0;
    u64 *count = retransmits_by_cgroup.lookup_or_try_init(&key, &zero);
#endif
    if (count)
        *count += retransmitted_segments(args->skbaddr);
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
    struct rtt_key key = {};
#ifdef TP_TCP_PROBE_HAS_SKADDR // the socket came with the tracepoint in Linux 6.x
    key.cgroup_id = sock_cgroup_id(args->skaddr);
#endif
    key.slot = latency_slot(srtt, HISTOGRAM_SCALE, RTT_MIN_LOG2, RTT_MAX_LOG2);
    struct rtt_value zero = {};
    struct rtt_value *v = rtt.lookup_or_try_init(&key, &zero);
    if (v) {
        __sync_fetch_and_add(&v->count, 1);
        __sync_fetch_and_add(&v->sum_us, srtt);
    } else {
        count_dropped(rtt_dropped.lookup(DROPPED_KEY));
    }
    return 0;
}
#endif

static __always_inline void count_reset(const void *sk, u32 direction) {
    struct reset_key key = {};
    key.cgroup_id = sock_cgroup_id(sk);
    key.direction = direction;
    u64 zero = 0;
    u64 *count = resets.lookup_or_try_init(&key, &zero);
    if (count)
        (*count)++;
    else
        count_dropped(resets_dropped.lookup(DROPPED_KEY));
}

TRACEPOINT_PROBE(tcp, tcp_send_reset) {
    count_reset(args->skaddr, 0);
    return 0;
}

TRACEPOINT_PROBE(tcp, tcp_receive_reset) {
    count_reset(args->skaddr, 1);
    return 0;
}
