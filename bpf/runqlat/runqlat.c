// runqlat: how long runnable tasks wait on a CPU run queue before they run,
// as a log2 histogram, like BCC's runqlat. From the tracepoints
// sched:sched_wakeup, sched:sched_wakeup_new and sched:sched_switch.
//
// A task is enqueued when it is woken (or, new, first woken) and when it is
// switched out while still runnable (preempted); the latency is the time from
// that moment to the sched_switch that switches it in. Enqueue times are kept
// per thread id in a bounded hash; the entry is deleted when the thread runs,
// so the map only holds threads that are waiting right now.
#include <uapi/linux/ptrace.h>
#include <linux/sched.h>

#ifndef MAX_WAITING
#define MAX_WAITING 10240
#endif
#define SLOTS 40 // 2^39 ns ≈ 550 s; longer waits land in the last slot

// prev_state as the tracepoint reports it (__trace_sched_switch_state): 0 when
// the task was still runnable, TASK_REPORT_MAX (0x100) when it was preempted,
// else one bit of the sleeping state. Low byte clear = still runnable.
#define SLEEP_STATE_MASK 0xff

struct slot_value {
    u64 count;
    u64 sum_ns;
};

BPF_HASH(enqueued_at, u32, u64, MAX_WAITING);
// Enqueue times that did not fit in enqueued_at: each is one lost sample.
BPF_PERCPU_ARRAY(runqueue_latency_dropped, u64, 1);
BPF_PERCPU_ARRAY(runqueue_latency, struct slot_value, SLOTS);

static __always_inline void enqueue(u32 tid) {
    if (tid == 0) // the idle task is never queued
        return;
    u64 ts = bpf_ktime_get_ns();
    if (enqueued_at.update(&tid, &ts) != 0) {
        int zero = 0;
        u64 *dropped = runqueue_latency_dropped.lookup(&zero);
        if (dropped)
            (*dropped)++;
    }
}

TRACEPOINT_PROBE(sched, sched_wakeup) {
    enqueue(args->pid);
    return 0;
}

TRACEPOINT_PROBE(sched, sched_wakeup_new) {
    enqueue(args->pid);
    return 0;
}

TRACEPOINT_PROBE(sched, sched_switch) {
    if ((args->prev_state & SLEEP_STATE_MASK) == 0)
        enqueue(args->prev_pid);
    u32 next = args->next_pid;
    if (next == 0)
        return 0;
    u64 *start = enqueued_at.lookup(&next);
    if (!start)
        return 0; // woken before the program was attached
    u64 now = bpf_ktime_get_ns();
    u64 delta = now > *start ? now - *start : 0;
    enqueued_at.delete(&next);
    u32 slot = bpf_log2l(delta);
    if (slot >= SLOTS)
        slot = SLOTS - 1;
    struct slot_value *v = runqueue_latency.lookup(&slot);
    if (v) {
        v->count++;
        v->sum_ns += delta;
    }
    return 0;
}
