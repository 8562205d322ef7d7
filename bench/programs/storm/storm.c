// storm: an event per getppid() call of process TARGET_TGID (benchmark only).
#include <ebpfreceiver.h>

#ifndef TARGET_TGID
#define TARGET_TGID 0
#endif
#define NR_GETPPID 110 // x86_64

struct storm_event {
    u64 ktime_ns;
    u32 pid;
    char comm[EBPF_COMM_LEN];
};

BPF_RINGBUF_OUTPUT(storm_events, 64);  // pages: 256 KiB
BPF_ARRAY(storm_events_dropped, u64, 1);

// args: struct pt_regs *regs, long id
RAW_TRACEPOINT_PROBE(sys_enter) {
    if (ctx->args[1] != NR_GETPPID || (bpf_get_current_pid_tgid() >> 32) != TARGET_TGID)
        return 0;
    struct storm_event e = {};
    e.ktime_ns = bpf_ktime_get_ns();
    e.pid = TARGET_TGID;
    bpf_get_current_comm(&e.comm, sizeof(e.comm));
    if (storm_events.ringbuf_output(&e, sizeof(e), 0))
        count_dropped_shared(storm_events_dropped.lookup(DROPPED_KEY));
    return 0;
}
