// runqlat: how long runnable tasks wait on a CPU run queue before they run,
// as a log2 histogram, like BCC's runqlat. From the raw tracepoints
// sched_wakeup, sched_wakeup_new and sched_switch.
//
// A task is enqueued when it is woken (or, new, first woken) and when it is
// switched out while still runnable (preempted); the latency is the time from
// that moment to the sched_switch that switches it in. Enqueue times are kept
// per thread id in a bounded hash; the entry is deleted when the thread runs,
// so the map only holds threads that are waiting right now.
#include <uapi/linux/ptrace.h>
#include <ebpfreceiver.h>

#ifndef MAX_WAITING
#define MAX_WAITING 10240
#endif
#define SLOTS 40 // 2^39 ns ≈ 550 s; longer waits land in the last slot

#ifndef BTF_OFFSET_TASK_STRUCT_PID
#error "runqlat needs the offset of task_struct.pid from the kernel's BTF (/sys/kernel/btf/vmlinux)"
#endif

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
    if (enqueued_at.update(&tid, &ts) != 0)
        count_dropped(runqueue_latency_dropped.lookup(DROPPED_KEY));
}

// Raw tracepoints, not classic ones: a classic tracepoint program is skipped
// while any task on the CPU is inside a bpf() map syscall (bpf_prog_active),
// so a wakeup or switch-in of such a task would be lost. Task ids are read at
// the offset of task_struct.pid in the running kernel's BTF, which the
// sidecar passes in.
static __always_inline u32 task_tid(void *task) {
    u32 tid = 0;
    bpf_probe_read_kernel(&tid, sizeof(tid), task + BTF_OFFSET_TASK_STRUCT_PID);
    return tid;
}

// args: struct task_struct *p
RAW_TRACEPOINT_PROBE(sched_wakeup) {
    enqueue(task_tid((void *)ctx->args[0]));
    return 0;
}

RAW_TRACEPOINT_PROBE(sched_wakeup_new) {
    enqueue(task_tid((void *)ctx->args[0]));
    return 0;
}

// args: bool preempt, struct task_struct *prev, struct task_struct *next,
// unsigned int prev_state (the raw task state; 0 = still runnable)
RAW_TRACEPOINT_PROBE(sched_switch) {
    // Still on the run queue after this switch: preempted (even if it had
    // just set a sleeping state, it stays queued until it calls schedule()
    // itself), or switched out while runnable (yield, cond_resched).
    if (ctx->args[0] || (unsigned int)ctx->args[3] == 0)
        enqueue((u32)bpf_get_current_pid_tgid());
    u32 next = task_tid((void *)ctx->args[2]);
    if (next == 0)
        return 0;
    u64 *start = enqueued_at.lookup(&next);
    if (!start)
        return 0; // woken before the program was attached
    u64 now = bpf_ktime_get_ns();
    u64 delta = now > *start ? now - *start : 0;
    enqueued_at.delete(&next);
    u32 slot = log2_slot(delta, SLOTS);
    struct slot_value *v = runqueue_latency.lookup(&slot);
    if (v) {
        v->count++;
        v->sum_ns += delta;
    }
    return 0;
}
