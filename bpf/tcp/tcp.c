// tcp: retransmitted segments per peer, a histogram of smoothed RTT
// samples, and resets sent and received, each by the container and pod of
// the socket's owner, from the raw tracepoints tcp_retransmit_skb,
// tcp_send_reset, tcp_receive_reset and (parameter rtt) tcp_probe.
//
// Raw tracepoints, not the classic tcp:* ones: retransmits fire from the
// retransmission timer in softirq context, and the kernel skips a classic
// tracepoint's BPF program whenever any other BPF tracing program is running
// on that CPU (the per-CPU bpf_prog_active check of trace_call_bpf, counted
// in the program's recursion_misses), so a retransmit that interrupted, say,
// a sched_switch program was lost. A raw tracepoint's program is skipped only
// when the same program is already running on that CPU. Its arguments are
// the tracepoint's prototype (the socket, the skb), so what the classic
// tracepoint computed from them (include/trace/events/tcp.h) is read here
// at offsets from the running kernel's BTF (btf_offsets in the manifest):
// the family, the peer's address and port (sk_family, sk_daddr or
// sk_v6_daddr, sk_dport) and tcp_sk(sk)->srtt_us.
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

#if !defined(BTF_OFFSET_SOCK___SK_COMMON) || !defined(BTF_OFFSET_SOCK_COMMON_SKC_FAMILY) || \
    !defined(BTF_OFFSET_SOCK_COMMON_SKC_DADDR) || !defined(BTF_OFFSET_SOCK_COMMON_SKC_DPORT) || \
    !defined(BTF_OFFSET_SOCK_COMMON_SKC_V6_DADDR) || !defined(BTF_OFFSET_TCP_SOCK_SRTT_US)
#error "tcp reads struct sock at offsets from the kernel's BTF (/sys/kernel/btf/vmlinux), which this kernel does not have"
#endif
#define SK_COMMON(member) (BTF_OFFSET_SOCK___SK_COMMON + BTF_OFFSET_SOCK_COMMON_##member)

// ntohs() of a port read from the socket (network byte order).
static __always_inline u16 port_from_net(u16 port) {
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    return __builtin_bswap16(port);
#else
    return port;
#endif
}

#define FAMILY_INET 2
#define FAMILY_INET6 10

// The peer as the kernel sees it from this host: its address (IPv4 stored
// IPv4-mapped, ::ffff:a.b.c.d, so one key serves both families) and its port
// in host byte order (as the classic tracepoint's dport, ntohs(inet_dport)).
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
// args: const struct sock *sk, const struct sk_buff *skb, int err (the
// prototype gained err with the format's err field, whence the #ifdef)
// Counts segments retransmitted by the socket owner's cgroup to the peer of
// `peer`, a struct sock_common (first member of both struct sock and struct
// request_sock, so the same offsets serve both).
static __always_inline void count_retransmits(const void *peer, u64 cgroup_id, u64 segments) {
    u16 family = 0;
    bpf_probe_read_kernel(&family, sizeof(family), peer + SK_COMMON(SKC_FAMILY));
    if (family != FAMILY_INET && family != FAMILY_INET6)
        return;
    struct peer_key key = {};
    key.cgroup_id = cgroup_id;
#if PER_PEER
    if (family == FAMILY_INET) {
        key.addr[10] = 0xff;
        key.addr[11] = 0xff;
        bpf_probe_read_kernel(&key.addr[12], 4, peer + SK_COMMON(SKC_DADDR));
    } else {
        bpf_probe_read_kernel(key.addr, 16, peer + SK_COMMON(SKC_V6_DADDR));
    }
    u16 dport = 0;
    bpf_probe_read_kernel(&dport, sizeof(dport), peer + SK_COMMON(SKC_DPORT));
    key.port = port_from_net(dport);
    u64 zero = 0;
    u64 *count = retransmits.lookup_or_try_init(&key, &zero);
#else
    u64 zero = 0;
    u64 *count = retransmits_by_cgroup.lookup_or_try_init(&key, &zero);
#endif
    if (count)
        *count += segments;
    else
        count_dropped(retransmits_dropped.lookup(DROPPED_KEY));
}

RAW_TRACEPOINT_PROBE(tcp_retransmit_skb) {
    const void *sk = (const void *)ctx->args[0];
    const void *skb = (const void *)ctx->args[1];
#ifdef TP_TCP_RETRANSMIT_SKB_HAS_ERR // defined by the sidecar when tracefs has the field
    if ((int)ctx->args[2] != 0)
        return 0;
#endif
    count_retransmits(sk, sock_cgroup_id(sk), retransmitted_segments(skb));
    return 0;
}

// A SYN-ACK sent again (tcp_rtx_synack): RetransSegs counts it, but it is no
// tcp_retransmit_skb: the connection is still a request_sock of the
// listener, e.g. when the client's last ACK of the handshake was lost.
// Counted for the listener's owner and the request's peer.
// args: const struct sock *sk (the listener), const struct request_sock *req
RAW_TRACEPOINT_PROBE(tcp_retransmit_synack) {
    const void *listener = (const void *)ctx->args[0];
    const void *req = (const void *)ctx->args[1];
    count_retransmits(req, sock_cgroup_id(listener), 1);
    return 0;
}

#if RTT
// Fires for every segment an established socket receives; srtt is the
// smoothed RTT in microseconds (srtt_us >> 3). 0 means no RTT sample yet.
// Opt-in (parameter rtt): on a busy server it fires ~4 times per request,
// the only hook of this program that runs on the data path.
// args: struct sock *sk, const struct sk_buff *skb
RAW_TRACEPOINT_PROBE(tcp_probe) {
    const void *sk = (const void *)ctx->args[0];
    u32 srtt_us = 0;
    // tcp_sk(sk)->srtt_us: struct tcp_sock starts with the struct sock
    bpf_probe_read_kernel(&srtt_us, sizeof(srtt_us), sk + BTF_OFFSET_TCP_SOCK_SRTT_US);
    u64 srtt = srtt_us >> 3;
    if (srtt == 0)
        return 0;
    struct rtt_key key = {};
    key.cgroup_id = sock_cgroup_id(sk);
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

// args: const struct sock *sk (NULL for a reset sent for no socket),
// const struct sk_buff *skb, enum sk_rst_reason reason
RAW_TRACEPOINT_PROBE(tcp_send_reset) {
    count_reset((const void *)ctx->args[0], 0);
    return 0;
}

// args: struct sock *sk
RAW_TRACEPOINT_PROBE(tcp_receive_reset) {
    count_reset((const void *)ctx->args[0], 1);
    return 0;
}
