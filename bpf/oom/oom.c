// oom: processes killed by the OOM killer, per victim process name, from the
// tracepoint oom:mark_victim. It fires once per kill, when the killer marks
// its victim, which is the same point where the kernel counts the kill
// (oom_kill in /proc/vmstat and memory.events).
//
// The killer usually runs in the context of whatever task failed to allocate,
// not the victim, so the victim's name comes from the tracepoint's own comm
// field (a __data_loc string, read with BCC's TP_DATA_LOC_READ_STR) rather
// than bpf_get_current_comm(). The field was added in 2024 (Linux 6.1 has
// only pid); where it is missing (the sidecar defines TP_MARK_VICTIM_HAS_COMM
// from tracefs) kills are still counted, under an empty name.
#include <uapi/linux/ptrace.h>
#include <ebpfreceiver.h>

#ifndef MAX_ENTRIES
#define MAX_ENTRIES 1024
#endif

struct victim_key {
    char comm[EBPF_COMM_LEN];
};

BPF_HASH(oom_kills, struct victim_key, u64, MAX_ENTRIES);
BPF_ARRAY(oom_kills_dropped, u64, 1);

TRACEPOINT_PROBE(oom, mark_victim) {
    struct victim_key key = {};
#ifdef TP_MARK_VICTIM_HAS_COMM
    TP_DATA_LOC_READ_STR(key.comm, comm, sizeof(key.comm));
#endif
    u64 zero = 0;
    // OOM kills are rare and may come from any CPU: a shared map with atomic
    // adds is cheap enough and keeps the count in one place.
    u64 *count = oom_kills.lookup_or_try_init(&key, &zero);
    if (count)
        __sync_fetch_and_add(count, 1);
    else
        count_dropped_shared(oom_kills_dropped.lookup(DROPPED_KEY));
    return 0;
}
